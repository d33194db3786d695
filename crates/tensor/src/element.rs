//! The element types activations are stored in: f32, bf16 (half the bytes moved), or u8
//! (quantized, a quarter of them).

use std::fmt::Debug;

pub use half::bf16;

/// The precision a convolution or a model computes in: the value of an [`Element`] type.
/// Exhaustive on purpose: code that acts on a precision matches every one, so a new
/// element type is a compile error wherever it needs a decision, not a silent fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum Precision {
    /// f32 weights and activations (within 1e-5 of float64 on ResNet-50).
    #[default]
    F32,
    /// bf16 weights and activations, f32 accumulation and epilogue, outputs rounded to
    /// bf16 (to nearest, ties to even) when stored: native on AVX512-BF16, emulated with
    /// f32 FMAs elsewhere.
    Bf16,
    /// u8 activations (asymmetric: a scale and a zero point per tensor) by s8 weights
    /// (symmetric: a scale per output channel), exact s32 accumulation, then an f32
    /// requantization epilogue whose every step is one IEEE operation, so that every
    /// kernel family gives bitwise the same result.
    Int8,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    /// The name the CLI and the reports use.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// Consecutive reduction (K) values one 32-bit slot of a packed weight panel holds: 1
    /// in f32, a pair in bf16 (what `vdpbf16ps` multiplies per lane), four in int8 (what
    /// `vpdpbusd` multiplies and adds per lane).
    pub const fn k_group(self) -> usize {
        match self {
            Precision::F32 => 1,
            Precision::Bf16 => 2,
            Precision::Int8 => 4,
        }
    }

    /// Bytes of one element.
    pub const fn element_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
            Precision::Int8 => 1,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Precision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| crate::Error::invalid(format!("unknown precision {s:?} (expected f32, bf16 or int8)")))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for u8 {}
}

/// An activation element: `f32`, [`bf16`], or `u8` (a quantized value, read with its
/// tensor's [`crate::Quant`]). Sealed: the kernels know exactly these three.
pub trait Element: bytemuck::Pod + Default + Debug + Send + Sync + PartialEq + sealed::Sealed + 'static {
    /// The precision this element stores.
    const PRECISION: Precision;
    /// `v` rounded to this type (to nearest, ties to even; NaN stays NaN).
    fn from_f32(v: f32) -> Self;
    /// The value as f32 (exact).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const PRECISION: Precision = Precision::F32;
    #[inline(always)]
    fn from_f32(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for bf16 {
    const PRECISION: Precision = Precision::Bf16;
    #[inline(always)]
    fn from_f32(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// A quantized activation: `from_f32` and `to_f32` work in the quantized domain (the
/// integer grid); [`crate::Quant`] maps it to and from real values.
impl Element for u8 {
    const PRECISION: Precision = Precision::Int8;
    /// `v` rounded to the nearest integer (ties to even) and saturated to 0..=255; NaN is 0.
    #[inline(always)]
    fn from_f32(v: f32) -> u8 {
        // The order of the kernels' vector code: max with 0 first (NaN gives 0), then min.
        let clamped = if v > 0.0 { v } else { 0.0 };
        let clamped = if clamped < 255.0 { clamped } else { 255.0 };
        // Rounded to nearest even by adding and subtracting 2^23 (exact for 0..=2^23, and
        // the default rounding mode is the only one Rust runs in): `round_ties_even` is a
        // libm call (`rintf`) on x86-64 without SSE4.1, 0.4 ms of an int8 ResNet-50's
        // input quantization.
        const ROUND: f32 = 8_388_608.0;
        ((clamped + ROUND) - ROUND) as u8
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

/// `v` rounded to bf16 and back: what a bf16 kernel sees of an f32 input or weight.
pub fn round_bf16(v: f32) -> f32 {
    bf16::from_f32(v).to_f32()
}

#[cfg(test)]
mod tests {
    use super::Element;

    /// Every f32 from -1 to 257 in steps of 2^-12 (every tie of the grid among them), the
    /// neighbours of each tie, NaN and the infinities: the same u8 as clamping and
    /// `round_ties_even`.
    #[test]
    fn u8_rounding_is_clamp_then_round_ties_even() {
        let want = |v: f32| if v > 0.0 { v.min(255.0).round_ties_even() as u8 } else { 0 };
        let mut values: Vec<f32> = (-4096..=257 * 4096).map(|i| i as f32 / 4096.0).collect();
        for k in 0..=256 {
            let tie = k as f32 + 0.5;
            values.extend([tie.next_down(), tie, tie.next_up()]);
        }
        values.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MAX, f32::MIN_POSITIVE]);
        for v in values {
            let expected = if v.is_nan() { 0 } else { want(v) };
            assert_eq!(u8::from_f32(v), expected, "{v}");
        }
    }
}
