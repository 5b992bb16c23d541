//! Stage two: re-read the archive (never Discord), cut conversations into
//! chunks, embed them and upsert them into the guild's collection for the
//! model, incrementally and resumably.
//!
//! How a rerun knows what to do: every write to the archive's messages
//! carries a growing version (deletions leave versioned tombstones). An index
//! records the version it has fully seen. A run looks only at channels with
//! newer changes, re-chunks each from the start of the indexed chunk that the
//! earliest change falls in (chunking is deterministic from any chunk start),
//! embeds the chunks that are new or whose content changed, deletes the points
//! of chunks that no longer exist, and finally records the new version.
//!
//! Pipelined: chunks are embedded in steps on the blocking pool while the
//! next step is read and chunked, and a step's points are stored while the
//! next one is embedded. Steps are sized by time ([`next_batch`]: the first
//! is 16 chunks, then about three seconds' worth), so a stop loses little
//! and progress moves; while a step embeds, progress is reported twice a
//! second and a stop (Ctrl-C) ends the wait at once.
//!
//! Each chunk is stored as its own point and one point per part (see
//! `chunk`); the manifest counts a chunk's parts, so they are replaced and
//! deleted with it.
//!
//! Self-check ([`check`]): before a run, the collection's point count is
//! compared with the manifest's and a random sample of stored vectors is
//! read back (each must be unit length); a collection that lost points or
//! holds corrupted ones has those chunks taken out of the manifest and their
//! channels re-chunked from there, so the run re-embeds exactly them. After
//! a run the counts must agree, or the index is not marked complete.
//!
//! Rebuilds: `--rebuild` of a complete index builds the new one beside it,
//! recorded as `<model>~rebuilding` in the other of the model's two
//! collections, and swaps it in with one archive transaction when complete
//! (`Store::promote_index`), so search answers from the old one until then.
//!
//! Crash safety: a chunk enters the manifest (`index_chunks`) only after its
//! point is stored and flushed to disk, and leaves it only after its point's
//! deletion is; the version
//! moves only at the end. A killed run, rerun, redoes only unrecorded work and
//! ends with the same point ids and count as an uninterrupted one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

mod images;

use images::read_images;
pub use images::{ImageOptions, ImageSummary};

use crate::chunk::{part_id, Chunk, ChunkRules, Chunker};
use crate::embed::{device_name, Embedder, ModelError};
use crate::snowflake;
use crate::store::{ChannelInfo, ChunkRecord, IndexRecord, IndexState, NewIndex, Store, StoreError};
use crate::vector::{Backend, ChunkPayload, Point, VectorError};

/// What to index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub guild: u64,
    /// Drop the collection and the record first, and build from scratch.
    pub rebuild: bool,
    /// Make this model the guild's active one once the index is complete
    /// (a guild's first complete index becomes active without it).
    pub activate: bool,
    /// Chunking and filters; `max_tokens` is capped at the model's limit.
    pub chunking: ChunkRules,
    /// Texts per forward pass (None: the embedder's default for its device).
    pub batch_size: Option<usize>,
    /// The most chunks embedded and stored per step (one manifest
    /// transaction each). Steps are sized by time below this: see [`next_batch`].
    /// None: [`DEFAULT_FLUSH_CHUNKS`] on a CPU, [`DEFAULT_GPU_FLUSH_CHUNKS`] on a GPU.
    pub flush_chunks: Option<usize>,
    /// Reading text from image files first (see [`images`]).
    pub images: ImageOptions,
}

/// The most chunks per step on a CPU: a few seconds of embedding there.
pub const DEFAULT_FLUSH_CHUNKS: usize = 128;

/// The same on a GPU, which embeds 128 chunks (about 300 texts with their
/// parts) in a pass or two: bigger steps keep its batches full. Still well
/// under a second of embedding per step.
pub const DEFAULT_GPU_FLUSH_CHUNKS: usize = 1024;

impl IndexOptions {
    pub fn new(guild: u64) -> Self {
        IndexOptions {
            guild,
            rebuild: false,
            activate: false,
            chunking: ChunkRules::default(),
            batch_size: None,
            flush_chunks: None,
            images: ImageOptions::default(),
        }
    }
}

/// A stage-two progress event.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum IndexEvent {
    /// About `messages` messages in `channels` changed channels will be read.
    /// `resumed`: chunks an interrupted run had already stored (0 if the
    /// last run finished), which this one keeps.
    Planned { channels: usize, messages: u64, resumed: u64 },
    /// Progress so far: `messages` read; of them, `done` are in chunks
    /// embedded (counting the batch being embedded as far as it got) and
    /// `skipped` in chunks already stored unchanged; `embedded` chunks are
    /// stored (in the vector store and the manifest), `deleted` removed, and
    /// `tokens` embedded in them. Sent at least twice a second while embedding.
    Progress { messages: u64, done: u64, skipped: u64, embedded: u64, deleted: u64, tokens: u64 },
}

/// A run's progress as a display wants it, folded from its events: work
/// is messages to embed, so chunks found unchanged (an interrupted run's,
/// say) leave the total rather than count as speed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Messages planned to be read (approximate: re-chunking starts a little earlier).
    pub planned: u64,
    pub read: u64,
    pub done: u64,
    pub skipped: u64,
    pub embedded: u64,
    pub deleted: u64,
    pub tokens: u64,
    /// Chunks an interrupted run had stored.
    pub resumed: u64,
}

impl Tally {
    pub fn update(&mut self, e: &IndexEvent) {
        match *e {
            IndexEvent::Planned { messages, resumed, .. } => {
                self.planned = messages;
                self.resumed = resumed;
            }
            IndexEvent::Progress { messages, done, skipped, embedded, deleted, tokens } => {
                *self = Tally { read: messages, done, skipped, embedded, deleted, tokens, ..*self };
            }
        }
    }

    /// Messages this run embeds, as far as it can tell now.
    pub fn total(&self) -> u64 {
        self.planned.max(self.read).saturating_sub(self.skipped).max(self.done)
    }
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexSummary {
    #[serde(serialize_with = "snowflake::serialize_id")]
    pub guild_id: u64,
    pub model: String,
    pub backend: &'static str,
    pub collection: String,
    pub device: &'static str,
    /// The encoder's number type (`f32`, or `f16`/`bf16` on a GPU).
    pub precision: &'static str,
    pub dim: usize,
    /// Channels re-read because they changed.
    pub channels: usize,
    /// Messages read from the archive.
    pub messages: u64,
    /// Chunks embedded and upserted in this run.
    pub embedded: u64,
    /// Chunks whose points were deleted in this run.
    pub deleted: u64,
    /// Chunks re-derived but unchanged (not embedded again).
    pub unchanged: u64,
    /// Chunks whose points the collection had lost, re-embedded by this run.
    pub repaired: u64,
    /// Chunks an interrupted run had stored, which this run resumed from.
    pub resumed: u64,
    /// Real (unpadded) tokens embedded.
    pub tokens: u64,
    /// Chunks in the index after the run.
    pub chunks: u64,
    /// Their parts (each a point too): the collection holds `chunks + parts` points.
    pub parts: u64,
    /// Points in the collection after the run.
    pub points: u64,
    /// Vectors covered by the HNSW index.
    pub indexed_vectors: u64,
    pub state: IndexState,
    pub active: bool,
    pub seconds: f64,
    /// Where the run's seconds went.
    pub timings: Timings,
    /// Text read from image files before chunking.
    pub images: ImageSummary,
}

/// Where a run's time went, in seconds. Embedding runs in the background,
/// overlapping the rest (and a step's embedding may start before the last
/// one's ends): `embedding` sums the wall time of the embedding jobs, so it
/// can exceed the run's own time; `waiting` is how long the run stood still
/// until vectors were ready. What `seconds` holds beyond
/// `waiting + storing + finishing` is reading and chunking, deleting chunks
/// that went away, and bookkeeping.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    /// Wall time of the embedding jobs, summed.
    pub embedding: f64,
    /// Time the run waited for vectors.
    pub waiting: f64,
    /// Upserting points and recording them in the manifest.
    pub storing: f64,
    /// The end of the run: the vector store's index build (`optimize`).
    pub finishing: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("guild {0} is not in the archive: load it first (`discord-indexer load --guild {0}`)")]
    UnknownGuild(u64),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the index of guild {guild} with model {model} was built with other chunking settings; rerun with --rebuild"
    )]
    ChunkingChanged { guild: u64, model: String },
    #[error("the index of guild {guild} with model {model} has {found}-dimensional vectors but the model now makes {wanted}; rerun with --rebuild")]
    DimensionChanged { guild: u64, model: String, found: usize, wanted: usize },
    #[error(
        "guild {guild} has no index with model {model}{}; `discord-indexer models` lists the installed models, and `discord-indexer index --guild {guild} --model NAME` builds one's index",
        if has.is_empty() { String::new() } else { format!(" (its indexes: {})", has.join(", ")) }
    )]
    NoSuchIndex { guild: u64, model: String, has: Vec<String> },
    #[error("the {model} index of guild {guild} is not complete yet: `discord-indexer index --guild {guild} --model {model}` finishes it")]
    Incomplete { guild: u64, model: String },
    #[error("interrupted; rerun to continue (nothing is lost)")]
    Interrupted,
    #[error("{0}")]
    Ocr(String),
    #[error("the vector store of guild {guild} with model {model} holds {found} points after the run, but the index records {expected}: it is damaged; rebuild it with `discord-indexer index --guild {guild} --model {model} --rebuild`")]
    Unverified { guild: u64, model: String, found: u64, expected: u64 },
}

/// Messages read from the archive per query.
const READ_PAGE: usize = 2000;

/// The two collections a model's index of a guild alternates between (a
/// rebuild goes into the one not in use).
pub fn collection_keys(model: &str) -> [String; 2] {
    [model.to_owned(), format!("{model}~b")]
}

/// What a rebuild beside a complete index is recorded as until it is swapped
/// in: `<model>~rebuilding` (status lists it, building).
pub const REBUILDING: &str = "~rebuilding";

/// Runs stage two for one guild with one model.
pub async fn index(
    store: &Store,
    backend: &Backend,
    embedder: Arc<Embedder>,
    options: &IndexOptions,
    progress: &(dyn Fn(IndexEvent) + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<IndexSummary, IndexError> {
    let started = Instant::now();
    let guild = options.guild;
    let model = embedder.info.name.clone();
    let dim = embedder.info.dim;
    if !store.call(move |s| s.has_guild(guild)).await? {
        return Err(IndexError::UnknownGuild(guild));
    }
    let mut rules = options.chunking.clone();
    rules.max_tokens = rules.max_tokens.min(embedder.info.max_tokens.saturating_sub(embedder.special_tokens()));
    let rules_json = serde_json::to_string(&rules).expect("chunking rules serialize");

    // A rebuild of a complete index is built beside it, under another name
    // in the archive (`name`) and in the other of its two collections
    // (`key`), and swapped in when complete: search keeps answering from the
    // old one meanwhile, and a stopped rebuild resumes like any run.
    let current = store.index_record(guild, &model)?;
    let beside = options.rebuild && current.as_ref().is_some_and(|r| r.state == IndexState::Complete);
    let (name, key) = match &current {
        Some(r) if beside => {
            let [first, second] = collection_keys(&model);
            let other = if r.key() == first { second } else { first };
            (format!("{model}{REBUILDING}"), other)
        }
        Some(r) => (model.clone(), r.key().to_owned()),
        None => (model.clone(), model.clone()),
    };
    let existing = if beside { store.index_record(guild, &name)?.filter(|r| r.key() == key) } else { current.clone() };
    let mut reset = options.rebuild && !beside;
    match &existing {
        Some(record) if !reset => {
            // Compared as rules, so a record written before a rule existed reads with its default.
            let recorded: Option<ChunkRules> = serde_json::from_str(&record.chunking).ok();
            let (same_dim, same_rules) = (record.dim == dim, recorded.as_ref() == Some(&rules));
            if beside && !(same_dim && same_rules) {
                // An unfinished rebuild with other settings: start it again.
                reset = true;
            } else if !same_dim {
                return Err(IndexError::DimensionChanged { guild, model, found: record.dim, wanted: dim });
            } else if !same_rules {
                return Err(IndexError::ChunkingChanged { guild, model });
            }
        }
        Some(_) => {}
        // No record: any collection left on disk is not ours to trust.
        None => reset = true,
    }
    if reset {
        backend.drop_collection(guild, &key).await?;
    }
    let collection_name = backend.collection_name(guild, &key);
    let collection = backend.open(guild, &key, dim).await?;
    store.begin_index(
        &NewIndex {
            guild,
            model: &name,
            key: &key,
            backend: backend.kind(),
            collection: &collection_name,
            dim,
            chunking: &rules_json,
        },
        reset,
    )?;
    let since = if reset { 0 } else { existing.as_ref().map_or(0, |r| r.version) };
    let resumed = match &existing {
        Some(r) if !reset && r.state == IndexState::Building => store.manifest_chunks(guild, &name)?,
        _ => 0,
    };
    // Image text first: what it changes moves its messages' versions, which
    // this run then sees like any other change.
    let images = read_images(store, guild, &options.images, shutdown).await?;
    if shutdown.is_cancelled() {
        return Err(IndexError::Interrupted);
    }
    let version_now = store.version()?;

    let mut changed = store.call(move |s| s.changed_channels(guild, since)).await?;
    let lost = if reset { Vec::new() } else { lost_chunks(store, guild, &name, &collection).await? };
    for &(channel, first) in &lost {
        match changed.iter_mut().find(|(c, _)| *c == channel) {
            Some(entry) => entry.1 = entry.1.min(first),
            None => changed.push((channel, first)),
        }
    }
    let channels: Arc<HashMap<u64, ChannelInfo>> = Arc::new(store.call(move |s| s.channel_infos(guild)).await?);
    let flush_chunks = options.flush_chunks.unwrap_or(if embedder.device().is_cpu() {
        DEFAULT_FLUSH_CHUNKS
    } else {
        DEFAULT_GPU_FLUSH_CHUNKS
    });
    let mut run = Run {
        store,
        guild,
        model: &name,
        embedder: &embedder,
        collection: &collection,
        channels: &channels,
        options,
        progress,
        shutdown,
        pending: Vec::new(),
        embedding: None,
        counts: Counts::default(),
        batch: FIRST_BATCH.min(flush_chunks).max(1),
        flush_chunks,
    };
    let c = changed.clone();
    let planned = store.call(move |s| s.messages_from(&c)).await?;
    progress(IndexEvent::Planned { channels: changed.len(), messages: planned, resumed });
    for &(channel, first_change) in &changed {
        if shutdown.is_cancelled() {
            return Err(IndexError::Interrupted);
        }
        run.channel(channel, first_change, &rules).await?;
    }
    run.drain().await?;
    let mut counts = run.counts;
    if counts.embedded + counts.deleted > 0 || reset {
        let finishing = Instant::now();
        collection.finish().await?;
        counts.timings.finishing = finishing.elapsed().as_secs_f64();
    }
    let (found, expected) = (collection.count().await?, store.manifest_points(guild, &name)?);
    if found < expected {
        return Err(IndexError::Unverified { guild, model, found, expected });
    }
    let (chunks, parts) = store.complete_index(guild, &name, version_now)?;
    let mut active = store.active_model(guild)?.as_deref() == Some(model.as_str());
    if beside {
        // One transaction swaps the rebuilt index in; then the server's alias
        // follows (when active), and the old collection goes.
        let old = store.promote_index(guild, &model, &name)?;
        if active {
            backend.activate(guild, &key).await?;
        }
        if let Some(old) = old {
            backend.drop_collection(guild, &old).await?;
        }
    }
    // The guild's first complete index is the one search uses, whatever was asked.
    if !active && (options.activate || store.active_model(guild)?.is_none()) {
        activate(store, backend, guild, &model).await?;
        active = true;
    }
    Ok(IndexSummary {
        guild_id: guild,
        model: model.clone(),
        backend: backend.kind(),
        collection: collection_name,
        device: device_name(embedder.device()),
        precision: embedder.precision().name(),
        dim,
        channels: changed.len(),
        messages: counts.messages,
        embedded: counts.embedded,
        deleted: counts.deleted,
        unchanged: counts.unchanged,
        repaired: lost.len() as u64,
        resumed,
        tokens: counts.tokens,
        chunks,
        parts,
        points: collection.count().await?,
        indexed_vectors: collection.indexed_vectors().await?,
        state: IndexState::Complete,
        active,
        seconds: started.elapsed().as_secs_f64(),
        timings: counts.timings,
        images,
    })
}

/// Chunks whose vectors are read back at each open to check the store.
const SAMPLE: usize = 16;

/// Whether a stored vector is one an embedding can be: every embedding is
/// normalized (and the store normalizes for cosine), so a vector of another
/// length, or not finite, was damaged on disk.
pub fn plausible(v: &[f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().all(|x| x.is_finite()) && (norm - 1.0).abs() < 0.01
}

/// A cheap check of a collection against its index, reading what a search
/// reads: the point count against the manifest's, one nearest-neighbour
/// search (stored vectors, and the payload of its hit), and a random sample
/// of stored vectors and payloads. `None` when all hold; else what is wrong,
/// in words: damage a plain run repairs (lost points, damaged vectors).
/// Damage it cannot repair (files or payloads the engine cannot read) is an
/// error that names the rebuild ([`VectorError::Damaged`]).
pub async fn check(
    store: &Store,
    collection: &crate::vector::Collection,
    guild: u64,
    name: &str,
) -> Result<Option<String>, IndexError> {
    let (found, expected) = (collection.count().await?, store.manifest_points(guild, name)?);
    if found > 0 {
        let mut unit = vec![0.0; collection.dim()];
        unit[0] = 1.0;
        collection.search(unit, Default::default(), 1).await?;
    }
    let sample = store.manifest_sample(guild, name, SAMPLE)?;
    collection.payloads(sample.clone()).await?;
    if found < expected {
        return Ok(Some(format!("the vector store holds {found} of the {expected} points the index records")));
    }
    let vectors = collection.vectors(sample.clone()).await?;
    let bad = sample.len() - vectors.iter().filter(|(_, v)| plausible(v)).count();
    Ok((bad > 0).then(|| format!("{bad} of {} sampled vectors are missing or corrupted", sample.len())))
}

/// The chunks whose points the collection has lost or holds damaged, as
/// (channel, first message), after taking them out of the manifest (so a
/// run re-embeds them). First [`check`], the very check `status` and `ask`
/// make (so a store they call damaged is never called sound here); cheap
/// when all is well. When it finds a problem, every point is read back, its
/// vector and its payload. Damage a run cannot repair (a payload or file the
/// engine cannot read) is an error that names the rebuild, before anything
/// is written. (Not every point on every run: a large archive's periodic
/// catch-up would read millions of points to store a few.)
async fn lost_chunks(
    store: &Store,
    guild: u64,
    model: &str,
    collection: &crate::vector::Collection,
) -> Result<Vec<(u64, u64)>, IndexError> {
    let Some(problem) = check(store, collection, guild, model).await? else {
        return Ok(Vec::new());
    };
    let manifest = store.manifest(guild, model)?;
    let mut lost: Vec<&ChunkRecord> = Vec::new();
    for batch in manifest.chunks(256) {
        let ids: Vec<u64> = batch
            .iter()
            .flat_map(|c| std::iter::once(c.chunk_id).chain((0..c.parts).map(|i| part_id(c.chunk_id, i))))
            .collect();
        collection.payloads(ids.clone()).await?;
        let sound: HashSet<u64> =
            collection.vectors(ids).await?.into_iter().filter(|(_, v)| plausible(v)).map(|(id, _)| id).collect();
        lost.extend(batch.iter().filter(|c| {
            !sound.contains(&c.chunk_id) || (0..c.parts).any(|i| !sound.contains(&part_id(c.chunk_id, i)))
        }));
    }
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    tracing::warn!(
        "the vector store of guild {guild} with model {model} is damaged ({}): re-embedding the {} chunks whose points \
         are missing or corrupted",
        problem,
        lost.len()
    );
    let ids: Vec<u64> = lost.iter().map(|c| c.chunk_id).collect();
    let model_name = model.to_owned();
    store.call(move |s| s.forget_chunks(guild, &model_name, &ids)).await?;
    Ok(lost.iter().map(|c| (c.channel_id, c.first_message_id)).collect())
}

/// Makes a guild's complete index for `model` the one search uses: the
/// server's alias first (a no-op for the embedded store), then the archive's
/// record in one statement. Every switch (`index --activate`, `activate`, the
/// bot's `/reindex`) comes through here.
pub async fn activate(store: &Store, backend: &Backend, guild: u64, model: &str) -> Result<IndexRecord, IndexError> {
    let record = find_index(store, guild, model)?;
    if record.state != IndexState::Complete {
        return Err(IndexError::Incomplete { guild, model: record.model });
    }
    backend.activate(guild, record.key()).await?;
    store.activate_index(guild, &record.model)?;
    Ok(record)
}

/// Opens the collection that holds a guild's index for `model` (after a
/// rebuild it is not the one named after the model); `None` without one.
pub async fn open_collection(
    store: &Store,
    backend: &Backend,
    guild: u64,
    model: &str,
) -> Result<Option<crate::vector::Collection>, IndexError> {
    Ok(backend.open_existing(guild, &store.collection_key(guild, model)?).await?)
}

/// A guild's index by model name, the case of the name aside when only one
/// index fits; else an error that says what the guild has.
pub fn find_index(store: &Store, guild: u64, model: &str) -> Result<IndexRecord, IndexError> {
    if !store.has_guild(guild)? {
        return Err(IndexError::UnknownGuild(guild));
    }
    let mut records = store.index_records(Some(guild))?;
    if let Some(i) = records.iter().position(|r| r.model == model) {
        return Ok(records.swap_remove(i));
    }
    let same: Vec<usize> = (0..records.len()).filter(|&i| records[i].model.eq_ignore_ascii_case(model)).collect();
    if let [only] = same[..] {
        return Ok(records.swap_remove(only));
    }
    let has = records.into_iter().map(|r| r.model).collect();
    Err(IndexError::NoSuchIndex { guild, model: model.to_owned(), has })
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    messages: u64,
    /// Messages in chunks embedded and stored by this run.
    done: u64,
    /// Messages in chunks found stored and unchanged.
    skipped: u64,
    embedded: u64,
    deleted: u64,
    unchanged: u64,
    tokens: u64,
    timings: Timings,
}

struct Run<'a> {
    store: &'a Store,
    guild: u64,
    model: &'a str,
    embedder: &'a Arc<Embedder>,
    collection: &'a crate::vector::Collection,
    channels: &'a Arc<HashMap<u64, ChannelInfo>>,
    options: &'a IndexOptions,
    progress: &'a (dyn Fn(IndexEvent) + Send + Sync),
    shutdown: &'a CancellationToken,
    /// Chunks waiting to be embedded, with the parts their stored version has.
    pending: Vec<(Chunk, u32)>,
    /// The batch being embedded now, to store when it is done.
    embedding: Option<(Flight, crate::blocking::Pending<Result<Embedded, ModelError>>)>,
    counts: Counts,
    /// Chunks per step now (see [`next_batch`]).
    batch: usize,
    /// The most chunks per step.
    flush_chunks: usize,
}

/// Chunks in the first step of a run: small, so that a run stopped early
/// keeps what it embedded, and so that the next step's size is measured.
const FIRST_BATCH: usize = 16;
/// What one step should take to embed: a stop or crash loses at most the
/// step stored next and the one being embedded, so about twice this.
const STEP_SECONDS: f64 = 3.0;

/// The next step's size from the last one's: as many chunks as embed in
/// about [`STEP_SECONDS`] at the pace just measured, growing at most
/// fourfold a step, between 8 and `max` chunks.
pub fn next_batch(chunks: usize, seconds: f64, max: usize) -> usize {
    let per_second = chunks as f64 / seconds.max(1e-3);
    let wanted = (per_second * STEP_SECONDS) as usize;
    wanted.min(chunks.max(1) * 4).clamp(8.min(max), max.max(1))
}

/// How far the batch being embedded has got, for progress.
struct Flight {
    /// Messages its chunks hold.
    messages: u64,
    texts: usize,
    /// Texts embedded so far (by the embedding thread).
    done: Arc<std::sync::atomic::AtomicUsize>,
}

impl Flight {
    fn messages_done(&self) -> u64 {
        let done = self.done.load(std::sync::atomic::Ordering::Relaxed).min(self.texts);
        self.messages * done as u64 / self.texts.max(1) as u64
    }
}

/// How often progress is reported while a batch is being embedded.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A batch of chunks (with their stored versions' parts), the vectors of
/// their texts and then of their parts' texts, in order, the tokens it took
/// and the seconds.
type Embedded = (Vec<(Chunk, u32)>, Vec<Vec<f32>>, usize, f64);

impl Run<'_> {
    /// Re-chunks one channel from the chunk its first change falls in.
    async fn channel(&mut self, channel: u64, first_change: u64, rules: &ChunkRules) -> Result<(), IndexError> {
        let (guild, model) = (self.guild, self.model.to_owned());
        let (start, known) = self
            .store
            .call(move |s| {
                let start = s.chunk_start_before(guild, &model, channel, first_change)?.unwrap_or(0);
                Ok((start, s.chunks_from(guild, &model, channel, start)?))
            })
            .await?;
        let mut seen: HashSet<u64> = HashSet::new();
        let embedder = self.embedder.clone();
        let count = move |text: &str| embedder.count_content_tokens(text);
        let quote_store = self.store.clone();
        let quote = move |id: u64| quote_store.quote(id, channel).ok().flatten();
        // Threads and forum posts: each chunk leads with the title.
        let title = self
            .channels
            .get(&channel)
            .filter(|info| crate::discord::model::channel_type::is_thread(info.kind))
            .map(|info| info.name.clone());
        let mut chunker = Chunker::new(rules, &count, &quote).titled(title.as_deref());
        let mut from = start;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(IndexError::Interrupted);
            }
            let page = self.store.call(move |s| s.chat_messages(channel, from, READ_PAGE)).await?;
            let done = page.len() < READ_PAGE;
            if let Some(last) = page.last() {
                from = last.id + 1;
            }
            self.counts.messages += page.len() as u64;
            let mut closed = Vec::new();
            for m in page {
                closed.extend(chunker.push(m));
            }
            if done {
                closed.extend(
                    std::mem::replace(&mut chunker, Chunker::new(rules, &count, &quote).titled(title.as_deref()))
                        .finish(),
                );
            }
            for chunk in closed {
                seen.insert(chunk.id);
                match known.get(&chunk.id) {
                    Some(&(hash, _)) if hash == chunk.hash => {
                        self.counts.unchanged += 1;
                        self.counts.skipped += chunk.message_ids.len() as u64;
                    }
                    stored => {
                        let stored_parts = stored.map_or(0, |&(_, parts)| parts);
                        self.pending.push((chunk, stored_parts));
                    }
                }
                // Flushed as steps fill, not once a page: progress and
                // Ctrl-C are answered within a step's time.
                if self.pending.len() >= self.batch {
                    self.flush().await?;
                }
            }
            self.report();
            if done {
                break;
            }
        }
        // Chunks that no longer exist: delete their points, then forget them.
        let gone: Vec<u64> = known.keys().filter(|id| !seen.contains(id)).copied().collect();
        if !gone.is_empty() {
            // A pending upsert of a gone id cannot exist (ids are unique per start), but
            // keep order simple: store what is pending first.
            self.drain().await?;
            let points =
                gone.iter().flat_map(|&c| std::iter::once(c).chain((0..known[&c].1).map(move |i| part_id(c, i))));
            self.collection.delete(points.collect()).await?;
            self.collection.persist().await?;
            let (guild, model) = (self.guild, self.model.to_owned());
            let n = gone.len() as u64;
            self.store.call(move |s| s.forget_chunks(guild, &model, &gone)).await?;
            self.counts.deleted += n;
            self.report();
        }
        Ok(())
    }

    /// Starts embedding the pending chunks, and stores the batch embedded
    /// before (so storing one batch overlaps embedding the next, and both
    /// overlap reading and chunking).
    async fn flush(&mut self) -> Result<(), IndexError> {
        let previous = self.embedding.take();
        if !self.pending.is_empty() {
            let chunks = std::mem::take(&mut self.pending);
            let embedder = self.embedder.clone();
            let batch = self.options.batch_size.unwrap_or_else(|| embedder.default_batch());
            let flight = Flight {
                messages: chunks.iter().map(|(c, _)| c.message_ids.len() as u64).sum(),
                texts: chunks.iter().map(|(c, _)| 1 + c.parts.len()).sum(),
                done: Default::default(),
            };
            let done = flight.done.clone();
            let pending = crate::blocking::spawn(move || {
                let started = Instant::now();
                let texts: Vec<&str> = chunks
                    .iter()
                    .map(|(c, _)| c.text.as_str())
                    .chain(chunks.iter().flat_map(|(c, _)| c.parts.iter().map(|p| p.text.as_str())))
                    .collect();
                let (vectors, tokens) = embedder.embed_counted(&texts, batch, &done)?;
                Ok((chunks, vectors, tokens, started.elapsed().as_secs_f64()))
            });
            self.embedding = Some((flight, pending));
        }
        if let Some(previous) = previous {
            let embedded = self.wait(previous).await?;
            self.save(embedded).await?;
        }
        Ok(())
    }

    /// Embeds and stores everything pending.
    async fn drain(&mut self) -> Result<(), IndexError> {
        self.flush().await?;
        if let Some(last) = self.embedding.take() {
            let embedded = self.wait(last).await?;
            self.save(embedded).await?;
        }
        Ok(())
    }

    /// Waits for a batch's vectors, reporting progress meanwhile; a stop
    /// ends the wait at once (the batch is not stored, so nothing is half
    /// written: a rerun embeds it again).
    async fn wait(
        &mut self,
        (flight, pending): (Flight, crate::blocking::Pending<Result<Embedded, ModelError>>),
    ) -> Result<Embedded, IndexError> {
        let started = Instant::now();
        let embedded = self.wait_for(flight, pending).await?;
        self.counts.timings.waiting += started.elapsed().as_secs_f64();
        self.counts.timings.embedding += embedded.3;
        Ok(embedded)
    }

    async fn wait_for(
        &self,
        flight: Flight,
        pending: crate::blocking::Pending<Result<Embedded, ModelError>>,
    ) -> Result<Embedded, IndexError> {
        let join = pending.join();
        tokio::pin!(join);
        let mut ticks = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                embedded = &mut join => return Ok(embedded?),
                _ = self.shutdown.cancelled() => return Err(IndexError::Interrupted),
                _ = ticks.tick() => self.report_with(Some(&flight), self.embedding.as_ref().map(|(f, _)| f)),
            }
        }
    }

    /// Stores a batch's points (each chunk's and its parts'), deletes the
    /// parts that replaced chunks no longer have, then records the chunks in
    /// the manifest.
    async fn save(&mut self, embedded: Embedded) -> Result<(), IndexError> {
        let started = Instant::now();
        self.store_batch(embedded).await?;
        self.counts.timings.storing += started.elapsed().as_secs_f64();
        Ok(())
    }

    async fn store_batch(&mut self, (chunks, vectors, tokens, seconds): Embedded) -> Result<(), IndexError> {
        self.batch = next_batch(chunks.len(), seconds, self.flush_chunks);
        let mut vectors = vectors.into_iter();
        let mut points: Vec<Point> = Vec::with_capacity(vectors.len());
        for ((c, _), v) in chunks.iter().zip(vectors.by_ref()) {
            points.push(Point { id: c.id, vector: v, payload: self.payload(c) });
        }
        for (c, _) in &chunks {
            for (i, (part, v)) in c.parts.iter().zip(vectors.by_ref()).enumerate() {
                let payload = self.part_payload(c, part);
                points.push(Point { id: part_id(c.id, i as u32), vector: v, payload });
            }
        }
        self.collection.upsert(points).await?;
        crate::failpoint::hit("index-after-upsert");
        let stale: Vec<u64> =
            chunks.iter().flat_map(|(c, stored)| (c.parts.len() as u32..*stored).map(|i| part_id(c.id, i))).collect();
        if !stale.is_empty() {
            self.collection.delete(stale).await?;
        }
        self.collection.persist().await?;
        let records: Vec<ChunkRecord> = chunks
            .iter()
            .map(|(c, _)| ChunkRecord {
                chunk_id: c.id,
                channel_id: c.channel_id,
                first_message_id: c.first_message_id(),
                last_message_id: c.last_message_id(),
                hash: c.hash,
                parts: c.parts.len() as u32,
            })
            .collect();
        let (guild, model) = (self.guild, self.model.to_owned());
        self.store.call(move |s| s.record_chunks(guild, &model, &records)).await?;
        crate::failpoint::hit("index-after-flush");
        self.counts.embedded += chunks.len() as u64;
        self.counts.done += chunks.iter().map(|(c, _)| c.message_ids.len() as u64).sum::<u64>();
        self.counts.tokens += tokens as u64;
        self.report();
        Ok(())
    }

    fn report(&self) {
        self.report_with(self.embedding.as_ref().map(|(f, _)| f), None);
    }

    /// Reports progress, counting the batches being embedded as far as they got.
    fn report_with(&self, a: Option<&Flight>, b: Option<&Flight>) {
        let c = &self.counts;
        let flying: u64 = a.iter().chain(b.iter()).map(|f| f.messages_done()).sum();
        (self.progress)(IndexEvent::Progress {
            messages: c.messages,
            done: c.done + flying,
            skipped: c.skipped,
            embedded: c.embedded,
            deleted: c.deleted,
            tokens: c.tokens,
        });
    }

    fn payload(&self, c: &Chunk) -> ChunkPayload {
        ChunkPayload { text: c.text.clone(), ..self.payload_without_text(c) }
    }

    /// A chunk's payload but its text (which only the chunk's own point carries).
    fn payload_without_text(&self, c: &Chunk) -> ChunkPayload {
        let info = self.channels.get(&c.channel_id).cloned().unwrap_or_default();
        let time = |id: u64| snowflake::format_time(snowflake::timestamp(id));
        ChunkPayload {
            guild_id: self.guild,
            channel_id: c.channel_id,
            channel_name: info.name,
            parent_id: info.parent_id,
            is_thread: crate::discord::model::channel_type::is_thread(info.kind),
            author_ids: c.author_ids.clone(),
            author_names: c.author_names.clone(),
            message_ids: c.message_ids.clone(),
            first_message_id: c.first_message_id(),
            last_message_id: c.last_message_id(),
            piece: c.piece,
            start: time(c.first_message_id()),
            end: time(c.last_message_id()),
            text: String::new(),
            part_of: 0,
        }
    }

    /// A part's point carries what searches filter on, and its chunk's id
    /// (whose payload holds the text); not the text again.
    fn part_payload(&self, c: &Chunk, part: &crate::chunk::Part) -> ChunkPayload {
        let first = part.message_ids[0];
        let last = *part.message_ids.last().expect("a part has messages");
        let chunk = self.payload_without_text(c);
        ChunkPayload {
            author_ids: part.author_ids.clone(),
            author_names: Vec::new(),
            message_ids: part.message_ids.clone(),
            first_message_id: first,
            last_message_id: last,
            start: snowflake::format_time(snowflake::timestamp(first)),
            end: snowflake::format_time(snowflake::timestamp(last)),
            part_of: c.id,
            ..chunk
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_batch;

    #[test]
    fn steps_are_sized_to_take_a_few_seconds() {
        // 16 chunks in 0.4 s: 40/s, 120 in three seconds.
        assert_eq!(next_batch(16, 0.4, 128), 64, "growing at most fourfold a step");
        assert_eq!(next_batch(64, 1.6, 128), 120);
        assert_eq!(next_batch(128, 0.1, 128), 128, "never past the most");
        // A slow model: 16 chunks in 12 s.
        assert_eq!(next_batch(16, 12.0, 128), 8, "never below eight");
        assert_eq!(next_batch(3, 0.0, 4), 4);
        assert_eq!(next_batch(0, 0.0, 1), 1);
    }
}
