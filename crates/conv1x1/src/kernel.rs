//! The register-blocked microkernel: an MR x 32 tile of f32 accumulators (MR rows of two
//! 16-lane vectors) over the whole reduction, then the epilogue on the tile in registers.

use convkit_tensor::simd::{f32x16, load16, load_partial, store16, store_partial, LANES};

/// Rows of the full tile. 6 x 32 keeps 12 accumulators, 2 weight vectors and a broadcast
/// in registers (32 zmm), enough independent FMAs to cover their latency on two ports.
pub const MR: usize = 6;
/// Columns of a tile (two 16-lane vectors).
pub const NR: usize = 2 * LANES;

pub type Tile<const R: usize> = [[f32x16; 2]; R];

/// acc[r] += sum_k a_rows[r][k] * panel[k] over k < `panel.len() / 2`.
///
/// `panel` holds packed weights of one 32-column panel: for each k, two vectors. Every
/// `a_rows[r]` must hold at least that many values (they are re-sliced to that length once,
/// outside the loop, so the loop carries no bounds checks after optimisation). A KxK conv
/// calls this once per kernel row with the accumulators still in registers.
#[inline(always)]
pub fn accumulate<const R: usize>(acc: &mut Tile<R>, a_rows: &[&[f32]; R], panel: &[f32x16]) {
    let k = panel.len() / 2;
    let rows: [&[f32]; R] = std::array::from_fn(|r| &a_rows[r][..k]);
    for (kk, b) in panel.chunks_exact(2).enumerate() {
        let (b0, b1) = (b[0], b[1]);
        for r in 0..R {
            let a = f32x16::splat(rows[r][kk]);
            acc[r][0] = a.mul_add(b0, acc[r][0]);
            acc[r][1] = a.mul_add(b1, acc[r][1]);
        }
    }
}

/// Where the bias of a tile comes from.
#[derive(Debug, Clone, Copy)]
pub enum TileBias<'a> {
    /// One value per column (NHWC: columns are output channels): 32 values.
    Columns(&'a [f32]),
    /// One value per row (NCHW: rows are output channels): R values.
    Rows(&'a [f32]),
}

/// Adds bias, residual and (`accumulate`) the prior output, applies ReLU and stores the first `cols` columns of each row
/// of the tile. `out[r]` and `residual[r]` are the destination rows (at least `cols` long).
#[inline(always)]
pub fn store_tile<const R: usize>(
    acc: &Tile<R>,
    bias: TileBias<'_>,
    residual: Option<&[&[f32]; R]>,
    accumulate: bool,
    relu: bool,
    out: &mut [&mut [f32]; R],
    cols: usize,
) {
    let zero = f32x16::ZERO;
    for r in 0..R {
        for (half, &v) in acc[r].iter().enumerate() {
            let lo = half * LANES;
            if lo >= cols {
                break;
            }
            let n = (cols - lo).min(LANES);
            let mut v = v + match bias {
                TileBias::Columns(b) => load16(&b[lo..]),
                TileBias::Rows(b) => f32x16::splat(b[r]),
            };
            if let Some(res) = residual {
                v += if n == LANES { load16(&res[r][lo..]) } else { load_partial(&res[r][lo..lo + n]) };
            }
            if accumulate {
                v += if n == LANES { load16(&out[r][lo..]) } else { load_partial(&out[r][lo..lo + n]) };
            }
            if relu {
                v = v.max(zero);
            }
            if n == LANES {
                store16(&mut out[r][lo..], v);
            } else {
                store_partial(&mut out[r][lo..lo + n], v);
            }
        }
    }
}
