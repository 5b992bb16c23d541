//! What a bot sends to the fake server: interaction responses, follow-ups and
//! their edits, channel messages, and command registrations. Each is recorded
//! (tests assert on them) and answered the way Discord answers it, with the
//! objects serenity expects back.
//!
//! Routes (under `/api/v10`):
//! - `POST /interactions/{id}/{token}/callback` → 204 (no bot token needed);
//!   types 4 and 5 create the original response, others (6: a button press
//!   acknowledged) are recorded only
//! - `GET|PATCH|DELETE /webhooks/{app}/{token}/messages/{@original|id}`,
//!   `POST /webhooks/{app}/{token}` (follow-ups; no bot token needed)
//! - `POST /channels/{id}/messages`, `PATCH /channels/{id}/messages/{id}`
//! - `PUT /applications/{app}/commands`, `PUT /applications/{app}/guilds/{g}/commands`

use serde_json::{json, Value};

use super::wire::{discord_time, error, json_response, now_ms, user_json, Resp};
use super::World;

/// One thing the bot sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// The path after `/api/v10`.
    pub path: String,
    /// The interaction token, for interaction callbacks and webhook routes.
    pub token: Option<String>,
    /// The channel, for channel messages.
    pub channel: Option<u64>,
    /// The message the request created or edited, when there is one.
    pub message_id: Option<u64>,
    pub body: Value,
}

impl Sent {
    /// The message content and every embed's title, description and field
    /// texts, joined: what a person would read.
    pub fn text(&self) -> String {
        let data = if self.body.get("data").is_some() { &self.body["data"] } else { &self.body };
        let mut out = data["content"].as_str().unwrap_or_default().to_owned();
        for e in data["embeds"].as_array().into_iter().flatten() {
            for key in ["title", "description"] {
                if let Some(s) = e[key].as_str() {
                    out.push('\n');
                    out.push_str(s);
                }
            }
            for f in e["fields"].as_array().into_iter().flatten() {
                out.push('\n');
                out.push_str(f["name"].as_str().unwrap_or_default());
                out.push('\n');
                out.push_str(f["value"].as_str().unwrap_or_default());
            }
            if let Some(s) = e["footer"]["text"].as_str() {
                out.push('\n');
                out.push_str(s);
            }
        }
        out
    }
}

/// State kept for what bots send.
#[derive(Default)]
pub(super) struct Outbox {
    pub sent: Vec<Sent>,
    /// Messages created through webhooks and channel posts: id → (channel, body).
    messages: Vec<(u64, u64, Value)>,
    /// Interaction token → the original response's message id.
    originals: Vec<(String, u64)>,
    /// Interaction token → the channel it was used in (its messages' channel).
    pub interaction_channels: std::collections::HashMap<String, u64>,
    /// Registered commands: (guild or 0, commands).
    pub commands: Vec<(u64, Value)>,
    next_id: u64,
}

impl Outbox {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        // High sequence bits, so these ids never collide with the world's.
        (now_ms() << 22) | (1 << 21) | (self.next_id & 0x1F_FFFF)
    }

    /// The channel an interaction's messages are in (ids are never zero).
    fn channel_of(&self, token: &str) -> u64 {
        self.interaction_channels.get(token).copied().unwrap_or(1)
    }

    /// Routes that need no bot token: interactions and their webhooks.
    pub fn tokenless(&mut self, world: &World, method: &str, seg: &[&str], body: Value) -> Option<Resp> {
        match (method, seg) {
            ("POST", ["interactions", _id, token, "callback"]) => {
                let token = token.to_string();
                // Types 4 (message) and 5 (deferred) create the original response.
                let kind = body["type"].as_u64().unwrap_or(0);
                if matches!(kind, 4 | 5) {
                    if self.originals.iter().any(|(t, _)| *t == token) {
                        return Some(error(400, 40060, "Interaction has already been acknowledged."));
                    }
                    let id = self.new_id();
                    self.originals.push((token.clone(), id));
                    let data = if kind == 4 { body["data"].clone() } else { json!({"content": ""}) };
                    let channel = self.channel_of(&token);
                    self.messages.push((id, channel, data));
                    self.record(method, seg, Some(token), None, Some(id), body);
                } else {
                    self.record(method, seg, Some(token), None, None, body);
                }
                Some(empty(204))
            }
            (_, ["webhooks", _app, token, rest @ ..]) => {
                let token = token.to_string();
                match (method, rest) {
                    ("POST", []) => {
                        let id = self.new_id();
                        let channel = self.channel_of(&token);
                        self.messages.push((id, channel, body.clone()));
                        let reply = message_object(world, id, channel, &body);
                        self.record(method, seg, Some(token), None, Some(id), body);
                        Some(json_response(200, &reply))
                    }
                    (_, ["messages", which]) => {
                        let id = if *which == "@original" {
                            match self.originals.iter().find(|(t, _)| *t == token) {
                                Some((_, id)) => *id,
                                None => return Some(error(404, 10008, "Unknown Message")),
                            }
                        } else {
                            which.parse().unwrap_or(0)
                        };
                        let Some(pos) = self.messages.iter().position(|(m, _, _)| *m == id) else {
                            return Some(error(404, 10008, "Unknown Message"));
                        };
                        match method {
                            "GET" => {
                                let (_, ch, b) = &self.messages[pos];
                                Some(json_response(200, &message_object(world, id, *ch, b)))
                            }
                            "PATCH" => {
                                merge(&mut self.messages[pos].2, &body);
                                let (_, ch, b) = &self.messages[pos];
                                let reply = message_object(world, id, *ch, b);
                                self.record(method, seg, Some(token), None, Some(id), body);
                                Some(json_response(200, &reply))
                            }
                            "DELETE" => {
                                self.messages.remove(pos);
                                self.record(method, seg, Some(token), None, Some(id), body);
                                Some(empty(204))
                            }
                            _ => Some(error(405, 0, "405: Method Not Allowed")),
                        }
                    }
                    _ => Some(error(404, 0, "404: Not Found")),
                }
            }
            _ => None,
        }
    }

    /// The original response of an interaction as Discord returns it (the
    /// message its buttons are on), once it exists.
    pub fn original(&self, world: &World, token: &str) -> Option<Value> {
        let id = self.originals.iter().find(|(t, _)| t == token)?.1;
        let (_, channel, body) = self.messages.iter().find(|(m, _, _)| *m == id)?;
        Some(message_object(world, id, *channel, body))
    }

    /// Writes that need the bot token.
    pub fn authorized(&mut self, world: &World, method: &str, seg: &[&str], body: Value) -> Resp {
        match (method, seg) {
            ("POST", ["channels", channel, "messages"]) => {
                let Ok(channel) = channel.parse::<u64>() else { return error(404, 10003, "Unknown Channel") };
                if world.channel(channel).is_none() {
                    return error(404, 10003, "Unknown Channel");
                }
                let id = self.new_id();
                self.messages.push((id, channel, body.clone()));
                let reply = message_object(world, id, channel, &body);
                self.record(method, seg, None, Some(channel), Some(id), body);
                json_response(200, &reply)
            }
            ("PATCH", ["channels", channel, "messages", id]) => {
                let (channel, id) = (channel.parse::<u64>().unwrap_or(0), id.parse::<u64>().unwrap_or(0));
                let Some(pos) = self.messages.iter().position(|(m, c, _)| *m == id && *c == channel) else {
                    return error(404, 10008, "Unknown Message");
                };
                merge(&mut self.messages[pos].2, &body);
                let reply = message_object(world, id, channel, &self.messages[pos].2);
                self.record(method, seg, None, Some(channel), Some(id), body);
                json_response(200, &reply)
            }
            ("PUT", ["applications", _app, "commands"]) | ("PUT", ["applications", _app, "guilds", _, "commands"]) => {
                let guild = if seg.len() == 5 { seg[3].parse().unwrap_or(0) } else { 0 };
                let commands: Vec<Value> = body
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let mut c = c.clone();
                        c["id"] = json!(self.new_id().to_string());
                        c["application_id"] = json!(world.application_id.to_string());
                        c["version"] = json!("1");
                        if c.get("type").is_none() {
                            c["type"] = json!(1);
                        }
                        if guild != 0 {
                            c["guild_id"] = json!(guild.to_string());
                        }
                        c
                    })
                    .collect();
                self.commands.retain(|(g, _)| *g != guild);
                self.commands.push((guild, Value::Array(commands.clone())));
                self.record(method, seg, None, None, None, body);
                json_response(200, &Value::Array(commands))
            }
            _ => error(404, 0, "404: Not Found"),
        }
    }

    fn record(
        &mut self,
        method: &str,
        seg: &[&str],
        token: Option<String>,
        channel: Option<u64>,
        message_id: Option<u64>,
        body: Value,
    ) {
        self.sent.push(Sent {
            method: method.into(),
            path: format!("/{}", seg.join("/")),
            token,
            channel,
            message_id,
            body,
        });
    }
}

fn empty(status: u16) -> Resp {
    hyper::Response::builder()
        .status(status)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("valid response")
}

/// An edit replaces the fields it names.
fn merge(into: &mut Value, edit: &Value) {
    if let (Some(into), Some(edit)) = (into.as_object_mut(), edit.as_object()) {
        for (k, v) in edit {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// A message object as Discord returns it for something the bot sent.
fn message_object(world: &World, id: u64, channel: u64, body: &Value) -> Value {
    json!({
        "id": id.to_string(),
        "channel_id": channel.to_string(),
        "author": user_json(world, world.bot_user),
        "content": body["content"].as_str().unwrap_or_default(),
        "timestamp": discord_time(id >> 22),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": body["embeds"].as_array().cloned().unwrap_or_default(),
        "components": body["components"].as_array().cloned().unwrap_or_default(),
        "pinned": false,
        "type": 0,
        "flags": body["flags"].as_u64().unwrap_or(0),
    })
}

/// Parses a request body: JSON, or the `payload_json` part of a multipart form.
pub(super) fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if let Some(ct) = content_type.filter(|c| c.starts_with("multipart/form-data")) {
        let boundary = ct.split("boundary=").nth(1).unwrap_or_default().trim_matches('"');
        let text = String::from_utf8_lossy(bytes);
        for part in text.split(&format!("--{boundary}")) {
            if part.contains("name=\"payload_json\"") {
                if let Some((_, body)) = part.split_once("\r\n\r\n") {
                    return serde_json::from_str(body.trim_end()).unwrap_or(Value::Null);
                }
            }
        }
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}
