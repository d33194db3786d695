//! The vector operations every kernel is written in, once, generic over [`Simd`], and
//! the three families that implement them.
//!
//! A family is a zero-sized token. The tokens of the x86 families can only be made by
//! `try_new`, which checks the CPU: holding one proves that its instructions exist, and
//! that is what makes each `unsafe` block below sound. Kernels run under the token's
//! target features through [`crate::Isa::dispatch`], so the intrinsics inline into them.

use crate::Isa;
use convkit_tensor::{bf16, Element, Precision};

/// One CPU family's f32 vector and its operations. Every method is `#[inline(always)]`:
/// a kernel generic over `S` is compiled once per family, inside a function that enables
/// that family's target features.
pub trait Simd: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The vector of [`Simd::LANES`] f32 lanes.
    type F32: Copy;
    /// Lanes of [`Simd::F32`].
    const LANES: usize;
    /// The family this token stands for.
    const ISA: Isa;
    /// Vectors per packed weight panel: the family's panel width over its lanes.
    const PANEL_VECTORS: usize = Self::ISA.tile().nr / Self::LANES;

    /// Every lane `v`.
    fn splat(self, v: f32) -> Self::F32;
    /// `s[..LANES]`; panics if `s` is shorter (callers slice exactly).
    fn load(self, s: &[f32]) -> Self::F32;
    /// Stores `v` into `s[..LANES]`; panics if `s` is shorter.
    fn store(self, s: &mut [f32], v: Self::F32);
    /// The first `s.len()` (at most LANES) lanes from `s`, the rest zero.
    fn load_partial(self, s: &[f32]) -> Self::F32;
    /// Stores the first `s.len()` (at most LANES) lanes of `v`.
    fn store_partial(self, s: &mut [f32], v: Self::F32);
    /// `a + b`.
    fn add(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// `a - b`.
    fn sub(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// `a * b`.
    fn mul(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// `a * b + c` (fused where the family has FMA).
    fn mul_add(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32;
    /// Lane-wise `a > b ? a : b` (x86's maxps): `b`'s lane where either lane is NaN.
    fn max(self, a: Self::F32, b: Self::F32) -> Self::F32;

    /// Lane-wise maximum that keeps NaN from either side (PyTorch's max pooling): `a`
    /// where `a` is NaN, else `max(a, b)`, which is `b` where `b` is NaN.
    fn max_keep_nan(self, a: Self::F32, b: Self::F32) -> Self::F32;

    /// `acc + a.odd * b.odd + a.even * b.even` lane by lane, where each f32 lane of `a`
    /// and `b` holds two bf16 values (the even one of the pair in the low 16 bits), and
    /// the odd products are added first (the order of `vdpbf16ps`). Products of two bf16
    /// values are exact in f32, so each step rounds once, as `vdpbf16ps` does; the
    /// families without AVX512-BF16 compute it with two FMAs.
    #[inline(always)]
    fn dot_bf16(self, acc: Self::F32, a: Self::F32, b: Self::F32) -> Self::F32 {
        let (a_even, a_odd) = self.bf16_halves(a);
        let (b_even, b_odd) = self.bf16_halves(b);
        self.mul_add(a_even, b_even, self.mul_add(a_odd, b_odd, acc))
    }

    /// The even (low 16 bits) and odd (high 16 bits) bf16 values of each lane's pair, as f32.
    fn bf16_halves(self, pairs: Self::F32) -> (Self::F32, Self::F32);

    /// `s[..LANES]` converted to f32 (exact); panics if `s` is shorter.
    fn load_bf16(self, s: &[bf16]) -> Self::F32;

    /// `v` rounded to bf16 (to nearest, ties to even; NaN stays NaN) into `s[..LANES]`;
    /// panics if `s` is shorter.
    fn store_bf16(self, s: &mut [bf16], v: Self::F32);

    /// All lanes zero.
    #[inline(always)]
    fn zero(self) -> Self::F32 {
        self.splat(0.0)
    }

    /// `s[..n]` for `n <= LANES`: a whole load when `n == LANES`, else a partial one.
    #[inline(always)]
    fn load_n(self, s: &[f32], n: usize) -> Self::F32 {
        if n == Self::LANES {
            self.load(s)
        } else {
            self.load_partial(&s[..n])
        }
    }

    /// Stores `n <= LANES` lanes of `v` at `s[..n]`.
    #[inline(always)]
    fn store_n(self, s: &mut [f32], n: usize, v: Self::F32) {
        if n == Self::LANES {
            self.store(s, v)
        } else {
            self.store_partial(&mut s[..n], v)
        }
    }

    /// `s[..n]` (`n <= LANES`) of f32 or bf16 elements, as f32 (the rest of the lanes zero).
    #[inline(always)]
    fn load_elements<T: Element>(self, s: &[T], n: usize) -> Self::F32 {
        match T::PRECISION {
            Precision::F32 => self.load_n(bytemuck::cast_slice(s), n),
            _ => {
                let s: &[bf16] = bytemuck::cast_slice(s);
                if n == Self::LANES {
                    self.load_bf16(s)
                } else {
                    let mut whole = [bf16::ZERO; 16];
                    whole[..n].copy_from_slice(&s[..n]);
                    self.load_bf16(&whole)
                }
            }
        }
    }

    /// Stores `n <= LANES` lanes of `v` at `s[..n]` as f32 or bf16 elements (rounded to
    /// nearest, ties to even).
    #[inline(always)]
    fn store_elements<T: Element>(self, s: &mut [T], n: usize, v: Self::F32) {
        match T::PRECISION {
            Precision::F32 => self.store_n(bytemuck::cast_slice_mut(s), n, v),
            _ => {
                let s: &mut [bf16] = bytemuck::cast_slice_mut(s);
                if n == Self::LANES {
                    self.store_bf16(s, v)
                } else {
                    let mut whole = [bf16::ZERO; 16];
                    self.store_bf16(&mut whole, v);
                    s[..n].copy_from_slice(&whole[..n]);
                }
            }
        }
    }
}

/// The portable family: 128-bit vectors on every target (SSE2 on x86-64, NEON on
/// aarch64, scalar elsewhere), on the `wide` crate. Always available.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portable;

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
}

impl Simd for Portable {
    type F32 = PortableF32;
    const LANES: usize = 4;
    const ISA: Isa = Isa::Portable;

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

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512, Avx512Bf16};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use crate::Isa;
    use convkit_tensor::bf16;
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
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2 { _checked: () })
        }
    }

    /// AVX-512F: 16-lane `__m512`, 32 registers.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512 {
        _checked: (),
    }

    impl Avx512 {
        /// The token, if this CPU has AVX-512F (and the AVX2 and FMA every such CPU has).
        #[inline]
        pub fn try_new() -> Option<Self> {
            (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Avx512 { _checked: () })
        }
    }

    impl Simd for Avx2 {
        type F32 = __m256;
        const LANES: usize = 8;
        const ISA: Isa = Isa::Avx2;

        #[inline(always)]
        fn splat(self, v: f32) -> __m256 {
            // SAFETY: an Avx2 token exists only if `Avx2::try_new` saw avx2 and fma on this CPU.
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

    impl Simd for Avx512 {
        type F32 = __m512;
        const LANES: usize = 16;
        const ISA: Isa = Isa::Avx512;

        #[inline(always)]
        fn splat(self, v: f32) -> __m512 {
            // SAFETY: an Avx512 token exists only if `Avx512::try_new` saw avx512f on this CPU.
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
    }

    /// AVX-512F with AVX512-BF16: the [`Avx512`] family whose bf16 dot product is one
    /// `vdpbf16ps` and whose bf16 rounding is one `vcvtneps2bf16`.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512Bf16 {
        f32_ops: Avx512,
    }

    impl Avx512Bf16 {
        /// The token, if this CPU has AVX-512F and AVX512-BF16.
        #[inline]
        pub fn try_new() -> Option<Self> {
            let f32_ops = Avx512::try_new()?;
            is_x86_feature_detected!("avx512bf16").then_some(Avx512Bf16 { f32_ops })
        }
    }

    impl Simd for Avx512Bf16 {
        type F32 = __m512;
        const LANES: usize = 16;
        const ISA: Isa = Isa::Avx512Bf16;

        #[inline(always)]
        fn splat(self, v: f32) -> __m512 {
            self.f32_ops.splat(v)
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m512 {
            self.f32_ops.load(s)
        }
        #[inline(always)]
        fn store(self, s: &mut [f32], v: __m512) {
            self.f32_ops.store(s, v)
        }
        #[inline(always)]
        fn load_partial(self, s: &[f32]) -> __m512 {
            self.f32_ops.load_partial(s)
        }
        #[inline(always)]
        fn store_partial(self, s: &mut [f32], v: __m512) {
            self.f32_ops.store_partial(s, v)
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            self.f32_ops.add(a, b)
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            self.f32_ops.sub(a, b)
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            self.f32_ops.mul(a, b)
        }
        #[inline(always)]
        fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            self.f32_ops.mul_add(a, b, c)
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            self.f32_ops.max(a, b)
        }
        #[inline(always)]
        fn max_keep_nan(self, a: __m512, b: __m512) -> __m512 {
            self.f32_ops.max_keep_nan(a, b)
        }
        #[inline(always)]
        fn bf16_halves(self, pairs: __m512) -> (__m512, __m512) {
            self.f32_ops.bf16_halves(pairs)
        }
        #[inline(always)]
        fn load_bf16(self, s: &[bf16]) -> __m512 {
            self.f32_ops.load_bf16(s)
        }
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
}
