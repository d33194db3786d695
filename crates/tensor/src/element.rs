//! The element types activations are stored in: f32, or bf16 (half the bytes moved).

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
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// The name the CLI and the reports use.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Consecutive reduction (K) values one 32-bit slot of a packed weight panel holds: 1
    /// in f32, a pair in bf16 (what `vdpbf16ps` multiplies per lane).
    pub const fn k_group(self) -> usize {
        match self {
            Precision::F32 => 1,
            Precision::Bf16 => 2,
        }
    }

    /// Bytes of one element.
    pub const fn element_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
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
            .ok_or_else(|| crate::Error::invalid(format!("unknown precision {s:?} (expected f32 or bf16)")))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
}

/// An activation element: `f32` or [`bf16`]. Sealed: the kernels know exactly these two.
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

/// `v` rounded to bf16 and back: what a bf16 kernel sees of an f32 input or weight.
pub fn round_bf16(v: f32) -> f32 {
    bf16::from_f32(v).to_f32()
}
