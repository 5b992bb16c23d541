//! Things that happen on the fake server while a bot is connected: people
//! post, edit and delete messages (changing the history the REST API serves
//! and dispatching the gateway events Discord would send), and invoke slash
//! commands (INTERACTION_CREATE payloads as Discord builds them, with the
//! member's permissions in the channel).

use serde_json::{json, Value};

use super::wire::{
    channel_json, effective_overwrites, guild_permissions, member_json, message_json, now_ms, user_json,
};
use super::world::{FakeChannel, FakeMessage, World};
use super::FakeDiscord;
use discord_indexer::discord::model::channel_type;

/// Who invokes a slash command, and where.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub user: u64,
    /// The guild channel it is used in; `None` for a DM with the bot.
    pub channel: Option<u64>,
    pub command: String,
    /// `(name, value)` pairs: strings, integers, booleans, and channels
    /// written `{"channel": id}`.
    pub options: Vec<(String, Value)>,
    /// An autocomplete request for this option (its value is what was typed so far).
    pub focused: Option<String>,
}

impl Invocation {
    pub fn dm(user: u64, command: &str, options: &[(&str, Value)]) -> Self {
        Invocation { user, channel: None, command: command.into(), options: own(options), focused: None }
    }

    pub fn in_channel(user: u64, channel: u64, command: &str, options: &[(&str, Value)]) -> Self {
        Invocation { user, channel: Some(channel), command: command.into(), options: own(options), focused: None }
    }

    /// The user is typing `partial` into `option` of a command in a guild channel.
    pub fn autocomplete(user: u64, channel: u64, command: &str, option: &str, partial: &str) -> Self {
        Invocation {
            user,
            channel: Some(channel),
            command: command.into(),
            options: own(&[(option, Value::String(partial.into()))]),
            focused: Some(option.into()),
        }
    }
}

fn own(options: &[(&str, Value)]) -> Vec<(String, Value)> {
    options.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn user_index(world: &World, user: u64) -> u32 {
    world.users.iter().position(|u| u.id == user).unwrap_or_else(|| panic!("no user {user}")) as u32
}

impl World {
    /// Adds a message by `author` (a user id) at the end of a channel's
    /// history, timestamped now. Returns its id and the MESSAGE_CREATE payload.
    pub fn post(&mut self, channel: u64, author: u64, text: &str) -> (u64, Value) {
        let index = user_index(self, author);
        let last =
            self.channel(channel).unwrap_or_else(|| panic!("no channel {channel}")).1.messages.last().map(|m| m.id);
        let mut id = self.next_id(now_ms());
        if let Some(last) = last.filter(|l| *l >= id) {
            id = last + 1;
        }
        let m = FakeMessage {
            id,
            author: index,
            kind: 0,
            reply_to: None,
            edited_ms: None,
            content: Some(text.to_owned()),
            attachments: 0,
            reactions: 0,
            webhook: false,
        };
        self.channel_mut(channel).expect("checked").messages.push(m);
        (id, self.event_json(channel, id))
    }

    /// Starts a public thread under `parent` (created by `owner`, now).
    /// Returns its id and the THREAD_CREATE payload.
    pub fn start_thread(&mut self, parent: u64, owner: u64, name: &str) -> (u64, Value) {
        let guild = self.channel(parent).map(|(g, _)| g.id).unwrap_or_else(|| panic!("no channel {parent}"));
        let id = self.next_id(now_ms());
        let mut thread = FakeChannel::new(id, channel_type::PUBLIC_THREAD, Some(parent), name, 0);
        thread.owner_id = Some(owner);
        thread.members = vec![owner];
        let g = self.guild_mut(guild).expect("checked");
        g.channels.push(thread);
        let g = self.guild(guild).expect("checked");
        let mut v = channel_json(g, g.channel(id).expect("just added"));
        v["newly_created"] = json!(true);
        (id, v)
    }

    /// Changes a message's text (and its edit time). Returns the MESSAGE_UPDATE payload.
    pub fn edit(&mut self, channel: u64, id: u64, text: &str) -> Value {
        let ch = self.channel_mut(channel).unwrap_or_else(|| panic!("no channel {channel}"));
        let m = ch.messages.iter_mut().find(|m| m.id == id).unwrap_or_else(|| panic!("no message {id}"));
        m.content = Some(text.to_owned());
        m.edited_ms = Some(now_ms().max((id >> 22) + 1));
        self.event_json(channel, id)
    }

    /// Removes a message. Returns the MESSAGE_DELETE payload.
    pub fn delete(&mut self, channel: u64, id: u64) -> Value {
        let guild = self.channel(channel).map(|(g, _)| g.id).unwrap_or_else(|| panic!("no channel {channel}"));
        self.channel_mut(channel).expect("checked").messages.retain(|m| m.id != id);
        json!({"id": id.to_string(), "channel_id": channel.to_string(), "guild_id": guild.to_string()})
    }

    /// A message as the gateway sends it: the REST object plus `guild_id` and `member`.
    fn event_json(&self, channel: u64, id: u64) -> Value {
        let (guild, ch) = self.channel(channel).expect("checked");
        let m = ch.find(id).expect("checked");
        let mut v = message_json(self, guild, ch, m, true);
        v["guild_id"] = json!(guild.id.to_string());
        // Message events carry the author's member object without its `user`.
        if let Some(mut member) = member_json(self, guild, self.users[m.author as usize].id) {
            member.as_object_mut().expect("an object").remove("user");
            v["member"] = member;
        }
        v
    }

    /// An INTERACTION_CREATE payload for a slash command. Returns it and its token.
    pub fn interaction(&mut self, inv: &Invocation, command_id: u64) -> (Value, String) {
        let id = self.next_id(now_ms());
        let token = format!("interaction-token-{id}");
        let user = user_index(self, inv.user);
        let mut resolved_channels = serde_json::Map::new();
        let options: Vec<Value> = inv
            .options
            .iter()
            .map(|(name, value)| {
                if let Some(channel) = value.get("channel").and_then(Value::as_u64) {
                    // A channel option: its id, and the channel in `resolved`.
                    let (_, ch) = self.channel(channel).unwrap_or_else(|| panic!("no channel {channel}"));
                    resolved_channels.insert(
                        channel.to_string(),
                        json!({"id": channel.to_string(), "name": ch.name, "type": ch.kind, "permissions": "0"}),
                    );
                    return json!({"name": name, "type": 7, "value": channel.to_string()});
                }
                let kind = match value {
                    Value::Bool(_) => 5,
                    Value::Number(n) if n.is_i64() || n.is_u64() => 4,
                    Value::Number(_) => 10,
                    _ => 3,
                };
                let mut o = json!({"name": name, "type": kind, "value": value});
                if inv.focused.as_deref() == Some(name.as_str()) {
                    o["focused"] = json!(true);
                }
                o
            })
            .collect();
        let mut v = json!({
            "id": id.to_string(),
            "application_id": self.application_id.to_string(),
            "type": if inv.focused.is_some() { 4 } else { 2 },
            "data": {"id": command_id.to_string(), "name": inv.command, "type": 1, "options": options,
                     "resolved": {"channels": resolved_channels}},
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10_485_760,
        });
        match inv.channel {
            Some(channel) => {
                let (guild, ch) = self.channel(channel).unwrap_or_else(|| panic!("no channel {channel}"));
                let perms = guild_permissions(guild);
                let overwrites = effective_overwrites(guild, ch);
                let roles = guild.members.get(&inv.user).cloned().unwrap_or_default();
                let bot = self.bot().id;
                let bot_roles = guild.members.get(&bot).cloned().unwrap_or_default();
                let mut member =
                    member_json(self, guild, inv.user).unwrap_or_else(|| panic!("{} is not a member", inv.user));
                member["permissions"] = json!(perms.in_channel(inv.user, &roles, &overwrites).to_string());
                v["guild_id"] = json!(guild.id.to_string());
                v["guild_locale"] = json!("en-US");
                v["channel_id"] = json!(channel.to_string());
                v["channel"] = json!({"id": channel.to_string(), "type": ch.kind, "name": ch.name});
                v["member"] = member;
                v["app_permissions"] = json!(perms.in_channel(bot, &bot_roles, &overwrites).to_string());
                v["context"] = json!(0);
                v["authorizing_integration_owners"] = json!({"0": guild.id.to_string()});
            }
            None => {
                // The DM channel between this user and the bot.
                let dm = (inv.user ^ 0x5A5A) | (1 << 21);
                v["channel_id"] = json!(dm.to_string());
                v["channel"] = json!({"id": dm.to_string(), "type": 1});
                v["user"] = user_json(self, user);
                v["app_permissions"] = json!("0");
                v["context"] = json!(1);
                v["authorizing_integration_owners"] = json!({"0": "0"});
            }
        }
        (v, token)
    }
}

impl World {
    /// An INTERACTION_CREATE payload for `user` pressing the button
    /// `custom_id` on `message` (a message object the bot sent in its DM with
    /// `user`), as Discord builds it (type 3, a message component). Returns
    /// it and its token.
    pub fn button_press(&mut self, user: u64, message: Value, custom_id: &str) -> (Value, String) {
        let id = self.next_id(now_ms());
        let token = format!("interaction-token-{id}");
        let index = user_index(self, user);
        let channel = message["channel_id"].clone();
        let v = json!({
            "id": id.to_string(),
            "application_id": self.application_id.to_string(),
            "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "message": message,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10_485_760,
            "channel_id": channel,
            "channel": {"id": channel, "type": 1},
            "user": user_json(self, index),
            "app_permissions": "0",
            "context": 1,
            "authorizing_integration_owners": {"0": "0"},
        });
        (v, token)
    }
}

impl FakeDiscord {
    /// `user` presses the button `custom_id` on the original response of the
    /// interaction `token` (a DM's): INTERACTION_CREATE for a message
    /// component. Returns the press's own interaction token (what the bot's
    /// answer to the press is filed under), or `None` while that response
    /// does not exist.
    pub fn press_button(&self, user: u64, token: &str, custom_id: &str) -> Option<String> {
        let (event, press) = {
            let mut world = self.world();
            let message = self.state.outbox.lock().unwrap().original(&world, token)?;
            world.button_press(user, message, custom_id)
        };
        let channel = event["channel_id"].as_str().and_then(|c| c.parse().ok()).unwrap_or(1);
        self.state.outbox.lock().unwrap().interaction_channels.insert(press.clone(), channel);
        self.dispatch("INTERACTION_CREATE", event);
        Some(press)
    }

    /// `author` posts `text` in `channel`: it joins the history and every
    /// gateway session gets MESSAGE_CREATE. Returns the message id.
    pub fn post_message(&self, channel: u64, author: u64, text: &str) -> u64 {
        let (id, event) = self.world().post(channel, author, text);
        self.dispatch("MESSAGE_CREATE", event);
        id
    }

    /// Like [`post_message`](Self::post_message), but no gateway event is
    /// sent: as if it happened while no session was connected.
    pub fn post_message_unseen(&self, channel: u64, author: u64, text: &str) -> u64 {
        self.world().post(channel, author, text).0
    }

    /// `owner` starts a thread under `parent`: THREAD_CREATE. Returns its id.
    pub fn start_thread(&self, parent: u64, owner: u64, name: &str) -> u64 {
        let (id, event) = self.world().start_thread(parent, owner, name);
        self.dispatch("THREAD_CREATE", event);
        id
    }

    pub fn edit_message(&self, channel: u64, id: u64, text: &str) {
        let event = self.world().edit(channel, id, text);
        self.dispatch("MESSAGE_UPDATE", event);
    }

    /// Replaces a channel's permission overwrites and sends CHANNEL_UPDATE, as
    /// Discord does when someone edits them.
    pub fn set_overwrites(&self, channel: u64, overwrites: Vec<discord_indexer::permissions::Overwrite>) {
        let event = {
            let mut world = self.world();
            let guild = world
                .guilds
                .iter_mut()
                .find(|g| g.channels.iter().any(|c| c.id == channel))
                .expect("a channel of the fake world");
            guild.channels.iter_mut().find(|c| c.id == channel).expect("the channel").overwrites = overwrites;
            let c = guild.channels.iter().find(|c| c.id == channel).expect("the channel");
            channel_json(guild, c)
        };
        self.dispatch("CHANNEL_UPDATE", event);
    }

    pub fn delete_message(&self, channel: u64, id: u64) {
        let event = self.world().delete(channel, id);
        self.dispatch("MESSAGE_DELETE", event);
    }

    /// Sends INTERACTION_CREATE for a slash command; returns the interaction token
    /// (what the bot's answers are filed under in [`sent`](Self::sent)).
    pub fn invoke(&self, inv: &Invocation) -> String {
        let command_id = self.registered_command_id(&inv.command).unwrap_or(1);
        let (event, token) = self.world().interaction(inv, command_id);
        let channel = event["channel_id"].as_str().and_then(|c| c.parse().ok()).unwrap_or(1);
        self.state.outbox.lock().unwrap().interaction_channels.insert(token.clone(), channel);
        self.dispatch("INTERACTION_CREATE", event);
        token
    }

    /// The id the bot's registration gave this command, if it registered it.
    pub fn registered_command_id(&self, name: &str) -> Option<u64> {
        let outbox = self.state.outbox.lock().unwrap();
        outbox
            .commands
            .iter()
            .flat_map(|(_, cmds)| cmds.as_array().cloned().unwrap_or_default())
            .find(|c| c["name"] == name)
            .and_then(|c| c["id"].as_str().and_then(|s| s.parse().ok()))
    }

    /// The commands registered so far: (guild, or 0 for global; commands).
    pub fn registered_commands(&self) -> Vec<(u64, Value)> {
        self.state.outbox.lock().unwrap().commands.clone()
    }

    /// Everything bots sent (interaction responses, follow-ups, edits, channel messages).
    pub fn sent(&self) -> Vec<super::Sent> {
        self.state.outbox.lock().unwrap().sent.clone()
    }

    /// What was sent under one interaction token, in order.
    pub fn replies(&self, token: &str) -> Vec<super::Sent> {
        let outbox = self.state.outbox.lock().unwrap();
        outbox.sent.iter().filter(|s| s.token.as_deref() == Some(token)).cloned().collect()
    }

    /// Forgets every gateway session: the next RESUME gets INVALID_SESSION and
    /// events until the new IDENTIFY are lost to the client.
    pub fn invalidate_gateway_sessions(&self) {
        self.gateway.forget_sessions();
    }

    /// From now on the gateway refuses WebSocket handshakes: it answers with
    /// this HTTP status and a Discord-style JSON error whose `message` is the
    /// text given (`None`: it accepts them again). Connections already open
    /// stay open.
    pub fn refuse_gateway(&self, refusal: Option<(u16, &str)>) {
        self.gateway.refuse(refusal.map(|(status, message)| (status, message.to_owned())));
    }

    /// Gateway handshakes refused so far (each counted once its answer was sent).
    pub fn gateway_refusals(&self) -> u64 {
        self.gateway.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// From now on the gateway answers IDENTIFY by closing the connection
    /// with this close code and reason, as Discord does for a refused token
    /// (4004) or intents the application may not use (4014); `None`: it
    /// identifies sessions again.
    pub fn close_gateway_on_identify(&self, close: Option<(u16, &str)>) {
        self.gateway.close_on_identify(close.map(|(code, reason)| (code, reason.to_owned())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorldSpec;
    use serenity::all as s;

    /// Serenity drops a connection whose events it cannot read, so every
    /// payload the fake sends must parse as serenity's models.
    #[test]
    fn payloads_parse_as_serenity_reads_them() {
        let mut w = World::generate(&WorldSpec::standard());
        let cast = w.add_access_matrix();
        let general = w.guilds[0].channel_named("general").id;
        let staff_room = w.guilds[0].channel_named("staff-room").id;

        let ready = super::super::gateway::ready(&w, "session-1", "ws://127.0.0.1:1/");
        serde_json::from_value::<s::Ready>(ready).expect("READY");
        let create = super::super::gateway::guild_create(&w, &w.guilds[0]);
        let guild = serde_json::from_value::<s::Guild>(create).expect("GUILD_CREATE");
        assert_eq!(guild.id.get(), w.guilds[0].id);

        let (id, created) = w.post(general, cast.plain, "hello **there**");
        let m = serde_json::from_value::<s::Message>(created).expect("MESSAGE_CREATE");
        assert_eq!((m.id.get(), m.content.as_str()), (id, "hello **there**"));
        assert!(m.guild_id.is_some() && m.member.is_some());
        let updated = w.edit(general, id, "hello again");
        let u = serde_json::from_value::<s::MessageUpdateEvent>(updated).expect("MESSAGE_UPDATE");
        assert_eq!(u.content.as_deref(), Some("hello again"));
        assert!(u.edited_timestamp.is_some());
        let (_, thread) = w.start_thread(general, cast.plain, "a new thread");
        serde_json::from_value::<s::GuildChannel>(thread).expect("THREAD_CREATE");
        let deleted = w.delete(general, id);
        serde_json::from_value::<s::MessageDeleteEvent>(deleted).expect("MESSAGE_DELETE");

        let inv =
            Invocation::in_channel(cast.staff, staff_room, "load", &[("channel", json!({"channel": staff_room}))]);
        let (v, token) = w.interaction(&inv, 42);
        let s::Interaction::Command(c) = serde_json::from_value::<s::Interaction>(v).expect("guild interaction") else {
            panic!("not a command")
        };
        assert_eq!(c.token, token);
        let member = c.member.expect("member");
        assert_eq!(member.user.id.get(), cast.staff);
        let perms = member.permissions.expect("permissions");
        assert!(perms.view_channel() && !perms.manage_guild());
        assert_eq!(c.data.options.len(), 1);
        assert!(c.data.resolved.channels.contains_key(&s::ChannelId::new(staff_room)));

        let inv = Invocation::dm(cast.plain, "ask", &[("question", json!("where are the keys?"))]);
        let (v, _) = w.interaction(&inv, 43);
        let s::Interaction::Command(c) = serde_json::from_value::<s::Interaction>(v).expect("DM interaction") else {
            panic!("not a command")
        };
        assert!(c.guild_id.is_none() && c.member.is_none());
        assert_eq!(c.user.id.get(), cast.plain);

        let sent = json!({"id": "77", "channel_id": "78", "author": user_json(&w, w.bot_user), "content": "hi",
            "timestamp": "2026-11-22T00:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
            "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
            "components": [{"type": 1, "components": [{"type": 2, "style": 2, "label": "Stop", "custom_id": "stop:1"}]}],
            "pinned": false, "type": 0, "flags": 0});
        let (v, token) = w.button_press(cast.plain, sent, "stop:1");
        let s::Interaction::Component(c) = serde_json::from_value::<s::Interaction>(v).expect("button press") else {
            panic!("not a component interaction")
        };
        assert_eq!((c.token, c.data.custom_id.as_str(), c.user.id.get()), (token, "stop:1", cast.plain));
        assert_eq!((c.message.id.get(), c.channel_id.get()), (77, 78));
    }
}
