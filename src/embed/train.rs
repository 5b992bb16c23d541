//! A model whose weights can be trained: the encoder of [`super::bert`] on
//! candle variables, for [`crate::adapt`].
//!
//! Every floating-point tensor of the model's `model.safetensors` becomes an
//! F32 variable; each step builds the encoder from them (so an optimiser's
//! updates are what the next step computes with), runs it with dropout and
//! pools as the model's own pooling config says, the same pooling as
//! inference ([`super::pool`]). [`Trainable::save`] writes a complete model
//! directory: the trained weights, in the base file's names and types (tensors
//! that are not trained, such as position ids, copied as they were), and the
//! base's configuration and tokenizer files, so the new model tokenizes,
//! pools and cuts input exactly as its base does.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::ParamsAdamW;
use candle_nn::{VarBuilder, VarMap};
use tokenizers::Tokenizer;

use super::bert::{Bert, Config, Dropout};
use super::{pool, read_json, tokenizers, ModelError, ModelInfo, Padded};

/// The files of a sentence-transformers directory that go with the weights
/// unchanged (those the base has).
const COPIED_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "1_Pooling/config.json",
];

/// A model loaded for training.
pub struct Trainable {
    pub info: ModelInfo,
    config: Config,
    vars: VarMap,
    /// Every tensor of the base weights file, in its own type.
    base: HashMap<String, Tensor>,
    tokenizer: Tokenizer,
    pad_id: u32,
    dropout: Dropout,
    device: Device,
}

impl Trainable {
    /// Loads `info`'s weights as variables; inputs are cut at `max_tokens`
    /// (at most the model's own limit); `seed` seeds dropout.
    pub fn load(info: ModelInfo, max_tokens: usize, seed: u64, device: Device) -> Result<Trainable, ModelError> {
        let config: Config = read_json(&info.dir.join("config.json"))?;
        let weights = info.dir.join("model.safetensors");
        let malformed = |detail: String| ModelError::Malformed { file: weights.clone(), detail };
        let base = candle_core::safetensors::load(&weights, &Device::Cpu).map_err(|e| malformed(e.to_string()))?;
        let vars = VarMap::new();
        {
            let mut data = vars.data().lock().expect("a fresh map");
            for (name, t) in &base {
                if t.dtype().is_float() {
                    data.insert(name.clone(), Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(&device)?)?);
                }
            }
        }
        let before = vars.all_vars().len();
        Bert::load(VarBuilder::from_varmap(&vars, DType::F32, &device), &config)
            .map_err(|e| malformed(format!("does not fit config.json: {e}")))?;
        // A variable map makes up any name it is asked for and lacks.
        if vars.all_vars().len() != before {
            return Err(malformed("lacks tensors the encoder needs".into()));
        }
        let (tokenizer, _, pad_id) = tokenizers(&info.dir, max_tokens.clamp(1, info.max_tokens))?;
        let dropout = Dropout::new(&config, seed);
        Ok(Trainable { info, config, vars, base, tokenizer, pad_id, dropout, device })
    }

    #[cfg(test)]
    pub fn disable_dropout(&mut self) {
        self.dropout.disable();
    }

    /// The variables an optimiser updates.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.all_vars()
    }

    /// AdamW over the model's variables, with torch's defaults but `learning_rate`.
    pub fn optimizer(&self, learning_rate: f64) -> Result<AdamW, ModelError> {
        let params = ParamsAdamW { lr: learning_rate, ..ParamsAdamW::default() };
        Ok(if self.device.is_cpu() {
            AdamW::InPlace(super::ops::AdamW::new(self.vars(), params)?)
        } else {
            AdamW::Candle(candle_nn::optim::Optimizer::new(self.vars(), params)?)
        })
    }

    /// `texts`' pooled, L2-normalised vectors (texts, dim), computed with
    /// dropout and differentiable back to the variables.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let model = Bert::load(VarBuilder::from_varmap(&self.vars, DType::F32, &self.device), &self.config)?;
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let refs: Vec<&tokenizers::Encoding> = encodings.iter().collect();
        let batch = Padded::new(&refs, self.pad_id, &self.device)?;
        let hidden = model.forward_train(&batch.ids, &batch.types, &batch.mask, &mut self.dropout)?;
        Ok(pool(&hidden, &batch.mask, self.info.pooling)?)
    }

    /// Writes a complete model directory at `dir` (created; must not exist):
    /// the trained weights and the base's configuration and tokenizer files.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let io = |file: &Path, e: std::io::Error| ModelError::Malformed { file: file.into(), detail: e.to_string() };
        std::fs::create_dir(dir).map_err(|e| io(dir, e))?;
        let vars = self.vars.data().lock().expect("not poisoned");
        let mut tensors = HashMap::with_capacity(self.base.len());
        for (name, t) in &self.base {
            let t = match vars.get(name) {
                Some(v) => v.as_tensor().to_device(&Device::Cpu)?.to_dtype(t.dtype())?,
                None => t.clone(),
            };
            tensors.insert(name.clone(), t);
        }
        drop(vars);
        let weights = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights)?;
        for name in COPIED_FILES {
            let from = self.info.dir.join(name);
            if from.is_file() {
                let to = dir.join(name);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                std::fs::copy(&from, &to).map_err(|e| io(&to, e))?;
            }
        }
        Ok(())
    }
}

/// AdamW, as fast as the device allows: in place in one pass on a CPU
/// ([`super::ops::AdamW`]), candle-nn's (the same results) elsewhere.
pub enum AdamW {
    InPlace(super::ops::AdamW),
    Candle(candle_nn::optim::AdamW),
}

impl AdamW {
    /// Computes the gradients of `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        match self {
            AdamW::InPlace(o) => o.backward_step(loss),
            AdamW::Candle(o) => candle_nn::optim::Optimizer::backward_step(o, loss),
        }
    }
}
