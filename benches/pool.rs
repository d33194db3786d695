//! Pooling on ResNet-50's shapes (batch 1, NHWC): the stem's 3x3/2 max pool, D's 2x2/2
//! ceil-mode average pool on each downsampling shortcut, and the final global average
//! pool. Throughput in input elements read per second.
//!
//! cargo bench --bench pool; CONVKIT_BENCH_THREADS=1 for one thread.

mod common;

use common::*;
use convkit_pool::{global_avg_pool_into, output_shape, pool2d_into, PoolKind};
use convkit_tensor::{Layout, Shape, Tensor, Window};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let avg = PoolKind::Average { count_include_pad: false };
    let cases = [
        ("maxpool3x3_s2_112x112x64", Shape::new(1, 64, 112, 112), Window::square(3, 2, 1), PoolKind::Max),
        ("avgpool2x2_s2_56x56x256", Shape::new(1, 256, 56, 56), Window::square(2, 2, 0).with_ceil_mode(true), avg),
        ("avgpool2x2_s2_28x28x512", Shape::new(1, 512, 28, 28), Window::square(2, 2, 0).with_ceil_mode(true), avg),
        ("avgpool2x2_s2_14x14x1024", Shape::new(1, 1024, 14, 14), Window::square(2, 2, 0).with_ceil_mode(true), avg),
    ];
    for threads in thread_counts() {
        let pool = pool(threads);
        let mut group = c.benchmark_group(format!("pool/{threads}t"));
        for (name, shape, window, kind) in cases {
            let x = Tensor::from_slice(shape, Layout::Nhwc, &values(shape.numel().unwrap(), 1)).unwrap();
            let mut y = Tensor::zeros(output_shape(shape, window).unwrap(), Layout::Nhwc).unwrap();
            group.throughput(Throughput::Elements(shape.numel().unwrap() as u64));
            group.bench_function(name, |b| {
                b.iter(|| {
                    pool.install(|| {
                        pool2d_into(f32_kernel().family(), x.view(), window, kind, &mut y.view_mut()).unwrap()
                    })
                })
            });
        }
        let shape = Shape::new(1, 2048, 7, 7);
        let x = Tensor::from_slice(shape, Layout::Nhwc, &values(shape.numel().unwrap(), 1)).unwrap();
        let mut y = vec![0.0; 2048];
        group.throughput(Throughput::Elements(shape.numel().unwrap() as u64));
        group.bench_function("global_avgpool_7x7x2048", |b| {
            b.iter(|| global_avg_pool_into(f32_kernel().family(), x.view(), &mut y).unwrap())
        });
        group.finish();
    }
}

criterion_group! { name = benches; config = criterion(); targets = bench }
criterion_main!(benches);
