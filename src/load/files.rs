//! Stage one's second half: attachment files. After the messages, the files
//! of their attachments (images by default) are fetched from Discord's CDN
//! into `<data-dir>/attachments/`, named by their SHA-256, never by the name
//! a user gave them.
//!
//! Resumable and idempotent like the messages: the archive lists what each
//! attachment's file became (`attachments.fetch_state`), and a file is
//! recorded only after it is completely written (to a temporary name, synced,
//! then renamed to its content address). A killed run leaves at most an
//! unrecorded temporary file, removed by a later run, which fetches exactly
//! what is not recorded. Two loads at once may fetch the same file; both
//! write the same bytes to the same name, and neither disturbs the other. The same bytes attached twice are stored once.
//!
//! Nothing from the network is trusted: the file's type is read from its
//! bytes, an image's dimensions from its header and its frames before
//! anything decodes it (over [`crate::ocr::MAX_PIXELS`] it is refused: see
//! [`crate::ocr::check_sizes`]), downloads stop at the size cap whatever the
//! server announced, and links go only to Discord's
//! CDN (see [`crate::discord::cdn`]). Links that expire within a few minutes,
//! or say nothing of expiry, are renewed first through
//! `POST /attachments/refresh-urls` (50 per request, rate-limited like every
//! API request); a link the CDN refuses is renewed once and tried again.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::LoadError;
use crate::discord::cdn::{needs_refresh, Cdn, CdnError};
use crate::discord::{Client, REFRESH_BATCH};
use crate::ocr::Refused;
use crate::store::{claims_image, FetchState, Store, StoredFile, WantedFile};

/// Which attachment files a load fetches (`[load] attachments`, `--attachments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentMode {
    None,
    /// Files that say they are images (and whose bytes are).
    #[default]
    Images,
    All,
}

impl std::str::FromStr for AttachmentMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(AttachmentMode::None),
            "images" => Ok(AttachmentMode::Images),
            "all" => Ok(AttachmentMode::All),
            other => Err(format!("{other:?} is not one of none, images, all")),
        }
    }
}

/// How files are fetched.
#[derive(Debug, Clone)]
pub struct FileOptions {
    pub mode: AttachmentMode,
    /// Largest file fetched, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes one run downloads; the rest waits for the next run.
    pub budget_bytes: u64,
    /// Downloads at the same time.
    pub concurrency: usize,
    /// One download's time limit.
    pub timeout: Duration,
}

/// Default per-file cap: 8 MB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Default budget of one run: 2 GB.
pub const DEFAULT_BUDGET_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default downloads at once: modest, the CDN is shared with everyone.
pub const DEFAULT_CONCURRENCY: usize = 4;

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            mode: AttachmentMode::Images,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            budget_bytes: DEFAULT_BUDGET_BYTES,
            concurrency: DEFAULT_CONCURRENCY,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A file that was not stored, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileProblem {
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    pub attachment_id: u64,
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    pub message_id: u64,
    pub filename: String,
    pub state: FetchState,
    pub detail: String,
}

/// What a run of the fetcher did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FileSummary {
    pub mode: AttachmentMode,
    /// Attachments not fetched before this run that the mode selects.
    pub wanted: u64,
    /// Files stored by this run (a file whose bytes were already stored counts too).
    pub stored: u64,
    /// Of those, bytes already stored under another attachment: not written again.
    pub duplicates: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Links renewed through the API.
    pub refreshed: u64,
    pub too_large: u64,
    pub not_image: u64,
    pub broken: u64,
    pub gone: u64,
    pub refused: u64,
    /// Transient failures: the next load tries them again.
    pub failed: u64,
    /// Left for a later run: over this run's byte budget, or stopped.
    pub left: u64,
    pub seconds: f64,
    /// What was not stored (the first 50).
    pub problems: Vec<FileProblem>,
}

impl FileSummary {
    /// Nothing left that a rerun would do differently.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.left == 0
    }

    fn count(&mut self, state: FetchState) {
        match state {
            FetchState::Stored => self.stored += 1,
            FetchState::TooLarge => self.too_large += 1,
            FetchState::NotImage => self.not_image += 1,
            FetchState::Broken => self.broken += 1,
            FetchState::Gone => self.gone += 1,
            FetchState::Refused => self.refused += 1,
            FetchState::Failed => self.failed += 1,
        }
    }
}

/// Problems listed in a summary (all are counted).
const LISTED_PROBLEMS: usize = 50;
/// Links expiring sooner than this are renewed before use.
const REFRESH_MARGIN_SECS: u64 = 300;

/// Fetches the files of these guilds' attachments that are not stored yet.
/// `progress` gets (files done, files to do). Stops starting downloads when
/// `shutdown` is cancelled (what is in flight finishes or is dropped; nothing
/// half-written is recorded).
pub async fn fetch_files(
    client: &Client,
    store: &Store,
    guilds: &[u64],
    options: &FileOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<FileSummary, LoadError> {
    let started = Instant::now();
    let mut summary = FileSummary { mode: options.mode, ..FileSummary::default() };
    if options.mode == AttachmentMode::None {
        return Ok(summary);
    }
    let dir = store.files_dir();
    let tmp = dir.join("tmp");
    clean_partial_files(&tmp);
    let guilds = guilds.to_vec();
    let mut wanted: Vec<WantedFile> = store
        .call(move |s| s.wanted_files(&guilds))
        .await?
        .into_iter()
        .filter(|f| options.mode == AttachmentMode::All || claims_image(f.content_type.as_deref(), &f.filename))
        .collect();
    summary.wanted = wanted.len() as u64;
    if wanted.is_empty() {
        return Ok(summary);
    }
    let cdn = Cdn::new(client.api_base(), options.timeout).map_err(|e| LoadError::Files(e.to_string()))?;

    // What need not be requested at all: links that are not Discord's, and
    // files announced as larger than the cap.
    let mut problems = Vec::new();
    wanted.retain(|f| {
        let problem = if let Err(e) = cdn.check(&f.url) {
            Some((FetchState::Refused, e.to_string()))
        } else if f.size > options.max_file_bytes {
            Some((FetchState::TooLarge, format!("{} bytes, over the {}-byte cap", f.size, options.max_file_bytes)))
        } else {
            None
        };
        let keep = problem.is_none();
        if let Some((state, detail)) = problem {
            problems.push((f.clone(), state, detail));
        }
        keep
    });
    for (f, state, detail) in problems {
        record_problem(store, &mut summary, &f, state, detail).await?;
    }

    // This run's budget, in announced sizes (the cap bounds what a lie costs).
    let mut planned = 0u64;
    let mut within = 0;
    for f in &wanted {
        let size = if f.size > 0 { f.size } else { options.max_file_bytes };
        if within > 0 && planned + size > options.budget_bytes {
            break;
        }
        planned += size;
        within += 1;
    }
    summary.left += (wanted.len() - within) as u64;
    wanted.truncate(within);

    // Renew links that expire soon, 50 per request.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stale: Vec<usize> =
        (0..wanted.len()).filter(|&i| needs_refresh(&wanted[i].url, now, REFRESH_MARGIN_SECS)).collect();
    for batch in stale.chunks(REFRESH_BATCH) {
        if shutdown.is_cancelled() {
            break;
        }
        summary.refreshed += refresh(client, store, &mut wanted, batch).await?;
    }

    let total = wanted.len() as u64;
    let done = AtomicU64::new(0);
    progress(0, total);
    let ctx = Fetch { client, store, cdn: &cdn, options, dir: &dir, tmp: &tmp, renewed: AtomicU64::new(0) };
    let mut results = futures::stream::iter(wanted)
        .take_while(|_| std::future::ready(!shutdown.is_cancelled()))
        .map(|f| {
            let ctx = &ctx;
            async move { (ctx.one(&f).await, f) }
        })
        .buffer_unordered(options.concurrency.max(1));
    let mut finished = 0u64;
    while let Some((outcome, f)) = results.next().await {
        finished += 1;
        match outcome? {
            Fetched::Stored { bytes, duplicate } => {
                summary.stored += 1;
                summary.bytes += bytes;
                summary.duplicates += u64::from(duplicate);
            }
            Fetched::Problem(state, detail, bytes) => {
                summary.bytes += bytes;
                summary.count(state);
                list_problem(&mut summary, &f, state, detail);
            }
        }
        progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
    }
    drop(results);
    summary.refreshed += ctx.renewed.load(Ordering::Relaxed);
    summary.left += total - finished;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// What became of one file.
enum Fetched {
    Stored {
        bytes: u64,
        duplicate: bool,
    },
    /// Not stored: why, and the bytes downloaded for nothing.
    Problem(FetchState, String, u64),
}

struct Fetch<'a> {
    client: &'a Client,
    store: &'a Store,
    cdn: &'a Cdn,
    options: &'a FileOptions,
    dir: &'a Path,
    tmp: &'a Path,
    /// Links renewed after the CDN refused them.
    renewed: AtomicU64,
}

impl Fetch<'_> {
    /// Downloads, checks, writes and records one file.
    async fn one(&self, f: &WantedFile) -> Result<Fetched, LoadError> {
        let cap = self.options.max_file_bytes;
        let mut url = f.url.clone();
        let mut renewed = false;
        let bytes = loop {
            match self.cdn.download(&url, cap).await {
                Ok(bytes) => break bytes,
                // The link may have expired since it was read: renew it once.
                Err(CdnError::NotFound(_)) if !renewed => {
                    renewed = true;
                    match self.client.refresh_urls(std::slice::from_ref(&url)).await?.pop() {
                        Some((_, fresh)) if fresh != url => {
                            let (store, id, u) = (self.store.clone(), f.id, fresh.clone());
                            store.call(move |s| s.set_attachment_url(id, &u)).await?;
                            self.renewed.fetch_add(1, Ordering::Relaxed);
                            url = fresh;
                        }
                        _ => return self.problem(f, FetchState::Gone, "the CDN no longer has it".into(), 0).await,
                    }
                }
                Err(CdnError::NotFound(status)) => {
                    let detail = format!("the CDN answered {status}, also to a renewed link");
                    return self.problem(f, FetchState::Gone, detail, 0).await;
                }
                Err(e @ CdnError::TooLarge { .. }) => {
                    return self.problem(f, FetchState::TooLarge, e.to_string(), 0).await
                }
                Err(e @ CdnError::Refused(_)) => return self.problem(f, FetchState::Refused, e.to_string(), 0).await,
                Err(CdnError::Failed(why)) => {
                    // Not recorded as a verdict: the next load tries again.
                    return self.problem(f, FetchState::Failed, why, 0).await;
                }
            }
        };
        let size = bytes.len() as u64;
        let file_type = match check(&bytes, self.options.mode) {
            Ok(t) => t,
            Err((state, detail)) => return self.problem(f, state, detail, size).await,
        };
        let (dir, tmp, id) = (self.dir.to_owned(), self.tmp.to_owned(), f.id);
        let (sha256, duplicate) =
            crate::blocking::run(move || write_file(&dir, &tmp, id, &bytes)).await.map_err(|e| {
                LoadError::Files(format!("cannot write attachment files under {}: {e}", self.dir.display()))
            })?;
        crate::failpoint::hit("file-before-record");
        let stored = StoredFile { sha256, file_type: file_type.to_owned(), size };
        self.store.call(move |s| s.record_file(id, &stored)).await?;
        Ok(Fetched::Stored { bytes: size, duplicate })
    }

    async fn problem(
        &self,
        f: &WantedFile,
        state: FetchState,
        detail: String,
        bytes: u64,
    ) -> Result<Fetched, LoadError> {
        let (id, d) = (f.id, detail.clone());
        self.store.call(move |s| s.record_file_problem(id, state, &d)).await?;
        Ok(Fetched::Problem(state, detail, bytes))
    }
}

async fn record_problem(
    store: &Store,
    summary: &mut FileSummary,
    f: &WantedFile,
    state: FetchState,
    detail: String,
) -> Result<(), LoadError> {
    let (id, d) = (f.id, detail.clone());
    store.call(move |s| s.record_file_problem(id, state, &d)).await?;
    summary.count(state);
    list_problem(summary, f, state, detail);
    Ok(())
}

fn list_problem(summary: &mut FileSummary, f: &WantedFile, state: FetchState, detail: String) {
    if summary.problems.len() < LISTED_PROBLEMS {
        summary.problems.push(FileProblem {
            attachment_id: f.id,
            message_id: f.message_id,
            filename: f.filename.clone(),
            state,
            detail,
        });
    }
}

/// Renews the links of `wanted[i]` for `i` in `batch`; returns how many.
async fn refresh(client: &Client, store: &Store, wanted: &mut [WantedFile], batch: &[usize]) -> Result<u64, LoadError> {
    let urls: Vec<String> = batch.iter().map(|&i| wanted[i].url.clone()).collect();
    let fresh: HashMap<String, String> = client.refresh_urls(&urls).await?.into_iter().collect();
    let mut changed = Vec::new();
    for &i in batch {
        if let Some(new) = fresh.get(&wanted[i].url).filter(|new| **new != wanted[i].url) {
            wanted[i].url = new.clone();
            changed.push((wanted[i].id, new.clone()));
        }
    }
    let n = changed.len() as u64;
    store
        .call(move |s| {
            for (id, url) in &changed {
                s.set_attachment_url(*id, url)?;
            }
            Ok(())
        })
        .await?;
    Ok(n)
}

/// A file that came with an export rather than from the CDN: DCE's
/// `--media` copies of attachments, in a folder beside the export.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub attachment: u64,
    pub message: u64,
    pub filename: String,
    /// Already resolved inside the export's folder (see `crate::import`).
    pub path: PathBuf,
}

/// A file stored (`Ok`), or the state recorded for it and why.
pub type Stored = Result<(), (FetchState, String)>;

/// Stores a [`LocalFile`] with exactly a download's checks (size cap, type
/// from the bytes, the pixel caps of every frame, the end marker) and records
/// it like a download: `Ok(())`, or the state recorded and why. `None`:
/// nothing to do (the mode does not take it, the attachment is not that
/// message's, or its file is stored already).
pub fn store_local_file(store: &Store, f: &LocalFile, options: &FileOptions) -> Result<Option<Stored>, LoadError> {
    let wanted = match options.mode {
        AttachmentMode::None => false,
        AttachmentMode::Images => claims_image(None, &f.filename),
        AttachmentMode::All => true,
    };
    if !wanted || !store.wants_file(f.attachment, f.message)? {
        return Ok(None);
    }
    let checked = read_local(&f.path, options.max_file_bytes)
        .and_then(|bytes| check(&bytes, options.mode).map(|file_type| (bytes, file_type)));
    let (bytes, file_type) = match checked {
        Ok(ok) => ok,
        Err((state, detail)) => {
            store.record_file_problem(f.attachment, state, &detail)?;
            return Ok(Some(Err((state, detail))));
        }
    };
    let dir = store.files_dir();
    let (sha256, _) = write_file(&dir, &dir.join("tmp"), f.attachment, &bytes)
        .map_err(|e| LoadError::Files(format!("cannot write attachment files under {}: {e}", dir.display())))?;
    let stored = StoredFile { sha256, file_type: file_type.to_owned(), size: bytes.len() as u64 };
    store.record_file(f.attachment, &stored)?;
    Ok(Some(Ok(())))
}

/// A local file's bytes, at most `cap` of them; a file that is gone or not a
/// regular file counts as gone, a larger one as too large.
fn read_local(path: &Path, cap: u64) -> Result<Vec<u8>, (FetchState, String)> {
    use std::io::Read as _;
    let gone = |e: std::io::Error| (FetchState::Gone, format!("the export's copy cannot be read: {e}"));
    let file = std::fs::File::open(path).map_err(gone)?;
    let meta = file.metadata().map_err(gone)?;
    if !meta.is_file() {
        return Err((FetchState::Gone, "the export's copy is not a regular file".into()));
    }
    if meta.len() > cap {
        return Err((FetchState::TooLarge, format!("{} bytes, over the {cap}-byte cap", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(gone)?;
    if bytes.len() as u64 > cap {
        return Err((FetchState::TooLarge, format!("over the {cap}-byte cap")));
    }
    Ok(bytes)
}

/// The type a file's bytes say it is, if the mode keeps it: images must be
/// readable images (known format, within the pixel cap, not cut short).
fn check(bytes: &[u8], mode: AttachmentMode) -> Result<&'static str, (FetchState, String)> {
    let Some(image) = crate::ocr::sniff(bytes) else {
        return match mode {
            AttachmentMode::All => Ok("application/octet-stream"),
            _ => Err((FetchState::NotImage, "its bytes are not an image of a known format".into())),
        };
    };
    // The header's size and every frame's: what OCR would refuse as a
    // bomb is not stored. Sizes that merely contradict each other are OCR's
    // to refuse; the file is kept as it was posted.
    if let Err(e @ (Refused::TooLarge { .. } | Refused::TooManyFrames { .. })) = crate::ocr::check_sizes(&image, bytes)
    {
        return Err((FetchState::TooLarge, e.to_string()));
    }
    // Its end marker reached; bytes after it (a motion photo's video) are fine.
    if !crate::ocr::complete(image.format, bytes) {
        return Err((FetchState::Broken, format!("the {} file is cut short", image.mime)));
    }
    Ok(image.mime)
}

/// Writes a file to its content address (temporary name, sync, rename):
/// returns its SHA-256 and whether those bytes were already stored.
fn write_file(dir: &Path, tmp: &Path, attachment: u64, bytes: &[u8]) -> std::io::Result<(String, bool)> {
    let sha256 = hex(&Sha256::digest(bytes));
    let target = dir.join(&sha256[..2]).join(&sha256);
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok((sha256, true));
    }
    std::fs::create_dir_all(tmp)?;
    std::fs::create_dir_all(target.parent().expect("has a parent"))?;
    // A name of its own: another process may be fetching the same file.
    let prefix = format!("{attachment}.{}.", std::process::id());
    let mut part = tempfile::Builder::new().prefix(&prefix).suffix(".part").tempfile_in(tmp)?;
    part.write_all(bytes)?;
    part.as_file().sync_all()?;
    part.persist(&target).map_err(|e| e.error)?;
    Ok((sha256, false))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes what a killed run left half-written: temporary files
/// (`<attachment>.<pid>.<random>.part`) of processes that no longer run, or
/// older than [`STALE_PARTIAL`] (a file is written in one go once
/// downloaded). Another process fetching at the same time keeps its own.
fn clean_partial_files(tmp: &PathBuf) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let writer = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
        let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if writer.is_none_or(|pid| !process_runs(pid)) || age.is_some_and(|a| a > STALE_PARTIAL) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether a process with this id runs (on this machine).
#[cfg(unix)]
fn process_runs(pid: u32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_runs(_: u32) -> bool {
    true
}

/// Age after which a temporary file is a killed run's.
const STALE_PARTIAL: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_to_their_end() {
        let png = fixture("error.png");
        assert_eq!(check(&png, AttachmentMode::Images), Ok("image/png"));
        let (state, detail) = check(&png[..png.len() - 12], AttachmentMode::Images).unwrap_err();
        assert_eq!((state, detail.as_str()), (FetchState::Broken, "the image/png file is cut short"));
        let jpeg = fixture("two_lines.jpg");
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0, 0]);
        assert_eq!(check(&padded, AttachmentMode::Images), Ok("image/jpeg"));
        let (state, _) = check(&jpeg[..jpeg.len() - 1], AttachmentMode::Images).unwrap_err();
        assert_eq!(state, FetchState::Broken);
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/images/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn complete_images_with_bytes_after_their_end_are_stored() {
        // A PNG with bytes after IEND.
        let mut png = fixture("error.png");
        png.extend_from_slice(b"appended by some uploader");
        assert_eq!(check(&png, AttachmentMode::Images), Ok("image/png"));
        // A motion photo: a JPEG, then the video, far longer than the picture.
        let mut motion = fixture("two_lines.jpg");
        let mut mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec();
        mp4.extend_from_slice(&((8 + 200_000u32).to_be_bytes()));
        mp4.extend_from_slice(b"mdat");
        mp4.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        motion.extend_from_slice(&mp4);
        assert_eq!(check(&motion, AttachmentMode::Images), Ok("image/jpeg"));
        // A GIF with bytes after its trailer.
        let mut gif = crate::ocr::tests::gif((20, 20), &[(0, 0, 20, 20)]);
        gif.extend_from_slice(b"\0\0junk");
        assert_eq!(check(&gif, AttachmentMode::Images), Ok("image/gif"));

        // What is cut short stays broken: before the end marker, and a JPEG
        // cut after an EXIF thumbnail whose own end marker is complete.
        let jpeg = fixture("two_lines.jpg");
        let mut exif = jpeg[..2].to_vec();
        let thumbnail = [b"Exif\0\0".as_slice(), &[0xFF, 0xD8, 0xFF, 0xDB, 0, 2, 0xFF, 0xD9]].concat();
        exif.extend_from_slice(&[0xFF, 0xE1]);
        exif.extend_from_slice(&((thumbnail.len() + 2) as u16).to_be_bytes());
        exif.extend_from_slice(&thumbnail);
        exif.extend_from_slice(&jpeg[2..]);
        assert_eq!(check(&exif, AttachmentMode::Images), Ok("image/jpeg"));
        for cut in [&png[..png.len() / 2], &motion[..jpeg.len() - 2], &exif[..exif.len() / 2], &gif[..gif.len() - 7]] {
            let (state, _) = check(cut, AttachmentMode::Images).unwrap_err();
            assert_eq!(state, FetchState::Broken);
        }
    }

    #[test]
    fn frames_over_the_pixel_cap_are_refused_as_too_large() {
        let bomb = crate::ocr::tests::gif((200, 60), &[(0, 0, 40_000, 40_000)]);
        let (state, detail) = check(&bomb, AttachmentMode::Images).unwrap_err();
        assert_eq!(state, FetchState::TooLarge);
        assert_eq!(detail, crate::ocr::Refused::TooLarge { width: 40_000, height: 40_000 }.to_string());
        let mut entries = crate::ocr::tests::tiff_entries(200, 60);
        entries.push((256, 4, 40_000));
        let (state, _) = check(&crate::ocr::tests::tiff(&entries, 1), AttachmentMode::All).unwrap_err();
        assert_eq!(state, FetchState::TooLarge);
        // Within the caps, the same files are stored.
        let fine = crate::ocr::tests::gif((200, 60), &[(0, 0, 200, 60)]);
        assert_eq!(check(&fine, AttachmentMode::Images), Ok("image/gif"));
        let tiff = crate::ocr::tests::tiff(&crate::ocr::tests::tiff_entries(200, 60), 2);
        assert_eq!(check(&tiff, AttachmentMode::Images), Ok("image/tiff"));
    }

    #[test]
    fn a_file_is_written_once_under_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (files, tmp) = (dir.path().join("attachments"), dir.path().join("attachments/tmp"));
        let (a, dup_a) = write_file(&files, &tmp, 1, b"same bytes").unwrap();
        let (b, dup_b) = write_file(&files, &tmp, 2, b"same bytes").unwrap();
        assert_eq!(a, b);
        assert!(!dup_a && dup_b);
        assert!(a.len() == 64 && a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_eq!(std::fs::read(files.join(&a[..2]).join(&a)).unwrap(), b"same bytes");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "no temporary file stays");
    }

    #[test]
    fn only_dead_processes_partial_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().to_path_buf();
        let mine = tmp.join(format!("1.{}.abc.part", std::process::id()));
        let dead = tmp.join("2.4000000.abc.part"); // above any pid_max
        let odd = tmp.join("odd");
        for f in [&mine, &dead, &odd] {
            std::fs::write(f, b"half").unwrap();
        }
        clean_partial_files(&tmp);
        assert!(mine.exists() && !dead.exists() && !odd.exists());
    }

    #[test]
    fn modes_parse() {
        assert_eq!("images".parse::<AttachmentMode>().unwrap(), AttachmentMode::Images);
        assert!("pictures".parse::<AttachmentMode>().is_err());
    }
}
