//! The f32 and bf16 microkernels of convkit, chosen when the program runs.
//!
//! - [`Isa`]: the kernel families (AVX-512F with AVX512-BF16, AVX-512F, AVX2 + FMA, and a
//!   portable one on `wide`), read from the CPU once and cached ([`Isa::selected`]; the `CONVKIT_ISA` environment
//!   variable forces one). A plain `cargo build` gets the fastest family the CPU has: no
//!   target-cpu flags are needed.
//! - [`Simd`] and [`SimdOp`]: a kernel is written once, generic over the family, and
//!   [`Isa::dispatch`] runs it under that family's target features.
//! - [`PackedWeights`]: a K x N weight matrix packed once into the panels a family's
//!   tile reads, with its bias; in f32, or in bf16 pairs along K for the bf16 dot product
//!   (native `vdpbf16ps` on [`Isa::Avx512Bf16`], two f32 FMAs on every other family).
//! - [`Gemm`]: the one walk over panels and row tiles (f32, or bf16 activations with
//!   f32 or bf16 output), with the fused epilogue (bias, residual, accumulate, ReLU)
//!   applied while the tile is in registers, split into tasks on the current rayon pool. The 1x1, direct KxK and Winograd convolutions all run on it.
//! - [`CacheSizes`]: the cache sizes of the CPU it runs on, and every block size derived
//!   from them.

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cache;
mod gemm;
mod isa;
mod pack;
mod probe;
mod simd;

pub use cache::CacheSizes;
pub use gemm::{current_threads, for_each_chunk, Gemm, Lhs, RowMap};
pub use isa::{cpu_name, Isa, SimdOp, TileShape, ISA_ENV};
pub use pack::{PackedWeights, Panels};
pub use probe::{measure_bf16_gflops, measure_fma_gflops, measure_read_gbs};
#[cfg(target_arch = "x86_64")]
pub use simd::{Avx2, Avx512, Avx512Bf16};
pub use simd::{Portable, PortableF32, Simd};
