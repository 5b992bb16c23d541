//! Int8 matrix products (for the chat model on the CPU): weights in
//! blocks of 32 signed bytes with one F32 scale each (GGUF's Q8_0), inputs
//! quantized the same way a row at a time, and the products of whole blocks
//! summed in integers, as llama.cpp does.
//!
//! Generating a token reads every weight once, so its speed is the speed of
//! reading the weights from memory: a byte a weight here against four as F32.
//! The kernels are chosen at run time, by what the CPU has: AVX-512 VNNI
//! (`vpdpbusd`, 64 products an instruction), AVX2 (`vpmaddubsw`), or plain
//! code that is slower but gives the same sums (integer sums are exact).

use rayon::prelude::*;

/// Values a block of a row holds (one scale each).
pub const BLOCK: usize = 32;

/// A matrix of `rows` × `cols` weights as Q8_0 blocks, row-major.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    pub rows: usize,
    pub cols: usize,
    /// `rows × cols` quantized values.
    quants: Vec<i8>,
    /// `rows × cols / BLOCK` scales.
    scales: Vec<f32>,
}

/// Rows of inputs quantized as Q8_0 (one row for a token being generated,
/// many for a prompt).
#[derive(Debug, Clone, Default)]
pub struct Q8Rows {
    pub cols: usize,
    quants: Vec<i8>,
    scales: Vec<f32>,
}

/// Quantizes `x` into `quants` and `scales` (a block's scale is its largest
/// magnitude over 127, so values stay in -127..=127 and a sign flip never
/// overflows).
fn quantize_into(x: &[f32], quants: &mut [i8], scales: &mut [f32]) {
    for ((block, q), scale) in x.chunks_exact(BLOCK).zip(quants.chunks_exact_mut(BLOCK)).zip(scales.iter_mut()) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in q.iter_mut().zip(block) {
            *q = (v * inv).round() as i8;
        }
        *scale = d;
    }
}

impl Q8Matrix {
    /// Quantizes a row-major `rows × cols` F32 matrix; `cols` must be a
    /// multiple of [`BLOCK`].
    pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Q8Matrix {
        assert!(
            cols.is_multiple_of(BLOCK) && values.len() == rows * cols,
            "a {rows}×{cols} matrix in blocks of {BLOCK}"
        );
        let mut quants = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows * cols / BLOCK];
        quants
            .par_chunks_mut(cols)
            .zip(scales.par_chunks_mut(cols / BLOCK))
            .zip(values.par_chunks(cols))
            .for_each(|((q, s), row)| quantize_into(row, q, s));
        Q8Matrix { rows, cols, quants, scales }
    }

    /// Matrices with the same `cols`, one below the other (products with
    /// the same input in one pass: query, key and value; gate and up).
    pub fn stack(parts: Vec<Q8Matrix>) -> Q8Matrix {
        let cols = parts[0].cols;
        assert!(parts.iter().all(|p| p.cols == cols), "stacked matrices have the same width");
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut quants = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(rows * cols / BLOCK);
        for p in parts {
            quants.extend_from_slice(&p.quants);
            scales.extend_from_slice(&p.scales);
        }
        Q8Matrix { rows, cols, quants, scales }
    }

    /// Row `r`, dequantized into `out`.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let q = &self.quants[r * self.cols..(r + 1) * self.cols];
        let s = &self.scales[r * self.cols / BLOCK..(r + 1) * self.cols / BLOCK];
        for ((out, q), d) in out.chunks_exact_mut(BLOCK).zip(q.chunks_exact(BLOCK)).zip(s) {
            for (o, &q) in out.iter_mut().zip(q) {
                *o = q as f32 * d;
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.quants.len() + self.scales.len() * 4
    }

    /// `out[t][r] = row r · input row t` for every input row, `out` being
    /// `input rows × self.rows`; rows are shared among rayon's threads.
    pub fn matmul(&self, input: &Q8Rows, out: &mut [f32]) {
        assert_eq!(input.cols, self.cols, "input width");
        let n = input.rows();
        assert_eq!(out.len(), n * self.rows, "output size");
        let kernel = Kernel::get();
        // Enough pieces for the threads to share, each a multiple of 16 rows
        // (whole cache lines of output for one input row).
        let threads = rayon::current_num_threads().max(1);
        let per = self.rows.div_ceil(threads * 4).next_multiple_of(16).max(16);
        if n == 1 {
            out.par_chunks_mut(per).enumerate().for_each(|(i, out)| kernel.rows(self, i * per, input, 0, out));
            return;
        }
        // Many inputs: each piece of rows runs over every input (its weights
        // stay in cache), into a buffer of its own, then into place.
        let pieces: Vec<(usize, Vec<f32>)> = (0..self.rows.div_ceil(per))
            .into_par_iter()
            .map(|i| {
                let first = i * per;
                let len = per.min(self.rows - first);
                let mut buf = vec![0f32; n * len];
                for (t, buf) in buf.chunks_exact_mut(len).enumerate() {
                    kernel.rows(self, first, input, t, buf);
                }
                (first, buf)
            })
            .collect();
        for (first, buf) in pieces {
            let len = buf.len() / n;
            for (t, part) in buf.chunks_exact(len).enumerate() {
                out[t * self.rows + first..t * self.rows + first + len].copy_from_slice(part);
            }
        }
    }
}

impl Q8Rows {
    /// Quantizes `x`, rows of `cols` values one after the other, reusing this buffer.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        assert!(cols.is_multiple_of(BLOCK) && x.len().is_multiple_of(cols), "rows of {cols} in blocks of {BLOCK}");
        self.cols = cols;
        self.quants.resize(x.len(), 0);
        self.scales.resize(x.len() / BLOCK, 0.0);
        if x.len() <= 16 * cols {
            quantize_into(x, &mut self.quants, &mut self.scales);
        } else {
            self.quants
                .par_chunks_mut(cols)
                .zip(self.scales.par_chunks_mut(cols / BLOCK))
                .zip(x.par_chunks(cols))
                .for_each(|((q, s), row)| quantize_into(row, q, s));
        }
    }

    pub fn rows(&self) -> usize {
        self.quants.len().checked_div(self.cols).unwrap_or(0)
    }
}

static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();

/// The dot-product kernels a CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 with VNNI (`vpdpbusd`): two blocks an instruction.
    Avx512Vnni,
    /// AVX2 (`vpmaddubsw`, `vpmaddwd`): a block at a time.
    Avx2,
    /// Plain code (any CPU).
    Portable,
}

impl Kernel {
    /// The kernel products use: the best this CPU runs, unless
    /// [`Kernel::prefer`] chose another first (chosen once).
    pub fn get() -> Kernel {
        *CHOSEN.get_or_init(|| Kernel::available().into_iter().next().unwrap_or(Kernel::Portable))
    }

    /// Makes products use `kernel` (to measure one against another), if the
    /// CPU runs it and no product has run yet; returns the kernel in use.
    pub fn prefer(kernel: Kernel) -> Kernel {
        if Kernel::available().contains(&kernel) {
            let _ = CHOSEN.set(kernel);
        }
        Kernel::get()
    }

    /// `vnni`, `avx2`, `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// The kernels this CPU can run, best first.
    pub fn available() -> Vec<Kernel> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                all.push(Kernel::Avx512Vnni);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                all.push(Kernel::Avx2);
            }
        }
        all.push(Kernel::Portable);
        all
    }

    /// `out[i] = row (first + i) of m · row t of input`.
    pub fn rows(self, m: &Q8Matrix, first: usize, input: &Q8Rows, t: usize, out: &mut [f32]) {
        let (cols, nb) = (m.cols, m.cols / BLOCK);
        let aq = &input.quants[t * cols..(t + 1) * cols];
        let as_ = &input.scales[t * nb..(t + 1) * nb];
        let wq = &m.quants[first * cols..(first + out.len()) * cols];
        let ws = &m.scales[first * nb..(first + out.len()) * nb];
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available` found the CPU features these kernels are
            // compiled for; every slice is whole blocks (checked above).
            Kernel::Avx512Vnni => unsafe { x86::rows_vnni(wq, ws, aq, as_, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Kernel::Avx2 => unsafe { x86::rows_avx2(wq, ws, aq, as_, out) },
            _ => rows_portable(wq, ws, aq, as_, out),
        }
    }
}

fn rows_portable(wq: &[i8], ws: &[f32], aq: &[i8], as_: &[f32], out: &mut [f32]) {
    let (cols, nb) = (aq.len(), as_.len());
    for (r, o) in out.iter_mut().enumerate() {
        let (wq, ws) = (&wq[r * cols..(r + 1) * cols], &ws[r * nb..(r + 1) * nb]);
        let mut sum = 0f32;
        for (b, (w, a)) in wq.chunks_exact(BLOCK).zip(aq.chunks_exact(BLOCK)).enumerate() {
            let dot: i32 = w.iter().zip(a).map(|(&w, &a)| w as i32 * a as i32).sum();
            sum += dot as f32 * (ws[b] * as_[b]);
        }
        *o = sum;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// Rows of `wq`/`ws` against `aq`/`as_`, two blocks at a time with
    /// `vpdpbusd` (unsigned × signed bytes: |w| × a·sign(w)).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows_vnni(wq: &[i8], ws: &[f32], aq: &[i8], as_: &[f32], out: &mut [f32]) {
        let (cols, nb) = (aq.len(), as_.len());
        let zero = _mm512_setzero_si512();
        for (r, o) in out.iter_mut().enumerate() {
            let w_row = wq.as_ptr().add(r * cols);
            let s_row = ws.as_ptr().add(r * nb);
            let mut acc = _mm512_setzero_ps();
            let mut b = 0;
            while b + 2 <= nb {
                let w = _mm512_loadu_si512(w_row.add(b * BLOCK) as *const _);
                let a = _mm512_loadu_si512(aq.as_ptr().add(b * BLOCK) as *const _);
                let negative = _mm512_movepi8_mask(w);
                let signed_a = _mm512_mask_sub_epi8(a, negative, zero, a);
                let dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(w), signed_a);
                let scale = _mm512_mask_blend_ps(
                    0xFF00,
                    _mm512_set1_ps(*s_row.add(b) * *as_.get_unchecked(b)),
                    _mm512_set1_ps(*s_row.add(b + 1) * *as_.get_unchecked(b + 1)),
                );
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
                b += 2;
            }
            let mut sum = _mm512_reduce_add_ps(acc);
            if b < nb {
                let w = std::slice::from_raw_parts(w_row.add(b * BLOCK), BLOCK);
                let a = &aq[b * BLOCK..(b + 1) * BLOCK];
                let dot: i32 = w.iter().zip(a).map(|(&w, &a)| w as i32 * a as i32).sum();
                sum += dot as f32 * (*s_row.add(b) * as_[b]);
            }
            *o = sum;
        }
    }

    /// Rows of `wq`/`ws` against `aq`/`as_`, a block at a time with
    /// `vpmaddubsw` (|w| × a·sign(w); 2 × 127 × 127 fits an i16).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_avx2(wq: &[i8], ws: &[f32], aq: &[i8], as_: &[f32], out: &mut [f32]) {
        let (cols, nb) = (aq.len(), as_.len());
        let ones = _mm256_set1_epi16(1);
        for (r, o) in out.iter_mut().enumerate() {
            let w_row = wq.as_ptr().add(r * cols);
            let s_row = ws.as_ptr().add(r * nb);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let w = _mm256_loadu_si256(w_row.add(b * BLOCK) as *const _);
                let a = _mm256_loadu_si256(aq.as_ptr().add(b * BLOCK) as *const _);
                let products = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
                let dot = _mm256_madd_epi16(products, ones);
                let scale = _mm256_set1_ps(*s_row.add(b) * *as_.get_unchecked(b));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
            }
            let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
            let half = _mm_add_ss(half, _mm_shuffle_ps(half, half, 1));
            *o = _mm_cvtss_f32(half);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::random;

    #[test]
    fn every_kernel_gives_the_products_of_the_quantized_values() {
        // 5 blocks a row: an odd count, so the VNNI kernel's last single block runs too.
        let (rows, cols, n) = (37, 5 * BLOCK, 3);
        let w = random(rows * cols, 1);
        let m = Q8Matrix::quantize(&w, rows, cols);
        let x = random(n * cols, 2);
        let mut input = Q8Rows::default();
        input.quantize(&x, cols);
        // The reference: the dequantized values multiplied in F64.
        let mut wd = vec![0f32; cols];
        let xd = Q8Matrix::quantize(&x, n, cols);
        let mut reference = vec![0f64; n * rows];
        for r in 0..rows {
            m.row_into(r, &mut wd);
            for t in 0..n {
                let mut xr = vec![0f32; cols];
                xd.row_into(t, &mut xr);
                reference[t * rows + r] = wd.iter().zip(&xr).map(|(a, b)| *a as f64 * *b as f64).sum();
            }
        }
        let kernels = Kernel::available();
        assert!(kernels.contains(&Kernel::Portable));
        for kernel in kernels {
            for t in 0..n {
                let mut out = vec![0f32; rows];
                kernel.rows(&m, 0, &input, t, &mut out);
                for r in 0..rows {
                    let want = reference[t * rows + r];
                    assert!(
                        (out[r] as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{kernel:?} {t} {r}: {} {want}",
                        out[r]
                    );
                }
            }
        }
        // The threaded products, one input and many, and the quantization's error.
        for rows_in in [1, n] {
            let mut out = vec![0f32; rows_in * rows];
            let mut one = Q8Rows::default();
            one.quantize(&x[..rows_in * cols], cols);
            m.matmul(&one, &mut out);
            for t in 0..rows_in {
                for r in 0..rows {
                    let exact: f32 =
                        w[r * cols..(r + 1) * cols].iter().zip(&x[t * cols..(t + 1) * cols]).map(|(a, b)| a * b).sum();
                    assert!((out[t * rows + r] as f64 - reference[t * rows + r]).abs() < 1e-3);
                    assert!((out[t * rows + r] - exact).abs() < 0.02 * (cols as f32).sqrt() * 2.0, "{exact}");
                }
            }
        }
    }

    #[test]
    fn stacked_matrices_and_rows_read_back() {
        let a = random(2 * BLOCK, 3);
        let b = random(3 * BLOCK, 4);
        let m = Q8Matrix::stack(vec![Q8Matrix::quantize(&a, 2, BLOCK), Q8Matrix::quantize(&b, 3, BLOCK)]);
        assert_eq!((m.rows, m.cols, m.bytes()), (5, BLOCK, 5 * BLOCK + 5 * 4));
        let mut row = vec![0f32; BLOCK];
        m.row_into(3, &mut row);
        for (got, want) in row.iter().zip(&b[BLOCK..2 * BLOCK]) {
            assert!((got - want).abs() <= 2.0 / 127.0, "{got} {want}");
        }
        // A zero block quantizes to zeros, not NaN.
        let z = Q8Matrix::quantize(&[0.0; BLOCK], 1, BLOCK);
        z.row_into(0, &mut row);
        assert!(row.iter().all(|v| *v == 0.0));
    }
}
