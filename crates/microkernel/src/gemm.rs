//! The one walk over packed panels and row tiles that every convkit convolution runs:
//! out[m, n] = epilogue(sum_k lhs[m, k] * rhs[k, n] + bias), tasks split over blocks of
//! rows on the current rayon pool, each task entering its family's kernels once.

use crate::family::{SimdOp, MR};
use crate::pack::Panels;
use crate::simd::{GemmElement, Simd};
use crate::CacheSizes;
use convkit_tensor::{ConvQuant, Error, Precision, Quant, Requant, Result};
use rayon::prelude::*;

/// Where each row of the left operand starts in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMap {
    /// Row m starts at `start + m * step`.
    Strided {
        /// Offset of row 0.
        start: usize,
        /// Distance between rows.
        step: usize,
    },
    /// Row m is output pixel m (image-major, then row, then column) of an NHWC conv of
    /// `stride` over images of `src_h` x `src_w` pixels of `ci` channels that already hold
    /// any padding: it starts at input pixel (oy * stride, ox * stride).
    Pixels {
        /// Output height.
        ho: usize,
        /// Output width.
        wo: usize,
        /// Input height, padding included.
        src_h: usize,
        /// Input width, padding included.
        src_w: usize,
        /// Stride along both axes.
        stride: usize,
        /// Channels per pixel.
        ci: usize,
    },
}

impl RowMap {
    /// Offsets of rows m..m + count (count <= MR). One division per tile, then steps.
    #[inline(always)]
    fn offsets(&self, m: usize, count: usize) -> [usize; MR] {
        let mut offsets = [0; MR];
        match *self {
            RowMap::Strided { start, step } => {
                offsets.iter_mut().enumerate().take(count).for_each(|(r, o)| *o = start + (m + r) * step);
            }
            RowMap::Pixels { ho, wo, src_h, src_w, stride, ci } => {
                let (mut n, p) = (m / (ho * wo), m % (ho * wo));
                let (mut oy, mut ox) = (p / wo, p % wo);
                for o in offsets.iter_mut().take(count) {
                    *o = ((n * src_h + oy * stride) * src_w + ox * stride) * ci;
                    ox += 1;
                    if ox == wo {
                        (ox, oy) = (0, oy + 1);
                        if oy == ho {
                            (oy, n) = (0, n + 1);
                        }
                    }
                }
            }
        }
        offsets
    }

    /// Offset of row m alone.
    fn offset(&self, m: usize) -> usize {
        self.offsets(m, 1)[0]
    }
}

/// The left operand: row m is `segments` runs of K / segments contiguous values of
/// `data`, the first at `rows`'s offset of m and the others `segment_step` apart (a KxK
/// NHWC conv: one run of kw * ci values per kernel row, one input row apart). f32, or
/// bf16 against bf16 panels.
#[derive(Debug, Clone, Copy)]
pub struct Lhs<'a, A: GemmElement = f32> {
    /// The buffer rows are read from.
    pub(crate) data: &'a [A],
    /// Where each row starts.
    rows: RowMap,
    /// Runs per row (at least 1; K must be a multiple of it).
    pub(crate) segments: usize,
    /// Distance between the runs of a row.
    pub(crate) segment_step: usize,
}

impl<'a, A: GemmElement> Lhs<'a, A> {
    /// Rows of K contiguous values of `data`, each starting where `rows` says.
    pub fn new(data: &'a [A], rows: RowMap) -> Self {
        Lhs { data, rows, segments: 1, segment_step: 0 }
    }

    /// Rows of `k` contiguous values, `row_step` apart from `start`: a row-major matrix.
    pub fn strided(data: &'a [A], start: usize, row_step: usize) -> Self {
        Lhs::new(data, RowMap::Strided { start, step: row_step })
    }

    /// The same rows read as `segments` runs of K / segments values, `step` apart (a KxK
    /// NHWC conv: one run of kw * ci values per kernel row, one input row apart).
    pub fn with_segments(self, segments: usize, step: usize) -> Self {
        Lhs { segments, segment_step: step, ..self }
    }
}

/// One GEMM with its epilogue: `out[m * row_len + col0 + n] = act(sum_k lhs[m, k] *
/// rhs[k, n] + column bias [+ row bias] [+ residual] [+ out])` for m < `m`, n < N.
///
/// `A` is the left operand's element and must be the precision of the panels; `O` is the
/// output's (and residual's). An int8 GEMM (u8 `A`) writes u8 or f32, and only it writes
/// u8. The sum and the epilogue are f32 whatever the types; a bf16
/// output is rounded to nearest (ties to even) when stored.
///
/// Built with [`Gemm::new`] and the `with_*` methods; the fields are the walk's own, so
/// every call is checked ([`Gemm::run`]) before it reads or writes anything.
#[derive(Debug, Clone, Copy)]
pub struct Gemm<'a, A: GemmElement = f32, O: GemmElement = A> {
    /// Left operand, M x K.
    lhs: Lhs<'a, A>,
    /// Right operand, K x N, packed (with its column bias, if any).
    rhs: Panels<'a>,
    /// Rows M.
    m: usize,
    /// Distance between output rows.
    row_len: usize,
    /// Column of the output row where column 0 of the product goes.
    col0: usize,
    /// One value per row added to it (an NCHW conv, rows are output channels).
    row_bias: Option<&'a [f32]>,
    /// Added to the output, laid out like it (same `row_len` and `col0`).
    residual: Option<&'a [O]>,
    /// Add the output's prior contents.
    accumulate: bool,
    /// max(v, 0) last.
    relu: bool,
    /// The u8 output's quantization (an int8 GEMM's epilogue: [`Requant`]).
    out_quant: Option<Quant>,
    /// The u8 residual's quantization (likewise).
    residual_quant: Option<Quant>,
}

impl<'a, A: GemmElement, O: GemmElement> Gemm<'a, A, O> {
    /// A GEMM of `lhs` (M = `m`) by `rhs` into rows `row_len` apart from column 0, with
    /// only the column bias of `rhs` as epilogue.
    pub fn new(lhs: Lhs<'a, A>, rhs: Panels<'a>, m: usize, row_len: usize) -> Self {
        Gemm {
            lhs,
            rhs,
            m,
            row_len,
            col0: 0,
            row_bias: None,
            residual: None,
            accumulate: false,
            relu: false,
            out_quant: None,
            residual_quant: None,
        }
    }

    /// The same, writing column 0 of the product at column `col0` of each output row.
    pub fn with_col0(self, col0: usize) -> Self {
        Gemm { col0, ..self }
    }

    /// The same, adding one value per row (an NCHW conv: rows are output channels).
    pub fn with_row_bias(self, row_bias: Option<&'a [f32]>) -> Self {
        Gemm { row_bias, ..self }
    }

    /// The same, adding `residual` (laid out like the output: same row length and first
    /// column) after the biases.
    pub fn with_residual(self, residual: Option<&'a [O]>) -> Self {
        Gemm { residual, ..self }
    }

    /// The same, adding the output's prior contents (`true`) after the residual.
    pub fn with_accumulate(self, accumulate: bool) -> Self {
        Gemm { accumulate, ..self }
    }

    /// The same, ending with max(v, 0) (`true`; NaN stays NaN).
    pub fn with_relu(self, relu: bool) -> Self {
        Gemm { relu, ..self }
    }

    /// The same, writing a u8 output quantized with `quant` (required for a u8 output, which
    /// only an int8 GEMM writes): the epilogue [`Requant`] folds for each column, rounded to
    /// nearest even and saturated.
    pub fn with_output_quant(self, quant: Quant) -> Self {
        Gemm { out_quant: Some(quant), ..self }
    }

    /// The same, reading a u8 residual quantized with `quant` (required for a u8
    /// residual): its real value `(r - zero_point) * scale` is added, as [`Requant`] folds it.
    pub fn with_residual_quant(self, quant: Quant) -> Self {
        Gemm { residual_quant: Some(quant), ..self }
    }

    /// The same, with an int8 convolution's output quantization and, if the GEMM has a
    /// residual, the residual's (None: a float convolution, nothing to add).
    pub fn with_conv_quant(self, quant: Option<ConvQuant>) -> Self {
        let Some(q) = quant else { return self };
        let gemm = self.with_output_quant(q.output);
        match (gemm.residual.is_some(), q.residual) {
            (true, Some(r)) => gemm.with_residual_quant(r),
            _ => gemm,
        }
    }

    /// Floats of the output (and residual) buffer the call touches: up to the last column
    /// of the last row.
    pub fn out_len(&self) -> usize {
        if self.m == 0 {
            0
        } else {
            (self.m - 1) * self.row_len + self.col0 + self.rhs.n
        }
    }

    /// Checks every length the walk relies on, so that a bad call is an error, not a panic.
    fn check(&self, out: usize) -> Result<()> {
        let (k, n) = (self.rhs.k, self.rhs.n);
        let lhs = &self.lhs;
        if lhs.segments == 0 || k % lhs.segments != 0 {
            return Err(Error::invalid(format!("K = {k} is not a whole number of {} row segments", lhs.segments)));
        }
        let kernel = self.rhs.kernel;
        if A::PRECISION != kernel.precision() {
            return Err(Error::mismatch(
                "GEMM left operand precision (that of its panels)",
                kernel.precision(),
                A::PRECISION,
            ));
        }
        if kernel.k_group() > 1 && lhs.segments != self.rhs.segments {
            return Err(Error::mismatch(
                format!("row segments of a {} GEMM (those its panels were grouped in)", kernel.precision()),
                self.rhs.segments,
                lhs.segments,
            ));
        }
        self.check_quantization()?;
        if self.col0 + n > self.row_len && self.m > 1 {
            return Err(Error::invalid(format!(
                "output columns {}..{} overlap the next row (row length {})",
                self.col0,
                self.col0 + n,
                self.row_len
            )));
        }
        if self.m == 0 {
            return Ok(());
        }
        if let RowMap::Pixels { ho, wo, .. } = lhs.rows {
            if ho == 0 || wo == 0 {
                return Err(Error::invalid(format!("GEMM rows over an output of {ho}x{wo} pixels")));
            }
        }
        let need = self.out_len();
        if out < need {
            return Err(Error::mismatch("GEMM output length", format!("at least {need}"), out));
        }
        if let Some(r) = self.residual {
            if r.len() < need {
                return Err(Error::mismatch("GEMM residual length", format!("at least {need}"), r.len()));
            }
        }
        if let Some(b) = self.row_bias {
            if b.len() < self.m {
                return Err(Error::mismatch("GEMM row bias length", format!("at least {}", self.m), b.len()));
            }
        }
        let last = self.lhs.rows.offset(self.m - 1) + (lhs.segments - 1) * lhs.segment_step + k / lhs.segments;
        if lhs.data.len() < last {
            return Err(Error::mismatch("GEMM left operand length", format!("at least {last}"), lhs.data.len()));
        }
        Ok(())
    }

    /// Checks what an int8 GEMM (u8 left operand, or u8 output) needs and refuses.
    fn check_quantization(&self) -> Result<()> {
        let int8_in = A::PRECISION == Precision::Int8;
        let int8_out = O::PRECISION == Precision::Int8;
        if int8_in && self.rhs.int8.is_none() {
            return Err(Error::invalid("int8 panels without their column scales and zero-point offsets"));
        }
        if int8_in && self.row_bias.is_some() {
            return Err(Error::invalid("an int8 GEMM takes a column bias only, not a row bias"));
        }
        if int8_in && O::PRECISION == Precision::Bf16 {
            return Err(Error::invalid("an int8 GEMM writes u8 or f32 outputs, not bf16"));
        }
        if int8_out && !int8_in {
            return Err(Error::invalid(format!(
                "a u8 GEMM output needs a u8 left operand (an int8 GEMM), not {}",
                A::PRECISION
            )));
        }
        if (int8_in || int8_out) && self.accumulate {
            return Err(Error::invalid("an int8 GEMM does not accumulate into its output"));
        }
        match (int8_out, self.out_quant) {
            (true, None) => {
                return Err(Error::invalid("a u8 GEMM output needs its quantization (scale and zero point)"))
            }
            (false, Some(q)) => {
                return Err(Error::invalid(format!("output quantization ({q}) for a {} output", O::PRECISION)))
            }
            _ => {}
        }
        match (int8_out && self.residual.is_some(), self.residual_quant) {
            (true, None) => Err(Error::invalid("a u8 GEMM residual needs its quantization (scale and zero point)")),
            (false, Some(q)) => Err(Error::invalid(format!("residual quantization ({q}) without a u8 residual"))),
            _ => Ok(()),
        }
    }

    /// Runs the GEMM on the current rayon pool: blocks of rows whose left operand fits in
    /// half the L2 ([`CacheSizes::lhs_block_bytes`]), in a number of tasks that is a
    /// multiple of the thread count; a single row splits its panels instead. Every output
    /// is the same sequence of FMAs whatever the split: results are bitwise the same for
    /// any thread count.
    pub fn run(&self, out: &mut [O]) -> Result<()> {
        self.check(out.len())?;
        if self.m == 0 {
            return Ok(());
        }
        let out = &mut out[..self.out_len()];
        let threads = rayon::current_num_threads().max(1);
        let panel_count = self.rhs.count();
        let nr = self.rhs.kernel.tile().nr;
        if self.m == 1 {
            // One row (the FC layer at batch 1): split the panels as contiguous column
            // ranges, so all threads stream the weights.
            let per_task = (panel_count / threads).max(1);
            let row = &mut out[self.col0..];
            for_each_chunk(row, per_task * nr, |(t, cols)| {
                let p0 = t * per_task;
                let p1 = (p0 + per_task).min(panel_count);
                Block { gemm: self, m0: 0, count: 1, panels: (p0, p1), out: cols, out_col0: 0 }.dispatch();
            });
            return Ok(());
        }
        let block = rows_per_task(self.m, self.rhs.k * std::mem::size_of::<A>(), threads);
        let (m, row_len, col0) = (self.m, self.row_len, self.col0);
        for_each_chunk(out, block * row_len, |(t, rows)| {
            let m0 = t * block;
            let count = block.min(m - m0);
            Block { gemm: self, m0, count, panels: (0, panel_count), out: rows, out_col0: col0 }.dispatch();
        });
        Ok(())
    }

    /// Runs the whole GEMM on the calling thread (inside a task of the caller's own split).
    pub fn run_serial(&self, out: &mut [O]) -> Result<()> {
        self.check(out.len())?;
        if self.m == 0 {
            return Ok(());
        }
        let out = &mut out[..self.out_len()];
        let panels = (0, self.rhs.count());
        Block { gemm: self, m0: 0, count: self.m, panels, out, out_col0: self.col0 }.dispatch();
        Ok(())
    }
}

/// Runs `task` on each `chunk`-long piece of `out` (with its index), in parallel on the
/// current rayon pool when there is more than one piece and more than one thread.
/// Plumbing the convkit kernel crates share; not part of the stable API.
#[doc(hidden)]
pub fn for_each_chunk<T: Send>(out: &mut [T], chunk: usize, task: impl Fn((usize, &mut [T])) + Sync + Send) {
    let chunk = chunk.max(1);
    if out.len() > chunk && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(task);
    }
}

/// Threads of the current rayon pool (what a caller's own task split divides by).
/// Plumbing the convkit kernel crates share; not part of the stable API.
#[doc(hidden)]
pub fn current_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Rows per task: few enough that a task's left-operand rows stay within
/// [`CacheSizes::lhs_block_bytes`], in a number of tasks that is a multiple of the thread
/// count and of equal size, so no thread is left with a remainder task. Not rounded to
/// whole tiles: on the 7x7 layers (49 rows, 2 threads) that made tasks of 30 + 19 rows,
/// 5 tiles where 4 and a single row do.
fn rows_per_task(rows: usize, row_bytes: usize, threads: usize) -> usize {
    let cache_rows = (CacheSizes::get().lhs_block_bytes() / row_bytes.max(1)).max(MR);
    let tasks = rows.div_ceil(cache_rows).next_multiple_of(threads);
    rows.div_ceil(tasks)
}

/// One task: rows m0..m0 + count and panels p0..p1 of a GEMM. `out` starts at row m0;
/// column 0 of panel p0 is at `out_col0` in each of its rows.
struct Block<'g, 'a, 'o, A: GemmElement, O: GemmElement> {
    gemm: &'g Gemm<'a, A, O>,
    m0: usize,
    count: usize,
    panels: (usize, usize),
    out: &'o mut [O],
    out_col0: usize,
}

impl<A: GemmElement, O: GemmElement> Block<'_, '_, '_, A, O> {
    /// Runs the task under the target features of the family its panels were packed for.
    fn dispatch(self) {
        self.gemm.rhs.kernel.family().dispatch(self)
    }
}

impl<A: GemmElement, O: GemmElement> SimdOp for Block<'_, '_, '_, A, O> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let g = self.gemm;
        let tile_shape = g.rhs.kernel.tile();
        // The panels are packed only for a kernel this CPU runs (`Panels` checks it), so
        // `dispatch` entered that family's own token: one tile, one source of truth.
        assert!(S::FAMILY == g.rhs.kernel.family(), "a {} tile walked {} panels", S::FAMILY, g.rhs.kernel);
        let (k, n, nr) = (g.rhs.k, g.rhs.n, tile_shape.nr);
        let (p0, p1) = self.panels;
        let panel_len = g.rhs.panel_len();
        let panel = |p: usize| &g.rhs.data[p * panel_len..(p + 1) * panel_len];
        let requant = Requant::new(g.out_quant, g.residual_quant);
        let mut p = p0;
        while p < p1 {
            let width = tile_shape.max_panels.min(p1 - p);
            let c0 = p * nr;
            // An int8 GEMM's epilogue constants for the tile's columns, once for all its rows.
            let (mut multiplier, mut shift) = ([0.0f32; MAX_TILE_COLS], [0.0f32; MAX_TILE_COLS]);
            let int8 = g.rhs.int8.map(|columns| {
                let cols = (n - c0).min(width * nr);
                for c in 0..cols {
                    let bias = g.rhs.bias.map_or(0.0, |b| b[c0 + c]);
                    (multiplier[c], shift[c]) = requant.column(columns.scale[c0 + c], bias);
                }
                Int8Columns {
                    multiplier: &multiplier,
                    shift: &shift,
                    offset: &columns.offset[c0..],
                    residual_scale: requant.residual_scale,
                    floor: requant.floor,
                }
            });
            let mut r0 = 0;
            while r0 < self.count {
                let rows = tile_shape.mr.min(self.count - r0);
                let m = self.m0 + r0;
                let tile = TileArgs {
                    lhs: &g.lhs,
                    offsets: g.lhs.rows.offsets(m, rows),
                    seg_len: k / g.lhs.segments,
                    panels: [panel(p), panel(p + width - 1)],
                    col_bias: g.rhs.bias.map(|b| &b[c0..]),
                    row_bias: g.row_bias.map(|b| &b[m..]),
                    residual: g.residual.map(|res| &res[m * g.row_len + g.col0 + c0..]),
                    row_len: g.row_len,
                    cols: (n - c0).min(width * nr),
                    accumulate: g.accumulate,
                    relu: g.relu,
                    int8,
                };
                let out = &mut self.out[r0 * g.row_len + self.out_col0 + (c0 - p0 * nr)..];
                tile_dispatch(s, rows, width, &tile, out);
                r0 += rows;
            }
            p += width;
        }
    }
}

/// What one tile reads: its rows of the left operand, one or two panels, the epilogue.
/// Public in a private module: [`GemmElement::reduce`] names it, no one outside can.
#[derive(Debug)]
pub struct TileArgs<'a, A: GemmElement, O: GemmElement> {
    pub(crate) lhs: &'a Lhs<'a, A>,
    offsets: [usize; MR],
    seg_len: usize,
    /// The tile's first and last panel (the same one for a one-panel tile).
    panels: [&'a [f32]; 2],
    /// Column bias from the tile's first column.
    col_bias: Option<&'a [f32]>,
    /// Row bias from the tile's first row.
    row_bias: Option<&'a [f32]>,
    /// Residual from the tile's first row and column, rows `row_len` apart.
    residual: Option<&'a [O]>,
    row_len: usize,
    /// Columns of the tile that exist (at most its width).
    cols: usize,
    accumulate: bool,
    relu: bool,
    /// An int8 GEMM's epilogue (its column bias folded in).
    int8: Option<Int8Columns<'a>>,
}

/// Columns in a tile at most: two panels of the widest family.
const MAX_TILE_COLS: usize = 64;

/// What the epilogue of an int8 tile reads ([`Requant`]), from the tile's first column.
#[derive(Debug, Clone, Copy)]
struct Int8Columns<'a> {
    multiplier: &'a [f32; MAX_TILE_COLS],
    shift: &'a [f32; MAX_TILE_COLS],
    /// The s32 added to each column's sum first (the input zero point's share), its bits
    /// in f32 slots, padded to whole panels.
    offset: &'a [f32],
    residual_scale: f32,
    floor: f32,
}

/// Calls the tile kernel of `rows` x `panels`, for every row count 1..=MR and panel count
/// 1..=2: the tiles a family's [`crate::TileShape`] allows are a subset of these, and the
/// kernel sweep in tests/ runs each of them.
#[inline(always)]
fn tile_dispatch<S: Simd, A: GemmElement, O: GemmElement>(
    s: S,
    rows: usize,
    panels: usize,
    t: &TileArgs<'_, A, O>,
    out: &mut [O],
) {
    const _: () = assert!(MR == 6, "tile_dispatch lists tiles of 1..=6 rows");
    macro_rules! by_rows {
        ($v:literal) => {
            match rows {
                6 => tile::<S, A, O, 6, $v>(s, t, out),
                5 => tile::<S, A, O, 5, $v>(s, t, out),
                4 => tile::<S, A, O, 4, $v>(s, t, out),
                3 => tile::<S, A, O, 3, $v>(s, t, out),
                2 => tile::<S, A, O, 2, $v>(s, t, out),
                1 => tile::<S, A, O, 1, $v>(s, t, out),
                _ => unreachable!("the walk makes tiles of 1..=MR rows, not {rows}"),
            }
        };
    }
    // Vectors per tile row: two per panel (checked when a family is declared) times one
    // or two panels.
    match panels * S::PANEL_VECTORS {
        4 => by_rows!(4),
        2 => by_rows!(2),
        v => unreachable!("no family has tile rows of {v} vectors"),
    }
}

/// One R x (V vectors) tile over the whole reduction, accumulators in registers, then the
/// epilogue and the store. `out` starts at the tile's first row and column.
#[inline(always)]
fn tile<S: Simd, A: GemmElement, O: GemmElement, const R: usize, const V: usize>(
    s: S,
    t: &TileArgs<'_, A, O>,
    out: &mut [O],
) {
    let acc = A::reduce::<S, O, R, V>(s, t);
    store_tile(s, acc, t, out);
}

/// The f32 reduction of a tile: one broadcast per row and k, V FMAs with it.
#[inline(always)]
pub(crate) fn reduce_f32<S: Simd, const R: usize, const V: usize>(
    s: S,
    data: &[f32],
    t: &TileArgs<'_, impl GemmElement, impl GemmElement>,
) -> [[S::F32; V]; R] {
    let lanes = S::LANES;
    let vp = S::PANEL_VECTORS;
    let nr = vp * lanes;
    let mut acc = [[s.zero(); V]; R];
    let (seg_len, step) = (t.seg_len, t.lhs.segment_step);
    for seg in 0..t.lhs.segments {
        let rows = tile_rows::<f32, R>(data, &t.offsets, seg * step, seg_len);
        let (first, last) = (segment(t.panels[0], seg, seg_len * nr), segment(t.panels[1], seg, seg_len * nr));
        // kk runs over 0..seg_len, the length of every row slice: no bounds check (and no
        // early exit that would keep the accumulators in memory) in the loop.
        for (kk, (b0, b1)) in (0..seg_len).zip(first.chunks_exact(nr).zip(last.chunks_exact(nr))) {
            let b = panel_row::<S, V>(s, b0, b1);
            for r in 0..R {
                let a = s.splat(rows[r][kk]);
                for j in 0..V {
                    acc[r][j] = s.mul_add(a, b[j], acc[r][j]);
                }
            }
        }
    }
    acc
}

/// The bf16 reduction of a tile: per pair of k, one broadcast of each row's two bf16
/// values and V bf16 dot products with it; a segment of odd length ends with its last
/// value alone (paired with zero, as its weights are).
#[inline(always)]
pub(crate) fn reduce_bf16<S: Simd, const R: usize, const V: usize>(
    s: S,
    data: &[u16],
    t: &TileArgs<'_, impl GemmElement, impl GemmElement>,
) -> [[S::F32; V]; R] {
    let lanes = S::LANES;
    let vp = S::PANEL_VECTORS;
    let nr = vp * lanes;
    let mut acc = [[s.zero(); V]; R];
    let (seg_len, step) = (t.seg_len, t.lhs.segment_step);
    let (pairs, seg_pairs) = (seg_len / 2, seg_len.div_ceil(2));
    for seg in 0..t.lhs.segments {
        let rows = tile_rows::<u16, R>(data, &t.offsets, seg * step, seg_len);
        let (first, last) = (segment(t.panels[0], seg, seg_pairs * nr), segment(t.panels[1], seg, seg_pairs * nr));
        for (kk, (b0, b1)) in (0..pairs).zip(first.chunks_exact(nr).zip(last.chunks_exact(nr))) {
            let b = panel_row::<S, V>(s, b0, b1);
            for r in 0..R {
                let pair = u32::from(rows[r][2 * kk]) | u32::from(rows[r][2 * kk + 1]) << 16;
                let a = s.splat(f32::from_bits(pair));
                for j in 0..V {
                    acc[r][j] = s.dot_bf16(acc[r][j], a, b[j]);
                }
            }
        }
        if seg_len % 2 == 1 {
            let at = pairs * nr;
            let b = panel_row::<S, V>(s, &first[at..], &last[at..]);
            for r in 0..R {
                let a = s.splat(f32::from_bits(u32::from(rows[r][seg_len - 1])));
                for j in 0..V {
                    acc[r][j] = s.dot_bf16(acc[r][j], a, b[j]);
                }
            }
        }
    }
    acc
}

/// The int8 reduction of a tile: per four k, one broadcast of each row's four u8 values
/// and V `vpdpbusd` (or their exact widening) with it, into s32 lanes; a segment whose
/// length is not a multiple of four ends with its last values padded with zeros (as its
/// weights are).
#[inline(always)]
pub(crate) fn reduce_int8<S: Simd, const R: usize, const V: usize>(
    s: S,
    data: &[u8],
    t: &TileArgs<'_, impl GemmElement, impl GemmElement>,
) -> [[S::F32; V]; R] {
    let nr = S::PANEL_VECTORS * S::LANES;
    let mut acc = [[s.zero(); V]; R];
    let (seg_len, step) = (t.seg_len, t.lhs.segment_step);
    let (quads, seg_quads) = (seg_len / 4, seg_len.div_ceil(4));
    let quad = |bytes: [u8; 4]| s.splat(f32::from_bits(u32::from_le_bytes(bytes)));
    for seg in 0..t.lhs.segments {
        let rows = tile_rows::<u8, R>(data, &t.offsets, seg * step, seg_len);
        let mut row_quads: [&[[u8; 4]]; R] = [&[]; R];
        for (quads, row) in row_quads.iter_mut().zip(rows) {
            *quads = row.as_chunks::<4>().0;
        }
        let (first, last) = (segment(t.panels[0], seg, seg_quads * nr), segment(t.panels[1], seg, seg_quads * nr));
        for (kk, (b0, b1)) in (0..quads).zip(first.chunks_exact(nr).zip(last.chunks_exact(nr))) {
            let b = panel_row::<S, V>(s, b0, b1);
            for r in 0..R {
                let a = quad(row_quads[r][kk]);
                for j in 0..V {
                    acc[r][j] = s.dot_u8s8(acc[r][j], a, b[j]);
                }
            }
        }
        if seg_len % 4 != 0 {
            let at = quads * nr;
            let b = panel_row::<S, V>(s, &first[at..], &last[at..]);
            for r in 0..R {
                // Byte by byte: a copy of seg_len % 4 bytes was a call to memcpy.
                let mut bytes = [0u8; 4];
                for (i, byte) in bytes.iter_mut().enumerate().take(3) {
                    if let Some(&x) = rows[r].get(quads * 4 + i) {
                        *byte = x;
                    }
                }
                let a = quad(bytes);
                for j in 0..V {
                    acc[r][j] = s.dot_u8s8(acc[r][j], a, b[j]);
                }
            }
        }
    }
    acc
}

/// The R rows of a tile: `len` values from each row's offset plus `shift`. A plain loop,
/// like every array built in a tile: `array::from_fn` was left as an out-of-line call
/// compiled without the family's target features, its result passed through memory.
#[inline(always)]
fn tile_rows<'d, T, const R: usize>(data: &'d [T], offsets: &[usize; MR], shift: usize, len: usize) -> [&'d [T]; R] {
    let mut rows: [&[T]; R] = [&[]; R];
    for (row, &offset) in rows.iter_mut().zip(offsets) {
        *row = &data[offset + shift..][..len];
    }
    rows
}

/// V whole vectors from `src` (per-column values padded to whole panels), in a plain loop
/// (see [`tile_rows`]).
#[inline(always)]
fn column_vectors<S: Simd, const V: usize>(s: S, src: &[f32]) -> [S::F32; V] {
    let mut v = [s.zero(); V];
    for (j, v) in v.iter_mut().enumerate() {
        *v = s.load(&src[j * S::LANES..]);
    }
    v
}

/// The V weight vectors of one k (one pair of k in bf16): from the first panel's row
/// `b0`, then from the last one's `b1`. A plain loop: `array::from_fn` here was left as a
/// call in the reduction loop, its vectors passed through memory.
#[inline(always)]
fn panel_row<S: Simd, const V: usize>(s: S, b0: &[f32], b1: &[f32]) -> [S::F32; V] {
    let (lanes, vp) = (S::LANES, S::PANEL_VECTORS);
    let mut b = [s.zero(); V];
    for (j, v) in b.iter_mut().enumerate() {
        *v = if j < vp { s.load(&b0[j * lanes..]) } else { s.load(&b1[(j - vp) * lanes..]) };
    }
    b
}

/// Part `seg` of a panel cut into parts of `len` floats.
#[inline(always)]
fn segment(panel: &[f32], seg: usize, len: usize) -> &[f32] {
    &panel[seg * len..][..len]
}

/// Bias, residual, prior output and ReLU on the tile in registers, then the store of its
/// first `cols` columns. Each step is its own short loop over the whole tile, so that the
/// compiler unrolls it and the accumulators stay in registers (a loop it does not unroll
/// indexes them, which keeps a copy in memory, stored at every step of the reduction).
#[inline(always)]
fn store_tile<S: Simd, A: GemmElement, O: GemmElement, const R: usize, const V: usize>(
    s: S,
    mut acc: [[S::F32; V]; R],
    t: &TileArgs<'_, A, O>,
    out: &mut [O],
) {
    if let Some(int8) = &t.int8 {
        return store_tile_int8(s, acc, int8, t, out);
    }
    let lanes = S::LANES;
    if let Some(b) = t.col_bias {
        // Padded to whole panels: whole loads are always in bounds.
        let bias = column_vectors::<S, V>(s, b);
        for row in acc.iter_mut() {
            for j in 0..V {
                row[j] = s.add(row[j], bias[j]);
            }
        }
    }
    if let Some(b) = t.row_bias {
        for (r, row) in acc.iter_mut().enumerate() {
            let rb = s.splat(b[r]);
            for v in row.iter_mut() {
                *v = s.add(*v, rb);
            }
        }
    }
    if t.cols == V * lanes {
        // A whole tile: whole loads and stores.
        if let Some(res) = t.residual {
            for (r, row) in acc.iter_mut().enumerate() {
                for j in 0..V {
                    row[j] = s.add(row[j], s.load_elements(&res[r * t.row_len + j * lanes..], lanes));
                }
            }
        }
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for j in 0..V {
                    row[j] = s.add(row[j], s.load_elements(&out[r * t.row_len + j * lanes..], lanes));
                }
            }
        }
        return relu_and_store_whole(s, acc, t.relu.then_some(s.zero()), t.row_len, out);
    }
    // Part of a tile: the accumulators go to memory once, then each row's columns.
    const { assert!(V * S::LANES <= MAX_TILE_COLS, "a tile row is at most 64 columns") };
    let mut tile = [[0.0f32; MAX_TILE_COLS]; R];
    for (r, row) in acc.iter().enumerate() {
        for j in 0..V {
            s.store(&mut tile[r][j * lanes..], row[j]);
        }
    }
    for (r, values) in tile.iter().enumerate() {
        let dst = &mut out[r * t.row_len..][..t.cols];
        let values = &values[..t.cols];
        let res = t.residual.map(|res| &res[r * t.row_len..][..t.cols]);
        for (c, (d, &v)) in dst.iter_mut().zip(values).enumerate() {
            let mut v = v + res.map_or(0.0, |res| res[c].to_f32());
            if t.accumulate {
                v += d.to_f32();
            }
            *d = O::from_f32(if t.relu { convkit_tensor::relu(v) } else { v });
        }
    }
}

/// The last steps of a whole tile: ReLU as `max(floor, v)` if there is a floor (v where v
/// is NaN: PyTorch keeps NaN through ReLU), then the store of every vector.
#[inline(always)]
fn relu_and_store_whole<S: Simd, O: GemmElement, const R: usize, const V: usize>(
    s: S,
    mut acc: [[S::F32; V]; R],
    relu_floor: Option<S::F32>,
    row_len: usize,
    out: &mut [O],
) {
    if let Some(floor) = relu_floor {
        for row in acc.iter_mut() {
            for v in row.iter_mut() {
                *v = s.max(floor, *v);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            s.store_elements(&mut out[r * row_len + j * S::LANES..], S::LANES, v);
        }
    }
}

/// The epilogue of an int8 tile (s32 accumulators), every step one IEEE f32 operation in
/// the order [`Requant`] defines, so that every family (and the reference) gives the same
/// bits: `fma(f32(acc + offset), multiplier, shift)`, `fma(residual, residual_scale, v)`,
/// `max(floor, v)`, then the store (a u8 output clamped and rounded to nearest even).
/// A whole tile runs each step over all of it, straight-line, like [`store_tile`].
#[inline(always)]
fn store_tile_int8<S: Simd, A: GemmElement, O: GemmElement, const R: usize, const V: usize>(
    s: S,
    mut acc: [[S::F32; V]; R],
    int8: &Int8Columns<'_>,
    t: &TileArgs<'_, A, O>,
    out: &mut [O],
) {
    let lanes = S::LANES;
    let multiplier = column_vectors::<S, V>(s, int8.multiplier);
    let shift = column_vectors::<S, V>(s, int8.shift);
    let offset = column_vectors::<S, V>(s, int8.offset);
    for row in acc.iter_mut() {
        for j in 0..V {
            row[j] = s.mul_add_fused(s.i32_to_f32(s.add_i32(row[j], offset[j])), multiplier[j], shift[j]);
        }
    }
    let (residual_scale, floor) = (s.splat(int8.residual_scale), s.splat(int8.floor));
    if t.cols == V * lanes {
        if let Some(res) = t.residual {
            for (r, row) in acc.iter_mut().enumerate() {
                for j in 0..V {
                    let x = s.load_elements(&res[r * t.row_len + j * lanes..], lanes);
                    row[j] = s.mul_add_fused(x, residual_scale, row[j]);
                }
            }
        }
        return relu_and_store_whole(s, acc, t.relu.then_some(floor), t.row_len, out);
    }
    // Part of a tile: vector by vector, the last one partial.
    for (r, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let n = t.cols.saturating_sub(j * lanes).min(lanes);
            if n == 0 {
                break;
            }
            let at = r * t.row_len + j * lanes;
            let mut v = v;
            if let Some(res) = t.residual {
                v = s.mul_add_fused(s.load_elements(&res[at..], n), residual_scale, v);
            }
            if t.relu {
                v = s.max(floor, v);
            }
            s.store_elements(&mut out[at..], n, v);
        }
    }
}
