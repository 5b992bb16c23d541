//! Sentence embeddings with candle: BERT-family sentence-transformers models
//! (BGE, all-MiniLM-L6-v2, ...) loaded from a model directory under `models/`.
//!
//! A model directory holds `config.json`, `tokenizer.json`, `model.safetensors`
//! and `1_Pooling/config.json` (which pooling: CLS for BGE, masked mean for
//! MiniLM), optionally `sentence_bert_config.json` (`max_seq_length`).
//! Vectors are computed in F32, pooled as the model's own config says and
//! L2-normalised: the same vectors as sentence-transformers gives for the
//! same model (checked by a test against reference vectors it produced).
//!
//! On a CPU the encoder is [`cpu`]'s: texts are tokenized, sorted by length
//! and cut into batches by a token budget; a batch is its texts' real tokens
//! packed together, so no compute is spent on padding. On a GPU the
//! tensor forward of [`bert`] runs batches of texts of similar length, each
//! padded to its longest, in F32 or in half precision ([`Precision`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

/// BERT's hard limit on sequence length, special tokens included.
pub const BERT_MAX_TOKENS: usize = 512;

/// How many texts one forward pass takes at most, by default, on a CPU.
pub const DEFAULT_BATCH_TEXTS: usize = 64;

/// The same on a GPU, where a forward pass needs many rows to fill the chip.
pub const DEFAULT_GPU_BATCH_TEXTS: usize = 256;

/// Padded tokens (texts × longest text) one GPU forward pass holds at most.
/// One copy of the attention scores for 64k tokens of 512-token texts takes
/// 1.6 GB in F32 with 12 heads (2.1 GB with BGE-large's 16), and the mask,
/// scale and softmax each make another: a few GB at the peak, for 512-token
/// texts only (shorter ones need proportionally less).
const GPU_BATCH_TOKENS: usize = 1 << 16;

/// Values of hidden state one CPU forward pass holds per buffer at most
/// (tokens × hidden size): about 8k tokens of MiniLM, 4k of BGE-large. Bigger
/// batches gain little once the dense products have a few thousand rows.
const BATCH_VALUES: usize = 1 << 22;

/// The number type the encoder computes in. F32 everywhere; half precision
/// (F16, BF16) on a GPU only, where it runs on the tensor cores; int8 on the
/// CPU only, for the dense layers (weights per column, activations per token:
/// [`kernels::i8mm`]), with attention, norms and activations in F32. Vectors
/// are pooled and normalised in F32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
    Int8,
}

impl Precision {
    /// The type the weights load as (int8 quantizes F32 weights after loading).
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 | Precision::Int8 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!("unknown precision {s:?}: f32, int8 (CPU), f16 or bf16 (GPU)")),
        }
    }
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first ([CLS]) token's vector (BGE).
    Cls,
    /// The mean of the real (unpadded) tokens' vectors (MiniLM, most sentence-transformers).
    Mean,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "no model {name:?} in {dir} ({installed}). Models are looked for in {rule}. Install one there with \
         scripts/fetch-model.sh NAME {dir_arg} (from a checkout of discord-indexer; NAME: all-MiniLM-L6-v2 or \
         another it lists), or copy a sentence-transformers model directory into it"
    )]
    NotInstalled {
        name: String,
        dir: PathBuf,
        /// `installed: a, b`, or why there are none.
        installed: String,
        /// How the models directory is chosen ([`crate::config::models_dir_rule`]).
        rule: String,
        /// `dir` as a shell word.
        dir_arg: String,
    },
    #[error("model directory {dir} lacks {file}: it is not a complete sentence-transformers model")]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("{file}: {detail}")]
    Malformed { file: PathBuf, detail: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("embedding failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// What a model directory says about itself (read without loading weights).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub dir: PathBuf,
    /// Vector dimension (`hidden_size`).
    pub dim: usize,
    pub pooling: Pooling,
    /// Longest input in tokens, special tokens included.
    pub max_tokens: usize,
    /// Bytes of weights.
    pub weights_bytes: u64,
    /// The text put before questions and before documents, as the model's
    /// sentence-transformers config says (empty for most models).
    pub prompts: Prompts,
}

/// Text put before each input on one side of a search: retrieval-trained
/// bi-encoders (BGE v1.5, e5, ...) expect an instruction on the question
/// side, or a marker on both. Embedded as if part of the text, exactly as
/// sentence-transformers' `encode(prompt_name=...)` does.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prompts {
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub document: String,
}

impl Prompts {
    pub fn is_empty(&self) -> bool {
        self.query.is_empty() && self.document.is_empty()
    }
}

/// `config_sentence_transformers.json`: named prompts, and the one used when
/// none is named.
#[derive(serde::Deserialize, Default)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: std::collections::HashMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

impl SentenceTransformersConfig {
    /// The prompts as sentence-transformers' `encode_query` and
    /// `encode_document` pick them: `query`; the first of `document`,
    /// `passage`, `corpus`; else the default prompt.
    fn prompts(&self) -> Prompts {
        let default = self.default_prompt_name.as_ref().and_then(|n| self.prompts.get(n)).cloned().unwrap_or_default();
        let named = |names: &[&str]| names.iter().find_map(|n| self.prompts.get(*n)).cloned();
        Prompts {
            query: named(&["query"]).unwrap_or_else(|| default.clone()),
            document: named(&["document", "passage", "corpus"]).unwrap_or(default),
        }
    }
}

/// `1_Pooling/config.json`: flags (`pooling_mode_mean_tokens: true`, ...), or,
/// as sentence-transformers writes it since version 5, one `pooling_mode` name.
#[derive(serde::Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode: Option<String>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    /// False: the prompt's tokens are left out of the pooling (Instructor-style models).
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::Malformed { file: path.into(), detail: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Malformed { file: path.into(), detail: e.to_string() })
}

/// Checks a safetensors file's frame without reading its tensors: an 8-byte
/// header length, a JSON header, and data exactly as long as the header's
/// largest offset (an empty or truncated file fails here, not at load).
fn check_safetensors(path: &Path) -> Result<(), ModelError> {
    use std::io::Read as _;
    let bad = |detail: String| ModelError::Malformed { file: path.into(), detail };
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut head = [0u8; 8];
    file.read_exact(&mut head).map_err(|_| bad(format!("{len} bytes: not a safetensors file (truncated?)")))?;
    let header_len = u64::from_le_bytes(head);
    if header_len > 100_000_000 || 8 + header_len > len {
        return Err(bad(format!("{len} bytes: not a safetensors file, or truncated (its header says {header_len})")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
    let header: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;
    let end = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t["data_offsets"].get(1).and_then(|v| v.as_u64()))
        .max()
        .unwrap_or(0);
    let data = len - 8 - header_len;
    if end != data {
        return Err(bad(format!(
            "truncated or padded: its tensors need {end} bytes of data, the file has {data}; fetch the model again"
        )));
    }
    Ok(())
}

impl ModelInfo {
    /// Finds model `name` in `models_dir`.
    pub fn find(models_dir: &Path, name: &str) -> Result<ModelInfo, ModelError> {
        let names = || installed(models_dir).into_iter().map(|(n, _)| n).collect();
        match model_dir(models_dir, name, names) {
            Ok(dir) => Self::read(&dir),
            Err(installed) => {
                let installed = match &installed[..] {
                    [] if !models_dir.is_dir() => format!("installed: none; {} does not exist", models_dir.display()),
                    [] => "installed: none".into(),
                    names => format!("installed: {}", names.join(", ")),
                };
                Err(ModelError::NotInstalled {
                    name: name.into(),
                    dir: models_dir.into(),
                    installed,
                    rule: crate::config::models_dir_rule(),
                    dir_arg: shell_word(&models_dir.display().to_string()),
                })
            }
        }
    }

    /// Reads a model directory's configuration.
    pub fn read(dir: &Path) -> Result<ModelInfo, ModelError> {
        for file in ["config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json"] {
            if !dir.join(file).is_file() {
                return Err(ModelError::MissingFile { dir: dir.into(), file });
            }
        }
        // What is cheap to check before loading: the tokenizer is JSON, and the
        // weights file is as long as its header says (a truncated download).
        // The weights' values are not checked until the model is loaded.
        read_json::<serde::de::IgnoredAny>(&dir.join("tokenizer.json"))?;
        check_safetensors(&dir.join("model.safetensors"))?;
        // The encoder's own config check (activation, head layout), without weights.
        let config: Config = read_json(&dir.join("config.json"))?;
        config.validate().map_err(|detail| ModelError::Malformed { file: dir.join("config.json"), detail })?;
        let hidden: serde_json::Value = read_json(&dir.join("config.json"))?;
        let dim = hidden["hidden_size"].as_u64().unwrap_or(0) as usize;
        let pooling_path = dir.join("1_Pooling/config.json");
        let p: PoolingConfig = read_json(&pooling_path)?;
        let flags = (
            p.pooling_mode_cls_token,
            p.pooling_mode_mean_tokens,
            p.pooling_mode_max_tokens,
            p.pooling_mode_mean_sqrt_len_tokens,
        );
        let pooling = match (p.pooling_mode.as_deref(), flags) {
            (Some("cls"), _) | (None, (true, false, false, false)) => Pooling::Cls,
            (Some("mean"), _) | (None, (false, true, false, false)) => Pooling::Mean,
            _ => {
                return Err(ModelError::Unsupported(format!(
                    "{}: only CLS or mean pooling (one of them) is supported",
                    pooling_path.display()
                )))
            }
        };
        let st_config = dir.join("config_sentence_transformers.json");
        let prompts = if st_config.is_file() {
            read_json::<SentenceTransformersConfig>(&st_config)?.prompts()
        } else {
            Prompts::default()
        };
        if !p.include_prompt && !prompts.is_empty() {
            return Err(ModelError::Unsupported(format!(
                "{}: pooling that leaves the prompt out (include_prompt: false) is not supported",
                pooling_path.display()
            )));
        }
        let max_positions = hidden["max_position_embeddings"].as_u64().unwrap_or(BERT_MAX_TOKENS as u64) as usize;
        let sbert = dir.join("sentence_bert_config.json");
        let max_seq = if sbert.is_file() { read_json::<SentenceBertConfig>(&sbert)?.max_seq_length } else { None };
        let max_tokens = max_seq.unwrap_or(max_positions).min(max_positions).min(BERT_MAX_TOKENS);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let weights_bytes = std::fs::metadata(dir.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
        if dim == 0 {
            return Err(ModelError::Malformed { file: dir.join("config.json"), detail: "no hidden_size".into() });
        }
        Ok(ModelInfo { name, dir: dir.into(), dim, pooling, max_tokens, weights_bytes, prompts })
    }
}

/// The directory model `name` is in `models_dir`: `models_dir/name` when
/// `name` is a plain name of a directory there; else the one of `names()` (the
/// candidates there) equal to it ignoring case, when exactly one is
/// (`all-minilm-l6-v2` means `all-MiniLM-L6-v2`). Else the candidates, for
/// the error that lists them.
pub(super) fn model_dir(
    models_dir: &Path,
    name: &str,
    names: impl FnOnce() -> Vec<String>,
) -> Result<PathBuf, Vec<String>> {
    let dir = models_dir.join(name);
    if !name.is_empty() && !name.contains(['/', '\\']) && dir.is_dir() {
        return Ok(dir);
    }
    let names = names();
    match names.iter().filter(|n| n.eq_ignore_ascii_case(name)).collect::<Vec<_>>()[..] {
        [only] => Ok(models_dir.join(only)),
        _ => Err(names),
    }
}

/// `text` as one word for a POSIX shell: as it is when plain, else in single quotes.
pub(crate) fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// A model's tokenizer twice: truncating at `max_tokens` and never padding
/// (each encoder lays out its batches), and without truncation (for counting);
/// and the id of the token that pads.
fn tokenizers(dir: &Path, max_tokens: usize) -> Result<(Tokenizer, Tokenizer, u32), ModelError> {
    let raw = read_tokenizer(dir)?;
    let pad_token = raw.get_padding().map(|p| p.pad_token.clone()).unwrap_or_else(|| "[PAD]".into());
    let pad_id = raw.token_to_id(&pad_token).unwrap_or(0);
    let counter = unpadded(raw, None)?;
    let tokenizer = unpadded(counter.clone(), Some(max_tokens))?;
    Ok((tokenizer, counter, pad_id))
}

/// A model directory's `tokenizer.json`.
fn read_tokenizer(dir: &Path) -> Result<Tokenizer, ModelError> {
    let path = dir.join("tokenizer.json");
    Tokenizer::from_file(&path).map_err(|e| ModelError::Malformed { file: path, detail: e.to_string() })
}

/// `tokenizer` never padding, and truncating at `max_tokens` (longest input
/// first, for pairs) or never.
fn unpadded(mut tokenizer: Tokenizer, max_tokens: Option<usize>) -> Result<Tokenizer, ModelError> {
    tokenizer.with_padding(None);
    let truncation = max_tokens.map(|max_length| TruncationParams {
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: tokenizers::TruncationDirection::Right,
    });
    tokenizer.with_truncation(truncation).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(tokenizer)
}

/// Every model directory under `models_dir`, with its info or why it is unusable.
pub fn installed(models_dir: &Path) -> Vec<(String, Result<ModelInfo, ModelError>)> {
    let Ok(entries) = std::fs::read_dir(models_dir) else { return Vec::new() };
    let mut out: Vec<(String, Result<ModelInfo, ModelError>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
        .filter(|e| !rerank::is_classifier(&e.path()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), ModelInfo::read(&e.path())))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The device to embed on: the first CUDA GPU when built with the `cuda`
/// feature and one is present, else the CPU (saying why, in a CUDA build).
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    match Device::new_cuda(0) {
        Ok(d) => return d,
        Err(e) => tracing::warn!("no usable CUDA GPU ({e}); embedding on the CPU"),
    }
    Device::Cpu
}

pub fn device_name(d: &Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// A loaded model, ready to embed.
pub struct Embedder {
    pub info: ModelInfo,
    encoder: Encoder,
    /// Truncates at `max_tokens`; never pads (each encoder lays out its batches).
    tokenizer: Tokenizer,
    /// No padding, no truncation: for counting tokens.
    counter: Tokenizer,
    device: Device,
    precision: Precision,
    /// The token that pads a batch for the tensor encoder (the CPU one packs instead).
    pad_id: u32,
}

/// Questions first, across every model of the process: see [`Embedder::embed_question`].
static GATE: Gate = Gate { urgent: std::sync::Mutex::new(0), clear: std::sync::Condvar::new() };

/// Questions before bulk work. A bulk forward pass (an indexing step, which
/// may take a second or more on a CPU) gives way between layers (on a GPU,
/// between batches) while a question is being embedded or waits to be, so a
/// question waits for at most one layer of it, and then runs with the cores
/// to itself.
struct Gate {
    urgent: std::sync::Mutex<usize>,
    clear: std::sync::Condvar,
}

impl Gate {
    /// Marks a question as waiting or running until the guard drops.
    fn urgent(&self) -> Urgent<'_> {
        *self.urgent.lock().unwrap() += 1;
        Urgent(self)
    }

    /// Waits while questions are waiting or running.
    fn give_way(&self) {
        let mut urgent = self.urgent.lock().unwrap();
        while *urgent > 0 {
            urgent = self.clear.wait(urgent).unwrap();
        }
    }
}

struct Urgent<'a>(&'a Gate);

impl Drop for Urgent<'_> {
    fn drop(&mut self) {
        let mut urgent = self.0.urgent.lock().unwrap();
        *urgent -= 1;
        if *urgent == 0 {
            self.0.clear.notify_all();
        }
    }
}

enum Encoder {
    Cpu(cpu::CpuBert),
    Tensor(Bert),
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads a model to compute in F32.
    pub fn load(info: ModelInfo, device: Device) -> Result<Embedder, ModelError> {
        Self::load_as(info, device, Precision::F32)
    }

    /// Loads a model to compute in `precision`: half precision needs a GPU.
    pub fn load_as(info: ModelInfo, device: Device, precision: Precision) -> Result<Embedder, ModelError> {
        Self::load_inner(info, device, precision, false)
    }

    /// `tensor_on_cpu`: run the GPU's tensor encoder on the CPU (tests check
    /// the padded path, and half precision's mask, without a GPU).
    fn load_inner(
        info: ModelInfo,
        device: Device,
        precision: Precision,
        tensor_on_cpu: bool,
    ) -> Result<Embedder, ModelError> {
        let half = matches!(precision, Precision::F16 | Precision::Bf16);
        if half && device.is_cpu() && !tensor_on_cpu {
            return Err(ModelError::Unsupported(format!(
                "precision {} needs a GPU (a build with --features cuda on a machine with an NVIDIA GPU); \
                 on the CPU embedding is f32 or int8",
                precision.name()
            )));
        }
        if precision == Precision::Int8 && (tensor_on_cpu || !device.is_cpu()) {
            return Err(ModelError::Unsupported(
                "precision int8 is the CPU encoder's; on a GPU embedding is f32, f16 or bf16".to_owned(),
            ));
        }
        let config: Config = read_json(&info.dir.join("config.json"))?;
        let weights = info.dir.join("model.safetensors");
        // SAFETY: the weights are memory-mapped read-only; the model directory
        // must not be rewritten while the process runs (fetch-model.sh installs
        // by renaming a finished directory into place).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], precision.dtype(), &device) }
            .map_err(|e| ModelError::Malformed { file: weights.clone(), detail: e.to_string() })?;
        let model = Bert::load(vb, &config).map_err(|e| ModelError::Malformed {
            file: weights.clone(),
            detail: format!("does not fit config.json: {e}"),
        })?;
        let encoder = match device {
            Device::Cpu if !tensor_on_cpu => {
                let mut cpu = model.into_cpu()?;
                if precision == Precision::Int8 {
                    cpu.quantize();
                }
                Encoder::Cpu(cpu)
            }
            _ => Encoder::Tensor(model),
        };
        let (tokenizer, counter, pad_id) = tokenizers(&info.dir, info.max_tokens)?;
        Ok(Embedder { info, encoder, tokenizer, counter, device, precision, pad_id })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Texts per forward pass when no setting says: more on a GPU.
    pub fn default_batch(&self) -> usize {
        if self.device.is_cpu() {
            DEFAULT_BATCH_TEXTS
        } else {
            DEFAULT_GPU_BATCH_TEXTS
        }
    }

    /// Tokens of `text`, special tokens included, without truncation.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter.encode_fast(text, true).map(|e| e.len()).unwrap_or(usize::MAX)
    }

    /// Tokens of `text` without special tokens (what a line adds to a chunk).
    pub fn count_content_tokens(&self, text: &str) -> usize {
        self.counter.encode_fast(text, false).map(|e| e.len()).unwrap_or(usize::MAX)
    }

    /// The tokens of the special tokens one input carries ([CLS] and [SEP] for BERT).
    pub fn special_tokens(&self) -> usize {
        self.count_tokens("").min(self.info.max_tokens)
    }

    /// Embeds texts (in any order) into L2-normalised vectors, in the same
    /// order, at most `batch_texts` texts per forward pass. Returns the
    /// vectors and the number of real (unpadded) tokens processed.
    pub fn embed(&self, texts: &[&str], batch_texts: usize) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        self.embed_counted(texts, batch_texts, &AtomicUsize::new(0))
    }

    /// One question's vector, before any bulk work: a long pass of
    /// [`Embedder::embed`] running beside it (an indexing step) pauses at its
    /// next layer until this is done, so a question never queues behind one.
    pub fn embed_question(&self, text: &str) -> Result<Vec<f32>, ModelError> {
        let _first = GATE.urgent();
        let (mut vectors, _) = self.embed_with(&[text], 1, &AtomicUsize::new(0), &|| {})?;
        Ok(vectors.remove(0))
    }

    /// [`Embedder::embed`], adding to `done` the texts of each forward pass
    /// as it finishes (for a progress display while a large call runs).
    pub fn embed_counted(
        &self,
        texts: &[&str],
        batch_texts: usize,
        done: &AtomicUsize,
    ) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        self.embed_with(texts, batch_texts, done, &|| GATE.give_way())
    }

    /// Embeds `texts`, calling `give_way` between layers (CPU) or batches
    /// (tensor path).
    fn embed_with(
        &self,
        texts: &[&str],
        batch_texts: usize,
        done: &AtomicUsize,
        give_way: &dyn Fn(),
    ) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        let batch_texts = batch_texts.max(1);
        match &self.encoder {
            Encoder::Cpu(model) => self.embed_cpu(model, texts, batch_texts, done, give_way),
            Encoder::Tensor(model) => self.embed_tensor(model, texts, batch_texts, done, give_way),
        }
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>, ModelError> {
        self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Tokenizes `texts`, sorts them longest first and embeds them in
    /// batches: `take` says how many of the remaining texts (their lengths,
    /// longest first) the next batch takes, `forward` embeds a batch and
    /// returns its vectors in order and its real tokens.
    fn embed_sorted(
        &self,
        texts: &[&str],
        done: &AtomicUsize,
        take: impl Fn(&[usize]) -> usize,
        mut forward: impl FnMut(&[&tokenizers::Encoding]) -> Result<(Vec<Vec<f32>>, usize), ModelError>,
    ) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        let encodings = self.encode(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let lengths: Vec<usize> = order.iter().map(|&i| encodings[i].len()).collect();
        let mut out = vec![Vec::new(); texts.len()];
        let mut tokens = 0;
        let mut start = 0;
        while start < order.len() {
            let end = (start + take(&lengths[start..]).max(1)).min(order.len());
            let batch = &order[start..end];
            let inputs: Vec<&tokenizers::Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
            let (vectors, n) = forward(&inputs)?;
            tokens += n;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
            done.fetch_add(batch.len(), Ordering::Relaxed);
            start = end;
        }
        Ok((out, tokens))
    }

    /// The CPU path: batches cut by `batch_texts` and a token budget, each
    /// batch's real tokens packed with no padding.
    fn embed_cpu(
        &self,
        model: &cpu::CpuBert,
        texts: &[&str],
        batch_texts: usize,
        done: &AtomicUsize,
        give_way: &dyn Fn(),
    ) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        let take =
            |lengths: &[usize]| packed_batch(lengths.iter().copied(), batch_texts, model.hidden, self.info.max_tokens);
        self.embed_sorted(texts, done, take, |batch| Ok(self.embed_packed(model, batch, give_way)))
    }

    /// One packed batch through the CPU encoder, pooled and normalised.
    fn embed_packed(
        &self,
        model: &cpu::CpuBert,
        encodings: &[&tokenizers::Encoding],
        give_way: &dyn Fn(),
    ) -> (Vec<Vec<f32>>, usize) {
        let h = model.hidden;
        let inputs: Vec<cpu::Tokens<'_>> =
            encodings.iter().map(|e| cpu::Tokens { ids: e.get_ids(), type_ids: e.get_type_ids() }).collect();
        let hidden = model.forward(&inputs, give_way);
        let mut out = Vec::with_capacity(inputs.len());
        let mut row = 0;
        for input in &inputs {
            let len = input.ids.len();
            let rows = &hidden[row * h..(row + len) * h];
            let mut v = match self.info.pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; h];
                    for r in rows.chunks_exact(h) {
                        for (s, x) in sum.iter_mut().zip(r) {
                            *s += x;
                        }
                    }
                    // sentence-transformers: sum / max(count, 1e-9)
                    let count = (len as f32).max(1e-9);
                    sum.iter_mut().for_each(|s| *s /= count);
                    sum
                }
            };
            // torch.nn.functional.normalize(p=2, eps=1e-12)
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
            row += len;
        }
        (out, row)
    }

    /// The tensor path (GPU): batches cut by `batch_texts` and a budget of
    /// padded tokens, each padded to its longest.
    fn embed_tensor(
        &self,
        model: &Bert,
        texts: &[&str],
        batch_texts: usize,
        done: &AtomicUsize,
        give_way: &dyn Fn(),
    ) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        // Longest first: the first text of a batch sets its padded length.
        let take = |lengths: &[usize]| batch_texts.min(GPU_BATCH_TOKENS / lengths[0].max(1));
        self.embed_sorted(texts, done, take, |batch| {
            give_way();
            self.embed_padded(model, batch)
        })
    }

    /// One padded batch through the tensor forward.
    fn embed_padded(
        &self,
        model: &Bert,
        encodings: &[&tokenizers::Encoding],
    ) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
        let batch = Padded::new(encodings, self.pad_id, &self.device)?;
        let hidden = model.forward(&batch.ids, &batch.types, &batch.mask)?.to_dtype(DType::F32)?;
        Ok((pool(&hidden, &batch.mask, self.info.pooling)?.to_vec2::<f32>()?, batch.real_tokens))
    }
}

/// How many of the inputs of these lengths (in tokens, in order) one packed
/// CPU forward pass takes: at most `max_inputs`, as many as fit in
/// [`BATCH_VALUES`] values of `hidden` (or one input of `max_tokens`), and
/// always at least one.
fn packed_batch(
    lengths: impl IntoIterator<Item = usize>,
    max_inputs: usize,
    hidden: usize,
    max_tokens: usize,
) -> usize {
    let budget = (BATCH_VALUES / hidden).max(max_tokens);
    let mut total = 0;
    lengths
        .into_iter()
        .take(max_inputs)
        .enumerate()
        .take_while(|&(i, len)| {
            total += len;
            i == 0 || total <= budget
        })
        .count()
}

/// A batch of tokenized texts as (texts, longest) tensors, right-padded.
struct Padded {
    ids: Tensor,
    types: Tensor,
    mask: Tensor,
    real_tokens: usize,
}

impl Padded {
    fn new(encodings: &[&tokenizers::Encoding], pad_id: u32, device: &Device) -> candle_core::Result<Padded> {
        let b = encodings.len();
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![pad_id; b * len];
        let mut types = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        let mut real_tokens = 0;
        for (row, e) in encodings.iter().enumerate() {
            let n = e.len();
            ids[row * len..row * len + n].copy_from_slice(e.get_ids());
            types[row * len..row * len + n].copy_from_slice(e.get_type_ids());
            mask[row * len..row * len + n].fill(1);
            real_tokens += n;
        }
        Ok(Padded {
            ids: Tensor::from_vec(ids, (b, len), device)?,
            types: Tensor::from_vec(types, (b, len), device)?,
            mask: Tensor::from_vec(mask, (b, len), device)?,
            real_tokens,
        })
    }
}

/// Pools (texts, tokens, hidden) F32 states into L2-normalised (texts,
/// hidden) vectors as the model's pooling says (differentiable: training
/// pools the same way).
fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> candle_core::Result<Tensor> {
    let pooled = match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            // sentence-transformers: sum(h · mask) / max(sum(mask), 1e-9)
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let sum = hidden.broadcast_mul(&m)?.sum(1)?;
            let count = m.sum(1)?.maximum(1e-9)?;
            sum.broadcast_div(&count)?
        }
    };
    // torch.nn.functional.normalize(p=2, eps=1e-12)
    let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    pooled.broadcast_div(&norm)
}

mod bert;
mod cpu;
mod ops;
pub mod rerank;
pub mod tiny;
pub mod train;

use bert::{Bert, Config};

#[cfg(test)]
mod tests;
