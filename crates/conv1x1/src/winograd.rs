//! Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution over NHWC (stride 1, padding 1) on
//! the 1x1 microkernel: an alpha x alpha input tile (alpha = m + 2) is transformed, each of
//! its alpha^2 positions is one GEMM of [tiles, ci] x [ci, co], and the products are
//! transformed back into m x m outputs. F(2x2) does 16/4 = 4 multiply-adds per output
//! and input channel instead of 9; F(4x4) does 36/16 = 2.25, for costlier transforms
//! and 36/9 = 4x the weights.
//!
//! A chunk of tile rows takes three parallel phases: the input transform (over tiles),
//! the GEMMs (one task per position, so each weight matrix is read by one thread), and
//! the output transform with bias and epilogue (over tile rows).

use crate::kernel::{TileBias, MR, NR};
use crate::nhwc::{pack_panels, pad_bias};
use crate::{dispatch_tile, run_blocks, TileOut};
use convkit_tensor::simd::{f32x16, load16, load_partial, store16, store_partial, LANES};
use convkit_tensor::{
    checked_product, AlignedVec, Epilogue, FilterShape, Layout, Result, Shape, TensorView, TensorViewMut, Window,
};
use rayon::prelude::*;

/// Default bound of the scratch (transformed inputs and products): tile rows are processed
/// in chunks of at most this many bytes (at least one tile row), so scratch does not grow
/// with the image or the batch.
pub const DEFAULT_WINOGRAD_SCRATCH_BYTES: usize = 4 << 20;

/// Largest transformed weights (bytes, all positions) of a layer whose GEMMs split tiles
/// across tasks rather than positions: each task then reads all of them, which pays while
/// they stay in its L2 (1 MiB per core here): 2-4% on the deep stem, level on stage 1,
/// 15-40% slower from stage 2 on (docs/results.md).
pub const TILE_SPLIT_MAX_WEIGHT_BYTES: usize = 1 << 20;

/// Tasks per thread when tiles are split: enough for the threads to even out.
const TASKS_PER_THREAD: usize = 4;

/// The output tile of a Winograd convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WinogradTile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 GEMMs, weights 16/9 of the 3x3 ones. Exact
    /// transforms (coefficients 0, +-1, 1/2), error like the direct conv's.
    F2x2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 GEMMs, weights 4x the 3x3 ones. Transform
    /// coefficients up to 8 (and 1/24) make its rounding error several times F(2x2)'s.
    F4x4,
}

impl WinogradTile {
    /// Outputs per tile side (m).
    pub const fn outputs(self) -> usize {
        match self {
            WinogradTile::F2x2 => 2,
            WinogradTile::F4x4 => 4,
        }
    }

    /// Input tile side (alpha = m + 2).
    pub const fn alpha(self) -> usize {
        self.outputs() + 2
    }

    /// GEMMs per tile (alpha^2).
    pub const fn positions(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// G, the alpha x 3 weight transform (U = G g G^T).
    fn weight_transform(self) -> &'static [[f64; 3]] {
        const G2: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        const G4: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        match self {
            WinogradTile::F2x2 => &G2,
            WinogradTile::F4x4 => &G4,
        }
    }
}

/// B^T x of F(2x2): (x0 - x2, x1 + x2, x2 - x1, x1 - x3).
#[inline(always)]
fn input_f2(x: [f32x16; 4]) -> [f32x16; 4] {
    [x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]]
}

/// A^T m of F(2x2): (m0 + m1 + m2, m1 - m2 - m3).
#[inline(always)]
fn output_f2(m: [f32x16; 4]) -> [f32x16; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// B^T x of F(4x4) (Lavin and Gray's points 0, +-1, +-2, infinity), in shared terms.
#[inline(always)]
fn input_f4(x: [f32x16; 6]) -> [f32x16; 6] {
    let (four, five, two) = (f32x16::splat(4.0), f32x16::splat(5.0), f32x16::splat(2.0));
    let t1 = x[4] - four * x[2];
    let t2 = x[3] - four * x[1];
    let t3 = x[4] - x[2];
    let t4 = two * (x[3] - x[1]);
    [four * x[0] - five * x[2] + x[4], t1 + t2, t1 - t2, t3 + t4, t3 - t4, four * x[1] - five * x[3] + x[5]]
}

/// A^T m of F(4x4).
#[inline(always)]
fn output_f4(m: [f32x16; 6]) -> [f32x16; 4] {
    let (a, b) = (m[1] + m[2], m[1] - m[2]);
    let (c, d) = (m[3] + m[4], m[3] - m[4]);
    [m[0] + a + c, b + f32x16::splat(2.0) * d, a + f32x16::splat(4.0) * c, b + f32x16::splat(8.0) * d + m[5]]
}

/// Applies the 1-D transform `f` to the columns of `x`, then to the rows of the result:
/// y = F x F^T for the matrix F that `f` multiplies by.
#[inline(always)]
fn transform_2d<const N: usize, const K: usize>(
    x: &[[f32x16; N]; N],
    f: impl Fn([f32x16; N]) -> [f32x16; K],
) -> [[f32x16; K]; K] {
    let cols: [[f32x16; K]; N] = std::array::from_fn(|j| f(std::array::from_fn(|i| x[i][j])));
    std::array::from_fn(|a| f(std::array::from_fn(|j| cols[j][a])))
}

/// A 3x3, stride-1, padding-1 convolution computed with Winograd F(2x2, 3x3) or F(4x4, 3x3).
#[derive(Debug, Clone)]
pub struct WinogradConv {
    filter: FilterShape,
    tile: WinogradTile,
    /// One packed [ci][co] matrix (32-column panels) per tile position.
    panels: Vec<Vec<f32x16>>,
    bias: AlignedVec,
    zero_bias: AlignedVec,
    scratch_bytes: usize,
}

impl WinogradConv {
    /// The window this conv computes: 3x3, stride 1, padding 1.
    pub const WINDOW: Window = Window::square(3, 1, 1);

    /// Transforms (U = G g G^T per channel pair, in f64) and packs OIHW 3x3 `weights`.
    pub fn new(weights: &[f32], filter: FilterShape, bias: Option<&[f32]>, tile: WinogradTile) -> Result<Self> {
        filter.check(weights, bias)?;
        filter.check_window(&Self::WINDOW)?;
        let (co, ci) = (filter.co, filter.ci);
        let g = tile.weight_transform();
        let alpha = tile.alpha();
        let one_by_one = FilterShape::new(co, ci, 1, 1);
        // One [co][ci] matrix per position, transformed and packed in turn so that only
        // one unpacked matrix is alive at a time.
        let mut u = vec![0.0f32; co * ci];
        let panels = (0..tile.positions())
            .map(|p| {
                let (a, b) = (p / alpha, p % alpha);
                for (o_i, w) in weights.chunks_exact(9).enumerate() {
                    let mut v = 0.0f64;
                    for k in 0..3 {
                        for l in 0..3 {
                            v += g[a][k] * w[k * 3 + l] as f64 * g[b][l];
                        }
                    }
                    u[o_i] = v as f32;
                }
                pack_panels(&u, one_by_one)
            })
            .collect();
        Ok(WinogradConv {
            filter,
            tile,
            panels,
            bias: pad_bias(co, bias),
            zero_bias: pad_bias(co, None),
            scratch_bytes: DEFAULT_WINOGRAD_SCRATCH_BYTES,
        })
    }

    /// Changes the scratch bound (bytes; at least one tile row is always processed).
    pub fn with_scratch_bytes(mut self, bytes: usize) -> Self {
        self.scratch_bytes = bytes;
        self
    }

    pub fn filter(&self) -> FilterShape {
        self.filter
    }

    pub fn tile(&self) -> WinogradTile {
        self.tile
    }

    pub fn output_shape(&self, input: Shape) -> Result<Shape> {
        self.filter.output_shape(input, &Self::WINDOW)
    }

    /// Tile rows (of one image) transformed and multiplied at a time: as many as fit in
    /// the scratch bound, at least one.
    fn chunk_rows(&self, out: Shape) -> usize {
        let m = self.tile.outputs();
        let per_row = self.tile.positions() * out.w.div_ceil(m) * (self.filter.ci + self.filter.co) * 4;
        (self.scratch_bytes / per_row.max(1)).clamp(1, out.h.div_ceil(m))
    }

    /// Scratch floats: transformed inputs (positions x tiles x ci) and products
    /// (positions x tiles x co) of one chunk of tile rows.
    pub fn scratch_len(&self, input: Shape) -> Result<usize> {
        let out = self.output_shape(input)?;
        let tiles = self.chunk_rows(out) * out.w.div_ceil(self.tile.outputs());
        checked_product("winograd scratch", &[self.tile.positions(), tiles, self.filter.ci + self.filter.co])
    }

    /// output = epilogue(conv(input) + bias), NHWC, on the current rayon pool. `scratch`
    /// is grown to [`WinogradConv::scratch_len`] if shorter.
    pub fn forward(
        &self,
        input: TensorView<'_>,
        output: &mut TensorViewMut<'_>,
        epilogue: Epilogue<'_>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("winograd conv", Layout::Nhwc, &input, output, out_shape)?;
        let need = self.scratch_len(input.shape())?;
        if scratch.len() < need {
            scratch.resize(need);
        }
        let (out, scratch) = (output.data_mut(), &mut scratch[..need]);
        match self.tile {
            WinogradTile::F2x2 => self.forward_tiles::<4, 2>(input, out, &epilogue, scratch, input_f2, output_f2),
            WinogradTile::F4x4 => self.forward_tiles::<6, 4>(input, out, &epilogue, scratch, input_f4, output_f4),
        }
        Ok(())
    }

    /// The forward pass for input tiles of A x A and output tiles of M x M, given the
    /// 1-D input (B^T) and output (A^T) transforms.
    fn forward_tiles<const A: usize, const M: usize>(
        &self,
        input: TensorView<'_>,
        output: &mut [f32],
        epilogue: &Epilogue<'_>,
        scratch: &mut [f32],
        input_1d: impl Fn([f32x16; A]) -> [f32x16; A] + Sync,
        output_1d: impl Fn([f32x16; A]) -> [f32x16; M] + Sync,
    ) {
        let s = input.shape();
        let (ho, wo, co) = (s.h, s.w, self.filter.co); // stride 1, padding 1: same size
        let th = ho.div_ceil(M);
        let chunk = self.chunk_rows(Shape::new(s.n, co, ho, wo));
        let image_len = ho * wo * co;
        for (n, out_image) in output.chunks_exact_mut(image_len).enumerate() {
            for ty0 in (0..th).step_by(chunk) {
                let rows = ty0..(ty0 + chunk).min(th);
                let first_out = M * ty0 * wo * co;
                let out_rows = &mut out_image[first_out..(M * rows.end).min(ho) * wo * co];
                let chunk_epilogue = ChunkEpilogue {
                    residual: epilogue.residual.map(|r| &r.data()[n * image_len + first_out..]),
                    accumulate: epilogue.accumulate,
                    relu: epilogue.relu,
                };
                let tiles = self.transform_input::<A, M>(input, n, rows, scratch, &input_1d);
                let (v, m) = scratch.split_at_mut(A * A * tiles * s.c);
                let strides = self.multiply::<A>(v, &mut m[..A * A * tiles * co], tiles);
                self.transform_output::<A, M>(
                    &m[..A * A * tiles * co],
                    strides,
                    wo,
                    out_rows,
                    &chunk_epilogue,
                    &output_1d,
                );
            }
        }
    }

    /// V[t][p][ci] = (B^T d B)[p] of the A x A input patch of each tile t of tile rows
    /// `rows` of image `n` (zeros outside the image), into the front of `scratch`.
    /// Returns the number of tiles.
    fn transform_input<const A: usize, const M: usize>(
        &self,
        input: TensorView<'_>,
        n: usize,
        rows: std::ops::Range<usize>,
        scratch: &mut [f32],
        input_1d: &(impl Fn([f32x16; A]) -> [f32x16; A] + Sync),
    ) -> usize {
        let s = input.shape();
        let ci = s.c;
        let tw = s.w.div_ceil(M);
        let tiles = rows.len() * tw;
        let v = &mut scratch[..A * A * tiles * ci];
        let src = input.data();
        let first_row = rows.start;
        let transform = |(t, vt): (usize, &mut [f32])| {
            let (ty, tx) = (first_row + t / tw, t % tw);
            let (y0, x0) = ((ty * M) as isize - 1, (tx * M) as isize - 1);
            let interior = y0 >= 0 && x0 >= 0 && y0 as usize + A <= s.h && x0 as usize + A <= s.w;
            let pixel = |y: isize, x: isize| ((n * s.h + y as usize) * s.w + x as usize) * ci;
            for c0 in (0..ci).step_by(LANES) {
                let lanes = (ci - c0).min(LANES);
                let d: [[f32x16; A]; A] = if interior && lanes == LANES {
                    // The common case, straight-line: a whole patch inside the image.
                    std::array::from_fn(|i| {
                        std::array::from_fn(|j| load16(&src[pixel(y0 + i as isize, x0 + j as isize) + c0..]))
                    })
                } else {
                    let mut d = [[f32x16::ZERO; A]; A];
                    for (i, row) in d.iter_mut().enumerate() {
                        let y = y0 + i as isize;
                        if y < 0 || y >= s.h as isize {
                            continue;
                        }
                        for (j, cell) in row.iter_mut().enumerate() {
                            let x = x0 + j as isize;
                            if x < 0 || x >= s.w as isize {
                                continue;
                            }
                            let at = pixel(y, x) + c0;
                            *cell = load_partial(&src[at..at + lanes]);
                        }
                    }
                    d
                };
                let transformed = transform_2d(&d, input_1d);
                for (a, row) in transformed.iter().enumerate() {
                    for (b, &val) in row.iter().enumerate() {
                        let dst = &mut vt[(a * A + b) * ci + c0..];
                        if lanes == LANES {
                            store16(dst, val);
                        } else {
                            store_partial(&mut dst[..lanes], val);
                        }
                    }
                }
            }
        };
        if rayon::current_num_threads() > 1 {
            v.par_chunks_mut(A * A * ci).enumerate().for_each(transform);
        } else {
            v.chunks_mut(A * A * ci).enumerate().for_each(transform);
        }
        tiles
    }

    /// M = V[t][p][:] x U[p] for every tile t and position p. Layers whose transformed
    /// weights fit in [`TILE_SPLIT_MAX_WEIGHT_BYTES`] split the tiles across tasks (each
    /// task all positions of its tiles, M laid out [t][p][co], so the output transform
    /// reads each tile's products contiguously); wider layers split the positions (one
    /// task per position, so each weight matrix is streamed by one thread; M laid out
    /// [p][t][co]). Returns the strides of M: (position, tile).
    fn multiply<const A: usize>(&self, v: &[f32], m: &mut [f32], tiles: usize) -> (usize, usize) {
        let co = self.filter.co;
        let positions = A * A;
        if self.splits_tiles() {
            let tasks = (rayon::current_num_threads() * TASKS_PER_THREAD).max(1);
            let per_task = tiles.div_ceil(tasks).max(MR);
            run_blocks(m, per_task * positions * co, |(t, mt)| {
                let first = t * per_task;
                let count = mt.len() / (positions * co);
                for p in 0..positions {
                    self.gemm_position::<A>(v, p, first..first + count, mt, positions * co, p * co);
                }
            });
            (co, positions * co)
        } else {
            run_blocks(m, tiles * co, |(p, mp)| self.gemm_position::<A>(v, p, 0..tiles, mp, co, 0));
            (tiles * co, co)
        }
    }

    /// Products of position `p` for tiles `tiles`: row t - tiles.start of `out` (rows
    /// `row_len` apart) gets V[t][p][:] x U[p] in its columns from `col0`.
    fn gemm_position<const A: usize>(
        &self,
        v: &[f32],
        p: usize,
        tiles: std::ops::Range<usize>,
        out: &mut [f32],
        row_len: usize,
        col0: usize,
    ) {
        let (ci, co) = (self.filter.ci, self.filter.co);
        let panels = &self.panels[p];
        let count = panels.len() / (2 * ci);
        let panel = |i: usize| &panels[i * 2 * ci..(i + 1) * 2 * ci];
        // Two panels (64 columns) per tile while two remain, as in the 1x1 driver.
        let mut j = 0;
        while j < count {
            let width = if j + 1 < count { 2 } else { 1 };
            let pair = [panel(j), panel(j + width - 1)];
            let n0 = j * NR;
            let mut r0 = 0;
            while r0 < tiles.len() {
                let rows = (tiles.len() - r0).min(MR);
                let t0 = tiles.start + r0;
                let a = |r: usize, _| &v[((t0 + r) * A * A + p) * ci..][..ci];
                let to = TileOut {
                    bias: TileBias::Columns(&self.zero_bias[n0..n0 + width * NR]),
                    residual: None,
                    row_len,
                    n0: col0 + n0,
                    cols: (co - n0).min(width * NR),
                    accumulate: false,
                    relu: false,
                };
                let end = ((r0 + rows) * row_len).min(out.len());
                let out_rows = &mut out[r0 * row_len..end];
                dispatch_tile(rows, a, 1, &pair[..width], to, out_rows);
                r0 += rows;
            }
            j += width;
        }
    }

    /// Whether [`WinogradConv::multiply`] splits tiles (rather than positions) across tasks.
    fn splits_tiles(&self) -> bool {
        self.tile.positions() * self.filter.ci * self.filter.co * 4 <= TILE_SPLIT_MAX_WEIGHT_BYTES
    }

    /// Y = A^T M A per tile (M x M outputs), then bias and the epilogue, into `out_rows`
    /// (the output rows, `wo` pixels wide, that the chunk's tiles cover). One task per
    /// tile row.
    fn transform_output<const A: usize, const M: usize>(
        &self,
        m: &[f32],
        (p_stride, t_stride): (usize, usize),
        wo: usize,
        out_rows: &mut [f32],
        epilogue: &ChunkEpilogue<'_>,
        output_1d: &(impl Fn([f32x16; A]) -> [f32x16; M] + Sync),
    ) {
        let co = self.filter.co;
        let tw = wo.div_ceil(M);
        let row_len = wo * co;
        let transform = |(ty, out): (usize, &mut [f32])| {
            let valid_rows = out.len() / row_len;
            for tx in 0..tw {
                let t = ty * tw + tx;
                let whole = valid_rows == M && (tx + 1) * M <= wo;
                for c0 in (0..co).step_by(LANES) {
                    let lanes = (co - c0).min(LANES);
                    let bias = load16(&self.bias[c0..]);
                    if whole && lanes == LANES {
                        // The common case, straight-line: a whole tile of 16 channels.
                        let q: [[f32x16; A]; A] = std::array::from_fn(|a| {
                            std::array::from_fn(|b| load16(&m[(a * A + b) * p_stride + t * t_stride + c0..]))
                        });
                        let y = transform_2d(&q, output_1d);
                        for (dy, yrow) in y.iter().enumerate() {
                            for (dx, &val) in yrow.iter().enumerate() {
                                let at = dy * row_len + (tx * M + dx) * co + c0;
                                epilogue.store(val + bias, out, at, M * ty * row_len, LANES);
                            }
                        }
                        continue;
                    }
                    let load = |s: &[f32]| if lanes == LANES { load16(s) } else { load_partial(&s[..lanes]) };
                    let q: [[f32x16; A]; A] = std::array::from_fn(|a| {
                        std::array::from_fn(|b| load(&m[(a * A + b) * p_stride + t * t_stride + c0..]))
                    });
                    let y = transform_2d(&q, output_1d);
                    for (dy, yrow) in y.iter().enumerate().take(valid_rows) {
                        for (dx, &val) in yrow.iter().enumerate() {
                            let ox = tx * M + dx;
                            if ox >= wo {
                                break;
                            }
                            let at = dy * row_len + ox * co + c0;
                            epilogue.store(val + bias, out, at, M * ty * row_len, lanes);
                        }
                    }
                }
            }
        };
        // One task per tile row: M output rows (fewer at the bottom).
        run_blocks(out_rows, M * row_len, transform);
    }
}

/// The epilogue of one chunk: the residual starts at the chunk's first output row.
struct ChunkEpilogue<'a> {
    residual: Option<&'a [f32]>,
    accumulate: bool,
    relu: bool,
}

impl ChunkEpilogue<'_> {
    /// Stores `lanes` lanes of `v` at `out[at..]` after adding the residual (at `at` past
    /// `residual_row`, the residual offset of the tile's first row), the prior output
    /// (`accumulate`) and ReLU.
    #[inline(always)]
    fn store(&self, mut v: f32x16, out: &mut [f32], at: usize, residual_row: usize, lanes: usize) {
        let load = |s: &[f32]| if lanes == LANES { load16(s) } else { load_partial(&s[..lanes]) };
        if let Some(r) = self.residual {
            v += load(&r[residual_row + at..]);
        }
        if self.accumulate {
            v += load(&out[at..]);
        }
        if self.relu {
            v = v.max(f32x16::ZERO);
        }
        if lanes == LANES {
            store16(&mut out[at..], v);
        } else {
            store_partial(&mut out[at..at + lanes], v);
        }
    }
}
