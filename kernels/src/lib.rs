//! The numeric inner loops of discord-indexer: a crate of its own so that
//! they are built optimized in every profile (see the workspace's
//! `Cargo.toml`), tests and debug builds included, which run real models.
//!
//! - [`simd`]: element-wise F32 kernels (norms, softmax, activations,
//!   attention), compiled for AVX-512, AVX2+FMA and the baseline, chosen at
//!   run time;
//! - [`q8`]: int8 matrix products over Q8_0 blocks, with AVX-512 VNNI and
//!   AVX2 kernels chosen at run time.

pub mod q8;
pub mod simd;
