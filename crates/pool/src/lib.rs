//! Max pooling, average pooling (ceil mode; padding counted or not, with PyTorch/ONNX
//! semantics) and global average pooling over NCHW and NHWC.
//!
//! NHWC is vectorised across channels with the vectors of the kernel family the caller
//! passes (see `convkit_microkernel::Family::pick`); NCHW runs a scalar loop per plane. Both split output rows (NHWC) or planes (NCHW) across the current rayon pool
//! when the output is large enough to pay for it: call inside `pool.install()` to bound
//! the threads. Each output is computed by one task, so results do not depend on the
//! thread count.

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use convkit_microkernel::Family;

use convkit_microkernel::{GemmElement, Simd, SimdOp};
use convkit_tensor::{Element, Error, Layout, Result, Shape, Tensor, TensorView, TensorViewMut, Window};
use rayon::prelude::*;

/// Outputs below this many elements run on the calling thread.
const PARALLEL_MIN_OUTPUTS: usize = 1 << 14;

/// What a window reduces to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The largest value of the window (NaN if the window holds one, as in PyTorch).
    Max,
    /// Mean; with `count_include_pad` the divisor counts padded cells (not ceil-mode
    /// overhang), without it only the cells inside the input.
    Average {
        /// Count padded cells in the divisor (ceil-mode overhang never counts).
        count_include_pad: bool,
    },
}

/// Output shape of pooling `input` with `window` (dilation must be 1).
pub fn output_shape(input: Shape, window: Window) -> Result<Shape> {
    input.validate()?;
    if window.dilation != (1, 1) {
        return Err(Error::invalid(format!("pooling supports dilation 1 only, got {:?}", window.dilation)));
    }
    let (kh, kw) = window.kernel;
    if window.padding.0 * 2 > kh || window.padding.1 * 2 > kw {
        // PyTorch's rule: a window made mostly of padding has nothing to pool.
        return Err(Error::invalid(format!(
            "pool padding {:?} must be at most half the kernel {:?}",
            window.padding, window.kernel
        )));
    }
    let (h, w) = window.output_hw(input.h, input.w)?;
    Ok(Shape::new(input.n, input.c, h, w))
}

/// Pools `input` into `output` (same layout, shape from [`output_shape`]), f32, bf16 or
/// u8 (summed in f32, each output rounded once; u8 means are rounded to nearest even and
/// stay on the input's quantization; a u8 average that counts padding is an error, as it
/// would count the u8 value 0 whatever the zero point), NHWC on the vectors of `family`
/// (the portable ones if this CPU lacks it).
pub fn pool2d_into<T: GemmElement>(
    family: Family,
    input: TensorView<'_, T>,
    window: Window,
    kind: PoolKind,
    output: &mut TensorViewMut<'_, T>,
) -> Result<()> {
    let out_shape = output_shape(input.shape(), window)?;
    let counts_padding = kind == PoolKind::Average { count_include_pad: true } && window.padding != (0, 0);
    if T::PRECISION == convkit_tensor::Precision::Int8 && counts_padding {
        return Err(Error::invalid(
            "a u8 average pool that counts padding would count the u8 value 0, a real zero only when the zero point \
             is 0: pool in f32, or with count_include_pad = false",
        ));
    }
    if output.shape() != out_shape {
        return Err(Error::mismatch("pool output shape", out_shape, output.shape()));
    }
    if output.layout() != input.layout() {
        return Err(Error::mismatch("pool output layout", input.layout(), output.layout()));
    }
    let geom = Geometry::new(input.shape(), out_shape, window, kind);
    let parallel = out_shape.numel()? >= PARALLEL_MIN_OUTPUTS;
    let src = input.data();
    match input.layout() {
        Layout::Nhwc => {
            let row_len = out_shape.w * out_shape.c;
            let run = |(row, out): (usize, &mut [T])| {
                let (n, oy) = (row / out_shape.h, row % out_shape.h);
                family.dispatch(PoolRow { geom: &geom, image: input.image(n), oy, out });
            };
            if parallel {
                output.data_mut().par_chunks_mut(row_len).enumerate().for_each(run);
            } else {
                output.data_mut().chunks_mut(row_len).enumerate().for_each(run);
            }
        }
        Layout::Nchw => {
            let plane_in = input.shape().h * input.shape().w;
            let plane_out = out_shape.h * out_shape.w;
            let run = |(plane, out): (usize, &mut [T])| {
                pool_plane_nchw(&geom, &src[plane * plane_in..(plane + 1) * plane_in], out);
            };
            if parallel {
                output.data_mut().par_chunks_mut(plane_out).enumerate().for_each(run);
            } else {
                output.data_mut().chunks_mut(plane_out).enumerate().for_each(run);
            }
        }
    }
    Ok(())
}

/// Pools f32 `input` into a new tensor of the same layout, on `family`'s vectors.
pub fn pool2d(family: Family, input: TensorView<'_>, window: Window, kind: PoolKind) -> Result<Tensor> {
    let mut out = Tensor::zeros(output_shape(input.shape(), window)?, input.layout())?;
    pool2d_into(family, input, window, kind, &mut out.view_mut())?;
    Ok(out)
}

/// Max pooling into a new tensor.
pub fn max_pool2d(family: Family, input: TensorView<'_>, window: Window) -> Result<Tensor> {
    pool2d(family, input, window, PoolKind::Max)
}

/// Average pooling into a new tensor.
pub fn avg_pool2d(family: Family, input: TensorView<'_>, window: Window, count_include_pad: bool) -> Result<Tensor> {
    pool2d(family, input, window, PoolKind::Average { count_include_pad })
}

/// Mean over h and w into `output`, [n, c] row-major, f32 whatever the input's elements;
/// NHWC on `family`'s vectors.
pub fn global_avg_pool_into<T: GemmElement>(
    family: Family,
    input: TensorView<'_, T>,
    output: &mut [f32],
) -> Result<()> {
    let s = input.shape();
    s.validate()?;
    if output.len() != s.n * s.c {
        return Err(Error::mismatch("global average pool output length (n*c)", s.n * s.c, output.len()));
    }
    let hw = s.h * s.w;
    let scale = 1.0 / hw as f32;
    for (n, out) in output.chunks_mut(s.c).enumerate() {
        let img = input.image(n);
        match input.layout() {
            Layout::Nhwc => family.dispatch(ChannelMean { image: img, channels: s.c, scale, out }),
            Layout::Nchw => {
                for (o, plane) in out.iter_mut().zip(img.chunks_exact(hw)) {
                    *o = plane.iter().map(|v| v.to_f32()).sum::<f32>() * scale;
                }
            }
        }
    }
    Ok(())
}

/// Mean over h and w: [n, c] row-major, on `family`'s vectors.
pub fn global_avg_pool(family: Family, input: TensorView<'_>) -> Result<Vec<f32>> {
    let s = input.shape();
    s.validate()?;
    let mut out = vec![0.0; s.n * s.c];
    global_avg_pool_into(family, input, &mut out)?;
    Ok(out)
}

/// Shapes and window of one pooling call, and the per-axis clipping it implies.
struct Geometry {
    input: Shape,
    output: Shape,
    window: Window,
    kind: PoolKind,
}

/// The input range [lo, hi) one output position covers along an axis, and the divisor
/// length of that axis when padding counts.
#[derive(Clone, Copy)]
struct Span {
    lo: usize,
    hi: usize,
    padded_len: usize,
}

impl Geometry {
    fn new(input: Shape, output: Shape, window: Window, kind: PoolKind) -> Self {
        Geometry { input, output, window, kind }
    }

    fn span(o: usize, kernel: usize, stride: usize, pad: usize, len: usize) -> Span {
        let start = o * stride; // in padded coordinates
        let end = start + kernel;
        Span {
            lo: start.saturating_sub(pad).min(len),
            hi: end.saturating_sub(pad).min(len),
            padded_len: end.min(len + 2 * pad) - start,
        }
    }

    fn row_span(&self, oy: usize) -> Span {
        Self::span(oy, self.window.kernel.0, self.window.stride.0, self.window.padding.0, self.input.h)
    }

    fn col_span(&self, ox: usize) -> Span {
        Self::span(ox, self.window.kernel.1, self.window.stride.1, self.window.padding.1, self.input.w)
    }

    /// The factor an average multiplies its sum by (1 for max).
    fn scale(&self, ys: Span, xs: Span) -> f32 {
        match self.kind {
            PoolKind::Max => 1.0,
            PoolKind::Average { count_include_pad: true } => 1.0 / (ys.padded_len * xs.padded_len) as f32,
            PoolKind::Average { count_include_pad: false } => 1.0 / ((ys.hi - ys.lo) * (xs.hi - xs.lo)) as f32,
        }
    }
}

/// The mean over pixels of each channel of one NHWC image.
struct ChannelMean<'a, T> {
    image: &'a [T],
    channels: usize,
    scale: f32,
    out: &'a mut [f32],
}

impl<T: GemmElement> SimdOp for ChannelMean<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let c = self.channels;
        for c0 in (0..c).step_by(S::LANES) {
            let lanes = (c - c0).min(S::LANES);
            let mut acc = s.zero();
            for px in self.image.chunks_exact(c) {
                acc = s.add(acc, s.load_elements(&px[c0..], lanes));
            }
            s.store_n(&mut self.out[c0..], lanes, s.mul(acc, s.splat(self.scale)));
        }
    }
}

/// One output row (all ox, all channels) of one NHWC image.
struct PoolRow<'a, T> {
    geom: &'a Geometry,
    image: &'a [T],
    oy: usize,
    out: &'a mut [T],
}

impl<T: GemmElement> SimdOp for PoolRow<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let g = self.geom;
        let c = g.input.c;
        let in_row = g.input.w * c;
        let ys = g.row_span(self.oy);
        let is_max = g.kind == PoolKind::Max;
        let init = if is_max { f32::NEG_INFINITY } else { 0.0 };
        for (ox, dst) in self.out.chunks_exact_mut(c).enumerate().take(g.output.w) {
            let xs = g.col_span(ox);
            let scale = s.splat(g.scale(ys, xs));
            for c0 in (0..c).step_by(S::LANES) {
                let lanes = (c - c0).min(S::LANES);
                let mut acc = s.splat(init);
                for iy in ys.lo..ys.hi {
                    for ix in xs.lo..xs.hi {
                        let v = s.load_elements(&self.image[iy * in_row + ix * c + c0..], lanes);
                        acc = if is_max { s.max_keep_nan(acc, v) } else { s.add(acc, v) };
                    }
                }
                s.store_elements(&mut dst[c0..], lanes, if is_max { acc } else { s.mul(acc, scale) });
            }
        }
    }
}

/// One NCHW plane.
fn pool_plane_nchw<T: Element>(g: &Geometry, plane: &[T], out: &mut [T]) {
    let w = g.input.w;
    let is_max = g.kind == PoolKind::Max;
    for oy in 0..g.output.h {
        let ys = g.row_span(oy);
        for ox in 0..g.output.w {
            let xs = g.col_span(ox);
            let mut acc = if is_max { f32::NEG_INFINITY } else { 0.0 };
            for iy in ys.lo..ys.hi {
                for v in &plane[iy * w + xs.lo..iy * w + xs.hi] {
                    let v = v.to_f32();
                    acc = if is_max { max_keep_nan(acc, v) } else { acc + v };
                }
            }
            out[oy * g.output.w + ox] = T::from_f32(if is_max { acc } else { acc * g.scale(ys, xs) });
        }
    }
}

/// max(a, b) that keeps NaN from either side, as PyTorch's max pooling does (`f32::max`
/// drops it); the scalar twin of `Simd::max_keep_nan`.
#[inline(always)]
fn max_keep_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || a > b {
        a
    } else {
        b
    }
}
