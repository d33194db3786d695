//! convkit: CPU convolution kernels and ResNet-50 A/B/C/D.
//!
//! This facade re-exports the member crates; each can also be used alone.

pub use convkit_conv1x1 as conv1x1;
pub use convkit_direct as direct;
pub use convkit_im2col as im2col;
pub use convkit_microkernel as microkernel;
pub use convkit_model as model;
pub use convkit_pool as pool;
pub use convkit_tensor as tensor;
pub use convkit_winograd as winograd;
