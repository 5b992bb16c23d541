//! DCE JSON exports: `{guild, channel, dateRange, exportedAt, messages: [...],
//! messageCount}`, one channel or thread per file (a split export adds
//! `[part N]` files of the same channel). Ids are Discord's own, so the rows
//! equal what a load writes and a load can continue after them.
//!
//! The file is streamed: the top-level object is visited key by key and the
//! `messages` array element by element, so a file of any size is read in
//! constant memory. `guild` and `channel` must come before `messages`, as
//! DCE writes them.

use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{open, to_raw, ReadError, Sink, Stopped};
use crate::discord::model::{channel_type, Attachment, Emoji, Message, MessageReference, Reaction, User};
use crate::store::ImportedChannel;

#[derive(Debug, Deserialize)]
struct DceGuild {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DceChannel {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    category_id: Option<String>,
    name: String,
    #[serde(default)]
    topic: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DceMessage {
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    timestamp: String,
    #[serde(default)]
    timestamp_edited: Option<String>,
    #[serde(default)]
    is_pinned: bool,
    #[serde(default)]
    content: Option<String>,
    author: DceAuthor,
    #[serde(default)]
    attachments: Vec<DceAttachment>,
    #[serde(default)]
    reactions: Vec<DceReaction>,
    #[serde(default)]
    reference: Option<DceReference>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DceAuthor {
    id: String,
    name: String,
    #[serde(default)]
    discriminator: Option<String>,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    avatar_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DceAttachment {
    id: String,
    #[serde(default)]
    url: String,
    file_name: String,
    #[serde(default)]
    file_size_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct DceReaction {
    emoji: DceEmoji,
    #[serde(default)]
    count: u64,
}

#[derive(Debug, Deserialize)]
struct DceEmoji {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DceReference {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
}

/// Reads one DCE JSON file into the sink.
pub(crate) fn read(path: &Path, read: &Arc<AtomicU64>, sink: &mut Sink) -> Result<(), ReadError> {
    let file = open(path, read).map_err(|e| ReadError::Failed(format!("{}: {e}", path.display())))?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 20, file));
    let mut state = State { path, sink, stopped: false, failed: None, position: 0 };
    let result = serde::Deserializer::deserialize_map(&mut de, TopLevel { state: &mut state }).and_then(|()| de.end());
    if state.stopped {
        return Err(ReadError::Stopped);
    }
    if let Some(reason) = state.failed {
        return Err(ReadError::Failed(format!("{}: {reason}", path.display())));
    }
    result.map_err(|e| ReadError::Failed(format!("{}: {}", path.display(), describe(&e))))
}

/// serde_json's error in words a user can act on.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {}, column {}", e.line(), e.column());
    match e.classify() {
        Category::Eof => {
            format!("the file ends early at {at}: a truncated export? (rerun the import with the whole file)")
        }
        Category::Io => format!("read error: {e}"),
        Category::Syntax => format!("not valid JSON at {at}: {e}"),
        Category::Data => format!("not a DiscordChatExporter JSON export: {}", without_type_names(&e.to_string())),
    }
}

/// serde's "expected struct DceGuild" in a user's words: "expected a guild object".
fn without_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("struct Dce") {
        out.push_str(&rest[..at]);
        let name_len =
            rest[at + "struct Dce".len()..].find(|c: char| !c.is_alphanumeric()).unwrap_or(rest.len() - at - 10);
        let name = &rest[at + "struct Dce".len()..at + "struct Dce".len() + name_len];
        let article = if name.starts_with(['A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
        out.push_str(&format!("{article} {} object", name.to_lowercase()));
        rest = &rest[at + "struct Dce".len() + name_len..];
    }
    out.push_str(rest);
    out.replace("expected a a ", "expected a ").replace("expected a an ", "expected an ")
}

struct State<'a> {
    path: &'a Path,
    sink: &'a mut Sink,
    /// The sink refused more: stop reading, say nothing.
    stopped: bool,
    /// The export is unusable for a reason found while reading.
    failed: Option<String>,
    /// Messages seen so far (for rejected-row positions).
    position: u64,
}

impl State<'_> {
    fn stop<E: serde::de::Error>(&mut self, _: Stopped) -> E {
        self.stopped = true;
        E::custom("import stopped")
    }

    fn fail<E: serde::de::Error>(&mut self, reason: String) -> E {
        let e = E::custom(&reason);
        self.failed = Some(reason);
        e
    }
}

struct TopLevel<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a DiscordChatExporter export (an object with guild, channel and messages)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut guild: Option<DceGuild> = None;
        let mut channel: Option<DceChannel> = None;
        let mut messages = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "guild" => guild = Some(map.next_value()?),
                "channel" => channel = Some(map.next_value()?),
                "messages" => {
                    let (Some(g), Some(c)) = (guild.as_ref(), channel.as_ref()) else {
                        return Err(self.state.fail(
                            "not a DiscordChatExporter JSON export: `messages` comes before `guild` and `channel`"
                                .into(),
                        ));
                    };
                    let target = imported_channel(g, c).map_err(|reason| self.state.fail(reason))?;
                    self.state.sink.channel(target).map_err(|s| self.state.stop(s))?;
                    map.next_value_seed(Messages { state: self.state })?;
                    messages = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !messages {
            return Err(self.state.fail("not a DiscordChatExporter JSON export: it has no `messages`".into()));
        }
        Ok(())
    }
}

struct Messages<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for Messages<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.state;
        let channel_id = state.sink.channel_id();
        while let Some(m) = seq.next_element::<DceMessage>()? {
            state.position += 1;
            match message(m, channel_id) {
                Ok(m) => {
                    for a in &m.attachments {
                        if let Some(found) = super::local_media(state.path, a, m.id) {
                            state.sink.media(found);
                        }
                    }
                    state.sink.push(to_raw(m)).map_err(|s| state.stop(s))?
                }
                Err(reason) => {
                    let (path, at) = (state.path, state.position);
                    state.sink.reject(path, at, reason);
                }
            }
        }
        Ok(())
    }
}

impl Sink {
    fn channel_id(&self) -> u64 {
        self.channel.as_ref().map_or(0, |c| c.channel_id)
    }
}

use crate::snowflake::parse as snowflake;

fn opt_snowflake(text: Option<&str>) -> Option<u64> {
    text.filter(|t| !t.is_empty()).and_then(snowflake)
}

/// The guild and channel rows of an export, or why it cannot be imported.
fn imported_channel(g: &DceGuild, c: &DceChannel) -> Result<ImportedChannel, String> {
    let kind = channel_kind(&c.kind).ok_or_else(|| format!("unknown channel type {:?}", c.kind))?;
    if matches!(kind, 1 | 3) || g.id == "0" {
        return Err("a direct-message export: direct messages are never archived".into());
    }
    if !channel_type::holds_messages(kind) {
        return Err(format!("channel type {:?} holds no messages", c.kind));
    }
    let guild_id = snowflake(&g.id).ok_or_else(|| format!("guild id {:?} is not a Discord id", g.id))?;
    let channel_id = snowflake(&c.id).ok_or_else(|| format!("channel id {:?} is not a Discord id", c.id))?;
    Ok(ImportedChannel {
        guild_id,
        guild_name: g.name.clone(),
        channel_id,
        kind,
        parent_id: opt_snowflake(c.category_id.as_deref()),
        name: c.name.clone(),
        topic: c.topic.clone().filter(|t| !t.is_empty()),
    })
}

/// DCE's `ChannelKind` names (or a number, for kinds it has no name for).
fn channel_kind(name: &str) -> Option<u8> {
    Some(match name {
        "GuildTextChat" => channel_type::GUILD_TEXT,
        "DirectTextChat" => 1,
        "GuildVoiceChat" => channel_type::GUILD_VOICE,
        "DirectGroupTextChat" => 3,
        "GuildCategory" => channel_type::GUILD_CATEGORY,
        "GuildNewsChat" => channel_type::GUILD_ANNOUNCEMENT,
        "GuildNewsThread" => channel_type::ANNOUNCEMENT_THREAD,
        "GuildPublicThread" => channel_type::PUBLIC_THREAD,
        "GuildPrivateThread" => channel_type::PRIVATE_THREAD,
        "GuildStageVoice" => channel_type::GUILD_STAGE_VOICE,
        "GuildDirectory" => 14,
        "GuildForum" => channel_type::GUILD_FORUM,
        "GuildMedia" => channel_type::GUILD_MEDIA,
        other => return other.parse().ok(),
    })
}

/// DCE's `MessageKind` names (or a number, for kinds it has no name for).
pub(crate) fn message_kind(name: &str) -> Option<u8> {
    Some(match name {
        "Default" => 0,
        "RecipientAdd" => 1,
        "RecipientRemove" => 2,
        "Call" => 3,
        "ChannelNameChange" => 4,
        "ChannelIconChange" => 5,
        "ChannelPinnedMessage" => 6,
        "GuildMemberJoin" => 7,
        "ThreadCreated" => 18,
        "Reply" => 19,
        "ThreadStarterMessage" => 21,
        other => return other.parse().ok(),
    })
}

/// The avatar hash inside a Discord CDN avatar URL (`.../avatars/<user>/<hash>.png`).
fn avatar_hash(url: &str) -> Option<&str> {
    let rest = url.split("/avatars/").nth(1)?;
    let file = rest.split('/').nth(1)?;
    let hash = file.split(['.', '?']).next()?;
    Some(hash).filter(|h| !h.is_empty())
}

/// One DCE message as Discord's message object, or why it cannot be.
fn message(m: DceMessage, channel_id: u64) -> Result<Message, String> {
    let id = snowflake(&m.id).ok_or_else(|| format!("message id {:?} is not a Discord id", m.id))?;
    crate::snowflake::check_not_future(id).map_err(|at| format!("message id from the future: {id} ({at})"))?;
    let kind = match m.kind.as_deref() {
        None => 0,
        Some(k) => message_kind(k).ok_or_else(|| format!("unknown message type {k:?} in message {id}"))?,
    };
    let timestamp = crate::snowflake::normalize_time(&m.timestamp)
        .ok_or_else(|| format!("timestamp {:?} of message {id} is not a date", m.timestamp))?;
    let edited_timestamp = match m.timestamp_edited.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            crate::snowflake::normalize_time(t)
                .ok_or_else(|| format!("edit timestamp {t:?} of message {id} is not a date"))?,
        ),
    };
    let author_id =
        snowflake(&m.author.id).ok_or_else(|| format!("author id {:?} is not a Discord id", m.author.id))?;
    let discriminator =
        m.author.discriminator.map(|d| if d.trim_start_matches('0').is_empty() { "0".into() } else { d });
    let author = User {
        id: author_id,
        avatar: m.author.avatar_url.as_deref().and_then(avatar_hash).map(str::to_owned),
        global_name: m.author.nickname.filter(|n| !n.is_empty() && *n != m.author.name),
        username: m.author.name,
        discriminator,
        bot: m.author.is_bot,
    };
    let mut attachments = Vec::with_capacity(m.attachments.len());
    for a in m.attachments {
        let aid = snowflake(&a.id).ok_or_else(|| format!("attachment id {:?} is not a Discord id", a.id))?;
        attachments.push(Attachment {
            id: aid,
            filename: a.file_name,
            content_type: None,
            size: a.file_size_bytes,
            url: a.url,
            width: None,
            height: None,
            description: None,
        });
    }
    let reactions = m
        .reactions
        .into_iter()
        .map(|r| Reaction {
            count: r.count,
            emoji: Emoji { id: opt_snowflake(r.emoji.id.as_deref()), name: r.emoji.name.filter(|n| !n.is_empty()) },
        })
        .collect();
    let message_reference = m.reference.and_then(|r| {
        let message_id = opt_snowflake(r.message_id.as_deref());
        let channel_id = opt_snowflake(r.channel_id.as_deref());
        (message_id.is_some() || channel_id.is_some()).then_some(MessageReference { message_id, channel_id })
    });
    Ok(Message {
        id,
        channel_id,
        author,
        content: m.content.unwrap_or_default(),
        timestamp,
        edited_timestamp,
        kind,
        flags: 0,
        pinned: m.is_pinned,
        webhook_id: None,
        message_reference,
        attachments,
        embeds: Vec::new(),
        sticker_items: Vec::new(),
        components: Vec::new(),
        poll: None,
        reactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_no_internal_types() {
        assert_eq!(
            without_type_names("invalid type: integer `5`, expected struct DceGuild at line 1 column 12"),
            "invalid type: integer `5`, expected a guild object at line 1 column 12"
        );
        assert_eq!(without_type_names("expected struct DceAttachment"), "expected an attachment object");
        assert_eq!(without_type_names("missing field `id`"), "missing field `id`");
    }

    #[test]
    fn kinds_map_to_discord_numbers() {
        assert_eq!(message_kind("Reply"), Some(19));
        assert_eq!(message_kind("ThreadCreated"), Some(18));
        assert_eq!(message_kind("24"), Some(24));
        assert_eq!(message_kind("Nonsense"), None);
        assert_eq!(channel_kind("GuildPublicThread"), Some(11));
        assert_eq!(channel_kind("GuildForum"), Some(15));
    }

    #[test]
    fn avatar_hashes_come_out_of_cdn_urls() {
        assert_eq!(avatar_hash("https://cdn.discordapp.com/avatars/12/abc123.png?size=512"), Some("abc123"));
        assert_eq!(avatar_hash("https://cdn.discordapp.com/embed/avatars/0.png"), None);
    }
}
