//! bf16 against f32 on ResNet-50's layers (224x224, batch 1): every distinct 1x1 layer
//! and the stride-1 3x3 convs of each stage on the direct path, in f32 on the kernel
//! `Kernel::pick` chooses, and in bf16 on every vector kernel the CPU runs (native
//! `vdpbf16ps` on AVX512-BF16, emulated with f32 FMAs on the others). Throughput in FLOPs.
//!
//! cargo bench --bench bf16 [-- FILTER]; CONVKIT_BENCH_THREADS=1 for one thread only.

mod common;

use common::*;
use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_microkernel::{CpuFeatures, GemmElement, Kernel};
use convkit_tensor::{
    bf16, AlignedVec, Conv, Epilogue, FilterShape, Layout, Precision, Shape, TensorView, TensorViewMut, Window,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

/// One layer: input side, filter, window.
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

fn build<T: GemmElement>(kernel: Kernel, l: &Layer, w: &[f32], b: &[f32]) -> Box<dyn Conv<T>> {
    if l.filter.kh == 1 {
        Box::new(Conv1x1::new(kernel, w, l.filter, Some(b), l.window.stride.0, Layout::Nhwc).unwrap())
    } else {
        Box::new(DirectConv::new(kernel, w, l.filter, Some(b), l.window).unwrap())
    }
}

/// Times layer `l` on `kernel` over activations of type `T` (`x` rounded to it).
fn bench_layer<T: GemmElement>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    pool: &rayon::ThreadPool,
    kernel: Kernel,
    l: &Layer,
    (w, b, x): (&[f32], &[f32], &[f32]),
) {
    let in_shape = Shape::new(1, l.filter.ci, l.side, l.side);
    let conv = build::<T>(kernel, l, w, b);
    let out_shape = conv.output_shape(in_shape).unwrap();
    let x: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    let mut y = vec![T::default(); out_shape.numel().unwrap()];
    let mut scratch = AlignedVec::default();
    group.bench_function(format!("{}-{kernel}/{}", T::PRECISION, l.name), |bch| {
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
    // Every bf16 kernel within the mask: the native one and those that emulate it.
    let bf16_kernels: Vec<Kernel> =
        Kernel::available(Precision::Bf16, mask).filter(|k| k.family().lanes() >= 8).collect();
    for threads in thread_counts() {
        let pool = pool(threads);
        let mut group = c.benchmark_group(format!("bf16/{threads}t"));
        for l in layers() {
            let f = l.filter;
            let w = values(f.co * f.ci * f.kh * f.kw, 1);
            let b = values(f.co, 2);
            let x = values(f.ci * l.side * l.side, 3);
            let out_pixels = (l.side / l.window.stride.0).pow(2);
            group.throughput(Throughput::Elements(2 * (out_pixels * f.co * f.reduction_len()) as u64));
            bench_layer::<f32>(&mut group, &pool, f32_kernel, &l, (&w, &b, &x));
            for &kernel in &bf16_kernels {
                bench_layer::<bf16>(&mut group, &pool, kernel, &l, (&w, &b, &x));
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
