//! The AVX2 family with AVX-VNNI (the VEX-encoded `vpdpbusd` of CPUs that have VNNI on
//! 256-bit vectors, with or without AVX-512): the [`Avx2`] tiles, whose u8 x s8 dot
//! product is one instruction instead of the widening `vpmaddwd` pair. It declares int8
//! kernels only.

use super::avx2::Avx2;
use crate::family::{FamilyDecl, SimdOp, TileShape};
use crate::{CpuFeatures, Family, Simd};
use convkit_tensor::Precision;
use core::arch::x86_64::*;

/// The AVX-VNNI token: the [`Avx2`] one, with the 256-bit `vpdpbusd`.
#[derive(Debug, Clone, Copy)]
pub struct AvxVnni {
    f32_ops: Avx2,
}

impl AvxVnni {
    /// The token, if this CPU has AVX2, FMA and AVX-VNNI.
    #[inline]
    pub fn try_new() -> Option<Self> {
        let f32_ops = Avx2::try_new()?;
        CpuFeatures::detected().contains(<AvxVnni as FamilyDecl>::REQUIRES).then_some(AvxVnni { f32_ops })
    }
}

impl crate::simd::sealed::Sealed for AvxVnni {}

impl Simd for AvxVnni {
    type F32 = __m256;
    const LANES: usize = 8;
    const FAMILY: Family = Family::AvxVnni;

    forward_simd!(f32_ops: splat, load, store, load_partial, store_partial, add, sub, mul, mul_add, max,
        max_keep_nan, min, bf16_halves, load_bf16, store_bf16, dot_bf16, add_i32, i32_to_f32, load_u8, store_u8);

    /// One VEX `vpdpbusd`: the four products of each lane summed exactly, the lane wrapping.
    #[inline(always)]
    fn dot_u8s8(self, acc: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: an AvxVnni token exists only if `AvxVnni::try_new` saw avx2, fma and
        // avxvnni on this CPU; the casts only retype the bits.
        unsafe {
            let (acc, a, b) = (_mm256_castps_si256(acc), _mm256_castps_si256(a), _mm256_castps_si256(b));
            _mm256_castsi256_ps(_mm256_dpbusd_avx_epi32(acc, a, b))
        }
    }
}

impl FamilyDecl for AvxVnni {
    const NAME: &'static str = "avxvnni";
    const REQUIRES: CpuFeatures = <Avx2 as FamilyDecl>::REQUIRES.union(CpuFeatures::AVXVNNI);
    const TILE: TileShape = <Avx2 as FamilyDecl>::TILE;
    const PRECISIONS: &'static [Precision] = &[Precision::Int8];

    fn try_new() -> Option<Self> {
        AvxVnni::try_new()
    }

    #[inline]
    fn enter<Op: SimdOp>(self, op: Op) -> Op::Output {
        // SAFETY: `run_avx_vnni` enables avx2, fma and avxvnni, all in `REQUIRES`; the
        // token exists only when `AvxVnni::try_new` saw them on this CPU.
        unsafe { run_avx_vnni(self, op) }
    }
}

#[target_feature(enable = "avx2,fma,avxvnni")]
fn run_avx_vnni<Op: SimdOp>(s: AvxVnni, op: Op) -> Op::Output {
    op.run(s)
}
