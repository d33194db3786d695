//! The im2col convolution on ResNet-50's KxK layers (224x224, batch 1): the 7x7/2 stem,
//! the deep stem's three 3x3 convs (C/D), and the 3x3 convs of each stage (stride 1, and
//! stride 2 where B/C/D downsample), side by side: im2col + gemm, the direct NHWC conv on
//! the microkernel (`DirectConv`), and for stride-1 3x3 Winograd F(2x2, 3x3)
//! (`winograd/`) and F(4x4, 3x3) (`winograd4/`). Throughput in direct-conv FLOPs (2 per MAC), so Winograd's figure is
//! an effective rate.
//!
//! cargo bench --bench im2col_conv [-- FILTER]; CONVKIT_BENCH_THREADS=1 for one thread.

mod common;

use common::*;
use convkit_direct::DirectConv;
use convkit_im2col::Im2colConv;
use convkit_tensor::{AlignedVec, Conv, Epilogue, FilterShape, Layout, Shape, Tensor, Window};
use convkit_winograd::{WinogradConv, WinogradTile};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// (name, input side, ci, co, kernel, stride, padding)
const LAYERS: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("stem7x7_s2", 224, 3, 64, 7, 2, 3),
    ("deepstem1_3to32_s2", 224, 3, 32, 3, 2, 1),
    ("deepstem2_32to32", 112, 32, 32, 3, 1, 1),
    ("deepstem3_32to64", 112, 32, 64, 3, 1, 1),
    ("stage1_64_56x56", 56, 64, 64, 3, 1, 1),
    ("stage2_128_28x28", 28, 128, 128, 3, 1, 1),
    ("stage2_128_s2_56to28", 56, 128, 128, 3, 2, 1),
    ("stage3_256_14x14", 14, 256, 256, 3, 1, 1),
    ("stage3_256_s2_28to14", 28, 256, 256, 3, 2, 1),
    ("stage4_512_7x7", 7, 512, 512, 3, 1, 1),
    ("stage4_512_s2_14to7", 14, 512, 512, 3, 2, 1),
];

fn bench(c: &mut Criterion) {
    for threads in thread_counts() {
        let pool = pool(threads);
        let mut group = c.benchmark_group(format!("im2col_conv/{threads}t"));
        for &(name, side, ci, co, k, s, p) in LAYERS {
            let window = Window::square(k, s, p);
            let filter = FilterShape::new(co, ci, k, k);
            let conv = Im2colConv::new(&values(co * ci * k * k, 1), filter, Some(&values(co, 2)), window, Layout::Nhwc)
                .unwrap();
            let x =
                Tensor::from_slice(Shape::new(1, ci, side, side), Layout::Nhwc, &values(side * side * ci, 3)).unwrap();
            let out_shape = conv.output_shape(x.shape()).unwrap();
            let mut y = Tensor::zeros(out_shape, Layout::Nhwc).unwrap();
            let mut scratch = AlignedVec::zeros(conv.scratch_len(x.shape()).unwrap());
            let macs = out_shape.numel().unwrap() * ci * k * k;
            group.throughput(Throughput::Elements(2 * macs as u64));
            group.bench_function(format!("im2col/{name}"), |b| {
                b.iter(|| {
                    pool.install(|| conv.forward(x.view(), &mut y.view_mut(), Epilogue::relu(), &mut scratch).unwrap())
                })
            });
            if window == convkit_winograd::WINDOW {
                for (label, tile) in [("winograd", WinogradTile::F2x2), ("winograd4", WinogradTile::F4x4)] {
                    let wino = WinogradConv::new(
                        f32_kernel(),
                        &values(co * ci * k * k, 1),
                        filter,
                        Some(&values(co, 2)),
                        tile,
                    )
                    .unwrap();
                    let mut wscratch = AlignedVec::zeros(wino.scratch_len(x.shape()).unwrap());
                    group.bench_function(format!("{label}/{name}"), |b| {
                        b.iter(|| {
                            pool.install(|| {
                                wino.forward(x.view(), &mut y.view_mut(), Epilogue::relu(), &mut wscratch).unwrap()
                            })
                        })
                    });
                }
            }
            let direct =
                DirectConv::new(f32_kernel(), &values(co * ci * k * k, 1), filter, Some(&values(co, 2)), window)
                    .unwrap();
            group.bench_function(format!("direct/{name}"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        direct.forward(x.view(), &mut y.view_mut(), Epilogue::relu(), &mut scratch).unwrap()
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group! { name = benches; config = criterion(); targets = bench }
criterion_main!(benches);
