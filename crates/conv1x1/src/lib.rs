//! Direct 1x1 convolution: no im2col, packed weights, fused epilogue.
//!
//! Over an NHWC activation a 1x1 convolution is a GEMM whose left operand is the
//! activation buffer itself: output pixel m reads the `ci` contiguous channels of its
//! input pixel. With stride 2 the kernel reads every other pixel of every other row in
//! place, with no copy. Weights are packed once, at construction, into the panels of the
//! kernel the caller chose (see `convkit_microkernel::Kernel::pick`), and each output tile is computed over the whole reduction in registers; bias, residual and
//! ReLU are applied before the store.
//!
//! Work is split over blocks of output rows on the current rayon pool: call inside
//! `pool.install()` to choose the threads. Every output element is computed by the same
//! sequence of FMAs whatever the split, so results are bitwise the same for any thread
//! count.
//!
//! The NCHW entry point computes out[co, hw] = W[co, ci] * in[ci, hw] per image: the
//! weights are the broadcast operand and the input is packed into panels per call, in
//! scratch.

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use convkit_microkernel::Kernel;
pub use convkit_tensor::Conv;

use convkit_microkernel::{Gemm, GemmElement, Lhs, PackedWeights, Panels, RowMap};
use convkit_tensor::{
    check_precision, AlignedVec, ConvQuant, Epilogue, Error, FilterShape, Layout, Precision, Result, Shape, TensorView,
    TensorViewMut, Window,
};
use std::marker::PhantomData;

/// A 1x1 convolution (stride 1 or 2, no padding) over activations of element type `T`,
/// prepared for one activation layout.
#[derive(Debug, Clone)]
pub struct Conv1x1<T: GemmElement = f32> {
    filter: FilterShape,
    stride: usize,
    weights: Weights,
    /// An int8 conv's tensors' quantization.
    quant: Option<ConvQuant>,
    element: PhantomData<T>,
}

#[derive(Debug, Clone)]
enum Weights {
    /// NHWC: K = ci by N = co panels, with the bias.
    Nhwc(PackedWeights),
    /// NCHW (f32): OIHW weights as given, [co][ci] (the broadcast operand), and the bias;
    /// the input is packed into panels of `kernel` per call.
    Nchw { kernel: Kernel, weights: AlignedVec, bias: Vec<f32> },
}

impl<T: GemmElement> Conv1x1<T> {
    /// Packs OIHW `weights` [co, ci, 1, 1] and `bias` (zeros if None) for `layout` and
    /// `kernel` (a kernel over `T` that this CPU runs). In bf16 the weights are rounded to
    /// nearest bf16 here and the bias stays f32; NCHW is f32 only.
    pub fn new(
        kernel: Kernel,
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        stride: usize,
        layout: Layout,
    ) -> Result<Self> {
        if (filter.kh, filter.kw) != (1, 1) {
            return Err(Error::mismatch("kernel of a 1x1 convolution", "1x1", format!("{}x{}", filter.kh, filter.kw)));
        }
        filter.check(weights, bias)?;
        if stride == 0 {
            return Err(Error::invalid("1x1 convolution stride must be at least 1"));
        }
        check_precision::<T>("1x1 conv", kernel.precision())?;
        if kernel.precision() == Precision::Int8 {
            return Err(Error::invalid("an int8 1x1 convolution is built from quantized weights: Conv1x1::new_int8"));
        }
        let weights = match (layout, kernel.precision()) {
            (Layout::Nhwc, _) => Weights::Nhwc(PackedWeights::from_oihw(kernel, weights, filter, bias)?),
            (Layout::Nchw, Precision::F32) => Weights::Nchw {
                kernel: kernel.check_available()?,
                weights: AlignedVec::from_slice(weights),
                bias: bias.map_or_else(|| vec![0.0; filter.co], <[f32]>::to_vec),
            },
            (Layout::Nchw, precision @ (Precision::Bf16 | Precision::Int8)) => {
                return Err(Error::invalid(format!("a {precision} 1x1 convolution takes NHWC activations, not NCHW")))
            }
        };
        Ok(Conv1x1 { filter, stride, weights, quant: None, element: PhantomData })
    }

    /// The quantization of an int8 conv's tensors (None in f32 and bf16).
    pub fn quant(&self) -> Option<ConvQuant> {
        self.quant
    }

    /// The stride along both axes.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The kernel the weights were packed for.
    pub fn kernel(&self) -> Kernel {
        match &self.weights {
            Weights::Nhwc(p) => p.kernel(),
            Weights::Nchw { kernel, .. } => *kernel,
        }
    }

    fn forward_nhwc(
        &self,
        packed: &PackedWeights,
        input: TensorView<'_, T>,
        out: Shape,
        dst: &mut [T],
        e: &Epilogue<'_, T>,
    ) -> Result<()> {
        let s = input.shape();
        let ci = self.filter.ci;
        let rows = if self.stride == 1 {
            // Stride 1: output pixel m is row m of the input matrix.
            RowMap::Strided { start: 0, step: ci }
        } else {
            RowMap::Pixels { ho: out.h, wo: out.w, src_h: s.h, src_w: s.w, stride: self.stride, ci }
        };
        Gemm::new(Lhs::new(input.data(), rows), packed.panels(), out.n * out.h * out.w, self.filter.co)
            .with_residual(e.residual.map(|r| r.data()))
            .with_accumulate(e.accumulate)
            .with_relu(e.relu)
            .with_conv_quant(self.quant)
            .run(dst)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_nchw(
        &self,
        kernel: Kernel,
        weights: &[f32],
        bias: &[f32],
        input: TensorView<'_>,
        out: Shape,
        dst: &mut [f32],
        e: &Epilogue<'_>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let (ci, co, st) = (self.filter.ci, self.filter.co, self.stride);
        let s = input.shape();
        let (wo, hw) = (out.w, out.h * out.w);
        let need = Panels::packed_len(kernel, ci, hw)?;
        if scratch.len() < need {
            scratch.resize(need)?;
        }
        let plane = s.h * s.w;
        for (n, out_image) in dst.chunks_exact_mut(co * hw).enumerate() {
            let image = input.image(n);
            let entry = |k: usize, p: usize| image[k * plane + p / wo * st * s.w + p % wo * st];
            let panels = Panels::pack_into(kernel, ci, hw, entry, scratch)?;
            Gemm::new(Lhs::strided(weights, 0, ci), panels, co, hw)
                .with_row_bias(Some(bias))
                .with_residual(e.residual.map(|r| r.image(n)))
                .with_accumulate(e.accumulate)
                .with_relu(e.relu)
                .run(out_image)?;
        }
        Ok(())
    }
}

impl Conv1x1<u8> {
    /// An int8 1x1 convolution over NHWC u8 activations: OIHW s8 `weights` [co, ci, 1, 1]
    /// (in -127..=127) with a scale per output channel (`weight_scales`, see
    /// `convkit_tensor::quantize_per_channel`), an f32 `bias`, and `quant`, the input,
    /// output and residual quantization. The input's zero point is folded into each
    /// channel's s32 sum when the weights are packed; the epilogue is the int8 one of the
    /// microkernel crate's `Gemm` (bitwise the same on every kernel family).
    pub fn new_int8(
        kernel: Kernel,
        weights: &[i8],
        weight_scales: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        stride: usize,
        quant: ConvQuant,
    ) -> Result<Self> {
        if (filter.kh, filter.kw) != (1, 1) {
            return Err(Error::mismatch("kernel of a 1x1 convolution", "1x1", format!("{}x{}", filter.kh, filter.kw)));
        }
        if stride == 0 {
            return Err(Error::invalid("1x1 convolution stride must be at least 1"));
        }
        let column_scales = quant.column_scales(weight_scales)?;
        convkit_tensor::check_channels("int8 weight scales", filter.co, weight_scales.len())?;
        let packed =
            PackedWeights::from_oihw_int8(kernel, weights, filter, &column_scales, quant.input.zero_point(), bias)?;
        Ok(Conv1x1 { filter, stride, weights: Weights::Nhwc(packed), quant: Some(quant), element: PhantomData })
    }
}

impl<T: GemmElement> Conv<T> for Conv1x1<T> {
    fn filter(&self) -> FilterShape {
        self.filter
    }

    fn window(&self) -> Window {
        Window::square(1, self.stride, 0)
    }

    fn layout(&self) -> Layout {
        match self.weights {
            Weights::Nhwc(_) => Layout::Nhwc,
            Weights::Nchw { .. } => Layout::Nchw,
        }
    }

    /// ceil(h / stride) x ceil(w / stride), co channels.
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        self.filter.check_input(input)?;
        Ok(Shape::new(input.n, self.filter.co, input.h.div_ceil(self.stride), input.w.div_ceil(self.stride)))
    }

    /// NHWC: none. NCHW: the input of one image packed into panels.
    fn scratch_len(&self, input: Shape) -> Result<usize> {
        let out = self.output_shape(input)?;
        match &self.weights {
            Weights::Nhwc(_) => Ok(0),
            Weights::Nchw { kernel, .. } => Panels::packed_len(*kernel, self.filter.ci, out.h * out.w),
        }
    }

    fn weight_bytes(&self) -> usize {
        match &self.weights {
            Weights::Nhwc(p) => p.bytes(),
            Weights::Nchw { weights, bias, .. } => 4 * (weights.len() + bias.len()),
        }
    }

    fn precision(&self) -> Precision {
        self.kernel().precision()
    }

    fn forward(
        &self,
        input: TensorView<'_, T>,
        output: &mut TensorViewMut<'_, T>,
        epilogue: Epilogue<'_, T>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("1x1 conv", self.layout(), &input, output, out_shape)?;
        match &self.weights {
            Weights::Nhwc(packed) => self.forward_nhwc(packed, input, out_shape, output.data_mut(), &epilogue),
            Weights::Nchw { kernel, weights, bias } => {
                // NCHW weights exist only for an f32 kernel over T = f32 (checked in `new`).
                let (Some(input), Some(mut output), Some(epilogue)) =
                    (input.cast::<f32>(), output.cast_mut::<f32>(), epilogue.cast::<f32>())
                else {
                    return Err(Error::invalid("an NCHW 1x1 convolution takes f32 activations"));
                };
                self.forward_nchw(*kernel, weights, bias, input, out_shape, output.data_mut(), &epilogue, scratch)
            }
        }
    }
}
