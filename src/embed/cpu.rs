//! The CPU encoder: BERT's forward pass on plain f32 buffers.
//!
//! Where the time goes in a tensor-library forward on a CPU (measured on
//! all-MiniLM-L6-v2, 2 cores): the dense products are only 40%; the rest is
//! broadcast bias adds, a strided mask add, a scalar `exp` per softmax
//! element, GELU, and per-head attention products too small for the matrix
//! kernels to spread over cores. This encoder removes each of those:
//!
//! - **No padding at all.** A batch is its texts' real tokens packed one after
//!   another (rows of one matrix), so dense layers do no work for padding and
//!   attention needs no mask: each text attends over its own rows only. This
//!   is exact: a padded key gets weight `exp(finfo.min - max) = 0` in f32.
//! - **Dense layers** are one `gemm` call each (the kernels candle uses, with
//!   AVX-512 picked at run time when the CPU has it), on weights transposed
//!   once at load; the bias, and the residual where there is one, are written
//!   into the destination first and the product is added to them.
//! - **Attention** runs per (text, head) in parallel, straight from the fused
//!   Q·K·V rows, with the scale folded into the product and a fused softmax.
//! - **Element-wise work** (softmax, GELU, layer norm) is written so that the
//!   compiler vectorises it, and compiled three times (AVX-512, AVX2+FMA,
//!   baseline) with the variant picked at run time: one binary for every
//!   x86-64 CPU.
//!
//! The arithmetic is BERT's; the parity test against sentence-transformers
//! holds it to 1e-3 (measured: at most 3e-7 on the reference texts).

use gemm::Parallelism;
use rayon::prelude::*;

/// `x (rows, input) · w_t (input, output) + b`, with `w_t` row-major.
pub(super) struct Linear {
    pub w_t: Vec<f32>,
    pub b: Vec<f32>,
    pub input: usize,
    pub output: usize,
}

pub(super) struct LayerNorm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub eps: f32,
}

pub(super) struct Layer {
    pub qkv: Linear,
    pub attention_out: Linear,
    pub attention_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    Gelu,
    GeluTanh,
    Relu,
}

/// A BERT encoder with its weights as plain f32 rows.
pub(super) struct CpuBert {
    pub hidden: usize,
    pub heads: usize,
    pub activation: Activation,
    /// Embedding tables, (rows, hidden) row-major.
    pub words: Vec<f32>,
    pub positions: Vec<f32>,
    pub types: Vec<f32>,
    pub norm: LayerNorm,
    pub layers: Vec<Layer>,
}

/// One text's tokens.
pub(super) struct Tokens<'a> {
    pub ids: &'a [u32],
    pub type_ids: &'a [u32],
}

/// A raw pointer that may cross threads: each task writes a disjoint region.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole Send wrapper).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

impl CpuBert {
    /// The last hidden state of every real token, texts one after another:
    /// `(sum of lengths, hidden)` row-major.
    pub fn forward(&self, texts: &[Tokens<'_>]) -> Vec<f32> {
        let h = self.hidden;
        let offsets: Vec<usize> = texts
            .iter()
            .scan(0, |at, t| {
                let o = *at;
                *at += t.ids.len();
                Some(o)
            })
            .collect();
        let n: usize = texts.iter().map(|t| t.ids.len()).sum();
        if n == 0 {
            return Vec::new();
        }
        let threads = rayon::current_num_threads();

        // Embeddings: word + position + type, then layer norm.
        let mut x = vec![0f32; n * h];
        x.par_chunks_mut(h).enumerate().for_each(|(row, out)| {
            let t = offsets.partition_point(|&o| o <= row) - 1;
            let pos = row - offsets[t];
            let (id, ty) = (texts[t].ids[pos] as usize, texts[t].type_ids[pos] as usize);
            let (w, p, y) = (&self.words[id * h..][..h], &self.positions[pos * h..][..h], &self.types[ty * h..][..h]);
            for i in 0..h {
                out[i] = w[i] + p[i] + y[i];
            }
        });
        layer_norm_rows(&mut x, h, &self.norm);

        let intermediate = self.layers.first().map_or(0, |l| l.intermediate.output);
        let mut qkv = vec![0f32; n * 3 * h];
        let mut context = vec![0f32; n * h];
        let mut tmp = vec![0f32; n * h];
        let mut inner = vec![0f32; n * intermediate];
        for layer in &self.layers {
            linear(&mut qkv, &x, &layer.qkv, None, threads);
            self.attention(&qkv, &mut context, texts, &offsets);
            linear(&mut tmp, &context, &layer.attention_out, Some(&x), threads);
            layer_norm_rows(&mut tmp, h, &layer.attention_norm);
            std::mem::swap(&mut x, &mut tmp);
            linear(&mut inner, &x, &layer.intermediate, None, threads);
            activate(&mut inner, self.activation);
            linear(&mut tmp, &inner, &layer.output, Some(&x), threads);
            layer_norm_rows(&mut tmp, h, &layer.output_norm);
            std::mem::swap(&mut x, &mut tmp);
        }
        x
    }

    /// Multi-head self-attention of each text over its own tokens:
    /// `context = softmax(Q·Kᵀ/√d)·V`, per (text, head) in parallel.
    fn attention(&self, qkv: &[f32], context: &mut [f32], texts: &[Tokens<'_>], offsets: &[usize]) {
        let h = self.hidden;
        let hd = h / self.heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let out = SharedMut(context.as_mut_ptr());
        let tasks: Vec<(usize, usize)> =
            (0..texts.len()).flat_map(|t| (0..self.heads).map(move |head| (t, head))).collect();
        tasks.into_par_iter().for_each_init(Vec::new, |scores: &mut Vec<f32>, (t, head)| {
            let len = texts[t].ids.len();
            if len == 0 {
                return;
            }
            let base = offsets[t] * 3 * h + head * hd;
            scores.clear();
            scores.resize(len * len, 0.0);
            // SAFETY: every pointer stays inside `qkv`, `scores` or this
            // (text, head)'s block of `context` (rows offsets[t].., columns
            // head*hd..), which no other task writes; strides are in elements.
            unsafe {
                // scores = scale · Q · Kᵀ
                gemm::gemm(
                    len,
                    len,
                    hd,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    qkv.as_ptr().add(base),
                    1,
                    (3 * h) as isize,
                    qkv.as_ptr().add(base + h),
                    (3 * h) as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            softmax_rows(scores, len);
            unsafe {
                // context = P · V
                gemm::gemm(
                    len,
                    hd,
                    len,
                    out.ptr().add(offsets[t] * h + head * hd),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    qkv.as_ptr().add(base + 2 * h),
                    1,
                    (3 * h) as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
    }
}

/// `dst = x · w_t + b (+ residual)`: the bias (and residual) are written first
/// and the product is added to them in one `gemm` call.
fn linear(dst: &mut [f32], x: &[f32], l: &Linear, residual: Option<&[f32]>, threads: usize) {
    let rows = x.len() / l.input;
    let dst = &mut dst[..rows * l.output];
    match residual {
        Some(r) => dst.par_chunks_mut(l.output).zip(r.par_chunks(l.output)).for_each(|(d, r)| {
            for ((d, r), b) in d.iter_mut().zip(r).zip(&l.b) {
                *d = r + b;
            }
        }),
        None => dst.par_chunks_mut(l.output).for_each(|d| d.copy_from_slice(&l.b)),
    }
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: dst is (rows, output), x is (rows, input), w_t is (input, output),
    // all row-major and as long as those shapes need.
    unsafe {
        gemm::gemm(
            rows,
            l.output,
            l.input,
            dst.as_mut_ptr(),
            1,
            l.output as isize,
            true,
            x.as_ptr(),
            1,
            l.input as isize,
            l.w_t.as_ptr(),
            1,
            l.output as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Rows at a time for the element-wise kernels (enough work per task).
const ROWS_PER_TASK: usize = 16;

fn layer_norm_rows(x: &mut [f32], h: usize, norm: &LayerNorm) {
    x.par_chunks_mut(h * ROWS_PER_TASK).for_each(|rows| {
        for row in rows.chunks_exact_mut(h) {
            simd::layer_norm(row, &norm.w, &norm.b, norm.eps);
        }
    });
}

fn softmax_rows(scores: &mut [f32], len: usize) {
    for row in scores.chunks_exact_mut(len) {
        simd::softmax(row);
    }
}

fn activate(x: &mut [f32], activation: Activation) {
    x.par_chunks_mut(4096).for_each(|c| match activation {
        Activation::Gelu => simd::gelu_erf(c),
        Activation::GeluTanh => simd::gelu_tanh(c),
        Activation::Relu => c.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

/// Element-wise kernels, each compiled for AVX-512, AVX2+FMA and the
/// baseline, the best the CPU runs picked at run time.
pub(super) mod simd {
    /// Lanes of the multi-accumulator reductions (lets the compiler use
    /// vector adds: a float sum in order cannot be vectorised).
    const LANES: usize = 16;

    macro_rules! dispatch {
        ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
            pub fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn v4($($arg: $ty),*) { $body($($arg),*) }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn v3($($arg: $ty),*) { $body($($arg),*) }
                    if std::is_x86_feature_detected!("avx512f") {
                        // SAFETY: the CPU has the features v4 is compiled for.
                        return unsafe { v4($($arg),*) };
                    }
                    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                        // SAFETY: as above, for v3.
                        return unsafe { v3($($arg),*) };
                    }
                }
                $body($($arg),*)
            }
        };
    }

    dispatch!(softmax, softmax_body, (row: &mut [f32]));
    dispatch!(layer_norm, layer_norm_body, (row: &mut [f32], w: &[f32], b: &[f32], eps: f32));
    dispatch!(gelu_erf, gelu_erf_body, (x: &mut [f32]));
    dispatch!(gelu_tanh, gelu_tanh_body, (x: &mut [f32]));
    // Training's backward passes (`super::super::ops`): the gradient `g` is
    // turned into the gradient of the input, in place.
    dispatch!(gelu_erf_grad, gelu_erf_grad_body, (x: &[f32], g: &mut [f32]));
    dispatch!(softmax_grad, softmax_grad_body, (y: &[f32], g: &mut [f32]));
    dispatch!(
        layer_norm_grad,
        layer_norm_grad_body,
        (x: &[f32], w: &[f32], g: &mut [f32], dw: &mut [f32], db: &mut [f32], eps: f32)
    );

    #[inline(always)]
    fn sum(x: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                acc[i] += c[i];
            }
        }
        acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }

    #[inline(always)]
    fn max(x: &[f32]) -> f32 {
        let mut acc = [f32::MIN; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
            }
        }
        acc.iter().chain(chunks.remainder()).fold(f32::MIN, |m, &v| if v > m { v } else { m })
    }

    /// `e^x` to about 2 ulp (Cephes' expf), without branches or float-to-int
    /// casts (Rust's saturating `as i32` does not vectorise), so it vectorises.
    /// Below -87.3, where `e^x` leaves f32's normal range, it is 0: subnormal
    /// results (masked attention scores, far tails) make every later product
    /// with them crawl on x86.
    #[inline(always)]
    pub(super) fn exp(x: f32) -> f32 {
        // Adding 1.5·2²³ rounds to an integer n held in the low mantissa bits.
        const MAGIC: f32 = 12_582_912.0;
        const LOWEST: f32 = -87.3;
        let under = x < LOWEST;
        let x = x.clamp(LOWEST, 88.3);
        let t = x * std::f32::consts::LOG2_E + MAGIC;
        let n = t - MAGIC;
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let mut p = 1.987_569_1e-4f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 0.166_666_65;
        p = p * r + 0.5;
        let e = p * r * r + r + 1.0;
        // 2^n: n + 127 in the exponent field (t's bits are 0x4B40_0000 + n).
        let y = e * f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
        if under {
            0.0
        } else {
            y
        }
    }

    #[inline(always)]
    fn softmax_body(row: &mut [f32]) {
        let m = max(row);
        for v in row.iter_mut() {
            *v = exp(*v - m);
        }
        let inv = 1.0 / sum(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }

    #[inline(always)]
    fn layer_norm_body(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let n = row.len() as f32;
        let mean = sum(row) / n;
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                let d = c[i] - mean;
                acc[i] += d * d;
            }
        }
        let var =
            (acc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * w + b;
        }
    }

    /// `(erf(z), e^(-z²))`, erf from Abramowitz & Stegun 7.1.26
    /// (|error| < 1.5e-7); GELU's derivative needs the exponential too.
    #[inline(always)]
    fn erf_parts(z: f32) -> (f32, f32) {
        let a = z.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let e = exp(-a * a);
        ((1.0 - poly * e).copysign(z), e)
    }

    /// Exact GELU, `x/2 · (1 + erf(x/√2))`.
    #[inline(always)]
    fn gelu_erf_body(x: &mut [f32]) {
        for y in x.iter_mut() {
            let (erf, _) = erf_parts(*y * std::f32::consts::FRAC_1_SQRT_2);
            *y = 0.5 * *y * (1.0 + erf);
        }
    }

    /// GELU's derivative times `g`: `(1 + erf(x/√2))/2 + x·e^(-x²/2)/√(2π)`,
    /// with the forward pass's erf.
    #[inline(always)]
    fn gelu_erf_grad_body(x: &[f32], g: &mut [f32]) {
        for (g, &x) in g.iter_mut().zip(x) {
            // e^(-z²) = e^(-x²/2)
            let (erf, e) = erf_parts(x * std::f32::consts::FRAC_1_SQRT_2);
            *g *= 0.5 * (1.0 + erf) + x * 0.398_942_3 * e;
        }
    }

    /// Softmax's backward pass for one row: `y · (g - Σ g·y)`.
    #[inline(always)]
    fn softmax_grad_body(y: &[f32], g: &mut [f32]) {
        let mut acc = [0f32; LANES];
        let (mut yc, mut gc) = (y.chunks_exact(LANES), g.chunks_exact(LANES));
        for (a, b) in (&mut yc).zip(&mut gc) {
            for i in 0..LANES {
                acc[i] += a[i] * b[i];
            }
        }
        let dot = acc.iter().sum::<f32>() + yc.remainder().iter().zip(gc.remainder()).map(|(a, b)| a * b).sum::<f32>();
        for (g, y) in g.iter_mut().zip(y) {
            *g = y * (*g - dot);
        }
    }

    /// Layer norm's backward pass for one row `x`: `g` becomes the input's
    /// gradient, and the row's share of the weight's and bias's gradients
    /// is added to `dw` and `db`.
    #[inline(always)]
    fn layer_norm_grad_body(x: &[f32], w: &[f32], g: &mut [f32], dw: &mut [f32], db: &mut [f32], eps: f32) {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        let (mut s1, mut s2) = (0f32, 0f32);
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * inv;
            dw[i] += g[i] * xhat;
            db[i] += g[i];
            let gw = g[i] * w[i];
            s1 += gw;
            s2 += gw * xhat;
        }
        let (m1, m2) = (s1 / n, s2 / n);
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * inv;
            g[i] = inv * (g[i] * w[i] - m1 - xhat * m2);
        }
    }

    /// GELU's tanh form, `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    #[inline(always)]
    fn gelu_tanh_body(x: &mut [f32]) {
        for y in x.iter_mut() {
            let u = 0.797_884_6 * (*y + 0.044_715 * *y * *y * *y);
            // tanh(u) = 1 - 2/(e^{2u} + 1)
            let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
            *y = 0.5 * *y * (1.0 + tanh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::simd;

    #[test]
    fn fast_exp_is_accurate_where_softmax_and_gelu_use_it() {
        for i in -8700..=880 {
            let x = i as f32 / 10.0;
            let (ours, exact) = (simd::exp(x), x.exp());
            assert!((ours - exact).abs() <= exact * 4e-7 + 1e-37, "exp({x}) = {ours}, not {exact}");
        }
        // Past f32's normal range: 0, never a subnormal.
        assert!(simd::exp(-87.3).is_normal());
        for x in [-87.31f32, -100.0, -1e30, f32::MIN] {
            assert_eq!(simd::exp(x), 0.0, "exp({x})");
        }
    }

    #[test]
    fn kernels_match_the_textbook_formulas() {
        let xs: Vec<f32> = (-400..400).map(|i| i as f32 / 50.0).collect();
        let mut g = xs.clone();
        simd::gelu_erf(&mut g);
        let mut t = xs.clone();
        simd::gelu_tanh(&mut t);
        for ((x, g), t) in xs.iter().zip(&g).zip(&t) {
            let exact = 0.5 * *x as f64 * (1.0 + libm_erf(*x as f64 / std::f64::consts::SQRT_2));
            assert!((*g as f64 - exact).abs() < 1e-5, "gelu({x}) = {g}, not {exact}");
            let tanh = 0.5 * *x as f64 * (1.0 + (0.7978845608 * (*x as f64 + 0.044715 * (*x as f64).powi(3))).tanh());
            assert!((*t as f64 - tanh).abs() < 1e-5, "gelu_tanh({x}) = {t}, not {tanh}");
        }
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let expected: Vec<f64> = {
            let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        simd::softmax(&mut row);
        for (a, b) in row.iter().zip(&expected) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        let mut row: Vec<f32> = (0..50).map(|i| i as f32 * 0.1 - 2.0).collect();
        let (w, b) = (vec![2.0f32; 50], vec![0.5f32; 50]);
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 50.0;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 50.0;
        let expected: Vec<f64> = row.iter().map(|&v| (v as f64 - mean) / (var + 1e-12).sqrt() * 2.0 + 0.5).collect();
        simd::layer_norm(&mut row, &w, &b, 1e-12);
        for (a, b) in row.iter().zip(&expected) {
            assert!((*a as f64 - b).abs() < 1e-5);
        }
    }

    /// erf in f64 (Abramowitz & Stegun 7.1.28 is too coarse; this is W. J. Cody's
    /// rational form via the complementary function's continued fraction, enough
    /// for a 1e-5 check).
    fn libm_erf(x: f64) -> f64 {
        // Series for small |x|, continued fraction for erfc otherwise.
        let a = x.abs();
        let r = if a < 2.5 {
            let mut sum = a;
            let mut term = a;
            let mut n = 0.0;
            loop {
                n += 1.0;
                term *= -a * a / n;
                let add = term / (2.0 * n + 1.0);
                sum += add;
                if add.abs() < 1e-17 {
                    break;
                }
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = k as f64 / 2.0 / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        r.copysign(x)
    }
}
