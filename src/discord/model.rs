//! The parts of Discord's REST objects that the archive reads.
//!
//! Only fields the store or the loader use are typed; each object's full JSON is
//! kept beside it (`Raw`) so nothing Discord sends is lost. Snowflakes arrive as
//! strings and are parsed into `u64`.

use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::permissions::{Overwrite, OverwriteKind};

/// Channel types, as numbered by Discord.
pub mod channel_type {
    pub const GUILD_TEXT: u8 = 0;
    pub const GUILD_VOICE: u8 = 2;
    pub const GUILD_CATEGORY: u8 = 4;
    pub const GUILD_ANNOUNCEMENT: u8 = 5;
    pub const ANNOUNCEMENT_THREAD: u8 = 10;
    pub const PUBLIC_THREAD: u8 = 11;
    pub const PRIVATE_THREAD: u8 = 12;
    pub const GUILD_STAGE_VOICE: u8 = 13;
    pub const GUILD_FORUM: u8 = 15;
    pub const GUILD_MEDIA: u8 = 16;

    /// Channels whose message history can be paged.
    pub fn holds_messages(kind: u8) -> bool {
        matches!(
            kind,
            GUILD_TEXT
                | GUILD_VOICE
                | GUILD_ANNOUNCEMENT
                | ANNOUNCEMENT_THREAD
                | PUBLIC_THREAD
                | PRIVATE_THREAD
                | GUILD_STAGE_VOICE
        )
    }

    /// Channels that can hold threads (and so are searched for archived ones).
    pub fn holds_threads(kind: u8) -> bool {
        matches!(kind, GUILD_TEXT | GUILD_ANNOUNCEMENT | GUILD_FORUM | GUILD_MEDIA)
    }

    pub fn is_thread(kind: u8) -> bool {
        matches!(kind, ANNOUNCEMENT_THREAD | PUBLIC_THREAD | PRIVATE_THREAD)
    }

    /// A short human name for summaries.
    pub fn name(kind: u8) -> &'static str {
        match kind {
            GUILD_TEXT => "text",
            GUILD_VOICE => "voice",
            GUILD_CATEGORY => "category",
            GUILD_ANNOUNCEMENT => "announcement",
            ANNOUNCEMENT_THREAD => "announcement thread",
            PUBLIC_THREAD => "thread",
            PRIVATE_THREAD => "private thread",
            GUILD_STAGE_VOICE => "stage",
            GUILD_FORUM => "forum",
            GUILD_MEDIA => "media",
            _ => "other",
        }
    }
}

/// Message types, as numbered by Discord, and which of them are conversation.
pub mod message_type {
    pub const DEFAULT: u8 = 0;
    pub const REPLY: u8 = 19;
    /// The first message of a thread started from a message: it points at that
    /// message and carries no text of its own.
    pub const THREAD_STARTER_MESSAGE: u8 = 21;

    /// The types that carry what people say: what stage two indexes and
    /// keyword search matches. Everything else (joins, pins, boosts...) is a
    /// system message.
    pub const CONVERSATION: [u8; 3] = [DEFAULT, REPLY, THREAD_STARTER_MESSAGE];

    pub fn is_conversation(kind: u8) -> bool {
        CONVERSATION.contains(&kind)
    }

    /// Conversation that a person typed into this message: every
    /// conversation type but the thread starter, which is blank by design.
    pub fn is_typed(kind: u8) -> bool {
        is_conversation(kind) && kind != THREAD_STARTER_MESSAGE
    }

    /// [`CONVERSATION`] as an SQL list: `m.type IN (0, 19, 21)`.
    pub fn conversation_sql() -> String {
        CONVERSATION.map(|k| k.to_string()).join(", ")
    }
}

/// Message flag: the message started a thread whose id equals the message's id.
pub const MESSAGE_FLAG_HAS_THREAD: u64 = 1 << 5;

/// Application flags meaning the MESSAGE_CONTENT intent is granted.
pub const APP_FLAG_GATEWAY_MESSAGE_CONTENT: u64 = 1 << 18;
pub const APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED: u64 = 1 << 19;

/// A typed object together with the exact JSON it was read from.
#[derive(Debug)]
pub struct Raw<T> {
    pub value: T,
    pub json: Box<RawValue>,
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Raw<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Box::<RawValue>::deserialize(d)?;
        let value = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        Ok(Raw { value, json })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    #[serde(deserialize_with = "snowflake")]
    pub id: u64,
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
    #[serde(default)]
    pub discriminator: Option<String>,
    #[serde(default)]
    pub avatar: Option<String>,
    #[serde(default)]
    pub bot: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Application {
    #[serde(deserialize_with = "snowflake")]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub flags: u64,
}

impl Application {
    pub fn has_message_content_intent(&self) -> bool {
        self.flags & (APP_FLAG_GATEWAY_MESSAGE_CONTENT | APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED) != 0
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Role {
    #[serde(deserialize_with = "snowflake")]
    pub id: u64,
    pub name: String,
    #[serde(deserialize_with = "bitset")]
    pub permissions: u64,
    #[serde(default)]
    pub position: i64,
}

#[derive(Debug, Deserialize)]
pub struct Guild {
    #[serde(deserialize_with = "snowflake")]
    pub id: u64,
    pub name: String,
    #[serde(deserialize_with = "snowflake")]
    pub owner_id: u64,
    #[serde(default)]
    pub roles: Vec<Raw<Role>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    #[serde(default, deserialize_with = "snowflakes")]
    pub roles: Vec<u64>,
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
struct WireOverwrite {
    #[serde(deserialize_with = "snowflake")]
    id: u64,
    #[serde(rename = "type")]
    kind: u8,
    #[serde(deserialize_with = "bitset")]
    allow: u64,
    #[serde(deserialize_with = "bitset")]
    deny: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ThreadMetadata {
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub archive_timestamp: Option<String>,
    #[serde(default)]
    pub locked: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Channel {
    #[serde(deserialize_with = "snowflake")]
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub guild_id: Option<u64>,
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub parent_id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub position: Option<i64>,
    #[serde(default, deserialize_with = "overwrites")]
    pub permission_overwrites: Vec<Overwrite>,
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub last_message_id: Option<u64>,
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub owner_id: Option<u64>,
    #[serde(default)]
    pub thread_metadata: Option<ThreadMetadata>,
}

/// Answer of the thread listing routes.
#[derive(Debug, Deserialize)]
pub struct ThreadList {
    pub threads: Vec<Raw<Channel>>,
    #[serde(default)]
    pub has_more: bool,
}

/// Answer of `POST /attachments/refresh-urls`.
#[derive(Debug, Deserialize)]
pub struct RefreshedUrls {
    #[serde(default)]
    pub refreshed_urls: Vec<RefreshedUrl>,
}

#[derive(Debug, Deserialize)]
pub struct RefreshedUrl {
    pub original: String,
    pub refreshed: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    #[serde(deserialize_with = "snowflake")]
    pub id: u64,
    pub filename: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    /// Alt text.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Emoji {
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Emoji {
    /// A stable key: the custom emoji's id, else the unicode emoji itself.
    pub fn key(&self) -> String {
        match (self.id, &self.name) {
            (Some(id), Some(name)) => format!("{name}:{id}"),
            (Some(id), None) => id.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => String::from("?"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reaction {
    pub count: u64,
    pub emoji: Emoji,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MessageReference {
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub message_id: Option<u64>,
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub channel_id: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(deserialize_with = "snowflake")]
    pub id: u64,
    #[serde(deserialize_with = "snowflake")]
    pub channel_id: u64,
    pub author: User,
    #[serde(default)]
    pub content: String,
    pub timestamp: String,
    #[serde(default)]
    pub edited_timestamp: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: u8,
    #[serde(default)]
    pub flags: u64,
    #[serde(default)]
    pub pinned: bool,
    #[serde(default, deserialize_with = "opt_snowflake")]
    pub webhook_id: Option<u64>,
    #[serde(default)]
    pub message_reference: Option<MessageReference>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub embeds: Vec<IgnoredAny>,
    #[serde(default)]
    pub sticker_items: Vec<IgnoredAny>,
    #[serde(default)]
    pub components: Vec<IgnoredAny>,
    #[serde(default)]
    pub poll: Option<IgnoredAny>,
    #[serde(default)]
    pub reactions: Vec<Reaction>,
}

impl Message {
    /// Whether the message carries nothing a reader could see. A page of
    /// ordinary messages that are all blank is the symptom of a bot without
    /// the MESSAGE_CONTENT intent.
    pub fn is_blank(&self) -> bool {
        self.content.is_empty()
            && self.attachments.is_empty()
            && self.embeds.is_empty()
            && self.sticker_items.is_empty()
            && self.components.is_empty()
            && self.poll.is_none()
    }
}

/// Discord's error body: `{"message": "...", "code": 50001}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: u64,
}

/// A 429's body: `{"message", "retry_after": 0.5, "global": false}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RateLimitBody {
    #[serde(default)]
    pub retry_after: f64,
    #[serde(default)]
    pub global: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Num(u64),
}

fn parse_u64<E: serde::de::Error>(v: StrOrNum) -> Result<u64, E> {
    match v {
        StrOrNum::Num(n) => Ok(n),
        StrOrNum::Str(s) => s.parse().map_err(|_| E::custom(format!("not a snowflake: {s:?}"))),
    }
}

fn snowflake<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_u64(StrOrNum::deserialize(d)?)
}

fn opt_snowflake<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<StrOrNum>::deserialize(d)?.map(parse_u64).transpose()
}

fn snowflakes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    Vec::<StrOrNum>::deserialize(d)?.into_iter().map(parse_u64).collect()
}

/// Permission bit sets arrive as decimal strings.
fn bitset<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_u64(StrOrNum::deserialize(d)?)
}

fn overwrites<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Overwrite>, D::Error> {
    let wire = Option::<Vec<WireOverwrite>>::deserialize(d)?.unwrap_or_default();
    Ok(wire
        .into_iter()
        .map(|o| Overwrite {
            id: o.id,
            kind: if o.kind == 1 { OverwriteKind::Member } else { OverwriteKind::Role },
            allow: o.allow,
            deny: o.deny,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_and_keeps_its_json() {
        let json = r#"{"id":"1100","channel_id":"7","author":{"id":"5","username":"ann","global_name":"Ann","discriminator":"0","avatar":null},
            "content":"hi","timestamp":"2024-01-02T03:04:05.123000+00:00","edited_timestamp":null,"type":19,"flags":0,
            "pinned":false,"mentions":[],"attachments":[{"id":"9","filename":"a.png","size":10,"url":"u","content_type":"image/png"}],
            "embeds":[],"reactions":[{"count":3,"emoji":{"id":null,"name":"👍"}}],
            "message_reference":{"type":0,"message_id":"1000","channel_id":"7","guild_id":"1"},"future_field":{"x":1}}"#;
        let m: Raw<Message> = serde_json::from_str(json).unwrap();
        assert_eq!(m.value.id, 1100);
        assert_eq!(m.value.kind, 19);
        assert_eq!(m.value.attachments[0].filename, "a.png");
        assert_eq!(m.value.reactions[0].emoji.key(), "👍");
        assert_eq!(m.value.message_reference.as_ref().unwrap().message_id, Some(1000));
        assert!(m.json.get().contains("future_field"));
        assert!(!m.value.is_blank());
    }

    #[test]
    fn parses_overwrites_and_permission_strings() {
        let json = r#"{"id":"3","type":0,"guild_id":"1","name":"general","permission_overwrites":[
            {"id":"1","type":0,"allow":"0","deny":"1024"},{"id":"42","type":1,"allow":"66560","deny":"0"}]}"#;
        let c: Channel = serde_json::from_str(json).unwrap();
        assert_eq!(c.permission_overwrites.len(), 2);
        assert_eq!(c.permission_overwrites[0].deny, 1024);
        assert_eq!(c.permission_overwrites[1].kind, OverwriteKind::Member);
        assert_eq!(c.permission_overwrites[1].allow, 66560);
    }
}
