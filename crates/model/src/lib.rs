#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod arena;
mod batch;
mod config;
mod int8;
mod layers;
mod net;
mod profile;
mod spec;
mod weights;

pub use arena::Workspace;
pub use batch::BatchRunner;
pub use config::{ModelConfig, DEFAULT_SUB_BATCH, SEEDED_CALIBRATION_IMAGES};
pub use int8::{int8_expected_keys, seeded_images, Int8Weights, RangeMethod, PERCENTILE_OUTLIER};
pub use layers::{ConvPath, KxkPath, BN_EPS, WINOGRAD_F4_MAX_CHANNELS};
pub use net::ResNet;
pub use profile::{StepKind, StepTiming};
pub use spec::{
    BlockSpec, ConvKind, ConvSpec, Counts, DownsampleSpec, NetSpec, ResNetSpec, Shortcut, Stem, StrideAt, Variant,
    SHORTCUT_POOL, STEM_POOL,
};
pub use weights::{expected_keys, SeededWeights, WeightSource, WeightTensor, Weights};

pub use weights::WeightsMetadata;

use std::path::PathBuf;

/// Errors of the model crate: each names the file, key or shape at fault. Match on the
/// kind; the message says the rest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A kernel refused a call (a shape, a layout, a size).
    #[error(transparent)]
    Kernel(#[from] convkit_tensor::Error),
    /// The weights lack a tensor the network needs.
    #[error("weights: missing key '{key}' (shape {shape:?})")]
    MissingKey {
        /// The key.
        key: String,
        /// The shape the network needs under it.
        shape: Vec<usize>,
    },
    /// A tensor has another shape than the network needs.
    #[error("weights: key '{key}' has shape {got:?}, expected {expected:?} (weights of another variant?)")]
    KeyShape {
        /// The key.
        key: String,
        /// The shape the network needs.
        expected: Vec<usize>,
        /// The shape the weights hold.
        got: Vec<usize>,
    },
    /// The weights are of another network: their metadata or their keys say which.
    #[error("weights: the file holds {found}, not the requested {wanted}{hint}")]
    WrongNetwork {
        /// What the file holds ("ResNet-101-A", "ResNet-50 with other keys", ...).
        found: String,
        /// What was asked for.
        wanted: String,
        /// What to do about it (may be empty).
        hint: String,
    },
    /// Weights that do not fit the network for another reason (a value, a dtype, the
    /// file format): the message names the key.
    #[error("weights: {0}")]
    Weights(String),
    /// A weights file at fault: the error inside says what is wrong with it.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<ModelError>,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A thread pool could not be built.
    #[error("thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}

impl ModelError {
    /// A [`ModelError::Weights`] with `msg`.
    pub fn weights(msg: impl Into<String>) -> Self {
        ModelError::Weights(msg.into())
    }
    /// An [`ModelError::Io`] naming `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), source }
    }
    /// Names the weights file an error came from (io errors name it already).
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            e @ (ModelError::Io { .. } | ModelError::InFile { .. }) => e,
            e => ModelError::InFile { path: path.to_path_buf(), source: Box::new(e) },
        }
    }
}
