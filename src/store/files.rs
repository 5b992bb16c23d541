//! Attachment files in the archive: which files stage one still has to
//! fetch, what became of each, and the text stage two read from images
//! (migration 009). The files themselves live beside the archive, under
//! `attachments/`, named by their SHA-256 (see [`Store::files_dir`]).

use std::path::PathBuf;

use rusqlite::{params, OptionalExtension};

use super::{id, now, Store, StoreError};
use crate::chunk::ImageNote;

/// An attachment whose file is not stored yet.
#[derive(Debug, Clone)]
pub struct WantedFile {
    pub id: u64,
    pub message_id: u64,
    pub filename: String,
    /// What Discord (or the export) said the type is: a hint for choosing
    /// what to fetch, never trusted for what the file is.
    pub content_type: Option<String>,
    /// The size Discord announced (0: unknown).
    pub size: u64,
    pub url: String,
}

/// What became of fetching a file (`attachments.fetch_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchState {
    Stored,
    /// Over the size cap, or an image over the pixel cap.
    TooLarge,
    /// Its bytes are no image this program reads (when only images are fetched).
    NotImage,
    /// Cut short: the file ends before its format says it does.
    Broken,
    /// The CDN no longer has it, even through a fresh link.
    Gone,
    /// Its link is not a Discord CDN link: never requested.
    Refused,
    /// A transient failure: the next load tries again.
    Failed,
}

impl FetchState {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchState::Stored => "stored",
            FetchState::TooLarge => "too_large",
            FetchState::NotImage => "not_image",
            FetchState::Broken => "broken",
            FetchState::Gone => "gone",
            FetchState::Refused => "refused",
            FetchState::Failed => "failed",
        }
    }
}

/// A file completely written to its content address.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub sha256: String,
    /// MIME type read from the bytes.
    pub file_type: String,
    pub size: u64,
}

/// An image file of a guild waiting for a reader (source) to read it.
#[derive(Debug, Clone)]
pub struct UnreadImage {
    pub sha256: String,
    pub file_type: String,
}

/// What a reader made of an image file.
#[derive(Debug, Clone)]
pub struct ImageText {
    pub sha256: String,
    pub source: &'static str,
    pub engine: String,
    pub text: String,
    pub confidence: Option<f32>,
    pub error: Option<String>,
    pub seconds: f64,
}

impl Store {
    /// Where attachment files are kept: `attachments/` beside the archive.
    pub fn files_dir(&self) -> PathBuf {
        self.path().parent().map_or_else(|| PathBuf::from("attachments"), |d| d.join("attachments"))
    }

    /// The path of a stored file.
    pub fn file_path(&self, sha256: &str) -> PathBuf {
        self.files_dir().join(&sha256[..2]).join(sha256)
    }

    /// Attachments of these guilds' messages not fetched yet (or whose last
    /// try failed), oldest message first.
    pub fn wanted_files(&self, guilds: &[u64]) -> Result<Vec<WantedFile>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.id, a.message_id, a.filename, a.content_type, a.size, a.url
             FROM attachments a JOIN messages m ON m.id = a.message_id
             WHERE m.guild_id IN (SELECT value FROM json_each(?1))
               AND (a.fetch_state IS NULL OR a.fetch_state = 'failed')
             ORDER BY a.message_id, a.id",
        )?;
        let guilds = serde_json::to_string(guilds).expect("ids serialize");
        let rows = stmt.query_map([guilds], |r| {
            Ok(WantedFile {
                id: r.get::<_, i64>(0)? as u64,
                message_id: r.get::<_, i64>(1)? as u64,
                filename: r.get(2)?,
                content_type: r.get(3)?,
                size: r.get::<_, i64>(4)?.max(0) as u64,
                url: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a fresh link for an attachment.
    /// Whether attachment `attachment` of message `message` still needs its
    /// file: it is stored under that message (an id never moves, so an
    /// export cannot give another message's attachment a file) and has none.
    pub fn wants_file(&self, attachment: u64, message: u64) -> Result<bool, StoreError> {
        Ok(self.conn()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM attachments WHERE id = ?1 AND message_id = ?2
                AND fetch_state IS NOT 'stored')",
            params![id(attachment), id(message)],
            |r| r.get(0),
        )?)
    }

    pub fn set_attachment_url(&self, attachment: u64, url: &str) -> Result<(), StoreError> {
        self.conn()?.execute("UPDATE attachments SET url = ?2 WHERE id = ?1", params![id(attachment), url])?;
        Ok(())
    }

    /// Records a file as stored: only once it is completely written to its
    /// content address, so an interrupted fetch records nothing.
    pub fn record_file(&self, attachment: u64, file: &StoredFile) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE attachments SET sha256 = ?2, file_type = ?3, file_size = ?4, fetch_state = 'stored',
                fetch_detail = NULL, fetched_at = ?5, fts_source = NULL
             WHERE id = ?1",
            params![id(attachment), file.sha256, file.file_type, file.size as i64, now()],
        )?;
        Ok(())
    }

    /// Records why a file was not stored.
    pub fn record_file_problem(&self, attachment: u64, state: FetchState, detail: &str) -> Result<(), StoreError> {
        debug_assert!(state != FetchState::Stored);
        self.conn()?.execute(
            "UPDATE attachments SET fetch_state = ?2, fetch_detail = ?3, fetched_at = ?4 WHERE id = ?1",
            params![id(attachment), state.as_str(), detail, now()],
        )?;
        Ok(())
    }

    /// Stored image files of a guild's messages that `source` has not read
    /// (or, with `engine`, read with another engine than this one).
    pub fn unread_images(
        &self,
        guild: u64,
        source: &str,
        engine: Option<&str>,
    ) -> Result<Vec<UnreadImage>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.sha256, min(a.file_type)
             FROM attachments a JOIN messages m ON m.id = a.message_id
             WHERE m.guild_id = ?1 AND a.sha256 IS NOT NULL AND a.file_type LIKE 'image/%'
               AND NOT EXISTS (SELECT 1 FROM image_texts t WHERE t.sha256 = a.sha256 AND t.source = ?2
                               AND (?3 IS NULL OR t.engine = ?3))
             GROUP BY a.sha256 ORDER BY min(a.message_id)",
        )?;
        let rows = stmt.query_map(params![id(guild), source, engine], |r| {
            Ok(UnreadImage { sha256: r.get(0)?, file_type: r.get(1)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores what a reader made of a file, replacing an earlier reading by
    /// the same source, and marks the messages that show the file as changed
    /// (a new archive version), so that stage two re-embeds their chunks,
    /// and only theirs. Returns how many messages that touched.
    pub fn save_image_text(&self, t: &ImageText) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let before: Option<String> = tx
            .query_row(
                "SELECT text FROM image_texts WHERE sha256 = ?1 AND source = ?2",
                params![t.sha256, t.source],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO image_texts (sha256, source, engine, text, confidence, error, seconds, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(sha256, source) DO UPDATE SET engine = excluded.engine, text = excluded.text,
                confidence = excluded.confidence, error = excluded.error, seconds = excluded.seconds,
                created_at = excluded.created_at",
            params![t.sha256, t.source, t.engine, t.text, t.confidence, t.error, t.seconds, now()],
        )?;
        // Only a text that changes what a message shows moves its version.
        let mut touched = 0;
        if before.as_deref().unwrap_or("") != t.text {
            let version = super::next_version(&tx)?;
            touched = tx.execute(
                "UPDATE messages SET version = ?2 WHERE id IN (SELECT message_id FROM attachments WHERE sha256 = ?1)",
                params![t.sha256, version],
            )?;
        }
        tx.commit()?;
        Ok(touched)
    }

    /// How many image files `source` has read, in all.
    pub fn image_text_count(&self, source: &str) -> Result<u64, StoreError> {
        Ok(self
            .conn()?
            .query_row("SELECT count(*) FROM image_texts WHERE source = ?1", [source], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Brings a guild's attachment rows of the keyword index up to date: an
    /// attachment's row holds its file name, alt text and image text. Rows
    /// are rewritten only when that text changed. Returns how many were.
    pub fn sync_attachment_keywords(&self, guild: u64) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // (attachment, file name, alt text, image text, image text's id)
        type Stale = (i64, String, Option<String>, Option<String>, i64);
        let stale: Vec<Stale> = {
            let mut stmt = tx.prepare_cached(
                "SELECT a.id, a.filename, a.description, t.text, coalesce(t.id, 0)
                 FROM attachments a JOIN messages m ON m.id = a.message_id
                 LEFT JOIN image_texts t ON t.sha256 = a.sha256 AND t.source = 'ocr'
                 WHERE m.guild_id = ?1 AND (a.fts_source IS NULL OR a.fts_source != coalesce(t.id, 0))",
            )?;
            let rows = stmt.query_map([id(guild)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (attachment, filename, description, text, source) in &stale {
            tx.prepare_cached("DELETE FROM attachments_fts WHERE rowid = ?1")?.execute([attachment])?;
            let words = keyword_text(filename, description.as_deref(), text.as_deref().unwrap_or(""));
            tx.prepare_cached("INSERT INTO attachments_fts (rowid, text) VALUES (?1, ?2)")?
                .execute(params![attachment, words])?;
            tx.prepare_cached("UPDATE attachments SET fts_source = ?2 WHERE id = ?1")?
                .execute(params![attachment, source])?;
        }
        tx.commit()?;
        Ok(stale.len())
    }

    /// The image notes of these messages (file name, alt text, text read
    /// by OCR), per message, in attachment order. Only image attachments
    /// (by the bytes' type once stored, else by the announced type).
    pub fn image_notes(&self, messages: &[u64]) -> Result<Vec<(u64, ImageNote)>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.message_id, a.filename, a.description, coalesce(t.text, ''), a.file_type, a.content_type,
                    a.fetch_state
             FROM attachments a LEFT JOIN image_texts t ON t.sha256 = a.sha256 AND t.source = 'ocr'
             WHERE a.message_id IN (SELECT value FROM json_each(?1))
             ORDER BY a.message_id, a.id",
        )?;
        let json = serde_json::to_string(messages).expect("ids serialize");
        let mut notes = Vec::new();
        let mut rows = stmt.query([json])?;
        while let Some(r) = rows.next()? {
            let (file_type, claimed, state): (Option<String>, Option<String>, Option<String>) =
                (r.get(4)?, r.get(5)?, r.get(6)?);
            let image = match file_type {
                Some(t) => t.starts_with("image/"),
                None => {
                    state.as_deref() != Some("not_image") && claims_image(claimed.as_deref(), &r.get::<_, String>(1)?)
                }
            };
            if image {
                let note = ImageNote { filename: r.get(1)?, description: r.get(2)?, text: r.get(3)? };
                notes.push((r.get::<_, i64>(0)? as u64, note));
            }
        }
        Ok(notes)
    }
}

/// Whether an attachment says it is an image (by its announced type, else
/// its name): what is fetched when only images are, and shown as an image
/// until its bytes say otherwise.
pub fn claims_image(content_type: Option<&str>, filename: &str) -> bool {
    match content_type {
        Some(t) => t.starts_with("image/"),
        None => {
            let ext = filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
            matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp" | "tif" | "tiff")
        }
    }
}

/// The words the keyword index holds for an attachment.
fn keyword_text(filename: &str, description: Option<&str>, text: &str) -> String {
    let mut out = filename.to_owned();
    for part in [description.unwrap_or(""), text] {
        if !part.is_empty() {
            out.push('\n');
            out.push_str(part);
        }
    }
    out
}
