//! Direct 1x1 convolution: no im2col, packed weights, fused epilogue.
//!
//! Over an NHWC activation a 1x1 convolution is a GEMM whose left operand is the
//! activation buffer itself: output pixel m reads the `ci` contiguous channels of its
//! input pixel. With stride 2 the kernel reads every other pixel of every other row in
//! place, with no copy. Weights are packed once, at construction, into the panels of the
//! kernel family this CPU runs (chosen at run time, see `convkit_microkernel::Isa`), and
//! each output tile is computed over the whole reduction in registers; bias, residual and
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

pub use convkit_microkernel::Isa;
pub use convkit_tensor::Conv;

use convkit_microkernel::{Gemm, Lhs, PackedWeights, Panels, RowMap};
use convkit_tensor::{
    bf16, AlignedVec, Element, Epilogue, Error, FilterShape, Layout, Precision, Result, Shape, TensorView,
    TensorViewMut, Window,
};

/// A 1x1 convolution (stride 1 or 2, no padding) prepared for one activation layout.
#[derive(Debug, Clone)]
pub struct Conv1x1 {
    filter: FilterShape,
    stride: usize,
    weights: Weights,
}

#[derive(Debug, Clone)]
enum Weights {
    /// NHWC: K = ci by N = co panels, with the bias.
    Nhwc(PackedWeights),
    /// NCHW: OIHW weights as given, [co][ci] (the broadcast operand), and the bias.
    Nchw { isa: Isa, weights: AlignedVec, bias: Vec<f32> },
}

impl Conv1x1 {
    /// Packs OIHW `weights` [co, ci, 1, 1] and `bias` (zeros if None) for `layout`, for the
    /// kernel family [`Isa::selected`].
    pub fn new(
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        stride: usize,
        layout: Layout,
    ) -> Result<Self> {
        Self::for_isa(Isa::selected()?, weights, filter, bias, stride, layout)
    }

    /// As [`Conv1x1::new`], for kernel family `isa` (an error if this CPU lacks it).
    pub fn for_isa(
        isa: Isa,
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        stride: usize,
        layout: Layout,
    ) -> Result<Self> {
        Self::for_precision(isa, Precision::F32, weights, filter, bias, stride, layout)
    }

    /// As [`Conv1x1::for_isa`], with the weights packed in `precision`. A bf16 conv runs
    /// [`Conv::forward_bf16`] over NHWC bf16 activations (the bias stays f32); its
    /// weights are rounded to nearest bf16 here.
    pub fn for_precision(
        isa: Isa,
        precision: Precision,
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
        let weights = match (layout, precision) {
            (Layout::Nhwc, _) => Weights::Nhwc(PackedWeights::from_oihw(isa, precision, weights, filter, bias)?),
            (Layout::Nchw, Precision::F32) => Weights::Nchw {
                isa: isa.check_available()?,
                weights: AlignedVec::from_slice(weights),
                bias: bias.map_or_else(|| vec![0.0; filter.co], <[f32]>::to_vec),
            },
            (Layout::Nchw, _) => {
                return Err(Error::invalid(format!("a {precision} 1x1 convolution takes NHWC activations, not NCHW")))
            }
        };
        Ok(Conv1x1 { filter, stride, weights })
    }

    /// The stride along both axes.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The kernel family the weights were packed for.
    pub fn isa(&self) -> Isa {
        match &self.weights {
            Weights::Nhwc(p) => p.isa(),
            Weights::Nchw { isa, .. } => *isa,
        }
    }

    fn forward_nhwc<T: Element>(
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
        let lhs = Lhs { data: input.data(), rows, segments: 1, segment_step: 0 };
        Gemm {
            residual: e.residual.map(|r| r.data()),
            accumulate: e.accumulate,
            relu: e.relu,
            ..Gemm::new(lhs, packed.panels(), out.n * out.h * out.w, self.filter.co)
        }
        .run(dst)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_nchw(
        &self,
        isa: Isa,
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
        let need = Panels::packed_len(isa, ci, hw)?;
        if scratch.len() < need {
            scratch.resize(need)?;
        }
        let plane = s.h * s.w;
        for (n, out_image) in dst.chunks_exact_mut(co * hw).enumerate() {
            let image = input.image(n);
            let entry = |k: usize, p: usize| image[k * plane + p / wo * st * s.w + p % wo * st];
            let panels = Panels::pack_into(isa, ci, hw, entry, scratch)?;
            Gemm {
                row_bias: Some(bias),
                residual: e.residual.map(|r| r.image(n)),
                accumulate: e.accumulate,
                relu: e.relu,
                ..Gemm::new(Lhs::strided(weights, 0, ci), panels, co, hw)
            }
            .run(out_image)?;
        }
        Ok(())
    }
}

impl Conv for Conv1x1 {
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
            Weights::Nchw { isa, .. } => Panels::packed_len(*isa, self.filter.ci, out.h * out.w),
        }
    }

    fn weight_bytes(&self) -> usize {
        match &self.weights {
            Weights::Nhwc(p) => p.bytes(),
            Weights::Nchw { weights, bias, .. } => 4 * (weights.len() + bias.len()),
        }
    }

    fn precision(&self) -> Precision {
        match &self.weights {
            Weights::Nhwc(p) => p.precision(),
            Weights::Nchw { .. } => Precision::F32,
        }
    }

    fn forward_bf16(
        &self,
        input: TensorView<'_, bf16>,
        output: &mut TensorViewMut<'_, bf16>,
        epilogue: Epilogue<'_, bf16>,
        _scratch: &mut AlignedVec,
    ) -> Result<()> {
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("1x1 conv", self.layout(), &input, output, out_shape)?;
        match &self.weights {
            Weights::Nhwc(packed) => self.forward_nhwc(packed, input, out_shape, output.data_mut(), &epilogue),
            Weights::Nchw { .. } => Err(Error::invalid("an NCHW 1x1 convolution has no bf16 path")),
        }
    }

    fn forward(
        &self,
        input: TensorView<'_>,
        output: &mut TensorViewMut<'_>,
        epilogue: Epilogue<'_>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("1x1 conv", self.layout(), &input, output, out_shape)?;
        match &self.weights {
            Weights::Nhwc(packed) => self.forward_nhwc(packed, input, out_shape, output.data_mut(), &epilogue),
            Weights::Nchw { isa, weights, bias } => {
                self.forward_nchw(*isa, weights, bias, input, out_shape, output.data_mut(), &epilogue, scratch)
            }
        }
    }
}
