//! im2col for NCHW and NHWC, and the KxK convolution built on it and the `gemm` crate.
//!
//! [`Im2colConv`] prepares OIHW weights once for one activation layout; each forward
//! call lowers a tile of output rows into caller-provided scratch (bounded by
//! [`DEFAULT_SCRATCH_BYTES`] or [`Im2colConv::with_scratch_bytes`]), initialises the output
//! tile with bias (+ residual), accumulates the GEMM into it, and applies ReLU while
//! the tile is still in cache.

#![warn(missing_docs)]

mod conv;
mod im2col;
pub mod matmul;

pub use conv::{Im2colConv, DEFAULT_SCRATCH_BYTES};
pub use convkit_tensor::Conv;
pub use im2col::{im2col_nchw, im2col_nhwc, ImageDims};
pub use matmul::{matmul, MatMut, MatRef, MatrixShape};
