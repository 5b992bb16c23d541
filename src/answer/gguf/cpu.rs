//! The chat model on the CPU, our own forward pass over int8 weights
//! ([`kernels::q8`]): llama (SmolLM2, Llama 3.x) and qwen2, the same network
//! as candle's quantized models compute (their rotary embeddings, norms and
//! attention), with what generating a token on a CPU needs instead of what
//! a graph of tensors gives:
//!
//! - every matrix as Q8_0 blocks, a byte a weight, multiplied by kernels
//!   chosen at run time (a token reads each weight once, so bytes are time);
//! - the products that share an input done in one pass (query, key and
//!   value; gate and up): five hand-offs to the threads a layer;
//! - a key and value cache allocated once for the whole window and written
//!   in place (pages are mapped as positions are first written);
//! - a prompt taken in pieces of any length from any position, so that a
//!   long prompt can be stopped between pieces.

use candle_core::quantized::gguf_file::Content;
use candle_core::Device;
use rayon::prelude::*;

use super::tokenizer::{md_int, md_str};
use kernels::q8::{Q8Matrix, Q8Rows, BLOCK};
use kernels::simd;

/// Which elements the rotary embedding turns together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rope {
    /// Neighbours `(2i, 2i + 1)`: llama as GGUF stores it (candle's `rope_i`).
    Interleaved,
    /// Halves `(i, i + d/2)`: qwen2 (candle's `rope`).
    Halves,
}

struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// Query, key and value, one below the other.
    qkv: Q8Matrix,
    qkv_bias: Option<Vec<f32>>,
    output: Q8Matrix,
    /// Gate and up, one below the other.
    gate_up: Q8Matrix,
    down: Q8Matrix,
}

/// The shape of a network, from its metadata and tensors.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
    eps: f32,
    rope_base: f32,
}

/// A llama or qwen2 network with int8 weights and its key and value cache.
pub struct CpuModel {
    shape: Shape,
    ffn: usize,
    vocab: usize,
    rope: Rope,
    /// Token embeddings; also the output matrix when the model ties them.
    embed: Q8Matrix,
    output: Option<Q8Matrix>,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    /// Positions the cache holds.
    window: usize,
    /// `cos` and `sin` of each position's angles: `window × head_dim / 2`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// `layer × kv head × position × head_dim`.
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Positions written (the next token's position).
    cached: usize,
}

impl std::fmt::Debug for CpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuModel").field("shape", &self.shape).field("window", &self.window).finish_non_exhaustive()
    }
}

fn shape(ct: &Content) -> Result<(Shape, Rope), String> {
    let arch = md_str(ct, "general.architecture").unwrap_or_default();
    let rope = match arch {
        "llama" => Rope::Interleaved,
        "qwen2" => Rope::Halves,
        other => return Err(format!("architecture {other:?}")),
    };
    let int = |key: &str| md_int(ct, &format!("{arch}.{key}")).filter(|&v| v > 0).map(|v| v as usize);
    let need = |key: &str| int(key).ok_or_else(|| format!("no {arch}.{key} in its metadata"));
    let float = |key: &str| match ct.metadata.get(&format!("{arch}.{key}")) {
        Some(v) => v.to_f32().ok(),
        None => None,
    };
    let (hidden, heads) = (need("embedding_length")?, need("attention.head_count")?);
    let kv_heads = int("attention.head_count_kv").unwrap_or(heads);
    let head_dim = hidden / heads;
    if md_int(ct, &format!("{arch}.expert_count")).unwrap_or(0) > 1 {
        return Err("a mixture of experts".into());
    }
    if head_dim * heads != hidden || head_dim % 2 == 1 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(format!("{heads} heads ({kv_heads} for keys and values) of {hidden} values"));
    }
    if rope == Rope::Interleaved && int("rope.dimension_count").is_some_and(|r| r != head_dim) {
        return Err("rotary embeddings over part of a head".into());
    }
    let shape = Shape {
        hidden,
        heads,
        kv_heads,
        head_dim,
        layers: need("block_count")?,
        eps: float("attention.layer_norm_rms_epsilon").ok_or("no layer_norm_rms_epsilon in its metadata")?,
        rope_base: float("rope.freq_base").unwrap_or(10_000.0),
    };
    Ok((shape, rope))
}

/// Whether [`CpuModel`] runs the network in `ct`, and if not, why.
pub fn supported(ct: &Content) -> Result<(), String> {
    let (shape, _) = shape(ct)?;
    for (name, info) in &ct.tensor_infos {
        let dims = info.shape.dims();
        if name.ends_with(".weight") && dims.len() == 2 && dims[1] % BLOCK != 0 {
            return Err(format!("{name} has rows of {} values, not whole blocks of {BLOCK}", dims[1]));
        }
    }
    if shape.hidden % BLOCK != 0 {
        return Err(format!("{} values a token, not whole blocks of {BLOCK}", shape.hidden));
    }
    Ok(())
}

fn read(
    ct: &Content,
    reader: &mut (impl std::io::Read + std::io::Seek),
    name: &str,
) -> candle_core::Result<(Vec<f32>, Vec<usize>)> {
    let t = ct.tensor(reader, name, &Device::Cpu)?;
    let dims = t.shape().dims().to_vec();
    Ok((t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?, dims))
}

fn matrix(
    ct: &Content,
    reader: &mut (impl std::io::Read + std::io::Seek),
    name: &str,
) -> candle_core::Result<Q8Matrix> {
    let (values, dims) = read(ct, reader, name)?;
    match dims[..] {
        [rows, cols] if cols % BLOCK == 0 => Ok(Q8Matrix::quantize(&values, rows, cols)),
        _ => candle_core::bail!("{name}: a matrix in blocks of {BLOCK} expected, its shape is {dims:?}"),
    }
}

fn vector(
    ct: &Content,
    reader: &mut (impl std::io::Read + std::io::Seek),
    name: &str,
    len: usize,
) -> candle_core::Result<Vec<f32>> {
    let (values, _) = read(ct, reader, name)?;
    if values.len() != len {
        candle_core::bail!("{name}: {len} values expected, it has {}", values.len());
    }
    Ok(values)
}

impl CpuModel {
    /// Reads the network from a GGUF file (quantizing every matrix to
    /// Q8_0), for prompts and answers of `window` tokens together.
    pub fn load(
        ct: &Content,
        reader: &mut (impl std::io::Read + std::io::Seek),
        window: usize,
    ) -> candle_core::Result<CpuModel> {
        supported(ct).map_err(candle_core::Error::msg)?;
        let (shape, rope) = shape(ct).map_err(candle_core::Error::msg)?;
        let Shape { hidden, heads, kv_heads, head_dim, layers: count, .. } = shape;
        let embed = matrix(ct, reader, "token_embd.weight")?;
        if embed.cols != hidden {
            candle_core::bail!("token_embd.weight: rows of {hidden} expected, they have {}", embed.cols);
        }
        let output = if ct.tensor_infos.contains_key("output.weight") {
            Some(matrix(ct, reader, "output.weight")?)
        } else {
            None
        };
        let norm = vector(ct, reader, "output_norm.weight", hidden)?;
        let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
        let mut layers = Vec::with_capacity(count);
        let mut ffn = 0;
        for l in 0..count {
            let name = |part: &str| format!("blk.{l}.{part}");
            let parts = ["attn_q.weight", "attn_k.weight", "attn_v.weight"];
            let qkv: Vec<Q8Matrix> = parts.iter().map(|p| matrix(ct, reader, &name(p))).collect::<Result<_, _>>()?;
            if (qkv[0].rows, qkv[1].rows, qkv[2].rows) != (q_dim, kv_dim, kv_dim)
                || qkv.iter().any(|m| m.cols != hidden)
            {
                candle_core::bail!("blk.{l}: query, key and value matrices of unexpected shapes");
            }
            let qkv_bias = if ct.tensor_infos.contains_key(&name("attn_q.bias")) {
                let mut bias = vector(ct, reader, &name("attn_q.bias"), q_dim)?;
                bias.extend(vector(ct, reader, &name("attn_k.bias"), kv_dim)?);
                bias.extend(vector(ct, reader, &name("attn_v.bias"), kv_dim)?);
                Some(bias)
            } else {
                None
            };
            let gate = matrix(ct, reader, &name("ffn_gate.weight"))?;
            let up = matrix(ct, reader, &name("ffn_up.weight"))?;
            let down = matrix(ct, reader, &name("ffn_down.weight"))?;
            let output = matrix(ct, reader, &name("attn_output.weight"))?;
            ffn = gate.rows;
            if up.rows != ffn || gate.cols != hidden || up.cols != hidden || (down.rows, down.cols) != (hidden, ffn) {
                candle_core::bail!("blk.{l}: feed-forward matrices of unexpected shapes");
            }
            if (output.rows, output.cols) != (hidden, q_dim) {
                candle_core::bail!("blk.{l}: attention output matrix of an unexpected shape");
            }
            layers.push(Layer {
                attn_norm: vector(ct, reader, &name("attn_norm.weight"), hidden)?,
                ffn_norm: vector(ct, reader, &name("ffn_norm.weight"), hidden)?,
                qkv: Q8Matrix::stack(qkv),
                qkv_bias,
                output,
                gate_up: Q8Matrix::stack(vec![gate, up]),
                down,
            });
        }
        let vocab = output.as_ref().map_or(embed.rows, |o| o.rows);
        if output.as_ref().is_some_and(|o| o.cols != hidden) {
            candle_core::bail!("output.weight: rows of {hidden} expected");
        }
        // As candle computes them: θ_i = base^(-2i/d), the angle p·θ_i in F32.
        let half = head_dim / 2;
        let theta: Vec<f32> =
            (0..head_dim).step_by(2).map(|i| 1f32 / shape.rope_base.powf(i as f32 / head_dim as f32)).collect();
        let (mut cos, mut sin) = (Vec::with_capacity(window * half), Vec::with_capacity(window * half));
        for p in 0..window {
            for t in &theta {
                let angle = p as f32 * t;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        // Zeroed allocations: the system maps their pages when first written.
        let cache = count * kv_heads * window * head_dim;
        Ok(CpuModel {
            shape,
            ffn,
            vocab,
            rope,
            embed,
            output,
            norm,
            layers,
            window,
            cos,
            sin,
            keys: vec![0f32; cache],
            values: vec![0f32; cache],
            cached: 0,
        })
    }

    /// Bytes of weights held (the cache not counted).
    pub fn weight_bytes(&self) -> usize {
        let layers: usize =
            self.layers.iter().map(|l| l.qkv.bytes() + l.output.bytes() + l.gate_up.bytes() + l.down.bytes()).sum();
        layers + self.embed.bytes() + self.output.as_ref().map_or(0, Q8Matrix::bytes)
    }

    /// The next token's logits after `ids`, placed from `position` on
    /// (which must be where the cache ends, or 0 to start again).
    pub fn forward(&mut self, ids: &[u32], position: usize) -> Result<Vec<f32>, String> {
        let n = ids.len();
        if n == 0 {
            return Err("no tokens".into());
        }
        if position > self.cached {
            return Err(format!("position {position} after the cache's end {}", self.cached));
        }
        if position + n > self.window {
            return Err(format!("{} positions, the window is {}", position + n, self.window));
        }
        if let Some(id) = ids.iter().find(|&&id| id as usize >= self.embed.rows) {
            return Err(format!("token {id} outside the vocabulary of {}", self.embed.rows));
        }
        let Shape { hidden: h, heads, kv_heads, head_dim: d, eps, .. } = self.shape;
        let (q_dim, kv_dim) = (heads * d, kv_heads * d);
        let width = q_dim + 2 * kv_dim;
        let mut x = vec![0f32; n * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(ids) {
            self.embed.row_into(id as usize, row);
        }
        let mut normed = vec![0f32; n * h];
        let mut qkv = vec![0f32; n * width];
        let mut attended = vec![0f32; n * q_dim];
        let mut gate_up = vec![0f32; n * 2 * self.ffn];
        let mut act = vec![0f32; n * self.ffn];
        let mut added = vec![0f32; n * h];
        let mut rows = Q8Rows::default();
        for l in 0..self.layers.len() {
            let layer = &self.layers[l];
            rms_norm(&x, &layer.attn_norm, eps, &mut normed);
            rows.quantize(&normed, h);
            layer.qkv.matmul(&rows, &mut qkv);
            for (t, row) in qkv.chunks_exact_mut(width).enumerate() {
                if let Some(bias) = &layer.qkv_bias {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
                let p = position + t;
                let (cos, sin) = (&self.cos[p * d / 2..(p + 1) * d / 2], &self.sin[p * d / 2..(p + 1) * d / 2]);
                for head in row[..q_dim + kv_dim].chunks_exact_mut(d) {
                    rotate(head, cos, sin, self.rope);
                }
                for g in 0..kv_heads {
                    let at = ((l * kv_heads + g) * self.window + p) * d;
                    self.keys[at..at + d].copy_from_slice(&row[q_dim + g * d..q_dim + (g + 1) * d]);
                    self.values[at..at + d].copy_from_slice(&row[q_dim + kv_dim + g * d..q_dim + kv_dim + (g + 1) * d]);
                }
            }
            self.attend(l, n, position, &qkv, &mut attended);
            let layer = &self.layers[l];
            rows.quantize(&attended, q_dim);
            layer.output.matmul(&rows, &mut added);
            x.iter_mut().zip(&added).for_each(|(x, a)| *x += a);
            rms_norm(&x, &layer.ffn_norm, eps, &mut normed);
            rows.quantize(&normed, h);
            layer.gate_up.matmul(&rows, &mut gate_up);
            simd::silu_mul(&gate_up, &mut act, self.ffn);
            rows.quantize(&act, self.ffn);
            layer.down.matmul(&rows, &mut added);
            x.iter_mut().zip(&added).for_each(|(x, a)| *x += a);
        }
        self.cached = position + n;
        let mut last = vec![0f32; h];
        rms_norm(&x[(n - 1) * h..], &self.norm, eps, &mut last);
        rows.quantize(&last, h);
        let mut logits = vec![0f32; self.vocab];
        self.output.as_ref().unwrap_or(&self.embed).matmul(&rows, &mut logits);
        Ok(logits)
    }

    /// Attention of the `n` tokens from `position` in layer `l` (their keys
    /// and values already in the cache) into `out` (`n × heads × head_dim`).
    fn attend(&self, l: usize, n: usize, position: usize, qkv: &[f32], out: &mut [f32]) {
        let Shape { heads, kv_heads, head_dim: d, .. } = self.shape;
        let width = (heads + 2 * kv_heads) * d;
        let scale = 1.0 / (d as f32).sqrt();
        let group = heads / kv_heads;
        // Each head in a buffer of its own (`head × token × d`), the heads
        // shared among the threads.
        let mut by_head = vec![0f32; heads * n * d];
        by_head.par_chunks_mut(n * d).enumerate().for_each(|(head, o)| {
            let g = head / group;
            let base = (l * kv_heads + g) * self.window * d;
            let mut scores = vec![0f32; position + n];
            for (t, o) in o.chunks_exact_mut(d).enumerate() {
                let len = position + t + 1;
                let q = &qkv[t * width + head * d..t * width + (head + 1) * d];
                let keys = &self.keys[base..base + len * d];
                let values = &self.values[base..base + len * d];
                simd::attend_one(q, keys, values, scale, &mut scores[..len], o);
            }
        });
        for (head, part) in by_head.chunks_exact(n * d).enumerate() {
            for (t, v) in part.chunks_exact(d).enumerate() {
                out[t * heads * d + head * d..t * heads * d + (head + 1) * d].copy_from_slice(v);
            }
        }
    }
}

/// `out = x / rms(x) · w`, row by row (candle's `rms_norm`).
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (x, out) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let mean = x.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((o, x), w) in out.iter_mut().zip(x).zip(w) {
            *o = x * inv * w;
        }
    }
}

/// Turns one head's values by a position's angles.
fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32], rope: Rope) {
    let half = head.len() / 2;
    for i in 0..half {
        let (a, b) = match rope {
            Rope::Interleaved => (2 * i, 2 * i + 1),
            Rope::Halves => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos[i] - x1 * sin[i];
        head[b] = x0 * sin[i] + x1 * cos[i];
    }
}
