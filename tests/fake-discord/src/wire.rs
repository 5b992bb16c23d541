//! How the fake writes what Discord sends: HTTP answers, and Discord's JSON
//! objects (users, members, guilds, channels, messages) built from the
//! [`World`]. The REST routes, the gateway, the outbox and live events all
//! encode through here.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};

use discord_indexer::permissions::OverwriteKind;
use discord_indexer::snowflake;

use crate::cdn::attachment_file;
use crate::world::{FakeChannel, FakeGuild, FakeMessage, World};

pub(super) type Resp = Response<Full<Bytes>>;

pub(super) fn json_response(status: u16, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

pub(super) fn error(status: u16, code: u64, message: &str) -> Resp {
    json_response(status, &json!({"message": message, "code": code}))
}

pub(super) fn guild_permissions(guild: &FakeGuild) -> discord_indexer::permissions::GuildPermissions {
    discord_indexer::permissions::GuildPermissions {
        guild_id: guild.id,
        owner_id: guild.owner_id,
        roles: guild.roles.iter().map(|r| (r.id, r.permissions)).collect(),
    }
}

/// Threads take their parent's overwrites.
pub(super) fn effective_overwrites(
    guild: &FakeGuild,
    ch: &FakeChannel,
) -> Vec<discord_indexer::permissions::Overwrite> {
    if ch.is_thread() {
        ch.parent_id.and_then(|p| guild.channel(p)).map(|p| p.overwrites.clone()).unwrap_or_default()
    } else {
        ch.overwrites.clone()
    }
}

/// When every generated member joined.
pub(super) const JOINED_AT: &str = "2021-03-01T00:00:00.000000+00:00";

/// A guild member object (`None` if the user is not a member).
pub(crate) fn member_json(world: &World, guild: &FakeGuild, user: u64) -> Option<Value> {
    let roles = guild.members.get(&user)?;
    let index = world.users.iter().position(|u| u.id == user)?;
    Some(json!({"user": user_json(world, index as u32), "roles": roles.iter().map(u64::to_string).collect::<Vec<_>>(),
                "joined_at": JOINED_AT, "deaf": false, "mute": false, "flags": 0}))
}

/// Milliseconds since the Discord epoch, now.
pub(super) fn now_ms() -> u64 {
    (chrono::Utc::now().timestamp_millis() as u64).saturating_sub(snowflake::DISCORD_EPOCH_MS)
}

/// A time as Discord writes it, from milliseconds since the Discord epoch.
pub(super) fn discord_time(ms: u64) -> String {
    let t = snowflake::timestamp(ms << 22);
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

pub(crate) fn user_json(world: &World, index: u32) -> Value {
    let u = &world.users[index as usize];
    let mut v = json!({"id": u.id.to_string(), "username": u.username, "global_name": u.global_name,
                       "discriminator": "0", "avatar": null, "public_flags": 0});
    if u.bot {
        v["bot"] = json!(true);
    }
    v
}

pub(crate) fn roles_json(guild: &FakeGuild) -> Vec<Value> {
    guild
        .roles
        .iter()
        .map(|r| {
            json!({"id": r.id.to_string(), "name": r.name, "permissions": r.permissions.to_string(),
                        "position": r.position, "color": 0, "hoist": false, "managed": false, "mentionable": false,
                   "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
                   "icon": null, "unicode_emoji": null, "flags": 0})
        })
        .collect()
}

pub(crate) fn guild_json(guild: &FakeGuild) -> Value {
    json!({"id": guild.id.to_string(), "name": guild.name, "owner_id": guild.owner_id.to_string(),
           "icon": null, "splash": null, "discovery_splash": null, "banner": null, "description": null,
           "roles": roles_json(guild), "emojis": [], "stickers": [], "features": [],
           "afk_channel_id": null, "afk_timeout": 300, "verification_level": 1,
           "default_message_notifications": 1, "explicit_content_filter": 2, "mfa_level": 0,
           "application_id": null, "system_channel_id": null, "system_channel_flags": 0, "rules_channel_id": null,
           "vanity_url_code": null, "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
           "public_updates_channel_id": null, "nsfw_level": 0, "premium_progress_bar_enabled": false,
           "safety_alerts_channel_id": null})
}

pub(crate) fn channel_json(guild: &FakeGuild, c: &FakeChannel) -> Value {
    let mut v = json!({
        "id": c.id.to_string(), "type": c.kind, "guild_id": guild.id.to_string(), "name": c.name,
        "parent_id": c.parent_id.map(|p| p.to_string()),
        "last_message_id": c.last_message_id().map(|m| m.to_string()),
    });
    if c.is_thread() {
        v["owner_id"] = json!(c.owner_id.map(|o| o.to_string()));
        v["message_count"] = json!(c.messages.len());
        v["member_count"] = json!(3);
        v["thread_metadata"] = json!({
            "archived": c.archived_at_ms.is_some(),
            "archive_timestamp": discord_time(c.archived_at_ms.unwrap_or(c.id >> 22)),
            "auto_archive_duration": 1440, "locked": false,
            "create_timestamp": discord_time(c.id >> 22),
        });
    } else {
        v["position"] = json!(c.position);
        v["topic"] = json!(c.topic);
        v["nsfw"] = json!(false);
        v["permission_overwrites"] = Value::Array(
            c.overwrites
                .iter()
                .map(|o| {
                    json!({"id": o.id.to_string(), "type": if o.kind == OverwriteKind::Member { 1 } else { 0 },
                                "allow": o.allow.to_string(), "deny": o.deny.to_string()})
                })
                .collect(),
        );
    }
    v
}

/// An attachment object: its file's name, type, size and pixels, alt text,
/// and a signed link to the fake CDN (`proxy_url` is the same link).
pub(crate) fn attachment_json(world: &World, channel: u64, id: u64) -> Value {
    let file = attachment_file(id);
    let url = world.attachment_url(channel, id, &file.filename);
    let mut v = json!({"id": id.to_string(), "filename": file.filename, "size": file.declared_size,
                       "url": url, "proxy_url": url, "content_type": file.content_type});
    if let (Some(w), Some(h)) = (file.width, file.height) {
        v["width"] = json!(w);
        v["height"] = json!(h);
    }
    if let Some(d) = file.description {
        v["description"] = json!(d);
    }
    v
}

/// A message as Discord's REST API returns it (no `guild_id`).
pub(crate) fn message_json(
    world: &World,
    guild: &FakeGuild,
    ch: &FakeChannel,
    m: &FakeMessage,
    with_reference: bool,
) -> Value {
    let author = &world.users[m.author as usize];
    let intent = world.app_flags & ((1 << 18) | (1 << 19)) != 0;
    let visible = intent || author.id == world.bot().id;
    let content = if visible { world.content(m) } else { String::new() };
    let attachments: Vec<Value> = if visible {
        (0..m.attachments).map(|i| attachment_json(world, ch.id, m.id + 1 + i as u64)).collect()
    } else {
        Vec::new()
    };
    let mut v = json!({
        "id": m.id.to_string(), "channel_id": ch.id.to_string(), "author": user_json(world, m.author),
        "content": content, "timestamp": discord_time(m.id >> 22),
        "edited_timestamp": m.edited_ms.map(discord_time), "tts": false, "mention_everyone": false,
        "mentions": [], "mention_roles": [], "attachments": attachments, "embeds": [], "components": [],
        "pinned": false, "type": m.kind, "flags": 0,
    });
    if m.reactions > 0 {
        const EMOJI: [&str; 3] = ["👍", "🎉", "👀"];
        v["reactions"] = Value::Array(
            (0..m.reactions as usize)
                .map(|i| json!({"count": 1 + (m.id >> (i * 3)) % 7, "me": false, "emoji": {"id": null, "name": EMOJI[i % 3]}}))
                .collect(),
        );
    }
    if m.webhook {
        v["webhook_id"] = json!((author.id + 17).to_string());
    }
    if let Some(target) = m.reply_to {
        v["message_reference"] = json!({"type": 0, "message_id": target.to_string(), "channel_id": ch.id.to_string(),
                                        "guild_id": guild.id.to_string()});
        if with_reference {
            v["referenced_message"] = match ch.find(target) {
                Some(t) => message_json(world, guild, ch, t, false),
                None => Value::Null,
            };
        }
    }
    v
}
