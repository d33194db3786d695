//! The vector operations every kernel is written in, once, generic over [`Simd`], and the
//! element types they load and store ([`GemmElement`]).
//!
//! A family is a zero-sized token (one file under `families/`). The tokens of the x86
//! families can only be made by `try_new`, which checks the CPU: holding one proves that
//! its instructions exist, and that is what makes each `unsafe` block there sound.
//! Kernels run under the token's target features through [`crate::Family::dispatch`], so
//! the intrinsics inline into them.

use crate::Family;
use convkit_tensor::{bf16, Element};

pub(crate) mod sealed {
    /// Implemented by this crate's family tokens and element types only, so that a new
    /// method on [`super::Simd`] or [`super::GemmElement`] breaks no one.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for convkit_tensor::bf16 {}
    impl Sealed for u8 {}
}

/// One CPU family's f32 vector and its operations. Every method is `#[inline(always)]`:
/// a kernel generic over `S` is compiled once per family, inside a function that enables
/// that family's target features. Sealed: the families are those of the registry.
pub trait Simd: Copy + Send + Sync + std::fmt::Debug + sealed::Sealed + 'static {
    /// The vector of [`Simd::LANES`] f32 lanes.
    type F32: Copy;
    /// Lanes of [`Simd::F32`].
    const LANES: usize;
    /// The family this token stands for.
    const FAMILY: Family;
    /// Vectors per packed weight panel: the family's panel width over its lanes.
    const PANEL_VECTORS: usize = Self::FAMILY.tile().nr / Self::LANES;

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

    /// `a * b + c` rounded once on every family: the int8 epilogue, whose bits every
    /// family shares. The default is [`Simd::mul_add`], right for the families with FMA;
    /// the portable family overrides it.
    #[inline(always)]
    fn mul_add_fused(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32 {
        self.mul_add(a, b, c)
    }
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
    /// panics if `s` is shorter. The `avx512bf16` family rounds with `vcvtneps2bf16`,
    /// which also takes f32 subnormals as zero (its GEMM outputs); the other families keep
    /// them.
    fn store_bf16(self, s: &mut [bf16], v: Self::F32);

    /// Lane-wise `a < b ? a : b` (x86's minps): `b`'s lane where either lane is NaN.
    fn min(self, a: Self::F32, b: Self::F32) -> Self::F32;

    /// `acc + a.0 * b.0 + a.1 * b.1 + a.2 * b.2 + a.3 * b.3` in each 32-bit lane, where
    /// `a`'s lane holds four u8 values, `b`'s four s8 values and `acc`'s (and the
    /// result's) an s32, the sum exact and wrapping (`vpdpbusd`). The vectors are the f32
    /// type holding integer bits; the families without VNNI widen to 16 bits and
    /// multiply-add pairs (`vpmaddwd`), never the saturating `vpmaddubsw`: every family
    /// gives the same integers.
    fn dot_u8s8(self, acc: Self::F32, a: Self::F32, b: Self::F32) -> Self::F32;

    /// Lane-wise s32 `a + b`, wrapping (both vectors holding integer bits).
    fn add_i32(self, a: Self::F32, b: Self::F32) -> Self::F32;

    /// Each lane's s32 bits converted to f32, rounded to nearest even (`vcvtdq2ps` under
    /// the default MXCSR, which Rust never changes).
    fn i32_to_f32(self, v: Self::F32) -> Self::F32;

    /// `s[..LANES]` as f32 (exact); panics if `s` is shorter.
    fn load_u8(self, s: &[u8]) -> Self::F32;

    /// Lanes that hold integers in 0..=255 (the caller clamps: see
    /// [`GemmElement::store`]) into `s[..LANES]` as u8; panics if `s` is shorter. A lane
    /// with a fraction is rounded to nearest even.
    fn store_u8(self, s: &mut [u8], v: Self::F32);

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

    /// `s[..n]` (`n <= LANES`) of `T` elements, as f32 (the rest of the lanes zero).
    #[inline(always)]
    fn load_elements<T: GemmElement>(self, s: &[T], n: usize) -> Self::F32 {
        T::load(self, s, n)
    }

    /// Stores `n <= LANES` lanes of `v` at `s[..n]` as `T` elements (rounded to nearest,
    /// ties to even).
    #[inline(always)]
    fn store_elements<T: GemmElement>(self, s: &mut [T], n: usize, v: Self::F32) {
        T::store(self, s, n, v)
    }
}

/// Lanes of the widest family: the staging buffer of a partial load or store.
const MAX_LANES: usize = 16;

/// The element types a partial load or store stages through a whole vector's worth of
/// elements, with their whole-vector load and store. A trait rather than a function
/// passed as `impl Fn`: that was left as an out-of-line `Fn::call` compiled without the
/// family's target features, one call per vector of the epilogue.
trait StagedElement: Copy + Default {
    fn load_whole<S: Simd>(simd: S, s: &[Self]) -> S::F32;
    fn store_whole<S: Simd>(simd: S, s: &mut [Self], v: S::F32);
}

impl StagedElement for bf16 {
    #[inline(always)]
    fn load_whole<S: Simd>(simd: S, s: &[bf16]) -> S::F32 {
        simd.load_bf16(s)
    }
    #[inline(always)]
    fn store_whole<S: Simd>(simd: S, s: &mut [bf16], v: S::F32) {
        simd.store_bf16(s, v)
    }
}

impl StagedElement for u8 {
    #[inline(always)]
    fn load_whole<S: Simd>(simd: S, s: &[u8]) -> S::F32 {
        simd.load_u8(s)
    }
    #[inline(always)]
    fn store_whole<S: Simd>(simd: S, s: &mut [u8], v: S::F32) {
        simd.store_u8(s, v)
    }
}

/// `s[..n]` (`n <= LANES`) of `T`, staged through a whole vector's worth of elements
/// when `n` is short: the partial load of the element types without masked loads.
#[inline(always)]
fn load_staged<S: Simd, T: StagedElement>(simd: S, s: &[T], n: usize) -> S::F32 {
    const { assert!(S::LANES <= MAX_LANES) };
    if n == S::LANES {
        T::load_whole(simd, s)
    } else {
        let mut whole = [T::default(); MAX_LANES];
        whole[..n].copy_from_slice(&s[..n]);
        T::load_whole(simd, &whole)
    }
}

/// Stores `n <= LANES` lanes of `v` at `s[..n]`, staged like [`load_staged`].
#[inline(always)]
fn store_staged<S: Simd, T: StagedElement>(simd: S, s: &mut [T], n: usize, v: S::F32) {
    const { assert!(S::LANES <= MAX_LANES) };
    if n == S::LANES {
        T::store_whole(simd, s, v)
    } else {
        let mut whole = [T::default(); MAX_LANES];
        T::store_whole(simd, &mut whole, v);
        s[..n].copy_from_slice(&whole[..n]);
    }
}

/// An element type the kernels load, store and reduce over: what the code matches on is
/// here, one impl per type, so a new element type is a compile error wherever it needs a
/// decision. Sealed.
pub trait GemmElement: Element + sealed::Sealed {
    /// `s[..n]` (`n <= LANES`) as f32 lanes, the rest zero.
    fn load<S: Simd>(simd: S, s: &[Self], n: usize) -> S::F32;
    /// Stores `n <= LANES` lanes of `v` at `s[..n]`, rounded to this type.
    fn store<S: Simd>(simd: S, s: &mut [Self], n: usize, v: S::F32);
    /// The reduction of one R x V tile of the GEMM walk over this left-operand type.
    #[doc(hidden)]
    fn reduce<S: Simd, O: GemmElement, const R: usize, const V: usize>(
        simd: S,
        t: &crate::gemm::TileArgs<'_, Self, O>,
    ) -> [[S::F32; V]; R];
}

impl GemmElement for f32 {
    #[inline(always)]
    fn load<S: Simd>(simd: S, s: &[f32], n: usize) -> S::F32 {
        simd.load_n(s, n)
    }
    #[inline(always)]
    fn store<S: Simd>(simd: S, s: &mut [f32], n: usize, v: S::F32) {
        simd.store_n(s, n, v)
    }
    #[inline(always)]
    fn reduce<S: Simd, O: GemmElement, const R: usize, const V: usize>(
        simd: S,
        t: &crate::gemm::TileArgs<'_, f32, O>,
    ) -> [[S::F32; V]; R] {
        crate::gemm::reduce_f32::<S, R, V>(simd, t.lhs.data, t)
    }
}

impl GemmElement for bf16 {
    #[inline(always)]
    fn load<S: Simd>(simd: S, s: &[bf16], n: usize) -> S::F32 {
        load_staged(simd, s, n)
    }
    #[inline(always)]
    fn store<S: Simd>(simd: S, s: &mut [bf16], n: usize, v: S::F32) {
        store_staged(simd, s, n, v)
    }
    #[inline(always)]
    fn reduce<S: Simd, O: GemmElement, const R: usize, const V: usize>(
        simd: S,
        t: &crate::gemm::TileArgs<'_, bf16, O>,
    ) -> [[S::F32; V]; R] {
        crate::gemm::reduce_bf16::<S, R, V>(simd, bytemuck::cast_slice(t.lhs.data), t)
    }
}

/// u8 is the quantized activation: loads give its integer value, stores take values on
/// the u8 grid (the epilogue has applied the scale and zero point).
impl GemmElement for u8 {
    #[inline(always)]
    fn load<S: Simd>(simd: S, s: &[u8], n: usize) -> S::F32 {
        load_staged(simd, s, n)
    }
    /// Rounded to nearest even and saturated to 0..=255 (NaN gives 0), as
    /// `<u8 as Element>::from_f32`: the clamp first (max with 0, then min with 255), then
    /// the rounding conversion.
    #[inline(always)]
    fn store<S: Simd>(simd: S, s: &mut [u8], n: usize, v: S::F32) {
        let clamped = simd.min(simd.max(v, simd.zero()), simd.splat(255.0));
        store_staged(simd, s, n, clamped)
    }
    #[inline(always)]
    fn reduce<S: Simd, O: GemmElement, const R: usize, const V: usize>(
        simd: S,
        t: &crate::gemm::TileArgs<'_, u8, O>,
    ) -> [[S::F32; V]; R] {
        crate::gemm::reduce_int8::<S, R, V>(simd, t.lhs.data, t)
    }
}
