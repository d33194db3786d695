#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod conv;
mod im2col;
pub mod matmul;

pub use conv::{Im2colConv, DEFAULT_SCRATCH_BYTES};
pub use convkit_tensor::Conv;
pub use im2col::{im2col_nchw, im2col_nhwc, ImageDims};
pub use matmul::{matmul, MatMut, MatRef, MatrixShape};
