//! Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution over NHWC (stride 1, padding 1) on
//! the convkit microkernels: an alpha x alpha input tile (alpha = m + 2) is transformed, each of
//! its alpha^2 positions is one GEMM of [tiles, ci] x [ci, co], and the products are
//! transformed back into m x m outputs. F(2x2) does 16/4 = 4 multiply-adds per output
//! and input channel instead of 9; F(4x4) does 36/16 = 2.25, for costlier transforms
//! and 36/9 = 4x the weights.
//!
//! A chunk of tile rows takes three parallel phases: the input transform (over tiles),
//! the GEMMs (one task per position, so each weight matrix is read by one thread), and
//! the output transform with bias and epilogue (over tile rows).

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use convkit_microkernel::Kernel;
pub use convkit_tensor::Conv;

use convkit_microkernel::{for_each_chunk, CacheSizes, Gemm, GemmElement, Lhs, PackedWeights, Simd, SimdOp};
use convkit_tensor::{
    check_precision, checked_product, AlignedVec, Epilogue, Error, FilterShape, Layout, Precision, Result, Shape,
    TensorView, TensorViewMut, Window,
};
use std::marker::PhantomData;

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

/// The 1-D transforms of one Winograd tile: B^T (input, A points) and A^T (output, M
/// outputs). Applied to columns, then rows: y = F x F^T.
trait Transform<const A: usize, const M: usize>: Copy + Send + Sync {
    /// B^T x.
    fn input<S: Simd>(s: S, x: [S::F32; A]) -> [S::F32; A];
    /// A^T m.
    fn output<S: Simd>(s: S, m: [S::F32; A]) -> [S::F32; M];
}

/// F(2x2, 3x3).
#[derive(Clone, Copy)]
struct F2;

impl Transform<4, 2> for F2 {
    /// (x0 - x2, x1 + x2, x2 - x1, x1 - x3).
    #[inline(always)]
    fn input<S: Simd>(s: S, x: [S::F32; 4]) -> [S::F32; 4] {
        [s.sub(x[0], x[2]), s.add(x[1], x[2]), s.sub(x[2], x[1]), s.sub(x[1], x[3])]
    }

    /// (m0 + m1 + m2, m1 - m2 - m3).
    #[inline(always)]
    fn output<S: Simd>(s: S, m: [S::F32; 4]) -> [S::F32; 2] {
        [s.add(s.add(m[0], m[1]), m[2]), s.sub(s.sub(m[1], m[2]), m[3])]
    }
}

/// F(4x4, 3x3), Lavin and Gray's points 0, +-1, +-2, infinity, in shared terms.
#[derive(Clone, Copy)]
struct F4;

impl Transform<6, 4> for F4 {
    #[inline(always)]
    fn input<S: Simd>(s: S, x: [S::F32; 6]) -> [S::F32; 6] {
        let (four, five, two) = (s.splat(4.0), s.splat(5.0), s.splat(2.0));
        let t1 = s.sub(x[4], s.mul(four, x[2]));
        let t2 = s.sub(x[3], s.mul(four, x[1]));
        let t3 = s.sub(x[4], x[2]);
        let t4 = s.mul(two, s.sub(x[3], x[1]));
        [
            s.add(s.sub(s.mul(four, x[0]), s.mul(five, x[2])), x[4]),
            s.add(t1, t2),
            s.sub(t1, t2),
            s.add(t3, t4),
            s.sub(t3, t4),
            s.add(s.sub(s.mul(four, x[1]), s.mul(five, x[3])), x[5]),
        ]
    }

    #[inline(always)]
    fn output<S: Simd>(s: S, m: [S::F32; 6]) -> [S::F32; 4] {
        let (a, b) = (s.add(m[1], m[2]), s.sub(m[1], m[2]));
        let (c, d) = (s.add(m[3], m[4]), s.sub(m[3], m[4]));
        [
            s.add(s.add(m[0], a), c),
            s.add(b, s.mul(s.splat(2.0), d)),
            s.add(a, s.mul(s.splat(4.0), c)),
            s.add(s.add(b, s.mul(s.splat(8.0), d)), m[5]),
        ]
    }
}

/// B^T d B of an A x A patch (columns first, then rows).
#[inline(always)]
fn input_2d<S: Simd, T: Transform<A, M>, const A: usize, const M: usize>(
    s: S,
    x: &[[S::F32; A]; A],
) -> [[S::F32; A]; A] {
    let mut cols = [[s.zero(); A]; A];
    for (j, col) in cols.iter_mut().enumerate() {
        *col = T::input(s, column(s, x, j));
    }
    let mut y = [[s.zero(); A]; A];
    for (a, y) in y.iter_mut().enumerate() {
        *y = T::input(s, column(s, &cols, a));
    }
    y
}

/// Column `j` of `x`, in a plain loop: `array::from_fn` in code compiled for a family's
/// target features can be left as an out-of-line call without them.
#[inline(always)]
fn column<S: Simd, const ROWS: usize, const COLS: usize>(s: S, x: &[[S::F32; COLS]; ROWS], j: usize) -> [S::F32; ROWS] {
    let mut c = [s.zero(); ROWS];
    for (c, row) in c.iter_mut().zip(x) {
        *c = row[j];
    }
    c
}

/// A^T m A of an A x A tile of products: M x M outputs.
#[inline(always)]
fn output_2d<S: Simd, T: Transform<A, M>, const A: usize, const M: usize>(
    s: S,
    x: &[[S::F32; A]; A],
) -> [[S::F32; M]; M] {
    let mut cols = [[s.zero(); M]; A];
    for (j, col) in cols.iter_mut().enumerate() {
        *col = T::output(s, column(s, x, j));
    }
    let mut y = [[s.zero(); M]; M];
    for (a, y) in y.iter_mut().enumerate() {
        *y = T::output(s, column(s, &cols, a));
    }
    y
}

/// The window every Winograd conv computes: 3x3, stride 1, padding 1.
pub const WINDOW: Window = Window::square(3, 1, 1);

/// A 3x3, stride-1, padding-1 convolution computed with Winograd F(2x2, 3x3) or F(4x4, 3x3),
/// over NHWC activations of element type `E`.
#[derive(Debug, Clone)]
pub struct WinogradConv<E: GemmElement = f32> {
    filter: FilterShape,
    tile: WinogradTile,
    /// One packed [ci][co] matrix per tile position, without bias.
    positions: Vec<PackedWeights>,
    bias: Vec<f32>,
    scratch_bytes: usize,
    tile_split_bytes: usize,
    element: PhantomData<E>,
}

impl<E: GemmElement> WinogradConv<E> {
    /// The window this conv computes: [`WINDOW`].
    pub const WINDOW: Window = WINDOW;

    /// Transforms (U = G g G^T per channel pair, in f64) and packs OIHW 3x3 `weights` for
    /// `kernel` (a kernel over `E` that this CPU runs). In bf16 the activations, the
    /// transformed inputs and the transformed weights are bf16 (each rounded to nearest
    /// once), the position GEMMs accumulate in f32 and the output transform runs in f32
    /// before the output is rounded. bf16 takes F(2x2) only: F(4x4)'s transforms scale the
    /// rounding of its bf16 operands up to 6% of an output's sum of |terms| (one input
    /// channel), against 0.1% for F(2x2); asking for it is an error.
    pub fn new(
        kernel: Kernel,
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
        tile: WinogradTile,
    ) -> Result<Self> {
        check_precision::<E>("winograd conv", kernel.precision())?;
        let precision = kernel.precision();
        filter.check(weights, bias)?;
        filter.check_window(&Self::WINDOW)?;
        match (precision, tile) {
            (Precision::F32, _) | (Precision::Bf16, WinogradTile::F2x2) => {}
            (Precision::Int8, _) => {
                return Err(Error::invalid(
                    "Winograd has no int8 path (its transforms take values off the integer grid): use the direct or im2col int8 convolution",
                ))
            }
            (Precision::Bf16, WinogradTile::F4x4) => {
                return Err(Error::invalid(format!(
                "Winograd F(4x4, 3x3) has no {precision} path (its transforms amplify bf16 rounding): use F(2x2, 3x3)"
            )))
            }
        }
        let (co, ci) = (filter.co, filter.ci);
        let g = tile.weight_transform();
        let alpha = tile.alpha();
        // One [co][ci] matrix per position, transformed and packed in turn so that only
        // one unpacked matrix is alive at a time.
        let mut u = vec![0.0f32; co * ci];
        let positions = (0..tile.positions())
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
                PackedWeights::new(kernel, ci, co, 1, |k, o| u[o * ci + k], None)
            })
            .collect::<Result<_>>()?;
        Ok(WinogradConv {
            filter,
            tile,
            positions,
            bias: bias.map_or_else(|| vec![0.0; co], <[f32]>::to_vec),
            scratch_bytes: CacheSizes::get().scratch_bytes(),
            tile_split_bytes: CacheSizes::get().winograd_tile_split_bytes(),
            element: PhantomData,
        })
    }

    /// Changes the scratch bound (bytes; at least one tile row is always processed). The
    /// default is [`CacheSizes::scratch_bytes`].
    pub fn with_scratch_bytes(mut self, bytes: usize) -> Self {
        self.scratch_bytes = bytes;
        self
    }

    /// Changes the bound under which the position GEMMs split tiles rather than positions
    /// across tasks (bytes of all transformed weights; see [`WinogradConv::splits_tiles`]).
    /// The default is [`CacheSizes::winograd_tile_split_bytes`]; 0 always splits positions,
    /// `usize::MAX` always tiles. Results are bitwise the same either way.
    pub fn with_tile_split_bytes(mut self, bytes: usize) -> Self {
        self.tile_split_bytes = bytes;
        self
    }

    /// The output tile.
    pub fn tile(&self) -> WinogradTile {
        self.tile
    }

    /// The kernel the weights were packed for.
    pub fn kernel(&self) -> Kernel {
        self.positions[0].kernel()
    }

    /// The family the input and output transforms (f32 arithmetic) run on: the f32 family
    /// within what the kernel requires (`avx512` for an `avx512bf16.bf16` kernel), whose
    /// bf16 stores round in software, exactly, subnormals included.
    fn transform_family(&self) -> convkit_microkernel::Family {
        convkit_microkernel::Family::pick(self.kernel().requires())
    }

    /// The precision of the activations and of the position GEMMs.
    fn precision(&self) -> Precision {
        self.positions[0].precision()
    }

    /// Tile rows (of one image) transformed and multiplied at a time: as many as fit in
    /// the scratch bound, at least one.
    fn chunk_rows(&self, out: Shape) -> usize {
        let m = self.tile.outputs();
        let per_row = self.tile.positions() * out.w.div_ceil(m) * (self.filter.ci + self.filter.co) * 4;
        (self.scratch_bytes / per_row.max(1)).clamp(1, out.h.div_ceil(m))
    }

    /// The forward pass for input tiles of A x A and output tiles of M x M.
    fn forward_tiles<T: Transform<A, M>, const A: usize, const M: usize>(
        &self,
        input: TensorView<'_, E>,
        output: &mut [E],
        epilogue: &Epilogue<'_, E>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let s = input.shape();
        let (ho, wo, co) = (s.h, s.w, self.filter.co); // stride 1, padding 1: same size
        let th = ho.div_ceil(M);
        let chunk = self.chunk_rows(Shape::new(s.n, co, ho, wo));
        let image_len = ho * wo * co;
        // The transformed inputs (elements E) at the front of the scratch, the products
        // (f32) after them.
        let tiles_max = chunk * wo.div_ceil(M);
        let v_floats = (A * A * tiles_max * s.c * std::mem::size_of::<E>()).div_ceil(4);
        let need = v_floats + A * A * tiles_max * co;
        if scratch.len() < need {
            scratch.resize(need)?;
        }
        let (v_all, m_all) = scratch[..need].split_at_mut(v_floats);
        let v_all: &mut [E] = bytemuck::cast_slice_mut(v_all);
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
                let tiles = self.transform_input::<T, A, M>(input, n, rows, v_all);
                let v = &v_all[..A * A * tiles * s.c];
                let m = &mut m_all[..A * A * tiles * co];
                let strides = self.multiply::<A>(v, m, tiles)?;
                self.transform_output::<T, A, M>(m, strides, wo, out_rows, &chunk_epilogue);
            }
        }
        Ok(())
    }

    /// V[t][p][ci] = (B^T d B)[p] of the A x A input patch of each tile t of tile rows
    /// `rows` of image `n` (zeros outside the image), into the front of `scratch`.
    /// Returns the number of tiles.
    fn transform_input<T: Transform<A, M>, const A: usize, const M: usize>(
        &self,
        input: TensorView<'_, E>,
        n: usize,
        rows: std::ops::Range<usize>,
        scratch: &mut [E],
    ) -> usize {
        let s = input.shape();
        let tw = s.w.div_ceil(M);
        let tiles = rows.len() * tw;
        let v = &mut scratch[..A * A * tiles * s.c];
        let family = self.transform_family();
        for_each_chunk(v, A * A * s.c, |(t, vt)| {
            let (ty, tx) = (rows.start + t / tw, t % tw);
            family.dispatch(InputTile::<T, E, A, M> { input, n, ty, tx, out: vt, transform: std::marker::PhantomData });
        });
        tiles
    }

    /// M = V[t][p][:] x U[p] for every tile t and position p. Layers whose transformed
    /// weights fit in [`CacheSizes::winograd_tile_split_bytes`] split the tiles across
    /// tasks (each task all positions of its tiles, M laid out [t][p][co], so the output
    /// transform reads each tile's products contiguously); wider layers split the
    /// positions (one task per position, so each weight matrix is streamed by one thread;
    /// M laid out [p][t][co]). Returns the strides of M: (position, tile).
    fn multiply<const A: usize>(&self, v: &[E], m: &mut [f32], tiles: usize) -> Result<(usize, usize)> {
        let co = self.filter.co;
        let positions = A * A;
        let failed = std::sync::Mutex::new(None);
        let record = |r: Result<()>| {
            if let Err(e) = r {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        };
        let strides = if self.splits_tiles() {
            let tasks = (convkit_microkernel::current_threads() * TASKS_PER_THREAD).max(1);
            let per_task = tiles.div_ceil(tasks).max(self.kernel().tile().mr);
            for_each_chunk(m, per_task * positions * co, |(t, mt)| {
                let first = t * per_task;
                let count = mt.len() / (positions * co);
                for p in 0..positions {
                    record(self.gemm_position::<A>(v, p, first..first + count, mt, positions * co, p * co));
                }
            });
            (co, positions * co)
        } else {
            for_each_chunk(m, tiles * co, |(p, mp)| record(self.gemm_position::<A>(v, p, 0..tiles, mp, co, 0)));
            (tiles * co, co)
        };
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(strides),
        }
    }

    /// Products of position `p` for tiles `tiles`, on the calling thread: row
    /// t - tiles.start of `out` (rows `row_len` apart) gets V[t][p][:] x U[p] in its
    /// columns from `col0`.
    fn gemm_position<const A: usize>(
        &self,
        v: &[E],
        p: usize,
        tiles: std::ops::Range<usize>,
        out: &mut [f32],
        row_len: usize,
        col0: usize,
    ) -> Result<()> {
        let ci = self.filter.ci;
        let lhs = Lhs::strided(v, (tiles.start * A * A + p) * ci, A * A * ci);
        Gemm::<E, f32>::new(lhs, self.positions[p].panels(), tiles.len(), row_len).with_col0(col0).run_serial(out)
    }

    /// Whether the position GEMMs split tiles (rather than positions) across tasks:
    /// when all transformed weights fit in the tile-split bound.
    pub fn splits_tiles(&self) -> bool {
        let element_bytes = self.precision().element_bytes();
        self.tile.positions() * self.filter.ci * self.filter.co * element_bytes <= self.tile_split_bytes
    }

    /// Y = A^T M A per tile (M x M outputs), then bias and the epilogue, into `out_rows`
    /// (the output rows, `wo` pixels wide, that the chunk's tiles cover). One task per
    /// tile row.
    fn transform_output<T: Transform<A, M>, const A: usize, const M: usize>(
        &self,
        m: &[f32],
        strides: (usize, usize),
        wo: usize,
        out_rows: &mut [E],
        epilogue: &ChunkEpilogue<'_, E>,
    ) {
        let row_len = wo * self.filter.co;
        let family = self.transform_family();
        // One task per tile row: M output rows (fewer at the bottom).
        for_each_chunk(out_rows, M * row_len, |(ty, out)| {
            family.dispatch(OutputRow::<T, E, A, M> {
                products: m,
                strides,
                ty,
                wo,
                co: self.filter.co,
                bias: &self.bias,
                epilogue,
                out,
                transform: std::marker::PhantomData,
            });
        });
    }
}

impl<E: GemmElement> Conv<E> for WinogradConv<E> {
    fn filter(&self) -> FilterShape {
        self.filter
    }

    fn window(&self) -> Window {
        Self::WINDOW
    }

    fn layout(&self) -> Layout {
        Layout::Nhwc
    }

    /// Transformed inputs (positions x tiles x ci) and products (positions x tiles x co)
    /// of one chunk of tile rows.
    fn scratch_len(&self, input: Shape) -> Result<usize> {
        let out = self.output_shape(input)?;
        let tiles = self.chunk_rows(out) * out.w.div_ceil(self.tile.outputs());
        checked_product("winograd scratch", &[self.tile.positions(), tiles, self.filter.ci + self.filter.co])
    }

    fn weight_bytes(&self) -> usize {
        self.positions.iter().map(PackedWeights::bytes).sum::<usize>() + 4 * self.bias.len()
    }

    fn precision(&self) -> Precision {
        WinogradConv::precision(self)
    }

    fn forward(
        &self,
        input: TensorView<'_, E>,
        output: &mut TensorViewMut<'_, E>,
        epilogue: Epilogue<'_, E>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let out_shape = self.output_shape(input.shape())?;
        epilogue.check_conv_call("winograd conv", Layout::Nhwc, &input, output, out_shape)?;
        let out = output.data_mut();
        match self.tile {
            WinogradTile::F2x2 => self.forward_tiles::<F2, 4, 2>(input, out, &epilogue, scratch),
            WinogradTile::F4x4 => self.forward_tiles::<F4, 6, 4>(input, out, &epilogue, scratch),
        }
    }
}

/// The input transform of tile (ty, tx) of image `n` into `out` ([position][ci]).
struct InputTile<'a, T, E: GemmElement, const A: usize, const M: usize> {
    input: TensorView<'a, E>,
    n: usize,
    ty: usize,
    tx: usize,
    out: &'a mut [E],
    transform: std::marker::PhantomData<T>,
}

impl<T: Transform<A, M>, E: GemmElement, const A: usize, const M: usize> SimdOp for InputTile<'_, T, E, A, M> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let shape = self.input.shape();
        let (ci, lanes_max) = (shape.c, S::LANES);
        let src = self.input.data();
        let (y0, x0) = ((self.ty * M) as isize - 1, (self.tx * M) as isize - 1);
        let interior = y0 >= 0 && x0 >= 0 && y0 as usize + A <= shape.h && x0 as usize + A <= shape.w;
        let pixel = |y: isize, x: isize| ((self.n * shape.h + y as usize) * shape.w + x as usize) * ci;
        for c0 in (0..ci).step_by(lanes_max) {
            let lanes = (ci - c0).min(lanes_max);
            let mut d = [[s.zero(); A]; A];
            if interior && lanes == lanes_max {
                // The common case, straight-line: a whole patch inside the image.
                for (i, row) in d.iter_mut().enumerate() {
                    for (j, cell) in row.iter_mut().enumerate() {
                        *cell = s.load_elements(&src[pixel(y0 + i as isize, x0 + j as isize) + c0..], lanes_max);
                    }
                }
            } else {
                for (i, row) in d.iter_mut().enumerate() {
                    let y = y0 + i as isize;
                    if y < 0 || y >= shape.h as isize {
                        continue;
                    }
                    for (j, cell) in row.iter_mut().enumerate() {
                        let x = x0 + j as isize;
                        if x < 0 || x >= shape.w as isize {
                            continue;
                        }
                        *cell = s.load_elements(&src[pixel(y, x) + c0..], lanes);
                    }
                }
            }
            let transformed = input_2d::<S, T, A, M>(s, &d);
            for (a, row) in transformed.iter().enumerate() {
                for (b, &val) in row.iter().enumerate() {
                    s.store_elements(&mut self.out[(a * A + b) * ci + c0..], lanes, val);
                }
            }
        }
    }
}

/// The output transform of tile row `ty` (M output rows, fewer at the bottom) with bias
/// and epilogue.
struct OutputRow<'a, T, E: GemmElement, const A: usize, const M: usize> {
    products: &'a [f32],
    /// Strides of the products: (position, tile).
    strides: (usize, usize),
    ty: usize,
    wo: usize,
    co: usize,
    bias: &'a [f32],
    epilogue: &'a ChunkEpilogue<'a, E>,
    out: &'a mut [E],
    transform: std::marker::PhantomData<T>,
}

impl<T: Transform<A, M>, E: GemmElement, const A: usize, const M: usize> SimdOp for OutputRow<'_, T, E, A, M> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (wo, co, ty) = (self.wo, self.co, self.ty);
        let (p_stride, t_stride) = self.strides;
        let tw = wo.div_ceil(M);
        let row_len = wo * co;
        let valid_rows = self.out.len() / row_len;
        let residual_row = M * ty * row_len;
        for tx in 0..tw {
            let t = ty * tw + tx;
            let valid_cols = (wo - tx * M).min(M);
            for c0 in (0..co).step_by(S::LANES) {
                let lanes = (co - c0).min(S::LANES);
                let bias = s.load_n(&self.bias[c0..], lanes);
                let mut q = [[s.zero(); A]; A];
                for (a, row) in q.iter_mut().enumerate() {
                    for (b, v) in row.iter_mut().enumerate() {
                        *v = s.load_n(&self.products[(a * A + b) * p_stride + t * t_stride + c0..], lanes);
                    }
                }
                let y = output_2d::<S, T, A, M>(s, &q);
                if valid_rows == M && valid_cols == M && lanes == S::LANES {
                    // The common case, straight-line: a whole tile of whole vectors.
                    for (dy, yrow) in y.iter().enumerate() {
                        for (dx, &val) in yrow.iter().enumerate() {
                            let at = dy * row_len + (tx * M + dx) * co + c0;
                            self.epilogue.store(s, s.add(val, bias), self.out, at, residual_row, S::LANES);
                        }
                    }
                    continue;
                }
                for (dy, yrow) in y.iter().enumerate().take(valid_rows) {
                    for (dx, &val) in yrow.iter().enumerate().take(valid_cols) {
                        let at = dy * row_len + (tx * M + dx) * co + c0;
                        self.epilogue.store(s, s.add(val, bias), self.out, at, residual_row, lanes);
                    }
                }
            }
        }
    }
}

/// The epilogue of one chunk: the residual starts at the chunk's first output row.
struct ChunkEpilogue<'a, E> {
    residual: Option<&'a [E]>,
    accumulate: bool,
    relu: bool,
}

impl<E: GemmElement> ChunkEpilogue<'_, E> {
    /// Stores `lanes` lanes of `v` at `out[at..]` after adding the residual (at `at` past
    /// `residual_row`, the residual offset of the tile's first row), the prior output
    /// (`accumulate`) and ReLU.
    #[inline(always)]
    fn store<S: Simd>(&self, s: S, mut v: S::F32, out: &mut [E], at: usize, residual_row: usize, lanes: usize) {
        if let Some(r) = self.residual {
            v = s.add(v, s.load_elements(&r[residual_row + at..], lanes));
        }
        if self.accumulate {
            v = s.add(v, s.load_elements(&out[at..], lanes));
        }
        if self.relu {
            v = s.max(s.zero(), v); // NaN stays NaN, as in PyTorch
        }
        s.store_elements(&mut out[at..], lanes, v);
    }
}
