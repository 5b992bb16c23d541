//! Stage two: re-read the archive (never Discord), cut conversations into
//! chunks, embed them and upsert them into the guild's collection for the
//! model, incrementally and resumably.
//!
//! Where things live, one job a file:
//!
//! - `mod.rs` (here): the entry, [`index()`], which takes one guild and model
//!   through a run in order (images, plan, self-check, pipeline, verify,
//!   promote and activate), and the re-exports that make the module's API.
//! - `options.rs`: what a run is asked to do ([`IndexOptions`], the step
//!   sizes by device).
//! - `report.rs`: what it tells its caller: progress ([`IndexEvent`], folded
//!   by [`Tally`]) and the [`IndexSummary`] with its [`Timings`].
//! - `error.rs`: what can stop it ([`IndexError`]).
//! - `images.rs`: stage two's first step, the text of image files (OCR).
//! - `incremental.rs`: what a run has to do: which index it continues or
//!   starts over, from which archive version, and per changed channel which
//!   chunks to embed again, keep or delete (the manifest rules).
//! - `pipeline.rs`: the step pipeline that embeds and stores those chunks
//!   (step sizes, storing points then recording them in the manifest,
//!   progress, counts and timings).
//! - `payload.rs`: what each stored point carries.
//! - `check.rs`: the self-check of a collection against its manifest
//!   ([`check`], [`plausible`]) and the repair of lost or damaged points.
//! - `records.rs`: a guild's index records and their collections
//!   ([`collection_keys`], [`REBUILDING`], [`find_index`],
//!   [`open_collection`], [`activate`]).
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

mod check;
mod error;
mod images;
mod incremental;
mod options;
mod payload;
mod pipeline;
mod records;
mod report;
mod settings;

pub use check::{check, plausible};
pub use error::IndexError;
pub use images::{ImageOptions, ImageSummary};
pub use options::{IndexOptions, DEFAULT_FLUSH_CHUNKS, DEFAULT_GPU_FLUSH_CHUNKS};
pub use pipeline::next_batch;
pub use records::{activate, collection_keys, find_index, open_collection, REBUILDING};
pub use report::{IndexEvent, IndexSummary, Tally, Timings};
pub use settings::{IndexSection, IndexSettings, PromptSettings};

use check::lost_chunks;
use images::read_images;
use incremental::Target;
use pipeline::{Counts, Run, FIRST_BATCH};

use crate::embed::{device_name, Embedder};
use crate::store::{ChannelInfo, IndexState, NewIndex, Store};
use crate::vector::Backend;

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
    rules.prompts = options.prompts.apply(&embedder.info.prompts);
    // The document prompt goes before each text, within the model's limit.
    let prompt_tokens = embedder.count_content_tokens(&rules.prompts.document);
    let room = embedder.info.max_tokens.saturating_sub(embedder.special_tokens() + prompt_tokens);
    if room < 16 {
        return Err(IndexError::PromptTooLong { model: model.clone(), tokens: prompt_tokens });
    }
    rules.max_tokens = rules.max_tokens.min(room);
    let rules_json = serde_json::to_string(&rules).expect("chunking rules serialize");

    // Which index, where, and from which version: see `incremental`.
    let Target { name, key, beside, reset, since, resuming } =
        incremental::target(store, guild, &model, dim, &rules, options.rebuild)?;
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
    let resumed = if resuming { store.manifest_chunks(guild, &name)? } else { 0 };
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
        document_prompt: rules.prompts.document.clone(),
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
