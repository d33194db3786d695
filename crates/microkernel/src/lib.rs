//! The f32, bf16 and int8 microkernels of convkit, chosen when the program runs.
//!
//! - [`CpuFeatures`]: what the CPU can do (AVX2, FMA, AVX-512, AVX512-BF16, VNNI, AMX),
//!   detected once, apart from which kernel runs; [`CpuFeatures::selected`] is the
//!   process default, masked by the `CONVKIT_ISA` environment variable.
//! - [`Family`] and [`Kernel`]: the registry. A family (AVX-512F with AVX512-BF16,
//!   AVX-512F, AVX2 + FMA, and a portable one on `wide`) is one file that declares its
//!   token, tile, requirements and element types; a kernel is a family's walk over one
//!   element type, and [`Kernel::pick`] chooses one per element type within a capability
//!   mask. A plain `cargo build` runs the fastest kernels the CPU has: no target-cpu flags.
//! - [`Simd`] and [`SimdOp`]: a kernel is written once, generic over the family, and
//!   [`Family::dispatch`] runs it under that family's target features.
//! - [`PackedWeights`]: a K x N weight matrix packed once into the panels a kernel's tile
//!   reads, with its bias: f32, bf16 pairs along K (native `vdpbf16ps` on the
//!   `avx512bf16` family, two f32 FMAs on every other), or s8 fours along K with their
//!   column scales and zero-point offsets (native `vpdpbusd` on `avx512vnni` and
//!   `avxvnni`, an exact 16-bit widening on every other).
//! - [`Gemm`]: the one walk over panels and row tiles (f32, or bf16 activations with f32
//!   or bf16 output), with the fused epilogue (bias, residual, accumulate, ReLU) applied
//!   while the tile is in registers, split into tasks on the current rayon pool. The 1x1,
//!   direct KxK and Winograd convolutions all run on it.
//! - [`CacheSizes`]: the cache sizes of the CPU it runs on, and every block size derived
//!   from them.

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[macro_use]
mod family;
mod cache;
mod families;
mod features;
mod gemm;
mod pack;
mod probe;
mod simd;

pub use cache::CacheSizes;
pub use family::{Family, Kernel, SimdOp, TileShape};
pub use features::{CpuFeatures, ISA_ENV};
pub use gemm::{current_threads, for_each_chunk, Gemm, Lhs, RowMap};
pub use pack::{PackedWeights, Panels};
pub use probe::{cpu_name, measure_bf16_gflops, measure_fma_gflops, measure_int8_gops, measure_read_gbs};
pub use simd::{GemmElement, Simd};
