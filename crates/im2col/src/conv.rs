//! KxK convolution = im2col + GEMM + fused epilogue.

use crate::im2col::{im2col_nchw, im2col_nhwc, ImageDims};
use crate::matmul::{matmul, MatMut, MatRef, MatrixShape};
use convkit_tensor::{
    checked_product, AlignedVec, Conv, Epilogue, Error, FilterShape, Layout, Precision, Result, Shape, TensorView,
    TensorViewMut, Window,
};
use std::time::{Duration, Instant};

/// Default bound of the im2col scratch: output rows are lowered in tiles of at most this
/// many bytes (at least one output row), so scratch stays near L2 size whatever the image.
pub const DEFAULT_SCRATCH_BYTES: usize = 2 << 20;

/// A convolution whose weights were prepared once for one activation layout.
#[derive(Debug, Clone)]
pub struct Im2colConv {
    filter: FilterShape,
    window: Window,
    layout: Layout,
    /// NHWC: [kh*kw*ci][co] (row index (ky, kx, ci)); NCHW: OIHW as given, [co][ci*kh*kw].
    weights: AlignedVec,
    bias: Vec<f32>,
    scratch_bytes: usize,
}

impl Im2colConv {
    /// Prepares OIHW `weights` (and `bias`, zeros if None) for activations in `layout`.
    pub fn new(
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        window: Window,
        layout: Layout,
    ) -> Result<Self> {
        filter.check(weights, bias)?;
        filter.check_window(&window)?;
        if window.ceil_mode {
            return Err(Error::invalid("convolution does not take ceil mode"));
        }
        let k = filter.reduction_len();
        let packed = match layout {
            Layout::Nchw => AlignedVec::from_slice(weights),
            Layout::Nhwc => {
                let mut p = AlignedVec::zeros(weights.len());
                for co in 0..filter.co {
                    for ci in 0..filter.ci {
                        for ky in 0..filter.kh {
                            for kx in 0..filter.kw {
                                let row = (ky * filter.kw + kx) * filter.ci + ci;
                                p[row * filter.co + co] = weights[co * k + (ci * filter.kh + ky) * filter.kw + kx];
                            }
                        }
                    }
                }
                p
            }
        };
        Ok(Im2colConv {
            filter,
            window,
            layout,
            weights: packed,
            bias: bias.map_or_else(|| vec![0.0; filter.co], <[f32]>::to_vec),
            scratch_bytes: DEFAULT_SCRATCH_BYTES,
        })
    }

    /// Changes the scratch bound (bytes; at least one output row is always lowered).
    pub fn with_scratch_bytes(mut self, bytes: usize) -> Self {
        self.scratch_bytes = bytes;
        self
    }

    /// Output rows lowered per GEMM call for an output `wo` wide.
    fn tile_rows(&self, out: Shape) -> usize {
        let row_bytes = out.w * self.filter.reduction_len() * 4;
        (self.scratch_bytes / row_bytes.max(1)).clamp(1, out.h)
    }
}

impl Conv for Im2colConv {
    fn filter(&self) -> FilterShape {
        self.filter
    }

    fn window(&self) -> Window {
        self.window
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    /// The im2col matrix of one tile of output rows.
    fn scratch_len(&self, input: Shape) -> Result<usize> {
        let out = self.output_shape(input)?;
        checked_product("im2col scratch", &[self.tile_rows(out), out.w, self.filter.reduction_len()])
    }

    fn weight_bytes(&self) -> usize {
        4 * (self.weights.len() + self.bias.len())
    }

    /// f32: the `gemm` crate's kernels.
    fn precision(&self) -> Precision {
        Precision::F32
    }

    fn forward(
        &self,
        input: TensorView<'_>,
        output: &mut TensorViewMut<'_>,
        epilogue: Epilogue<'_>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        self.forward_timed(input, output, epilogue, scratch).map(|_| ())
    }

    /// The GEMMs run on the current rayon pool; the time returned is the im2col copies'.
    fn forward_timed(
        &self,
        input: TensorView<'_>,
        output: &mut TensorViewMut<'_>,
        epilogue: Epilogue<'_>,
        scratch: &mut AlignedVec,
    ) -> Result<Duration> {
        let mut lowering = Duration::ZERO;
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("conv", self.layout, &input, output, out_shape)?;
        let need = self.scratch_len(input.shape())?;
        if scratch.len() < need {
            scratch.resize(need)?;
        }
        let in_shape = input.shape();
        let dims = ImageDims { h: in_shape.h, w: in_shape.w, c: in_shape.c };
        let tile = self.tile_rows(out_shape);
        let (co, k) = (self.filter.co, self.filter.reduction_len());
        let (ho, wo) = (out_shape.h, out_shape.w);
        let out_image = out_shape.image_len();
        for n in 0..in_shape.n {
            let image = input.image(n);
            let dst = &mut output.data_mut()[n * out_image..(n + 1) * out_image];
            let residual = epilogue.residual.map(|r| r.image(n));
            for oy0 in (0..ho).step_by(tile) {
                let rows = oy0..(oy0 + tile).min(ho);
                let pixels = rows.len() * wo;
                let col = &mut scratch[..pixels * k];
                match self.layout {
                    Layout::Nhwc => {
                        let start = Instant::now();
                        im2col_nhwc(image, dims, &self.window, rows.clone(), col)?;
                        lowering += start.elapsed();
                        let range = oy0 * wo * co..(oy0 * wo + pixels) * co;
                        let d = &mut dst[range.clone()];
                        for (px, d) in d.chunks_exact_mut(co).enumerate() {
                            if epilogue.accumulate {
                                d.iter_mut().zip(&self.bias).for_each(|(d, b)| *d += b);
                            } else {
                                d.copy_from_slice(&self.bias);
                            }
                            if let Some(r) = residual {
                                let r = &r[range.start + px * co..range.start + (px + 1) * co];
                                d.iter_mut().zip(r).for_each(|(d, r)| *d += r);
                            }
                        }
                        matmul(
                            MatMut { data: d, shape: MatrixShape::row_major(pixels, co) },
                            MatRef { data: col, shape: MatrixShape::row_major(pixels, k) },
                            MatRef { data: &self.weights, shape: MatrixShape::row_major(k, co) },
                            true,
                            true,
                        )?;
                        if epilogue.relu {
                            d.iter_mut().for_each(|v| *v = convkit_tensor::relu(*v));
                        }
                    }
                    Layout::Nchw => {
                        let start = Instant::now();
                        im2col_nchw(image, dims, &self.window, rows.clone(), col)?;
                        lowering += start.elapsed();
                        let start = oy0 * wo;
                        for c in 0..co {
                            let d = &mut dst[c * ho * wo + start..c * ho * wo + start + pixels];
                            if epilogue.accumulate {
                                d.iter_mut().for_each(|v| *v += self.bias[c]);
                            } else {
                                d.fill(self.bias[c]);
                            }
                            if let Some(r) = residual {
                                let r = &r[c * ho * wo + start..c * ho * wo + start + pixels];
                                d.iter_mut().zip(r).for_each(|(d, r)| *d += r);
                            }
                        }
                        let dst_shape = MatrixShape { rows: co, cols: pixels, row_stride: ho * wo, col_stride: 1 };
                        let last = (co - 1) * ho * wo + pixels;
                        let d = &mut dst[start..start + last];
                        matmul(
                            MatMut { data: &mut *d, shape: dst_shape },
                            MatRef { data: &self.weights, shape: MatrixShape::row_major(co, k) },
                            MatRef { data: col, shape: MatrixShape::row_major(k, pixels) },
                            true,
                            true,
                        )?;
                        if epilogue.relu {
                            for c in 0..co {
                                d[c * ho * wo..c * ho * wo + pixels]
                                    .iter_mut()
                                    .for_each(|v| *v = convkit_tensor::relu(*v));
                            }
                        }
                    }
                }
            }
        }
        Ok(lowering)
    }
}
