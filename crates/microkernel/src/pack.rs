//! Weights packed once into the panels a family's tile kernel reads, with their bias.

use crate::Isa;
use convkit_tensor::{bf16, checked_product, AlignedVec, Error, FilterShape, Precision, Result};

/// The right operand of the tile walk, a K x N matrix packed for one kernel family:
/// panel p holds, for each k, columns `p * nr .. p * nr + nr` (zeros past N), so a tile
/// reads each panel front to back. The bias (zeros if none) is padded to whole panels
/// and travels with the panels.
///
/// In bf16 ([`PackedWeights::new_bf16`]) each 32-bit slot of a panel holds the bf16
/// values of two consecutive k (k even in the low half) of one column, the pairs formed
/// within each of the `segments` runs the left operand's rows are read in, a run of odd
/// length padded with a zero: what the bf16 dot product takes.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    isa: Isa,
    precision: Precision,
    k: usize,
    n: usize,
    segments: usize,
    panels: AlignedVec,
    bias: AlignedVec,
}

/// The rows of one panel: K in f32; in bf16, one per pair of each segment.
fn panel_rows(precision: Precision, k: usize, segments: usize) -> usize {
    match precision {
        Precision::F32 => k,
        _ => segments * (k / segments).div_ceil(2),
    }
}

/// The two bf16 values `lo` (even k) and `hi` (odd k) in one 32-bit slot, as the f32
/// panels store it.
fn bf16_pair(lo: f32, hi: f32) -> f32 {
    let bits = |v: f32| u32::from(bf16::from_f32(v).to_bits());
    f32::from_bits(bits(lo) | bits(hi) << 16)
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
        Self::pack(isa, Precision::F32, k, n, 1, entry, bias)
    }

    /// Packs the K x N matrix `entry` for `isa` in bf16 (each entry rounded to nearest
    /// bf16), for a left operand whose rows are `segments` runs of K / segments values.
    /// The bias stays f32.
    pub fn new_bf16(
        isa: Isa,
        k: usize,
        n: usize,
        segments: usize,
        entry: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        Self::pack(isa, Precision::Bf16, k, n, segments, entry, bias)
    }

    fn pack(
        isa: Isa,
        precision: Precision,
        k: usize,
        n: usize,
        segments: usize,
        entry: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        isa.check_available()?;
        if k == 0 || n == 0 {
            return Err(Error::invalid(format!("packed weights need K and N of at least 1, got K = {k}, N = {n}")));
        }
        if segments == 0 || !k.is_multiple_of(segments) {
            return Err(Error::invalid(format!("K = {k} is not a whole number of {segments} row segments")));
        }
        if let Some(b) = bias {
            convkit_tensor::check_channels("bias", n, b.len())?;
        }
        let nr = isa.tile().nr;
        let panel_count = n.div_ceil(nr);
        let rows = panel_rows(precision, k, segments);
        let mut panels = AlignedVec::try_zeros(checked_product("packed weights", &[panel_count, rows, nr])?)?;
        let seg_len = k / segments;
        let seg_pairs = seg_len.div_ceil(2);
        for (p, panel) in panels.chunks_exact_mut(rows * nr).enumerate() {
            for (row, slots) in panel.chunks_exact_mut(nr).enumerate() {
                for (j, v) in slots.iter_mut().enumerate().take(n.saturating_sub(p * nr)) {
                    let col = p * nr + j;
                    *v = match precision {
                        Precision::F32 => entry(row, col),
                        _ => {
                            let (seg, pair) = (row / seg_pairs, row % seg_pairs);
                            let kk = seg * seg_len + 2 * pair;
                            let hi = if 2 * pair + 1 < seg_len { entry(kk + 1, col) } else { 0.0 };
                            bf16_pair(entry(kk, col), hi)
                        }
                    };
                }
            }
        }
        let mut padded = AlignedVec::zeros(panel_count * nr);
        if let Some(b) = bias {
            padded[..n].copy_from_slice(b);
        }
        Ok(PackedWeights { isa, precision, k, n, segments, panels, bias: padded })
    }

    /// Packs OIHW conv weights `[co][ci][kh][kw]` as the K x N matrix of reduction index
    /// (ky, kx, ci) by output channel: what an NHWC conv reads (kh runs of kw*ci values),
    /// in `precision`.
    pub fn from_oihw(
        isa: Isa,
        precision: Precision,
        weights: &[f32],
        filter: FilterShape,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        filter.check(weights, bias)?;
        let (ci, kh, kw) = (filter.ci, filter.kh, filter.kw);
        let per_out = filter.reduction_len();
        let entry = |k: usize, o: usize| {
            let (ky, kx, c) = (k / (kw * ci), k / ci % kw, k % ci);
            weights[o * per_out + (c * kh + ky) * kw + kx]
        };
        Self::pack(isa, precision, per_out, filter.co, kh, entry, bias)
    }

    /// The precision of the panels.
    pub fn precision(&self) -> Precision {
        self.precision
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
        Panels {
            isa: self.isa,
            precision: self.precision,
            k: self.k,
            n: self.n,
            segments: self.segments,
            data: &self.panels,
            bias: Some(&self.bias),
        }
    }
}

/// Packed panels as the tile walk reads them: owned by [`PackedWeights`], or packed per
/// call into scratch (an NCHW input, see [`Panels::pack_into`]).
#[derive(Debug, Clone, Copy)]
pub struct Panels<'a> {
    pub(crate) isa: Isa,
    pub(crate) precision: Precision,
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// Runs of the left operand's rows the bf16 pairs were formed in (1 for f32).
    pub(crate) segments: usize,
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
        Ok(Panels { isa, precision: Precision::F32, k, n, segments: 1, data: dst, bias: None })
    }

    /// These panels without their column bias.
    pub fn without_bias(self) -> Self {
        Panels { bias: None, ..self }
    }

    /// Number of panels.
    pub(crate) fn count(&self) -> usize {
        self.n.div_ceil(self.isa.tile().nr)
    }

    /// Floats (32-bit slots) of one panel.
    pub(crate) fn panel_len(&self) -> usize {
        panel_rows(self.precision, self.k, self.segments) * self.isa.tile().nr
    }

    /// The precision of the panels.
    pub fn precision(&self) -> Precision {
        self.precision
    }
}
