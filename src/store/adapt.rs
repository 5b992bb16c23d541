//! The conversation rows model adaptation learns from (see [`crate::adapt`]).

use rusqlite::params;

use super::{id, Store, StoreError};

/// A message, as adaptation pairs them.
#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub id: u64,
    pub channel_id: u64,
    pub author_id: u64,
    pub content: String,
    pub reply_to: Option<u64>,
}

impl Store {
    /// A guild's chat messages with text (ordinary messages and replies, no
    /// bots, no system messages), by channel, oldest first.
    pub fn conversation_rows(&self, guild: u64) -> Result<Vec<ConversationRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT m.id, m.channel_id, coalesce(m.author_id, 0), m.content, m.reply_to_id
             FROM messages m LEFT JOIN users u ON u.id = m.author_id
             WHERE m.guild_id = ?1 AND m.type IN (0, 19) AND length(trim(coalesce(m.content, ''))) > 0
               AND coalesce(u.bot, 0) = 0
             ORDER BY m.channel_id, m.id",
        )?;
        let rows = stmt.query_map(params![id(guild)], |r| {
            Ok(ConversationRow {
                id: r.get::<_, i64>(0)? as u64,
                channel_id: r.get::<_, i64>(1)? as u64,
                author_id: r.get::<_, i64>(2)? as u64,
                content: r.get(3)?,
                reply_to: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
