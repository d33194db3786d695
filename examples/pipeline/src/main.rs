//! A user's pipeline on the convkit kernel crates: 1x1 conv -> direct 3x3 conv -> 2x2
//! average pool over NHWC, with the scratch and the thread pool the caller owns, checked
//! against a plain loop, then each conv timed.
//!
//! Run: `cargo run --release` in this folder (cargo's defaults: the kernels are picked
//! when the program starts, no target-cpu flag is needed). `CONVKIT_ISA=avx2` or
//! `portable` masks the CPU's capabilities to those a family needs.

use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_microkernel::{measure_fma_gflops, CpuFeatures, Kernel};
use convkit_pool::{pool2d_into, PoolKind};
use convkit_tensor::{AlignedVec, Conv, Epilogue, FilterShape, Layout, Precision, Shape, Tensor, Window};
use std::time::Instant;

fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// out[p, o] = max(0, b[o] + sum_i x[p, i] * w[o, i]): the 1x1 conv as a plain loop.
fn naive_1x1(x: &[f32], w: &[f32], b: &[f32], ci: usize, co: usize) -> Vec<f32> {
    x.chunks_exact(ci)
        .flat_map(|px| (0..co).map(move |o| (b[o] + (0..ci).map(|i| px[i] * w[o * ci + i]).sum::<f32>()).max(0.0)))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    // The f32 kernel within the process default (what CONVKIT_ISA leaves of the CPU).
    let kernel = Kernel::pick(Precision::F32, CpuFeatures::selected()?)?;
    println!("kernel: {kernel}, {threads} thread(s)");

    // ResNet-50 stage 1: 56x56x64 -> 1x1 to 64 -> 3x3 to 64 -> 2x2 average pool.
    let (side, c) = (56, 64);
    let input = Tensor::from_slice(Shape::new(1, c, side, side), Layout::Nhwc, &values(side * side * c, 1))?;
    let (w1, b1) = (values(c * c, 2), values(c, 3));
    let (w3, b3) = (values(c * c * 9, 4), values(c, 5));
    let conv1 = Conv1x1::new(kernel, &w1, FilterShape::new(c, c, 1, 1), Some(&b1), 1, Layout::Nhwc)?;
    let conv3 = DirectConv::new(kernel, &w3, FilterShape::new(c, c, 3, 3), Some(&b3), Window::square(3, 1, 1))?;
    let mut mid = Tensor::zeros(conv1.output_shape(input.shape())?, Layout::Nhwc)?;
    let mut out = Tensor::zeros(conv3.output_shape(mid.shape())?, Layout::Nhwc)?;
    let window = Window::square(2, 2, 0);
    let mut pooled = Tensor::zeros(convkit_pool::output_shape(out.shape(), window)?, Layout::Nhwc)?;
    // One scratch buffer for every conv: sized once, reused by every call.
    let mut scratch = AlignedVec::zeros(conv1.scratch_len(input.shape())?.max(conv3.scratch_len(mid.shape())?));

    pool.install(|| -> convkit_tensor::Result<()> {
        conv1.forward(input.view(), &mut mid.view_mut(), Epilogue::relu(), &mut scratch)?;
        conv3.forward(mid.view(), &mut out.view_mut(), Epilogue::relu(), &mut scratch)?;
        pool2d_into(kernel.family(), out.view(), window, PoolKind::Average { count_include_pad: false }, &mut pooled.view_mut())
    })?;
    let want = naive_1x1(input.data(), &w1, &b1, c, c);
    let err = mid.data().iter().zip(&want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    println!("1x1 conv against a plain loop: max |difference| {err:.1e}; pooled output {}", pooled.shape());

    let time = |f: &mut (dyn FnMut() + Send)| {
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            pool.install(&mut *f);
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    let flops_1x1 = 2.0 * (side * side * c * c) as f64;
    let t1 = time(&mut || conv1.forward(input.view(), &mut mid.view_mut(), Epilogue::relu(), &mut scratch).unwrap());
    let t3 = time(&mut || conv3.forward(mid.view(), &mut out.view_mut(), Epilogue::relu(), &mut scratch).unwrap());
    let peak: f64 = pool.broadcast(|_| measure_fma_gflops(kernel.family(), 0.2)).iter().sum();
    println!(
        "1x1 64->64 at 56x56: {:.3} ms, {:.1} GFLOP/s; 3x3 direct: {:.3} ms, {:.1} GFLOP/s; FMA peak {peak:.1} GFLOP/s",
        t1 * 1e3,
        flops_1x1 / t1 / 1e9,
        t3 * 1e3,
        9.0 * flops_1x1 / t3 / 1e9
    );
    Ok(())
}
