//! Int8 matrix products for the encoder's dense layers (stage two on the
//! CPU, `precision = "int8"`): many rows of activations against one weight
//! matrix, the compute-bound case, unlike [`crate::q8`] (a few rows against
//! weights read from memory once).
//!
//! - **Weights** are quantized once, per output column (one F32 scale each),
//!   and packed in tiles of [`NR`] columns × 4 inputs: the layout
//!   `vpdpbusd` multiplies in one instruction.
//! - **Activations** are quantized per row (per token) when a layer runs,
//!   asymmetrically: the row's range (zero included) in 255 steps, as
//!   unsigned bytes with a zero point, so that a skewed row (GELU's output
//!   is almost all positive) keeps every step; the zero point × the
//!   column's weight sum is subtracted once per output, so the integer sums
//!   are exact.
//! - A tile of [`MR`] rows × [`NR`] columns is summed in registers over the
//!   whole input (i32, which cannot overflow here: 4 × 255 × 127 a step,
//!   and at most a few thousand inputs), then scaled and added to the
//!   output (which holds the bias, and the residual, before).
//!
//! The kernel is chosen at run time, as [`crate::q8`]'s are: AVX-512 VNNI,
//! or plain code (compiled also for AVX2, where the compiler vectorises it)
//! that gives the same sums, more slowly.

use rayon::prelude::*;

use crate::q8::Kernel;

/// Output columns a tile holds (two 512-bit registers of i32).
pub const NR: usize = 32;
/// Activation rows a tile holds.
pub const MR: usize = 8;
/// Rows a parallel task takes.
const ROWS_PER_TASK: usize = 16 * MR;

/// A weight matrix of `input` × `output`, quantized per output column and packed.
#[derive(Debug, Clone)]
pub struct I8Weights {
    pub input: usize,
    pub output: usize,
    /// `input` rounded up to 4.
    k4: usize,
    /// `[output / NR][k4 / 4][NR][4]`, zero-padded.
    packed: Vec<i8>,
    /// Per column (padded to whole tiles).
    scales: Vec<f32>,
    /// The sum of the column's quantized weights.
    sums: Vec<i32>,
}

impl I8Weights {
    /// Quantizes `w_t`, `(input, output)` row-major (how the F32 encoder keeps it).
    pub fn quantize(w_t: &[f32], input: usize, output: usize) -> I8Weights {
        assert_eq!(w_t.len(), input * output, "a {input}×{output} matrix");
        let k4 = input.next_multiple_of(4);
        let tiles = output.div_ceil(NR);
        let mut packed = vec![0i8; tiles * k4 * NR];
        let mut scales = vec![0f32; tiles * NR];
        let mut sums = vec![0i32; tiles * NR];
        for j in 0..output {
            let amax = (0..input).fold(0f32, |m, k| m.max(w_t[k * output + j].abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let (tile, lane) = (j / NR, j % NR);
            let mut sum = 0i32;
            for k in 0..input {
                let q = (w_t[k * output + j] * inv).round().clamp(-127.0, 127.0) as i8;
                packed[tile * k4 * NR + (k / 4) * NR * 4 + lane * 4 + k % 4] = q;
                sum += q as i32;
            }
            scales[j] = scale;
            sums[j] = sum;
        }
        I8Weights { input, output, k4, packed, scales, sums }
    }

    /// Bytes the quantized weights take.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 8 * self.scales.len()
    }

    /// `out (rows, output) += x · W`, with `x` quantized by [`I8Rows::quantize`].
    pub fn matmul_add(&self, x: &I8Rows, out: &mut [f32]) {
        assert_eq!(x.k4, self.k4, "input width");
        assert_eq!(out.len(), x.rows * self.output, "output size");
        let kernel = Kernel::get();
        out.par_chunks_mut(ROWS_PER_TASK * self.output).enumerate().for_each(|(task, out)| {
            let first = task * ROWS_PER_TASK;
            let rows = out.len() / self.output;
            for tile in 0..self.output.div_ceil(NR) {
                let mut r = 0;
                while r < rows {
                    let n = MR.min(rows - r);
                    let mut acc = [[0i32; NR]; MR];
                    let a = &x.data[(first + r) * self.k4..(first + r + n) * self.k4];
                    let w = &self.packed[tile * self.k4 * NR..(tile + 1) * self.k4 * NR];
                    let tile_out = &mut out[r * self.output..];
                    self.tile(kernel, a, w, &mut acc[..n], &x.scales[first + r..first + r + n], tile, tile_out);
                    r += n;
                }
            }
        });
    }

    /// Adds a tile's sums, scaled, to its place in `out` (rows of `output`).
    #[inline(always)]
    fn scale_into(&self, acc: &[[i32; NR]], rows: &[RowScale], tile: usize, out: &mut [f32]) {
        let first = tile * NR;
        let cols = NR.min(self.output - first);
        let scales: &[f32; NR] = self.scales[first..first + NR].try_into().expect("whole tiles");
        let sums: &[i32; NR] = self.sums[first..first + NR].try_into().expect("whole tiles");
        for (r, (acc, row)) in acc.iter().zip(rows).enumerate() {
            let (sa, zero) = (row.scale, row.zero);
            // On whole tiles of lanes first, so that the compiler vectorises it.
            let mut y = [0f32; NR];
            for j in 0..NR {
                y[j] = (acc[j] - zero * sums[j]) as f32 * scales[j] * sa;
            }
            for (o, y) in out[r * self.output + first..][..cols].iter_mut().zip(y) {
                *o += y;
            }
        }
    }
}

impl I8Weights {
    /// One tile: its sums, scaled into `out`.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        kernel: Kernel,
        a: &[u8],
        w: &[i8],
        acc: &mut [[i32; NR]],
        rows: &[RowScale],
        tile: usize,
        out: &mut [f32],
    ) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::available` found the CPU features these are compiled for.
            Kernel::Avx512Vnni => unsafe { x86::tile_and_scale_vnni(self, a, w, acc, rows, tile, out) },
            _ => {
                tile_sums(kernel, a, w, self.k4, acc);
                self.scale_into(acc, rows, tile, out);
            }
        }
    }
}

/// Activation rows quantized for [`I8Weights::matmul_add`] (a buffer reused
/// from layer to layer).
#[derive(Debug, Clone, Default)]
pub struct I8Rows {
    pub rows: usize,
    k4: usize,
    /// Quantized values, rows of `k4` (the padding meets zero weights).
    data: Vec<u8>,
    scales: Vec<RowScale>,
}

/// A row's value is `scale × (q - zero)`.
#[derive(Debug, Clone, Copy, Default)]
struct RowScale {
    scale: f32,
    zero: i32,
}

impl I8Rows {
    /// Quantizes `x`, rows of `input` values one after another.
    pub fn quantize(&mut self, x: &[f32], input: usize) {
        assert!(input > 0 && x.len().is_multiple_of(input), "rows of {input}");
        self.rows = x.len() / input;
        self.k4 = input.next_multiple_of(4);
        self.data.resize(self.rows * self.k4, 0);
        self.scales.resize(self.rows, RowScale::default());
        self.data
            .par_chunks_mut(self.k4 * 16)
            .zip(self.scales.par_chunks_mut(16))
            .zip(x.par_chunks(input * 16))
            .for_each(|((q, s), x)| {
                for ((q, s), x) in q.chunks_exact_mut(self.k4).zip(s).zip(x.chunks_exact(input)) {
                    let (lo, hi) = x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                    let scale = (hi - lo) / 255.0;
                    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                    let zero = (-lo * inv).round().clamp(0.0, 255.0);
                    *s = RowScale { scale, zero: zero as i32 };
                    for (q, v) in q.iter_mut().zip(x) {
                        *q = (v * inv + zero).round().clamp(0.0, 255.0) as u8;
                    }
                    q[input..].fill(0);
                }
            });
    }
}

/// `acc[r][j] = Σ_k a[r][k] · w[k][j]` (unsigned × signed bytes) for one tile.
fn tile_sums(kernel: Kernel, a: &[u8], w: &[i8], k4: usize, acc: &mut [[i32; NR]]) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::available` found the CPU features this is compiled
        // for; `a` holds `acc.len()` rows of `k4`, `w` one tile of `k4 × NR`.
        Kernel::Avx512Vnni => unsafe { x86::tile_vnni(a, w, k4, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx2 => unsafe { x86::tile_avx2(a, w, k4, acc) },
        _ => tile_portable(a, w, k4, acc),
    }
}

#[inline(always)]
fn tile_portable(a: &[u8], w: &[i8], k4: usize, acc: &mut [[i32; NR]]) {
    for (r, acc) in acc.iter_mut().enumerate() {
        *acc = [0; NR];
        let a = &a[r * k4..(r + 1) * k4];
        for (a4, w4) in a.chunks_exact(4).zip(w.chunks_exact(4 * NR)) {
            for (acc, w) in acc.iter_mut().zip(w4.chunks_exact(4)) {
                *acc += a4[0] as i32 * w[0] as i32
                    + a4[1] as i32 * w[1] as i32
                    + a4[2] as i32 * w[2] as i32
                    + a4[3] as i32 * w[3] as i32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// The portable sums, compiled for AVX2 (the compiler vectorises them).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(a: &[u8], w: &[i8], k4: usize, acc: &mut [[i32; NR]]) {
        tile_portable(a, w, k4, acc)
    }

    /// [`tile_vnni`] and the scaling, compiled for AVX-512.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_and_scale_vnni(
        w8: &I8Weights,
        a: &[u8],
        w: &[i8],
        acc: &mut [[i32; NR]],
        rows: &[RowScale],
        tile: usize,
        out: &mut [f32],
    ) {
        tile_vnni(a, w, w8.k4, acc);
        w8.scale_into(acc, rows, tile, out);
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_vnni(a: &[u8], w: &[i8], k4: usize, acc: &mut [[i32; NR]]) {
        match acc.len() {
            8 => rows_vnni::<8>(a, w, k4, acc),
            7 => rows_vnni::<7>(a, w, k4, acc),
            6 => rows_vnni::<6>(a, w, k4, acc),
            5 => rows_vnni::<5>(a, w, k4, acc),
            4 => rows_vnni::<4>(a, w, k4, acc),
            3 => rows_vnni::<3>(a, w, k4, acc),
            2 => rows_vnni::<2>(a, w, k4, acc),
            1 => rows_vnni::<1>(a, w, k4, acc),
            n => unreachable!("a tile of {n} rows"),
        }
    }

    /// `R` rows × 32 columns in 2·R registers; per 4 inputs, two loads of
    /// weights and one broadcast of 4 bytes per row feed 2·R `vpdpbusd`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn rows_vnni<const R: usize>(a: &[u8], w: &[i8], k4: usize, acc: &mut [[i32; NR]]) {
        debug_assert!(a.len() >= R * k4 && w.len() >= k4 * NR && acc.len() == R);
        let mut sums = [[_mm512_setzero_si512(); 2]; R];
        let (a, mut w) = (a.as_ptr(), w.as_ptr());
        for k in (0..k4).step_by(4) {
            let w0 = _mm512_loadu_si512(w as *const _);
            let w1 = _mm512_loadu_si512(w.add(64) as *const _);
            for (r, s) in sums.iter_mut().enumerate() {
                let x = _mm512_set1_epi32((a.add(r * k4 + k) as *const i32).read_unaligned());
                s[0] = _mm512_dpbusd_epi32(s[0], x, w0);
                s[1] = _mm512_dpbusd_epi32(s[1], x, w1);
            }
            w = w.add(4 * NR);
        }
        for (s, acc) in sums.iter().zip(acc.iter_mut()) {
            _mm512_storeu_si512(acc.as_mut_ptr() as *mut _, s[0]);
            _mm512_storeu_si512(acc.as_mut_ptr().add(16) as *mut _, s[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::random;

    /// The sums every kernel must give: the quantized values multiplied in i64.
    fn exact(x: &I8Rows, w: &I8Weights) -> Vec<f32> {
        let mut out = vec![0f32; x.rows * w.output];
        for r in 0..x.rows {
            for j in 0..w.output {
                let (tile, lane) = (j / NR, j % NR);
                let mut sum = 0i64;
                for k in 0..w.k4 {
                    let q = w.packed[tile * w.k4 * NR + (k / 4) * NR * 4 + lane * 4 + k % 4] as i64;
                    sum += (x.data[r * w.k4 + k] as i64 - x.scales[r].zero as i64) * q;
                }
                out[r * w.output + j] = sum as f32 * w.scales[j] * x.scales[r].scale;
            }
        }
        out
    }

    #[test]
    fn every_kernel_gives_the_exact_sums_of_the_quantized_values_for_any_shape() {
        // Rows that fill no tile, several tasks and a ragged last one; inputs
        // not a multiple of 4; columns not a multiple of a tile.
        for &(rows, input, output) in &[(1, 4, 1), (7, 30, 33), (45, 384, 96), (130, 101, 70)] {
            let x = random(rows * input, 1);
            let w_t = random(input * output, 2);
            let w = I8Weights::quantize(&w_t, input, output);
            let mut q = I8Rows::default();
            q.quantize(&x, input);
            let want = exact(&q, &w);
            for kernel in Kernel::available() {
                let mut got = vec![0f32; rows * output];
                for (r, chunk) in got.chunks_mut(output).enumerate() {
                    let mut acc = [[0i32; NR]; MR];
                    for tile in 0..output.div_ceil(NR) {
                        let a = &q.data[r * w.k4..(r + 1) * w.k4];
                        let wt = &w.packed[tile * w.k4 * NR..(tile + 1) * w.k4 * NR];
                        tile_sums(kernel, a, wt, w.k4, &mut acc[..1]);
                        w.scale_into(&acc[..1], &q.scales[r..r + 1], tile, chunk);
                    }
                }
                assert_eq!(got, want, "{kernel:?} {rows}×{input}·{input}×{output}");
            }
            let mut got = vec![0f32; rows * output];
            w.matmul_add(&q, &mut got);
            assert_eq!(got, want, "matmul_add {rows}×{input}·{input}×{output}");
        }
    }

    #[test]
    fn products_are_close_to_f32_and_add_to_what_the_output_held() {
        let (rows, input, output) = (20, 384, 64);
        let x = random(rows * input, 3);
        let w_t = random(input * output, 4);
        let w = I8Weights::quantize(&w_t, input, output);
        let mut q = I8Rows::default();
        q.quantize(&x, input);
        let mut got = vec![1f32; rows * output];
        w.matmul_add(&q, &mut got);
        for r in 0..rows {
            for j in 0..output {
                let f: f32 = (0..input).map(|k| x[r * input + k] * w_t[k * output + j]).sum();
                let g = got[r * output + j] - 1.0;
                // Two 8-bit roundings over 384 products of values up to 2.
                assert!((f - g).abs() < 0.02 * 384f32.sqrt() * 2.0, "{r},{j}: {f} against {g}");
            }
        }
    }

    #[test]
    fn zero_rows_and_zero_columns_stay_zero() {
        let w = I8Weights::quantize(&[0.0; 8 * 3], 8, 3);
        let mut q = I8Rows::default();
        q.quantize(&[0.0; 2 * 8], 8);
        let mut out = vec![0.5f32; 2 * 3];
        w.matmul_add(&q, &mut out);
        assert_eq!(out, vec![0.5; 6]);
    }
}
