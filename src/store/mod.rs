//! The SQLite archive (`<data-dir>/archive.db`): schema, migrations and every
//! read and write of stage one's data.
//!
//! The file is in WAL mode and migrated on open (`PRAGMA user_version` holds the
//! schema version; migrations are the numbered files in `migrations/`). Writes
//! that belong together happen in one transaction: a page of messages and the
//! checkpoint that covers it land together or not at all, which is what makes
//! a killed load resumable. See docs/how-it-works.md for the contract other tools rely on.

mod access;
mod adapt;
mod files;
mod import;
mod index;
mod keyword;
mod status;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::discord::model::{Message, Raw, User};
use crate::snowflake;
pub use access::{ChannelAccess, GuildAccess, GuildFacts, StoredMember};
pub use adapt::ConversationRow;
pub use files::{claims_image, FetchState, ImageText, StoredFile, UnreadImage, WantedFile};
pub use import::ImportedChannel;
pub use index::{ActiveIndex, ChannelInfo, ChunkRecord, IndexRecord, IndexState, NewIndex};
pub use keyword::{KeywordHit, KeywordOrder};
pub use status::{ChannelStatus, GuildStatus, LoadState};

/// Numbered migrations; `user_version` is the count applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_archive.sql"),
    include_str!("migrations/002_index.sql"),
    include_str!("migrations/003_search.sql"),
    include_str!("migrations/004_import.sql"),
    include_str!("migrations/005_keyword_batches.sql"),
    include_str!("migrations/006_chunk_parts.sql"),
    include_str!("migrations/007_thread_titles.sql"),
    include_str!("migrations/008_collection_key.sql"),
    include_str!("migrations/009_attachment_files.sql"),
];

/// The file name of the archive inside the data directory.
pub const ARCHIVE_FILE: &str = "archive.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no archive at {0}: run `discord-indexer load` (or `discord-indexer import`) first, or give the --data-dir that holds it")]
    Missing(PathBuf),
    #[error(
        "{0} is not an archive file (it is a directory or other non-file): move it aside, or give another --data-dir"
    )]
    NotAFile(PathBuf),
    #[error("cannot open the archive {path}: {source}")]
    Open { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("{path} is not a readable SQLite archive ({detail}); nothing was changed")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path} has schema version {found}, newer than this program understands ({supported}); upgrade discord-indexer"
    )]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error(
        "{path} is read-only and was written by an older discord-indexer: open it once where it can be written, to upgrade it"
    )]
    ReadOnlyUpgrade { path: PathBuf },
    #[error(
        "the archive has channel {channel} in guild {stored}, and an export places it in guild {claimed}: \
         a channel's guild never changes, so this export was not imported"
    )]
    OtherGuild { channel: u64, stored: u64, claimed: u64 },
    #[error("archive error: {}", sqlite_text(.0))]
    Sqlite(#[from] rusqlite::Error),
    #[error("archive connection pool: {0}")]
    Pool(#[from] r2d2::Error),
}

/// SQLite's message, or for a write refused by a read-only archive, what to do.
fn sqlite_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly => {
            "the archive is read-only (a read-only data directory?) and this command writes to it; \
             `status` and `ask` work on a read-only archive"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// Where a channel stands with the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelState {
    /// Some history is stored; a later run continues after the checkpoint.
    Partial,
    /// All history up to the checkpoint is stored and nothing newer was seen.
    Complete,
    /// The bot may not read it.
    Forbidden,
    /// Discord no longer knows it.
    Gone,
    /// The last attempt failed (see detail); a rerun tries again.
    Failed,
    /// History up to the checkpoint came from an export file; a load
    /// continues after it (see `discord-indexer import`).
    Imported,
}

impl ChannelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Partial => "partial",
            ChannelState::Complete => "complete",
            ChannelState::Forbidden => "forbidden",
            ChannelState::Gone => "gone",
            ChannelState::Failed => "failed",
            ChannelState::Imported => "imported",
        }
    }

    /// Loaded channels whose messages are (at least partly) stored.
    pub fn is_loaded(self) -> bool {
        matches!(self, ChannelState::Partial | ChannelState::Complete)
    }

    /// Channels the bot may not read or that no longer exist.
    pub fn is_unreadable(self) -> bool {
        matches!(self, ChannelState::Forbidden | ChannelState::Gone)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "partial" => ChannelState::Partial,
            "complete" => ChannelState::Complete,
            "forbidden" => ChannelState::Forbidden,
            "gone" => ChannelState::Gone,
            "failed" => ChannelState::Failed,
            "imported" => ChannelState::Imported,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub last_message_id: u64,
    pub state: ChannelState,
}

/// What writing one page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageCounts {
    /// Messages that were not stored before.
    pub new: u64,
    /// Stored messages replaced because Discord's copy was edited later.
    pub updated: u64,
    /// Stored messages that came back unchanged.
    pub unchanged: u64,
    /// Messages whose id the archive already holds in another channel or
    /// guild, or that carry an attachment id of another message. An id never
    /// moves: an export's copy is rejected (never merged); Discord's copy
    /// replaces the stored one, which only an import can have put there.
    pub conflicts: u64,
}

impl std::ops::AddAssign for PageCounts {
    fn add_assign(&mut self, o: Self) {
        self.new += o.new;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.conflicts += o.conflicts;
    }
}

/// The archive. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: r2d2::Pool<SqliteConnectionManager>,
    path: PathBuf,
}

fn now() -> String {
    snowflake::format_time(chrono::Utc::now())
}

fn id(v: u64) -> i64 {
    v as i64
}

impl Store {
    /// Opens (creating it if needed) the archive in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open { path: data_dir.into(), source: e.into() })?;
        let path = data_dir.join(ARCHIVE_FILE);
        if path.exists() && !path.is_file() {
            return Err(StoreError::NotAFile(path));
        }
        Self::open_file(&path)
    }

    /// Opens an archive that must already exist (for read-only commands).
    pub fn open_existing(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(ARCHIVE_FILE);
        if !path.exists() {
            return Err(StoreError::Missing(path));
        }
        if !path.is_file() {
            return Err(StoreError::NotAFile(path));
        }
        // A read-only data directory (a mounted snapshot, a backup): SQLite
        // cannot make the WAL index beside the file, so read it as immutable.
        if !crate::disk::writable(&path) || !crate::disk::writable(data_dir) {
            return Self::open_read_only(&path);
        }
        Self::open_file(&path)
    }

    /// Opens an archive that cannot be written, for reading only. Commands
    /// that write then fail with [`StoreError`]'s read-only message.
    fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        use rusqlite::OpenFlags;
        let open_err = |e: rusqlite::Error| StoreError::Open { path: path.into(), source: e.into() };
        // A URI, so that `immutable=1` can say no one writes it meanwhile.
        let escaped: String = path
            .to_string_lossy()
            .chars()
            .map(|c| match c {
                '%' | '?' | '#' => format!("%{:02X}", c as u32),
                c => c.to_string(),
            })
            .collect();
        let uri = format!("file:{escaped}?immutable=1");
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&uri, flags).map_err(open_err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                StoreError::Corrupt { path: path.into(), detail: f.to_string() }
            }
            other => open_err(other),
        })?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew { path: path.into(), found: version, supported });
        }
        if version < supported {
            return Err(StoreError::ReadOnlyUpgrade { path: path.into() });
        }
        drop(conn);
        let manager =
            SqliteConnectionManager::file(uri).with_flags(flags).with_init(|c| c.busy_timeout(Duration::from_secs(30)));
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        tracing::info!("{} is read-only: opened for reading", path.display());
        Ok(Store { pool, path: path.into() })
    }

    fn open_file(path: &Path) -> Result<Store, StoreError> {
        let corrupt = |e: rusqlite::Error| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) =>
            {
                StoreError::Corrupt { path: path.into(), detail: f.to_string() }
            }
            other => StoreError::Open { path: path.into(), source: other.into() },
        };
        // Validate and migrate on one plain connection first, so a bad file fails
        // at once with a clear message instead of inside the pool's retries.
        let mut conn = Connection::open(path).map_err(corrupt)?;
        configure(&mut conn).map_err(corrupt)?;
        // Switching to WAL takes the file for itself, and SQLite does not wait
        // for that (no busy handler): another process creating or migrating
        // the archive at this moment answers "locked", so try again a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let wal = loop {
            match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other,
            }
        };
        wal.map_err(corrupt)?;
        migrate(&mut conn, path)?;
        drop(conn);
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)?;
        Ok(Store { pool, path: path.into() })
    }

    /// Runs `f` with this store on the blocking pool: how async code reads
    /// and writes the archive.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        crate::blocking::run(move || f(&store)).await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A pooled connection, for readers elsewhere in the crate.
    pub fn conn(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
    }

    pub fn checkpoint(&self, channel_id: u64) -> Result<Option<Checkpoint>, StoreError> {
        let conn = self.conn()?;
        let row = conn
            .query_row("SELECT last_message_id, state FROM checkpoints WHERE channel_id = ?1", [id(channel_id)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?;
        Ok(row.map(|(last, state)| Checkpoint {
            last_message_id: last as u64,
            state: ChannelState::parse(&state).unwrap_or(ChannelState::Partial),
        }))
    }

    /// Stores one page of a channel's messages (sorted by id, oldest first)
    /// and moves the channel's checkpoint to the page's last id, in one
    /// transaction. `complete` says the page reached the end of the history.
    pub fn write_page(
        &self,
        guild_id: u64,
        channel_id: u64,
        page: &[Raw<Message>],
        complete: bool,
    ) -> Result<PageCounts, StoreError> {
        debug_assert!(page.windows(2).all(|w| w[0].value.id < w[1].value.id), "pages are written oldest first");
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let counts = write_messages(&tx, guild_id, page, false, Origin::Discord)?;
        let last = page.last().map_or(0, |m| m.value.id);
        let state = if complete { ChannelState::Complete } else { ChannelState::Partial };
        tx.prepare_cached(
            "INSERT INTO checkpoints (channel_id, guild_id, last_message_id, state, detail, loaded_at)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)
             ON CONFLICT(channel_id) DO UPDATE SET
                last_message_id = max(last_message_id, excluded.last_message_id),
                state = excluded.state, detail = NULL, loaded_at = excluded.loaded_at",
        )?
        .execute(params![id(channel_id), id(guild_id), id(last), state.as_str(), now()])?;
        tx.commit()?;
        Ok(counts)
    }

    /// Stores a message seen live on the gateway (new or edited), with the
    /// same rows a loaded page gives it. The checkpoint does not move here:
    /// see [`advance_checkpoint`](Self::advance_checkpoint).
    /// `keep_reactions`: the event did not carry reactions (edits do not), so
    /// the stored ones stay.
    pub fn write_live(
        &self,
        guild_id: u64,
        message: &Raw<Message>,
        keep_reactions: bool,
    ) -> Result<PageCounts, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let counts = write_messages(&tx, guild_id, std::slice::from_ref(message), keep_reactions, Origin::Discord)?;
        tx.commit()?;
        Ok(counts)
    }

    /// Moves a loaded channel's checkpoint forward to `message` (never back),
    /// for a caller that knows every earlier message is stored.
    pub fn advance_checkpoint(&self, channel_id: u64, message: u64) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE checkpoints SET last_message_id = ?2, loaded_at = ?3
             WHERE channel_id = ?1 AND state IN ('complete', 'partial') AND last_message_id < ?2",
            params![id(channel_id), id(message), now()],
        )?;
        Ok(())
    }

    /// Records deletions seen live: removes the messages if stored and leaves
    /// a tombstone either way, so a late create event cannot store them again.
    pub fn delete_seen(&self, guild_id: u64, channel_id: u64, ids: &[u64]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = next_version(&tx)?;
        for &m in ids {
            tx.execute(
                "INSERT OR REPLACE INTO message_tombstones (id, channel_id, guild_id, version, deleted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id(m), id(channel_id), id(guild_id), version, now()],
            )?;
            remove_message(&tx, m)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The guild of a loaded channel or thread (one with a checkpoint that a
    /// load wrote); `None` for channels never loaded, skipped or failed.
    pub fn loaded_channel_guild(&self, channel_id: u64) -> Result<Option<u64>, StoreError> {
        let conn = self.conn()?;
        let guild = conn
            .query_row(
                "SELECT guild_id FROM checkpoints WHERE channel_id = ?1 AND state IN ('complete', 'partial')",
                [id(channel_id)],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        Ok(guild.map(|g| g as u64))
    }

    /// Guilds with at least one loaded channel: the ones a restart catches up.
    pub fn loaded_guilds(&self) -> Result<Vec<u64>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT guild_id FROM checkpoints WHERE state IN ('complete', 'partial') ORDER BY guild_id",
        )?;
        let guilds = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(guilds.into_iter().map(|g| g as u64).collect())
    }

    /// Removes messages from the archive (deleted on Discord), leaving
    /// tombstones so indexes drop them too. Returns how many were stored.
    pub fn delete_messages(&self, ids: &[u64]) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = next_version(&tx)?;
        let mut deleted = 0;
        for &m in ids {
            deleted += tx.execute(
                "INSERT OR REPLACE INTO message_tombstones (id, channel_id, guild_id, version, deleted_at)
                 SELECT id, channel_id, guild_id, ?2, ?3 FROM messages WHERE id = ?1",
                params![id(m), version, now()],
            )?;
            remove_message(&tx, m)?;
        }
        tx.commit()?;
        Ok(deleted)
    }

    /// Records a channel's state without moving its checkpoint (writes only if it changed).
    pub fn mark_channel(
        &self,
        guild_id: u64,
        channel_id: u64,
        state: ChannelState,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO checkpoints (channel_id, guild_id, last_message_id, state, detail) VALUES (?1, ?2, 0, ?3, ?4)
             ON CONFLICT(channel_id) DO UPDATE SET state = excluded.state, detail = excluded.detail
             WHERE state IS NOT excluded.state OR detail IS NOT excluded.detail",
            params![id(channel_id), id(guild_id), state.as_str(), detail],
        )?;
        Ok(())
    }

    /// Starts the record of a load run.
    pub fn start_run(&self, guilds: &[u64]) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO load_runs (started_at, guilds) VALUES (?1, ?2)",
            params![now(), serde_json::to_string(guilds).expect("ids serialize")],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run: i64, outcome: &str, summary: &str) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE load_runs SET finished_at = ?2, outcome = ?3, summary = ?4 WHERE id = ?1",
            params![run, now(), outcome, summary],
        )?;
        Ok(())
    }
}

/// Where the messages [`write_messages`] stores come from, which decides who
/// wins when they disagree with the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Discord (a load, the gateway): its users replace the stored ones, and
    /// where it places a message or attachment elsewhere than the archive
    /// has it (only an import can have put it there), Discord's copy wins.
    Discord,
    /// An export file: it may be years old or hostile. It only fills in
    /// unknown users, and a message or attachment id the archive holds
    /// elsewhere is rejected: an id never moves between channels or guilds.
    Export,
}

/// Stores messages (any order) and their attachments and reactions; edits
/// replace a stored copy only when they are newer, and deleted messages are
/// not stored again. Returns the counts.
fn write_messages(
    tx: &rusqlite::Transaction<'_>,
    guild_id: u64,
    page: &[Raw<Message>],
    keep_reactions: bool,
    origin: Origin,
) -> Result<PageCounts, StoreError> {
    let mut counts = PageCounts::default();
    let mut authors = HashSet::new();
    let mut new_text = Vec::new();
    let version = next_version(tx)?;
    // Ids are never reused: a deleted message seen again (a late event, a
    // page fetched just before the delete) stays deleted. One look for the
    // whole page: tombstones are rare.
    let (low, high) = page.iter().fold((u64::MAX, 0), |(lo, hi), m| (lo.min(m.value.id), hi.max(m.value.id)));
    let deleted: HashSet<u64> = tx
        .prepare_cached("SELECT id FROM message_tombstones WHERE id BETWEEN ?1 AND ?2")?
        .query_map([id(low), id(high)], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|v| v as u64))
        .collect::<Result<_, _>>()?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO messages (id, channel_id, guild_id, author_id, content, created_at, edited_at,
            type, flags, pinned, webhook_id, reply_to_id, reply_to_channel_id, raw, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    // Already stored (in the same channel and guild: see `misplaced`):
    // replace it only if this copy was edited later.
    let mut update = tx.prepare_cached(
        "UPDATE messages SET author_id = ?4, content = ?5, created_at = ?6,
            edited_at = ?7, type = ?8, flags = ?9, pinned = ?10, webhook_id = ?11, reply_to_id = ?12,
            reply_to_channel_id = ?13, raw = ?14, version = ?15
         WHERE id = ?1 AND channel_id = ?2 AND guild_id = ?3
            AND ?7 IS NOT NULL AND (edited_at IS NULL OR edited_at < ?7)",
    )?;
    // What was fetched of a file stays when its message is stored again (an
    // edit, a fresher link): the file is the same, only the link moves. An
    // attachment never changes message (`misplaced` rejects that first).
    let mut attachment = tx.prepare_cached(
        "INSERT INTO attachments (id, message_id, filename, content_type, size, url, width, height, description)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(id) DO UPDATE SET filename = excluded.filename,
            content_type = excluded.content_type, size = excluded.size, url = excluded.url,
            width = excluded.width, height = excluded.height, description = excluded.description,
            fts_source = NULL
         WHERE message_id = excluded.message_id",
    )?;
    let mut reaction =
        tx.prepare_cached("INSERT OR REPLACE INTO reactions (message_id, emoji, count) VALUES (?1, ?2, ?3)")?;
    for raw in page {
        let m = &raw.value;
        if deleted.contains(&m.id) {
            counts.unchanged += 1;
            continue;
        }
        if misplaced(tx, guild_id, m)? {
            counts.conflicts += 1;
            match origin {
                Origin::Export => continue,
                Origin::Discord => {
                    tracing::warn!(
                        message = m.id,
                        channel = m.channel_id,
                        "the archive held this message (or one of its attachments) elsewhere than Discord \
                         does, from an import: Discord's copy replaces it"
                    );
                    evict(tx, m)?;
                }
            }
        }
        if authors.insert(m.author.id) {
            save_user(tx, &m.author, origin)?;
        }
        let created = snowflake::normalize_time(&m.timestamp)
            .unwrap_or_else(|| snowflake::format_time(snowflake::timestamp(m.id)));
        let edited = m.edited_timestamp.as_deref().and_then(snowflake::normalize_time);
        let reference = m.message_reference.as_ref();
        let values = params![
            id(m.id),
            id(m.channel_id),
            id(guild_id),
            id(m.author.id),
            m.content,
            created,
            edited,
            m.kind,
            m.flags as i64,
            m.pinned,
            m.webhook_id.map(id),
            reference.and_then(|r| r.message_id).map(id),
            reference.and_then(|r| r.channel_id).map(id),
            raw.json.get(),
            version,
        ];
        if insert.execute(values)? == 1 {
            counts.new += 1;
            new_text.push((m.id, m.content.as_str()));
        } else {
            if update.execute(values)? == 0 {
                counts.unchanged += 1;
                continue;
            }
            counts.updated += 1;
            // Attachments the edit removed go; the others are upserted below.
            let kept = serde_json::to_string(&m.attachments.iter().map(|a| id(a.id)).collect::<Vec<_>>())
                .expect("ids serialize");
            tx.prepare_cached(
                "DELETE FROM attachments WHERE message_id = ?1 AND id NOT IN (SELECT value FROM json_each(?2))",
            )?
            .execute(params![id(m.id), kept])?;
            if !keep_reactions {
                tx.prepare_cached("DELETE FROM reactions WHERE message_id = ?1")?.execute([id(m.id)])?;
            }
        }
        for a in &m.attachments {
            attachment.execute(params![
                id(a.id),
                id(m.id),
                a.filename,
                a.content_type,
                a.size as i64,
                a.url,
                a.width,
                a.height,
                a.description
            ])?;
        }
        for r in &m.reactions {
            reaction.execute(params![id(m.id), r.emoji.key(), r.count as i64])?;
        }
    }
    // The keyword index of the new rows (see migration 005), last: FTS5
    // writes its pending terms to disk whenever a later statement of the
    // transaction opens a statement journal, so these come after all others.
    let mut fts = tx.prepare_cached("INSERT INTO messages_fts (rowid, content) VALUES (?1, ?2)")?;
    for (message, text) in new_text {
        fts.execute(params![id(message), text])?;
    }
    Ok(counts)
}

/// Whether the archive holds `m`'s id in another channel or guild, or one of
/// its attachment ids under another message.
fn misplaced(tx: &rusqlite::Transaction<'_>, guild_id: u64, m: &Message) -> Result<bool, rusqlite::Error> {
    let stored = tx
        .prepare_cached("SELECT channel_id, guild_id FROM messages WHERE id = ?1")?
        .query_row([id(m.id)], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .optional()?;
    if stored.is_some_and(|(c, g)| c != id(m.channel_id) || g != id(guild_id)) {
        return Ok(true);
    }
    let mut owner = tx.prepare_cached("SELECT message_id FROM attachments WHERE id = ?1")?;
    for a in &m.attachments {
        if owner.query_row([id(a.id)], |r| r.get::<_, i64>(0)).optional()?.is_some_and(|o| o != id(m.id)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes what an import stored under `m`'s id or its attachments' ids
/// elsewhere than Discord places them, so that Discord's copy can be stored.
fn evict(tx: &rusqlite::Transaction<'_>, m: &Message) -> Result<(), rusqlite::Error> {
    remove_message(tx, m.id)?;
    for a in &m.attachments {
        tx.prepare_cached("DELETE FROM attachments_fts WHERE rowid = ?1")?.execute([id(a.id)])?;
        tx.prepare_cached("DELETE FROM attachments WHERE id = ?1")?.execute([id(a.id)])?;
    }
    Ok(())
}

/// Deletes a message's rows (its tombstone is the caller's).
fn remove_message(tx: &rusqlite::Transaction<'_>, message: u64) -> Result<(), rusqlite::Error> {
    tx.execute(
        "DELETE FROM attachments_fts WHERE rowid IN (SELECT id FROM attachments WHERE message_id = ?1)",
        [id(message)],
    )?;
    tx.execute("DELETE FROM attachments WHERE message_id = ?1", [id(message)])?;
    tx.execute("DELETE FROM reactions WHERE message_id = ?1", [id(message)])?;
    tx.execute("DELETE FROM messages WHERE id = ?1", [id(message)])?;
    Ok(())
}

/// Takes the next archive version (inside the caller's transaction).
fn next_version(tx: &rusqlite::Transaction<'_>) -> Result<i64, rusqlite::Error> {
    tx.prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'version' RETURNING value")?
        .query_row([], |r| r.get(0))
}

fn configure(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    loop {
        // The version is read inside the exclusive transaction that applies
        // the next step: two processes opening a new archive at once (two
        // `load`s) then apply each step once, one after the other.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > supported {
            return Err(StoreError::TooNew { path: path.into(), found: version, supported });
        }
        if version == supported {
            tx.commit()?;
            return Ok(());
        }
        if version == 2 {
            // 003 indexes every stored message for keyword search (about 5 s per million).
            let n: i64 = tx.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
            if n > 100_000 {
                tracing::warn!("upgrading {}: building the keyword index over {n} messages (once)", path.display());
            }
        }
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

fn save_user(conn: &Connection, u: &User, origin: Origin) -> Result<(), rusqlite::Error> {
    if origin == Origin::Export {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO users (id, username, global_name, discriminator, avatar, bot)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![id(u.id), u.username, u.global_name, u.discriminator, u.avatar, u.bot])?;
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO users (id, username, global_name, discriminator, avatar, bot) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET username = excluded.username, global_name = excluded.global_name,
            discriminator = excluded.discriminator, avatar = excluded.avatar, bot = excluded.bot
         WHERE username IS NOT excluded.username OR global_name IS NOT excluded.global_name
            OR avatar IS NOT excluded.avatar OR bot IS NOT excluded.bot OR discriminator IS NOT excluded.discriminator",
    )?
    .execute(params![id(u.id), u.username, u.global_name, u.discriminator, u.avatar, u.bot])?;
    Ok(())
}

#[cfg(test)]
mod tests;
