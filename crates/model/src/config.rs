//! One description of a model to build: the network, its precision and kernels, and how it
//! runs. The CLI, the tests and any embedder build every model through it.

use crate::layers::KxkPath;
use crate::net::ResNet;
use crate::spec::ResNetSpec;
use crate::weights::{SeededWeights, WeightSource, Weights, WeightsMetadata};
use crate::ModelError;
use convkit_microkernel::{CpuFeatures, Family, Kernel};
use convkit_tensor::Precision;
use std::path::Path;

/// Images a forward pass runs through the network at a time unless told otherwise: it
/// keeps the arena at its batch-1 size. At batch 8 on 2 threads image by image was the
/// fastest on an AMD Zen 4, the whole batch at once (1.20x) on an Intel Xeon: measure
/// on the machine (`convkit bench --sub-batch`).
pub const DEFAULT_SUB_BATCH: usize = 1;

/// Everything a model is built with apart from its weights. Start from
/// [`ModelConfig::new`] and change what differs:
///
/// ```
/// use convkit_model::{KxkPath, ModelConfig, ResNetSpec, Variant};
/// use convkit_tensor::Precision;
///
/// let config = ModelConfig::new(ResNetSpec::resnet50(Variant::D))
///     .with_precision(Precision::Bf16)
///     .with_kxk(KxkPath::Direct)
///     .with_threads(2);
/// assert_eq!(config.to_string(), "ResNet-50-D bf16 kxk=direct threads=2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// The network: variant and depth.
    pub spec: ResNetSpec,
    /// The precision of the convs and activations (the pooled features, the FC layer and
    /// the logits are f32 in every precision).
    pub precision: Precision,
    /// How the KxK convs run.
    pub kxk: KxkPath,
    /// The CPU capabilities the kernels may use; `None`: the process default,
    /// [`CpuFeatures::selected`] (what `CONVKIT_ISA` leaves of the CPU's). Two models in
    /// one process may use different masks.
    pub features: Option<CpuFeatures>,
    /// Threads of the model's own pool; `None`: the caller's rayon pool.
    pub threads: Option<usize>,
    /// Images run through the network at a time (at least 1): the arena holds the
    /// activations of one sub-batch, and each layer's work is split across threads
    /// within it.
    pub sub_batch: usize,
    /// Run each downsampling block's projection shortcut (with D's pool) beside its first
    /// two convs, one thread each, instead of one after the other with every thread on
    /// each layer. Logits are bitwise the same; profiles show one `branches` step per
    /// downsampling block.
    pub parallel_branches: bool,
    /// Compute only the outputs that are read (`NetSpec::reduced_positions`: A's blocks
    /// before a stride-2 1x1 conv); off only to measure what it saves.
    pub only_read_positions: bool,
}

impl ModelConfig {
    /// `spec` in f32, the KxK convs on [`KxkPath::Auto`], the process default's kernels,
    /// the caller's thread pool, [`DEFAULT_SUB_BATCH`] images at a time, branches one
    /// after the other, only the positions that are read.
    pub fn new(spec: ResNetSpec) -> Self {
        ModelConfig {
            spec,
            precision: Precision::F32,
            kxk: KxkPath::Auto,
            features: None,
            threads: None,
            sub_batch: DEFAULT_SUB_BATCH,
            parallel_branches: false,
            only_read_positions: true,
        }
    }

    /// The same, computing in `precision`.
    pub fn with_precision(self, precision: Precision) -> Self {
        ModelConfig { precision, ..self }
    }

    /// The same, with the KxK convs on `kxk`.
    pub fn with_kxk(self, kxk: KxkPath) -> Self {
        ModelConfig { kxk, ..self }
    }

    /// The same, with kernels chosen within the CPU capabilities `features`.
    pub fn with_features(self, features: CpuFeatures) -> Self {
        ModelConfig { features: Some(features), ..self }
    }

    /// The same, with kernels chosen within `features`, or the process default (`None`).
    pub fn with_features_opt(self, features: Option<CpuFeatures>) -> Self {
        ModelConfig { features, ..self }
    }

    /// The same, on a pool of `threads` threads of the model's own.
    pub fn with_threads(self, threads: usize) -> Self {
        ModelConfig { threads: Some(threads), ..self }
    }

    /// The same, running `images` at a time.
    pub fn with_sub_batch(self, images: usize) -> Self {
        ModelConfig { sub_batch: images, ..self }
    }

    /// The same, running downsampling blocks' branches side by side (`true`) or not.
    pub fn with_parallel_branches(self, parallel: bool) -> Self {
        ModelConfig { parallel_branches: parallel, ..self }
    }

    /// The same, computing every position of every layer as the spec has it.
    pub fn every_position(self) -> Self {
        ModelConfig { only_read_positions: false, ..self }
    }

    /// The capability mask the kernels are chosen within: [`ModelConfig::features`], or
    /// the process default. An error if the mask (or `CONVKIT_ISA`) is malformed or asks
    /// for a capability this CPU lacks: a kernel is never silently not the one asked for.
    pub fn kernel_features(&self) -> Result<CpuFeatures, ModelError> {
        Ok(CpuFeatures::resolve(self.features)?)
    }

    /// The kernel the convs run on: the first of the registry for the precision within the
    /// mask.
    pub fn kernel(&self) -> Result<Kernel, ModelError> {
        Ok(Kernel::pick(self.precision, self.kernel_features()?)?)
    }

    /// The family pooling runs on: the f32 one within the mask (its bf16 stores round in
    /// software, exactly, where `vcvtneps2bf16` would flush subnormals).
    pub(crate) fn family(&self) -> Result<Family, ModelError> {
        Ok(Family::pick(self.kernel_features()?))
    }

    /// Checks the values a build relies on; the error names the field.
    pub fn check(&self) -> Result<(), ModelError> {
        let invalid = |msg: String| Err(convkit_tensor::Error::invalid(msg).into());
        if self.threads == Some(0) {
            return invalid("a model needs at least one thread, got threads = 0".into());
        }
        if self.sub_batch == 0 {
            return invalid("a model runs at least one image at a time, got sub_batch = 0".into());
        }
        if self.precision == Precision::Int8 {
            return Err(Self::int8_unsupported().into());
        }
        Ok(())
    }

    /// The error for an int8 model: the kernels exist, the calibrated network not yet.
    pub(crate) fn int8_unsupported() -> convkit_tensor::Error {
        convkit_tensor::Error::invalid(
            "the ResNet model runs f32 or bf16, not int8: the int8 kernels (convkit-microkernel, convkit-conv1x1, convkit-direct) \
             need per-layer activation scales, and the model has no calibration yet",
        )
    }

    /// Builds the model from `weights` (of this config's network), freeing each raw tensor
    /// once it is packed: the process never holds the raw and the packed network in full
    /// at once.
    pub fn build(&self, weights: impl WeightSource) -> Result<ResNet, ModelError> {
        self.check()?;
        if weights.spec() != self.spec {
            return Err(ModelError::WrongNetwork {
                found: weights.spec().to_string(),
                wanted: self.spec.to_string(),
                hint: String::new(),
            });
        }
        ResNet::build(*self, weights)
    }

    /// Builds the model on seeded random weights (not trained: for benchmarks and tests).
    pub fn build_seeded(&self, seed: u64) -> Result<ResNet, ModelError> {
        self.build(SeededWeights::new(self.spec, seed))
    }

    /// Loads a safetensors file (its metadata and keys checked against this config's
    /// network) and builds the model; returns the file's metadata too.
    pub fn load(&self, path: &Path) -> Result<(ResNet, WeightsMetadata), ModelError> {
        self.check()?;
        let weights = Weights::load(self.spec, path)?;
        let metadata = weights.metadata().clone();
        Ok((self.build(weights)?, metadata))
    }
}

/// `ResNet-50-D bf16 kxk=direct threads=2`: the network, the precision, then each choice
/// that differs from [`ModelConfig::new`].
impl std::fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.spec, self.precision)?;
        let default = ModelConfig::new(self.spec);
        if self.kxk != default.kxk {
            write!(f, " kxk={}", self.kxk)?;
        }
        if let Some(features) = self.features {
            write!(f, " features={features}")?;
        }
        if let Some(threads) = self.threads {
            write!(f, " threads={threads}")?;
        }
        if self.sub_batch != default.sub_batch {
            write!(f, " sub_batch={}", self.sub_batch)?;
        }
        if self.parallel_branches {
            f.write_str(" parallel_branches")?;
        }
        if !self.only_read_positions {
            f.write_str(" every_position")?;
        }
        Ok(())
    }
}
