//! Read-only summaries of the archive for `status` and scripts.

use std::collections::HashMap;

use rusqlite::params;

use super::{ChannelState, Store, StoreError};
use crate::discord::model::channel_type;

/// One guild's archive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuildStatus {
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    pub guild_id: u64,
    pub name: String,
    pub messages: u64,
    /// When the last load that covered this guild finished.
    pub last_load_at: Option<String>,
    pub last_load_outcome: Option<String>,
    pub channels: Vec<ChannelStatus>,
    /// Stage-two indexes of this guild, one per model.
    pub indexes: Vec<super::IndexRecord>,
}

/// One channel's or thread's archive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelStatus {
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    pub channel_id: u64,
    pub name: Option<String>,
    pub kind: &'static str,
    #[serde(serialize_with = "crate::snowflake::serialize_opt_id")]
    pub parent_id: Option<u64>,
    pub messages: u64,
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    pub last_message_id: u64,
    /// complete, partial, forbidden, gone, failed, "not loaded" or "holds threads".
    pub state: LoadState,
    pub detail: Option<String>,
    /// When the checkpoint last moved.
    pub loaded_at: Option<String>,
}

/// Where a listed channel stands with the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadState {
    /// It has a checkpoint.
    Checkpoint(ChannelState),
    /// Listed, never loaded.
    NotLoaded,
    /// A forum or media channel: it has no messages of its own, only threads.
    HoldsThreads,
}

impl LoadState {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadState::Checkpoint(s) => s.as_str(),
            LoadState::NotLoaded => "not loaded",
            LoadState::HoldsThreads => "holds threads",
        }
    }
}

impl std::fmt::Display for LoadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for LoadState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Store {
    /// The archive's guilds (all, or the listed ones) with per-channel detail.
    pub fn status(&self, only: &[u64]) -> Result<Vec<GuildStatus>, StoreError> {
        let conn = self.conn()?;
        let counts: HashMap<i64, u64> = conn
            .prepare("SELECT channel_id, count(*) FROM messages GROUP BY channel_id")?
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<_, _>>()?;
        let mut guilds: Vec<GuildStatus> = conn
            .prepare("SELECT id, name FROM guilds ORDER BY name, id")?
            .query_map([], |r| {
                Ok(GuildStatus {
                    guild_id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    messages: 0,
                    last_load_at: None,
                    last_load_outcome: None,
                    channels: Vec::new(),
                    indexes: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        guilds.retain(|g| only.is_empty() || only.contains(&g.guild_id));
        let mut runs = conn.prepare(
            "SELECT finished_at, outcome FROM load_runs
             WHERE finished_at IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(load_runs.guilds) WHERE value = ?1)
             ORDER BY id DESC LIMIT 1",
        )?;
        let mut channels = conn.prepare(
            "SELECT c.id, c.name, c.type, c.parent_id, k.last_message_id, k.state, k.detail, k.loaded_at
             FROM channels c LEFT JOIN checkpoints k ON k.channel_id = c.id
             WHERE c.guild_id = ?1
             ORDER BY c.position, c.id",
        )?;
        for g in &mut guilds {
            if let Some((at, outcome)) =
                runs.query_map(params![g.guild_id as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.next().transpose()?
            {
                g.last_load_at = at;
                g.last_load_outcome = outcome;
            }
            let rows = channels.query_map([g.guild_id as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, u8>(2)?,
                    r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })?;
            for row in rows {
                let (id, name, kind, parent_id, last, state, detail, loaded_at) = row?;
                if !channel_type::holds_messages(kind) && !channel_type::holds_threads(kind) {
                    continue;
                }
                let state = match state.as_deref().and_then(ChannelState::parse) {
                    Some(s) => LoadState::Checkpoint(s),
                    None if !channel_type::holds_messages(kind) => LoadState::HoldsThreads,
                    None => LoadState::NotLoaded,
                };
                let messages = counts.get(&(id as i64)).copied().unwrap_or(0);
                g.messages += messages;
                g.channels.push(ChannelStatus {
                    channel_id: id,
                    name,
                    kind: channel_type::name(kind),
                    parent_id,
                    messages,
                    last_message_id: last,
                    state,
                    detail,
                    loaded_at,
                });
            }
            g.channels = tree_order(std::mem::take(&mut g.channels));
            g.indexes = self.index_records(Some(g.guild_id))?;
        }
        Ok(guilds)
    }
}

/// Channels in listing order, each followed by its threads (oldest first).
fn tree_order(channels: Vec<ChannelStatus>) -> Vec<ChannelStatus> {
    let is_thread = |c: &ChannelStatus| c.kind.contains("thread");
    let (mut threads, top): (Vec<_>, Vec<_>) = channels.into_iter().partition(is_thread);
    threads.sort_by_key(|t| t.channel_id);
    let mut out = Vec::with_capacity(top.len() + threads.len());
    for c in top {
        let id = c.channel_id;
        out.push(c);
        let (mine, rest): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.parent_id == Some(id));
        out.extend(mine);
        threads = rest;
    }
    out.extend(threads);
    out
}
