//! The f32 FMA and bf16 dot-product peaks this thread reaches, measured: what "share of
//! peak" divides by.

use crate::{Isa, Simd, SimdOp};

/// f32 GFLOP/s this thread reaches with 12 independent FMA chains of `isa`'s vectors
/// for about `seconds` (2 FLOPs per lane per FMA).
pub fn measure_fma_gflops(isa: Isa, seconds: f64) -> f64 {
    isa.dispatch(FmaProbe { seconds })
}

struct FmaProbe {
    seconds: f64,
}

impl SimdOp for FmaProbe {
    type Output = f64;

    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f64 {
        const CHAINS: usize = 12;
        const STEPS: usize = 4096;
        let x = s.splat(std::hint::black_box(0.999_999));
        let y = s.splat(std::hint::black_box(1e-7));
        let mut acc: [S::F32; CHAINS] = std::array::from_fn(|i| s.splat(1.0 + i as f32 * 1e-3));
        let start = std::time::Instant::now();
        let mut flops = 0.0f64;
        while start.elapsed().as_secs_f64() < self.seconds {
            for _ in 0..STEPS {
                for a in acc.iter_mut() {
                    *a = s.mul_add(*a, x, y);
                }
            }
            flops += (STEPS * CHAINS * S::LANES * 2) as f64;
        }
        // Every chain feeds the result, so none is dead code.
        let total = acc.into_iter().fold(s.zero(), |t, a| s.add(t, a));
        let mut sum = [0.0f32; 64];
        s.store(&mut sum, total);
        std::hint::black_box(sum);
        flops / start.elapsed().as_secs_f64() / 1e9
    }
}

/// GFLOP/s of `isa`'s bf16 dot product on this thread: 12 independent chains for about
/// `seconds`, 4 FLOPs per f32 lane per step (two multiply-adds). Native `vdpbf16ps` on
/// `Isa::Avx512Bf16`, two f32 FMAs on every other family: what a bf16 kernel's share of
/// peak divides by.
pub fn measure_bf16_gflops(isa: Isa, seconds: f64) -> f64 {
    isa.dispatch_bf16(DotProbe { seconds })
}

struct DotProbe {
    seconds: f64,
}

impl SimdOp for DotProbe {
    type Output = f64;

    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f64 {
        const CHAINS: usize = 12;
        const STEPS: usize = 4096;
        // Pairs of small bf16 values (0.5 and 2^-10 in each half), so the sums stay finite.
        let x = s.splat(f32::from_bits(std::hint::black_box(0x3f00_3f00)));
        let y = s.splat(f32::from_bits(std::hint::black_box(0x3a80_3a80)));
        let mut acc: [S::F32; CHAINS] = std::array::from_fn(|i| s.splat(i as f32 * 1e-3));
        let start = std::time::Instant::now();
        let mut flops = 0.0f64;
        while start.elapsed().as_secs_f64() < self.seconds {
            for _ in 0..STEPS {
                for a in acc.iter_mut() {
                    *a = s.dot_bf16(*a, x, y);
                }
            }
            flops += (STEPS * CHAINS * S::LANES * 4) as f64;
        }
        let total = acc.into_iter().fold(s.zero(), |t, a| s.add(t, a));
        let mut sum = [0.0f32; 64];
        s.store(&mut sum, total);
        std::hint::black_box(sum);
        flops / start.elapsed().as_secs_f64() / 1e9
    }
}
