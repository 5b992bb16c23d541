//! DiscordChatExporter exports of the fake world, written the way DCE writes
//! them (JSON: `JsonMessageWriter`; CSV: `CsvMessageWriter`), so that import
//! tests and the import benchmark read what real users have on disk:
//! non-ASCII escaped as upper-case `\uXXXX`, trimmed fractional seconds,
//! thread files whose `categoryId` is the parent channel.

use std::io::Write;

use discord_indexer::discord::model::channel_type;
use discord_indexer::snowflake;
use serde_json::{json, Value};

use crate::world::{FakeChannel, FakeGuild, FakeMessage, World};

/// DCE's name for a channel type.
fn channel_kind(kind: u8) -> &'static str {
    match kind {
        channel_type::GUILD_TEXT => "GuildTextChat",
        channel_type::GUILD_VOICE => "GuildVoiceChat",
        channel_type::GUILD_ANNOUNCEMENT => "GuildNewsChat",
        channel_type::ANNOUNCEMENT_THREAD => "GuildNewsThread",
        channel_type::PUBLIC_THREAD => "GuildPublicThread",
        channel_type::PRIVATE_THREAD => "GuildPrivateThread",
        channel_type::GUILD_FORUM => "GuildForum",
        _ => "GuildTextChat",
    }
}

/// DCE's name for a message type; a number for those it has no name for.
fn message_kind(kind: u8) -> String {
    match kind {
        0 => "Default".into(),
        6 => "ChannelPinnedMessage".into(),
        7 => "GuildMemberJoin".into(),
        18 => "ThreadCreated".into(),
        19 => "Reply".into(),
        n => n.to_string(),
    }
}

/// A time as DCE writes it: offset `+00:00`, fractional seconds trimmed.
pub fn dce_time(ms: u64) -> String {
    let t = snowflake::timestamp(ms << 22);
    let mut s = t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s + "+00:00"
}

/// JSON text with every non-ASCII character escaped as DCE's writer does.
pub fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{:04X}", u));
            }
        }
    }
    out
}

fn message_value(world: &World, guild: &FakeGuild, ch: &FakeChannel, m: &FakeMessage) -> Value {
    let author = &world.users[m.author as usize];
    // The files and links the API gives (an export of a served world has the server's links).
    let attachments: Vec<Value> = (0..m.attachments)
        .map(|i| {
            let id = m.id + 1 + i as u64;
            let file = crate::cdn::attachment_file(id);
            json!({"id": id.to_string(), "url": world.attachment_url(ch.id, id, &file.filename),
                   "fileName": file.filename, "fileSizeBytes": file.declared_size})
        })
        .collect();
    const EMOJI: [(&str, &str); 3] = [("👍", "thumbsup"), ("🎉", "tada"), ("👀", "eyes")];
    let reactions: Vec<Value> = (0..m.reactions as usize)
        .map(|i| {
            let (name, code) = EMOJI[i % 3];
            json!({"emoji": {"id": "", "name": name, "code": code, "isAnimated": false,
                             "imageUrl": "https://cdn.jsdelivr.net/gh/twitter/twemoji@latest/assets/svg/1f44d.svg"},
                   "count": 1 + (m.id >> (i * 3)) % 7, "users": []})
        })
        .collect();
    let mut v = json!({
        "id": m.id.to_string(),
        "type": message_kind(m.kind),
        "timestamp": dce_time(m.id >> 22),
        "timestampEdited": m.edited_ms.map(dce_time),
        "callEndedTimestamp": null,
        "isPinned": false,
        "content": world.content(m),
        "author": {
            "id": author.id.to_string(), "name": author.username, "discriminator": "0000",
            "nickname": author.global_name.clone().unwrap_or_else(|| author.username.clone()),
            "color": null, "isBot": author.bot, "roles": [],
            "avatarUrl": "https://cdn.discordapp.com/embed/avatars/0.png",
        },
        "attachments": attachments,
        "embeds": [],
        "stickers": [],
        "reactions": reactions,
        "mentions": [],
        "inlineEmojis": [],
    });
    if let Some(to) = m.reply_to {
        v["reference"] = json!({"messageId": to.to_string(), "channelId": ch.id.to_string(),
                                "guildId": guild.id.to_string()});
    }
    v
}

/// Writes a DCE JSON export of `messages` (a range of the channel's history).
pub fn write_json(
    out: &mut impl Write,
    world: &World,
    guild: &FakeGuild,
    ch: &FakeChannel,
    messages: &[FakeMessage],
) -> std::io::Result<()> {
    let parent = ch.parent_id.and_then(|p| guild.channel(p));
    let header = json!({
        "guild": {"id": guild.id.to_string(), "name": guild.name, "iconUrl": "https://cdn.discordapp.com/embed/avatars/0.png"},
        "channel": {"id": ch.id.to_string(), "type": channel_kind(ch.kind),
                    "categoryId": ch.parent_id.map(|p| p.to_string()),
                    "category": parent.map(|p| p.name.clone()), "name": ch.name, "topic": ch.topic},
        "dateRange": {"after": null, "before": null},
        "exportedAt": "2026-11-30T00:00:00+00:00",
    });
    let header = escape_non_ascii(&serde_json::to_string_pretty(&header)?);
    // The header without its closing brace, then the messages array.
    out.write_all(header.trim_end().trim_end_matches('}').trim_end().as_bytes())?;
    out.write_all(b",\n  \"messages\": [")?;
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(b"\n    ")?;
        let text = serde_json::to_string(&message_value(world, guild, ch, m))?;
        out.write_all(escape_non_ascii(&text).as_bytes())?;
    }
    write!(out, "\n  ],\n  \"messageCount\": {}\n}}\n", messages.len())
}

/// A DCE JSON export of `messages` as a string.
pub fn json_export(world: &World, guild: &FakeGuild, ch: &FakeChannel, messages: &[FakeMessage]) -> String {
    let mut out = Vec::new();
    write_json(&mut out, world, guild, ch, messages).expect("writing to memory");
    String::from_utf8(out).expect("ASCII")
}

/// DCE's default file name for a channel's export.
pub fn file_name(guild: &FakeGuild, ch: &FakeChannel, ext: &str) -> String {
    let parent = ch.parent_id.and_then(|p| guild.channel(p)).map_or("Text channels".to_owned(), |p| p.name.clone());
    format!("{} - {} - {} [{}].{ext}", guild.name, parent, ch.name, ch.id)
}
