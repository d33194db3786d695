//! The AVX-512F family with AVX512-VNNI: the [`Avx512`] tiles, whose u8 x s8 dot product
//! is one `vpdpbusd` (four multiply-adds per 32-bit lane) instead of the widening
//! `vpmaddwd` pair. It declares int8 kernels only: its f32 and bf16 kernels would be
//! those of [`Avx512`] (and of `avx512bf16`).

use super::avx512::Avx512;
use crate::family::{FamilyDecl, SimdOp, TileShape};
use crate::{CpuFeatures, Family, Simd};
use convkit_tensor::Precision;
use core::arch::x86_64::*;

/// The AVX512-VNNI token: the [`Avx512`] one, with `vpdpbusd`.
#[derive(Debug, Clone, Copy)]
pub struct Avx512Vnni {
    f32_ops: Avx512,
}

impl Avx512Vnni {
    /// The token, if this CPU has AVX-512F and AVX512-VNNI.
    #[inline]
    pub fn try_new() -> Option<Self> {
        let f32_ops = Avx512::try_new()?;
        CpuFeatures::detected().contains(<Avx512Vnni as FamilyDecl>::REQUIRES).then_some(Avx512Vnni { f32_ops })
    }
}

impl crate::simd::sealed::Sealed for Avx512Vnni {}

impl Simd for Avx512Vnni {
    type F32 = __m512;
    const LANES: usize = 16;
    const FAMILY: Family = Family::Avx512Vnni;

    forward_simd!(f32_ops: splat, load, store, load_partial, store_partial, add, sub, mul, mul_add, max,
        max_keep_nan, min, bf16_halves, load_bf16, store_bf16, dot_bf16, add_i32, i32_to_f32, load_u8, store_u8);

    /// One `vpdpbusd`: the four products of each lane summed exactly, the lane wrapping.
    #[inline(always)]
    fn dot_u8s8(self, acc: __m512, a: __m512, b: __m512) -> __m512 {
        // SAFETY: an Avx512Vnni token exists only if `Avx512Vnni::try_new` saw avx512f
        // and avx512vnni on this CPU; the casts only retype the bits.
        unsafe {
            let (acc, a, b) = (_mm512_castps_si512(acc), _mm512_castps_si512(a), _mm512_castps_si512(b));
            _mm512_castsi512_ps(_mm512_dpbusd_epi32(acc, a, b))
        }
    }
}

impl FamilyDecl for Avx512Vnni {
    const NAME: &'static str = "avx512vnni";
    const REQUIRES: CpuFeatures = <Avx512 as FamilyDecl>::REQUIRES.union(CpuFeatures::AVX512VNNI);
    // 5 x 64, not Avx512's 6 x 64: the u8 operand of `vpdpbusd` cannot be a memory
    // broadcast, LLVM loads all rows' broadcasts before the products, and 24 accumulators
    // + 4 weight vectors + 6 broadcasts are 34 of 32 registers: 6 x 64 kept three
    // accumulators on the stack. In eight alternating rounds 5 x 64 was 4-12% faster on
    // the long reductions and 6% slower at K = 64, inside the noise (docs/results.md).
    const TILE: TileShape = TileShape { mr: 5, nr: 32, max_panels: 2 };
    const PRECISIONS: &'static [Precision] = &[Precision::Int8];

    fn try_new() -> Option<Self> {
        Avx512Vnni::try_new()
    }

    #[inline]
    fn enter<Op: SimdOp>(self, op: Op) -> Op::Output {
        // SAFETY: `run_avx512_vnni` enables avx512f, avx512vnni, avx2 and fma, all in
        // `REQUIRES`; the token exists only when `Avx512Vnni::try_new` saw them on this CPU.
        unsafe { run_avx512_vnni(self, op) }
    }
}

#[target_feature(enable = "avx512f,avx512vnni,avx2,fma")]
fn run_avx512_vnni<Op: SimdOp>(s: Avx512Vnni, op: Op) -> Op::Output {
    op.run(s)
}
