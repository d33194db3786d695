//! KxK convolution over NHWC on the convkit microkernels, without im2col.
//!
//! Each output pixel's reduction is kh runs of kw*ci contiguous values of a zero-padded
//! copy of the input (in caller scratch, `(h + 2p) * (w + 2p) * ci` floats per image; none
//! when the padding is 0), accumulated in registers by the tile kernel the caller chose
//! (`Kernel`). Compared with im2col + GEMM this copies the input once instead of
//! kh*kw times and packs nothing per call.

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use convkit_microkernel::Kernel;
pub use convkit_tensor::Conv;

use convkit_microkernel::{for_each_chunk, CacheSizes, Gemm, GemmElement, Lhs, PackedWeights, RowMap};
use convkit_tensor::{
    check_precision, checked_product, AlignedVec, ConvQuant, Element, Epilogue, Error, FilterShape, Layout, Precision,
    Result, Shape, TensorView, TensorViewMut, Window,
};
use std::marker::PhantomData;

/// Padded inputs below this many floats are copied on the calling thread.
const PARALLEL_PAD_MIN: usize = 1 << 16;

/// A KxK convolution (any stride, zero padding, dilation 1) over NHWC activations of
/// element type `T`.
#[derive(Debug, Clone)]
pub struct DirectConv<T: GemmElement = f32> {
    filter: FilterShape,
    window: Window,
    packed: PackedWeights,
    scratch_bytes: usize,
    /// An int8 conv's tensors' quantization.
    quant: Option<ConvQuant>,
    element: PhantomData<T>,
}

impl<T: GemmElement> DirectConv<T> {
    /// Packs OIHW `weights` and `bias` (zeros if None) for `window` and `kernel` (a kernel
    /// over `T` that this CPU runs). In bf16 the weights are rounded to nearest bf16 here
    /// and the bias stays f32.
    pub fn new(
        kernel: Kernel,
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        window: Window,
    ) -> Result<Self> {
        check_precision::<T>("direct conv", kernel.precision())?;
        if kernel.precision() == Precision::Int8 {
            return Err(Error::invalid(
                "an int8 direct convolution is built from quantized weights: DirectConv::new_int8",
            ));
        }
        filter.check(weights, bias)?;
        Self::check_window(filter, window)?;
        Ok(DirectConv {
            filter,
            window,
            packed: PackedWeights::from_oihw(kernel, weights, filter, bias)?,
            scratch_bytes: CacheSizes::get().scratch_bytes(),
            quant: None,
            element: PhantomData,
        })
    }

    /// The windows the direct path runs.
    fn check_window(filter: FilterShape, window: Window) -> Result<()> {
        filter.check_window(&window)?;
        if window.dilation != (1, 1) || window.ceil_mode {
            return Err(Error::invalid(format!(
                "direct convolution takes dilation 1 and no ceil mode, got dilation {:?}, ceil mode {}",
                window.dilation, window.ceil_mode
            )));
        }
        if window.stride.0 == 0 || window.stride.0 != window.stride.1 {
            return Err(Error::invalid(format!("direct convolution takes one stride >= 1, got {:?}", window.stride)));
        }
        Ok(())
    }

    /// Changes the scratch bound (bytes; at least one padded image is always held). The
    /// default is [`CacheSizes::scratch_bytes`].
    pub fn with_scratch_bytes(mut self, bytes: usize) -> Self {
        self.scratch_bytes = bytes;
        self
    }

    /// The kernel the weights were packed for.
    pub fn kernel(&self) -> Kernel {
        self.packed.kernel()
    }

    /// Runs the microkernel walk over `src` (src_h x src_w images, padding included).
    fn run(
        &self,
        src: &[T],
        (src_h, src_w): (usize, usize),
        out: Shape,
        dst: &mut [T],
        e: &Epilogue<'_, T>,
    ) -> Result<()> {
        let ci = self.filter.ci;
        let rows = RowMap::Pixels { ho: out.h, wo: out.w, src_h, src_w, stride: self.window.stride.0, ci };
        let lhs = Lhs::new(src, rows).with_segments(self.filter.kh, src_w * ci);
        Gemm::new(lhs, self.packed.panels(), out.n * out.h * out.w, self.filter.co)
            .with_residual(e.residual.map(|r| r.data()))
            .with_accumulate(e.accumulate)
            .with_relu(e.relu)
            .with_conv_quant(self.quant)
            .run(dst)
    }

    /// Padded floats of one image, and how many images are padded and convolved at a time:
    /// as many as fit in the scratch bound, at least one.
    fn padded_group(&self, input: Shape) -> Result<(usize, usize)> {
        let (ph, pw) = self.window.padding;
        let overflow = || Error::overflow(format!("padded input of {input}"));
        let h = ph.checked_mul(2).and_then(|p| input.h.checked_add(p)).ok_or_else(overflow)?;
        let w = pw.checked_mul(2).and_then(|p| input.w.checked_add(p)).ok_or_else(overflow)?;
        let image = checked_product("direct conv scratch", &[h, w, input.c])?;
        Ok((image, (self.scratch_bytes / (4 * image).max(1)).clamp(1, input.n)))
    }

    /// The conv over `input`: padded into `scratch` a group of images at a time, then the
    /// microkernel walk.
    fn forward_padded(
        &self,
        input: TensorView<'_, T>,
        output: &mut TensorViewMut<'_, T>,
        epilogue: Epilogue<'_, T>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("direct conv", Layout::Nhwc, &input, output, out_shape)?;
        let s = input.shape();
        let (ph, pw) = self.window.padding;
        if (ph, pw) == (0, 0) {
            return self.run(input.data(), (s.h, s.w), out_shape, output.data_mut(), &epilogue);
        }
        let (padded_image, group) = self.padded_group(s)?;
        let scratch = scratch.grow_elements::<T>(padded_image * group)?;
        let (hp, wp) = (s.h + 2 * ph, s.w + 2 * pw);
        let (in_image, out_image) = (s.image_len(), out_shape.image_len());
        for n0 in (0..s.n).step_by(group) {
            let images = group.min(s.n - n0);
            let (group_in, group_out) = (Shape { n: images, ..s }, Shape { n: images, ..out_shape });
            let padded = &mut scratch[..padded_image * images];
            // Padding is a real zero: the input's zero point in int8.
            let zero = self.quant.map_or(T::default(), |q| T::from_f32(q.input.zero_point() as f32));
            pad_nhwc(&input.data()[n0 * in_image..(n0 + images) * in_image], group_in, (ph, pw), zero, padded);
            let residual = epilogue
                .residual
                .map(|r| TensorView::new(group_out, Layout::Nhwc, &r.data()[n0 * out_image..(n0 + images) * out_image]))
                .transpose()?;
            let out = &mut output.data_mut()[n0 * out_image..(n0 + images) * out_image];
            self.run(padded, (hp, wp), group_out, out, &Epilogue { residual, ..epilogue })?;
        }
        Ok(())
    }
}

impl DirectConv<u8> {
    /// An int8 KxK convolution over NHWC u8 activations: OIHW s8 `weights` (in
    /// -127..=127) with a scale per output channel, an f32 `bias`, the `window` of
    /// [`DirectConv::new`], and `quant`, the input, output and residual quantization.
    /// Padding reads the input's zero point (a real zero); the epilogue is the int8 one
    /// of the microkernel crate's `Gemm` (bitwise the same on every kernel family).
    pub fn new_int8(
        kernel: Kernel,
        weights: &[i8],
        weight_scales: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        window: Window,
        quant: ConvQuant,
    ) -> Result<Self> {
        Self::check_window(filter, window)?;
        convkit_tensor::check_channels("int8 weight scales", filter.co, weight_scales.len())?;
        let column_scales = quant.column_scales(weight_scales)?;
        let packed =
            PackedWeights::from_oihw_int8(kernel, weights, filter, &column_scales, quant.input.zero_point(), bias)?;
        Ok(DirectConv {
            filter,
            window,
            packed,
            scratch_bytes: CacheSizes::get().scratch_bytes(),
            quant: Some(quant),
            element: PhantomData,
        })
    }

    /// The quantization of its tensors.
    pub fn quant(&self) -> Option<ConvQuant> {
        self.quant
    }
}

impl<T: GemmElement> Conv<T> for DirectConv<T> {
    fn filter(&self) -> FilterShape {
        self.filter
    }

    fn window(&self) -> Window {
        self.window
    }

    fn layout(&self) -> Layout {
        Layout::Nhwc
    }

    /// Padded copies of a group of images (0 without padding).
    fn scratch_len(&self, input: Shape) -> Result<usize> {
        self.output_shape(input)?;
        if self.window.padding == (0, 0) {
            return Ok(0);
        }
        let (image, group) = self.padded_group(input)?;
        Ok(image * group)
    }

    fn weight_bytes(&self) -> usize {
        self.packed.bytes()
    }

    fn precision(&self) -> Precision {
        self.packed.precision()
    }

    fn forward(
        &self,
        input: TensorView<'_, T>,
        output: &mut TensorViewMut<'_, T>,
        epilogue: Epilogue<'_, T>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        self.forward_padded(input, output, epilogue, scratch)
    }
}

/// Copies NHWC `src` into `dst` of (h + 2ph) x (w + 2pw) per image with borders of
/// `zero`, one padded row per task on the current rayon pool.
fn pad_nhwc<T: Element>(src: &[T], s: Shape, (ph, pw): (usize, usize), zero: T, dst: &mut [T]) {
    let c = s.c;
    let (hp, wp) = (s.h + 2 * ph, s.w + 2 * pw);
    let row = s.w * c;
    let fill_row = |(i, dst_row): (usize, &mut [T])| {
        let (n, y) = (i / hp, i % hp);
        match y.checked_sub(ph).filter(|&iy| iy < s.h) {
            None => dst_row.fill(zero),
            Some(iy) => {
                let src_row = &src[(n * s.h + iy) * row..][..row];
                dst_row[..pw * c].fill(zero);
                dst_row[pw * c..pw * c + row].copy_from_slice(src_row);
                dst_row[pw * c + row..].fill(zero);
            }
        }
    };
    if dst.len() >= PARALLEL_PAD_MIN {
        for_each_chunk(dst, wp * c, fill_row);
    } else {
        dst.chunks_mut(wp * c).enumerate().for_each(fill_row);
    }
}
