//! The NHWC driver shared by the 1x1 and the KxK direct convolutions: weight packing,
//! the split of output rows into tasks, and the walk over panels and tiles.

use crate::kernel::{TileBias, MR, NR};
use crate::{dispatch_tile, rows_per_task, run_blocks, TileOut};
use bytemuck::Zeroable;
use convkit_tensor::simd::f32x16;
use convkit_tensor::{AlignedVec, Epilogue, FilterShape, Shape};

/// Packs OIHW weights into 32-column panels: panel p holds, for each k in (ky, kx, ci)
/// order, output channels 32p..32p+32 as two vectors (zeros past co).
pub(crate) fn pack_panels(weights: &[f32], f: FilterShape) -> Vec<f32x16> {
    let k = f.reduction_len();
    let mut packed = vec![f32x16::zeroed(); f.co.div_ceil(NR) * k * 2];
    let flat: &mut [f32] = bytemuck::cast_slice_mut(&mut packed);
    for o in 0..f.co {
        let (panel, col) = (o / NR, o % NR);
        for ci in 0..f.ci {
            for ky in 0..f.kh {
                for kx in 0..f.kw {
                    let row = (ky * f.kw + kx) * f.ci + ci;
                    flat[(panel * k + row) * NR + col] = weights[((o * f.ci + ci) * f.kh + ky) * f.kw + kx];
                }
            }
        }
    }
    packed
}

/// `bias` (zeros if None) padded with zeros to whole 32-column panels: the bias a tile
/// loads with its panel.
pub(crate) fn pad_bias(co: usize, bias: Option<&[f32]>) -> AlignedVec {
    let mut padded = AlignedVec::zeros(co.div_ceil(NR) * NR);
    if let Some(b) = bias {
        padded[..co].copy_from_slice(b);
    }
    padded
}

/// One NHWC convolution call over `src`, an image buffer of `out.n` images of
/// src_h x src_w x ci that already holds any padding: output pixel (oy, ox) reads, for
/// each kernel row ky, the kw*ci contiguous values at row oy*stride + ky, column ox*stride.
pub(crate) struct NhwcConv<'a> {
    pub src: &'a [f32],
    pub src_h: usize,
    pub src_w: usize,
    pub ci: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub out: Shape,
    pub panels: &'a [f32x16],
    /// Padded to a multiple of 32.
    pub bias: &'a [f32],
}

impl NhwcConv<'_> {
    /// Input offsets of the `count` pixels of a tile starting at output pixel m (kernel
    /// row 0). One division per tile, then steps along the output row.
    fn tile_offsets(&self, m: usize, count: usize) -> [usize; MR] {
        let (ho, wo, s, ci) = (self.out.h, self.out.w, self.stride, self.ci);
        let mut offsets = [0; MR];
        if s == 1 && self.src_w == wo && self.src_h == ho {
            // Unpadded stride-1 1x1: pixel m is row m of the input matrix.
            offsets.iter_mut().enumerate().take(count).for_each(|(r, o)| *o = (m + r) * ci);
            return offsets;
        }
        let (mut n, p) = (m / (ho * wo), m % (ho * wo));
        let (mut oy, mut ox) = (p / wo, p % wo);
        for o in offsets.iter_mut().take(count) {
            *o = ((n * self.src_h + oy * s) * self.src_w + ox * s) * ci;
            ox += 1;
            if ox == wo {
                (ox, oy) = (0, oy + 1);
                if oy == ho {
                    (oy, n) = (0, n + 1);
                }
            }
        }
        offsets
    }

    /// out[m, co] = act(sum + bias [+ residual] [+ prior out]) for every output pixel m, in parallel on
    /// the current rayon pool over blocks of output rows.
    pub fn run(&self, out: &mut [f32], epilogue: &Epilogue<'_>) {
        let residual = epilogue.residual.map(|r| r.data());
        let (kh, kw) = self.kernel;
        let co = self.out.c;
        let k = kh * kw * self.ci;
        let rows = self.out.n * self.out.h * self.out.w;
        let block = rows_per_task(rows, k);
        let row_step = self.src_w * self.ci;
        let run_len = kw * self.ci;
        if rows == 1 {
            // One output row (the FC layer at batch 1): split the panels instead, as
            // contiguous column ranges of that row, so all threads stream the weights.
            let offsets = self.tile_offsets(0, 1);
            let per_task = self.panels.len() / (2 * k) / rayon::current_num_threads().max(1);
            let cols_per_task = per_task.max(1) * NR;
            let task = |(t, cols): (usize, &mut [f32])| {
                for (j, out_cols) in cols.chunks_mut(NR).enumerate() {
                    let n0 = t * cols_per_task + j * NR;
                    let panel = &self.panels[n0 / NR * 2 * k..][..2 * k];
                    let a = |_: usize, ky: usize| &self.src[offsets[0] + ky * row_step..][..run_len];
                    let to = TileOut {
                        bias: TileBias::Columns(&self.bias[n0..n0 + NR]),
                        residual: residual.map(|res| &res[n0..]),
                        row_len: out_cols.len(),
                        n0: 0,
                        cols: out_cols.len(),
                        accumulate: epilogue.accumulate,
                        relu: epilogue.relu,
                    };
                    dispatch_tile(1, a, kh, &[panel], to, out_cols);
                }
            };
            run_blocks(&mut out[..co], cols_per_task, task);
            return;
        }
        let task = |(t, out_block): (usize, &mut [f32])| {
            let m0 = t * block;
            let block_rows = out_block.len() / co;
            // Two panels (64 columns) per tile while two remain, then one.
            let count = self.panels.len() / (2 * k);
            let mut p = 0;
            while p < count {
                let width = if p + 1 < count { 2 } else { 1 };
                let panel = |i: usize| &self.panels[i * 2 * k..(i + 1) * 2 * k];
                let pair = [panel(p), panel(p + width - 1)];
                let n0 = p * NR;
                let mut r0 = 0;
                while r0 < block_rows {
                    let tile_rows = (block_rows - r0).min(MR);
                    let offsets = self.tile_offsets(m0 + r0, tile_rows);
                    let a = |r: usize, ky: usize| &self.src[offsets[r] + ky * row_step..][..run_len];
                    let to = TileOut {
                        bias: TileBias::Columns(&self.bias[n0..n0 + width * NR]),
                        residual: residual.map(|res| &res[(m0 + r0) * co..(m0 + r0 + tile_rows) * co]),
                        row_len: co,
                        n0,
                        cols: (co - n0).min(width * NR),
                        accumulate: epilogue.accumulate,
                        relu: epilogue.relu,
                    };
                    dispatch_tile(tile_rows, a, kh, &pair[..width], to, &mut out_block[r0 * co..(r0 + tile_rows) * co]);
                    r0 += tile_rows;
                }
                p += width;
            }
        };
        run_blocks(out, block * co, task);
    }
}
