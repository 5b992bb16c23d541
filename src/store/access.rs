//! Who may read what: the guild, role, channel-overwrite and membership
//! facts that permission checks need, each with the time Discord last
//! confirmed it. Stage one writes them when it lists a guild; search writes
//! them when it refreshes stale ones. Both go through [`Store::record_guild`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{id, now, Store, StoreError};
use crate::discord::model::{Channel, Guild, Raw};
use crate::permissions::{GuildPermissions, Overwrite};

/// What Discord said about a guild at one moment: stored together.
#[derive(Debug, Clone, Copy)]
pub struct GuildFacts<'a> {
    /// The guild with its roles.
    pub guild: &'a Raw<Guild>,
    /// Its channels and threads (all listed, or the ones just read).
    pub channels: &'a [Raw<Channel>],
    /// The bot's own member record (user id, roles), when it was read.
    pub bot_member: Option<(u64, &'a [u64])>,
}

/// A channel or thread as permission checks see it.
#[derive(Debug, Clone)]
pub struct ChannelAccess {
    pub id: u64,
    pub kind: u8,
    pub parent_id: Option<u64>,
    pub overwrites: Vec<Overwrite>,
    /// False for a channel known only from an export file: its overwrites
    /// were never read from Discord, so nobody but the operator may see it.
    pub listed_by_discord: bool,
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

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

impl Store {
    /// Stores a guild, its roles, channels and (when given) the bot's member
    /// record in one transaction, and records that its permissions were just
    /// read from Discord.
    pub fn record_guild(&self, facts: &GuildFacts<'_>) -> Result<(), StoreError> {
        let guild_id = facts.guild.value.id;
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        save_guild(&tx, facts.guild)?;
        save_channels(&tx, guild_id, facts.channels)?;
        if let Some((user, roles)) = facts.bot_member {
            save_member(&tx, guild_id, user, Some(roles))?;
        }
        tx.execute(
            "INSERT INTO permission_syncs (guild_id, synced_at) VALUES (?1, ?2)
             ON CONFLICT(guild_id) DO UPDATE SET synced_at = excluded.synced_at",
            params![id(guild_id), now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets when a guild's permissions were last read from Discord (a
    /// channel's overwrites or a role changed), so that the next search
    /// reads them again before it shows anything.
    pub fn permissions_changed(&self, guild: u64) -> Result<(), StoreError> {
        self.conn()?.execute("DELETE FROM permission_syncs WHERE guild_id = ?1", [id(guild)])?;
        Ok(())
    }

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
        let mut stmt = conn
            .prepare("SELECT id, type, parent_id, permission_overwrites, source FROM channels WHERE guild_id = ?1")?;
        let channels = stmt
            .query_map([id(guild)], |r| {
                let overwrites: String = r.get(3)?;
                let source: String = r.get(4)?;
                Ok(ChannelAccess {
                    listed_by_discord: source == "discord",
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
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        save_member(&tx, guild, user, roles)?;
        tx.commit()?;
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
}

/// Saves a guild and replaces its roles.
fn save_guild(tx: &Transaction<'_>, guild: &Raw<Guild>) -> Result<(), rusqlite::Error> {
    let g = &guild.value;
    tx.execute(
        "INSERT INTO guilds (id, name, owner_id, raw, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, owner_id = excluded.owner_id,
                raw = excluded.raw, updated_at = excluded.updated_at
             WHERE raw IS NOT excluded.raw",
        params![id(g.id), g.name, id(g.owner_id), guild.json.get(), now()],
    )?;
    let keep: HashSet<u64> = g.roles.iter().map(|r| r.value.id).collect();
    let stored: Vec<i64> = tx
        .prepare("SELECT id FROM roles WHERE guild_id = ?1")?
        .query_map([id(g.id)], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for old in stored {
        if !keep.contains(&(old as u64)) {
            tx.execute("DELETE FROM roles WHERE id = ?1", [old])?;
        }
    }
    for role in &g.roles {
        let r = &role.value;
        tx.execute(
            "INSERT INTO roles (id, guild_id, name, permissions, position, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, permissions = excluded.permissions,
                    position = excluded.position, raw = excluded.raw
                 WHERE raw IS NOT excluded.raw",
            params![id(r.id), id(g.id), r.name, r.permissions as i64, r.position, role.json.get()],
        )?;
    }
    Ok(())
}

/// Saves channels and threads of a guild (rows change only when Discord's copy did).
fn save_channels(tx: &Transaction<'_>, guild_id: u64, channels: &[Raw<Channel>]) -> Result<(), rusqlite::Error> {
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO channels (id, guild_id, parent_id, type, name, topic, position, owner_id, archived,
                    permission_overwrites, raw, updated_at, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'discord')
                 ON CONFLICT(id) DO UPDATE SET guild_id = excluded.guild_id, parent_id = excluded.parent_id,
                    type = excluded.type, name = excluded.name, topic = excluded.topic, position = excluded.position,
                    owner_id = excluded.owner_id, archived = excluded.archived,
                    permission_overwrites = excluded.permission_overwrites, raw = excluded.raw,
                    updated_at = excluded.updated_at, source = 'discord'
                 WHERE raw IS NOT excluded.raw OR source IS NOT 'discord'",
        )?;
        for ch in channels {
            let c = &ch.value;
            let overwrites = serde_json::to_string(&c.permission_overwrites).expect("overwrites serialize");
            stmt.execute(params![
                id(c.id),
                id(guild_id),
                c.parent_id.map(id),
                c.kind,
                c.name,
                c.topic,
                c.position,
                c.owner_id.map(id),
                c.thread_metadata.as_ref().map(|t| t.archived),
                overwrites,
                ch.json.get(),
                now(),
            ])?;
        }
    }
    Ok(())
}

fn save_member(tx: &Transaction<'_>, guild: u64, user: u64, roles: Option<&[u64]>) -> Result<(), rusqlite::Error> {
    let roles_json = serde_json::to_string(roles.unwrap_or(&[])).expect("ids serialize");
    tx.execute(
        "INSERT INTO members (guild_id, user_id, present, roles, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(guild_id, user_id) DO UPDATE SET present = excluded.present, roles = excluded.roles,
            fetched_at = excluded.fetched_at",
        params![id(guild), id(user), roles.is_some(), roles_json, now()],
    )?;
    Ok(())
}
