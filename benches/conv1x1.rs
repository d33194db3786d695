//! Every distinct 1x1 layer of ResNet-50 (224x224, batch 1), three ways side by side:
//! the direct SIMD path (fused epilogue), the `gemm` crate called on the NHWC buffer
//! followed by a separate bias + ReLU pass, and im2col (k = 1) + gemm. Throughput in FLOPs.
//!
//! cargo bench --bench conv1x1 [-- FILTER]; CONVKIT_BENCH_THREADS=1 for one thread only.

mod common;

use common::*;
use convkit_conv1x1::Conv1x1;
use convkit_im2col::{matmul, Im2colConv, MatMut, MatRef, MatrixShape};
use convkit_tensor::{AlignedVec, Conv, Epilogue, FilterShape, Layout, Shape, Tensor, Window};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    for threads in thread_counts() {
        let pool = pool(threads);
        let mut group = c.benchmark_group(format!("conv1x1/{threads}t"));
        for l in RESNET_1X1 {
            let filter = FilterShape::new(l.co, l.ci, 1, 1);
            let w = values(l.co * l.ci, 1);
            let b = values(l.co, 2);
            let x = Tensor::from_slice(
                Shape::new(1, l.ci, l.side, l.side),
                Layout::Nhwc,
                &values(l.side * l.side * l.ci, 3),
            )
            .unwrap();
            let out_shape = Shape::new(1, l.co, l.out_side(), l.out_side());
            let mut y = Tensor::zeros(out_shape, Layout::Nhwc).unwrap();
            group.throughput(Throughput::Elements(l.flops()));

            let direct = Conv1x1::new(f32_kernel(), &w, filter, Some(&b), l.stride, Layout::Nhwc).unwrap();
            let mut none = AlignedVec::default();
            group.bench_function(format!("direct/{}", l.name()), |bch| {
                bch.iter(|| {
                    pool.install(|| {
                        direct.forward(black_box(x.view()), &mut y.view_mut(), Epilogue::relu(), &mut none).unwrap()
                    })
                })
            });

            if l.stride == 1 {
                // gemm on the activation buffer: [M, ci] x [ci, co], then bias + ReLU.
                let mut wt = vec![0.0; l.ci * l.co];
                convkit_tensor::transpose(&w, &mut wt, l.co, l.ci);
                let m = l.side * l.side;
                group.bench_function(format!("gemm/{}", l.name()), |bch| {
                    bch.iter(|| {
                        pool.install(|| {
                            matmul(
                                MatMut { data: y.data_mut(), shape: MatrixShape::row_major(m, l.co) },
                                MatRef { data: x.data(), shape: MatrixShape::row_major(m, l.ci) },
                                MatRef { data: &wt, shape: MatrixShape::row_major(l.ci, l.co) },
                                false,
                                true,
                            )
                            .unwrap();
                            for px in y.data_mut().chunks_exact_mut(l.co) {
                                px.iter_mut().zip(&b).for_each(|(v, b)| *v = (*v + b).max(0.0));
                            }
                        })
                    })
                });
            }

            let im2col = Im2colConv::new(&w, filter, Some(&b), Window::square(1, l.stride, 0), Layout::Nhwc).unwrap();
            let mut scratch = AlignedVec::zeros(im2col.scratch_len(x.shape()).unwrap());
            group.bench_function(format!("im2col_gemm/{}", l.name()), |bch| {
                bch.iter(|| {
                    pool.install(|| {
                        im2col.forward(x.view(), &mut y.view_mut(), Epilogue::relu(), &mut scratch).unwrap()
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group! { name = benches; config = criterion(); targets = bench }
criterion_main!(benches);
