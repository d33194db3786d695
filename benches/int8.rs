//! int8 on ResNet-50's layers (224x224, batch 1): every distinct 1x1 layer and the
//! stride-1 3x3 convs of each stage on the direct path, on every int8 vector kernel the
//! CPU runs (`vpdpbusd` on the VNNI families, the exact `vpmaddwd` widening on the
//! others), beside bf16 and f32 on the kernels `Kernel::pick` chooses. Throughput in
//! operations (two per multiply-add, as FLOPs are counted).
//!
//! cargo bench --bench int8 [-- FILTER]; CONVKIT_BENCH_THREADS=1 for one thread only.

mod common;

use common::*;
use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_microkernel::{CpuFeatures, GemmElement, Kernel};
use convkit_tensor::{
    bf16, quantize_per_channel, AlignedVec, Conv, ConvQuant, Epilogue, FilterShape, Layout, Precision, Quant, Shape,
    TensorView, TensorViewMut, Window,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

/// One layer: name, input side, filter, window.
struct Layer {
    name: String,
    side: usize,
    filter: FilterShape,
    window: Window,
}

fn layers() -> Vec<Layer> {
    let mut all: Vec<Layer> = RESNET_1X1
        .iter()
        .map(|l| Layer {
            name: format!("1x1/{}", l.name()),
            side: l.side,
            filter: FilterShape::new(l.co, l.ci, 1, 1),
            window: Window::square(1, l.stride, 0),
        })
        .collect();
    for (side, c) in [(56, 64), (28, 128), (14, 256), (7, 512)] {
        all.push(Layer {
            name: format!("3x3/{side}x{side}_{c}to{c}_s1"),
            side,
            filter: FilterShape::new(c, c, 3, 3),
            window: Window::square(3, 1, 1),
        });
    }
    all
}

fn build_float<T: GemmElement>(kernel: Kernel, l: &Layer, w: &[f32], b: &[f32]) -> Box<dyn Conv<T>> {
    if l.filter.kh == 1 {
        Box::new(Conv1x1::new(kernel, w, l.filter, Some(b), l.window.stride.0, Layout::Nhwc).unwrap())
    } else {
        Box::new(DirectConv::new(kernel, w, l.filter, Some(b), l.window).unwrap())
    }
}

fn build_int8(kernel: Kernel, l: &Layer, w: &[f32], b: &[f32]) -> Box<dyn Conv<u8>> {
    let (q, scales) = quantize_per_channel(w, l.filter.co).unwrap();
    let quant = ConvQuant { input: Quant::new(0.02, 0).unwrap(), output: Quant::new(0.05, 0).unwrap(), residual: None };
    if l.filter.kh == 1 {
        Box::new(Conv1x1::new_int8(kernel, &q, &scales, l.filter, Some(b), l.window.stride.0, quant).unwrap())
    } else {
        Box::new(DirectConv::new_int8(kernel, &q, &scales, l.filter, Some(b), l.window, quant).unwrap())
    }
}

/// Times `conv` over activations of type `T` (`x` converted to it).
fn bench_conv<T: GemmElement>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    pool: &rayon::ThreadPool,
    (name, l): (String, &Layer),
    conv: &dyn Conv<T>,
    x: &[f32],
) {
    let in_shape = Shape::new(1, l.filter.ci, l.side, l.side);
    let out_shape = conv.output_shape(in_shape).unwrap();
    let x: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    let mut y = vec![T::default(); out_shape.numel().unwrap()];
    let mut scratch = AlignedVec::default();
    group.bench_function(name, |bch| {
        bch.iter(|| {
            pool.install(|| {
                let input = TensorView::new(in_shape, Layout::Nhwc, &x).unwrap();
                let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, &mut y).unwrap();
                conv.forward(black_box(input), &mut out, Epilogue::relu(), &mut scratch).unwrap()
            })
        })
    });
}

fn bench(c: &mut Criterion) {
    let mask = CpuFeatures::selected().expect("CONVKIT_ISA");
    let f32_kernel = Kernel::pick(Precision::F32, mask).expect("an f32 kernel");
    let bf16_kernel = Kernel::pick(Precision::Bf16, mask).expect("a bf16 kernel");
    let int8_kernels: Vec<Kernel> =
        Kernel::available(Precision::Int8, mask).filter(|k| k.family().lanes() >= 8).collect();
    // The peaks the layers' shares are read against, measured in the same run (one thread).
    use convkit_microkernel::{measure_bf16_gflops, measure_fma_gflops, measure_int8_gops};
    println!("peak {f32_kernel}: {:.1} GFLOP/s (one thread)", measure_fma_gflops(f32_kernel.family(), 0.3));
    println!("peak {bf16_kernel}: {:.1} GFLOP/s (one thread)", measure_bf16_gflops(bf16_kernel.family(), 0.3));
    for kernel in &int8_kernels {
        println!("peak {kernel}: {:.1} GOP/s (one thread)", measure_int8_gops(kernel.family(), 0.3));
    }
    for threads in thread_counts() {
        let pool = pool(threads);
        let mut group = c.benchmark_group(format!("int8/{threads}t"));
        for l in layers() {
            let f = l.filter;
            let w = values(f.co * f.ci * f.kh * f.kw, 1);
            let b = values(f.co, 2);
            // u8 inputs over the grid (the f32 and bf16 runs read the same numbers).
            let x: Vec<f32> = values(f.ci * l.side * l.side, 3).iter().map(|v| (v.abs() * 255.0).floor()).collect();
            let out_pixels = (l.side / l.window.stride.0).pow(2);
            group.throughput(Throughput::Elements(2 * (out_pixels * f.co * f.reduction_len()) as u64));
            let name = |kernel: Kernel| format!("{kernel}/{}", l.name);
            bench_conv::<f32>(&mut group, &pool, (name(f32_kernel), &l), &*build_float(f32_kernel, &l, &w, &b), &x);
            bench_conv::<bf16>(&mut group, &pool, (name(bf16_kernel), &l), &*build_float(bf16_kernel, &l, &w, &b), &x);
            for &kernel in &int8_kernels {
                bench_conv::<u8>(&mut group, &pool, (name(kernel), &l), &*build_int8(kernel, &l, &w, &b), &x);
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = bench
}
criterion_main!(benches);
