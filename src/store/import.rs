//! Writes of imported history (DiscordChatExporter files, see `crate::import`).
//!
//! An import writes the same message rows a load writes (through the same
//! `write_messages`), with these differences that keep an export, which may
//! be old or hostile, from overriding what Discord said:
//! - the guild and channel rows are only created when missing (an export
//!   carries no roles or overwrites, so such a channel is marked
//!   `source = 'export'` and hidden from everyone but the operator until a
//!   load lists it), and stored users are kept;
//! - a channel's guild never changes: an export that places a stored channel
//!   in another guild is refused whole ([`StoreError::OtherGuild`]);
//! - a message or attachment id never moves: a row the archive holds in
//!   another channel, guild or message is rejected and counted
//!   (`PageCounts::conflicts`), never merged;
//! - only the checkpoint of a channel known from exports alone, and never one
//!   a load set, moves (in the
//!   same transaction as the batch, to state `imported`, so a later load
//!   asks Discord only for what is newer). That trusts the export to hold the
//!   channel's whole history up to its newest message; a channel Discord
//!   listed keeps the checkpoint its loads set, so the next load still reads
//!   everything after it from Discord.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::json;

use super::{id, now, write_messages, Origin, PageCounts, Store, StoreError};
use crate::discord::model::{Message, Raw};

/// The guild and channel an export file fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedChannel {
    pub guild_id: u64,
    pub guild_name: String,
    pub channel_id: u64,
    /// Discord's channel type number.
    pub kind: u8,
    /// The parent channel of a thread, or the category of a channel.
    pub parent_id: Option<u64>,
    pub name: String,
    pub topic: Option<String>,
}

impl Store {
    /// Stores one batch of an export's messages (any order) for `channel`,
    /// creating its guild and channel rows if missing and, for a channel
    /// known from exports alone, moving its checkpoint to the newest message:
    /// all in one transaction (see the module docs for what is refused). The
    /// checkpoint never moves back; when it moves, the channel's state
    /// becomes `imported`. (Channels from CSV files have made-up ids that
    /// Discord does not know, so no load ever continues them.)
    pub fn write_import(&self, channel: &ImportedChannel, batch: &[Raw<Message>]) -> Result<PageCounts, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Every place the archive records the channel's guild (a channel's
        // messages all share one guild: this check and `write_messages` keep
        // it so, so its first message speaks for all).
        let stored: Option<i64> = tx
            .prepare_cached(
                "SELECT guild_id FROM channels WHERE id = ?1 AND guild_id IS NOT ?2
                 UNION ALL SELECT guild_id FROM checkpoints WHERE channel_id = ?1 AND guild_id IS NOT ?2
                 UNION ALL SELECT guild_id FROM
                    (SELECT guild_id FROM messages WHERE channel_id = ?1 ORDER BY id LIMIT 1)
                    WHERE guild_id IS NOT ?2
                 LIMIT 1",
            )?
            .query_row(params![id(channel.channel_id), id(channel.guild_id)], |r| r.get(0))
            .optional()?;
        if let Some(stored) = stored {
            return Err(StoreError::OtherGuild {
                channel: channel.channel_id,
                stored: stored as u64,
                claimed: channel.guild_id,
            });
        }
        let guild_raw = json!({"id": channel.guild_id.to_string(), "name": channel.guild_name}).to_string();
        tx.prepare_cached(
            "INSERT INTO guilds (id, name, owner_id, raw, updated_at) VALUES (?1, ?2, NULL, ?3, ?4)
             ON CONFLICT(id) DO NOTHING",
        )?
        .execute(params![id(channel.guild_id), channel.guild_name, guild_raw, now()])?;
        let channel_raw = json!({
            "id": channel.channel_id.to_string(),
            "type": channel.kind,
            "guild_id": channel.guild_id.to_string(),
            "parent_id": channel.parent_id.map(|p| p.to_string()),
            "name": channel.name,
            "topic": channel.topic,
        })
        .to_string();
        tx.prepare_cached(
            "INSERT INTO channels (id, guild_id, parent_id, type, name, topic, raw, updated_at, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'export')
             ON CONFLICT(id) DO NOTHING",
        )?
        .execute(params![
            id(channel.channel_id),
            id(channel.guild_id),
            channel.parent_id.map(id),
            channel.kind,
            channel.name,
            channel.topic,
            channel_raw,
            now()
        ])?;
        let counts = write_messages(&tx, channel.guild_id, batch, false, Origin::Export)?;
        if let Some(last) = batch.iter().map(|m| m.value.id).max() {
            tx.prepare_cached(
                "INSERT INTO checkpoints (channel_id, guild_id, last_message_id, state, detail, loaded_at)
                 SELECT ?1, ?2, ?3, 'imported', NULL, ?4
                 WHERE (SELECT source FROM channels WHERE id = ?1) = 'export'
                 ON CONFLICT(channel_id) DO UPDATE SET
                    last_message_id = excluded.last_message_id, state = 'imported', detail = NULL,
                    loaded_at = excluded.loaded_at
                 WHERE excluded.last_message_id > last_message_id AND state NOT IN ('complete', 'partial')",
            )?
            .execute(params![id(channel.channel_id), id(channel.guild_id), id(last), now()])?;
        }
        crate::failpoint::hit("import-batch");
        tx.commit()?;
        Ok(counts)
    }

    /// A guild's channels known only from export files (no load has listed
    /// them): id and name, for the load's report.
    pub fn export_only_channels(&self, guild: u64) -> Result<Vec<(u64, Option<String>)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id, name FROM channels WHERE guild_id = ?1 AND source = 'export' ORDER BY id")?;
        let rows = stmt
            .query_map([id(guild)], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
