//! Adapting an embedding model to one guild's archive: a copy of a model,
//! fine-tuned on the archive's own message pairs, unsupervised, so that search
//! learns the server's vocabulary (its abbreviations, names and jargon).
//!
//! **Pairs.** A reply and the message it answers; else two consecutive
//! messages of a channel by different people at most 15 minutes apart. Both
//! need at least 20 characters; bots and system messages are left out. The
//! archive is only read.
//!
//! **Training.** In-batch negatives with a symmetric loss (each message must
//! pick its partner out of the batch, both ways: sentence-transformers'
//! MultipleNegativesRankingLoss, scale 20), AdamW, dropout as BERT trains;
//! by default 1 epoch, batches of 32, learning rate 2e-5, inputs cut at 64
//! tokens. The effect on retrieval was measured on real chat: docs/benchmarks.md,
//! "Retrieval on real chat".
//!
//! **Result.** A complete model directory `models/NAME` (the trained weights,
//! the base's tokenizer and configuration, and `adapted.json` saying what it
//! was made from), written as `models/.NAME.partial` and renamed into place
//! when complete: an interrupted or failed run leaves no model behind. It is
//! indexed like any model (`index --model NAME --activate`). Its weights carry
//! what they learnt from every channel, private ones included.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;

use crate::embed::train::Trainable;
use crate::embed::{ModelError, ModelInfo};
use crate::store::{ConversationRow, Store, StoreError};

/// Messages shorter than this (in characters, trimmed) say too little to pair.
pub const MIN_CHARS: usize = 20;

/// Consecutive messages further apart than this are not a pair.
pub const GAP_MS: u64 = 15 * 60 * 1000;

/// Fewer pairs than this teach a model nothing useful (8 batches of 32).
pub const MIN_PAIRS: usize = 256;

/// The loss's scale on cosine similarities (sentence-transformers' default).
const SCALE: f64 = 20.0;

/// How a model is adapted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub epochs: usize,
    /// Pairs per step; each pair's partner is told apart from the batch's others.
    pub batch: usize,
    pub learning_rate: f64,
    /// Inputs are cut at this many tokens while training.
    pub max_tokens: usize,
    /// Seeds the order of pairs, the sample (when capped) and dropout.
    pub seed: u64,
    /// At most this many pairs (a random sample of them when there are more).
    pub max_pairs: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { epochs: 1, batch: 32, learning_rate: 2e-5, max_tokens: 64, seed: 0, max_pairs: 20_000 }
    }
}

impl Settings {
    /// Refuses settings no run can use.
    pub fn check(&self) -> Result<(), AdaptError> {
        let bad = |what: &str| Err(AdaptError::BadSetting(what.into()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch < 2 {
            return bad("a batch needs at least 2 pairs (each is told apart from the others)");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return bad("the learning rate must be between 0 and 1 (2e-5 by default)");
        }
        if self.max_tokens < 8 {
            return bad("max tokens must be at least 8");
        }
        if self.max_pairs < self.batch {
            return bad("max pairs must be at least one batch");
        }
        Ok(())
    }
}

/// What a run did (also written as `adapted.json` in the model directory).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub model: String,
    pub base: String,
    #[serde(serialize_with = "crate::snowflake::serialize_id")]
    pub guild: u64,
    /// Pairs found in the archive, and those trained on.
    pub pairs_found: usize,
    pub pairs: usize,
    pub steps: usize,
    pub seconds: f64,
    /// Mean loss over the first and the last tenth of the steps.
    pub loss_first_tenth: f32,
    pub loss_last_tenth: f32,
    pub device: &'static str,
    pub settings: Settings,
}

/// Progress, after each step.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    #[error(
        "{0:?} is not a model name: use a plain directory name (letters, digits, '-', '_', '.'; not starting with '.')"
    )]
    BadName(String),
    #[error("{0}")]
    BadSetting(String),
    #[error("{0} already exists: choose another name, or remove it first")]
    Exists(PathBuf),
    #[error("guild {0} is not in the archive (`discord-indexer guilds` lists what is)")]
    UnknownGuild(u64),
    #[error(
        "only {found} message pairs in guild {guild} (replies, or consecutive messages by different people, \
         of at least {MIN_CHARS} characters): at least {MIN_PAIRS} are needed to adapt a model"
    )]
    TooFewPairs { guild: u64, found: usize },
    #[error("adapting: {0}")]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("interrupted: no model was written")]
    Interrupted,
}

impl From<candle_core::Error> for AdaptError {
    fn from(e: candle_core::Error) -> Self {
        AdaptError::Model(ModelError::Candle(e))
    }
}

/// The (first, second) message pairs of a guild's rows, as ordered by
/// [`Store::conversation_rows`] (by channel, oldest first).
pub fn pairs(rows: &[ConversationRow]) -> Vec<(String, String)> {
    let by_id: std::collections::HashMap<u64, &ConversationRow> = rows.iter().map(|r| (r.id, r)).collect();
    let long = |r: &ConversationRow| r.content.trim().chars().count() >= MIN_CHARS;
    let mut out = Vec::new();
    let mut prev: Option<&ConversationRow> = None;
    for row in rows {
        let replied = row.reply_to.and_then(|id| by_id.get(&id).copied()).filter(|r| r.channel_id == row.channel_id);
        let first = replied.or_else(|| {
            prev.filter(|p| {
                p.channel_id == row.channel_id
                    && p.author_id != row.author_id
                    && (row.id >> 22).saturating_sub(p.id >> 22) <= GAP_MS // a snowflake's top bits are milliseconds
            })
        });
        if let Some(first) = first {
            if long(first) && long(row) && first.author_id != row.author_id {
                out.push((first.content.trim().to_owned(), row.content.trim().to_owned()));
            }
        }
        prev = Some(row);
    }
    out
}

/// Checks a new model's name and that it is free; returns its directory.
pub fn target_dir(models_dir: &Path, name: &str) -> Result<PathBuf, AdaptError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with(".partial")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(AdaptError::BadName(name.into()));
    }
    let dir = models_dir.join(name);
    if dir.exists() {
        return Err(AdaptError::Exists(dir));
    }
    Ok(dir)
}

/// What to adapt to what.
#[derive(Debug, Clone)]
pub struct Request {
    pub guild: u64,
    pub base: ModelInfo,
    pub models_dir: PathBuf,
    /// The new model's directory name under `models_dir`.
    pub name: String,
    pub settings: Settings,
}

/// Adapts the request's base model to its guild's archive and installs the
/// result. `on_step` hears each step; `stop` ends the run between steps,
/// writing nothing.
pub fn adapt(
    store: &Store,
    request: Request,
    device: Device,
    on_step: &dyn Fn(Step),
    stop: &AtomicBool,
) -> Result<Report, AdaptError> {
    let Request { guild, base, models_dir, name, settings } = request;
    let settings = &settings;
    settings.check()?;
    let dir = target_dir(&models_dir, &name)?;
    if !store.has_guild(guild)? {
        return Err(AdaptError::UnknownGuild(guild));
    }
    let mut pairs = pairs(&store.conversation_rows(guild)?);
    let found = pairs.len();
    if found < MIN_PAIRS.max(settings.batch) {
        return Err(AdaptError::TooFewPairs { guild, found });
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
    if pairs.len() > settings.max_pairs {
        pairs.shuffle(&mut rng);
        pairs.truncate(settings.max_pairs.max(settings.batch));
    }
    let started = Instant::now();
    let base_name = base.name.clone();
    let device_name = crate::embed::device_name(&device);
    let mut model = Trainable::load(base, settings.max_tokens, settings.seed, device)?;
    let losses = train(&mut model, &mut pairs, settings, &mut rng, on_step, stop)?;
    let tenth = (losses.len() / 10).max(1);
    let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len().max(1) as f32;
    let report = Report {
        model: name.clone(),
        base: base_name,
        guild,
        pairs_found: found,
        pairs: pairs.len(),
        steps: losses.len(),
        seconds: started.elapsed().as_secs_f64(),
        loss_first_tenth: mean(&losses[..tenth.min(losses.len())]),
        loss_last_tenth: mean(&losses[losses.len().saturating_sub(tenth)..]),
        device: device_name,
        settings: settings.clone(),
    };
    if stop.load(Ordering::Relaxed) {
        return Err(AdaptError::Interrupted);
    }
    install(&model, &report, &dir)?;
    Ok(report)
}

/// Trains `model` on `pairs` (shuffled each epoch with `rng`) and returns
/// each step's loss.
pub fn train(
    model: &mut Trainable,
    pairs: &mut [(String, String)],
    settings: &Settings,
    rng: &mut rand::rngs::StdRng,
    on_step: &dyn Fn(Step),
    stop: &AtomicBool,
) -> Result<Vec<f32>, AdaptError> {
    let mut optimizer = model.optimizer(settings.learning_rate)?;
    let steps = pairs.len() / settings.batch * settings.epochs;
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..settings.epochs {
        pairs.shuffle(rng);
        for batch in pairs.chunks_exact(settings.batch) {
            if stop.load(Ordering::Relaxed) {
                return Err(AdaptError::Interrupted);
            }
            // Both sides in one forward pass: larger products, half the passes.
            let texts: Vec<&str> =
                batch.iter().map(|(a, _)| a.as_str()).chain(batch.iter().map(|(_, b)| b.as_str())).collect();
            let vectors = model.embed(&texts)?;
            let (a, b) = (vectors.narrow(0, 0, batch.len())?, vectors.narrow(0, batch.len(), batch.len())?);
            let scores = (a.matmul(&b.t()?)? * SCALE)?;
            let labels = Tensor::arange(0u32, batch.len() as u32, scores.device())?;
            let loss = ((candle_nn::loss::cross_entropy(&scores, &labels)?
                + candle_nn::loss::cross_entropy(&scores.t()?, &labels)?)?
                / 2.0)?;
            optimizer.backward_step(&loss)?;
            let loss = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
            losses.push(loss);
            on_step(Step { step: losses.len(), steps, loss });
        }
    }
    Ok(losses)
}

/// Writes the model as `.NAME.partial` beside its place, then renames it in.
fn install(model: &Trainable, report: &Report, dir: &Path) -> Result<(), AdaptError> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = dir.with_file_name(format!(".{name}.partial"));
    let write = |path: &Path, source: std::io::Error| AdaptError::Write { path: path.into(), source };
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| write(&partial, e))?;
    }
    let result = (|| {
        model.save(&partial)?;
        let manifest = partial.join("adapted.json");
        let text = serde_json::to_string_pretty(report).expect("a report serialises");
        std::fs::write(&manifest, text).map_err(|e| write(&manifest, e))?;
        // The directory is complete before it takes the name.
        std::fs::rename(&partial, dir).map_err(|e| write(dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

#[cfg(test)]
mod tests;
