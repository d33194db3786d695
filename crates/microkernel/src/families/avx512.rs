//! The AVX-512F family: 16-lane `__m512`, 32 registers, tiles of 6 rows x 32 or 64
//! columns: 24 accumulators, 4 weight vectors and the broadcasts in 32 registers. Its
//! bf16 dot product is two f32 FMAs (see [`crate::Simd::dot_bf16`]).

use super::avx2::{dot_u8s8_widened, Avx2};
use crate::family::{FamilyDecl, SimdOp, TileShape, MR};
use crate::{CpuFeatures, Family, Simd};
use convkit_tensor::{bf16, Precision};
use core::arch::x86_64::*;

/// AVX-512F: 16-lane `__m512`, 32 registers.
#[derive(Debug, Clone, Copy)]
pub struct Avx512 {
    _checked: (),
}

impl Avx512 {
    /// The token, if this CPU has AVX-512F (and the AVX2 and FMA every such CPU has).
    #[inline]
    pub fn try_new() -> Option<Self> {
        CpuFeatures::detected().contains(<Avx512 as FamilyDecl>::REQUIRES).then_some(Avx512 { _checked: () })
    }
}

impl crate::simd::sealed::Sealed for Avx512 {}

impl Simd for Avx512 {
    type F32 = __m512;
    const LANES: usize = 16;
    const FAMILY: Family = Family::Avx512;

    #[inline(always)]
    fn splat(self, v: f32) -> __m512 {
        // SAFETY: an Avx512 token exists only if `Avx512::try_new` saw avx512f (with avx2,
        // fma and f16c) on this CPU (`CpuFeatures::detected`, from `is_x86_feature_detected!`).
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        let s = &s[..16];
        // SAFETY: the token proves avx512f (see `splat`); `s` holds the 16 floats read.
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m512) {
        let s = &mut s[..16];
        // SAFETY: the token proves avx512f (see `splat`); `s` holds the 16 floats written.
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32]) -> __m512 {
        let n = s.len().min(16);
        let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: the token proves avx512f (see `splat`); the mask enables only the
        // first `n <= s.len()` lanes, so no float past `s` is read.
        unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr()) }
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: __m512) {
        let n = s.len().min(16);
        let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: the token proves avx512f (see `splat`); the mask enables only the
        // first `n <= s.len()` lanes, so no float past `s` is written.
        unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr(), mask, v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn max_keep_nan(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a), _mm512_max_ps(a, b), a) }
    }
    #[inline(always)]
    fn bf16_halves(self, pairs: __m512) -> (__m512, __m512) {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe {
            let bits = _mm512_castps_si512(pairs);
            let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits));
            let odd = _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(0xffff_0000_u32 as i32)));
            (even, odd)
        }
    }
    #[inline(always)]
    fn load_bf16(self, s: &[bf16]) -> __m512 {
        let s = &s[..16];
        // SAFETY: the token proves avx512f (see `splat`); `s` holds the 16 values (32
        // bytes) read.
        unsafe {
            let v = _mm256_loadu_si256(s.as_ptr().cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
        }
    }
    #[inline(always)]
    fn store_bf16(self, s: &mut [bf16], v: __m512) {
        let s = &mut s[..16];
        // SAFETY: the token proves avx512f (see `splat`); `s` holds the 16 values (32
        // bytes) written.
        unsafe {
            let bits = _mm512_castps_si512(v);
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
            let quiet_nan = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            let lanes = _mm512_mask_blend_epi32(nan, rounded, quiet_nan);
            _mm256_storeu_si256(s.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(lanes));
        }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_min_ps(a, b) }
    }
    /// Without AVX512-BW there are no 512-bit 16-bit multiplies: each half goes through
    /// the AVX2 widening (see [`dot_u8s8_widened`]).
    #[inline(always)]
    fn dot_u8s8(self, acc: __m512, a: __m512, b: __m512) -> __m512 {
        let avx2 = Avx2::from_avx512(self);
        // SAFETY: the token proves avx512f (and avx2, see `splat`); the casts only retype
        // the bits.
        unsafe {
            let (acc, a, b) = (_mm512_castps_si512(acc), _mm512_castps_si512(a), _mm512_castps_si512(b));
            let low = dot_u8s8_widened(
                avx2,
                _mm512_castsi512_si256(acc),
                _mm512_castsi512_si256(a),
                _mm512_castsi512_si256(b),
            );
            let high = dot_u8s8_widened(
                avx2,
                _mm512_extracti64x4_epi64::<1>(acc),
                _mm512_extracti64x4_epi64::<1>(a),
                _mm512_extracti64x4_epi64::<1>(b),
            );
            _mm512_castsi512_ps(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high))
        }
    }
    #[inline(always)]
    fn add_i32(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`); the casts only retype the bits.
        unsafe { _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b))) }
    }
    #[inline(always)]
    fn i32_to_f32(self, v: __m512) -> __m512 {
        // SAFETY: the token proves avx512f (see `splat`).
        unsafe { _mm512_cvtepi32_ps(_mm512_castps_si512(v)) }
    }
    #[inline(always)]
    fn load_u8(self, s: &[u8]) -> __m512 {
        let s = &s[..16];
        // SAFETY: the token proves avx512f (see `splat`); `s` holds the 16 bytes read.
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(s.as_ptr().cast()))) }
    }
    #[inline(always)]
    fn store_u8(self, s: &mut [u8], v: __m512) {
        let s = &mut s[..16];
        // SAFETY: the token proves avx512f (see `splat`); `s` holds the 16 bytes written.
        unsafe { _mm_storeu_si128(s.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v))) }
    }
}

impl FamilyDecl for Avx512 {
    const NAME: &'static str = "avx512";
    // Everything rustc's `avx512f` implies: `enter` compiles with all of it.
    const REQUIRES: CpuFeatures =
        CpuFeatures::AVX512F.union(CpuFeatures::AVX2).union(CpuFeatures::FMA).union(CpuFeatures::F16C);
    const TILE: TileShape = TileShape { mr: MR, nr: 32, max_panels: 2 };
    const PRECISIONS: &'static [Precision] = &[Precision::F32, Precision::Bf16, Precision::Int8];

    fn try_new() -> Option<Self> {
        Avx512::try_new()
    }

    #[inline]
    fn enter<Op: SimdOp>(self, op: Op) -> Op::Output {
        // SAFETY: `run_avx512` enables avx512f, avx2 and fma (and what avx512f implies:
        // f16c), all in `REQUIRES`; the token exists only when
        // `Avx512::try_new` saw them on this CPU.
        unsafe { run_avx512(self, op) }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn run_avx512<Op: SimdOp>(s: Avx512, op: Op) -> Op::Output {
    op.run(s)
}
