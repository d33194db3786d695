//! bf16 against f32 on ResNet-50's layers (224x224, batch 1): every distinct 1x1 layer
//! and the stride-1 3x3 convs of each stage on the direct path, in f32, in bf16 on the
//! family `Isa::selected` picks (native `vdpbf16ps` on AVX512-BF16), and in bf16 emulated
//! with f32 FMAs on the AVX-512 family where the CPU has it. Throughput in FLOPs.
//!
//! cargo bench --bench bf16 [-- FILTER]; CONVKIT_BENCH_THREADS=1 for one thread only.

mod common;

use common::*;
use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_microkernel::Isa;
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

fn build(isa: Isa, precision: Precision, l: &Layer, w: &[f32], b: &[f32]) -> Box<dyn Conv> {
    if l.filter.kh == 1 {
        Box::new(Conv1x1::for_precision(isa, precision, w, l.filter, Some(b), l.window.stride.0, Layout::Nhwc).unwrap())
    } else {
        Box::new(DirectConv::for_precision(isa, precision, w, l.filter, Some(b), l.window).unwrap())
    }
}

fn bench(c: &mut Criterion) {
    let selected = Isa::selected().expect("kernel family");
    let mut families = vec![(format!("f32-{selected}"), selected, Precision::F32)];
    families.push((format!("bf16-{selected}"), selected, Precision::Bf16));
    if selected.native_bf16() && Isa::Avx512.is_available() {
        families.push(("bf16-avx512-emulated".to_string(), Isa::Avx512, Precision::Bf16));
    }
    for threads in thread_counts() {
        let pool = pool(threads);
        let mut group = c.benchmark_group(format!("bf16/{threads}t"));
        for l in layers() {
            let f = l.filter;
            let w = values(f.co * f.ci * f.kh * f.kw, 1);
            let b = values(f.co, 2);
            let in_shape = Shape::new(1, f.ci, l.side, l.side);
            let x32 = values(in_shape.numel().unwrap(), 3);
            let x16: Vec<bf16> = x32.iter().map(|&v| bf16::from_f32(v)).collect();
            let convs: Vec<_> = families.iter().map(|(name, isa, p)| (name, *p, build(*isa, *p, &l, &w, &b))).collect();
            let out_shape = convs[0].2.output_shape(in_shape).unwrap();
            let mut y32 = vec![0.0f32; out_shape.numel().unwrap()];
            let mut y16 = vec![bf16::ZERO; out_shape.numel().unwrap()];
            let mut scratch = AlignedVec::default();
            group.throughput(Throughput::Elements(2 * (out_shape.numel().unwrap() * f.reduction_len()) as u64));
            for (name, precision, conv) in &convs {
                group.bench_function(format!("{name}/{}", l.name), |bch| {
                    bch.iter(|| {
                        pool.install(|| match precision {
                            Precision::F32 => {
                                let x = TensorView::new(in_shape, Layout::Nhwc, &x32).unwrap();
                                let mut y = TensorViewMut::new(out_shape, Layout::Nhwc, &mut y32).unwrap();
                                conv.forward(black_box(x), &mut y, Epilogue::relu(), &mut scratch).unwrap()
                            }
                            _ => {
                                let x = TensorView::new(in_shape, Layout::Nhwc, &x16).unwrap();
                                let mut y = TensorViewMut::new(out_shape, Layout::Nhwc, &mut y16).unwrap();
                                let e = Epilogue { residual: None, accumulate: false, relu: true };
                                conv.forward_bf16(black_box(x), &mut y, e, &mut scratch).unwrap()
                            }
                        })
                    })
                });
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
