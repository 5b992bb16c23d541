//! BERT weights, and the encoder's forward pass on candle tensors (the path
//! for GPUs; on a CPU the weights move into [`super::cpu::CpuBert`]).
//!
//! Loading reads sentence-transformers' `model.safetensors` (with or without a
//! `bert.` prefix, LayerNorm weights named weight/bias or gamma/beta), fuses
//! Q, K and V into one dense layer and keeps weights transposed. The forward
//! pass flattens (batch, sequence) into one matrix for every dense layer and
//! uses candle's fused softmax and layer norm. Padding is masked with the most
//! negative value of the compute type, as transformers does (`finfo.min`), so
//! half precision gets a finite mask too.
//!
//! The same forward also trains ([`Bert::forward_train`], for
//! [`super::train`]): candle's fused softmax and layer norm have no backward
//! pass, so training runs [`super::ops`]' fused ones on a CPU and composes
//! them from differentiable operations elsewhere, and applies BERT's dropout
//! where BERT does (after the embeddings, on the attention probabilities and
//! after each residual branch's dense layer).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use rand::{Rng as _, SeedableRng as _};

/// The parts of a BERT `config.json` the encoder needs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f32,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f32,
}

fn default_dropout() -> f32 {
    0.1
}

fn default_act() -> String {
    "gelu".into()
}

fn default_types() -> usize {
    2
}

fn default_eps() -> f64 {
    1e-12
}

use super::cpu::{self, Activation};

impl Config {
    fn activation(&self) -> std::result::Result<Activation, String> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!("unsupported hidden_act {other:?} (gelu, gelu_new, relu)")),
        }
    }

    /// Checks what `load` would refuse, without weights.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.activation()?;
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// A dense layer with its weight stored transposed: `x (n, in) · w_t (in, out) + b`.
struct Dense {
    w_t: Tensor,
    b: Tensor,
}

impl Dense {
    fn load(vb: VarBuilder, input: usize, output: usize) -> Result<Dense> {
        let w = vb.get((output, input), "weight")?;
        Ok(Dense { w_t: w.t()?.contiguous()?, b: vb.get(output, "bias")? })
    }

    /// Q, K and V as one layer.
    fn fused(vb: VarBuilder, hidden: usize, names: [&str; 3]) -> Result<Dense> {
        let ws = names.iter().map(|n| vb.pp(*n).get((hidden, hidden), "weight")).collect::<Result<Vec<_>>>()?;
        let bs = names.iter().map(|n| vb.pp(*n).get(hidden, "bias")).collect::<Result<Vec<_>>>()?;
        Ok(Dense { w_t: Tensor::cat(&ws, 0)?.t()?.contiguous()?, b: Tensor::cat(&bs, 0)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w_t)?.broadcast_add(&self.b)
    }
}

struct Norm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Norm> {
        // Old checkpoints name them gamma and beta. (Asked before getting:
        // training's variables would make up a missing name.)
        let (w, b) = if vb.contains_tensor("weight") { ("weight", "bias") } else { ("gamma", "beta") };
        let (w, b) = (vb.get(size, w)?, vb.get(size, b)?);
        Ok(Norm { w, b, eps: eps as f32 })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, &self.b, self.eps)
        } else if fused_training(x) {
            super::ops::layer_norm(x, &self.w, &self.b, self.eps)
        } else {
            layer_norm_composed(x, &self.w, &self.b, self.eps)
        }
    }
}

/// Whether training runs [`super::ops`]' fused operations (F32 on a CPU),
/// or composes them from candle's (on a GPU, where candle's kernels run).
fn fused_training(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Layer norm from differentiable operations.
pub(super) fn layer_norm_composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered.broadcast_div(&(var + f64::from(eps))?.sqrt()?)?.broadcast_mul(w)?.broadcast_add(b)
}

/// Training's dropout: BERT's rates, masks drawn from a seeded generator
/// (candle's CPU generator cannot be seeded), scaled by `1 / (1 - p)`.
pub struct Dropout {
    hidden: f32,
    attention: f32,
    rng: rand::rngs::StdRng,
}

impl Dropout {
    pub fn new(config: &Config, seed: u64) -> Dropout {
        Dropout {
            hidden: config.hidden_dropout_prob,
            attention: config.attention_probs_dropout_prob,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// No dropout: training's forward then computes what inference's does.
    #[cfg(test)]
    pub fn disable(&mut self) {
        self.hidden = 0.0;
        self.attention = 0.0;
    }

    fn apply(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..x.elem_count()).map(|_| if self.rng.gen::<f32>() < p { 0.0 } else { keep }).collect();
        x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?)
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// A BERT encoder.
pub struct Bert {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    activation: Activation,
}

impl Bert {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Bert> {
        let activation = config.activation().map_err(candle_core::Error::msg)?;
        config.validate().map_err(candle_core::Error::msg)?;
        // sentence-transformers saves the encoder without a prefix; some checkpoints use "bert.".
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") { vb } else { vb.pp("bert") };
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let embedding = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(e.pp(name).get((rows, h), "weight")?, h))
        };
        let words = embedding("word_embeddings", config.vocab_size)?;
        let positions = embedding("position_embeddings", config.max_position_embeddings)?;
        let types = embedding("token_type_embeddings", config.type_vocab_size)?;
        let norm = Norm::load(e.pp("LayerNorm"), h, config.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                qkv: Dense::fused(a.pp("self"), h, ["query", "key", "value"])?,
                attention_out: Dense::load(a.pp("output.dense"), h, h)?,
                attention_norm: Norm::load(a.pp("output.LayerNorm"), h, config.layer_norm_eps)?,
                intermediate: Dense::load(l.pp("intermediate.dense"), h, config.intermediate_size)?,
                output: Dense::load(l.pp("output.dense"), config.intermediate_size, h)?,
                output_norm: Norm::load(l.pp("output.LayerNorm"), h, config.layer_norm_eps)?,
            });
        }
        Ok(Bert { words, positions, types, norm, layers, heads: config.num_attention_heads, hidden: h, activation })
    }

    /// The same weights as plain f32 rows, for the CPU encoder.
    pub fn into_cpu(self) -> Result<cpu::CpuBert> {
        let rows = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>();
        let linear = |d: &Dense| -> Result<cpu::Linear> {
            let (input, output) = d.w_t.dims2()?;
            Ok(cpu::Linear { w_t: rows(&d.w_t)?, b: rows(&d.b)?, input, output, int8: None })
        };
        let norm =
            |n: &Norm| -> Result<cpu::LayerNorm> { Ok(cpu::LayerNorm { w: rows(&n.w)?, b: rows(&n.b)?, eps: n.eps }) };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(cpu::Layer {
                    qkv: linear(&l.qkv)?,
                    attention_out: linear(&l.attention_out)?,
                    attention_norm: norm(&l.attention_norm)?,
                    intermediate: linear(&l.intermediate)?,
                    output: linear(&l.output)?,
                    output_norm: norm(&l.output_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(cpu::CpuBert {
            hidden: self.hidden,
            heads: self.heads,
            activation: self.activation,
            words: rows(self.words.embeddings())?,
            positions: rows(self.positions.embeddings())?,
            types: rows(self.types.embeddings())?,
            norm: norm(&self.norm)?,
            layers,
        })
    }

    /// `ids`, `type_ids`, `mask`: (batch, seq) u32, right-padded. Returns
    /// (batch, seq, hidden) in the weights' type (the caller converts to F32).
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.run(ids, type_ids, mask, None)
    }

    /// [`Bert::forward`] for training: differentiable throughout, with dropout.
    pub fn forward_train(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        self.run(ids, type_ids, mask, Some(dropout))
    }

    fn run(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let train = dropout.is_some();
        let mut drop = |x: Tensor, attention: bool| -> Result<Tensor> {
            match dropout.as_deref_mut() {
                Some(d) => {
                    let p = if attention { d.attention } else { d.hidden };
                    d.apply(&x, p)
                }
                None => Ok(x),
            }
        };
        let (b, s) = ids.dims2()?;
        let (h, heads) = (self.hidden, self.heads);
        let hd = h / heads;
        let positions = Tensor::arange(0u32, s as u32, ids.device())?;
        let x = (self.words.forward(ids)? + self.types.forward(type_ids)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        let mut x = drop(self.norm.forward(&x, train)?, false)?.reshape((b * s, h))?;
        // Padding gets the most negative score, as transformers does (finfo.min):
        // finite in every precision (half precision's min, not f32's, which
        // would be -inf there and turn 0 · -inf into NaN).
        let dtype = x.dtype();
        let min = match dtype {
            DType::F16 => -65504.0,         // f16::MIN
            DType::BF16 => -3.389_531_4e38, // bf16::MIN
            _ => f64::from(f32::MIN),
        };
        let mask = ((1.0 - mask.to_dtype(DType::F32)?)? * min)?.to_dtype(dtype)?.reshape((b, 1, 1, s))?;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?.reshape((b, s, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?.contiguous()?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let scores = q.matmul(&k.t()?)?.affine(scale, 0.0)?.broadcast_add(&mask)?;
            let probs = if train {
                let probs = if fused_training(&scores) {
                    super::ops::softmax_last_dim(&scores)?
                } else {
                    candle_nn::ops::softmax(&scores, D::Minus1)?
                };
                drop(probs, true)?
            } else {
                candle_nn::ops::softmax_last_dim(&scores)?
            };
            let context = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * s, h))?;
            let attended = (drop(layer.attention_out.forward(&context)?, false)? + &x)?;
            x = layer.attention_norm.forward(&attended, train)?;
            let inner = layer.intermediate.forward(&x)?;
            let inner = match self.activation {
                Activation::Gelu if train && fused_training(&inner) => super::ops::gelu_erf(&inner)?,
                Activation::Gelu => inner.gelu_erf()?,
                Activation::GeluTanh => inner.gelu()?,
                Activation::Relu => inner.relu()?,
            };
            let out = (drop(layer.output.forward(&inner)?, false)? + &x)?;
            x = layer.output_norm.forward(&out, train)?;
        }
        x.reshape((b, s, h))
    }
}
