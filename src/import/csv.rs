//! DCE CSV exports: `AuthorID,Author,Date,Content,Attachments,Reactions`,
//! every field quoted (old versions: `;` with a trailing `;`). CSV carries no
//! guild, channel or message ids, no replies and no threads, so imported
//! rows get a made-up identity that is deterministic:
//!
//! - **Channel**: named by the file. DCE's own naming
//!   `Guild - Parent - channel [channel id][ [part N]].csv` gives the guild
//!   name, the channel name and (as the key) the channel id; a numbered part
//!   file (`1.csv`, `2.csv`, ... in a folder named after the channel) takes
//!   the channel name from its folder and the guild name from the folder
//!   above; any other file is a channel named after the file, in a guild
//!   named after its folder. `--guild-name` overrides the guild name. The
//!   part files of one channel are read as one stream, in part order.
//! - **Guild and channel ids**: FNV-1a of the guild name (and the channel
//!   key), with bit 62 set. Discord ids stay below 2^62 until about 2050,
//!   so these never meet a real guild or channel; a load never asks Discord
//!   for them.
//! - **Message ids**: snowflake-shaped, so they sort by time as Discord's
//!   do: milliseconds since the Discord epoch in the top 42 bits, 10 bits of
//!   the channel id, and 12 bits counting the rows of that channel that
//!   share the same time, in file order. Re-importing the same file gives
//!   the same ids (nothing changes); a longer export of the same channel
//!   adds only the new rows.
//!
//! Dates: ISO 8601 with an offset (DCE since 2023-11), and the locale and
//! user formats older versions wrote (`MM/dd/yyyy h:mm tt`,
//! `dd-MMM-yy hh:mm tt`, `dd/MM/yyyy HH:mm:ss`, `dd.MM.yyyy HH:mm`, ...).
//! Those carry no offset: they are taken as UTC. Month-first is preferred
//! where a date reads both ways, until a row shows the file is day-first.
//! Rows whose date or author id cannot be read are rejected and listed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{natural_cmp, open, to_raw, ReadError, Sink};
use crate::chunk::fnv1a;
use crate::discord::model::{channel_type, Attachment, Emoji, Message, Reaction, User};
use crate::snowflake::{format_time, DISCORD_EPOCH_MS};
use crate::store::ImportedChannel;

/// Bit set on every made-up guild and channel id.
pub const MADE_UP_ID: u64 = 1 << 62;

const HEADER: [&str; 6] = ["AuthorID", "Author", "Date", "Content", "Attachments", "Reactions"];

/// One channel of CSV files: its identity and part files in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvChannel {
    pub guild_name: String,
    pub name: String,
    /// What identifies the channel within its guild: `id:<channel id>` or `name:<name>`.
    pub key: String,
    pub files: Vec<PathBuf>,
}

impl CsvChannel {
    pub fn guild_id(&self) -> u64 {
        MADE_UP_ID | (fnv1a(&[b"dce-csv guild", self.guild_name.as_bytes()]) & (MADE_UP_ID - 1))
    }

    pub fn channel_id(&self) -> u64 {
        MADE_UP_ID | (fnv1a(&[b"dce-csv channel", self.guild_name.as_bytes(), self.key.as_bytes()]) & (MADE_UP_ID - 1))
    }
}

/// What one file name says: guild, channel name, key, part number.
fn identify(path: &Path, guild_name: Option<&str>) -> (String, String, String, u64) {
    let folder = |p: Option<&Path>| {
        p.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "imported".into())
    };
    let mut stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut part = 0;
    if let Some((rest, n)) = bracketed(&stem).filter(|(_, inner)| inner.starts_with("part ")) {
        if let Ok(n) = n["part ".len()..].parse() {
            part = n;
            stem = rest;
        }
    }
    let parent = path.parent();
    let (guild, name, key) = if let Some((rest, id)) =
        bracketed(&stem).filter(|(_, inner)| !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()))
    {
        let segments: Vec<&str> = rest.split(" - ").collect();
        let name = segments.last().copied().unwrap_or(&rest).to_owned();
        let guild = if segments.len() > 1 { segments[0].to_owned() } else { folder(parent) };
        (guild, name, format!("id:{id}"))
    } else if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
        part = stem.parse().unwrap_or(0);
        let name = folder(parent);
        (folder(parent.and_then(Path::parent)), name.clone(), format!("name:{name}"))
    } else {
        (folder(parent), stem.clone(), format!("name:{stem}"))
    };
    // `--guild-name` names the guild of server channels; it never turns a
    // direct-message export into one (`read` refuses those).
    let guild = match guild_name {
        Some(given) if guild != DIRECT_MESSAGES => given.to_owned(),
        _ => guild,
    };
    (guild, name, key, part)
}

/// The guild name DiscordChatExporter gives direct messages.
const DIRECT_MESSAGES: &str = "Direct Messages";

/// `"text [inner]"` → `("text", "inner")`.
fn bracketed(s: &str) -> Option<(String, String)> {
    let s = s.trim_end();
    let body = s.strip_suffix(']')?;
    let open = body.rfind('[')?;
    Some((body[..open].trim_end().to_owned(), body[open + 1..].to_owned()))
}

/// A channel's name and numbered part files, by (guild name, key).
type Groups = BTreeMap<(String, String), (String, Vec<(u64, PathBuf)>)>;

/// Groups CSV files into channels, each with its parts in order.
pub(crate) fn channels(files: Vec<PathBuf>, guild_name: Option<&str>) -> Vec<CsvChannel> {
    let mut groups = Groups::new();
    for file in files {
        let (guild, name, key, part) = identify(&file, guild_name);
        groups.entry((guild, key)).or_insert_with(|| (name, Vec::new())).1.push((part, file));
    }
    groups
        .into_iter()
        .map(|((guild_name, key), (name, mut parts))| {
            parts.sort_by(|a, b| {
                a.0.cmp(&b.0).then_with(|| natural_cmp(&a.1.to_string_lossy(), &b.1.to_string_lossy()))
            });
            CsvChannel { guild_name, name, key, files: parts.into_iter().map(|(_, f)| f).collect() }
        })
        .collect()
}

/// Reads one channel's CSV files into the sink.
pub(crate) fn read(channel: &CsvChannel, read: &Arc<AtomicU64>, sink: &mut Sink) -> Result<(), ReadError> {
    if channel.guild_name == DIRECT_MESSAGES {
        return Err(ReadError::Failed(format!(
            "{}: a direct-message export: direct messages are never archived",
            channel.files[0].display()
        )));
    }
    let channel_id = channel.channel_id();
    sink.channel(ImportedChannel {
        guild_id: channel.guild_id(),
        guild_name: channel.guild_name.clone(),
        channel_id,
        kind: channel_type::GUILD_TEXT,
        parent_id: None,
        name: channel.name.clone(),
        topic: None,
    })?;
    let mut ids = Ids { salt: (channel_id & 0x3ff) << 12, last_ms: u64::MAX, same: 0 };
    let mut dates = Dates::default();
    for path in &channel.files {
        let fail = |reason: String| ReadError::Failed(format!("{}: {reason}", path.display()));
        let since_record = Arc::new(AtomicU64::new(0));
        let file = Bounded { inner: open(path, read).map_err(fail)?, since_record: since_record.clone() };
        let mut input = BufReader::with_capacity(1 << 20, file);
        let head = input.fill_buf().map_err(|e| fail(format!("read error: {e}")))?;
        let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let delimiter = if head.starts_with(b"AuthorID;") || head.starts_with(b"\"AuthorID\";") { b';' } else { b',' };
        let mut csv =
            ::csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).has_headers(true).from_reader(input);
        let header = csv.byte_headers().map_err(|e| fail(format!("cannot read the header: {e}")))?.clone();
        check_header(&header).map_err(fail)?;
        let mut record = ::csv::ByteRecord::new();
        loop {
            since_record.store(0, Ordering::Relaxed);
            match csv.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) if matches!(e.kind(), ::csv::ErrorKind::Io(_)) => return Err(fail(format!("read error: {e}"))),
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    sink.reject(path, line, format!("unreadable row: {e}"));
                    continue;
                }
            }
            let line = record.position().map_or(0, |p| p.line());
            match row(&record, channel_id, &mut ids, &mut dates) {
                Ok(m) => sink.push(to_raw(m))?,
                Err(reason) => sink.reject(path, line, reason),
            }
        }
    }
    Ok(())
}

/// The most bytes read for one CSV record (plus the read buffer): a DCE row
/// holds one message of at most 4,000 characters (some kilobytes with its
/// attachment links and reactions), so anything near this is no export, and
/// memory stays bounded however long a "record" (a file of one endless line)
/// runs.
const MAX_RECORD: u64 = 8 << 20;

/// A file that fails once a record runs past [`MAX_RECORD`] bytes; the
/// reader resets `since_record` before each record.
struct Bounded<R> {
    inner: R,
    since_record: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.since_record.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > MAX_RECORD {
            return Err(std::io::Error::other(format!(
                "a row runs past {} MiB: not a DiscordChatExporter export",
                MAX_RECORD >> 20
            )));
        }
        Ok(n)
    }
}

fn check_header(header: &::csv::ByteRecord) -> Result<(), String> {
    let fields: Vec<String> = header
        .iter()
        .map(|f| String::from_utf8_lossy(f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)).trim().to_owned())
        .collect();
    let named: Vec<&str> = fields.iter().map(String::as_str).filter(|f| !f.is_empty()).collect();
    if named != HEADER {
        return Err(format!(
            "not a DiscordChatExporter CSV export: the header is {:?}, expected {}",
            fields.join(","),
            HEADER.join(",")
        ));
    }
    Ok(())
}

/// Message ids of one channel (see the module docs).
struct Ids {
    salt: u64,
    last_ms: u64,
    same: u64,
}

impl Ids {
    fn next(&mut self, time: DateTime<Utc>) -> Result<u64, String> {
        let ms = u64::try_from(time.timestamp_millis())
            .ok()
            .and_then(|ms| ms.checked_sub(DISCORD_EPOCH_MS))
            .ok_or_else(|| format!("date {} is before Discord existed", format_time(time)))?;
        if ms == self.last_ms {
            self.same += 1;
        } else {
            (self.last_ms, self.same) = (ms, 0);
        }
        if self.same >= 1 << 12 {
            return Err(format!("more than 4096 messages at {}", format_time(time)));
        }
        Ok(ms << 22 | self.salt | self.same)
    }
}

fn text(field: Option<&[u8]>) -> Result<&str, String> {
    std::str::from_utf8(field.unwrap_or_default()).map_err(|_| "text is not UTF-8".to_owned())
}

/// One CSV row as Discord's message object, or why it cannot be.
fn row(record: &::csv::ByteRecord, channel_id: u64, ids: &mut Ids, dates: &mut Dates) -> Result<Message, String> {
    if record.len() < HEADER.len() {
        return Err(format!("{} fields, expected {}", record.len(), HEADER.len()));
    }
    let author_id = text(record.get(0))?;
    let author_id: u64 = author_id
        .trim()
        .parse()
        .ok()
        .filter(|&v: &u64| v <= i64::MAX as u64)
        .ok_or_else(|| format!("author id {author_id:?} is not a Discord id"))?;
    let author = text(record.get(1))?;
    let (username, discriminator) = match author.rsplit_once('#') {
        Some((name, d)) if d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()) => (name, Some(d.to_owned())),
        _ => (author, None),
    };
    let date = text(record.get(2))?;
    let time = dates.parse(date).ok_or_else(|| format!("unrecognised date {date:?}"))?;
    let id = ids.next(time)?;
    crate::snowflake::check_not_future(id).map_err(|_| format!("date from the future: {date:?}"))?;
    let attachments = text(record.get(4))?.split(',').filter_map(|url| attachment(url.trim())).collect();
    let reactions = text(record.get(5))?.split(',').filter_map(reaction).collect();
    Ok(Message {
        id,
        channel_id,
        author: User {
            id: author_id,
            username: username.to_owned(),
            global_name: None,
            discriminator,
            avatar: None,
            bot: false,
        },
        content: text(record.get(3))?.to_owned(),
        timestamp: format_time(time),
        edited_timestamp: None,
        kind: 0,
        flags: 0,
        pinned: false,
        webhook_id: None,
        message_reference: None,
        attachments,
        embeds: Vec::new(),
        sticker_items: Vec::new(),
        components: Vec::new(),
        poll: None,
        reactions,
    })
}

/// An attachment from its Discord CDN URL (`.../attachments/<channel>/<id>/<name>`).
fn attachment(url: &str) -> Option<Attachment> {
    let path = url.split(['?', '#']).next()?;
    let rest = path.split("/attachments/").nth(1)?;
    let mut parts = rest.split('/');
    let (_channel, id, filename) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Attachment {
        id: crate::snowflake::parse(id)?,
        filename: filename.to_owned(),
        content_type: None,
        size: 0,
        url: url.to_owned(),
        width: None,
        height: None,
        description: None,
    })
}

/// `👍 (2)` → the emoji and its count.
fn reaction(text: &str) -> Option<Reaction> {
    let (name, count) = text.trim().rsplit_once(" (")?;
    let count = count.strip_suffix(')')?.parse().ok()?;
    Some(Reaction { count, emoji: Emoji { id: None, name: Some(name.to_owned()) } })
}

/// Date formats DCE has written without an offset (taken as UTC).
const NAIVE_FORMATS: &[&str] = &[
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%d-%b-%y %I:%M %p",
    "%d-%b-%Y %I:%M %p",
    "%d-%b-%y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %I:%M:%S %p",
    "%d/%m/%Y %I:%M %p",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
];

/// Parses a file's dates, trying first the format that read the last one.
#[derive(Default)]
struct Dates {
    last: Option<usize>,
}

impl Dates {
    fn parse(&mut self, text: &str) -> Option<DateTime<Utc>> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(t.with_timezone(&Utc));
        }
        if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%:z") {
            return Some(t.with_timezone(&Utc));
        }
        let order = self.last.into_iter().chain(0..NAIVE_FORMATS.len());
        for i in order {
            if let Ok(t) = NaiveDateTime::parse_from_str(text, NAIVE_FORMATS[i]) {
                self.last = Some(i);
                return Some(t.and_utc());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_date_format_dce_wrote_is_read() {
        let mut d = Dates::default();
        assert_eq!(d.parse("2025-04-14T14:38:11.3860000+00:00"), Some(utc("2025-04-14T14:38:11.386Z")));
        assert_eq!(d.parse("2025-04-14T16:38:11.3860000+02:00"), Some(utc("2025-04-14T14:38:11.386Z")));
        assert_eq!(d.parse("05/16/2023 8:50 PM"), Some(utc("2023-05-16T20:50:00Z")));
        assert_eq!(d.parse("5/16/2023 8:50:18 PM"), Some(utc("2023-05-16T20:50:18Z")));
        assert_eq!(d.parse("13-Apr-19 04:51 AM"), Some(utc("2019-04-13T04:51:00Z")));
        assert_eq!(d.parse("05-Dec-19 01:23 PM"), Some(utc("2019-12-05T13:23:00Z")));
        assert_eq!(d.parse("16/05/2023 20:50:18"), Some(utc("2023-05-16T20:50:18Z")));
        assert_eq!(d.parse("16.05.2023 20:50"), Some(utc("2023-05-16T20:50:00Z")));
        assert_eq!(d.parse("2023-05-16 20:50:18"), Some(utc("2023-05-16T20:50:18Z")));
        assert_eq!(d.parse("yesterday"), None);
    }

    #[test]
    fn a_day_first_file_stays_day_first() {
        let mut d = Dates::default();
        assert_eq!(d.parse("13/04/2019 10:00:00"), Some(utc("2019-04-13T10:00:00Z")));
        assert_eq!(d.parse("03/04/2019 10:00:00"), Some(utc("2019-04-03T10:00:00Z")));
    }

    #[test]
    fn file_names_give_the_channel_identity() {
        let p = Path::new("/x/My Guild - Text - general [123456].csv");
        assert_eq!(identify(p, None), ("My Guild".into(), "general".into(), "id:123456".into(), 0));
        let p = Path::new("/x/My Guild - Text - general [123456] [part 3].csv");
        assert_eq!(identify(p, None).3, 3);
        let p = Path::new("/archive/komodo/support/2.csv");
        assert_eq!(identify(p, None), ("komodo".into(), "support".into(), "name:support".into(), 2));
        assert_eq!(identify(p, Some("Komodo")).0, "Komodo");
        let p = Path::new("/archive/komodo/support.csv");
        assert_eq!(identify(p, None), ("komodo".into(), "support".into(), "name:support".into(), 0));
    }

    #[test]
    fn parts_of_a_channel_are_read_in_order() {
        let files = ["/a/g/c/10.csv", "/a/g/c/2.csv", "/a/g/c/1.csv", "/a/g/d.csv"].map(PathBuf::from).to_vec();
        let ch = channels(files, None);
        assert_eq!(ch.len(), 2);
        let c = ch.iter().find(|c| c.name == "c").unwrap();
        assert_eq!(c.files, ["/a/g/c/1.csv", "/a/g/c/2.csv", "/a/g/c/10.csv"].map(PathBuf::from));
        assert!(c.channel_id() >= MADE_UP_ID && c.guild_id() >= MADE_UP_ID);
        assert_eq!(c.guild_id(), ch.iter().find(|c| c.name == "d").unwrap().guild_id());
    }

    #[test]
    fn ids_sort_by_time_then_file_order() {
        let mut ids = Ids { salt: 7 << 12, last_ms: u64::MAX, same: 0 };
        let t = utc("2019-04-13T04:51:00Z");
        let a = ids.next(t).unwrap();
        let b = ids.next(t).unwrap();
        let c = ids.next(utc("2019-04-13T04:52:00Z")).unwrap();
        assert!(a < b && b < c);
        assert_eq!(crate::snowflake::timestamp(a), t);
        assert!(ids.next(utc("2014-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn attachments_and_reactions_are_read_from_their_text() {
        let a = attachment("https://cdn.discordapp.com/attachments/1/22/error.png?ex=1").unwrap();
        assert_eq!((a.id, a.filename.as_str()), (22, "error.png"));
        assert!(attachment("https://example.com/x.png").is_none());
        let r = reaction("👍 (2)").unwrap();
        assert_eq!((r.count, r.emoji.name.as_deref()), (2, Some("👍")));
    }
}
