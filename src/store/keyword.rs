//! The keyword index: SQLite FTS5 over message text, kept in step with
//! `messages` in the same transactions (new rows by `write_messages`, edits
//! and deletions by triggers: migrations 003 and 005), and the counts keyword
//! search weighs terms with; and FTS5 over thread and forum post titles
//! (migration 007), kept in step with `channels` by triggers; and FTS5 over
//! attachments (file name, alt text, image text: migration 009), written by
//! stage two.

use rusqlite::params;

use super::{id, Store, StoreError};
use crate::discord::model::message_type;
use crate::vector::SearchFilter;

/// How keyword matches are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordOrder {
    /// The best `limit` by bm25 among all matches.
    Relevance,
    /// The newest `limit` matches, then by bm25 (bounded cost for frequent terms).
    Newest,
}

/// A message the keyword index matched.
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordHit {
    pub message_id: u64,
    pub channel_id: u64,
    pub guild_id: u64,
    /// FTS5's bm25: lower is better (it is negative).
    pub bm25: f64,
    /// The text that matched: the message's, the thread's title, or the
    /// attachment's indexed text (how much of a question it holds ranks it).
    pub text: String,
}

/// Which matched messages (`m`) a keyword search keeps: in the guilds (?2),
/// the filter's channels (?3), authors (?5) and id range (?6 to ?7), and only
/// conversation by people, as the chunker keeps them.
const MESSAGE_RULES: &str = "
    AND m.guild_id IN (SELECT value FROM json_each(?2))
    AND (?3 IS NULL OR m.channel_id IN (SELECT value FROM json_each(?3)))
    AND (?5 IS NULL OR m.author_id IN (SELECT value FROM json_each(?5)))
    AND m.id >= ?6 AND m.id < ?7
    AND m.type IN ({conversation})
    AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.author_id AND u.bot)";

impl Store {
    /// Messages matching an FTS5 query, in these guilds, and only those the
    /// filter lets through: its channels, authors and id range (the filter
    /// is part of the query).
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
        filter: &SearchFilter,
        limit: usize,
        order: KeywordOrder,
    ) -> Result<Vec<KeywordHit>, StoreError> {
        let order_by = match order {
            KeywordOrder::Relevance => "score",
            KeywordOrder::Newest => "messages_fts.rowid DESC",
        };
        let messages = MESSAGE_RULES.replace("{conversation}", &message_type::conversation_sql());
        let sql = format!(
            "SELECT m.id, m.channel_id, m.guild_id, bm25(messages_fts) AS score, m.content
             FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
             WHERE messages_fts MATCH ?1 {messages}
             ORDER BY {order_by} LIMIT ?4"
        );
        let mut hits = self.hits(&sql, fts_query, guilds, filter, limit)?;
        if order == KeywordOrder::Newest {
            hits.sort_by(|a, b| a.bm25.total_cmp(&b.bm25));
        }
        Ok(hits)
    }

    /// How many messages and attachments match an FTS5 query (a term's
    /// document frequency), counting no further than `cap`.
    pub fn keyword_count(&self, fts_query: &str, cap: u64) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM messages_fts WHERE messages_fts MATCH ?1 LIMIT ?2))
                  + (SELECT count(*) FROM (SELECT 1 FROM attachments_fts WHERE attachments_fts MATCH ?1 LIMIT ?2))",
        )?;
        Ok((stmt.query_row(params![fts_query, cap as i64], |r| r.get::<_, i64>(0))? as u64).min(cap))
    }

    /// Messages whose attachments match an FTS5 query (file name, alt text,
    /// text read from the image), under the same rules and filter as
    /// [`Store::keyword_search`]; bm25 is the attachment's, best first (a
    /// message with several matching attachments comes once per attachment).
    pub fn attachment_search(
        &self,
        fts_query: &str,
        guilds: &[u64],
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<KeywordHit>, StoreError> {
        let messages = MESSAGE_RULES.replace("{conversation}", &message_type::conversation_sql());
        let sql = format!(
            "SELECT m.id, m.channel_id, m.guild_id, t.score, t.text
             FROM (SELECT rowid AS attachment, bm25(attachments_fts) AS score, text FROM attachments_fts
                   WHERE attachments_fts MATCH ?1) t
             JOIN attachments a ON a.id = t.attachment
             JOIN messages m ON m.id = a.message_id
             WHERE 1 {messages}
             ORDER BY t.score LIMIT ?4"
        );
        self.hits(&sql, fts_query, guilds, filter, limit)
    }

    /// Threads and forum posts whose title matches an FTS5 query, each as
    /// its first message the filter lets through (a title stands for the
    /// post it opens), in these guilds, best first; bm25 is the title's.
    pub fn thread_title_search(
        &self,
        fts_query: &str,
        guilds: &[u64],
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<KeywordHit>, StoreError> {
        let conversation = message_type::conversation_sql();
        let sql = format!(
            "SELECT m.id, m.channel_id, m.guild_id, t.score, t.name
             FROM (SELECT rowid AS thread, bm25(thread_titles_fts) AS score, name FROM thread_titles_fts
                   WHERE thread_titles_fts MATCH ?1) t
             JOIN channels c ON c.id = t.thread
             JOIN messages m ON m.id = (
                 SELECT min(f.id) FROM messages f
                 WHERE f.channel_id = t.thread
                   AND (?5 IS NULL OR f.author_id IN (SELECT value FROM json_each(?5)))
                   AND f.id >= ?6 AND f.id < ?7
                   AND f.type IN ({conversation})
                   AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = f.author_id AND u.bot))
             WHERE c.guild_id IN (SELECT value FROM json_each(?2))
               AND (?3 IS NULL OR c.id IN (SELECT value FROM json_each(?3)))
             ORDER BY t.score LIMIT ?4"
        );
        self.hits(&sql, fts_query, guilds, filter, limit)
    }

    /// Runs a keyword query whose parameters are, by number: the FTS query
    /// (?1), the guilds (?2), the filter's channels (?3, NULL: any), the limit
    /// (?4), its authors (?5, NULL: any) and its id range (?6 to ?7); its rows
    /// are (message, channel, guild, bm25, matched text).
    fn hits(
        &self,
        sql: &str,
        fts_query: &str,
        guilds: &[u64],
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<KeywordHit>, StoreError> {
        let json = |ids: &[u64]| serde_json::to_string(ids).expect("ids serialize");
        let channels = filter.channels.as_deref().map(json);
        let authors = (!filter.authors.is_empty()).then(|| json(&filter.authors));
        let (from, until) = (filter.from_id.map_or(0, id), filter.until_id.map_or(i64::MAX, id));
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(sql)?;
        let rows =
            stmt.query_map(params![fts_query, json(guilds), channels, limit as i64, authors, from, until], |r| {
                Ok(KeywordHit {
                    message_id: r.get::<_, i64>(0)? as u64,
                    channel_id: r.get::<_, i64>(1)? as u64,
                    guild_id: r.get::<_, i64>(2)? as u64,
                    bm25: r.get(3)?,
                    text: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                })
            })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
