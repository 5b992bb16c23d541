//! The step pipeline a run drives ([`Run`]): chunks wait in steps, each
//! step is embedded on the blocking pool, then its points are stored and its
//! chunks recorded in the manifest; with the step sizes ([`next_batch`]),
//! progress reporting and the run's counts and timings.
//!
//! Pipelined: chunks are embedded in steps on the blocking pool while the
//! next step is read and chunked, and a step's points are stored while the
//! next one is embedded. Steps are sized by time ([`next_batch`]: the first
//! is 16 chunks, then about three seconds' worth), so a stop loses little
//! and progress moves; while a step embeds, progress is reported twice a
//! second and a stop (Ctrl-C) ends the wait at once.
//!
//! Reading and chunking the changed channels, which fills the steps, is
//! `incremental`'s; what each point carries, `payload`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{IndexError, IndexEvent, IndexOptions, Timings};
use crate::chunk::{part_id, Chunk};
use crate::embed::{Embedder, ModelError};
use crate::store::{ChannelInfo, ChunkRecord, Store};
use crate::vector::Point;

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub(super) messages: u64,
    /// Messages in chunks embedded and stored by this run.
    pub(super) done: u64,
    /// Messages in chunks found stored and unchanged.
    pub(super) skipped: u64,
    pub(super) embedded: u64,
    pub(super) deleted: u64,
    pub(super) unchanged: u64,
    pub(super) tokens: u64,
    pub(super) timings: Timings,
}

/// One run's pipeline: the chunks waiting for a step, the step being
/// embedded, and what the run has done so far.
pub(super) struct Run<'a> {
    pub(super) store: &'a Store,
    pub(super) guild: u64,
    pub(super) model: &'a str,
    pub(super) embedder: &'a Arc<Embedder>,
    pub(super) collection: &'a crate::vector::Collection,
    pub(super) channels: &'a Arc<HashMap<u64, ChannelInfo>>,
    pub(super) options: &'a IndexOptions,
    pub(super) progress: &'a (dyn Fn(IndexEvent) + Send + Sync),
    pub(super) shutdown: &'a CancellationToken,
    /// Chunks waiting to be embedded, with the parts their stored version has.
    pub(super) pending: Vec<(Chunk, u32)>,
    /// The batch being embedded now, to store when it is done.
    pub(super) embedding: Option<(Flight, crate::blocking::Pending<Result<Embedded, ModelError>>)>,
    pub(super) counts: Counts,
    /// Chunks per step now (see [`next_batch`]).
    pub(super) batch: usize,
    /// The most chunks per step.
    pub(super) flush_chunks: usize,
    /// Put before each text embedded (the index's document prompt).
    pub(super) document_prompt: String,
}

/// Chunks in the first step of a run: small, so that a run stopped early
/// keeps what it embedded, and so that the next step's size is measured.
pub(super) const FIRST_BATCH: usize = 16;
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
pub(super) struct Flight {
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
pub(super) type Embedded = (Vec<(Chunk, u32)>, Vec<Vec<f32>>, usize, f64);

impl Run<'_> {
    /// Starts embedding the pending chunks, and stores the batch embedded
    /// before (so storing one batch overlaps embedding the next, and both
    /// overlap reading and chunking).
    pub(super) async fn flush(&mut self) -> Result<(), IndexError> {
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
            let prompt = self.document_prompt.clone();
            let pending = crate::blocking::spawn(move || {
                let started = Instant::now();
                let texts = chunks
                    .iter()
                    .map(|(c, _)| c.text.as_str())
                    .chain(chunks.iter().flat_map(|(c, _)| c.parts.iter().map(|p| p.text.as_str())));
                let prompted: Vec<String>;
                let texts: Vec<&str> = if prompt.is_empty() {
                    texts.collect()
                } else {
                    prompted = texts.map(|t| format!("{prompt}{t}")).collect();
                    prompted.iter().map(String::as_str).collect()
                };
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
    pub(super) async fn drain(&mut self) -> Result<(), IndexError> {
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

    pub(super) fn report(&self) {
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
