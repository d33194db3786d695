//! The AVX-512F family with AVX512-BF16: the [`Avx512`] tiles, whose bf16 dot product is
//! one `vdpbf16ps` and whose bf16 rounding is one `vcvtneps2bf16`. It declares bf16
//! kernels only: its f32 and int8 kernels would be those of [`Avx512`].

use super::avx512::Avx512;
use crate::family::{FamilyDecl, SimdOp, TileShape};
use crate::{CpuFeatures, Family, Simd};
use convkit_tensor::{bf16, Precision};
use core::arch::x86_64::*;

/// The AVX512-BF16 token: the [`Avx512`] one, with `vdpbf16ps` and `vcvtneps2bf16`.
#[derive(Debug, Clone, Copy)]
pub struct Avx512Bf16 {
    f32_ops: Avx512,
}

impl Avx512Bf16 {
    /// The token, if this CPU has AVX-512F and AVX512-BF16.
    #[inline]
    pub fn try_new() -> Option<Self> {
        let f32_ops = Avx512::try_new()?;
        CpuFeatures::detected().contains(<Avx512Bf16 as FamilyDecl>::REQUIRES).then_some(Avx512Bf16 { f32_ops })
    }
}

impl crate::simd::sealed::Sealed for Avx512Bf16 {}

impl Simd for Avx512Bf16 {
    type F32 = __m512;
    const LANES: usize = 16;
    const FAMILY: Family = Family::Avx512Bf16;

    forward_simd!(f32_ops: splat, load, store, load_partial, store_partial, add, sub, mul, mul_add, max,
        max_keep_nan, min, bf16_halves, load_bf16, dot_u8s8, add_i32, i32_to_f32, load_u8, store_u8);

    #[inline(always)]
    fn dot_bf16(self, acc: __m512, a: __m512, b: __m512) -> __m512 {
        // SAFETY: an Avx512Bf16 token exists only if `Avx512Bf16::try_new` saw avx512f
        // and avx512bf16 on this CPU. The transmutes reinterpret 64-byte vectors as
        // 64-byte vectors of bf16 pairs: every bit pattern is valid for both.
        unsafe {
            _mm512_dpbf16_ps(
                acc,
                std::mem::transmute::<__m512, __m512bh>(a),
                std::mem::transmute::<__m512, __m512bh>(b),
            )
        }
    }
    /// One `vcvtneps2bf16`: rounds to nearest even, and takes f32 subnormals as zero.
    #[inline(always)]
    fn store_bf16(self, s: &mut [bf16], v: __m512) {
        let s = &mut s[..16];
        // SAFETY: the token proves avx512bf16 (see `dot_bf16`); `s` holds the 16 values
        // (32 bytes) written; __m256bh and __m256i are both 32-byte vectors.
        unsafe {
            let rounded = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(s.as_mut_ptr().cast(), rounded)
        }
    }
}

impl FamilyDecl for Avx512Bf16 {
    const NAME: &'static str = "avx512bf16";
    // Everything rustc's `avx512bf16` implies (avx512bw, and through it avx512f's set).
    const REQUIRES: CpuFeatures =
        <Avx512 as FamilyDecl>::REQUIRES.union(CpuFeatures::AVX512BW).union(CpuFeatures::AVX512BF16);
    const TILE: TileShape = <Avx512 as FamilyDecl>::TILE;
    const PRECISIONS: &'static [Precision] = &[Precision::Bf16];

    fn try_new() -> Option<Self> {
        Avx512Bf16::try_new()
    }

    #[inline]
    fn enter<Op: SimdOp>(self, op: Op) -> Op::Output {
        // SAFETY: `run_avx512_bf16` enables avx512f, avx512bf16, avx2 and fma (and what they
        // imply: avx512bw, f16c), all in `REQUIRES`; the token exists only when
        // `Avx512Bf16::try_new` saw them on this CPU.
        unsafe { run_avx512_bf16(self, op) }
    }
}

#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
fn run_avx512_bf16<Op: SimdOp>(s: Avx512Bf16, op: Op) -> Op::Output {
    op.run(s)
}
