//! The numeric inner loops of discord-indexer: a crate of its own so that
//! they are built optimized in every profile (see the workspace's
//! `Cargo.toml`), tests and debug builds included, which run real models.
//!
//! - [`simd`]: element-wise F32 kernels (norms, softmax, activations,
//!   attention), compiled for AVX-512, AVX2+FMA and the baseline, chosen at
//!   run time;
//! - [`q8`]: int8 matrix products over Q8_0 blocks, with AVX-512 VNNI and
//!   AVX2 kernels chosen at run time (the chat model);
//! - [`i8mm`]: int8 matrix products for many rows (the encoder's dense
//!   layers in `precision = "int8"`), with an AVX-512 VNNI kernel.

pub mod i8mm;
pub mod q8;
pub mod simd;

/// Reproducible values in -2..2 for the kernels' tests.
#[cfg(test)]
mod test_values {
    pub fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }
}
