//! Training's fused operations on the CPU, each one pass forward (the CPU
//! encoder's own kernels, [`kernels::simd`]) and one pass backward, over
//! rows in parallel: GELU (erf form), softmax over the last dimension and
//! layer norm. Composed from candle's primitive operations instead, as on a
//! GPU (where candle's kernels run them), each primitive allocates its output
//! and, in the backward pass, a gradient of its own: most of a training
//! step's time on a CPU went there. Also AdamW's update, in place ([`AdamW`]).
//!
//! Inputs must be contiguous F32; the functions make them so.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, InplaceOp2, Layout, Result, Shape, Tensor, Var};
use candle_nn::optim::ParamsAdamW;
use rayon::prelude::*;

use kernels::simd;

/// Values per parallel task: enough work to be worth handing to a thread.
const TASK_VALUES: usize = 1 << 15;

fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("training operations take f32 tensors") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("training operations take contiguous tensors") };
    Ok(&data[start..end])
}

fn f32s_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("training operations take f32 tensors") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("training operations take contiguous tensors") };
    Ok(&mut data[start..end])
}

/// Whole rows of `row` values, about [`TASK_VALUES`] per task.
fn block(row: usize) -> usize {
    row.max(1) * (TASK_VALUES / row.max(1)).max(1)
}

/// A copy of `data` with `kernel` applied in place to blocks of whole rows of
/// `row` values, blocks in parallel.
fn per_block(data: &[f32], row: usize, kernel: impl Fn(&mut [f32]) + Send + Sync) -> Vec<f32> {
    let mut out = data.to_vec();
    out.par_chunks_mut(block(row)).for_each(kernel);
    out
}

/// [`per_block`] with the matching block of a second input beside each.
fn per_block_with(
    data: &[f32],
    with: &[f32],
    row: usize,
    kernel: impl Fn(&mut [f32], &[f32]) + Send + Sync,
) -> Vec<f32> {
    let mut out = data.to_vec();
    let b = block(row);
    out.par_chunks_mut(b).zip(with.par_chunks(b)).for_each(|(o, w)| kernel(o, w));
    out
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluErf)
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "train-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = per_block(f32s(storage, layout)?, 1, simd::gelu_erf);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluErfGrad)?))
    }
}

struct GeluErfGrad;

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "train-gelu-erf-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = per_block_with(f32s(s2, l2)?, f32s(s1, l1)?, 1, |g, x| simd::gelu_erf_grad(x, g));
        Ok((CpuStorage::F32(g), l1.shape().clone()))
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "train-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let row = layout.dims().last().copied().unwrap_or(1);
        // Padding (scored f32::MIN) gets probability 0 from the kernel's exp.
        let out = per_block(f32s(storage, layout)?, row, |b| b.chunks_exact_mut(row).for_each(simd::softmax));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "train-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let row = l1.dims().last().copied().unwrap_or(1);
        let g = per_block_with(f32s(s2, l2)?, f32s(s1, l1)?, row, |g, y| {
            for (g, y) in g.chunks_exact_mut(row).zip(y.chunks_exact(row)) {
                simd::softmax_grad(y, g);
            }
        });
        Ok((CpuStorage::F32(g), l1.shape().clone()))
    }
}

/// Layer norm over the last dimension, with weight `w` and bias `b`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "train-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (w, b) = (f32s(s2, l2)?, f32s(s3, l3)?);
        let row = w.len();
        let x = f32s(s1, l1)?;
        if row == 0 || x.len() % row != 0 {
            bail!("layer norm: weight of {row} for rows of {:?}", l1.dims());
        }
        let out = per_block(x, row, |blk| blk.chunks_exact_mut(row).for_each(|r| simd::layer_norm(r, w, b, self.eps)));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let row = w.elem_count();
        let rows = x.elem_count() / row;
        // One pass: the input's gradient, then the weight's and the bias's as two more rows.
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(w.shape())?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "train-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (f32s(s1, l1)?, f32s(s2, l2)?, f32s(s3, l3)?);
        let row = w.len();
        let rows = x.len() / row;
        let mut out = Vec::with_capacity((rows + 2) * row);
        out.extend_from_slice(g);
        let b = block(row);
        let (dw, db) = out
            .par_chunks_mut(b)
            .zip(x.par_chunks(b))
            .map(|(g, x)| {
                let (mut dw, mut db) = (vec![0f32; row], vec![0f32; row]);
                for (g, x) in g.chunks_exact_mut(row).zip(x.chunks_exact(row)) {
                    simd::layer_norm_grad(x, w, g, &mut dw, &mut db, self.eps);
                }
                (dw, db)
            })
            .reduce(
                || (vec![0f32; row], vec![0f32; row]),
                |(mut dw, mut db), (w2, b2)| {
                    dw.iter_mut().zip(&w2).for_each(|(a, b)| *a += b);
                    db.iter_mut().zip(&b2).for_each(|(a, b)| *a += b);
                    (dw, db)
                },
            );
        out.extend_from_slice(&dw);
        out.extend_from_slice(&db);
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, row))))
    }
}

/// AdamW as torch defines it (and candle-nn, whose results it matches), on
/// CPU variables: each step updates every variable and its two moments in
/// place, in one parallel pass. candle-nn's version builds about a dozen
/// temporaries the size of each variable every step (for the word embeddings
/// of a MiniLM, 47 MB each), on one core.
pub struct AdamW {
    /// Each variable with its first and second moments.
    vars: Vec<(Var, Vec<f32>, Vec<f32>)>,
    params: ParamsAdamW,
    steps: i32,
}

impl AdamW {
    /// AdamW over `vars`, which must be contiguous F32 tensors on the CPU.
    pub fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<AdamW> {
        let mut state = Vec::with_capacity(vars.len());
        for var in vars {
            if !var.device().is_cpu() || var.dtype() != candle_core::DType::F32 || !var.is_contiguous() {
                bail!("the in-place AdamW takes contiguous f32 variables on the CPU");
            }
            let n = var.elem_count();
            state.push((var, vec![0f32; n], vec![0f32; n]));
        }
        Ok(AdamW { vars: state, params, steps: 0 })
    }

    /// Computes the gradients of `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One step with `grads` (variables without a gradient stay as they are).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let p = &self.params;
        let k = AdamWStep {
            lr: p.lr as f32,
            decay: (1.0 - p.lr * p.weight_decay) as f32,
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            eps: p.eps as f32,
            scale_m: (1.0 / (1.0 - p.beta1.powi(self.steps))) as f32,
            scale_v: (1.0 / (1.0 - p.beta2.powi(self.steps))) as f32,
        };
        for (var, m, v) in &mut self.vars {
            if let Some(grad) = grads.get(var) {
                let update = AdamWUpdate { moments: RefCell::new((m, v)), k };
                var.as_tensor().inplace_op2(&grad.contiguous()?, &update)?;
            }
        }
        Ok(())
    }
}

/// One variable's update: its moments, and the step's constants.
struct AdamWUpdate<'a> {
    moments: RefCell<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
    k: AdamWStep,
}

/// A step's constants.
#[derive(Clone, Copy)]
struct AdamWStep {
    lr: f32,
    /// `1 - lr · weight decay`
    decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// The bias corrections, `1 / (1 - β^t)`.
    scale_m: f32,
    scale_v: f32,
}

impl InplaceOp2 for AdamWUpdate<'_> {
    fn name(&self) -> &'static str {
        "train-adamw"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (theta, g) = (f32s_mut(s1, l1)?, f32s(s2, l2)?);
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if g.len() != theta.len() || m.len() != theta.len() || v.len() != theta.len() {
            bail!("AdamW: a gradient of {} values for a variable of {}", g.len(), theta.len());
        }
        let (k, n) = (self.k, TASK_VALUES);
        theta.par_chunks_mut(n).zip(g.par_chunks(n)).zip(m.par_chunks_mut(n)).zip(v.par_chunks_mut(n)).for_each(
            |(((theta, g), m), v)| {
                for (((t, &g), m), v) in theta.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = *m * k.beta1 + g * (1.0 - k.beta1);
                    *v = *v * k.beta2 + g * g * (1.0 - k.beta2);
                    let step = (*m * k.scale_m) / ((*v * k.scale_v).sqrt() + k.eps);
                    *t = *t * k.decay - step * k.lr;
                }
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.gen_range(-3f32..3.0)).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// `fused` and `composed` give the same values and the same gradients
    /// (of a random weighting of their outputs) for every input.
    fn same(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        composed: impl Fn(&[Tensor]) -> Result<Tensor>,
        what: &str,
    ) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (fused(&ts).unwrap(), composed(&ts).unwrap());
        assert!(max_diff(&a, &b) < 1e-5, "{what}: values differ by {}", max_diff(&a, &b));
        let weights = random(a.dims(), 99);
        let ga = (a * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).unwrap(), gb.get(v).unwrap());
            let scale = y.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(max_diff(x, y) / scale < 1e-4, "{what}: gradient {i} differs by {}", max_diff(x, y));
        }
    }

    #[test]
    fn fused_operations_match_candles_composed_ones_and_their_gradients() {
        let x = random(&[3, 5, 40], 1);
        same(std::slice::from_ref(&x), |t| gelu_erf(&t[0]), |t| t[0].gelu_erf(), "gelu");
        // Masked attention scores carry f32::MIN, as the encoder's mask adds.
        let mask = Tensor::from_vec(
            (0..40).map(|i| if i > 30 { f32::MIN } else { 0.0 }).collect::<Vec<f32>>(),
            40,
            &Device::Cpu,
        )
        .unwrap();
        same(
            &[x.broadcast_add(&mask).unwrap()],
            |t| softmax_last_dim(&t[0]),
            |t| candle_nn::ops::softmax(&t[0], D::Minus1),
            "softmax",
        );
        let (w, b) = (random(&[40], 2), random(&[40], 3));
        let eps = 1e-12f32;
        same(
            &[x, w, b],
            |t| layer_norm(&t[0], &t[1], &t[2], eps),
            |t| super::super::bert::layer_norm_composed(&t[0], &t[1], &t[2], eps),
            "layer norm",
        );
    }

    /// Three steps of the in-place AdamW land where candle-nn's do, for a
    /// variable larger than one parallel task and one that gets no gradient.
    #[test]
    fn in_place_adamw_matches_candles() {
        use candle_nn::optim::Optimizer as _;
        let params = ParamsAdamW { lr: 0.01, weight_decay: 0.1, ..ParamsAdamW::default() };
        let start = [random(&[3, TASK_VALUES / 2 + 7], 5), random(&[11], 6), random(&[4], 7)];
        let ours: Vec<Var> = start.iter().map(|t| Var::from_tensor(&t.copy().unwrap()).unwrap()).collect();
        let theirs: Vec<Var> = start.iter().map(|t| Var::from_tensor(&t.copy().unwrap()).unwrap()).collect();
        let mut a = AdamW::new(ours.clone(), params.clone()).unwrap();
        let mut b = candle_nn::optim::AdamW::new(theirs.clone(), params).unwrap();
        for step in 0..3u64 {
            // A loss over the first two variables only; the third has no gradient.
            let loss = |vars: &[Var]| {
                let w0 = random(vars[0].dims(), 10 + step);
                let w1 = random(vars[1].dims(), 20 + step);
                ((vars[0].as_tensor() * &w0).unwrap().sqr().unwrap().sum_all().unwrap()
                    + (vars[1].as_tensor() * &w1).unwrap().sum_all().unwrap())
                .unwrap()
            };
            a.backward_step(&loss(&ours)).unwrap();
            b.backward_step(&loss(&theirs)).unwrap();
        }
        for (i, (x, y)) in ours.iter().zip(&theirs).enumerate() {
            let d = max_diff(x.as_tensor(), y.as_tensor());
            assert!(d < 1e-5, "variable {i} differs by {d}");
        }
        assert!(max_diff(ours[0].as_tensor(), &start[0]) > 1e-3, "the variables moved");
        assert_eq!(max_diff(ours[2].as_tensor(), &start[2]), 0.0, "no gradient, no step");
    }
}
