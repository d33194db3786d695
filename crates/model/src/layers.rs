//! The layers of a built network: each conv with BN folded in and packed for the kernel
//! it runs on, and the residual blocks made of them.

use crate::spec::{ConvKind, ConvSpec};
use crate::weights::WeightSource;
use crate::ModelError;
use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_im2col::Im2colConv;
use convkit_microkernel::Isa;
use convkit_tensor::{Conv, Element, Epilogue, FilterShape, Layout, Precision, Window};
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
    /// The Winograd tile a stride-1 3x3 conv with `ci` input channels runs on in
    /// `precision`, if any. bf16 takes F(2x2) at every width: F(4x4)'s transforms amplify
    /// the rounding of its bf16 operands (ResNet-50-C: 4.3e-3 of the largest logit against
    /// 3.5e-3 with F(2x2); one layer, up to 6% of an output's sum of |terms|), and it ran
    /// no faster (docs/results.md).
    pub fn winograd_tile(self, ci: usize, precision: Precision) -> Option<WinogradTile> {
        let f4_max = match self {
            KxkPath::Auto | KxkPath::Winograd if precision != Precision::F32 => 0,
            KxkPath::Auto => WINOGRAD_F4_MAX_CHANNELS,
            KxkPath::Winograd => 256,
            KxkPath::Direct | KxkPath::Im2col => return None,
        };
        Some(if ci <= f4_max { WinogradTile::F4x4 } else { WinogradTile::F2x2 })
    }
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
            ConvPath::Conv1x1 | ConvPath::Direct => "direct",
            ConvPath::Winograd(WinogradTile::F2x2) => "wino-f2",
            ConvPath::Winograd(WinogradTile::F4x4) => "wino-f4",
            ConvPath::Im2col => "im2col",
        }
    }
}

pub(crate) struct ConvLayer {
    pub(crate) name: String,
    pub(crate) kind: ConvKind,
    pub(crate) path: ConvPath,
    pub(crate) op: Box<dyn Conv>,
}

impl ConvLayer {
    /// Folds BN into the conv and packs it for its kernel.
    pub(crate) fn build(
        spec: &ConvSpec,
        weights: &mut impl WeightSource,
        kxk: KxkPath,
        precision: Precision,
    ) -> Result<Self, ModelError> {
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
        let filter = FilterShape::new(spec.co, spec.ci, spec.kernel, spec.kernel);
        let bias = Some(&bias[..]);
        let tile = (spec.window() == WinogradConv::WINDOW).then(|| kxk.winograd_tile(spec.ci, precision)).flatten();
        let isa = Isa::selected()?;
        let (path, op): (ConvPath, Box<dyn Conv>) = match (spec.kernel, kxk, tile) {
            (1, _, _) => (
                ConvPath::Conv1x1,
                Box::new(Conv1x1::for_precision(isa, precision, &folded, filter, bias, spec.stride, Layout::Nhwc)?),
            ),
            (_, _, Some(tile)) => (
                ConvPath::Winograd(tile),
                Box::new(WinogradConv::for_precision(isa, precision, &folded, filter, bias, tile)?),
            ),
            (_, KxkPath::Im2col, None) if precision == Precision::F32 => {
                (ConvPath::Im2col, Box::new(Im2colConv::new(&folded, filter, bias, spec.window(), Layout::Nhwc)?))
            }
            (_, KxkPath::Im2col, None) => {
                return Err(convkit_tensor::Error::invalid(format!(
                    "{}: the im2col path has no {precision} kernels (use the direct or Winograd path)",
                    spec.conv
                ))
                .into())
            }
            (_, KxkPath::Auto | KxkPath::Winograd | KxkPath::Direct, None) => (
                ConvPath::Direct,
                Box::new(DirectConv::for_precision(isa, precision, &folded, filter, bias, spec.window())?),
            ),
        };
        Ok(ConvLayer { name: spec.conv.clone(), kind: spec.kind, path, op })
    }
}

pub(crate) struct Block {
    /// Step name of the block's branches run side by side ("layer2.0.branches"): made at
    /// build time so the forward pass formats nothing.
    pub(crate) branches_step: String,
    pub(crate) conv1: ConvLayer,
    pub(crate) conv2: ConvLayer,
    pub(crate) conv3: ConvLayer,
    pub(crate) downsample: Option<Downsample>,
    /// Step name of the subsampling of the identity shortcut, when the block computes its
    /// output at every other position only (see `NetSpec::reduced_positions`).
    pub(crate) subsample: Option<String>,
}

/// Reads every other pixel of every other row (a 1x1 max pool with stride 2).
pub(crate) const SUBSAMPLE: Window = Window::square(1, 2, 0);

pub(crate) struct Downsample {
    /// Step name of the 2x2 average pool before the conv (D), if any: made at build time
    /// so the forward pass formats nothing.
    pub(crate) pool: Option<String>,
    pub(crate) conv: ConvLayer,
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
    pub(crate) fn epilogue<T: Element>(self) -> Epilogue<'static, T> {
        Epilogue { residual: None, accumulate: self == Fused::AddRelu, relu: self != Fused::None }
    }
}
