//! What a run tells its caller: progress events as it goes ([`IndexEvent`],
//! folded for displays by [`Tally`]) and the [`IndexSummary`] at the end,
//! with its [`Timings`].

use super::ImageSummary;
use crate::snowflake;
use crate::store::IndexState;

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
