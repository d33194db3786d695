//! The register-blocked microkernel: an MR x 32 or MR x 64 tile of f32 accumulators (MR
//! rows of V = 2 or 4 16-lane vectors, over one or two adjacent 32-column weight panels)
//! over the whole reduction, then the epilogue on the tile in registers.

use convkit_tensor::simd::{f32x16, load16, load_partial, store16, store_partial, LANES};

/// Rows of the full tile. 6 x 32 keeps 12 accumulators, 2 weight vectors and a broadcast
/// in registers (32 zmm), enough independent FMAs to cover their latency on two ports.
pub const MR: usize = 6;
/// Columns of a weight panel (two 16-lane vectors).
pub const NR: usize = 2 * LANES;

/// R rows of V vectors: V = 2 covers one panel, V = 4 two adjacent panels. 6 x 64 keeps
/// 24 accumulators, 4 weight vectors and a broadcast in registers, and loads one
/// broadcast per 4 FMAs instead of per 2: on short reductions (K = 64, 128) that measured
/// faster than 6 x 32 (docs/results.md).
pub type Tile<const R: usize, const V: usize> = [[f32x16; V]; R];

/// acc[r][2j + h] += sum_k a_rows[r][k] * panels[j][2k + h] over k < `panels[0].len() / 2`,
/// for the first V / 2 panels (V = 2: panels[0] only).
///
/// Each panel holds packed weights of one 32-column panel: for each k, two vectors. Every
/// `a_rows[r]` must hold at least that many values (they are re-sliced to that length once,
/// outside the loop, so the loop carries no bounds checks after optimisation). A KxK conv
/// calls this once per kernel row with the accumulators still in registers.
#[inline(always)]
pub fn accumulate<const R: usize, const V: usize>(acc: &mut Tile<R, V>, a_rows: &[&[f32]; R], panels: [&[f32x16]; 2]) {
    let k = panels[0].len() / 2;
    let rows: [&[f32]; R] = std::array::from_fn(|r| &a_rows[r][..k]);
    let (p0, p1) = (&panels[0][..2 * k], &panels[V / 2 - 1][..2 * k]);
    for (kk, (b0, b1)) in p0.chunks_exact(2).zip(p1.chunks_exact(2)).enumerate() {
        let b: [f32x16; V] = std::array::from_fn(|j| if j < 2 { b0[j] } else { b1[j - 2] });
        for r in 0..R {
            let a = f32x16::splat(rows[r][kk]);
            for j in 0..V {
                acc[r][j] = a.mul_add(b[j], acc[r][j]);
            }
        }
    }
}

/// Where the bias of a tile comes from.
#[derive(Debug, Clone, Copy)]
pub enum TileBias<'a> {
    /// One value per column (NHWC: columns are output channels): 16 V values.
    Columns(&'a [f32]),
    /// One value per row (NCHW: rows are output channels): R values.
    Rows(&'a [f32]),
}

/// Adds bias, residual and (`accumulate`) the prior output, applies ReLU and stores the first `cols` columns of each row
/// of the tile. `out[r]` and `residual[r]` are the destination rows (at least `cols` long).
#[inline(always)]
pub fn store_tile<const R: usize, const V: usize>(
    acc: &Tile<R, V>,
    bias: TileBias<'_>,
    residual: Option<&[&[f32]; R]>,
    accumulate: bool,
    relu: bool,
    out: &mut [&mut [f32]; R],
    cols: usize,
) {
    let zero = f32x16::ZERO;
    if cols == V * LANES {
        // Full tile: straight-line code the compiler unrolls, with the accumulators kept in
        // registers and the column bias loaded once.
        let column_bias: [f32x16; V] = match bias {
            TileBias::Columns(b) => std::array::from_fn(|j| load16(&b[j * LANES..])),
            TileBias::Rows(_) => [zero; V],
        };
        for r in 0..R {
            let row_bias = match bias {
                TileBias::Columns(_) => zero,
                TileBias::Rows(b) => f32x16::splat(b[r]),
            };
            let dst = &mut out[r][..V * LANES];
            for j in 0..V {
                let mut v = acc[r][j] + column_bias[j] + row_bias;
                if let Some(res) = residual {
                    v += load16(&res[r][j * LANES..]);
                }
                if accumulate {
                    v += load16(&dst[j * LANES..]);
                }
                if relu {
                    v = v.max(zero);
                }
                store16(&mut dst[j * LANES..], v);
            }
        }
        return;
    }
    for r in 0..R {
        for (j, &v) in acc[r].iter().enumerate() {
            let lo = j * LANES;
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
