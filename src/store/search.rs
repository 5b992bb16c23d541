//! The archive's side of search: the FTS5 keyword index over message text
//! (kept in step with `messages` by triggers, see migration 003), and the
//! stored facts permission checks need (roles, overwrites, members, private
//! thread membership), each with the time Discord last confirmed it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{id, now, Store, StoreError};
use crate::permissions::{GuildPermissions, Overwrite};

/// A channel or thread as permission checks see it.
#[derive(Debug, Clone)]
pub struct ChannelAccess {
    pub id: u64,
    pub kind: u8,
    pub parent_id: Option<u64>,
    pub overwrites: Vec<Overwrite>,
}

/// Everything stored about who may read what in a guild.
#[derive(Debug, Clone)]
pub struct GuildAccess {
    pub permissions: GuildPermissions,
    pub channels: Vec<ChannelAccess>,
    /// When roles and overwrites were last read from Discord (None: never recorded).
    pub synced_at: Option<DateTime<Utc>>,
}

/// A user's membership of a guild, as last read from Discord.
#[derive(Debug, Clone)]
pub struct StoredMember {
    /// None: Discord said the user is not a member.
    pub roles: Option<Vec<u64>>,
    pub fetched_at: DateTime<Utc>,
}

/// How keyword matches are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordOrder {
    /// The best `limit` by bm25 among all matches.
    Relevance,
    /// The newest `limit` matches, then by bm25 (bounded cost for frequent terms).
    Newest,
}

/// A message the keyword index matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeywordHit {
    pub message_id: u64,
    pub channel_id: u64,
    pub guild_id: u64,
    /// FTS5's bm25: lower is better (it is negative).
    pub bm25: f64,
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

impl Store {
    /// The stored roles, owner and channel overwrites of a guild; None if the guild is unknown.
    pub fn guild_access(&self, guild: u64) -> Result<Option<GuildAccess>, StoreError> {
        let conn = self.conn()?;
        let owner: Option<Option<i64>> =
            conn.query_row("SELECT owner_id FROM guilds WHERE id = ?1", [id(guild)], |r| r.get(0)).optional()?;
        let Some(owner) = owner else { return Ok(None) };
        let roles = conn
            .prepare("SELECT id, permissions FROM roles WHERE guild_id = ?1")?
            .query_map([id(guild)], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<HashMap<_, _>, _>>()?;
        let mut stmt =
            conn.prepare("SELECT id, type, parent_id, permission_overwrites FROM channels WHERE guild_id = ?1")?;
        let channels = stmt
            .query_map([id(guild)], |r| {
                let overwrites: String = r.get(3)?;
                Ok(ChannelAccess {
                    id: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    parent_id: r.get::<_, Option<i64>>(2)?.map(|p| p as u64),
                    // Unreadable overwrites would silently widen access: treat
                    // them as "deny everything" instead.
                    overwrites: serde_json::from_str(&overwrites).unwrap_or_else(|_| {
                        vec![Overwrite {
                            id: guild,
                            kind: crate::permissions::OverwriteKind::Role,
                            allow: 0,
                            deny: crate::permissions::ALL,
                        }]
                    }),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let synced: Option<String> = conn
            .query_row("SELECT synced_at FROM permission_syncs WHERE guild_id = ?1", [id(guild)], |r| r.get(0))
            .optional()?;
        Ok(Some(GuildAccess {
            permissions: GuildPermissions { guild_id: guild, owner_id: owner.unwrap_or(0) as u64, roles },
            channels,
            synced_at: synced.as_deref().and_then(parse_time),
        }))
    }

    /// Records that a guild's roles and channel overwrites were just read from Discord.
    pub fn mark_permissions_synced(&self, guild: u64) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO permission_syncs (guild_id, synced_at) VALUES (?1, ?2)
             ON CONFLICT(guild_id) DO UPDATE SET synced_at = excluded.synced_at",
            params![id(guild), now()],
        )?;
        Ok(())
    }

    pub fn member(&self, guild: u64, user: u64) -> Result<Option<StoredMember>, StoreError> {
        let row: Option<(bool, String, String)> = self
            .conn()?
            .query_row(
                "SELECT present, roles, fetched_at FROM members WHERE guild_id = ?1 AND user_id = ?2",
                params![id(guild), id(user)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.and_then(|(present, roles, fetched)| {
            let roles = if present { Some(serde_json::from_str::<Vec<u64>>(&roles).ok()?) } else { None };
            Some(StoredMember { roles, fetched_at: parse_time(&fetched)? })
        }))
    }

    /// Stores what Discord said about a user in a guild (`None`: not a member).
    pub fn save_member(&self, guild: u64, user: u64, roles: Option<&[u64]>) -> Result<(), StoreError> {
        let roles_json = serde_json::to_string(roles.unwrap_or(&[])).expect("ids serialize");
        self.conn()?.execute(
            "INSERT INTO members (guild_id, user_id, present, roles, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(guild_id, user_id) DO UPDATE SET present = excluded.present, roles = excluded.roles,
                fetched_at = excluded.fetched_at",
            params![id(guild), id(user), roles.is_some(), roles_json, now()],
        )?;
        Ok(())
    }

    /// Whether a user is a member of a private thread, and when that was read.
    pub fn thread_member(&self, thread: u64, user: u64) -> Result<Option<(bool, DateTime<Utc>)>, StoreError> {
        let row: Option<(bool, String)> = self
            .conn()?
            .query_row(
                "SELECT member, fetched_at FROM thread_members WHERE thread_id = ?1 AND user_id = ?2",
                params![id(thread), id(user)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(m, t)| Some((m, parse_time(&t)?))))
    }

    pub fn save_thread_member(&self, thread: u64, user: u64, member: bool) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO thread_members (thread_id, user_id, member, fetched_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(thread_id, user_id) DO UPDATE SET member = excluded.member, fetched_at = excluded.fetched_at",
            params![id(thread), id(user), member, now()],
        )?;
        Ok(())
    }

    /// Messages matching an FTS5 query, in these guilds and, when `channels`
    /// is given, only in those channels (the filter is part of the query).
    /// Messages by bots and system messages are left out, as the chunker
    /// leaves them out.
    ///
    /// `KeywordOrder::Relevance` ranks every match by bm25 (cost grows with
    /// the number of matches: use it for terms that are not too frequent);
    /// `KeywordOrder::Newest` takes the newest `limit` matches, stopping there,
    /// and returns them by bm25.
    pub fn keyword_search(
        &self,
        fts_query: &str,
        guilds: &[u64],
        channels: Option<&[u64]>,
        limit: usize,
        order: KeywordOrder,
    ) -> Result<Vec<KeywordHit>, StoreError> {
        let conn = self.conn()?;
        let guilds_json = serde_json::to_string(guilds).expect("ids serialize");
        let channels_json = channels.map(|c| serde_json::to_string(c).expect("ids serialize"));
        let order_by = match order {
            KeywordOrder::Relevance => "score",
            KeywordOrder::Newest => "messages_fts.rowid DESC",
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT m.id, m.channel_id, m.guild_id, bm25(messages_fts) AS score
             FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
             WHERE messages_fts MATCH ?1
               AND m.guild_id IN (SELECT value FROM json_each(?2))
               AND (?3 IS NULL OR m.channel_id IN (SELECT value FROM json_each(?3)))
               AND m.type IN (0, 19, 21)
               AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.author_id AND u.bot)
             ORDER BY {order_by} LIMIT ?4"
        ))?;
        let rows = stmt.query_map(params![fts_query, guilds_json, channels_json, limit as i64], |r| {
            Ok(KeywordHit {
                message_id: r.get::<_, i64>(0)? as u64,
                channel_id: r.get::<_, i64>(1)? as u64,
                guild_id: r.get::<_, i64>(2)? as u64,
                bm25: r.get(3)?,
            })
        })?;
        let mut hits: Vec<KeywordHit> = rows.collect::<Result<_, _>>()?;
        if order == KeywordOrder::Newest {
            hits.sort_by(|a, b| a.bm25.total_cmp(&b.bm25));
        }
        Ok(hits)
    }

    /// The chunk of an index that holds a message, if any (messages the
    /// chunker left out belong to none).
    pub fn chunk_of_message(
        &self,
        guild: u64,
        model: &str,
        channel: u64,
        message: u64,
    ) -> Result<Option<u64>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT chunk_id, last_message_id FROM index_chunks
             WHERE guild_id = ?1 AND model = ?2 AND channel_id = ?3 AND first_message_id <= ?4
             ORDER BY first_message_id DESC LIMIT 1",
        )?;
        let row: Option<(i64, i64)> = stmt
            .query_row(params![id(guild), model, id(channel), id(message)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.filter(|&(_, last)| last as u64 >= message).map(|(c, _)| c as u64))
    }

    /// How many messages match an FTS5 query (a term's document frequency),
    /// counting no further than `cap`.
    pub fn keyword_count(&self, fts_query: &str, cap: u64) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM messages_fts WHERE messages_fts MATCH ?1 LIMIT ?2)")?;
        Ok(stmt.query_row(params![fts_query, cap as i64], |r| r.get::<_, i64>(0))? as u64)
    }

    /// How many messages the archive holds.
    pub fn message_count(&self) -> Result<u64, StoreError> {
        Ok(self.conn()?.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Rebuilds the keyword index from the messages table (after a restore,
    /// or if it was ever suspected to be out of step).
    pub fn rebuild_keyword_index(&self) -> Result<(), StoreError> {
        self.conn()?.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')", [])?;
        Ok(())
    }
}
