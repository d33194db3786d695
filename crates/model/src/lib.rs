//! ResNet-50 A, B, C and D of "Bag of Tricks for Image Classification with CNNs"
//! (He et al., 2018), and depths 101/152, from one [`ResNetSpec`]: exact parameter and
//! MAC counts, seeded or safetensors weights under timm/torchvision names, and an NHWC
//! forward pass with BN folded, 1x1 and KxK convs on the direct SIMD microkernel (KxK
//! optionally on im2col + gemm, [`KxkPath`]), residual add and ReLU fused into the last conv of each block.

#![warn(missing_docs)]

mod arena;
mod batch;
mod layers;
mod net;
mod profile;
mod spec;
mod weights;

pub use arena::Workspace;
pub use batch::BatchRunner;
pub use layers::{ConvPath, KxkPath, BN_EPS, WINOGRAD_F4_MAX_CHANNELS};
pub use net::{ResNet, DEFAULT_SUB_BATCH};
pub use profile::{StepKind, StepTiming};
pub use spec::{
    BlockSpec, ConvKind, ConvSpec, Counts, DownsampleSpec, NetSpec, ResNetSpec, Shortcut, Stem, StrideAt, Variant,
    SHORTCUT_POOL, STEM_POOL,
};
pub use weights::{expected_keys, SeededWeights, WeightSource, WeightTensor, Weights};

use std::fmt;
use std::path::Path;

/// Errors of the model crate: each names the file, key or shape at fault.
#[derive(Debug)]
pub enum ModelError {
    /// A kernel refused a call (a shape, a layout, a size).
    Kernel(convkit_tensor::Error),
    /// A weight file or tensor map does not fit the network: the message names the key.
    Weights(String),
    /// A file could not be read or written.
    Io {
        /// The file.
        path: String,
        /// What the system said.
        message: String,
    },
}

impl ModelError {
    /// A [`ModelError::Weights`] with `msg`.
    pub fn weights(msg: impl Into<String>) -> Self {
        ModelError::Weights(msg.into())
    }
    /// An [`ModelError::Io`] naming `path`.
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        ModelError::Io { path: path.display().to_string(), message: e.to_string() }
    }
    /// Prefixes a weights error with the file it came from.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            ModelError::Weights(m) => ModelError::Weights(format!("{}: {m}", path.display())),
            other => other,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Kernel(e) => write!(f, "{e}"),
            ModelError::Weights(m) => write!(f, "weights: {m}"),
            ModelError::Io { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<convkit_tensor::Error> for ModelError {
    fn from(e: convkit_tensor::Error) -> Self {
        ModelError::Kernel(e)
    }
}
