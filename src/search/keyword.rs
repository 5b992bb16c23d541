//! Step 3 of a question: the keyword list. SQLite FTS5 (bm25) over message
//! text and thread titles (a matching title stands for the thread's first
//! message), with the viewer's readable channels in the SQL query; each matching
//! message stands for the chunk of the active index that holds it (its first
//! occurrence ranks the chunk, and is the result's message). A message too
//! long for one chunk is in several (its pieces): the hit carries them all,
//! and the one that holds the question's words is chosen once their texts are
//! read (`Searcher::choose_pieces`). A guild without an index yet (right after
//! `load`) answers keyword questions too: each message is a result of its own.
//!
//! **Order.** FTS5 reads the best matches by bm25 (four times the depth); they
//! are then ranked by how much of the question each holds (the share of its
//! terms, weighted by IDF, as fusion's coverage), bm25 breaking ties. The
//! question is an OR of its terms, and bm25 alone prefers a short message that
//! repeats one rare term over the one message that holds all of them: on real
//! chat (`scripts/eval-retrieval.sh`, komodo-dev) ranking by coverage found
//! the target first for 0.49 of questions instead of 0.31 (top 5: 0.62
//! instead of 0.49; every exact-token question first).
//!
//! The plan bounds the cost on big archives: terms found in a large share of
//! all messages cost the most to rank and say the least, so they are left out
//! when the question has rarer ones. A question of frequent terms only takes
//! the newest messages that have them all (then any of them), which costs no
//! more than the messages read.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::fuse::Candidate;
use super::text::{self, Term};
use super::{Filters, Readable, SearchError, SearchedGuild, Searcher};
use crate::snowflake;
use crate::store::{ChannelInfo, KeywordHit, KeywordOrder, Store, StoreError};
use crate::vector::ChunkPayload;

/// The keyword list and the IDF of each of the question's terms (fusion weighs hits with it).
pub(super) struct KeywordList {
    pub hits: Vec<Candidate>,
    pub idf: Vec<f64>,
}

/// One guild as the keyword search needs it (owned: the search runs on the blocking pool).
struct KeywordScope {
    guild: u64,
    /// The active index's model; None before any index: each message is its own result.
    model: Option<String>,
    readable: Readable,
}

impl Searcher {
    /// The `depth` best keyword hits for `terms` among what the viewer may read.
    pub(super) async fn keyword_list(
        &self,
        terms: &[Term],
        guilds: &[&SearchedGuild],
        filters: &Filters,
        depth: usize,
    ) -> Result<KeywordList, SearchError> {
        let filters = filters.clone();
        let n = self.message_count().await?;
        let terms = terms.to_vec();
        let scope: Vec<KeywordScope> = guilds
            .iter()
            .map(|g| KeywordScope {
                guild: g.guild,
                model: g.index.as_ref().map(|(m, _)| m.clone()),
                readable: g.readable.clone(),
            })
            .collect();
        Ok(self.store.call(move |store| keyword_list(store, &terms, n, &scope, &filters, depth)).await?)
    }

    /// Messages in the archive (for IDF), counted at most every five minutes.
    async fn message_count(&self) -> Result<u64, SearchError> {
        if let Some((n, at)) = *self.messages.lock().unwrap() {
            if at.elapsed() < Duration::from_secs(300) {
                return Ok(n);
            }
        }
        let n = self.store.call(|s| s.message_count()).await?;
        *self.messages.lock().unwrap() = Some((n, Instant::now()));
        Ok(n)
    }
}

fn keyword_list(
    store: &Store,
    terms: &[Term],
    messages: u64,
    scope: &[KeywordScope],
    filters: &Filters,
    depth: usize,
) -> Result<KeywordList, StoreError> {
    let dfs = document_frequencies(store, terms, messages)?;
    let idf = idf_of(&dfs, messages);
    let rare: Vec<Term> = terms.iter().zip(&dfs).filter(|(_, (_, common))| !common).map(|(t, _)| t.clone()).collect();
    let plan = if rare.is_empty() {
        vec![(text::fts_query_all(terms), KeywordOrder::Newest), (text::fts_query(terms), KeywordOrder::Newest)]
    } else {
        vec![(text::fts_query(&rare), KeywordOrder::Relevance)]
    };
    let mut hits = Vec::new();
    for (fts, order) in plan {
        if let Some(fts) = fts {
            hits = keyword_hits(store, &fts, (terms, &idf), scope, filters, depth, order)?;
        }
        if !hits.is_empty() {
            break;
        }
    }
    Ok(KeywordList { hits, idf })
}

/// Each term's IDF in an archive of `messages` messages, as keyword search
/// and fusion weigh it (for tools that measure them).
pub fn term_idf(store: &Store, terms: &[Term], messages: u64) -> Result<Vec<f64>, StoreError> {
    Ok(idf_of(&document_frequencies(store, terms, messages)?, messages))
}

fn idf_of(dfs: &[(u64, bool)], messages: u64) -> Vec<f64> {
    dfs.iter().map(|&(df, _)| text::idf(df, messages)).collect()
}

/// Each term's document frequency, with whether the term is common. Counting
/// stops at the "common" threshold (0.1% of messages, at least 200, at most
/// 2,000), which bounds the cost of a frequent term; its IDF is then computed
/// from the threshold.
fn document_frequencies(store: &Store, terms: &[Term], messages: u64) -> Result<Vec<(u64, bool)>, StoreError> {
    let cap = (messages / 1000).clamp(200, 2_000);
    terms
        .iter()
        .map(|t| {
            let df = store.keyword_count(&t.phrase(), cap)?;
            Ok((df, df >= cap))
        })
        .collect()
}

/// Best-matching messages of one FTS query, each standing for its chunk:
/// those holding more of the question first (`question`: its terms and their
/// IDF), then by bm25 (see the module doc).
fn keyword_hits(
    store: &Store,
    fts: &str,
    question: (&[Term], &[f64]),
    scope: &[KeywordScope],
    filters: &Filters,
    depth: usize,
    order: KeywordOrder,
) -> Result<Vec<Candidate>, StoreError> {
    let ids: Vec<u64> = scope.iter().map(|g| g.guild).collect();
    let channels: Option<Vec<u64>> = if scope.iter().all(|g| g.readable == Readable::All) {
        None
    } else {
        // Mixed: a guild searched as operator contributes all its stored channels.
        let mut all = Vec::new();
        for g in scope {
            match &g.readable {
                Readable::Only(c) => all.extend(c),
                Readable::All => all.extend(store.channel_infos(g.guild)?.into_keys()),
            }
        }
        Some(all)
    };
    let models: HashMap<u64, Option<&str>> = scope.iter().map(|g| (g.guild, g.model.as_deref())).collect();
    let mut channel_infos: HashMap<u64, HashMap<u64, ChannelInfo>> = HashMap::new();
    // Several messages of one chunk may match: read deeper than needed.
    let within = filters.within(channels);
    let mut hits = store.keyword_search(fts, &ids, &within, depth * 4, order)?;
    // A post's title stands for its first message: merged by bm25, so a
    // question that names a title finds the post.
    hits.extend(store.thread_title_search(fts, &ids, &within, depth)?);
    hits.extend(store.attachment_search(fts, &ids, &within, depth)?);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (coverage, h) in rank_by_coverage(hits, question.0, question.1) {
        let (chunk, model, payload, pieces) = match models[&h.guild_id] {
            Some(model) => {
                let chunks = store.chunks_of_message(h.guild_id, model, h.channel_id, h.message_id)?;
                let Some(&first) = chunks.first() else { continue };
                // The pieces of a long message: the first stands for them until one is chosen.
                (first, model, None, if chunks.len() > 1 { chunks } else { Vec::new() })
            }
            None => {
                let infos = match channel_infos.entry(h.guild_id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(store.channel_infos(h.guild_id)?),
                };
                match message_payload(store, &h, infos)? {
                    Some(p) => (h.message_id, "", Some(p), Vec::new()),
                    None => continue,
                }
            }
        };
        if seen.insert(chunk) {
            out.push(Candidate {
                guild: h.guild_id,
                model: model.to_owned(),
                chunk,
                vector_score: None,
                bm25: Some(h.bm25),
                coverage: Some(coverage),
                weight: 1.0,
                payload,
                matched: Some(h.message_id),
                pieces,
                near: Vec::new(),
            });
            if out.len() >= depth {
                break;
            }
        }
    }
    Ok(out)
}

/// Hits with how much of the question (IDF-weighted) their matched text
/// holds, ordered by it, then by bm25, then by message id (deterministic).
fn rank_by_coverage(hits: Vec<KeywordHit>, terms: &[Term], idf: &[f64]) -> Vec<(f64, KeywordHit)> {
    let mut scored: Vec<(f64, KeywordHit)> =
        hits.into_iter().map(|h| (text::coverage(&h.text, terms, idf), h)).collect();
    scored.sort_by(|(ca, a), (cb, b)| {
        cb.total_cmp(ca).then(a.bm25.total_cmp(&b.bm25)).then(a.message_id.cmp(&b.message_id))
    });
    scored
}

/// A matching message as a result of its own (a guild without an index has
/// no chunks): its line as a chunk would hold it.
fn message_payload(
    store: &Store,
    h: &KeywordHit,
    channels: &HashMap<u64, ChannelInfo>,
) -> Result<Option<ChunkPayload>, StoreError> {
    let Some(m) = store.chat_messages(h.channel_id, h.message_id, 1)?.into_iter().find(|m| m.id == h.message_id) else {
        return Ok(None);
    };
    let info = channels.get(&h.channel_id).cloned().unwrap_or_default();
    let time = snowflake::format_time(snowflake::timestamp(m.id));
    Ok(Some(ChunkPayload {
        guild_id: h.guild_id,
        channel_id: h.channel_id,
        channel_name: info.name,
        parent_id: info.parent_id,
        is_thread: crate::discord::model::channel_type::is_thread(info.kind),
        author_ids: vec![m.author_id],
        text: format!("{}: {}", m.author_name, m.content),
        author_names: vec![m.author_name],
        message_ids: vec![m.id],
        first_message_id: m.id,
        last_message_id: m.id,
        piece: 0,
        start: time.clone(),
        end: time,
        part_of: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(message_id: u64, bm25: f64, text: &str) -> KeywordHit {
        KeywordHit { message_id, channel_id: 1, guild_id: 1, bm25, text: text.into() }
    }

    #[test]
    fn hits_holding_more_of_the_question_rank_first() {
        let terms = text::terms("komodod crash backtrace gdb");
        let idf = vec![1.0, 2.0, 2.0, 3.0];
        let hits = vec![
            // bm25's favourite: one term, short.
            hit(1, -9.0, "komodod komodod"),
            hit(2, -4.0, "run komodod under gdb to get a backtrace when it crashes"),
            hit(3, -5.0, "gdb backtrace"),
            hit(4, -6.0, "gdb backtrace please"),
        ];
        let ranked = rank_by_coverage(hits, &terms, &idf);
        let order: Vec<u64> = ranked.iter().map(|(_, h)| h.message_id).collect();
        // All terms; then the two with gdb and backtrace, by bm25; then one term.
        assert_eq!(order, [2, 4, 3, 1]);
        assert!((ranked[0].0 - 1.0).abs() < 1e-9 && (ranked[3].0 - 1.0 / 8.0).abs() < 1e-9);
        assert_eq!(ranked[1].0, ranked[2].0);
    }
}
