//! The portable family: 128-bit vectors on every target (SSE2 on x86-64, NEON on
//! aarch64, scalar elsewhere), on the `wide` crate, tiles of 4 rows x 8 columns. Always
//! available.

use crate::family::{FamilyDecl, SimdOp, TileShape};
use crate::{CpuFeatures, Family, Simd};
use convkit_tensor::{bf16, Precision};

/// The portable family: 128-bit vectors on every target (SSE2 on x86-64, NEON on
/// aarch64, scalar elsewhere), on the `wide` crate. Always available.
#[derive(Debug, Clone, Copy)]
pub struct Portable {
    _sealed: (),
}

/// The vector of [`Portable`]: four f32 lanes. Opaque, so that the crate it is built on
/// stays out of convkit's public API.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub struct PortableF32(wide::f32x4);

impl PortableF32 {
    #[inline(always)]
    fn lanes(self) -> [f32; 4] {
        self.0.to_array()
    }
    #[inline(always)]
    fn of(lanes: [f32; 4]) -> Self {
        PortableF32(wide::f32x4::new(lanes))
    }
    /// The lanes' bits (the integer kernels keep s32 values in them).
    #[inline(always)]
    fn words(self) -> [u32; 4] {
        self.lanes().map(f32::to_bits)
    }
    #[inline(always)]
    fn of_words(words: [u32; 4]) -> Self {
        PortableF32::of(words.map(f32::from_bits))
    }
}

impl crate::simd::sealed::Sealed for Portable {}

impl Simd for Portable {
    type F32 = PortableF32;
    const LANES: usize = 4;
    const FAMILY: Family = Family::Portable;

    #[inline(always)]
    fn splat(self, v: f32) -> Self::F32 {
        PortableF32(wide::f32x4::splat(v))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> Self::F32 {
        PortableF32::of(s[..4].try_into().expect("slice of 4"))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: Self::F32) {
        s[..4].copy_from_slice(v.0.as_array());
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32]) -> Self::F32 {
        let mut a = [0.0f32; 4];
        a[..s.len()].copy_from_slice(s);
        PortableF32::of(a)
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: Self::F32) {
        let n = s.len();
        s.copy_from_slice(&v.0.as_array()[..n]);
    }
    #[inline(always)]
    fn add(self, a: Self::F32, b: Self::F32) -> Self::F32 {
        PortableF32(a.0 + b.0)
    }
    #[inline(always)]
    fn sub(self, a: Self::F32, b: Self::F32) -> Self::F32 {
        PortableF32(a.0 - b.0)
    }
    #[inline(always)]
    fn mul(self, a: Self::F32, b: Self::F32) -> Self::F32 {
        PortableF32(a.0 * b.0)
    }
    #[inline(always)]
    fn mul_add(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32 {
        PortableF32(a.0.mul_add(b.0, c.0))
    }
    /// `f32::mul_add` lane by lane: `wide`'s `mul_add` rounds twice where the target has
    /// no FMA.
    #[inline(always)]
    fn mul_add_fused(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32 {
        let (a, b, c) = (a.lanes(), b.lanes(), c.lanes());
        PortableF32::of([0, 1, 2, 3].map(|i| a[i].mul_add(b[i], c[i])))
    }
    #[inline(always)]
    fn max(self, a: Self::F32, b: Self::F32) -> Self::F32 {
        // a > b ? a : b, as x86's maxps: b where either lane is NaN.
        let (a, b) = (a.lanes(), b.lanes());
        PortableF32::of(std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] }))
    }
    #[inline(always)]
    fn max_keep_nan(self, a: Self::F32, b: Self::F32) -> Self::F32 {
        let (x, y) = (a.lanes(), b.lanes());
        PortableF32::of(std::array::from_fn(|i| if x[i].is_nan() || x[i] > y[i] { x[i] } else { y[i] }))
    }
    #[inline(always)]
    fn min(self, a: Self::F32, b: Self::F32) -> Self::F32 {
        // a < b ? a : b, as x86's minps: b where either lane is NaN.
        let (a, b) = (a.lanes(), b.lanes());
        PortableF32::of(std::array::from_fn(|i| if a[i] < b[i] { a[i] } else { b[i] }))
    }
    #[inline(always)]
    fn dot_u8s8(self, acc: Self::F32, a: Self::F32, b: Self::F32) -> Self::F32 {
        let (acc, a, b) = (acc.words(), a.words(), b.words());
        PortableF32::of_words(std::array::from_fn(|i| {
            let (x, w) = (a[i].to_le_bytes(), b[i].to_le_bytes());
            let dot: i32 = x.iter().zip(w).map(|(&x, w)| i32::from(x) * i32::from(w as i8)).sum();
            (acc[i] as i32).wrapping_add(dot) as u32
        }))
    }
    #[inline(always)]
    fn add_i32(self, a: Self::F32, b: Self::F32) -> Self::F32 {
        let (a, b) = (a.words(), b.words());
        PortableF32::of_words(std::array::from_fn(|i| a[i].wrapping_add(b[i])))
    }
    #[inline(always)]
    fn i32_to_f32(self, v: Self::F32) -> Self::F32 {
        PortableF32::of(v.words().map(|w| w as i32 as f32))
    }
    #[inline(always)]
    fn load_u8(self, s: &[u8]) -> Self::F32 {
        let s = &s[..4];
        PortableF32::of(std::array::from_fn(|i| f32::from(s[i])))
    }
    #[inline(always)]
    fn store_u8(self, s: &mut [u8], v: Self::F32) {
        s[..4].iter_mut().zip(v.lanes()).for_each(|(d, v)| *d = v.round_ties_even() as u8);
    }
    #[inline(always)]
    fn bf16_halves(self, pairs: Self::F32) -> (Self::F32, Self::F32) {
        let bits = pairs.lanes().map(f32::to_bits);
        (
            PortableF32::of(bits.map(|b| f32::from_bits(b << 16))),
            PortableF32::of(bits.map(|b| f32::from_bits(b & 0xffff_0000))),
        )
    }
    #[inline(always)]
    fn load_bf16(self, s: &[bf16]) -> Self::F32 {
        let s = &s[..4];
        PortableF32::of(std::array::from_fn(|i| s[i].to_f32()))
    }
    #[inline(always)]
    fn store_bf16(self, s: &mut [bf16], v: Self::F32) {
        s[..4].iter_mut().zip(v.lanes()).for_each(|(d, v)| *d = bf16::from_f32(v));
    }
}

impl Portable {
    /// The token: the portable family needs nothing of the CPU.
    pub(crate) const TOKEN: Portable = Portable { _sealed: () };
}

impl FamilyDecl for Portable {
    const NAME: &'static str = "portable";
    const REQUIRES: CpuFeatures = CpuFeatures::NONE;
    const TILE: TileShape = TileShape { mr: 4, nr: 8, max_panels: 1 };
    const PRECISIONS: &'static [Precision] = &[Precision::F32, Precision::Bf16, Precision::Int8];

    fn try_new() -> Option<Self> {
        Some(Portable::TOKEN)
    }

    #[inline]
    fn enter<Op: SimdOp>(self, op: Op) -> Op::Output {
        op.run(self)
    }
}
