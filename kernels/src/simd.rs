//! Element-wise kernels, each compiled for AVX-512, AVX2+FMA and the
//! baseline, the best the CPU runs picked at run time: the BERT encoder's
//! norms, softmax and activations (and their gradients for training), and
//! the chat model's attention and gated activation.

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
pub fn sum(x: &[f32]) -> f32 {
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
pub fn max(x: &[f32]) -> f32 {
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
pub fn exp(x: f32) -> f32 {
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
    let var = (acc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / n;
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

dispatch!(attend_one, attend_one_body, (q: &[f32], keys: &[f32], values: &[f32], scale: f32, scores: &mut [f32], out: &mut [f32]));
dispatch!(silu_mul, silu_mul_body, (gate_up: &[f32], out: &mut [f32], width: usize));

/// One query's attention (`q`, one head) over the positions of `keys` and
/// `values` (`scores.len()` rows of `q.len()` values each): the softmax of
/// the scaled dot products, then the values weighted by it, into `out`.
/// `scores` is work space.
#[inline(always)]
fn attend_one_body(q: &[f32], keys: &[f32], values: &[f32], scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let d = q.len();
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(d)) {
        let mut acc = [0f32; LANES];
        let (mut qc, mut kc) = (q.chunks_exact(LANES), k.chunks_exact(LANES));
        for (a, b) in (&mut qc).zip(&mut kc) {
            for i in 0..LANES {
                acc[i] += a[i] * b[i];
            }
        }
        let rest: f32 = qc.remainder().iter().zip(kc.remainder()).map(|(a, b)| a * b).sum();
        *s = (acc.iter().sum::<f32>() + rest) * scale;
    }
    let m = max(scores);
    for s in scores.iter_mut() {
        *s = exp(*s - m);
    }
    let inv = 1.0 / sum(scores);
    out.fill(0.0);
    for (p, v) in scores.iter().zip(values.chunks_exact(d)) {
        let p = p * inv;
        for (o, v) in out.iter_mut().zip(v) {
            *o += p * v;
        }
    }
}

/// `silu(gate) · up` (SiLU: `x / (1 + e^-x)`) for rows of `[gate | up]`,
/// `width` values each half, into rows of `width`.
#[inline(always)]
fn silu_mul_body(gate_up: &[f32], out: &mut [f32], width: usize) {
    for (gu, o) in gate_up.chunks_exact(2 * width).zip(out.chunks_exact_mut(width)) {
        let (g, u) = gu.split_at(width);
        for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super as simd;

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

    #[test]
    fn attention_and_gated_activation_match_the_formulas() {
        let d = 20;
        let positions = 7;
        let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.3).cos()).collect();
        let keys: Vec<f32> = (0..positions * d).map(|i| (i as f32 * 0.17).sin() * 2.0).collect();
        let values: Vec<f32> = (0..positions * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let scale = 0.25;
        let scores: Vec<f64> = keys
            .chunks(d)
            .map(|k| k.iter().zip(&q).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale as f64)
            .collect();
        let m = scores.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let total: f64 = e.iter().sum();
        let mut out = vec![9f32; d];
        let mut work = vec![0f32; positions];
        simd::attend_one(&q, &keys, &values, scale, &mut work, &mut out);
        for i in 0..d {
            let want: f64 = (0..positions).map(|p| e[p] / total * values[p * d + i] as f64).sum();
            assert!((out[i] as f64 - want).abs() < 1e-5, "{i}: {} {want}", out[i]);
        }
        let gate_up: Vec<f32> = (0..2 * 2 * 9).map(|i| i as f32 * 0.4 - 5.0).collect();
        let mut act = vec![0f32; 2 * 9];
        simd::silu_mul(&gate_up, &mut act, 9);
        for r in 0..2 {
            for i in 0..9 {
                let (g, u) = (gate_up[r * 18 + i] as f64, gate_up[r * 18 + 9 + i] as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                assert!((act[r * 9 + i] as f64 - want).abs() < 1e-5, "{r} {i}");
            }
        }
    }
}
