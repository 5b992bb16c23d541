//! What a run is asked to do: [`IndexOptions`], and the step sizes it
//! defaults to by device.

use super::ImageOptions;
use crate::chunk::ChunkRules;

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
    /// transaction each). Steps are sized by time below this: see [`next_batch`](super::next_batch).
    /// None: [`DEFAULT_FLUSH_CHUNKS`] on a CPU, [`DEFAULT_GPU_FLUSH_CHUNKS`] on a GPU.
    pub flush_chunks: Option<usize>,
    /// Reading text from image files first (see [`images`](super::images)).
    pub images: ImageOptions,
    /// Prompts replacing the model's own (see [`ChunkRules::prompts`]).
    pub prompts: super::PromptSettings,
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
            prompts: Default::default(),
        }
    }
}
