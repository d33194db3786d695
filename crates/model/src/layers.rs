//! The layers of a built network: each conv with BN folded in and packed for the kernel
//! it runs on, and the residual blocks made of them.

use crate::int8::QuantizedConv;
use crate::spec::{ConvKind, ConvSpec};
use crate::weights::WeightSource;
use crate::ModelError;
use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_microkernel::{GemmElement, Kernel};
use convkit_tensor::{bf16, Conv, ConvQuant, Element, Epilogue, Error, FilterShape, Layout, Precision, Quant, Window};
use convkit_winograd::{WinogradConv, WinogradTile};

/// Batch-norm epsilon of torchvision and timm.
pub const BN_EPS: f32 = 1e-5;

/// Under `KxkPath::Auto`, stride-1 3x3 convs with at most this many input channels (the
/// deep stem's 32, stages 1 and 2) run on Winograd F(4x4, 3x3), the wider ones on
/// F(2x2, 3x3). F(4x4) measured 1.4-2.7x the direct path and 1.3-1.6x F(2x2) up to 256
/// channels, but its weights are 4x the 3x3 ones (F(2x2): 16/9): on stage 3 that is 26 MB
/// more than F(2x2) for about 0.6 ms, past the 160 MiB budget at batch 1.
pub const WINOGRAD_F4_MAX_CHANNELS: usize = 128;

/// How KxK convs (the stem, the 3x3 convs) run. 1x1 convs always take the direct path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum KxkPath {
    /// Stride-1 3x3 convs on Winograd, F(4x4) up to [`WINOGRAD_F4_MAX_CHANNELS`] input
    /// channels and F(2x2) above (F(2x2) throughout in bf16); the others (strided, the
    /// 7x7 stem) on `Direct`.
    #[default]
    Auto,
    /// As `Auto` with F(4x4) up to 256 channels: the fastest, for 26 MB more weights.
    Winograd,
    /// `DirectConv`: the microkernel over a zero-padded input copy (no im2col matrix).
    Direct,
    /// im2col + the `gemm` crate: the formulation of the paper's argument.
    Im2col,
}

impl KxkPath {
    /// Every path.
    pub const ALL: [KxkPath; 4] = [KxkPath::Auto, KxkPath::Winograd, KxkPath::Direct, KxkPath::Im2col];

    /// The name the CLI and the reports use.
    pub const fn name(self) -> &'static str {
        match self {
            KxkPath::Auto => "auto",
            KxkPath::Winograd => "winograd",
            KxkPath::Direct => "direct",
            KxkPath::Im2col => "im2col",
        }
    }

    /// The Winograd tile a stride-1 3x3 conv with `ci` input channels runs on in
    /// `precision`, if any. bf16 takes F(2x2) at every width: F(4x4)'s transforms amplify
    /// the rounding of its bf16 operands (ResNet-50-C: 4.3e-3 of the largest logit against
    /// 3.5e-3 with F(2x2); one layer, up to 6% of an output's sum of |terms|), and it ran
    /// no faster (docs/results.md).
    pub fn winograd_tile(self, ci: usize, precision: Precision) -> Option<WinogradTile> {
        let f4_max = match (self, precision) {
            // Winograd's transforms take int8 values off the integer grid.
            (KxkPath::Direct | KxkPath::Im2col, _) | (_, Precision::Int8) => return None,
            (KxkPath::Auto | KxkPath::Winograd, Precision::Bf16) => 0,
            (KxkPath::Auto, Precision::F32) => WINOGRAD_F4_MAX_CHANNELS,
            (KxkPath::Winograd, Precision::F32) => 256,
        };
        Some(if ci <= f4_max { WinogradTile::F4x4 } else { WinogradTile::F2x2 })
    }
}

impl std::fmt::Display for KxkPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KxkPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<KxkPath, Error> {
        let s = s.trim().to_ascii_lowercase();
        KxkPath::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            Error::invalid(format!("unknown KxK path {s:?} (expected auto, winograd, direct or im2col)"))
        })
    }
}

/// The element types a network computes in: what building a layer needs to know of its
/// activations' type, one impl per type. Sealed (f32, bf16 and u8, the int8 network's).
pub(crate) trait ModelElement: GemmElement + sealed::Sealed {
    /// Whether a block's last conv adds the shortcut to its output buffer in place
    /// (`Epilogue::accumulate`); if not (int8: the shortcut has its own quantization), it
    /// reads the shortcut as its epilogue's residual and writes another buffer.
    const ADDS_IN_PLACE: bool = true;

    /// The network input's value `v` in this type: rounded (bf16), or quantized with the
    /// input's quantization (u8; `quant` is always given for an int8 network).
    fn from_input(v: f32, _quant: Option<Quant>) -> Self {
        Self::from_f32(v)
    }

    /// The im2col + `gemm` conv over this type, or (the default: only f32 has one) an
    /// error naming the layer.
    fn im2col(
        layer: &str,
        _weights: &[f32],
        _filter: FilterShape,
        _bias: Option<&[f32]>,
        _window: Window,
    ) -> Result<Box<dyn Conv<Self>>, ModelError> {
        Err(Error::invalid(format!(
            "{layer}: the im2col path has no {} kernels (use the direct path)",
            Self::PRECISION
        ))
        .into())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for convkit_tensor::bf16 {}
    impl Sealed for u8 {}
}

impl ModelElement for f32 {
    fn im2col(
        _layer: &str,
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        window: Window,
    ) -> Result<Box<dyn Conv<f32>>, ModelError> {
        #[cfg(feature = "im2col")]
        return Ok(Box::new(convkit_im2col::Im2colConv::new(weights, filter, bias, window, Layout::Nhwc)?));
        #[cfg(not(feature = "im2col"))]
        {
            let _ = (weights, filter, bias, window);
            Err(Error::invalid(format!("{_layer}: convkit-model was built without its `im2col` feature")).into())
        }
    }
}

impl ModelElement for bf16 {}

impl ModelElement for u8 {
    const ADDS_IN_PLACE: bool = false;

    fn from_input(v: f32, quant: Option<Quant>) -> Self {
        quant.map_or_else(|| u8::from_f32(v), |q| q.quantize(v))
    }
}

/// A conv's weights with its batch norm folded in: OIHW weights times each output
/// channel's `gamma / sqrt(var + eps)`, and the bias `beta - mean * that`. Takes the
/// conv's and its BN's tensors from `weights`.
pub(crate) fn fold_bn(spec: &ConvSpec, weights: &mut impl WeightSource) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    let mut folded = weights.take(&format!("{}.weight", spec.conv))?.data;
    let mut bn = |s: &str| weights.take(&format!("{}.{s}", spec.bn)).map(|t| t.data);
    let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
    let per_out = spec.ci * spec.kernel * spec.kernel;
    let mut bias = vec![0.0; spec.co];
    for o in 0..spec.co {
        let scale = gamma[o] / (var[o] + BN_EPS).sqrt();
        folded[o * per_out..(o + 1) * per_out].iter_mut().for_each(|v| *v *= scale);
        bias[o] = beta[o] - mean[o] * scale;
    }
    Ok((folded, bias))
}

/// The kernel a conv layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConvPath {
    /// `Conv1x1`: the microkernel reads the activation in place.
    Conv1x1,
    /// `DirectConv`: the microkernel over a zero-padded input copy.
    Direct,
    /// `WinogradConv` with this tile.
    Winograd(WinogradTile),
    /// `Im2colConv`: im2col + the `gemm` crate.
    Im2col,
}

impl ConvPath {
    /// The short name profiles print.
    pub fn label(self) -> &'static str {
        match self {
            ConvPath::Conv1x1 => "1x1",
            ConvPath::Direct => "direct",
            ConvPath::Winograd(WinogradTile::F2x2) => "wino-f2",
            ConvPath::Winograd(WinogradTile::F4x4) => "wino-f4",
            ConvPath::Im2col => "im2col",
        }
    }
}

pub(crate) struct ConvLayer<T: ModelElement> {
    pub(crate) name: String,
    pub(crate) kind: ConvKind,
    pub(crate) path: ConvPath,
    pub(crate) op: Box<dyn Conv<T>>,
}

impl<T: ModelElement> ConvLayer<T> {
    /// Folds BN into the conv and packs it for `kernel` (a kernel over `T`).
    pub(crate) fn build(
        spec: &ConvSpec,
        weights: &mut impl WeightSource,
        kxk: KxkPath,
        kernel: Kernel,
    ) -> Result<Self, ModelError> {
        let (folded, bias) = fold_bn(spec, weights)?;
        let filter = FilterShape::new(spec.co, spec.ci, spec.kernel, spec.kernel);
        let bias = Some(&bias[..]);
        let tile =
            (spec.window() == convkit_winograd::WINDOW).then(|| kxk.winograd_tile(spec.ci, T::PRECISION)).flatten();
        let (path, op): (ConvPath, Box<dyn Conv<T>>) = match (spec.kernel, kxk, tile) {
            (1, _, _) => {
                (ConvPath::Conv1x1, Box::new(Conv1x1::new(kernel, &folded, filter, bias, spec.stride, Layout::Nhwc)?))
            }
            (_, _, Some(tile)) => {
                (ConvPath::Winograd(tile), Box::new(WinogradConv::new(kernel, &folded, filter, bias, tile)?))
            }
            (_, KxkPath::Im2col, None) => {
                (ConvPath::Im2col, T::im2col(&spec.conv, &folded, filter, bias, spec.window())?)
            }
            (_, KxkPath::Auto | KxkPath::Winograd | KxkPath::Direct, None) => {
                (ConvPath::Direct, Box::new(DirectConv::new(kernel, &folded, filter, bias, spec.window())?))
            }
        };
        Ok(ConvLayer { name: spec.conv.clone(), kind: spec.kind, path, op })
    }
}

impl ConvLayer<u8> {
    /// An int8 conv from its quantized weights, with its tensors' quantization: 1x1 convs
    /// on `Conv1x1`, the others on `DirectConv` (Winograd's transforms take int8 values off
    /// the integer grid; im2col has no int8 kernels).
    pub(crate) fn build_int8(
        spec: &ConvSpec,
        conv: &QuantizedConv,
        quant: ConvQuant,
        kxk: KxkPath,
        kernel: Kernel,
    ) -> Result<Self, ModelError> {
        let filter = FilterShape::new(spec.co, spec.ci, spec.kernel, spec.kernel);
        let (weights, scales, bias) = (&conv.weights[..], &conv.scales[..], Some(&conv.bias[..]));
        let (path, op): (ConvPath, Box<dyn Conv<u8>>) = match (spec.kernel, kxk) {
            (1, _) => (
                ConvPath::Conv1x1,
                Box::new(Conv1x1::new_int8(kernel, weights, scales, filter, bias, spec.stride, quant)?),
            ),
            (_, KxkPath::Im2col) => (ConvPath::Im2col, u8::im2col(&spec.conv, &[], filter, bias, spec.window())?),
            (_, KxkPath::Auto | KxkPath::Winograd | KxkPath::Direct) => (
                ConvPath::Direct,
                Box::new(DirectConv::new_int8(kernel, weights, scales, filter, bias, spec.window(), quant)?),
            ),
        };
        Ok(ConvLayer { name: spec.conv.clone(), kind: spec.kind, path, op })
    }
}

pub(crate) struct Block<T: ModelElement> {
    /// Step name of the block's branches run side by side ("layer2.0.branches"): made at
    /// build time so the forward pass formats nothing.
    pub(crate) branches_step: String,
    pub(crate) conv1: ConvLayer<T>,
    pub(crate) conv2: ConvLayer<T>,
    pub(crate) conv3: ConvLayer<T>,
    pub(crate) downsample: Option<Downsample<T>>,
    /// Step name of the subsampling of the identity shortcut, when the block computes its
    /// output at every other position only (see `NetSpec::reduced_positions`).
    pub(crate) subsample: Option<String>,
}

/// Reads every other pixel of every other row (a 1x1 max pool with stride 2).
pub(crate) const SUBSAMPLE: Window = Window::square(1, 2, 0);

pub(crate) struct Downsample<T: ModelElement> {
    /// Step name of the 2x2 average pool before the conv (D), if any: made at build time
    /// so the forward pass formats nothing.
    pub(crate) pool: Option<String>,
    pub(crate) conv: ConvLayer<T>,
}

/// What a conv fuses into its store, beyond its bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fused {
    /// Nothing (the projection shortcut).
    None,
    /// ReLU.
    Relu,
    /// Add the output buffer's contents (the shortcut), then ReLU: a block's last conv.
    AddRelu,
}

impl Fused {
    pub(crate) fn epilogue<T: ModelElement>(self) -> Epilogue<'static, T> {
        Epilogue { residual: None, accumulate: self == Fused::AddRelu, relu: self != Fused::None }
    }
}
