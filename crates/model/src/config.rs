//! One description of a model to build: the network, its precision and kernels, and how it
//! runs. The CLI, the tests and any embedder build every model through it.

use crate::int8::{Int8Weights, RangeCollector, RangeMethod};
use crate::layers::KxkPath;
use crate::net::ResNet;
use crate::spec::ResNetSpec;
use crate::weights::{SeededWeights, WeightSource, Weights, WeightsMetadata};
use crate::ModelError;
use convkit_microkernel::{CpuFeatures, Family, Kernel};
use convkit_tensor::{Layout, Precision, Shape, TensorView};
use std::path::Path;

/// Images a forward pass runs through the network at a time unless told otherwise: it
/// keeps the arena at its batch-1 size. At batch 8 on 2 threads image by image was the
/// fastest on an AMD Zen 4, the whole batch at once (1.20x) on an Intel Xeon: measure
/// on the machine (`convkit bench --sub-batch`).
pub const DEFAULT_SUB_BATCH: usize = 1;

/// Seeded images an int8 model on seeded weights is calibrated on
/// ([`ModelConfig::build_seeded`]).
pub const SEEDED_CALIBRATION_IMAGES: usize = 4;

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
        if self.precision == Precision::Int8 && self.parallel_branches {
            return invalid(
                "an int8 model runs a block's branches one after the other (its last conv reads the shortcut as a \
                 residual): parallel_branches is f32 and bf16 only"
                    .into(),
            );
        }
        Ok(())
    }

    /// The error for an int8 model built from float weights.
    pub(crate) fn int8_from_float() -> convkit_tensor::Error {
        convkit_tensor::Error::invalid(
            "an int8 model is built from a calibrated network (per-tensor activation scales, per-channel weight \
             scales): ModelConfig::calibrate the float weights, or load an int8 file written by `convkit calibrate`",
        )
    }

    /// Post-training quantization: runs this network in f32 on `weights` over `images`
    /// (n images, NCHW or NHWC, one at a time), measures the range of every activation
    /// tensor with `method`, and quantizes the weights per output channel. `source` names
    /// the images for the recipe the result carries (and its file's metadata).
    pub fn calibrate(
        &self,
        weights: impl WeightSource + Clone,
        images: TensorView<'_>,
        method: RangeMethod,
        source: &str,
    ) -> Result<Int8Weights, ModelError> {
        let shape = images.shape();
        shape.validate()?;
        let float = ModelConfig { precision: Precision::F32, parallel_branches: false, sub_batch: 1, ..*self };
        let model = float.build(weights.clone())?;
        let mut ranges = RangeCollector::default();
        let mut ws = crate::Workspace::new();
        let per_image = shape.image_len();
        for n in 0..shape.n {
            let image = TensorView::new(
                Shape { n: 1, ..shape },
                images.layout(),
                &images.data()[n * per_image..(n + 1) * per_image],
            )?;
            model.forward_observed(image, &mut ws, &mut |tensor, values| ranges.observe(tensor, values))?;
        }
        drop(model);
        let recipe = format!("{method} ranges over {} {source}", shape.n);
        Int8Weights::quantize(weights, ranges.quants(method)?, recipe)
    }

    /// Builds the int8 model from a calibrated network ([`ModelConfig::calibrate`],
    /// [`Int8Weights::load`]), freeing each conv's quantized weights once they are packed;
    /// the config's precision must be int8.
    pub fn build_int8(&self, weights: Int8Weights) -> Result<ResNet, ModelError> {
        self.check()?;
        if self.precision != Precision::Int8 {
            return Err(convkit_tensor::Error::invalid(format!(
                "calibrated int8 weights build an int8 model, not {} (set the precision to int8)",
                self.precision
            ))
            .into());
        }
        if weights.spec() != self.spec {
            return Err(ModelError::WrongNetwork {
                found: format!("{} (quantized)", weights.spec()),
                wanted: self.spec.to_string(),
                hint: String::new(),
            });
        }
        ResNet::build_int8(*self, weights)
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
    /// In int8 the seeded weights are first calibrated ([`RangeMethod::default`]) on
    /// [`SEEDED_CALIBRATION_IMAGES`] seeded 224x224 images ([`crate::seeded_images`]).
    pub fn build_seeded(&self, seed: u64) -> Result<ResNet, ModelError> {
        let weights = SeededWeights::new(self.spec, seed);
        if self.precision != Precision::Int8 {
            return self.build(weights);
        }
        let (n, side) = (SEEDED_CALIBRATION_IMAGES, 224);
        let data = crate::seeded_images(n, side, side, seed);
        let images = TensorView::new(Shape::new(n, 3, side, side), Layout::Nchw, &data)?;
        let source = format!("seeded images (seed {seed})");
        let calibrated = self.calibrate(weights, images, RangeMethod::default(), &source)?;
        self.build_int8(calibrated)
    }

    /// Loads a safetensors file (its metadata and keys checked against this config's
    /// network) and builds the model; returns the file's metadata too.
    pub fn load(&self, path: &Path) -> Result<(ResNet, WeightsMetadata), ModelError> {
        self.check()?;
        if self.precision == Precision::Int8 {
            let weights = Int8Weights::load(self.spec, path)?;
            let metadata = weights.metadata().clone();
            return Ok((self.build_int8(weights)?, metadata));
        }
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
