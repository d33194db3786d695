//! Direct 1x1 convolution: no im2col, packed weights, fused epilogue.
//!
//! Over an NHWC activation a 1x1 convolution is a GEMM whose left operand is the
//! activation buffer itself: output pixel m reads the `ci` contiguous channels of its
//! input pixel. With stride 2 the kernel reads every other pixel of every other row in
//! place, with no copy. Weights are packed once, at construction, into 32-column panels
//! (for each k, two 16-lane vectors), and each MR x 32 output tile is computed over the
//! whole reduction in registers; bias, residual and ReLU are applied before the store.
//!
//! Work is split over blocks of output rows with rayon (`par_chunks_mut`), on the current
//! pool: call inside `pool.install()` to choose the threads. Every output element is
//! computed by the same sequence of FMAs whatever the split, so results are bitwise the
//! same for any thread count.
//!
//! The NCHW entry point computes out[co, hw] = W[co, ci] * in[ci, hw] per image: the
//! weights are the broadcast operand and 32-pixel panels of the input are packed per call.
//!
//! [`DirectConv`] runs KxK convolutions over NHWC on the same microkernel: an output
//! pixel's reduction is kh runs of kw*ci contiguous input values (one per kernel row) in
//! a zero-padded copy of the input, so there is no im2col matrix and no GEMM packing.

mod direct;
pub mod kernel;
mod nhwc;
mod winograd;

pub use direct::{DirectConv, DEFAULT_PAD_SCRATCH_BYTES};
pub use winograd::{WinogradConv, WinogradTile, DEFAULT_WINOGRAD_SCRATCH_BYTES};

use bytemuck::Zeroable;
use convkit_tensor::simd::f32x16;
use convkit_tensor::{AlignedVec, Epilogue, Error, FilterShape, Layout, Result, Shape, TensorView, TensorViewMut};
use kernel::{accumulate, store_tile, Tile, TileBias, MR, NR};
use nhwc::{pack_panels, pad_bias, NhwcConv};
use rayon::prelude::*;

/// Bytes of activation rows (MC x K) a task keeps hot in L2 while it walks every weight
/// panel: half of the 1 MiB L2 per core here (Zen 4), leaving room for the panel and the
/// output stream. Against 1 MiB, measured 5-15% faster at batch 8 and level at batch 1.
const A_BLOCK_BYTES: usize = 512 << 10;

/// A 1x1 convolution (stride 1 or 2, no padding) prepared for one activation layout.
#[derive(Debug, Clone)]
pub struct Conv1x1 {
    ci: usize,
    co: usize,
    stride: usize,
    layout: Layout,
    /// NHWC: panels of 32 output channels, each `ci` pairs of vectors (zero-padded past co).
    /// NCHW: OIHW weights as given, [co][ci].
    weights: Vec<f32x16>,
    /// Bias padded with zeros to a multiple of 32.
    bias: AlignedVec,
}

impl Conv1x1 {
    /// Packs OIHW `weights` [co, ci, 1, 1] and `bias` (zeros if None) for `layout`.
    pub fn new(
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        stride: usize,
        layout: Layout,
    ) -> Result<Self> {
        filter.check(weights, bias)?;
        if (filter.kh, filter.kw) != (1, 1) {
            return Err(Error::mismatch("kernel of a 1x1 convolution", "1x1", format!("{}x{}", filter.kh, filter.kw)));
        }
        if stride == 0 {
            return Err(Error::invalid("1x1 convolution stride must be at least 1"));
        }
        let (ci, co) = (filter.ci, filter.co);
        let packed = match layout {
            Layout::Nhwc => pack_panels(weights, filter),
            Layout::Nchw => {
                let mut p = vec![f32x16::zeroed(); (co * ci).div_ceil(16)];
                bytemuck::cast_slice_mut::<f32x16, f32>(&mut p)[..co * ci].copy_from_slice(weights);
                p
            }
        };
        Ok(Conv1x1 { ci, co, stride, layout, weights: packed, bias: pad_bias(co, bias) })
    }

    pub fn filter(&self) -> FilterShape {
        FilterShape::new(self.co, self.ci, 1, 1)
    }
    pub fn stride(&self) -> usize {
        self.stride
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Output shape for `input`: ceil(h / stride) x ceil(w / stride), co channels.
    pub fn output_shape(&self, input: Shape) -> Result<Shape> {
        self.filter().check_input(input)?;
        Ok(Shape::new(input.n, self.co, input.h.div_ceil(self.stride), input.w.div_ceil(self.stride)))
    }

    /// output = epilogue(conv(input) + bias), on the current rayon pool.
    pub fn forward(&self, input: TensorView<'_>, output: &mut TensorViewMut<'_>, epilogue: Epilogue<'_>) -> Result<()> {
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("1x1 conv", self.layout, &input, output, out_shape)?;
        match self.layout {
            Layout::Nhwc => self.forward_nhwc(input, out_shape, output.data_mut(), &epilogue),
            Layout::Nchw => self.forward_nchw(input, out_shape, output.data_mut(), &epilogue),
        }
        Ok(())
    }

    fn forward_nhwc(&self, input: TensorView<'_>, out_shape: Shape, out: &mut [f32], epilogue: &Epilogue<'_>) {
        let in_shape = input.shape();
        let conv = NhwcConv {
            src: input.data(),
            src_h: in_shape.h,
            src_w: in_shape.w,
            ci: self.ci,
            kernel: (1, 1),
            stride: self.stride,
            out: out_shape,
            panels: &self.weights,
            bias: &self.bias,
        };
        conv.run(out, epilogue);
    }

    fn forward_nchw(&self, input: TensorView<'_>, out_shape: Shape, out: &mut [f32], epilogue: &Epilogue<'_>) {
        let (ci, co, s) = (self.ci, self.co, self.stride);
        let in_shape = input.shape();
        let (ho, wo) = (out_shape.h, out_shape.w);
        let hw = ho * wo;
        let weights: &[f32] = &bytemuck::cast_slice(&self.weights)[..co * ci];
        let block = rows_per_task(co, ci);
        let image_len = co * hw;
        for n in 0..out_shape.n {
            let image = input.image(n);
            let out_image = &mut out[n * image_len..(n + 1) * image_len];
            let res_image = epilogue.residual.map(|r| &r.data()[n * image_len..(n + 1) * image_len]);
            let task = |(t, out_block): (usize, &mut [f32])| {
                let c0 = t * block;
                let block_rows = out_block.len() / hw;
                let mut panel = vec![f32x16::zeroed(); 2 * ci];
                for n0 in (0..hw).step_by(NR) {
                    let cols = (hw - n0).min(NR);
                    pack_input_panel(image, in_shape, s, wo, n0, cols, &mut panel);
                    let mut r0 = 0;
                    while r0 < block_rows {
                        let tile_rows = (block_rows - r0).min(MR);
                        let a = |r: usize, _| &weights[(c0 + r0 + r) * ci..][..ci];
                        let to = TileOut {
                            bias: TileBias::Rows(&self.bias[c0 + r0..c0 + r0 + tile_rows]),
                            residual: res_image.map(|res| &res[(c0 + r0) * hw..(c0 + r0 + tile_rows) * hw]),
                            row_len: hw,
                            n0,
                            cols,
                            accumulate: epilogue.accumulate,
                            relu: epilogue.relu,
                        };
                        let out_rows = &mut out_block[r0 * hw..(r0 + tile_rows) * hw];
                        dispatch_tile(tile_rows, a, 1, &[&panel], to, out_rows);
                        r0 += tile_rows;
                    }
                }
            };
            run_blocks(out_image, block * hw, task);
        }
    }
}

/// Runs `task` on each `chunk`-long block of `out`, in parallel when there is more than one.
pub(crate) fn run_blocks(out: &mut [f32], chunk: usize, task: impl Fn((usize, &mut [f32])) + Sync + Send) {
    if out.len() > chunk && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(task);
    }
}

/// Gathers output pixels n0..n0+cols of one NCHW image (input pixels at stride `s`) into a
/// [ci][32] panel, zero past `cols`.
fn pack_input_panel(image: &[f32], shape: Shape, s: usize, wo: usize, n0: usize, cols: usize, panel: &mut [f32x16]) {
    let flat: &mut [f32] = bytemuck::cast_slice_mut(panel);
    let plane = shape.h * shape.w;
    for (c, dst) in flat.chunks_exact_mut(NR).enumerate() {
        let src = &image[c * plane..(c + 1) * plane];
        for (j, d) in dst.iter_mut().enumerate() {
            *d = if j < cols {
                let p = n0 + j;
                src[p / wo * s * shape.w + p % wo * s]
            } else {
                0.0
            };
        }
    }
}

/// Rows per task: few enough that a task's activation rows stay within
/// [`A_BLOCK_BYTES`], in a number of tasks that is a multiple of the thread count and of
/// equal size, so no thread is left with a remainder task. Not rounded to whole tiles:
/// on the 7x7 layers (49 rows, 2 threads) that made tasks of 30 + 19 rows, 5 tiles where
/// 4 and a single row do.
fn rows_per_task(rows: usize, k: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let cache_rows = (A_BLOCK_BYTES / (k * 4).max(1)).max(MR);
    let tasks = rows.div_ceil(cache_rows).next_multiple_of(threads);
    rows.div_ceil(tasks)
}

/// Where a tile's results go: the epilogue and the destination columns.
#[derive(Clone, Copy)]
pub(crate) struct TileOut<'a> {
    pub bias: TileBias<'a>,
    /// Residual rows laid out like the output rows.
    pub residual: Option<&'a [f32]>,
    /// Distance between consecutive output rows.
    pub row_len: usize,
    /// First column of the tile, and how many of its 32 columns exist.
    pub n0: usize,
    pub cols: usize,
    /// Add the output's prior contents.
    pub accumulate: bool,
    pub relu: bool,
}

/// Computes one tile of `rows` (1..=MR) rows and the columns of one or two adjacent
/// weight panels (`panels`, equally long) over `segments` equal parts of each panel: row r
/// reads `a(r, segment)` for each part, and writes `out_rows[r * row_len + n0..][..cols]`.
#[inline(always)]
pub(crate) fn dispatch_tile<'a>(
    rows: usize,
    a: impl Fn(usize, usize) -> &'a [f32],
    segments: usize,
    panels: &[&[f32x16]],
    to: TileOut<'_>,
    out_rows: &mut [f32],
) {
    fn tile<'a, const R: usize, const V: usize>(
        a: impl Fn(usize, usize) -> &'a [f32],
        segments: usize,
        panels: [&[f32x16]; 2],
        to: TileOut<'_>,
        out_rows: &mut [f32],
    ) {
        let mut acc: Tile<R, V> = [[f32x16::ZERO; V]; R];
        let seg_len = panels[0].len() / segments;
        for seg in 0..segments {
            let a_rows: [&[f32]; R] = std::array::from_fn(|r| a(r, seg));
            let parts = panels.map(|p| &p[seg * seg_len..(seg + 1) * seg_len]);
            accumulate(&mut acc, &a_rows, parts);
        }
        let res: Option<[&[f32]; R]> = to.residual.map(|res| std::array::from_fn(|r| &res[r * to.row_len + to.n0..]));
        let mut it = out_rows.chunks_mut(to.row_len);
        let mut out: [&mut [f32]; R] = std::array::from_fn(|_| &mut it.next().expect("tile row")[to.n0..]);
        store_tile(&acc, to.bias, res.as_ref(), to.accumulate, to.relu, &mut out, to.cols);
    }
    fn by_rows<'a, const V: usize>(
        rows: usize,
        a: impl Fn(usize, usize) -> &'a [f32],
        segments: usize,
        panels: [&[f32x16]; 2],
        to: TileOut<'_>,
        out_rows: &mut [f32],
    ) {
        const _: () = assert!(MR == 6, "dispatch_tile lists tiles of 1..=6 rows");
        match rows {
            6 => tile::<6, V>(a, segments, panels, to, out_rows),
            5 => tile::<5, V>(a, segments, panels, to, out_rows),
            4 => tile::<4, V>(a, segments, panels, to, out_rows),
            3 => tile::<3, V>(a, segments, panels, to, out_rows),
            2 => tile::<2, V>(a, segments, panels, to, out_rows),
            _ => tile::<1, V>(a, segments, panels, to, out_rows),
        }
    }
    let pair = [panels[0], panels[panels.len() - 1]];
    if panels.len() == 2 {
        by_rows::<4>(rows, a, segments, pair, to, out_rows)
    } else {
        by_rows::<2>(rows, a, segments, pair, to, out_rows)
    }
}
