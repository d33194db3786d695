//! Weights packed once into the panels a kernel's tiles read, with their bias.

use crate::Kernel;
use convkit_tensor::{bf16, checked_product, AlignedVec, Error, FilterShape, Precision, Result};

/// The right operand of the tile walk, a K x N matrix packed for one [`Kernel`]: panel p
/// holds, for each group of k, columns `p * nr .. p * nr + nr` (zeros past N), so a tile
/// reads each panel front to back. The bias (zeros if none) is padded to whole panels and
/// travels with the panels.
///
/// Each 32-bit slot of a panel holds [`Kernel::k_group`] consecutive k of one column: one
/// f32, or in bf16 two bf16 values (k even in the low half), the groups formed within each
/// of the `segments` runs the left operand's rows are read in, a run whose length is not a
/// whole number of groups padded with zeros: what the kernel's dot product takes.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    kernel: Kernel,
    k: usize,
    n: usize,
    segments: usize,
    panels: AlignedVec,
    bias: AlignedVec,
}

/// The rows of one panel: one per group of k of each segment.
fn panel_rows(kernel: Kernel, k: usize, segments: usize) -> usize {
    segments * (k / segments).div_ceil(kernel.k_group())
}

/// The 32-bit slot of `kernel`'s panels that holds the group of k values `value(0..group)`.
fn slot(precision: Precision, value: impl Fn(usize) -> f32) -> f32 {
    match precision {
        Precision::F32 => value(0),
        Precision::Bf16 => {
            let bits = |v: f32| u32::from(bf16::from_f32(v).to_bits());
            f32::from_bits(bits(value(0)) | bits(value(1)) << 16)
        }
    }
}

/// Fills `dst` (whole panels of `kernel`) with the K x N matrix `entry`, grouped within
/// each of `segments` runs of K.
fn fill_panels(
    kernel: Kernel,
    k: usize,
    n: usize,
    segments: usize,
    entry: impl Fn(usize, usize) -> f32,
    dst: &mut [f32],
) {
    let (nr, group) = (kernel.tile().nr, kernel.k_group());
    let rows = panel_rows(kernel, k, segments);
    let seg_len = k / segments;
    let seg_groups = seg_len.div_ceil(group);
    for (p, panel) in dst.chunks_exact_mut(rows * nr).enumerate() {
        for (row, slots) in panel.chunks_exact_mut(nr).enumerate() {
            let (seg, g) = (row / seg_groups, row % seg_groups);
            for (j, v) in slots.iter_mut().enumerate() {
                let col = p * nr + j;
                *v = if col < n {
                    // The group's values past the end of its segment are zeros.
                    slot(kernel.precision(), |i| {
                        let kk = group * g + i;
                        if kk < seg_len {
                            entry(seg * seg_len + kk, col)
                        } else {
                            0.0
                        }
                    })
                } else {
                    0.0
                };
            }
        }
    }
}

/// Checks the sizes every packing relies on.
fn check_sizes(k: usize, n: usize, segments: usize) -> Result<()> {
    if k == 0 || n == 0 {
        return Err(Error::invalid(format!("packed weights need K and N of at least 1, got K = {k}, N = {n}")));
    }
    if segments == 0 || !k.is_multiple_of(segments) {
        return Err(Error::invalid(format!("K = {k} is not a whole number of {segments} row segments")));
    }
    Ok(())
}

impl PackedWeights {
    /// Packs the K x N matrix whose entry (k, n) is `entry(k, n)` for `kernel` (each entry
    /// rounded to its element type), for a left operand whose rows are `segments` runs of
    /// K / segments values (1 for a plain matrix). The bias stays f32. An error if this CPU
    /// does not run the kernel.
    pub fn new(
        kernel: Kernel,
        k: usize,
        n: usize,
        segments: usize,
        entry: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        kernel.check_available()?;
        check_sizes(k, n, segments)?;
        if let Some(b) = bias {
            convkit_tensor::check_channels("bias", n, b.len())?;
        }
        let nr = kernel.tile().nr;
        let panel_count = n.div_ceil(nr);
        let rows = panel_rows(kernel, k, segments);
        let mut panels = AlignedVec::try_zeros(checked_product("packed weights", &[panel_count, rows, nr])?)?;
        fill_panels(kernel, k, n, segments, entry, &mut panels);
        let mut padded = AlignedVec::zeros(panel_count * nr);
        if let Some(b) = bias {
            padded[..n].copy_from_slice(b);
        }
        Ok(PackedWeights { kernel, k, n, segments, panels, bias: padded })
    }

    /// Packs OIHW conv weights `[co][ci][kh][kw]` as the K x N matrix of reduction index
    /// (ky, kx, ci) by output channel: what an NHWC conv reads (kh runs of kw*ci values),
    /// for `kernel`.
    pub fn from_oihw(kernel: Kernel, weights: &[f32], filter: FilterShape, bias: Option<&[f32]>) -> Result<Self> {
        filter.check(weights, bias)?;
        let (ci, kh, kw) = (filter.ci, filter.kh, filter.kw);
        let per_out = filter.reduction_len();
        let entry = |k: usize, o: usize| {
            let (ky, kx, c) = (k / (kw * ci), k / ci % kw, k % ci);
            weights[o * per_out + (c * kh + ky) * kw + kx]
        };
        Self::new(kernel, per_out, filter.co, kh, entry, bias)
    }

    /// The kernel the panels are laid out for.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The precision of the panels.
    pub fn precision(&self) -> Precision {
        self.kernel.precision()
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
            kernel: self.kernel,
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
    pub(crate) kernel: Kernel,
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// Runs of the left operand's rows the groups of k were formed in.
    pub(crate) segments: usize,
    pub(crate) data: &'a [f32],
    /// One value per column, padded to whole panels; None: no column bias.
    pub(crate) bias: Option<&'a [f32]>,
}

impl<'a> Panels<'a> {
    /// Floats [`Panels::pack_into`] needs for a K x N matrix for `kernel`.
    pub fn packed_len(kernel: Kernel, k: usize, n: usize) -> Result<usize> {
        let nr = kernel.tile().nr;
        checked_product("packed panels", &[n.div_ceil(nr), panel_rows(kernel, k, 1), nr])
    }

    /// Packs the K x N matrix `entry` for `kernel` into the front of `dst` (at least
    /// [`Panels::packed_len`] floats), without bias.
    pub fn pack_into(
        kernel: Kernel,
        k: usize,
        n: usize,
        entry: impl Fn(usize, usize) -> f32,
        dst: &'a mut [f32],
    ) -> Result<Panels<'a>> {
        kernel.check_available()?;
        check_sizes(k, n, 1)?;
        let len = Self::packed_len(kernel, k, n)?;
        if dst.len() < len {
            return Err(Error::mismatch("packed panel scratch", format!("at least {len} floats"), dst.len()));
        }
        let dst = &mut dst[..len];
        fill_panels(kernel, k, n, 1, entry, dst);
        Ok(Panels { kernel, k, n, segments: 1, data: dst, bias: None })
    }

    /// These panels without their column bias.
    pub fn without_bias(self) -> Self {
        Panels { bias: None, ..self }
    }

    /// Number of panels.
    pub(crate) fn count(&self) -> usize {
        self.n.div_ceil(self.kernel.tile().nr)
    }

    /// Floats (32-bit slots) of one panel.
    pub(crate) fn panel_len(&self) -> usize {
        panel_rows(self.kernel, self.k, self.segments) * self.kernel.tile().nr
    }

    /// The kernel the panels are laid out for.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The precision of the panels.
    pub fn precision(&self) -> Precision {
        self.kernel.precision()
    }
}
