//! Weights packed once into the panels a family's tile kernel reads, with their bias.

use crate::Isa;
use convkit_tensor::{checked_product, AlignedVec, Error, FilterShape, Result};

/// The right operand of the tile walk, a K x N matrix packed for one kernel family:
/// panel p holds, for each k, columns `p * nr .. p * nr + nr` (zeros past N), so a tile
/// reads each panel front to back. The bias (zeros if none) is padded to whole panels
/// and travels with the panels.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    isa: Isa,
    k: usize,
    n: usize,
    panels: AlignedVec,
    bias: AlignedVec,
}

impl PackedWeights {
    /// Packs the K x N matrix whose entry (k, n) is `entry(k, n)`, for `isa`.
    pub fn new(
        isa: Isa,
        k: usize,
        n: usize,
        entry: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        isa.check_available()?;
        if k == 0 || n == 0 {
            return Err(Error::invalid(format!("packed weights need K and N of at least 1, got K = {k}, N = {n}")));
        }
        if let Some(b) = bias {
            convkit_tensor::check_channels("bias", n, b.len())?;
        }
        let nr = isa.tile().nr;
        let panel_count = n.div_ceil(nr);
        let mut panels = AlignedVec::zeros(checked_product("packed weights", &[panel_count, k, nr])?);
        for (p, panel) in panels.chunks_exact_mut(k * nr).enumerate() {
            for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                for (j, v) in row.iter_mut().enumerate().take(n.saturating_sub(p * nr)) {
                    *v = entry(kk, p * nr + j);
                }
            }
        }
        let mut padded = AlignedVec::zeros(panel_count * nr);
        if let Some(b) = bias {
            padded[..n].copy_from_slice(b);
        }
        Ok(PackedWeights { isa, k, n, panels, bias: padded })
    }

    /// Packs OIHW conv weights `[co][ci][kh][kw]` as the K x N matrix of reduction index
    /// (ky, kx, ci) by output channel: what an NHWC conv reads (kh runs of kw*ci values).
    pub fn from_oihw(isa: Isa, weights: &[f32], filter: FilterShape, bias: Option<&[f32]>) -> Result<Self> {
        filter.check(weights, bias)?;
        let (ci, kh, kw) = (filter.ci, filter.kh, filter.kw);
        let per_out = filter.reduction_len();
        Self::new(
            isa,
            per_out,
            filter.co,
            |k, o| {
                let (ky, kx, c) = (k / (kw * ci), k / ci % kw, k % ci);
                weights[o * per_out + (c * kh + ky) * kw + kx]
            },
            bias,
        )
    }

    /// The family the panels are laid out for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Rows (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (output channels).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes of the packed panels and bias.
    pub fn bytes(&self) -> usize {
        4 * (self.panels.len() + self.bias.len())
    }

    /// The borrowed panels the tile walk reads.
    pub fn panels(&self) -> Panels<'_> {
        Panels { isa: self.isa, k: self.k, n: self.n, data: &self.panels, bias: Some(&self.bias) }
    }
}

/// Packed panels as the tile walk reads them: owned by [`PackedWeights`], or packed per
/// call into scratch (an NCHW input, see [`Panels::pack_into`]).
#[derive(Debug, Clone, Copy)]
pub struct Panels<'a> {
    pub(crate) isa: Isa,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) data: &'a [f32],
    /// One value per column, padded to whole panels; None: no column bias.
    pub(crate) bias: Option<&'a [f32]>,
}

impl<'a> Panels<'a> {
    /// Floats [`Panels::pack_into`] needs for a K x N matrix on `isa`.
    pub fn packed_len(isa: Isa, k: usize, n: usize) -> Result<usize> {
        let nr = isa.tile().nr;
        checked_product("packed panels", &[n.div_ceil(nr), k, nr])
    }

    /// Packs the K x N matrix `entry` into the front of `dst` (at least
    /// [`Panels::packed_len`] floats), without bias.
    pub fn pack_into(
        isa: Isa,
        k: usize,
        n: usize,
        entry: impl Fn(usize, usize) -> f32,
        dst: &'a mut [f32],
    ) -> Result<Panels<'a>> {
        isa.check_available()?;
        let len = Self::packed_len(isa, k, n)?;
        if dst.len() < len {
            return Err(Error::mismatch("packed panel scratch", format!("at least {len} floats"), dst.len()));
        }
        let nr = isa.tile().nr;
        let dst = &mut dst[..len];
        for (p, panel) in dst.chunks_exact_mut(k * nr).enumerate() {
            for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    let col = p * nr + j;
                    *v = if col < n { entry(kk, col) } else { 0.0 };
                }
            }
        }
        Ok(Panels { isa, k, n, data: dst, bias: None })
    }

    /// These panels without their column bias.
    pub fn without_bias(self) -> Self {
        Panels { bias: None, ..self }
    }

    /// Number of panels.
    pub(crate) fn count(&self) -> usize {
        self.n.div_ceil(self.isa.tile().nr)
    }
}
