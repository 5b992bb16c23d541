//! Cross-encoder reranking: a BERT sequence-classification model (the
//! ms-marco cross-encoders, transformers' `BertForSequenceClassification`)
//! reads a question and a passage together and scores how well the passage
//! answers it. Slower than comparing vectors (one model run per pair), so it
//! reorders only the first few dozen results of a search.
//!
//! A reranker directory holds `config.json` (with one label),
//! `tokenizer.json` and `model.safetensors` (the encoder, `bert.pooler` and
//! `classifier`). The score is transformers' logit: the encoder runs on the
//! CPU encoder ([`super::cpu`]), then the pooler (tanh of a dense layer over
//! the first token) and the classifier, in F32 (a test holds it to
//! transformers' logits).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::{EncodeInput, Tokenizer};

use super::bert::{Bert, Config};
use super::{check_safetensors, cpu, read_json, ModelError, Precision, BERT_MAX_TOKENS};

/// What a reranker directory says about itself (read without loading weights).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RerankerInfo {
    pub name: String,
    pub dir: PathBuf,
    /// Longest (question, passage) input in tokens, special tokens included;
    /// longer pairs lose tokens from the longer side first.
    pub max_tokens: usize,
    pub weights_bytes: u64,
}

/// The parts of `config.json` that say what head the model has.
#[derive(serde::Deserialize)]
struct HeadConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    id2label: Option<std::collections::HashMap<String, String>>,
}

/// `tokenizer_config.json`'s length limit, when it has one.
#[derive(serde::Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    model_max_length: Option<f64>,
}

impl RerankerInfo {
    /// Finds reranker `name` in `models_dir` (a case-insensitive match when only one fits).
    pub fn find(models_dir: &Path, name: &str) -> Result<RerankerInfo, ModelError> {
        let names = || {
            let dirs = std::fs::read_dir(models_dir).into_iter().flatten().filter_map(Result::ok);
            dirs.filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        };
        match super::model_dir(models_dir, name, names) {
            Ok(dir) => Self::read(&dir),
            Err(_) => Err(ModelError::Unsupported(format!(
                "no reranker {name:?} in {}: install one with scripts/fetch-model.sh ms-marco-MiniLM-L6-v2 {} \
                 (or copy a BertForSequenceClassification model directory there)",
                models_dir.display(),
                super::shell_word(&models_dir.display().to_string()),
            ))),
        }
    }

    /// Reads a reranker directory's configuration.
    pub fn read(dir: &Path) -> Result<RerankerInfo, ModelError> {
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(file).is_file() {
                return Err(ModelError::MissingFile { dir: dir.into(), file });
            }
        }
        let config_path = dir.join("config.json");
        let head: HeadConfig = read_json(&config_path)?;
        let unsupported = |what: String| ModelError::Unsupported(format!("{}: {what}", config_path.display()));
        let is_bert = head.model_type.as_deref().is_none_or(|t| t == "bert");
        if !is_bert || !head.architectures.iter().any(|a| a == "BertForSequenceClassification") {
            return Err(unsupported(format!(
                "not a BERT cross-encoder (architectures {:?}, model_type {:?}); a reranker must be a \
                 BertForSequenceClassification",
                head.architectures, head.model_type
            )));
        }
        let labels = head.num_labels.or(head.id2label.as_ref().map(|l| l.len())).unwrap_or(1);
        if labels != 1 {
            return Err(unsupported(format!(
                "a reranker scores with one label (a relevance logit); this model has {labels}"
            )));
        }
        let config: Config = read_json(&config_path)?;
        config.validate().map_err(|detail| ModelError::Malformed { file: config_path.clone(), detail })?;
        read_json::<serde::de::IgnoredAny>(&dir.join("tokenizer.json"))?;
        check_safetensors(&dir.join("model.safetensors"))?;
        let tokenizer_config = dir.join("tokenizer_config.json");
        let tokenizer_max = if tokenizer_config.is_file() {
            read_json::<TokenizerConfig>(&tokenizer_config)?.model_max_length
        } else {
            None
        };
        // transformers' "no limit" is a huge float: only a real limit counts.
        let tokenizer_max = tokenizer_max.filter(|m| (1.0..1e6).contains(m)).map(|m| m as usize);
        let max_tokens = tokenizer_max.unwrap_or(usize::MAX).min(config.max_position_embeddings).min(BERT_MAX_TOKENS);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let weights_bytes = std::fs::metadata(dir.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
        Ok(RerankerInfo { name, dir: dir.into(), max_tokens, weights_bytes })
    }
}

/// The reranker directories under `models_dir`, by name.
pub fn installed(models_dir: &Path) -> Vec<RerankerInfo> {
    let Ok(entries) = std::fs::read_dir(models_dir) else { return Vec::new() };
    let mut out: Vec<RerankerInfo> =
        entries.filter_map(Result::ok).filter_map(|e| RerankerInfo::read(&e.path()).ok()).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A directory whose `config.json` names a sequence classifier: a reranker
/// (usable or not), never an embedding model.
pub(super) fn is_classifier(dir: &Path) -> bool {
    read_json::<HeadConfig>(&dir.join("config.json"))
        .is_ok_and(|h| h.architectures.iter().any(|a| a.ends_with("ForSequenceClassification")))
}

/// A loaded cross-encoder.
pub struct Reranker {
    pub info: RerankerInfo,
    encoder: cpu::CpuBert,
    /// `bert.pooler.dense`: (hidden, hidden) row-major as stored (out × in).
    pooler_w: Vec<f32>,
    pooler_b: Vec<f32>,
    /// `classifier`: (hidden) weights of the one label, and its bias.
    classifier_w: Vec<f32>,
    classifier_b: f32,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Reranker {
    /// Loads a reranker onto the CPU encoder, in F32 or int8.
    pub fn load(info: RerankerInfo, precision: Precision) -> Result<Reranker, ModelError> {
        if !matches!(precision, Precision::F32 | Precision::Int8) {
            return Err(ModelError::Unsupported(format!(
                "a reranker runs on the CPU, in f32 or int8, not {}",
                precision.name()
            )));
        }
        let config: Config = read_json(&info.dir.join("config.json"))?;
        let weights = info.dir.join("model.safetensors");
        let bad = |e: candle_core::Error| ModelError::Malformed {
            file: weights.clone(),
            detail: format!("does not fit config.json: {e}"),
        };
        // SAFETY: as for the embedder: memory-mapped read-only, never rewritten in place.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
            .map_err(|e| ModelError::Malformed { file: weights.clone(), detail: e.to_string() })?;
        let h = config.hidden_size;
        let encoder_vb =
            if vb.contains_tensor("embeddings.word_embeddings.weight") { vb.clone() } else { vb.pp("bert") };
        let flat = |t: Tensor| -> Result<Vec<f32>, ModelError> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let pooler = encoder_vb.pp("pooler.dense");
        let pooler_w = flat(pooler.get((h, h), "weight").map_err(bad)?)?;
        let pooler_b = flat(pooler.get(h, "bias").map_err(bad)?)?;
        let classifier = vb.pp("classifier");
        let classifier_w = flat(classifier.get((1, h), "weight").map_err(bad)?)?;
        let classifier_b = flat(classifier.get(1, "bias").map_err(bad)?)?[0];
        let mut encoder = Bert::load(vb, &config).map_err(bad)?.into_cpu()?;
        if precision == Precision::Int8 {
            encoder.quantize();
        }
        let tokenizer = super::unpadded(super::read_tokenizer(&info.dir)?, Some(info.max_tokens))?;
        Ok(Reranker { info, encoder, pooler_w, pooler_b, classifier_w, classifier_b, tokenizer })
    }

    /// How well each passage answers the question: the model's logit (higher
    /// is better), in the passages' order. Runs before any bulk embedding in
    /// the process, as a question's vector does.
    pub fn score(&self, question: &str, passages: &[&str]) -> Result<Vec<f32>, ModelError> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let _first = super::GATE.urgent();
        let inputs: Vec<EncodeInput> = passages.iter().map(|p| (question, *p).into()).collect();
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let h = self.encoder.hidden;
        let mut scores = Vec::with_capacity(encodings.len());
        let mut rest = &encodings[..];
        while !rest.is_empty() {
            // Packed batches of a bounded size, as the embedder cuts them.
            let take = super::packed_batch(rest.iter().map(|e| e.len()), usize::MAX, h, self.info.max_tokens);
            let (batch, next) = rest.split_at(take);
            rest = next;
            let tokens: Vec<cpu::Tokens<'_>> =
                batch.iter().map(|e| cpu::Tokens { ids: e.get_ids(), type_ids: e.get_type_ids() }).collect();
            let hidden = self.encoder.forward(&tokens, &|| {});
            let mut row = 0;
            for t in &tokens {
                scores.push(self.head(&hidden[row * h..(row + 1) * h]));
                row += t.ids.len();
            }
        }
        Ok(scores)
    }

    /// The pooler and the classifier over a pair's first token.
    fn head(&self, first: &[f32]) -> f32 {
        let h = first.len();
        let mut score = self.classifier_b;
        for (w, (b, c)) in self.pooler_w.chunks_exact(h).zip(self.pooler_b.iter().zip(&self.classifier_w)) {
            let pooled = (w.iter().zip(first).map(|(w, x)| w * x).sum::<f32>() + b).tanh();
            score += pooled * c;
        }
        score
    }
}
