//! Search: the query path behind `ask` (and the bot's DM `/ask`).
//!
//! A question is answered from each guild's **active** index, as a given
//! viewer. [`Searcher::ask`] runs four steps, each in its own module:
//! 1. **Access** ([`access`]): the channels and threads the viewer may read
//!    now. The operator reads everything; a user only what Discord's
//!    permission algorithm allows them.
//! 2. **Vector list** (`vector`): nearest chunks in each guild's collection,
//!    with the readable channels as a filter inside the search.
//! 3. **Keyword list** (`keyword`): FTS5 (bm25) over message text, with the
//!    same channels in the SQL query; a message stands for its chunk.
//! 4. **Fusion** (`fuse`): one ranking; the rule, and why, is stated there.
//! 5. **Reranking** (optional, `[search] reranker`): a cross-encoder
//!    ([`crate::embed::rerank`]) reads the question with each of the first
//!    [`SearchOptions::rerank_candidates`] fused chunks and reorders them by
//!    its score. It sees only chunks the steps before let through: nothing
//!    new is read.
//!
//! The asker's own filters ([`Filters`]: channels, authors, a time span;
//! resolved from names and dates in [`filters`]) narrow steps 2 and 3 inside
//! the searches, as the permission filter does.
//!
//! Then the top chunks become [`SearchResult`]s. No message is in two
//! results: the pieces of a message too long for one chunk are each a chunk,
//! and only the best-ranked of them is shown (the limit is filled from the
//! rest). Each result is about one of its messages, the one that best matches
//! ([`SearchResult::message_id`]): it is linked to, its time shown, and its
//! line marked in the text, which is trimmed around it ([`text`]). Filters are
//! never applied after ranking, so a user gets as many results as exist among
//! what they may read.

mod access;
pub mod filters;
mod fuse;
mod keyword;
pub mod text;
mod vector;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use access::{AccessError, AccessSource, GuildReadable, Readable, Viewer};
pub use fuse::{MIN_COVERAGE, RRF_K};
pub use keyword::term_idf;

use crate::discord::Client;
use crate::embed::rerank::{Reranker, RerankerInfo};
use crate::embed::{device, Embedder, ModelError, ModelInfo, Precision};
use crate::snowflake;
use crate::store::{Store, StoreError};
use crate::vector::{Backend, ChunkPayload, Collection, VectorError};
use fuse::{Candidate, Ranked};

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
    pub filters: Filters,
}

/// What the asker narrows a question to. Applied inside both searches, like
/// the permission filter (never by dropping results afterwards).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Only these channels, with their threads and forum posts (empty: all).
    pub channels: Vec<u64>,
    /// Only these authors: messages by one of them (keyword search), chunks
    /// and parts with one of them among their authors (vector search).
    pub authors: Vec<u64>,
    /// Only messages sent at or after this time (a snowflake bound; see
    /// [`snowflake::from_timestamp`]): for vector search, chunks that start then.
    pub after: Option<u64>,
    /// Only messages sent before this time (a snowflake bound).
    pub before: Option<u64>,
}

impl Filters {
    /// These filters with the channels a search may read, as both searches take them.
    fn within(&self, channels: Option<Vec<u64>>) -> crate::vector::SearchFilter {
        crate::vector::SearchFilter {
            channels,
            authors: self.authors.clone(),
            from_id: self.after,
            until_id: self.before,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the question is empty")]
    EmptyQuestion,
    #[error("no guild to search: name one with --guild")]
    NoGuilds,
    #[error("guild {0} is not in the archive: load it first (`discord-indexer load --guild {0}`)")]
    UnknownGuild(u64),
    #[error("guild {0} has no active index: build one with `discord-indexer index --guild {0}` (or search with `--mode keyword`, which needs only `load`)")]
    NoIndex(u64),
    #[error("the active index of guild {guild} ({model}) has no collection in the vector store; rebuild it with `discord-indexer index --guild {guild} --model {model} --rebuild`")]
    MissingCollection { guild: u64, model: String },
    #[error("the index of guild {guild} ({model}) is damaged: {problem}; rerun `discord-indexer index --guild {guild} --model {model}` to re-embed what is missing or corrupted")]
    Damaged { guild: u64, model: String, problem: String },
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error("guild {guild} is searched with model {model}: {source}")]
    Model { guild: u64, model: String, source: ModelError },
    #[error("reranker {name}: {source}")]
    Reranker { name: String, source: ModelError },
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
    /// The message the result is about: the one keyword search matched; else
    /// the line of the asked-for authors (and time span), of the part the
    /// vector search found nearest, that holds most of the question's words.
    /// Its line is marked in `text` (see [`text::MARK`]).
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub message_id: u64,
    /// When that message was sent (RFC 3339).
    pub time: String,
    /// Link to that message (Discord shows the conversation around it).
    pub jump_url: String,
    /// When the chunk's first and last messages were sent (RFC 3339).
    pub start: String,
    pub end: String,
    /// Display names of the authors, in order of first appearance.
    pub authors: Vec<String>,
    /// The fused score (hybrid), cosine similarity (vector), or the share of
    /// the question (IDF-weighted, 0 to 1) the best matching message holds (keyword).
    pub score: f64,
    /// Cosine similarity to the question, when the vector search found it.
    pub vector_score: Option<f32>,
    /// 1-based ranks in the vector and keyword lists, when in them.
    pub vector_rank: Option<usize>,
    pub keyword_rank: Option<usize>,
    /// The cross-encoder's score (a logit: higher is better), when one
    /// reranked the results; they are in its order then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
    /// The chunk's text, trimmed around the message it is about (whose line
    /// is marked when there are several).
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
    pub rerank_ms: f64,
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
    /// The cross-encoder that reorders the first results (a model directory
    /// under the models directory), if any.
    pub reranker: Option<String>,
    /// How many of the first fused results it reads.
    pub rerank_candidates: usize,
    /// The number type it computes in: F32, or int8 (about 1.5 times faster
    /// on a CPU with VNNI; see docs/benchmarks.md).
    pub rerank_precision: Precision,
}

/// How many fused results a reranker reads by default: the dev set's
/// answers are mostly in the first 30. On two cores a MiniLM-sized
/// cross-encoder takes about a second for 30 (p95); 15 in int8 stay under
/// 0.4 s (docs/benchmarks.md#reranking).
pub const RERANK_CANDIDATES: usize = 30;

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            permissions_max_age: Duration::from_secs(600),
            candidates: 50,
            snippet_chars: 600,
            reranker: None,
            rerank_candidates: RERANK_CANDIDATES,
            rerank_precision: Precision::F32,
        }
    }
}

/// The `[search]` section of the config file as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    permissions_max_age_secs: Option<u64>,
    candidates: Option<usize>,
    snippet_chars: Option<usize>,
    reranker: Option<String>,
    rerank_candidates: Option<usize>,
    rerank_precision: Option<String>,
}

impl SearchSection {
    /// The options this section gives, its defaults filled in (at least one
    /// candidate, and 40 characters of text).
    pub fn resolve(self) -> anyhow::Result<SearchOptions> {
        let d = SearchOptions::default();
        let rerank_precision = match self.rerank_precision.as_deref() {
            None => d.rerank_precision,
            Some(p) => match p.parse::<Precision>() {
                Ok(p @ (Precision::F32 | Precision::Int8)) => p,
                _ => anyhow::bail!(
                    "[search] rerank_precision: {p:?} is not one of f32, int8 (the reranker runs on the CPU)"
                ),
            },
        };
        Ok(SearchOptions {
            permissions_max_age: self.permissions_max_age_secs.map_or(d.permissions_max_age, Duration::from_secs),
            candidates: self.candidates.unwrap_or(d.candidates).max(1),
            snippet_chars: self.snippet_chars.unwrap_or(d.snippet_chars).max(40),
            reranker: self.reranker.filter(|r| !r.is_empty()),
            rerank_candidates: self.rerank_candidates.unwrap_or(d.rerank_candidates).max(1),
            rerank_precision,
        })
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
    rerankers: Mutex<HashMap<String, Arc<Reranker>>>,
    collections: Mutex<HashMap<(u64, String), Arc<Collection>>>,
    /// Messages in the archive (for IDF), and when it was counted.
    messages: Mutex<Option<(u64, Instant)>>,
}

/// One guild, ready to search as the viewer.
struct SearchedGuild {
    guild: u64,
    /// The active index: its model and collection. None only for a keyword
    /// search of a guild without one (its results are single messages).
    index: Option<(String, Arc<Collection>)>,
    readable: Readable,
}

/// The access step's outcome.
struct Scope {
    guilds: Vec<SearchedGuild>,
    notes: Vec<String>,
    not_member: Vec<u64>,
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
            rerankers: Mutex::default(),
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
        let embedder = Arc::new(crate::blocking::run(move || Embedder::load(info, device())).await?);
        self.embedders.lock().unwrap().insert(model.to_owned(), embedder.clone());
        Ok(embedder)
    }

    /// The configured reranker, loaded once and kept.
    pub async fn reranker(&self) -> Result<Option<Arc<Reranker>>, SearchError> {
        let Some(name) = self.options.reranker.clone() else { return Ok(None) };
        if let Some(r) = self.rerankers.lock().unwrap().get(&name) {
            return Ok(Some(r.clone()));
        }
        let (dir, precision) = (self.models_dir.clone(), self.options.rerank_precision);
        let loaded = crate::blocking::run({
            let name = name.clone();
            move || Reranker::load(RerankerInfo::find(&dir, &name)?, precision)
        })
        .await
        .map_err(|source| SearchError::Reranker { name: name.clone(), source })?;
        let loaded = Arc::new(loaded);
        self.rerankers.lock().unwrap().insert(name, loaded.clone());
        Ok(Some(loaded))
    }

    async fn collection(&self, guild: u64, model: &str) -> Result<Arc<Collection>, SearchError> {
        // The record names the collection (a rebuild swaps in another).
        let name = model.to_owned();
        let collection_key = self.store.call(move |s| s.collection_key(guild, &name)).await?;
        let key = (guild, collection_key.clone());
        {
            let mut open = self.collections.lock().unwrap();
            if let Some(c) = open.get(&key) {
                return Ok(c.clone());
            }
            // A collection of this guild's model that a rebuild replaced.
            let slots = crate::index::collection_keys(model);
            open.retain(|(g, k), _| *g != guild || !slots.contains(k));
        }
        let c = self
            .backend
            .open_existing(guild, &collection_key)
            .await?
            .ok_or_else(|| SearchError::MissingCollection { guild, model: model.to_owned() })?;
        // Checked once per open: a store that lost points, or holds damaged
        // vectors, would answer from them as if all were well.
        if let Some(problem) = crate::index::check(&self.store, &c, guild, model).await? {
            return Err(SearchError::Damaged { guild, model: model.to_owned(), problem });
        }
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
        let models = self.active_models(&q.guilds, q.mode).await?;
        // Loaded (or refused) before anything else, so a missing reranker is one clear error.
        let reranker = self.reranker().await?;

        let t = Instant::now();
        let Scope { mut guilds, mut notes, not_member } = self.scope(models, q.viewer).await?;
        if !q.filters.channels.is_empty() {
            self.narrow_to_channels(&mut guilds, &q.filters.channels).await?;
        }
        timings.access_ms = ms(t);
        let searched: Vec<u64> = guilds.iter().map(|g| g.guild).collect();
        let visible: Vec<&SearchedGuild> = guilds.iter().filter(|g| !g.readable.is_nothing()).collect();
        let terms = text::terms(question);
        let depth = self.options.candidates.max(q.limit);

        let mut vector_list = Vec::new();
        if q.mode != Mode::Keyword && !visible.is_empty() {
            let mut with_vectors = visible.clone();
            if q.mode == Mode::Hybrid {
                // A hybrid search whose model is not installed here still
                // answers, from the keyword index alone, and says so.
                let missing = self.missing_models(&visible).await;
                for (model, error) in &missing {
                    notes.push(format!("keyword results only for the guilds indexed with {model}: {error}"));
                }
                with_vectors.retain(|g| g.index.as_ref().is_none_or(|(m, _)| !missing.contains_key(m)));
            }
            if !with_vectors.is_empty() {
                vector_list = self.vector_list(question, &with_vectors, &q.filters, depth, &mut timings).await?;
            }
        }
        let mut keyword_list = Vec::new();
        let mut idf = Vec::new();
        if q.mode != Mode::Vector && !visible.is_empty() && !terms.is_empty() {
            let t = Instant::now();
            let list = self.keyword_list(&terms, &visible, &q.filters, depth).await?;
            (keyword_list, idf) = (list.hits, list.idf);
            self.choose_pieces(&mut keyword_list, &terms, &idf, &vector_list).await?;
            timings.keyword_ms = ms(t);
        }

        let t = Instant::now();
        if q.mode == Mode::Hybrid && !keyword_list.is_empty() {
            self.attach_payloads(&mut keyword_list, &vector_list).await?;
            fuse::weigh(&terms, &idf, &mut keyword_list);
        }
        let mut ranked = fuse::fuse(q.mode, vector_list, keyword_list);
        timings.fuse_ms = ms(t);
        if let Some(reranker) = reranker {
            let t = Instant::now();
            let depth = self.options.rerank_candidates.max(q.limit);
            self.rerank(&reranker, question, &mut ranked, depth).await?;
            timings.rerank_ms = ms(t);
        }
        let t = Instant::now();
        let mut ranked = ranked.into_iter();
        let mut results = Vec::new();
        // Messages shown: a message in two chunks (the pieces of a long one) is one result, the better ranked.
        let mut shown: HashSet<(u64, u64)> = HashSet::new();
        while results.len() < q.limit {
            let mut batch: Vec<Ranked> = ranked.by_ref().take(q.limit - results.len()).collect();
            if batch.is_empty() {
                break;
            }
            self.attach_payloads(&mut batch, &[]).await?;
            // A chunk in the manifest but not in the collection (an interrupted index run) is left out.
            batch.retain(|r| r.candidate.payload.is_some());
            let authors = self.line_authors(&batch, &q.filters).await?;
            for r in batch {
                let (guild, p) = (r.candidate.guild, r.candidate.payload.as_ref().expect("kept for its payload"));
                if p.message_ids.iter().any(|&m| shown.contains(&(guild, m))) {
                    continue;
                }
                shown.extend(p.message_ids.iter().map(|&m| (guild, m)));
                results.push(self.result(r, &terms, &q.filters, &authors));
            }
        }
        timings.fuse_ms += ms(t);
        timings.total_ms = ms(started);
        Ok(Answer { results, notes, searched, not_member, timings })
    }

    /// Step 5: the first `depth` of `ranked` reordered by the cross-encoder's
    /// score of (question, chunk text), best first (ties keep the fused
    /// order); the rest follow as they were. A chunk without a point is left
    /// out here, as the results leave it out anyway.
    async fn rerank(
        &self,
        reranker: &Arc<Reranker>,
        question: &str,
        ranked: &mut Vec<Ranked>,
        depth: usize,
    ) -> Result<(), SearchError> {
        let rest = ranked.split_off(depth.min(ranked.len()));
        let mut head = std::mem::take(ranked);
        self.attach_payloads(&mut head, &[]).await?;
        head.retain(|r| r.candidate.payload.is_some());
        let texts: Vec<String> =
            head.iter().map(|r| r.candidate.payload.as_ref().map(|p| p.text.clone()).unwrap_or_default()).collect();
        let (reranker, question) = (reranker.clone(), question.to_owned());
        let name = reranker.info.name.clone();
        let scores = crate::blocking::run(move || {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            reranker.score(&question, &texts)
        })
        .await
        .map_err(|source| SearchError::Reranker { name, source })?;
        let mut scored: Vec<(f32, Ranked)> = scores.into_iter().zip(head).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        *ranked = scored
            .into_iter()
            .map(|(score, mut r)| {
                r.rerank_score = Some(score);
                r
            })
            .chain(rest)
            .collect();
        Ok(())
    }

    /// The models of these guilds' indexes that are not installed (or are
    /// incomplete) in the models directory, with the error that says where
    /// they were looked for. Other load errors are left to the search.
    async fn missing_models(&self, guilds: &[&SearchedGuild]) -> HashMap<String, ModelError> {
        let mut missing = HashMap::new();
        let mut checked = HashSet::new();
        for (model, _) in guilds.iter().filter_map(|g| g.index.as_ref()) {
            if !checked.insert(model.clone()) {
                continue;
            }
            if let Err(e @ (ModelError::NotInstalled { .. } | ModelError::MissingFile { .. })) = self.model(model).await
            {
                missing.insert(model.clone(), e);
            }
        }
        missing
    }

    /// Each named guild (sorted, once) with its active model; every one must
    /// be searchable before anything is asked of Discord. A keyword search
    /// needs no index (the keyword index is written by `load`).
    // A search error is made once per question: its size does not matter.
    #[allow(clippy::result_large_err)]
    async fn active_models(&self, guilds: &[u64], mode: Mode) -> Result<Vec<(u64, Option<String>)>, SearchError> {
        if guilds.is_empty() {
            return Err(SearchError::NoGuilds);
        }
        let mut guilds = guilds.to_vec();
        guilds.sort_unstable();
        guilds.dedup();
        let found = self
            .store
            .call(move |s| {
                guilds
                    .into_iter()
                    .map(|g| Ok((g, s.has_guild(g)?, s.active_model(g)?)))
                    .collect::<Result<Vec<(u64, bool, Option<String>)>, StoreError>>()
            })
            .await?;
        found
            .into_iter()
            .map(|(g, known, model)| match (known, model) {
                (false, _) => Err(SearchError::UnknownGuild(g)),
                (true, None) if mode != Mode::Keyword => Err(SearchError::NoIndex(g)),
                (true, model) => Ok((g, model)),
            })
            .collect()
    }

    /// Step 1: what the viewer may read in each guild, and its collection. A
    /// guild whose permissions cannot be determined is left out with a note
    /// (an error only if that leaves nothing).
    async fn scope(&self, models: Vec<(u64, Option<String>)>, viewer: Viewer) -> Result<Scope, SearchError> {
        let source = AccessSource {
            store: &self.store,
            client: self.client.as_ref(),
            max_age: self.options.permissions_max_age,
        };
        let mut scope = Scope { guilds: Vec::new(), notes: Vec::new(), not_member: Vec::new() };
        let mut first_error = None;
        for (guild, model) in models {
            match source.readable(guild, viewer).await {
                Ok(r) => {
                    scope.notes.extend(r.notes);
                    if !r.member {
                        scope.not_member.push(guild);
                    }
                    let index = match model {
                        Some(model) => Some((model.clone(), self.collection(guild, &model).await?)),
                        None => None,
                    };
                    scope.guilds.push(SearchedGuild { guild, index, readable: r.readable });
                }
                Err(e @ AccessError::Undetermined { .. }) => {
                    scope.notes.push(e.to_string());
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        match first_error {
            Some(e) if scope.guilds.is_empty() => Err(e.into()),
            _ => Ok(scope),
        }
    }

    /// Narrows what each guild's viewer may read to these channels and what
    /// is inside them: threads and forum posts, and for a category its
    /// channels and their threads (a channel of another guild narrows that
    /// guild to nothing).
    async fn narrow_to_channels(&self, guilds: &mut [SearchedGuild], channels: &[u64]) -> Result<(), SearchError> {
        for g in guilds {
            let guild = g.guild;
            let infos = self.store.call(move |s| s.channel_infos(guild)).await?;
            let mut wanted: Vec<u64> = infos
                .iter()
                .filter(|(id, info)| {
                    let parent = info.parent_id;
                    let grandparent = parent.and_then(|p| infos.get(&p)).and_then(|p| p.parent_id);
                    [Some(**id), parent, grandparent].iter().flatten().any(|c| channels.contains(c))
                })
                .map(|(id, _)| *id)
                .collect();
            if let Readable::Only(readable) = &g.readable {
                wanted.retain(|c| readable.contains(c));
            }
            wanted.sort_unstable();
            g.readable = Readable::Only(wanted);
        }
        Ok(())
    }

    /// Gives each candidate without a payload its payload: from `known`
    /// candidates of the same chunk, else from its collection (candidates
    /// whose point is missing keep none).
    async fn attach_payloads(
        &self,
        candidates: &mut [impl AsMut<Candidate>],
        known: &[Candidate],
    ) -> Result<(), SearchError> {
        let known: HashMap<(u64, u64), &ChunkPayload> =
            known.iter().filter_map(|c| Some((c.key(), c.payload.as_ref()?))).collect();
        let mut missing: HashMap<(u64, String), Vec<u64>> = HashMap::new();
        for c in candidates.iter_mut().map(AsMut::as_mut).filter(|c| c.payload.is_none()) {
            match known.get(&c.key()) {
                Some(p) => c.payload = Some((*p).clone()),
                None => missing.entry((c.guild, c.model.clone())).or_default().push(c.chunk),
            }
        }
        let mut fetched: HashMap<(u64, u64), ChunkPayload> = HashMap::new();
        for ((guild, model), ids) in missing {
            let collection = self.collection(guild, &model).await?;
            fetched.extend(collection.payloads(ids).await?.into_iter().map(|(id, p)| ((guild, id), p)));
        }
        for c in candidates.iter_mut().map(AsMut::as_mut).filter(|c| c.payload.is_none()) {
            c.payload = fetched.remove(&c.key());
        }
        Ok(())
    }

    /// Keyword hits in a message too long for one chunk: each becomes the
    /// piece that holds most of the question (IDF-weighted, as coverage; of
    /// equals, one the vector list found, so that fusion joins them, else the
    /// earliest), with its payload. A hit none of whose pieces has a point
    /// keeps none (and is left out, as any chunk without a point is).
    async fn choose_pieces(
        &self,
        hits: &mut [Candidate],
        terms: &[text::Term],
        idf: &[f64],
        vector: &[Candidate],
    ) -> Result<(), SearchError> {
        let mut wanted: HashMap<(u64, String), Vec<u64>> = HashMap::new();
        for c in hits.iter().filter(|c| !c.pieces.is_empty()) {
            wanted.entry((c.guild, c.model.clone())).or_default().extend(&c.pieces);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let mut payloads: HashMap<(u64, u64), ChunkPayload> = HashMap::new();
        for ((guild, model), ids) in wanted {
            let collection = self.collection(guild, &model).await?;
            payloads.extend(collection.payloads(ids).await?.into_iter().map(|(id, p)| ((guild, id), p)));
        }
        let found: HashSet<(u64, u64)> = vector.iter().map(Candidate::key).collect();
        for c in hits.iter_mut().filter(|c| !c.pieces.is_empty()) {
            let guild = c.guild;
            let best = std::mem::take(&mut c.pieces)
                .into_iter()
                .enumerate()
                .filter_map(|(i, id)| payloads.get(&(guild, id)).map(|p| (i, id, p)))
                .max_by(|(i, a, pa), (j, b, pb)| {
                    let covers = |p: &ChunkPayload| text::coverage(&p.text, terms, idf);
                    covers(pa)
                        .total_cmp(&covers(pb))
                        .then(found.contains(&(guild, *a)).cmp(&found.contains(&(guild, *b))))
                        .then(j.cmp(i))
                });
            if let Some((_, id, p)) = best {
                (c.chunk, c.payload) = (id, Some(p.clone()));
            }
        }
        Ok(())
    }

    /// The author of each message of these results that may be the one a
    /// result is about, when the asker filtered by author (otherwise none is
    /// needed): results a keyword hit ranked are about its message.
    async fn line_authors(&self, batch: &[Ranked], filters: &Filters) -> Result<HashMap<u64, u64>, SearchError> {
        if filters.authors.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<u64> = batch
            .iter()
            .filter(|r| r.candidate.matched.is_none())
            .filter_map(|r| r.candidate.payload.as_ref())
            .flat_map(|p| p.message_ids.iter().copied())
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self.store.call(move |s| s.message_authors(&ids)).await?)
    }

    /// A ranked chunk as the asker sees it (it has its payload); `authors`:
    /// see [`Searcher::line_authors`].
    fn result(&self, r: Ranked, terms: &[text::Term], filters: &Filters, authors: &HashMap<u64, u64>) -> SearchResult {
        let mut c = r.candidate;
        let p = c.payload.take().unwrap_or_default();
        let lines: Vec<&str> = p.text.lines().collect();
        // One line per message, as the chunker writes them (else no line can be marked).
        let by_line = lines.len() == p.message_ids.len();
        let focus = focus(&c, &p, by_line.then_some(lines.as_slice()), terms, filters, authors);
        let first =
            if p.first_message_id != 0 { p.first_message_id } else { p.message_ids.first().copied().unwrap_or(0) };
        let message = focus.and_then(|i| p.message_ids.get(i).copied()).unwrap_or(first);
        SearchResult {
            guild_id: c.guild,
            channel_id: p.channel_id,
            channel_name: p.channel_name,
            parent_id: p.parent_id,
            is_thread: p.is_thread,
            message_id: message,
            time: snowflake::format_time(snowflake::timestamp(message)),
            jump_url: format!("https://discord.com/channels/{}/{}/{message}", c.guild, p.channel_id),
            text: text::snippet(&p.text, terms, self.options.snippet_chars, focus.filter(|_| by_line)),
            message_ids: p.message_ids,
            start: p.start,
            end: p.end,
            authors: p.author_names,
            score: r.score,
            vector_score: c.vector_score,
            vector_rank: r.vector_rank,
            keyword_rank: r.keyword_rank,
            rerank_score: r.rerank_score,
            model: c.model,
            chunk_id: c.chunk,
        }
    }
}

/// Which of a chunk's messages a result is about (an index into its
/// `message_ids`; None for a chunk without messages): the message a keyword
/// hit matched; else of its messages by the asked-for authors (`authors`:
/// who wrote each), in the asked-for span, and in the part the vector search
/// found nearest to the question (each narrowing skipped where it would leave
/// none), the line (`lines`, when each message has one) holding most of the
/// question's words, the earliest of equals. Embedding each line to find the
/// nearest would cost a model run per result; the part, found by embedding,
/// already narrows it to a few lines.
fn focus(
    c: &Candidate,
    p: &ChunkPayload,
    lines: Option<&[&str]>,
    terms: &[text::Term],
    filters: &Filters,
    authors: &HashMap<u64, u64>,
) -> Option<usize> {
    let ids = &p.message_ids;
    if let Some(i) = c.matched.and_then(|m| ids.iter().position(|&id| id == m)) {
        return Some(i);
    }
    let mut among: Vec<usize> = (0..ids.len()).collect();
    let mut narrow = |keep: &dyn Fn(u64) -> bool| {
        let kept: Vec<usize> = among.iter().copied().filter(|&i| keep(ids[i])).collect();
        if !kept.is_empty() {
            among = kept;
        }
    };
    if !filters.authors.is_empty() {
        narrow(&|m| authors.get(&m).is_some_and(|a| filters.authors.contains(a)));
    }
    narrow(&|m| filters.after.is_none_or(|a| m >= a) && filters.before.is_none_or(|b| m < b));
    if !c.near.is_empty() {
        narrow(&|m| c.near.contains(&m));
    }
    match lines {
        Some(lines) => text::best_line(lines, terms, &among),
        None => among.first().copied(),
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
