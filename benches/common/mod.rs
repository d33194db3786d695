//! Shared bench set-up: ResNet-50 layer shapes, thread pools, criterion config.
#![allow(dead_code)]

use criterion::Criterion;
use std::time::Duration;

/// Short runs: the machine is noisy, so compare paths inside one run, not across runs.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(15)
        .configure_from_args()
}

/// The f32 kernel of the process default (`CONVKIT_ISA` masks it).
pub fn f32_kernel() -> convkit_microkernel::Kernel {
    let mask = convkit_microkernel::CpuFeatures::selected().expect("CONVKIT_ISA");
    convkit_microkernel::Kernel::pick(convkit_tensor::Precision::F32, mask).expect("an f32 kernel")
}

pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
}

/// Thread counts to bench: CONVKIT_BENCH_THREADS="1,2" by default.
pub fn thread_counts() -> Vec<usize> {
    std::env::var("CONVKIT_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2])
}

/// Deterministic values in [-1, 1).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A 1x1 layer of ResNet-50 at 224x224: input side, ci, co, stride.
#[derive(Debug, Clone, Copy)]
pub struct Layer1x1 {
    pub side: usize,
    pub ci: usize,
    pub co: usize,
    pub stride: usize,
}

/// Every distinct 1x1 layer of ResNet-50 A-D at 224x224, batch 1: the bottleneck convs,
/// A's stride-2 first convs, the stride-2 projection shortcuts of A-C and D's stride-1
/// projections after the 2x2 average pool.
pub const RESNET_1X1: &[Layer1x1] = &[
    Layer1x1 { side: 56, ci: 64, co: 64, stride: 1 },
    Layer1x1 { side: 56, ci: 64, co: 256, stride: 1 },
    Layer1x1 { side: 56, ci: 256, co: 64, stride: 1 },
    Layer1x1 { side: 56, ci: 256, co: 128, stride: 1 },
    Layer1x1 { side: 56, ci: 256, co: 512, stride: 2 },
    Layer1x1 { side: 56, ci: 256, co: 128, stride: 2 },
    Layer1x1 { side: 28, ci: 512, co: 128, stride: 1 },
    Layer1x1 { side: 28, ci: 128, co: 512, stride: 1 },
    Layer1x1 { side: 28, ci: 512, co: 256, stride: 1 },
    Layer1x1 { side: 28, ci: 512, co: 1024, stride: 2 },
    Layer1x1 { side: 14, ci: 1024, co: 256, stride: 1 },
    Layer1x1 { side: 14, ci: 256, co: 1024, stride: 1 },
    Layer1x1 { side: 14, ci: 1024, co: 512, stride: 1 },
    Layer1x1 { side: 14, ci: 1024, co: 2048, stride: 2 },
    Layer1x1 { side: 7, ci: 2048, co: 512, stride: 1 },
    Layer1x1 { side: 7, ci: 512, co: 2048, stride: 1 },
    // A: the stride sits on the first 1x1 conv of stages 3 and 4.
    Layer1x1 { side: 28, ci: 512, co: 256, stride: 2 },
    Layer1x1 { side: 14, ci: 1024, co: 512, stride: 2 },
    // D: the projection after the 2x2 average pool runs at stride 1 on the pooled input.
    Layer1x1 { side: 28, ci: 256, co: 512, stride: 1 },
    Layer1x1 { side: 14, ci: 512, co: 1024, stride: 1 },
    Layer1x1 { side: 7, ci: 1024, co: 2048, stride: 1 },
];

impl Layer1x1 {
    pub fn out_side(&self) -> usize {
        self.side.div_ceil(self.stride)
    }
    pub fn flops(&self) -> u64 {
        2 * (self.out_side() * self.out_side() * self.ci * self.co) as u64
    }
    pub fn name(&self) -> String {
        format!("{}x{}_{}to{}_s{}", self.side, self.side, self.ci, self.co, self.stride)
    }
}
