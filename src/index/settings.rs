//! The `[index]` section of the config file: what it may say, and the
//! settings stage two runs with (the model and where models are, chunking,
//! batch sizes, threads, precision), defaults and checks in one place.

use std::path::PathBuf;

use anyhow::{bail, Context as _};

use super::IndexOptions;
use crate::chunk::ChunkRules;
use crate::config::{choose_models_dir, user_models_dir, ModelsDirFrom, DEFAULT_MODEL, LOCAL_MODELS_DIR};

/// The `[index]` table as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    model: Option<String>,
    models_dir: Option<PathBuf>,
    silence_minutes: Option<u64>,
    max_chunk_tokens: Option<usize>,
    part_tokens: Option<usize>,
    skip_bots: Option<bool>,
    skip_authors: Option<Vec<u64>>,
    command_prefixes: Option<Vec<String>>,
    batch_size: Option<usize>,
    flush_chunks: Option<usize>,
    threads: Option<usize>,
    precision: Option<String>,
    query_prompt: Option<String>,
    document_prompt: Option<String>,
}

/// Stage two's settings.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// The model used when none is named.
    pub model: String,
    /// Where models are: see [`crate::config::models_dir_rule`].
    pub models_dir: PathBuf,
    /// Why there.
    pub models_dir_from: ModelsDirFrom,
    pub chunking: ChunkRules,
    /// Texts per forward pass (default: the embedder's, by device).
    pub batch_size: Option<usize>,
    /// The encoder's number type (half precision needs a GPU).
    pub precision: crate::embed::Precision,
    /// Most chunks per step (default: by device, see [`super::DEFAULT_FLUSH_CHUNKS`]).
    pub flush_chunks: Option<usize>,
    /// Threads for embedding (default: one per CPU core).
    pub threads: Option<usize>,
    /// Prompts that replace the model's own (see [`crate::embed::Prompts`]).
    pub prompts: PromptSettings,
}

/// `query_prompt` and `document_prompt`: each, where set, replaces the
/// model's own (an empty one turns it off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptSettings {
    pub query: Option<String>,
    pub document: Option<String>,
}

impl PromptSettings {
    /// The prompts an index of a model with these prompts is built with.
    pub fn apply(&self, model: &crate::embed::Prompts) -> crate::embed::Prompts {
        crate::embed::Prompts {
            query: self.query.clone().unwrap_or_else(|| model.query.clone()),
            document: self.document.clone().unwrap_or_else(|| model.document.clone()),
        }
    }
}

impl IndexSection {
    /// The settings this section gives, its defaults filled in. The models
    /// directory is the flag's, else the environment's, else this section's,
    /// else a default ([`choose_models_dir`]).
    pub fn resolve(
        self,
        models_dir_flag: Option<PathBuf>,
        models_dir_env: Option<PathBuf>,
    ) -> anyhow::Result<IndexSettings> {
        let defaults = ChunkRules::default();
        let chunking = ChunkRules {
            silence_minutes: self.silence_minutes.unwrap_or(defaults.silence_minutes),
            max_tokens: self.max_chunk_tokens.unwrap_or(crate::embed::BERT_MAX_TOKENS),
            skip_bots: self.skip_bots.unwrap_or(defaults.skip_bots),
            skip_authors: self.skip_authors.unwrap_or(defaults.skip_authors),
            command_prefixes: self.command_prefixes.unwrap_or(defaults.command_prefixes),
            quote_words: defaults.quote_words,
            part_tokens: self.part_tokens.unwrap_or(defaults.part_tokens),
            prompts: defaults.prompts,
        };
        if chunking.max_tokens < 16 {
            bail!("[index] max_chunk_tokens must be at least 16");
        }
        let precision = match &self.precision {
            Some(p) => p.parse().map_err(|e: String| anyhow::anyhow!("[index] precision: {e}"))?,
            None => crate::embed::Precision::F32,
        };
        if self.threads == Some(0) {
            bail!("[index] threads must be at least 1");
        }
        let (models_dir, models_dir_from) = choose_models_dir(
            models_dir_flag,
            models_dir_env,
            self.models_dir,
            std::path::Path::new(LOCAL_MODELS_DIR).is_dir(),
            user_models_dir(),
        );
        Ok(IndexSettings {
            model: self.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            models_dir,
            models_dir_from,
            chunking,
            batch_size: self.batch_size.map(|b| b.max(1)),
            precision,
            flush_chunks: self.flush_chunks.map(|f| f.max(1)),
            threads: self.threads,
            prompts: PromptSettings { query: self.query_prompt, document: self.document_prompt },
        })
    }
}

impl IndexSettings {
    /// A run's options for a guild, with these settings' chunking and step sizes.
    pub fn options(&self, guild: u64) -> IndexOptions {
        let mut options = IndexOptions::new(guild);
        options.chunking = self.chunking.clone();
        options.batch_size = self.batch_size;
        options.flush_chunks = self.flush_chunks;
        options.prompts = self.prompts.clone();
        options
    }

    /// Sizes the thread pool that embedding runs on (once per process;
    /// without the setting it has one thread per CPU core).
    pub fn init_threads(&self) -> anyhow::Result<()> {
        if let Some(n) = self.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("cannot size the embedding thread pool")?;
        }
        Ok(())
    }
}
