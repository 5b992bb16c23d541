//! The archive's side of stage two: reading messages for chunking, and the
//! per-(guild, model) index records (manifest of chunks, checkpoint, active model).

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{id, now, Store, StoreError};
use crate::chunk::ChatMessage;

/// An index's record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexRecord {
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    pub guild_id: u64,
    pub model: String,
    pub backend: String,
    pub collection: String,
    pub dim: usize,
    /// The chunking rules it was built with (JSON): changing them means a rebuild.
    #[serde(skip)]
    pub chunking: String,
    /// Archive version fully indexed (the stage-two checkpoint).
    pub version: i64,
    pub state: IndexState,
    pub chunks: u64,
    /// The chunks' parts (a point each, beside the chunks' own).
    pub parts: u64,
    pub active: bool,
    pub updated_at: String,
    /// Points in the collection, when the caller looked (status does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<u64>,
    /// What is wrong with the collection, when the caller looked and found
    /// something (status does): unreadable, missing, or fewer points than recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The collection holding its points when not the one named after the
    /// model (after a rebuild beside it); see [`IndexRecord::key`].
    #[serde(skip)]
    pub collection_key: Option<String>,
}

impl IndexRecord {
    /// The name the vector store knows its collection by.
    pub fn key(&self) -> &str {
        self.collection_key.as_deref().unwrap_or(&self.model)
    }
}

/// Where an index stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexState {
    /// A run started and has not finished: search may not switch to it.
    Building,
    /// Every chunk of the archive up to the record's version is stored.
    Complete,
}

impl IndexState {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexState::Building => "building",
            IndexState::Complete => "complete",
        }
    }
}

impl std::fmt::Display for IndexState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for IndexState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match v.as_str()? {
            "building" => Ok(IndexState::Building),
            "complete" => Ok(IndexState::Complete),
            other => Err(rusqlite::types::FromSqlError::Other(format!("unknown index state {other:?}").into())),
        }
    }
}

/// A guild whose search has an active index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveIndex {
    pub guild_id: u64,
    pub guild_name: String,
    pub model: String,
}

/// What an index record starts with.
#[derive(Debug, Clone, Copy)]
pub struct NewIndex<'a> {
    pub guild: u64,
    pub model: &'a str,
    /// Its collection's key in the vector store (usually the model's name).
    pub key: &'a str,
    pub backend: &'a str,
    pub collection: &'a str,
    pub dim: usize,
    /// The chunking rules, as JSON.
    pub chunking: &'a str,
}

/// A chunk in an index's collection.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRecord {
    pub chunk_id: u64,
    pub channel_id: u64,
    pub first_message_id: u64,
    pub last_message_id: u64,
    pub hash: u64,
    /// Points of its parts beside its own (see `chunk`).
    pub parts: u32,
}

/// Where a channel is, for payloads.
#[derive(Debug, Clone, Default)]
pub struct ChannelInfo {
    pub name: String,
    pub kind: u8,
    pub parent_id: Option<u64>,
}

impl Store {
    /// The archive's current version (grows with every write to messages).
    pub fn version(&self) -> Result<i64, StoreError> {
        Ok(self.conn()?.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| r.get(0))?)
    }

    /// Guilds in the archive: (id, name, messages).
    pub fn guilds(&self) -> Result<Vec<(u64, String, u64)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT g.id, g.name, (SELECT count(*) FROM messages m WHERE m.guild_id = g.id) FROM guilds g ORDER BY g.name, g.id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, i64>(2)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn has_guild(&self, guild: u64) -> Result<bool, StoreError> {
        Ok(self.conn()?.query_row("SELECT count(*) FROM guilds WHERE id = ?1", [id(guild)], |r| r.get::<_, i64>(0))?
            > 0)
    }

    /// Channels and threads of a guild.
    pub fn channel_infos(&self, guild: u64) -> Result<HashMap<u64, ChannelInfo>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id, coalesce(name, ''), type, parent_id FROM channels WHERE guild_id = ?1")?;
        let rows = stmt.query_map([id(guild)], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                ChannelInfo {
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    parent_id: r.get::<_, Option<i64>>(3)?.map(|p| p as u64),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Channels with messages written, replaced or deleted after `since`, each
    /// with the smallest such message id.
    pub fn changed_channels(&self, guild: u64, since: i64) -> Result<Vec<(u64, u64)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT channel_id, min(first) FROM (
                SELECT channel_id, min(id) AS first FROM messages WHERE guild_id = ?1 AND version > ?2 GROUP BY channel_id
                UNION ALL
                SELECT channel_id, min(id) AS first FROM message_tombstones WHERE guild_id = ?1 AND version > ?2 GROUP BY channel_id
             ) GROUP BY channel_id ORDER BY channel_id",
        )?;
        let rows = stmt
            .query_map(params![id(guild), since], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many messages `changed_channels` points stage two at (from each
    /// channel's first change on: a lower bound of what will be read).
    pub fn messages_from(&self, changes: &[(u64, u64)]) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT count(*) FROM messages WHERE channel_id = ?1 AND id >= ?2")?;
        let mut total = 0u64;
        for &(channel, from) in changes {
            total += stmt.query_row(params![id(channel), id(from)], |r| r.get::<_, i64>(0))? as u64;
        }
        Ok(total)
    }

    /// Messages processed by stage two: up to `limit` of a channel from id `from` on, in id order.
    pub fn chat_messages(&self, channel: u64, from: u64, limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT m.id, m.channel_id, coalesce(m.author_id, 0), coalesce(u.global_name, u.username, ''),
                    coalesce(u.bot, 0), coalesce(m.content, ''), m.type, m.reply_to_id
             FROM messages m LEFT JOIN users u ON u.id = m.author_id
             WHERE m.channel_id = ?1 AND m.id >= ?2 ORDER BY m.id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id(channel), id(from), limit as i64], |r| {
            Ok(ChatMessage {
                id: r.get::<_, i64>(0)? as u64,
                channel_id: r.get::<_, i64>(1)? as u64,
                author_id: r.get::<_, i64>(2)? as u64,
                author_name: r.get(3)?,
                author_is_bot: r.get(4)?,
                content: r.get(5)?,
                kind: r.get(6)?,
                reply_to: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                images: Vec::new(),
            })
        })?;
        let mut page: Vec<ChatMessage> = rows.collect::<Result<_, _>>()?;
        drop(stmt);
        drop(conn);
        let ids: Vec<u64> = page.iter().map(|m| m.id).collect();
        let mut notes = self.image_notes(&ids)?.into_iter().peekable();
        for m in &mut page {
            while let Some((_, note)) = notes.next_if(|(id, _)| *id == m.id) {
                m.images.push(note);
            }
        }
        Ok(page)
    }

    /// (author display name, text) of a message of `channel`, for reply
    /// quotes. A reference to another channel (a forward, a crosspost) is not
    /// quoted: its text would reach readers of this channel who may not read that one.
    pub fn quote(&self, message: u64, channel: u64) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT coalesce(u.global_name, u.username, ''), coalesce(m.content, '')
                 FROM messages m LEFT JOIN users u ON u.id = m.author_id WHERE m.id = ?1 AND m.channel_id = ?2",
                params![id(message), id(channel)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The vector store's name for the collection of a guild's index for
    /// `model` (see [`IndexRecord::key`]): one row, cheap enough for every
    /// question, unlike the whole record (which sums the manifest's parts).
    pub fn collection_key(&self, guild: u64, model: &str) -> Result<String, StoreError> {
        let key: Option<String> = self
            .conn()?
            .query_row(
                "SELECT collection_key FROM indexes WHERE guild_id = ?1 AND model = ?2",
                params![id(guild), model],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(key.unwrap_or_else(|| model.to_owned()))
    }

    pub fn index_record(&self, guild: u64, model: &str) -> Result<Option<IndexRecord>, StoreError> {
        Ok(self.index_records(Some(guild))?.into_iter().find(|r| r.model == model))
    }

    /// Every index (of one guild, or all).
    pub fn index_records(&self, guild: Option<u64>) -> Result<Vec<IndexRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT i.guild_id, i.model, i.backend, i.collection, i.dim, i.settings, i.version, i.state, i.chunks,
                    a.model IS NOT NULL, i.updated_at,
                    (SELECT coalesce(sum(c.parts), 0) FROM index_chunks c WHERE c.guild_id = i.guild_id AND c.model = i.model),
                    i.collection_key
             FROM indexes i LEFT JOIN active_indexes a ON a.guild_id = i.guild_id AND a.model = i.model
             WHERE ?1 IS NULL OR i.guild_id = ?1 ORDER BY i.guild_id, i.model",
        )?;
        let rows = stmt.query_map([guild.map(id)], |r| {
            Ok(IndexRecord {
                guild_id: r.get::<_, i64>(0)? as u64,
                model: r.get(1)?,
                backend: r.get(2)?,
                collection: r.get(3)?,
                dim: r.get::<_, i64>(4)? as usize,
                chunking: r.get(5)?,
                version: r.get(6)?,
                state: r.get(7)?,
                chunks: r.get::<_, i64>(8)? as u64,
                active: r.get(9)?,
                updated_at: r.get(10)?,
                parts: r.get::<_, i64>(11)? as u64,
                points: None,
                problem: None,
                collection_key: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Starts (or restarts, with `reset`) an index record in state `building`.
    pub fn begin_index(&self, new: &NewIndex<'_>, reset: bool) -> Result<(), StoreError> {
        let NewIndex { guild, model, key, backend, collection, dim, chunking } = *new;
        let key = (key != model).then_some(key);
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if reset {
            tx.execute("DELETE FROM index_chunks WHERE guild_id = ?1 AND model = ?2", params![id(guild), model])?;
            tx.execute("DELETE FROM indexes WHERE guild_id = ?1 AND model = ?2", params![id(guild), model])?;
        }
        tx.execute(
            "INSERT INTO indexes (guild_id, model, backend, collection, dim, settings, version, state, chunks, created_at, updated_at, collection_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 'building', 0, ?7, ?7, ?8)
             ON CONFLICT(guild_id, model) DO UPDATE SET updated_at = excluded.updated_at",
            params![id(guild), model, backend, collection, dim as i64, chunking, now(), key],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The manifest's chunk that a change at `message` falls in: where the
    /// last chunk of the channel starting at or before it starts.
    pub fn chunk_start_before(
        &self,
        guild: u64,
        model: &str,
        channel: u64,
        message: u64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.last_chunk_from(guild, model, channel, message)?.map(|c| c.first_message_id))
    }

    /// The manifest of a channel from `first` on: chunk id → (hash, parts).
    pub fn chunks_from(
        &self,
        guild: u64,
        model: &str,
        channel: u64,
        first: u64,
    ) -> Result<HashMap<u64, (u64, u32)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT chunk_id, hash, parts FROM index_chunks
             WHERE guild_id = ?1 AND model = ?2 AND channel_id = ?3 AND first_message_id >= ?4",
        )?;
        let rows = stmt.query_map(params![id(guild), model, id(channel), id(first)], |r| {
            Ok((r.get::<_, i64>(0)? as u64, (r.get::<_, i64>(1)? as u64, r.get::<_, u32>(2)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records chunks whose points are stored.
    pub fn record_chunks(&self, guild: u64, model: &str, chunks: &[ChunkRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO index_chunks (guild_id, model, chunk_id, channel_id, first_message_id, last_message_id, hash, parts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for c in chunks {
                stmt.execute(params![
                    id(guild),
                    model,
                    id(c.chunk_id),
                    id(c.channel_id),
                    id(c.first_message_id),
                    id(c.last_message_id),
                    id(c.hash),
                    c.parts
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The points an index's collection must hold: each chunk's and its parts'.
    pub fn manifest_points(&self, guild: u64, model: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn()?.query_row(
            "SELECT count(*) + coalesce(sum(parts), 0) FROM index_chunks WHERE guild_id = ?1 AND model = ?2",
            params![id(guild), model],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Up to `n` of an index's chunk ids, spread at random (chunk ids are
    /// hashes, so the chunk at or after a random id is a random chunk); each
    /// is one step of the primary key, whatever the index's size.
    pub fn manifest_sample(&self, guild: u64, model: &str, n: usize) -> Result<Vec<u64>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT chunk_id FROM index_chunks WHERE guild_id = ?1 AND model = ?2 AND chunk_id >= ?3
             ORDER BY chunk_id LIMIT 1",
        )?;
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..n * 2 {
            let from = rand::random::<i64>();
            let found = stmt.query_row(params![id(guild), model, from], |r| r.get::<_, i64>(0)).optional()?;
            let found = match found {
                Some(c) => Some(c),
                None => stmt.query_row(params![id(guild), model, i64::MIN], |r| r.get::<_, i64>(0)).optional()?,
            };
            match found {
                Some(c) => ids.insert(c as u64),
                None => break,
            };
            if ids.len() >= n {
                break;
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// The chunks an index records.
    pub fn manifest_chunks(&self, guild: u64, model: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn()?.query_row(
            "SELECT count(*) FROM index_chunks WHERE guild_id = ?1 AND model = ?2",
            params![id(guild), model],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Messages of the archive within an index's chunks (each chunk is a run
    /// of one channel's messages, first to last; the pieces of one over-long
    /// message share its span, counted once): how far a build has got.
    pub fn manifest_messages(&self, guild: u64, model: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn()?.query_row(
            "SELECT count(*) FROM (
                SELECT DISTINCT channel_id, first_message_id, last_message_id FROM index_chunks
                WHERE guild_id = ?1 AND model = ?2
             ) c JOIN messages m ON m.channel_id = c.channel_id AND m.id BETWEEN c.first_message_id AND c.last_message_id",
            params![id(guild), model],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// How a user is shown: display name and username, when the archive knows them.
    pub fn user_label(&self, user: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()?
            .query_row("SELECT username, global_name FROM users WHERE id = ?1", [id(user)], |r| {
                let (username, global): (String, Option<String>) = (r.get(0)?, r.get(1)?);
                Ok(match global {
                    Some(g) if g != username => format!("{g} (@{username})"),
                    _ => format!("@{username}"),
                })
            })
            .optional()?)
    }

    /// Every user of the archive: (id, username, display name), by id (what
    /// an asker's `--author` is matched against).
    pub fn user_names(&self) -> Result<Vec<(u64, String, Option<String>)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT id, username, global_name FROM users ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The author of each of these messages that the archive holds.
    pub fn message_authors(&self, messages: &[u64]) -> Result<HashMap<u64, u64>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, author_id FROM messages WHERE id IN (SELECT value FROM json_each(?1)) AND author_id IS NOT NULL",
        )?;
        let ids = serde_json::to_string(messages).expect("ids serialize");
        let rows = stmt.query_map([ids], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every chunk of an index's manifest.
    pub fn manifest(&self, guild: u64, model: &str) -> Result<Vec<ChunkRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT chunk_id, channel_id, first_message_id, last_message_id, hash, parts FROM index_chunks
             WHERE guild_id = ?1 AND model = ?2 ORDER BY channel_id, first_message_id",
        )?;
        let rows = stmt.query_map(params![id(guild), model], |r| {
            Ok(ChunkRecord {
                chunk_id: r.get::<_, i64>(0)? as u64,
                channel_id: r.get::<_, i64>(1)? as u64,
                first_message_id: r.get::<_, i64>(2)? as u64,
                last_message_id: r.get::<_, i64>(3)? as u64,
                hash: r.get::<_, i64>(4)? as u64,
                parts: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets chunks whose points were deleted.
    pub fn forget_chunks(&self, guild: u64, model: &str, chunk_ids: &[u64]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for &c in chunk_ids {
            tx.prepare_cached("DELETE FROM index_chunks WHERE guild_id = ?1 AND model = ?2 AND chunk_id = ?3")?
                .execute(params![id(guild), model, id(c)])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks an index complete up to archive version `version`; returns its
    /// chunks and their parts (the points its collection must hold: both).
    pub fn complete_index(&self, guild: u64, model: &str, version: i64) -> Result<(u64, u64), StoreError> {
        let conn = self.conn()?;
        let (chunks, parts): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(parts), 0) FROM index_chunks WHERE guild_id = ?1 AND model = ?2",
            params![id(guild), model],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        conn.execute(
            "UPDATE indexes SET version = ?3, state = 'complete', chunks = ?4, updated_at = ?5 WHERE guild_id = ?1 AND model = ?2",
            params![id(guild), model, version, chunks, now()],
        )?;
        Ok((chunks as u64, parts as u64))
    }

    /// Swaps a complete index built beside `model`'s (recorded as `staging`)
    /// in for it, in one transaction: its manifest and record become
    /// `model`'s, keeping its collection; the active choice is unchanged.
    /// Returns the replaced index's collection key (to delete), if there was one.
    pub fn promote_index(&self, guild: u64, model: &str, staging: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT model, collection_key FROM indexes WHERE guild_id = ?1 AND model = ?2",
                params![id(guild), model],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (_, staging_key): (String, Option<String>) = tx.query_row(
            "SELECT model, collection_key FROM indexes WHERE guild_id = ?1 AND model = ?2",
            params![id(guild), staging],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute("DELETE FROM index_chunks WHERE guild_id = ?1 AND model = ?2", params![id(guild), model])?;
        tx.execute("DELETE FROM indexes WHERE guild_id = ?1 AND model = ?2", params![id(guild), model])?;
        tx.execute(
            "UPDATE index_chunks SET model = ?2 WHERE guild_id = ?1 AND model = ?3",
            params![id(guild), model, staging],
        )?;
        let key = staging_key.unwrap_or_else(|| staging.to_owned());
        tx.execute(
            "UPDATE indexes SET model = ?2, collection_key = ?4 WHERE guild_id = ?1 AND model = ?3",
            params![id(guild), model, staging, (key != model).then_some(&key)],
        )?;
        tx.commit()?;
        Ok(old.map(|(m, k)| k.unwrap_or(m)).filter(|k| *k != key))
    }

    /// Makes `model` the one search uses for `guild` (one statement: atomic).
    pub fn activate_index(&self, guild: u64, model: &str) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO active_indexes (guild_id, model, activated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(guild_id) DO UPDATE SET model = excluded.model, activated_at = excluded.activated_at",
            params![id(guild), model, now()],
        )?;
        Ok(())
    }

    /// Every guild with an active index (what search answers from), by guild id.
    pub fn active_indexes(&self) -> Result<Vec<ActiveIndex>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT a.guild_id, g.name, a.model FROM active_indexes a JOIN guilds g ON g.id = a.guild_id
             ORDER BY a.guild_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ActiveIndex { guild_id: r.get::<_, i64>(0)? as u64, guild_name: r.get(1)?, model: r.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn active_model(&self, guild: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()?
            .query_row("SELECT model FROM active_indexes WHERE guild_id = ?1", [id(guild)], |r| r.get(0))
            .optional()?)
    }

    /// Forgets an index entirely (its collection is dropped by the caller).
    pub fn forget_index(&self, guild: u64, model: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM index_chunks WHERE guild_id = ?1 AND model = ?2", params![id(guild), model])?;
        tx.execute("DELETE FROM indexes WHERE guild_id = ?1 AND model = ?2", params![id(guild), model])?;
        tx.execute("DELETE FROM active_indexes WHERE guild_id = ?1 AND model = ?2", params![id(guild), model])?;
        tx.commit()?;
        Ok(())
    }

    /// Every chunk of an index that holds a message: the one, or, for a
    /// message too long for one chunk, its pieces (chunks of it alone, see
    /// `chunk`) in order. Empty for a message the chunker left out.
    pub fn chunks_of_message(
        &self,
        guild: u64,
        model: &str,
        channel: u64,
        message: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let Some(chunk) = self.last_chunk_from(guild, model, channel, message)? else { return Ok(Vec::new()) };
        if chunk.last_message_id < message {
            return Ok(Vec::new());
        }
        if (chunk.first_message_id, chunk.last_message_id) != (message, message) {
            return Ok(vec![chunk.chunk_id]);
        }
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT chunk_id FROM index_chunks
             WHERE guild_id = ?1 AND model = ?2 AND channel_id = ?3 AND first_message_id = ?4 AND last_message_id = ?4",
        )?;
        let rows = stmt.query_map(params![id(guild), model, id(channel), id(message)], |r| r.get::<_, i64>(0))?;
        let mut found: Vec<u64> = rows.map(|r| r.map(|c| c as u64)).collect::<Result<_, _>>()?;
        // A piece's id says which piece it is; ids of no piece (none expected) go last.
        let pieces = found.len() as u32;
        let piece =
            |c: &u64| (0..pieces).find(|&p| crate::chunk::chunk_id(channel, message, p) == *c).unwrap_or(u32::MAX);
        found.sort_by_cached_key(piece);
        Ok(found)
    }

    /// The channel's last manifest chunk that starts at or before `message`.
    fn last_chunk_from(
        &self,
        guild: u64,
        model: &str,
        channel: u64,
        message: u64,
    ) -> Result<Option<ChunkRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT chunk_id, first_message_id, last_message_id, hash, parts FROM index_chunks
             WHERE guild_id = ?1 AND model = ?2 AND channel_id = ?3 AND first_message_id <= ?4
             ORDER BY first_message_id DESC LIMIT 1",
        )?;
        Ok(stmt
            .query_row(params![id(guild), model, id(channel), id(message)], |r| {
                Ok(ChunkRecord {
                    chunk_id: r.get::<_, i64>(0)? as u64,
                    channel_id: channel,
                    first_message_id: r.get::<_, i64>(1)? as u64,
                    last_message_id: r.get::<_, i64>(2)? as u64,
                    hash: r.get::<_, i64>(3)? as u64,
                    parts: r.get(4)?,
                })
            })
            .optional()?)
    }
}
