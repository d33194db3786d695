//! The f32 FMA and bf16 dot-product peaks this thread reaches (what "share of peak"
//! divides by) and the memory bandwidth of the pool's threads (a roofline's other roof),
//! measured.

use crate::{CpuFeatures, Family, Simd, SimdOp};

/// f32 GFLOP/s this thread reaches with 12 independent FMA chains of `family`'s vectors
/// for about `seconds` (2 FLOPs per lane per FMA).
pub fn measure_fma_gflops(family: Family, seconds: f64) -> f64 {
    family.dispatch(FmaProbe { seconds })
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
        let mut acc = [s.zero(); CHAINS];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = s.splat(1.0 + i as f32 * 1e-3);
        }
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

/// GFLOP/s of `family`'s bf16 dot product on this thread: 12 independent chains for about
/// `seconds`, 4 FLOPs per f32 lane per step (two multiply-adds). Native `vdpbf16ps` on
/// `Family::Avx512Bf16`, two f32 FMAs on every other family: what a bf16 kernel's share of
/// peak divides by.
pub fn measure_bf16_gflops(family: Family, seconds: f64) -> f64 {
    family.dispatch(DotProbe { seconds })
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
        let mut acc = [s.zero(); CHAINS];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = s.splat(i as f32 * 1e-3);
        }
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

/// GOP/s of `family`'s u8 x s8 dot product on this thread: 12 independent chains for
/// about `seconds`, 8 operations per 32-bit lane per step (four multiply-adds, counted as
/// FLOPs are). One `vpdpbusd` on the VNNI families, the widening `vpmaddwd` pair on the
/// others: what an int8 kernel's share of peak divides by.
pub fn measure_int8_gops(family: Family, seconds: f64) -> f64 {
    family.dispatch(Int8DotProbe { seconds })
}

struct Int8DotProbe {
    seconds: f64,
}

impl SimdOp for Int8DotProbe {
    type Output = f64;

    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f64 {
        const CHAINS: usize = 12;
        const STEPS: usize = 4096;
        // One `vpdpbusd` has nothing to hoist; the widening families would compute the
        // products of constant operands once (a constant pair measured 1.6x vpdpbusd's
        // rate, and the same products shared by the chains), so there the u8 operand
        // changes every step (one s32 add shared by the chains) and each chain has its
        // own s8 operand.
        let native = !S::FAMILY.requires().intersection(CpuFeatures::AVX512VNNI.union(CpuFeatures::AVXVNNI)).is_empty();
        let y = s.splat(f32::from_bits(std::hint::black_box(0x0101_0101)));
        let mut ys = [s.zero(); CHAINS];
        for (i, y) in ys.iter_mut().enumerate() {
            *y = s.splat(f32::from_bits(std::hint::black_box(i as u32 + 1)));
        }
        let mut x = s.splat(f32::from_bits(std::hint::black_box(0x0102_0304)));
        let mut acc = [s.zero(); CHAINS];
        let start = std::time::Instant::now();
        let mut ops = 0.0f64;
        while start.elapsed().as_secs_f64() < self.seconds {
            for _ in 0..STEPS {
                if !native {
                    x = s.add_i32(x, y);
                }
                for (a, &w) in acc.iter_mut().zip(&ys) {
                    *a = s.dot_u8s8(*a, x, w);
                }
            }
            ops += (STEPS * CHAINS * S::LANES * 8) as f64;
        }
        let total = acc.into_iter().fold(s.zero(), |t, a| s.add_i32(t, a));
        let mut sum = [0.0f32; 64];
        s.store(&mut sum, total);
        std::hint::black_box(sum);
        ops / start.elapsed().as_secs_f64() / 1e9
    }
}

/// GB/s the threads of the current rayon pool read from memory together: each streams its
/// share of a buffer of `bytes` (of f32 ones, summed in `family`'s vectors with 8 independent
/// accumulators), over and over for about `seconds`; the fastest pass counts. Make
/// `bytes` several times the last-level cache, or this measures the cache.
pub fn measure_read_gbs(family: Family, bytes: usize, seconds: f64) -> f64 {
    let len = (bytes / 4).max(1);
    let data = vec![1.0f32; len]; // written once: every page is touched before timing
    let threads = rayon::current_num_threads().max(1);
    let chunk = len.div_ceil(threads).next_multiple_of(1024);
    let start = std::time::Instant::now();
    let mut best = f64::INFINITY;
    while best.is_infinite() || start.elapsed().as_secs_f64() < seconds {
        let pass = std::time::Instant::now();
        use rayon::prelude::*;
        let sum: f32 = data.par_chunks(chunk).map(|part| family.dispatch(ReadProbe { data: part })).sum();
        std::hint::black_box(sum);
        best = best.min(pass.elapsed().as_secs_f64());
    }
    (len * 4) as f64 / best / 1e9
}

struct ReadProbe<'a> {
    data: &'a [f32],
}

impl SimdOp for ReadProbe<'_> {
    type Output = f32;

    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f32 {
        const ACCUMULATORS: usize = 8;
        let step = ACCUMULATORS * S::LANES;
        let mut acc = [s.zero(); ACCUMULATORS];
        let mut blocks = self.data.chunks_exact(step);
        for block in &mut blocks {
            for (i, a) in acc.iter_mut().enumerate() {
                *a = s.add(*a, s.load(&block[i * S::LANES..]));
            }
        }
        let total = acc.into_iter().fold(s.zero(), |t, a| s.add(t, a));
        let mut lanes = [0.0f32; 64];
        s.store(&mut lanes, total);
        lanes[..S::LANES].iter().sum::<f32>() + blocks.remainder().iter().sum::<f32>()
    }
}

/// The CPU's model name as the OS reports it (Linux: /proc/cpuinfo), or "unknown CPU":
/// what a measurement's report names the machine by.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read probe sums every element, tail included, in every family.
    #[test]
    fn read_probe_reads_everything() {
        for &family in Family::ALL.iter().filter(|f| f.is_available()) {
            for len in [0, 1, 127, 128, 1000, 4099] {
                let data: Vec<f32> = (0..len).map(|i| (i % 5) as f32).collect();
                let want: f32 = data.iter().sum();
                assert_eq!(family.dispatch(ReadProbe { data: &data }), want, "{family} {len}");
            }
            let gbs = measure_read_gbs(family, 1 << 20, 0.0);
            assert!(gbs.is_finite() && gbs > 0.0, "{family}: {gbs}");
        }
    }
}
