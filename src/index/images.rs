//! Stage two's first step: read the text in a guild's stored image files
//! (OCR), before its messages are chunked.
//!
//! Each file is read once per reader and engine: the result (also "nothing
//! readable", also "not decodable") is kept in the archive per file hash
//! (`image_texts`), so re-indexing, another model or a rerun never reads a
//! file again; `reread` reads again what an older engine read. A new text
//! moves the archive version of the messages that show the file, so the
//! run that follows re-embeds their chunks, and only theirs. Then the
//! keyword index's attachment rows are brought up to date.
//!
//! Files are read on as many threads as the machine has cores, each with its
//! own Tesseract engine. Without Tesseract the step reports OCR unavailable
//! and stage two goes on with text alone; a later run with it installed
//! reads the files then.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::IndexError;
use crate::ocr::{Engine, Tesseract, Unavailable};
use crate::store::{ImageText, Store, UnreadImage};

/// The `image_texts.source` of OCR.
pub const OCR: &str = "ocr";

/// What the step did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImageSummary {
    /// Image files read in this run.
    pub read: u64,
    /// Of those, files with text that passed the confidence rule.
    pub with_text: u64,
    /// Of those, files the engine could not decode (kept, not retried).
    pub undecodable: u64,
    /// Image files left unread (OCR unavailable, or the run stopped).
    pub unread: u64,
    /// Messages whose text changed with it (their chunks are re-embedded).
    pub messages: u64,
    /// Seconds reading, in all (wall time of the step).
    pub seconds: f64,
    /// The engine that read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Why no file could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// How the step runs.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Read again what an older engine read.
    pub reread: bool,
    /// Reading threads (None: one per core).
    pub threads: Option<usize>,
}

/// Reads the guild's unread image files, then syncs the keyword index.
pub async fn read_images(
    store: &Store,
    guild: u64,
    options: &ImageOptions,
    shutdown: &CancellationToken,
) -> Result<ImageSummary, IndexError> {
    let started = Instant::now();
    let mut summary = ImageSummary::default();
    let unread = store.call(move |s| s.unread_images(guild, OCR, None)).await?;
    let engines = if unread.is_empty() && !options.reread { None } else { Some(engines()) };
    let mut todo = unread;
    if let Some(Ok(first)) = &engines {
        summary.engine = Some(first.version().to_owned());
        if options.reread {
            let engine = first.version().to_owned();
            todo = store.call(move |s| s.unread_images(guild, OCR, Some(&engine))).await?;
        }
    }
    match engines {
        None => {}
        Some(Err(e)) if !todo.is_empty() => {
            tracing::warn!("{} image files not read: {e}", todo.len());
            summary.unread = todo.len() as u64;
            summary.unavailable = Some(e.to_string());
        }
        Some(Err(_)) => {}
        Some(Ok(first)) if !todo.is_empty() => {
            let threads = options.threads.unwrap_or_else(num_cpus).clamp(1, todo.len());
            let shared = Shared { todo: Mutex::new(todo), store: store.clone(), stop: shutdown.clone() };
            let shared = Arc::new(shared);
            let mut engines = vec![first];
            for _ in 1..threads {
                match engines[0].another() {
                    Ok(e) => engines.push(e),
                    Err(e) => {
                        tracing::warn!("one OCR engine fewer: {e}");
                        break;
                    }
                }
            }
            let jobs: Vec<_> = engines
                .into_iter()
                .map(|engine| {
                    let shared = shared.clone();
                    tokio::task::spawn_blocking(move || shared.work(engine))
                })
                .collect();
            for job in jobs {
                let counts = job.await.map_err(|e| IndexError::Ocr(format!("an OCR thread failed: {e}")))??;
                summary.read += counts.read;
                summary.with_text += counts.with_text;
                summary.undecodable += counts.undecodable;
                summary.messages += counts.messages;
            }
            summary.unread = shared.todo.lock().unwrap().len() as u64;
        }
        Some(Ok(_)) => {}
    }
    store.call(move |s| s.sync_attachment_keywords(guild)).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The first engine, loading the libraries once per process.
fn engines() -> Result<Engine, Unavailable> {
    static LIBRARY: std::sync::OnceLock<Result<Tesseract, Unavailable>> = std::sync::OnceLock::new();
    LIBRARY.get_or_init(Tesseract::load).clone()?.engine()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Shared {
    todo: Mutex<Vec<UnreadImage>>,
    store: Store,
    stop: CancellationToken,
}

#[derive(Default)]
struct Counts {
    read: u64,
    with_text: u64,
    undecodable: u64,
    messages: u64,
}

impl Shared {
    /// One thread's loop: take a file, read it, store the result.
    fn work(&self, mut engine: Engine) -> Result<Counts, IndexError> {
        let mut counts = Counts::default();
        loop {
            if self.stop.is_cancelled() {
                return Ok(counts);
            }
            let Some(file) = self.todo.lock().unwrap().pop() else { return Ok(counts) };
            let started = Instant::now();
            let path = self.store.file_path(&file.sha256);
            let (text, confidence, error) = match std::fs::read(&path) {
                Ok(bytes) => match engine.recognize(&bytes) {
                    Ok(r) => (r.text, Some(r.confidence), None),
                    Err(refused) => (String::new(), None, Some(refused.to_string())),
                },
                // The file went missing: not a verdict on the image; the
                // next load fetches it again only if told to, so say it.
                Err(e) => {
                    tracing::warn!("attachment file {} cannot be read: {e}", path.display());
                    continue;
                }
            };
            counts.read += 1;
            counts.with_text += u64::from(!text.is_empty());
            counts.undecodable += u64::from(error.is_some());
            let result = ImageText {
                sha256: file.sha256,
                source: OCR,
                engine: engine.version().to_owned(),
                text,
                confidence,
                error,
                seconds: started.elapsed().as_secs_f64(),
            };
            counts.messages += self.store.save_image_text(&result)? as u64;
        }
    }
}
