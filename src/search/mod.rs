//! Search: the query path behind `ask` (and the bot's DM `/ask`).
//!
//! A question is answered from each guild's **active** index, as a given
//! viewer, in four steps:
//! 1. **Access** (`access`): the channels and threads the viewer may read now.
//!    The operator reads everything; a user only what Discord's permission
//!    algorithm allows them.
//! 2. **Vector search**: the question embedded with the index's model, nearest
//!    chunks in the guild's collection, with the readable channels as a
//!    payload filter *inside* the search.
//! 3. **Keyword search**: SQLite FTS5 (bm25) over message text, with the same
//!    channels in the SQL query; each matching message stands for the chunk
//!    that holds it.
//! 4. **Fusion**: weighted reciprocal rank fusion,
//!    `score = 1/(60 + rank_vector) + w · 1/(60 + rank_keyword)`, where
//!    `w = c²` if `c ≥ 0.5`, else 0, and `c` is the share of the question's
//!    terms (weighted by their IDF in the archive) that the chunk contains. Plain RRF (Cormack et al. 2009, k = 60)
//!    needs no calibration between cosine and bm25 and rewards chunks both
//!    lists found, but it lets a keyword list that matched only a common word
//!    of a paraphrased question push the right answers out of the top results
//!    (on the retrieval fixture plain RRF found 16/20, vector alone 20/20). The
//!    coverage weight keeps exact matches (error strings, commands, rare
//!    words: c ≈ 1) at full strength and makes matches of a minor part of the
//!    question count for nothing (with any weight, near the top of RRF even a
//!    small one reorders: 1/61 and 1/63 differ by only 0.0005). Across guilds, vector hits are merged by cosine and keyword hits
//!    by bm25 before fusing.
//!
//! Filters are never applied after ranking, so a user gets as many results as
//! exist among what they may read.

pub mod access;
pub mod text;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use access::{AccessError, AccessSource, Readable, Viewer};

use crate::discord::Client;
use crate::embed::{device, Embedder, ModelError, ModelInfo};
use crate::snowflake;
use crate::store::{KeywordOrder, Store, StoreError};
use crate::vector::{Backend, Collection, VectorError};

/// The k of reciprocal rank fusion.
pub const RRF_K: f64 = 60.0;
/// Keyword hits covering less of the question than this do not count in fusion.
pub const MIN_COVERAGE: f64 = 0.5;

/// Which lists answer a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Vector and keyword search, fused.
    #[default]
    Hybrid,
    /// Embedding similarity only.
    Vector,
    /// FTS5 keyword search only.
    Keyword,
}

/// A question.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub guilds: Vec<u64>,
    pub viewer: Viewer,
    pub limit: usize,
    pub mode: Mode,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the question is empty")]
    EmptyQuestion,
    #[error("no guild to search: name one with --guild")]
    NoGuilds,
    #[error("guild {0} is not in the archive: load it first (`discord-indexer load --guild {0}`)")]
    UnknownGuild(u64),
    #[error("guild {0} has no active index: build one with `discord-indexer index --guild {0}`")]
    NoIndex(u64),
    #[error("the active index of guild {guild} ({model}) has no collection in the vector store; rebuild it with `discord-indexer index --guild {guild} --model {model} --rebuild`")]
    MissingCollection { guild: u64, model: String },
    #[error("guild {guild} is searched with model {model}: {source}")]
    Model { guild: u64, model: String, source: ModelError },
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One answer: a chunk of conversation.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub guild_id: u64,
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub channel_id: u64,
    pub channel_name: String,
    #[serde(serialize_with = "snowflake::serialize_opt_id")]
    pub parent_id: Option<u64>,
    pub is_thread: bool,
    /// Every message of the chunk, oldest first.
    #[serde(serialize_with = "serialize_ids")]
    pub message_ids: Vec<u64>,
    /// Link to the chunk's first message.
    pub jump_url: String,
    /// When the chunk's first and last messages were sent (RFC 3339).
    pub start: String,
    pub end: String,
    /// Display names of the authors, in order of first appearance.
    pub authors: Vec<String>,
    /// The fused score (hybrid), cosine similarity (vector) or -bm25 (keyword).
    pub score: f64,
    /// Cosine similarity to the question, when the vector search found it.
    pub vector_score: Option<f32>,
    /// 1-based ranks in the vector and keyword lists, when in them.
    pub vector_rank: Option<usize>,
    pub keyword_rank: Option<usize>,
    /// The chunk's text, trimmed around the lines that best match.
    pub text: String,
    /// The model that indexed it.
    pub model: String,
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub chunk_id: u64,
}

fn serialize_ids<S: serde::Serializer>(ids: &[u64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(u64::to_string))
}

/// Time spent per step, for benchmarks.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub access_ms: f64,
    pub embed_ms: f64,
    pub vector_ms: f64,
    pub keyword_ms: f64,
    pub fuse_ms: f64,
    pub total_ms: f64,
}

/// The answer to a question.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub results: Vec<SearchResult>,
    /// Things the asker should know (a guild left out, private threads unchecked...).
    pub notes: Vec<String>,
    /// Guilds actually searched.
    #[serde(serialize_with = "serialize_ids")]
    pub searched: Vec<u64>,
    /// Searched guilds the viewer is not a member of (each also has one note).
    #[serde(serialize_with = "serialize_ids")]
    pub not_member: Vec<u64>,
    pub timings: Timings,
}

/// Defaults for how searches run.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// How old stored roles, overwrites and memberships may be before they are read again.
    pub permissions_max_age: Duration,
    /// How many results each list contributes to fusion.
    pub candidates: usize,
    /// About how many characters of text each result shows.
    pub snippet_chars: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions { permissions_max_age: Duration::from_secs(600), candidates: 50, snippet_chars: 600 }
    }
}

/// Answers questions; keeps models and collections open between questions
/// (the bot holds one for its lifetime).
pub struct Searcher {
    store: Store,
    backend: Backend,
    models_dir: PathBuf,
    client: Option<Client>,
    options: SearchOptions,
    embedders: Mutex<HashMap<String, Arc<Embedder>>>,
    collections: Mutex<HashMap<(u64, String), Arc<Collection>>>,
    /// Messages in the archive (for IDF), and when it was counted.
    messages: Mutex<Option<(u64, Instant)>>,
}

/// One guild, ready to search.
struct Target {
    guild: u64,
    model: String,
    collection: Arc<Collection>,
    readable: Readable,
}

/// A chunk in one of the ranked lists.
#[derive(Debug, Clone)]
struct Candidate {
    guild: u64,
    model: String,
    chunk: u64,
    vector_score: Option<f32>,
    bm25: Option<f64>,
    /// How much a keyword hit counts in fusion (coverage², see the module doc).
    weight: f64,
    payload: Option<serde_json::Value>,
}

impl Searcher {
    /// `client` is used to refresh permission facts; without it, only stored
    /// (fresh enough) facts are used, and users whose facts are stale see nothing.
    pub fn new(
        store: Store,
        backend: Backend,
        models_dir: PathBuf,
        client: Option<Client>,
        options: SearchOptions,
    ) -> Searcher {
        Searcher {
            store,
            backend,
            models_dir,
            client,
            options,
            embedders: Mutex::default(),
            collections: Mutex::default(),
            messages: Mutex::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn embedder(&self, guild: u64, model: &str) -> Result<Arc<Embedder>, SearchError> {
        self.model(model).await.map_err(|source| SearchError::Model { guild, model: model.to_owned(), source })
    }

    /// A model by name, loaded once and kept (also for indexing in the same process).
    pub async fn model(&self, model: &str) -> Result<Arc<Embedder>, ModelError> {
        if let Some(e) = self.embedders.lock().unwrap().get(model) {
            return Ok(e.clone());
        }
        let info = ModelInfo::find(&self.models_dir, model)?;
        let embedder =
            Arc::new(tokio::task::spawn_blocking(move || Embedder::load(info, device())).await.expect("load task")?);
        self.embedders.lock().unwrap().insert(model.to_owned(), embedder.clone());
        Ok(embedder)
    }

    async fn collection(&self, guild: u64, model: &str) -> Result<Arc<Collection>, SearchError> {
        let key = (guild, model.to_owned());
        if let Some(c) = self.collections.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let c = self
            .backend
            .open_existing(guild, model)
            .await?
            .ok_or_else(|| SearchError::MissingCollection { guild, model: model.to_owned() })?;
        let c = Arc::new(c);
        self.collections.lock().unwrap().insert(key, c.clone());
        Ok(c)
    }

    /// Forgets open collections (after an index was rebuilt or switched).
    pub fn reopen(&self) {
        self.collections.lock().unwrap().clear();
    }

    /// Answers a question.
    pub async fn ask(&self, q: &Query) -> Result<Answer, SearchError> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let question = q.text.trim();
        if question.is_empty() {
            return Err(SearchError::EmptyQuestion);
        }
        if q.guilds.is_empty() {
            return Err(SearchError::NoGuilds);
        }
        let mut guilds = q.guilds.clone();
        guilds.sort_unstable();
        guilds.dedup();

        // Every named guild must be searchable before anything is asked of Discord.
        let mut models = Vec::new();
        for &g in &guilds {
            if !self.store.has_guild(g)? {
                return Err(SearchError::UnknownGuild(g));
            }
            let model = self.store.active_model(g)?.ok_or(SearchError::NoIndex(g))?;
            models.push(model);
        }

        // 1. Access.
        let t = Instant::now();
        let source = AccessSource {
            store: &self.store,
            client: self.client.as_ref(),
            max_age: self.options.permissions_max_age,
        };
        let mut notes = Vec::new();
        let mut not_member = Vec::new();
        let mut targets = Vec::new();
        let mut first_error = None;
        for (&guild, model) in guilds.iter().zip(&models) {
            match source.readable(guild, q.viewer).await {
                Ok(r) => {
                    notes.extend(r.notes);
                    if !r.member {
                        not_member.push(guild);
                    }
                    let collection = self.collection(guild, model).await?;
                    targets.push(Target { guild, model: model.clone(), collection, readable: r.readable });
                }
                Err(e @ AccessError::Undetermined { .. }) => {
                    notes.push(e.to_string());
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if targets.is_empty() {
            if let Some(e) = first_error {
                return Err(e.into());
            }
        }
        timings.access_ms = ms(t);
        let searched: Vec<u64> = targets.iter().map(|t| t.guild).collect();
        let visible: Vec<&Target> =
            targets.iter().filter(|t| !matches!(&t.readable, Readable::Only(c) if c.is_empty())).collect();

        let terms = text::terms(question);
        let depth = self.options.candidates.max(q.limit);
        let mut vector_list: Vec<Candidate> = Vec::new();
        let mut keyword_list: Vec<Candidate> = Vec::new();

        // 2. Vector search, per guild, merged by cosine.
        if q.mode != Mode::Keyword && !visible.is_empty() {
            let mut by_model: HashMap<&str, Vec<f32>> = HashMap::new();
            let t = Instant::now();
            for target in &visible {
                if !by_model.contains_key(target.model.as_str()) {
                    let embedder = self.embedder(target.guild, &target.model).await?;
                    let text = question.to_owned();
                    let v = tokio::task::spawn_blocking(move || embedder.embed(&[text.as_str()], 1))
                        .await
                        .expect("embed task")
                        .map_err(|source| SearchError::Model {
                            guild: target.guild,
                            model: target.model.clone(),
                            source,
                        })?
                        .0
                        .remove(0);
                    by_model.insert(&target.model, v);
                }
            }
            timings.embed_ms = ms(t);
            let t = Instant::now();
            let searches = visible.iter().map(|target| {
                let vector = by_model[target.model.as_str()].clone();
                let channels = match &target.readable {
                    Readable::All => None,
                    Readable::Only(c) => Some(c.clone()),
                };
                async move {
                    let hits = target.collection.search(vector, channels, depth).await?;
                    Ok::<_, SearchError>(hits.into_iter().map(|h| Candidate {
                        guild: target.guild,
                        model: target.model.clone(),
                        chunk: h.id,
                        vector_score: Some(h.score),
                        bm25: None,
                        weight: 1.0,
                        payload: Some(h.payload),
                    }))
                }
            });
            for hits in futures::future::try_join_all(searches).await? {
                vector_list.extend(hits);
            }
            vector_list
                .sort_by(|a, b| b.vector_score.partial_cmp(&a.vector_score).unwrap_or(std::cmp::Ordering::Equal));
            vector_list.truncate(depth);
            timings.vector_ms = ms(t);
        }

        // 3. Keyword search, one query over every guild's readable channels.
        let mut weights = Vec::new();
        if q.mode != Mode::Vector && !visible.is_empty() && !terms.is_empty() {
            let t = Instant::now();
            let (n, dfs) = self.document_frequencies(&terms)?;
            weights = dfs.iter().map(|&(df, _)| text::idf(df, n)).collect();
            // Terms in a large share of all messages cost the most to rank and say
            // the least: leave them out when the question has rarer ones.
            let rare: Vec<text::Term> =
                terms.iter().zip(&dfs).filter(|(_, (_, common))| !common).map(|(t, _)| t.clone()).collect();
            // Only frequent terms: the newest messages that have them all
            // (then any of them), which costs no more than the messages read.
            let plan = if rare.is_empty() {
                vec![
                    (text::fts_query_all(&terms), KeywordOrder::Newest),
                    (text::fts_query(&terms), KeywordOrder::Newest),
                ]
            } else {
                vec![(text::fts_query(&rare), KeywordOrder::Relevance)]
            };
            for (fts, order) in plan {
                if let Some(fts) = fts {
                    keyword_list = self.keyword(&fts, &visible, depth, order).await?;
                }
                if !keyword_list.is_empty() {
                    break;
                }
            }
            timings.keyword_ms = ms(t);
        }

        // 4. Fusion.
        let t = Instant::now();
        if q.mode == Mode::Hybrid && !keyword_list.is_empty() {
            self.weigh(&terms, &weights, &vector_list, &mut keyword_list).await?;
        }
        let ranked = fuse(q.mode, vector_list, keyword_list);
        let mut results = Vec::new();
        let mut missing: HashMap<(u64, String), Vec<u64>> = HashMap::new();
        for (c, _, _, _) in ranked.iter().take(q.limit) {
            if c.payload.is_none() {
                missing.entry((c.guild, c.model.clone())).or_default().push(c.chunk);
            }
        }
        let mut payloads: HashMap<u64, serde_json::Value> = HashMap::new();
        for ((guild, model), ids) in missing {
            let collection = self.collection(guild, &model).await?;
            payloads.extend(collection.payloads(ids).await?);
        }
        for (c, score, vrank, krank) in ranked {
            if results.len() >= q.limit {
                break;
            }
            let Some(payload) = c.payload.as_ref().or_else(|| payloads.get(&c.chunk)) else {
                // In the manifest but not in the collection (an interrupted index run): skip.
                continue;
            };
            results.push(self.result(&c, payload, score, vrank, krank, &terms));
        }
        timings.fuse_ms = ms(t);
        timings.total_ms = ms(started);
        Ok(Answer { results, notes, searched, not_member, timings })
    }

    /// Sets each keyword hit's fusion weight from how much of the question its chunk covers.
    async fn weigh(
        &self,
        terms: &[text::Term],
        weights: &[f64],
        vector: &[Candidate],
        keyword: &mut [Candidate],
    ) -> Result<(), SearchError> {
        let known: HashMap<u64, &serde_json::Value> =
            vector.iter().filter_map(|c| c.payload.as_ref().map(|p| (c.chunk, p))).collect();
        let mut missing: HashMap<(u64, String), Vec<u64>> = HashMap::new();
        for c in keyword.iter().filter(|c| !known.contains_key(&c.chunk)) {
            missing.entry((c.guild, c.model.clone())).or_default().push(c.chunk);
        }
        let mut fetched: HashMap<u64, serde_json::Value> = HashMap::new();
        for ((guild, model), ids) in missing {
            fetched.extend(self.collection(guild, &model).await?.payloads(ids).await?);
        }
        for c in keyword.iter_mut() {
            let payload = known.get(&c.chunk).copied().or_else(|| fetched.get(&c.chunk));
            let text = payload.and_then(|p| p.get("text")).and_then(|t| t.as_str()).unwrap_or_default();
            let covered = text::coverage(text, terms, weights);
            c.weight = if covered >= MIN_COVERAGE { covered * covered } else { 0.0 };
            if c.payload.is_none() {
                c.payload = fetched.remove(&c.chunk);
            }
        }
        Ok(())
    }

    /// The archive's message count, and each term's document frequency with
    /// whether the term is common. Counting stops at the "common" threshold
    /// (0.1% of messages, at least 200, at most 2,000), which bounds the cost
    /// of a frequent term; its IDF is then computed from the threshold.
    fn document_frequencies(&self, terms: &[text::Term]) -> Result<(u64, Vec<(u64, bool)>), SearchError> {
        let n = self.message_count()?;
        let cap = (n / 1000).clamp(200, 2_000);
        let mut out = Vec::with_capacity(terms.len());
        for t in terms {
            let df = self.store.keyword_count(&t.phrase(), cap)?;
            out.push((df, df >= cap));
        }
        Ok((n, out))
    }

    /// Messages in the archive, counted at most every five minutes.
    fn message_count(&self) -> Result<u64, SearchError> {
        let mut cached = self.messages.lock().unwrap();
        match *cached {
            Some((n, at)) if at.elapsed() < Duration::from_secs(300) => Ok(n),
            _ => {
                let n = self.store.message_count()?;
                *cached = Some((n, Instant::now()));
                Ok(n)
            }
        }
    }

    /// The keyword list: best-matching messages, each standing for the chunk
    /// that holds it (first occurrence ranks the chunk).
    async fn keyword(
        &self,
        fts: &str,
        targets: &[&Target],
        depth: usize,
        order: KeywordOrder,
    ) -> Result<Vec<Candidate>, SearchError> {
        let guilds: Vec<u64> = targets.iter().map(|t| t.guild).collect();
        let channels: Option<Vec<u64>> = if targets.iter().all(|t| t.readable == Readable::All) {
            None
        } else {
            // Mixed: a guild searched as operator contributes all its stored channels.
            let mut all = Vec::new();
            for t in targets {
                match &t.readable {
                    Readable::Only(c) => all.extend(c),
                    Readable::All => all.extend(self.store.channel_infos(t.guild)?.into_keys()),
                }
            }
            Some(all)
        };
        let models: HashMap<u64, &str> = targets.iter().map(|t| (t.guild, t.model.as_str())).collect();
        // Several messages of one chunk may match: read deeper than needed.
        let hits = self.store.keyword_search(fts, &guilds, channels.as_deref(), depth * 4, order)?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for h in hits {
            let model = models[&h.guild_id];
            let Some(chunk) = self.store.chunk_of_message(h.guild_id, model, h.channel_id, h.message_id)? else {
                continue;
            };
            if seen.insert(chunk) {
                out.push(Candidate {
                    guild: h.guild_id,
                    model: model.to_owned(),
                    chunk,
                    vector_score: None,
                    bm25: Some(h.bm25),
                    weight: 1.0,
                    payload: None,
                });
                if out.len() >= depth {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn result(
        &self,
        c: &Candidate,
        p: &serde_json::Value,
        score: f64,
        vector_rank: Option<usize>,
        keyword_rank: Option<usize>,
        terms: &[text::Term],
    ) -> SearchResult {
        let u = |k: &str| p.get(k).and_then(serde_json::Value::as_u64);
        let s = |k: &str| p.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        let message_ids: Vec<u64> = p
            .get("message_ids")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default();
        let channel_id = u("channel_id").unwrap_or_default();
        let first = u("first_message_id").or_else(|| message_ids.first().copied()).unwrap_or_default();
        SearchResult {
            guild_id: c.guild,
            channel_id,
            channel_name: s("channel_name"),
            parent_id: u("parent_id"),
            is_thread: p.get("is_thread").and_then(serde_json::Value::as_bool).unwrap_or(false),
            jump_url: format!("https://discord.com/channels/{}/{channel_id}/{first}", c.guild),
            message_ids,
            start: s("start"),
            end: s("end"),
            authors: p
                .get("author_names")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            score,
            vector_score: c.vector_score,
            vector_rank,
            keyword_rank,
            text: text::trim(&s("text"), terms, self.options.snippet_chars),
            model: c.model.clone(),
            chunk_id: c.chunk,
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// A ranked candidate: (candidate, score, vector rank, keyword rank).
type Ranked = (Candidate, f64, Option<usize>, Option<usize>);

/// Ranks candidates, best first.
fn fuse(mode: Mode, vector: Vec<Candidate>, keyword: Vec<Candidate>) -> Vec<Ranked> {
    match mode {
        Mode::Vector => vector
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let s = c.vector_score.unwrap_or_default() as f64;
                (c, s, Some(i + 1), None)
            })
            .collect(),
        Mode::Keyword => keyword
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let s = -c.bm25.unwrap_or_default();
                (c, s, None, Some(i + 1))
            })
            .collect(),
        Mode::Hybrid => {
            let mut fused: HashMap<(u64, u64), Ranked> = HashMap::new();
            for (i, c) in vector.into_iter().enumerate() {
                let rank = i + 1;
                fused.insert((c.guild, c.chunk), (c, 1.0 / (RRF_K + rank as f64), Some(rank), None));
            }
            for (i, c) in keyword.into_iter().enumerate() {
                let rank = i + 1;
                let add = c.weight / (RRF_K + rank as f64);
                fused
                    .entry((c.guild, c.chunk))
                    .and_modify(|e| {
                        e.1 += add;
                        e.3 = Some(rank);
                        e.0.bm25 = c.bm25;
                        e.0.weight = c.weight;
                    })
                    .or_insert((c, add, None, Some(rank)));
            }
            let mut out: Vec<_> = fused.into_values().collect();
            // Ties (same fused score): the better best rank first, then the chunk id for determinism.
            out.sort_by(|a, b| {
                b.1.partial_cmp(&a.1)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| best_rank(a).cmp(&best_rank(b)))
                    .then_with(|| a.0.chunk.cmp(&b.0.chunk))
            });
            out
        }
    }
}

fn best_rank(e: &Ranked) -> usize {
    e.2.unwrap_or(usize::MAX).min(e.3.unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(chunk: u64, v: Option<f32>, b: Option<f64>) -> Candidate {
        Candidate { guild: 1, model: "m".into(), chunk, vector_score: v, bm25: b, weight: 1.0, payload: None }
    }

    #[test]
    fn rrf_rewards_agreement_and_keeps_everything() {
        let vector = vec![cand(1, Some(0.9), None), cand(2, Some(0.8), None), cand(3, Some(0.7), None)];
        let keyword = vec![cand(3, None, Some(-9.0)), cand(4, None, Some(-5.0))];
        let out = fuse(Mode::Hybrid, vector, keyword);
        let order: Vec<u64> = out.iter().map(|e| e.0.chunk).collect();
        // 3 is in both lists (1/63 + 1/61) and beats 1 (1/61 alone).
        assert_eq!(order, vec![3, 1, 2, 4]);
        assert_eq!(out[0].2, Some(3));
        assert_eq!(out[0].3, Some(1));
        assert!((out[0].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        // A keyword-only first hit ties with a vector-only first hit: order is deterministic.
        let out = fuse(Mode::Hybrid, vec![cand(7, Some(0.5), None)], vec![cand(5, None, Some(-1.0))]);
        assert_eq!(out.iter().map(|e| e.0.chunk).collect::<Vec<_>>(), vec![5, 7]);
        // A keyword hit that covers little of the question counts little.
        let mut weak = cand(5, None, Some(-1.0));
        weak.weight = 0.04;
        let vector: Vec<Candidate> = (10..15).map(|i| cand(i, Some(0.5), None)).collect();
        let out = fuse(Mode::Hybrid, vector, vec![weak]);
        assert_eq!(out.last().unwrap().0.chunk, 5);
    }

    #[test]
    fn single_modes_keep_their_own_scores() {
        let out = fuse(Mode::Keyword, vec![cand(1, Some(0.9), None)], vec![cand(2, None, Some(-3.5))]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 3.5);
        let out = fuse(Mode::Vector, vec![cand(1, Some(0.5), None)], vec![cand(2, None, Some(-3.5))]);
        assert_eq!((out[0].0.chunk, out[0].1 as f32), (1, 0.5));
    }
}
