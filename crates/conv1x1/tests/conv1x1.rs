//! Direct 1x1 convolution against the f64 reference: M, K, N around the SIMD width and
//! tile sizes, stride 1 and 2, with and without residual and ReLU, both layouts.

use convkit_conv1x1::{Conv1x1, Kernel};
use convkit_microkernel::CpuFeatures;
use convkit_reference as reference;
use convkit_tensor::{bf16, AlignedVec, Conv, Epilogue, FilterShape, Layout, Precision, Shape, Tensor, Window};
use convkit_testkit::*;
use proptest::prelude::*;

/// Channel counts: edge values around 16/32/64 lanes, and anything in 1..=70.
fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![proptest::sample::select(&[1usize, 15, 16, 17, 31, 33, 63, 64, 65][..]), 1usize..=70]
}

/// Output channels: as [`channels`], and past 70 (several 64-wide tile pairs, and an
/// odd panel after them).
fn out_channels() -> impl Strategy<Value = usize> {
    prop_oneof![3 => channels(), 1 => proptest::sample::select(&[96usize, 128, 129, 160, 200][..])]
}

fn problem() -> impl Strategy<Value = ConvProblem> {
    (
        1usize..=3,
        channels(),
        out_channels(),
        1usize..=2,
        1usize..=17,
        1usize..=17,
        layout(),
        any::<(bool, bool, bool, bool, u64)>(),
    )
        .prop_map(|(n, ci, co, s, h, w, layout, flags)| ConvProblem {
            input: Shape::new(n, ci, h, w),
            layout,
            filter: FilterShape::new(co, ci, 1, 1),
            window: Window::square(1, s, 0),
            bias: flags.0,
            residual: flags.1,
            relu: flags.2,
            accumulate: flags.3,
            seed: flags.4,
        })
}

/// The f32 kernel of the process default (`CONVKIT_ISA` masks it in CI).
fn f32_kernel() -> Kernel {
    Kernel::pick(Precision::F32, CpuFeatures::selected().unwrap()).unwrap()
}

fn run(p: &ConvProblem, threads: usize) -> (Tensor, Tensor, Tensor) {
    let x = random_tensor(p.input, p.layout, p.seed);
    let w = random_vec(p.filter.co * p.filter.ci, p.seed ^ 1);
    let b = p.bias.then(|| random_vec(p.filter.co, p.seed ^ 2));
    let conv = Conv1x1::new(f32_kernel(), &w, p.filter, b.as_deref(), p.window.stride.0, p.layout).unwrap();
    let out_shape = conv.output_shape(p.input).unwrap();
    let residual = p.residual.then(|| random_tensor(out_shape, p.layout, p.seed ^ 3));
    let mut out = prior_output(out_shape, p.layout);
    let epilogue = Epilogue { residual: residual.as_ref().map(|r| r.view()), accumulate: p.accumulate, relu: p.relu };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
    pool.install(|| conv.forward(x.view(), &mut out.view_mut(), epilogue, &mut scratch)).unwrap();
    let (want, mag) = reference_conv(p, &x, &w, b.as_deref(), residual.as_ref());
    (out, want, mag)
}

/// The bf16 conv on `kernel`: bf16 activations and weights, f32 accumulation.
fn run_bf16(p: &ConvProblem, threads: usize, kernel: Kernel) -> (Tensor, Tensor, Tensor) {
    run_nhwc_kernel::<bf16>(p, threads, |w, b, x, out, epilogue| {
        let conv = Conv1x1::new(kernel, w, p.filter, b, p.window.stride.0, Layout::Nhwc).unwrap();
        conv.forward(x, out, epilogue, &mut AlignedVec::default()).unwrap();
    })
}

/// The bf16 kernels this CPU runs within the process default.
fn bf16_kernels() -> Vec<Kernel> {
    Kernel::available(Precision::Bf16, CpuFeatures::selected().unwrap()).collect()
}

/// The int8 kernels this CPU runs within the process default.
fn int8_kernels() -> Vec<Kernel> {
    Kernel::available(Precision::Int8, CpuFeatures::selected().unwrap()).collect()
}

/// The int8 conv on `kernel`: u8 activations, s8 weights, exact s32 sums.
fn run_int8(p: &ConvProblem, threads: usize, kernel: Kernel) -> (Vec<u8>, Vec<u8>) {
    let p = ConvProblem { layout: Layout::Nhwc, ..*p };
    run_int8_kernel(&p, threads, |c, x, out, epilogue| {
        let conv = Conv1x1::new_int8(
            kernel,
            &c.weights,
            &c.weight_scales,
            p.filter,
            c.bias.as_deref(),
            p.window.stride.0,
            c.quant,
        )
        .unwrap();
        conv.forward(x, out, epilogue, &mut AlignedVec::default()).unwrap();
    })
}

proptest! {
    #![proptest_config(config())]

    /// int8 on every family this CPU runs (VNNI and widening), against the reference's
    /// exact sums and epilogue: equal bytes, so every family gives the same bytes.
    #[test]
    fn int8_conv1x1_matches_reference_exactly(p in problem(), kernel in proptest::sample::select(int8_kernels())) {
        let (got, want) = run_int8(&p, 2, kernel);
        check_int8(&got, &want).map_err(|e| TestCaseError::fail(format!("{kernel}: {e}")))?;
    }

    /// bf16 on every family this CPU runs (native and emulated), odd channel counts
    /// included, against the reference on the same bf16-rounded operands.
    #[test]
    fn bf16_conv1x1_matches_reference(p in problem(), kernel in proptest::sample::select(bf16_kernels())) {
        let p = ConvProblem { layout: Layout::Nhwc, ..p };
        let (got, want, mag) = run_bf16(&p, 2, kernel);
        check_bf16(&got, &want, &mag).map_err(|e| TestCaseError::fail(format!("{kernel}: {e}")))?;
    }

    /// The native bf16 family and the AVX-512 one that emulates it give the same outputs
    /// within the tolerance (where this CPU has both), and 1 and 2 threads the same bits.
    #[test]
    fn bf16_native_and_emulated_agree(p in problem()) {
        let p = ConvProblem { layout: Layout::Nhwc, ..p };
        let picked = bf16_kernels()[0];
        let (one, want, mag) = run_bf16(&p, 1, picked);
        let (two, _, _) = run_bf16(&p, 2, picked);
        prop_assert!(one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
        let native = bf16_kernels().into_iter().find(|k| k.native_bf16());
        let emulated = bf16_kernels().into_iter().find(|k| !k.native_bf16() && k.family().lanes() == 16);
        if let (Some(native), Some(emulated)) = (native, emulated) {
            let (native, _, _) = run_bf16(&p, 2, native);
            let (emulated, _, _) = run_bf16(&p, 2, emulated);
            for (i, ((n, e), (w, m))) in native.data().iter().zip(emulated.data()).zip(want.data().iter().zip(mag.data())).enumerate() {
                let tol = REL_TOL * m + ABS_TOL + 2.0 * BF16_OUTPUT_TOL * w.abs();
                prop_assert!((n - e).abs() <= tol, "output {i}: native {n}, emulated {e}");
            }
        }
    }

    #[test]
    fn conv1x1_matches_reference(p in problem()) {
        let (got, want, mag) = run(&p, 2);
        reference::compare(&got, &want, &mag, REL_TOL, ABS_TOL).map_err(TestCaseError::fail)?;
    }

    /// 1 and 2 threads give the same bits.
    #[test]
    fn conv1x1_is_thread_count_invariant(p in problem()) {
        let (one, _, _) = run(&p, 1);
        let (two, _, _) = run(&p, 2);
        let same = one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits());
        prop_assert!(same, "1-thread and 2-thread outputs differ for {:?}", p);
    }
}

/// Large M (several tasks and tiles) at the ResNet stride-2 shortcut shape, both layouts.
#[test]
fn strided_shortcut_shape() {
    for layout in [Layout::Nhwc, Layout::Nchw] {
        let p = ConvProblem {
            input: Shape::new(1, 67, 29, 28),
            layout,
            filter: FilterShape::new(129, 67, 1, 1),
            window: Window::square(1, 2, 0),
            bias: true,
            residual: true,
            relu: true,
            accumulate: true,
            seed: 5,
        };
        let (got, want, mag) = run(&p, 2);
        reference::compare(&got, &want, &mag, REL_TOL, ABS_TOL).unwrap();
    }
}

#[test]
fn errors_name_the_problem() {
    let w = vec![0.0; 8 * 4];
    let e = Conv1x1::<f32>::new(f32_kernel(), &w, FilterShape::new(8, 5, 1, 1), None, 1, Layout::Nhwc).unwrap_err();
    assert!(e.to_string().contains("weight length"), "{e}");
    // A 3x3 filter with weights of the right length is refused for its kernel.
    let w9 = vec![0.0; 8 * 4 * 9];
    let e = Conv1x1::<f32>::new(f32_kernel(), &w9, FilterShape::new(8, 4, 3, 3), None, 1, Layout::Nhwc).unwrap_err();
    assert!(e.to_string().contains("kernel of a 1x1 convolution"), "{e}");
    let e = Conv1x1::<f32>::new(f32_kernel(), &w, FilterShape::new(8, 4, 1, 1), None, 0, Layout::Nhwc).unwrap_err();
    assert!(e.to_string().contains("stride must be at least 1"), "{e}");
    let e = Conv1x1::<f32>::new(f32_kernel(), &w, FilterShape::new(8, 4, 1, 1), Some(&[0.0; 7]), 1, Layout::Nhwc)
        .unwrap_err();
    assert!(e.to_string().contains("bias length"), "{e}");
    // Weights packed for f32 are not a bf16 conv, and NCHW has no bf16 kernel.
    let e = Conv1x1::<bf16>::new(f32_kernel(), &w, FilterShape::new(8, 4, 1, 1), None, 1, Layout::Nhwc).unwrap_err();
    assert!(e.to_string().contains("activation precision of a 1x1 conv packed in f32"), "{e}");
    if let Some(&kernel) = bf16_kernels().first() {
        let e = Conv1x1::<bf16>::new(kernel, &w, FilterShape::new(8, 4, 1, 1), None, 1, Layout::Nchw).unwrap_err();
        assert!(e.to_string().contains("takes NHWC activations"), "{e}");
    }
    let conv = Conv1x1::new(f32_kernel(), &w, FilterShape::new(8, 4, 1, 1), None, 1, Layout::Nhwc).unwrap();
    let x = Tensor::zeros(Shape::new(1, 5, 2, 2), Layout::Nhwc).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 8, 2, 2), Layout::Nhwc).unwrap();
    let e = conv.forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::default()).unwrap_err();
    assert!(e.to_string().contains("input channels"), "{e}");
    let x = Tensor::zeros(Shape::new(1, 4, 2, 2), Layout::Nchw).unwrap();
    let e = conv.forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::default()).unwrap_err();
    assert!(e.to_string().contains("input layout"), "{e}");
    let x = Tensor::zeros(Shape::new(1, 4, 2, 2), Layout::Nhwc).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 8, 2, 3), Layout::Nhwc).unwrap();
    let e = conv.forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::default()).unwrap_err();
    assert!(e.to_string().contains("output shape"), "{e}");
}

/// One output row (the FC layer at batch 1) takes the panel-split path.
#[test]
fn single_row_splits_panels() {
    for (co, accumulate) in [(1000, false), (33, true), (16, false)] {
        let p = ConvProblem {
            input: Shape::new(1, 70, 1, 1),
            layout: Layout::Nhwc,
            filter: FilterShape::new(co, 70, 1, 1),
            window: Window::square(1, 1, 0),
            bias: true,
            residual: true,
            relu: true,
            accumulate,
            seed: 11,
        };
        for threads in [1, 2] {
            let (got, want, mag) = run(&p, threads);
            reference::compare(&got, &want, &mag, REL_TOL, ABS_TOL).unwrap();
        }
    }
}
