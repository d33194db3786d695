//! Weights packed once into the panels a kernel's tiles read, with their bias.

use crate::Kernel;
use convkit_tensor::{bf16, checked_product, AlignedVec, Error, FilterShape, Precision, Result, WEIGHT_MAX};

/// The right operand of the tile walk, a K x N matrix packed for one [`Kernel`]: panel p
/// holds, for each group of k, columns `p * nr .. p * nr + nr` (zeros past N), so a tile
/// reads each panel front to back. The bias (zeros if none) is padded to whole panels and
/// travels with the panels.
///
/// Each 32-bit slot of a panel holds [`Kernel::k_group`] consecutive k of one column: one
/// f32, or in bf16 two bf16 values (k even in the low half), the groups formed within each
/// of the `segments` runs the left operand's rows are read in, a run whose length is not a
/// whole number of groups padded with zeros: what the kernel's dot product takes. In int8
/// a slot holds four s8 weights (k ascending from the low byte), and the panels carry
/// two more per-column vectors (see [`PackedWeights::new_int8`]).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    kernel: Kernel,
    k: usize,
    n: usize,
    segments: usize,
    panels: AlignedVec,
    bias: AlignedVec,
    int8: Option<Int8Columns<AlignedVec>>,
}

/// What an int8 GEMM's epilogue reads per column, padded to whole panels: the scale of
/// the column's s32 sum (input scale times the column's weight scale) and the s32 (kept
/// as its bits in an f32 slot) added to the sum first, `-input_zero_point * sum_k w[k, n]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int8Columns<V> {
    pub(crate) scale: V,
    pub(crate) offset: V,
}

/// The longest int8 reduction whose s32 sum cannot wrap: |u8 - z| * |s8| <= 255 * 127 per
/// term.
const MAX_INT8_K: usize = (i32::MAX / (255 * 127)) as usize;

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
        // The values are whole numbers in -127..=127 (`new_int8` checks them).
        Precision::Int8 => f32::from_bits(u32::from_le_bytes(std::array::from_fn(|i| value(i) as i8 as u8))),
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
        if kernel.precision() == Precision::Int8 {
            return Err(Error::invalid(format!(
                "{kernel} panels hold quantized weights: pack them with PackedWeights::new_int8"
            )));
        }
        Self::pack(kernel, k, n, segments, entry, bias)
    }

    /// Packs without the int8 check.
    fn pack(
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
        Ok(PackedWeights { kernel, k, n, segments, panels, bias: padded, int8: None })
    }

    /// Packs the K x N matrix of s8 weights `weights(k, n)` (in -127..=127) for an int8
    /// `kernel`, rows read in `segments` runs as in [`PackedWeights::new`], with what the
    /// epilogue needs per column: `column_scale[n]` (the input's scale times column n's
    /// weight scale: the real value of one unit of the s32 sum), the input's
    /// `input_zero_point` (its share, `-zero_point * sum_k w[k, n]`, is added to the s32
    /// sum exactly), and the f32 bias. Errors name the weight, the length or the zero
    /// point that is wrong.
    #[allow(clippy::too_many_arguments)]
    pub fn new_int8(
        kernel: Kernel,
        k: usize,
        n: usize,
        segments: usize,
        weights: impl Fn(usize, usize) -> i8,
        column_scale: &[f32],
        input_zero_point: i32,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        if kernel.precision() != Precision::Int8 {
            return Err(Error::mismatch(
                "precision of the kernel int8 weights are packed for",
                "int8",
                kernel.precision(),
            ));
        }
        convkit_tensor::check_channels("int8 column scales", n, column_scale.len())?;
        if let Some(c) = column_scale.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(format!(
                "int8 column {c} has scale {}, not a finite positive number",
                column_scale[c]
            )));
        }
        if !(0..=255).contains(&input_zero_point) {
            return Err(Error::invalid(format!("u8 input zero point {input_zero_point} is outside 0..=255")));
        }
        check_sizes(k, n, segments)?;
        if k > MAX_INT8_K {
            return Err(Error::invalid(format!(
                "an int8 reduction of K = {k} can leave s32 (255 * 127 * K): at most {MAX_INT8_K}"
            )));
        }
        let mut offsets = vec![0i64; n];
        for (col, offset) in offsets.iter_mut().enumerate() {
            let mut sum = 0i64;
            for kk in 0..k {
                let w = weights(kk, col);
                if i32::from(w).abs() > WEIGHT_MAX {
                    return Err(Error::invalid(format!("int8 weight ({kk}, {col}) is {w}, outside -127..=127")));
                }
                sum += i64::from(w);
            }
            *offset = -i64::from(input_zero_point) * sum;
        }
        let mut packed = Self::pack(kernel, k, n, segments, |kk, col| f32::from(weights(kk, col)), bias)?;
        let padded = packed.bias.len();
        let (mut scale, mut offset) = (AlignedVec::zeros(padded), AlignedVec::zeros(padded));
        scale[..n].copy_from_slice(column_scale);
        for (slot, &o) in offset.iter_mut().zip(&offsets) {
            // |offset| <= 255 * 127 * K: an s32 for any K below 66 000.
            let o = i32::try_from(o).map_err(|_| Error::overflow(format!("int8 zero-point offset {o} of K = {k}")))?;
            *slot = f32::from_bits(o as u32);
        }
        packed.int8 = Some(Int8Columns { scale, offset });
        Ok(packed)
    }

    /// Packs quantized OIHW conv weights `[co][ci][kh][kw]` for an int8 `kernel`, as
    /// [`PackedWeights::from_oihw`] lays out f32 ones, with the columns' scales, the
    /// input zero point and the bias of [`PackedWeights::new_int8`].
    pub fn from_oihw_int8(
        kernel: Kernel,
        weights: &[i8],
        filter: FilterShape,
        column_scale: &[f32],
        input_zero_point: i32,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        let per_out = checked_product("int8 filter reduction", &[filter.ci, filter.kh, filter.kw])?;
        let len = checked_product("int8 weights", &[filter.co, per_out])?;
        if weights.len() != len {
            return Err(Error::mismatch(format!("int8 weights of a {filter} filter"), len, weights.len()));
        }
        let (ci, kh, kw) = (filter.ci, filter.kh, filter.kw);
        let entry = |k: usize, o: usize| {
            let (ky, kx, c) = (k / (kw * ci), k / ci % kw, k % ci);
            weights[o * per_out + (c * kh + ky) * kw + kx]
        };
        Self::new_int8(kernel, per_out, filter.co, kh, entry, column_scale, input_zero_point, bias)
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

    /// Bytes of the packed panels, bias and (int8) column scales and offsets.
    pub fn bytes(&self) -> usize {
        4 * (self.panels.len() + self.bias.len() + self.int8.as_ref().map_or(0, |c| 2 * c.scale.len()))
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
            int8: self.int8.as_ref().map(|c| Int8Columns { scale: &c.scale[..], offset: &c.offset[..] }),
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
    /// Int8 panels: their columns' scales and zero-point offsets.
    pub(crate) int8: Option<Int8Columns<&'a [f32]>>,
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
        if kernel.precision() == Precision::Int8 {
            return Err(Error::invalid(format!("{kernel} panels are packed once, with their scales, not per call")));
        }
        check_sizes(k, n, 1)?;
        let len = Self::packed_len(kernel, k, n)?;
        if dst.len() < len {
            return Err(Error::mismatch("packed panel scratch", format!("at least {len} floats"), dst.len()));
        }
        let dst = &mut dst[..len];
        fill_panels(kernel, k, n, 1, entry, dst);
        Ok(Panels { kernel, k, n, segments: 1, data: dst, bias: None, int8: None })
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
