//! Importing DiscordChatExporter (DCE) exports into the archive.
//!
//! An export file becomes the same rows a load writes for the same messages
//! (`Store::write_import`), so imports and loads of one server merge without
//! duplicates, and `load` afterwards continues each imported channel after
//! its newest imported message. What each format carries, and the identity
//! CSV rows get (they have no ids), is in [`json`] and [`csv`].
//!
//! Files are streamed: a reader thread parses one source (a JSON file, or
//! the part files of one CSV channel) into batches that this thread writes,
//! one transaction each with the channel's checkpoint, so memory stays flat
//! whatever the file size and a killed import resumes exactly on rerun
//! (re-importing stored messages changes nothing). A file that cannot be
//! read is reported and skipped; what it yielded before the error stays
//! stored, whole batches only.

pub mod csv;
pub mod json;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::discord::model::{Attachment, Message, Raw};
use crate::load::files::{FileOptions, LocalFile};
use crate::store::{ImportedChannel, PageCounts, Store, StoreError};

/// Messages per transaction.
pub const DEFAULT_BATCH: usize = 5_000;
/// Rejected rows listed per source (all are counted).
const REJECTED_LISTED: usize = 20;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Export files, or folders searched recursively for `.json` and `.csv` files.
    pub paths: Vec<PathBuf>,
    /// The guild name CSV channels go into (CSV files name no guild id).
    pub guild_name: Option<String>,
    pub batch: usize,
    /// What to keep of the attachment files an export carries (DCE's
    /// `--media` folder), with the checks a download gets; `None` reads none.
    pub media: Option<FileOptions>,
}

/// What can stop an import as a whole (a bad file only fails itself).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    #[error("{0}: {NOT_A_FILE}")]
    NotAFile(PathBuf),
    #[error("nothing to import under {0}: no DiscordChatExporter .json or .csv files")]
    NothingFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Walk { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Files(String),
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
}

/// A row that could not be imported, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub file: PathBuf,
    /// Line in a CSV file, message position (from 1) in a JSON file.
    pub at: u64,
    pub reason: String,
}

/// What became of one source: a JSON file, or one CSV channel's part files.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub files: Vec<PathBuf>,
    pub format: Format,
    #[serde(serialize_with = "crate::snowflake::serialize_opt_id")]
    pub guild_id: Option<u64>,
    pub guild: Option<String>,
    #[serde(serialize_with = "crate::snowflake::serialize_opt_id")]
    pub channel_id: Option<u64>,
    pub channel: Option<String>,
    pub new: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// The first rejected rows (all are counted in `rejected`).
    pub rejected_rows: Vec<Rejected>,
    /// Every rejected row, counted per reason.
    #[serde(skip)]
    rejected_reasons: BTreeMap<String, u64>,
    /// Attachment files the export carried (DCE `--media`) now stored.
    pub media_stored: u64,
    /// Attachment files the export named but that were not stored: outside
    /// the export's folder, missing, or failing a download's checks (the
    /// first few are listed in `media_problems`).
    pub media_not_stored: u64,
    pub media_problems: Vec<String>,
    /// Why the source failed (what it yielded before stays stored).
    pub error: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub sources: Vec<SourceReport>,
    pub files: usize,
    pub channels: usize,
    pub new: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// Rejected rows per reason.
    pub rejected_reasons: BTreeMap<String, u64>,
    /// Attachment files from the exports' media folders: stored, and not.
    pub media_stored: u64,
    pub media_not_stored: u64,
    pub failed: usize,
    pub seconds: f64,
    pub interrupted: bool,
}

/// Progress, for a bar: bytes of all files, and messages written.
#[derive(Debug, Clone, Copy)]
pub enum ImportEvent {
    Started { files: usize, bytes: u64 },
    Progress { bytes: u64, messages: u64 },
}

/// One batch from a reader, for the writer.
struct Batch {
    channel: Arc<ImportedChannel>,
    messages: Vec<Raw<Message>>,
    /// Files of these messages' attachments that came with the export.
    media: Vec<LocalFile>,
}

/// Where a reader puts what it parses. Readers run on their own thread;
/// `push` blocks while the writer is two batches behind.
pub(crate) struct Sink {
    tx: SyncSender<Batch>,
    channel: Option<Arc<ImportedChannel>>,
    pending: Vec<Raw<Message>>,
    pending_media: Vec<LocalFile>,
    batch: usize,
    report: SourceReport,
    stop: CancellationToken,
}

/// A reader stops early: the writer is gone or a stop was asked for.
#[derive(Debug)]
pub(crate) struct Stopped;

/// Why a reader ended early.
#[derive(Debug)]
pub(crate) enum ReadError {
    Stopped,
    /// The file is not a usable export; in words, with the file and place.
    Failed(String),
}

impl From<Stopped> for ReadError {
    fn from(_: Stopped) -> Self {
        ReadError::Stopped
    }
}

impl Sink {
    /// Sets the channel the following messages belong to.
    pub(crate) fn channel(&mut self, channel: ImportedChannel) -> Result<(), Stopped> {
        self.flush()?;
        self.report.guild_id = Some(channel.guild_id);
        self.report.guild = Some(channel.guild_name.clone());
        self.report.channel_id = Some(channel.channel_id);
        self.report.channel = Some(channel.name.clone());
        self.channel = Some(Arc::new(channel));
        Ok(())
    }

    pub(crate) fn push(&mut self, message: Raw<Message>) -> Result<(), Stopped> {
        debug_assert!(self.channel.is_some(), "a channel comes before its messages");
        self.pending.push(message);
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    /// An attachment file of the message pushed last that the export
    /// carries: `Ok` where [`local_media`] found it, else why not.
    pub(crate) fn media(&mut self, found: Result<LocalFile, String>) {
        match found {
            Ok(f) => self.pending_media.push(f),
            Err(why) => self.report.media_problem(why),
        }
    }

    pub(crate) fn reject(&mut self, file: &Path, at: u64, reason: String) {
        self.report.rejected += 1;
        *self.report.rejected_reasons.entry(reason_kind(&reason)).or_default() += 1;
        if self.report.rejected_rows.len() < REJECTED_LISTED {
            self.report.rejected_rows.push(Rejected { file: file.into(), at, reason });
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), Stopped> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.stop.is_cancelled() {
            return Err(Stopped);
        }
        let channel = self.channel.clone().expect("a channel comes before its messages");
        let messages = std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch));
        let media = std::mem::take(&mut self.pending_media);
        self.tx.send(Batch { channel, messages, media }).map_err(|_| Stopped)
    }
}

impl SourceReport {
    fn media_problem(&mut self, why: String) {
        self.media_not_stored += 1;
        if self.media_problems.len() < REJECTED_LISTED {
            self.media_problems.push(why);
        }
    }
}

/// Where an attachment's `url` in an export points to a file the export
/// carries: DCE's `--media` rewrites it to the downloaded copy's path,
/// relative to the export's folder (`<export>.json_Files/name-HASH.png`).
/// `None` for a link (the load fetches those from the CDN). The path is the
/// export's word, so it must lead to a regular file inside the folder that
/// holds the export, symbolic links resolved: an export cannot make the
/// import read (and OCR, and index for every reader of the channel) any
/// other file on this machine.
pub(crate) fn local_media(export: &Path, attachment: &Attachment, message: u64) -> Option<Result<LocalFile, String>> {
    let url = attachment.url.trim();
    if url.is_empty() || url.contains("://") {
        return None;
    }
    // DCE on Windows writes backslashes.
    let relative = PathBuf::from(url.replace('\\', "/"));
    let folder = export.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let found = (|| {
        let folder = folder.canonicalize().map_err(|e| format!("{}: {e}", folder.display()))?;
        let path = folder.join(&relative).canonicalize().map_err(|e| format!("{url}: {e}"))?;
        if !path.starts_with(&folder) {
            return Err(format!("{url}: outside the export's folder {}, not read", folder.display()));
        }
        Ok(path)
    })();
    Some(found.map(|path| LocalFile {
        attachment: attachment.id,
        message,
        filename: attachment.filename.clone(),
        path,
    }))
}

/// A reader's input: a file, counting the bytes read for the progress bar.
pub(crate) struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub(crate) fn open(path: &Path, read: &Arc<AtomicU64>) -> Result<Counted<std::fs::File>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    // What was opened, not what the name said a moment before.
    let meta = file.metadata().map_err(|e| format!("cannot open: {e}"))?;
    if !meta.is_file() {
        return Err(NOT_A_FILE.into());
    }
    Ok(Counted { inner: file, read: read.clone() })
}

/// Why a device, pipe or socket is not read: it may never end (`/dev/zero`).
const NOT_A_FILE: &str = "not a regular file (a device, pipe or socket?): give export files or folders of them";

/// One unit of reading.
#[derive(Debug)]
enum Source {
    Json(PathBuf),
    /// One CSV channel: its part files in order.
    Csv(csv::CsvChannel),
}

impl Source {
    fn files(&self) -> Vec<PathBuf> {
        match self {
            Source::Json(p) => vec![p.clone()],
            Source::Csv(c) => c.files.clone(),
        }
    }
}

/// Imports every export under `options.paths`.
pub fn import(
    store: &Store,
    options: &ImportOptions,
    progress: &(dyn Fn(ImportEvent) + Sync),
    stop: &CancellationToken,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let files = find_files(&options.paths)?;
    let bytes = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();
    progress(ImportEvent::Started { files: files.len(), bytes });
    let (json_files, csv_files): (Vec<_>, Vec<_>) =
        files.iter().cloned().partition(|f| extension(f).as_deref() == Some("json"));
    let mut sources: Vec<Source> = json_files.into_iter().map(Source::Json).collect();
    sources.extend(csv::channels(csv_files, options.guild_name.as_deref()).into_iter().map(Source::Csv));

    let read = Arc::new(AtomicU64::new(0));
    let mut summary = ImportSummary {
        sources: Vec::new(),
        files: files.len(),
        channels: 0,
        new: 0,
        updated: 0,
        unchanged: 0,
        rejected: 0,
        rejected_reasons: BTreeMap::new(),
        media_stored: 0,
        media_not_stored: 0,
        failed: 0,
        seconds: 0.0,
        interrupted: false,
    };
    let mut messages = 0u64;
    for source in sources {
        if stop.is_cancelled() {
            summary.interrupted = true;
            break;
        }
        let report = import_source(store, &source, options, &read, stop, &mut |n| {
            messages += n;
            progress(ImportEvent::Progress { bytes: read.load(Ordering::Relaxed), messages });
        })?;
        summary.new += report.new;
        summary.updated += report.updated;
        summary.unchanged += report.unchanged;
        summary.rejected += report.rejected;
        summary.media_stored += report.media_stored;
        summary.media_not_stored += report.media_not_stored;
        if report.error.is_some() {
            summary.failed += 1;
        }
        summary.sources.push(report);
    }
    summary.interrupted |= stop.is_cancelled();
    let mut channels: Vec<u64> = summary.sources.iter().filter_map(|s| s.channel_id).collect();
    channels.sort_unstable();
    channels.dedup();
    summary.channels = channels.len();
    for s in &summary.sources {
        for (reason, n) in &s.rejected_reasons {
            *summary.rejected_reasons.entry(reason.clone()).or_default() += n;
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// A rejection reason without its specifics ("unrecognised date '…'" → "unrecognised date").
fn reason_kind(reason: &str) -> String {
    reason.split([':', '\'', '"']).next().unwrap_or(reason).trim().to_owned()
}

/// Reads one source on a thread of its own while this thread writes its batches.
fn import_source(
    store: &Store,
    source: &Source,
    options: &ImportOptions,
    read: &Arc<AtomicU64>,
    stop: &CancellationToken,
    written: &mut dyn FnMut(u64),
) -> Result<SourceReport, ImportError> {
    let batch = options.batch.max(1);
    let (tx, rx) = sync_channel::<Batch>(2);
    let report = SourceReport {
        files: source.files(),
        format: match source {
            Source::Json(_) => Format::Json,
            Source::Csv(_) => Format::Csv,
        },
        guild_id: None,
        guild: None,
        channel_id: None,
        channel: None,
        new: 0,
        updated: 0,
        unchanged: 0,
        rejected: 0,
        rejected_rows: Vec::new(),
        rejected_reasons: BTreeMap::new(),
        media_stored: 0,
        media_not_stored: 0,
        media_problems: Vec::new(),
        error: None,
    };
    let sink = Sink {
        tx,
        channel: None,
        pending: Vec::with_capacity(batch),
        pending_media: Vec::new(),
        batch,
        report,
        stop: stop.clone(),
    };
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut sink = sink;
            let result = match source {
                Source::Json(path) => json::read(path, read, &mut sink),
                Source::Csv(channel) => csv::read(channel, read, &mut sink),
            }
            .and_then(|()| Ok(sink.flush()?));
            let mut report = sink.report;
            if let Err(ReadError::Failed(error)) = result {
                report.error = Some(error);
            }
            report
        });
        let written = write_batches(store, rx, options.media.as_ref(), written);
        // The reader ends once the writer stops taking batches.
        let mut report = match reader.join() {
            Ok(report) => report,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let Written { counts, refused, media } = written?;
        report.media_stored = media.stored;
        for why in media.problems {
            report.media_problem(why);
        }
        report.new = counts.new;
        report.updated = counts.updated;
        report.unchanged = counts.unchanged;
        if counts.conflicts > 0 {
            report.rejected += counts.conflicts;
            *report.rejected_reasons.entry(CONFLICT.to_owned()).or_default() += counts.conflicts;
        }
        if let Some(refused) = refused {
            report.error = Some(refused);
        }
        Ok(report)
    })
}

/// Why rows whose ids the archive holds elsewhere are rejected.
const CONFLICT: &str = "message or attachment id stored in another channel or message (ids never move)";

/// What the writer did with a source's batches.
struct Written {
    counts: PageCounts,
    /// Why the source was refused (a channel of another guild), if it was.
    refused: Option<String>,
    media: MediaDone,
}

#[derive(Default)]
struct MediaDone {
    stored: u64,
    /// Why each file not stored was not.
    problems: Vec<String>,
}

/// Writes a source's batches, then stores the files that came with each
/// batch's messages (after the batch, so that their attachment rows exist).
/// A channel the archive places in another guild refuses the source (the
/// reason is returned; what came before stays).
fn write_batches(
    store: &Store,
    rx: Receiver<Batch>,
    media: Option<&FileOptions>,
    written: &mut dyn FnMut(u64),
) -> Result<Written, ImportError> {
    let mut done = Written { counts: PageCounts::default(), refused: None, media: MediaDone::default() };
    for batch in rx {
        match store.write_import(&batch.channel, &batch.messages) {
            Ok(c) => done.counts += c,
            Err(e @ StoreError::OtherGuild { .. }) => {
                done.refused = Some(e.to_string());
                return Ok(done);
            }
            Err(e) => return Err(e.into()),
        }
        for f in batch.media.iter().filter(|_| media.is_some()) {
            let options = media.expect("filtered");
            match crate::load::files::store_local_file(store, f, options) {
                Ok(None) => {}
                Ok(Some(Ok(()))) => done.media.stored += 1,
                Ok(Some(Err((state, detail)))) => {
                    done.media.problems.push(format!("{}: {}: {detail}", f.path.display(), state.as_str()));
                }
                Err(crate::load::LoadError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(ImportError::Files(e.to_string())),
            }
        }
        written(batch.messages.len() as u64);
    }
    Ok(done)
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

/// The export files named by `paths`: files as given, folders searched
/// recursively for `.json` and `.csv` (symbolic links are not followed),
/// in natural order ("part 2" before "part 10").
fn find_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImportError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImportError::NotFound(path.clone()),
            _ => ImportError::Walk { path: path.clone(), source: e },
        })?;
        if meta.is_file() {
            files.push(path.clone());
            continue;
        }
        if !meta.is_dir() {
            return Err(ImportError::NotAFile(path.clone()));
        }
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(path).follow_links(false) {
            let entry = entry.map_err(|e| ImportError::Walk {
                path: e.path().map_or_else(|| path.clone(), Path::to_path_buf),
                source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("filesystem loop")),
            })?;
            let ext = extension(entry.path());
            if entry.file_type().is_file() && matches!(ext.as_deref(), Some("json" | "csv")) {
                found.push(entry.into_path());
            }
        }
        if found.is_empty() {
            return Err(ImportError::NothingFound(path.clone()));
        }
        found.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
        files.extend(found);
    }
    files.dedup();
    Ok(files)
}

/// Compares strings with runs of digits compared as numbers.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if order != std::cmp::Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros.min(digits.len().saturating_sub(1))..]
}

/// A message as a load would have received it from Discord: the typed value
/// and the JSON that the archive keeps in `messages.raw`.
pub(crate) fn to_raw(m: Message) -> Raw<Message> {
    let json = serde_json::to_string(&WireMessage::of(&m)).expect("a message serializes");
    Raw { value: m, json: RawValue::from_string(json).expect("serde_json wrote valid JSON") }
}

/// Discord's message object, for the fields an export carries.
#[derive(Serialize)]
struct WireMessage<'a> {
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    id: u64,
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    channel_id: u64,
    author: WireUser<'a>,
    content: &'a str,
    timestamp: &'a str,
    edited_timestamp: Option<&'a str>,
    #[serde(rename = "type")]
    kind: u8,
    flags: u64,
    pinned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_reference: Option<WireReference>,
    attachments: Vec<WireAttachment<'a>>,
    reactions: Vec<WireReaction<'a>>,
}

#[derive(Serialize)]
struct WireUser<'a> {
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    id: u64,
    username: &'a str,
    global_name: Option<&'a str>,
    discriminator: Option<&'a str>,
    avatar: Option<&'a str>,
    bot: bool,
}

#[derive(Serialize)]
struct WireReference {
    #[serde(serialize_with = "crate::snowflake::serialize_opt_id")]
    message_id: Option<u64>,
    #[serde(serialize_with = "crate::snowflake::serialize_opt_id")]
    channel_id: Option<u64>,
}

#[derive(Serialize)]
struct WireAttachment<'a> {
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    id: u64,
    filename: &'a str,
    size: u64,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
}

#[derive(Serialize)]
struct WireReaction<'a> {
    count: u64,
    emoji: WireEmoji<'a>,
}

#[derive(Serialize)]
struct WireEmoji<'a> {
    #[serde(serialize_with = "crate::snowflake::serialize_opt_id")]
    id: Option<u64>,
    name: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    fn of(m: &'a Message) -> Self {
        WireMessage {
            id: m.id,
            channel_id: m.channel_id,
            author: WireUser {
                id: m.author.id,
                username: &m.author.username,
                global_name: m.author.global_name.as_deref(),
                discriminator: m.author.discriminator.as_deref(),
                avatar: m.author.avatar.as_deref(),
                bot: m.author.bot,
            },
            content: &m.content,
            timestamp: &m.timestamp,
            edited_timestamp: m.edited_timestamp.as_deref(),
            kind: m.kind,
            flags: m.flags,
            pinned: m.pinned,
            message_reference: m
                .message_reference
                .as_ref()
                .map(|r| WireReference { message_id: r.message_id, channel_id: r.channel_id }),
            attachments: m
                .attachments
                .iter()
                .map(|a| WireAttachment {
                    id: a.id,
                    filename: &a.filename,
                    size: a.size,
                    url: &a.url,
                    content_type: a.content_type.as_deref(),
                })
                .collect(),
            reactions: m
                .reactions
                .iter()
                .map(|r| WireReaction {
                    count: r.count,
                    emoji: WireEmoji { id: r.emoji.id, name: r.emoji.name.as_deref() },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut names = vec!["c [part 10].json", "c [part 2].json", "c.json", "9.csv", "10.csv", "1.csv"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["1.csv", "9.csv", "10.csv", "c [part 2].json", "c [part 10].json", "c.json"]);
    }

    #[test]
    fn reasons_are_grouped_without_their_specifics() {
        assert_eq!(reason_kind("unrecognised date '13/13/2019'"), "unrecognised date");
        assert_eq!(reason_kind("author id: not a number"), "author id");
    }
}
