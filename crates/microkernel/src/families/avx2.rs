//! The AVX2 + FMA family: 8-lane `__m256`, 16 registers, tiles of 4 rows x 16 columns.
//! LLVM loads every row's broadcast before the FMAs, so 6 x 16 (12 + 2 + 6 > 16
//! registers) spills its accumulators and ran at 26-40 GFLOP/s on one Zen 3 core where
//! 4 x 16 ran at 62-85 (peak 89). 3 x 24 (three vectors, 9 accumulators) measured -6% to
//! +20% against 4 x 16 per shape, and wastes a third of its last panel on ResNet's channel
//! counts (multiples of 16, not of 24).

use crate::family::{FamilyDecl, SimdOp, TileShape};
use crate::{CpuFeatures, Family, Simd};
use convkit_tensor::{bf16, Precision};
use core::arch::x86_64::*;

/// AVX2 + FMA: 8-lane `__m256`, 16 registers.
#[derive(Debug, Clone, Copy)]
pub struct Avx2 {
    _checked: (),
}

impl Avx2 {
    /// The token, if this CPU has AVX2 and FMA.
    #[inline]
    pub fn try_new() -> Option<Self> {
        CpuFeatures::detected().contains(<Avx2 as FamilyDecl>::REQUIRES).then_some(Avx2 { _checked: () })
    }
}

impl Avx2 {
    /// The AVX2 token of a CPU whose AVX-512 token exists (AVX-512F implies AVX2 and FMA
    /// in `Avx512`'s requirements).
    #[inline(always)]
    pub(crate) fn from_avx512(_: super::avx512::Avx512) -> Self {
        Avx2 { _checked: () }
    }
}

impl crate::simd::sealed::Sealed for Avx2 {}

impl Simd for Avx2 {
    type F32 = __m256;
    const LANES: usize = 8;
    const FAMILY: Family = Family::Avx2;

    #[inline(always)]
    fn splat(self, v: f32) -> __m256 {
        // SAFETY: an Avx2 token exists only if `Avx2::try_new` saw avx2 and fma on this CPU
        // (`CpuFeatures::detected`, from `is_x86_feature_detected!`).
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        let s = &s[..8];
        // SAFETY: the token proves avx2 (see `splat`); `s` holds the 8 floats read.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m256) {
        let s = &mut s[..8];
        // SAFETY: the token proves avx2 (see `splat`); `s` holds the 8 floats written.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32]) -> __m256 {
        let mut a = [0.0f32; 8];
        a[..s.len()].copy_from_slice(s);
        self.load(&a)
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: __m256) {
        let mut a = [0.0f32; 8];
        self.store(&mut a, v);
        let n = s.len();
        s.copy_from_slice(&a[..n]);
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the token proves fma (see `splat`).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn max_keep_nan(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe { _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a)) }
    }
    #[inline(always)]
    fn bf16_halves(self, pairs: __m256) -> (__m256, __m256) {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe {
            let bits = _mm256_castps_si256(pairs);
            let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(bits));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(bits, _mm256_set1_epi32(0xffff_0000_u32 as i32)));
            (even, odd)
        }
    }
    #[inline(always)]
    fn load_bf16(self, s: &[bf16]) -> __m256 {
        let s = &s[..8];
        // SAFETY: the token proves avx2 (see `splat`); `s` holds the 8 values (16
        // bytes) read.
        unsafe {
            let half = _mm_loadu_si128(s.as_ptr().cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(half)))
        }
    }
    #[inline(always)]
    fn store_bf16(self, s: &mut [bf16], v: __m256) {
        let s = &mut s[..8];
        // SAFETY: the token proves avx2 (see `splat`); `s` holds the 8 values (16
        // bytes) written.
        unsafe {
            let rounded = round_to_bf16_bits_256(self, v);
            // Each lane's bf16 is in its low 16 bits: pack the 8 lanes to 8 u16.
            let packed = _mm256_packus_epi32(rounded, rounded);
            let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
            _mm_storeu_si128(s.as_mut_ptr().cast(), _mm256_castsi256_si128(packed));
        }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn dot_u8s8(self, acc: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`); the casts only retype the bits.
        unsafe {
            let (acc, a, b) = (_mm256_castps_si256(acc), _mm256_castps_si256(a), _mm256_castps_si256(b));
            _mm256_castsi256_ps(dot_u8s8_widened(self, acc, a, b))
        }
    }
    #[inline(always)]
    fn add_i32(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`); the casts only retype the bits.
        unsafe { _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b))) }
    }
    #[inline(always)]
    fn i32_to_f32(self, v: __m256) -> __m256 {
        // SAFETY: the token proves avx2 (see `splat`).
        unsafe { _mm256_cvtepi32_ps(_mm256_castps_si256(v)) }
    }
    #[inline(always)]
    fn load_u8(self, s: &[u8]) -> __m256 {
        let s = &s[..8];
        // SAFETY: the token proves avx2 (see `splat`); `s` holds the 8 bytes read.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(s.as_ptr().cast()))) }
    }
    #[inline(always)]
    fn store_u8(self, s: &mut [u8], v: __m256) {
        let s = &mut s[..8];
        // SAFETY: the token proves avx2 (see `splat`); `s` holds the 8 bytes written.
        unsafe {
            // Lanes in 0..=255: the saturating packs keep them; each 128-bit half ends
            // with its 4 bytes first.
            let words = _mm256_cvtps_epi32(v);
            let bytes = _mm256_packus_epi16(_mm256_packus_epi32(words, words), _mm256_setzero_si256());
            let both = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256::<1>(bytes));
            _mm_storel_epi64(s.as_mut_ptr().cast(), both)
        }
    }
}

/// `acc + a . b` per 32-bit lane (four u8 of `a` by four s8 of `b`), exact: the bytes
/// widened to 16 bits, even and odd ones apart, then two `vpmaddwd` (each sum of two
/// products is at most 2 * 255 * 128, far inside s32). What `vpdpbusd` computes, on CPUs
/// without VNNI.
#[inline(always)]
pub(crate) fn dot_u8s8_widened(_: Avx2, acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: the Avx2 token proves avx2 (see `Avx2::splat`).
    unsafe {
        let a_even = _mm256_and_si256(a, _mm256_set1_epi16(0x00ff));
        let a_odd = _mm256_srli_epi16::<8>(a);
        let b_even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b));
        let b_odd = _mm256_srai_epi16::<8>(b);
        let sums = _mm256_add_epi32(_mm256_madd_epi16(a_even, b_even), _mm256_madd_epi16(a_odd, b_odd));
        _mm256_add_epi32(acc, sums)
    }
}

/// Each lane of `v` rounded to bf16 (to nearest, ties to even; NaN made quiet), in the
/// low 16 bits of the lane.
#[inline(always)]
fn round_to_bf16_bits_256(_: Avx2, v: __m256) -> __m256i {
    // SAFETY: the Avx2 token proves avx2 (see `Avx2::splat`).
    unsafe {
        let bits = _mm256_castps_si256(v);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(bits, bias));
        let quiet_nan = _mm256_or_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(0x40));
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        _mm256_blendv_epi8(rounded, quiet_nan, nan)
    }
}

impl FamilyDecl for Avx2 {
    const NAME: &'static str = "avx2";
    const REQUIRES: CpuFeatures = CpuFeatures::AVX2.union(CpuFeatures::FMA);
    const TILE: TileShape = TileShape { mr: 4, nr: 16, max_panels: 1 };
    const PRECISIONS: &'static [Precision] = &[Precision::F32, Precision::Bf16, Precision::Int8];

    fn try_new() -> Option<Self> {
        Avx2::try_new()
    }

    #[inline]
    fn enter<Op: SimdOp>(self, op: Op) -> Op::Output {
        // SAFETY: `run_avx2` enables avx2 and fma; the token exists only when
        // `Avx2::try_new` saw them on this CPU.
        unsafe { run_avx2(self, op) }
    }
}

#[target_feature(enable = "avx2,fma")]
fn run_avx2<Op: SimdOp>(s: Avx2, op: Op) -> Op::Output {
    op.run(s)
}
