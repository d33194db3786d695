//! Direct KxK NHWC convolution against the f64 reference.

use convkit_direct::{DirectConv, Kernel};
use convkit_microkernel::CpuFeatures;
use convkit_reference as reference;
use convkit_tensor::{bf16, AlignedVec, Conv, Epilogue, FilterShape, Layout, Precision, Shape, Tensor, Window};
use convkit_testkit::*;
use proptest::prelude::*;

/// The f32 kernel of the process default (`CONVKIT_ISA` masks it in CI).
fn f32_kernel() -> Kernel {
    Kernel::pick(Precision::F32, CpuFeatures::selected().unwrap()).unwrap()
}

/// `one_image_groups` bounds the scratch to one padded image: every image is its own group.
fn run(p: &ConvProblem, threads: usize, one_image_groups: bool) -> (Tensor, Tensor, Tensor) {
    run_nhwc_kernel::<f32>(p, threads, |w, b, x, out, epilogue| {
        let mut conv = DirectConv::new(f32_kernel(), w, p.filter, b, p.window).unwrap();
        if one_image_groups {
            conv = conv.with_scratch_bytes(1);
        }
        let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
        conv.forward(x, out, epilogue, &mut scratch).unwrap();
    })
}

/// The bf16 conv on `kernel`: bf16 activations and weights, f32 accumulation.
fn run_bf16(p: &ConvProblem, threads: usize, kernel: Kernel) -> (Tensor, Tensor, Tensor) {
    run_nhwc_kernel::<bf16>(p, threads, |w, b, x, out, epilogue| {
        let conv = DirectConv::new(kernel, w, p.filter, b, p.window).unwrap();
        assert_eq!(conv.precision(), Precision::Bf16);
        let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
        conv.forward(x, out, epilogue, &mut scratch).unwrap();
    })
}

/// The bf16 kernels this CPU runs within the process default.
fn bf16_kernels() -> impl Strategy<Value = Kernel> {
    proptest::sample::select(Kernel::available(Precision::Bf16, CpuFeatures::selected().unwrap()).collect::<Vec<_>>())
}

/// The int8 kernels this CPU runs within the process default.
fn int8_kernels() -> impl Strategy<Value = Kernel> {
    proptest::sample::select(Kernel::available(Precision::Int8, CpuFeatures::selected().unwrap()).collect::<Vec<_>>())
}

/// The int8 conv on `kernel` (image groups of one when `one_image_groups`).
fn run_int8(p: &ConvProblem, threads: usize, kernel: Kernel, one_image_groups: bool) -> (Vec<u8>, Vec<u8>) {
    run_int8_kernel(p, threads, |c, x, out, epilogue| {
        let mut conv =
            DirectConv::new_int8(kernel, &c.weights, &c.weight_scales, p.filter, c.bias.as_deref(), p.window, c.quant)
                .unwrap();
        if one_image_groups {
            conv = conv.with_scratch_bytes(1);
        }
        let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
        conv.forward(x, out, epilogue, &mut scratch).unwrap();
    })
}

proptest! {
    #![proptest_config(config())]

    /// int8 on every family this CPU runs: kernels 1..7 (the stem's 3 channels and other
    /// reductions that are not multiples of four), strides, padding at the input's zero
    /// point, against the reference's exact sums and epilogue: equal bytes.
    #[test]
    fn int8_direct_conv_matches_reference_exactly(
        p in conv_problem(&[1, 3, 7], &[1, 2], 3, &[Layout::Nhwc]),
        kernel in int8_kernels(),
        groups in any::<bool>(),
    ) {
        let (got, want) = run_int8(&p, 2, kernel, groups);
        check_int8(&got, &want).map_err(|e| TestCaseError::fail(format!("{kernel}: {e}")))?;
    }

    /// bf16 on every family this CPU runs (native and emulated), odd reductions (the stem's
    /// 3 channels) included, against the reference on the same bf16-rounded operands.
    #[test]
    fn bf16_direct_conv_matches_reference(p in conv_problem(&[1, 3, 7], &[1, 2], 3, &[Layout::Nhwc]), kernel in bf16_kernels()) {
        let (got, want, mag) = run_bf16(&p, 2, kernel);
        check_bf16(&got, &want, &mag).map_err(|e| TestCaseError::fail(format!("{kernel}: {e}")))?;
    }

    #[test]
    fn direct_conv_matches_reference(p in conv_problem(&[1, 2, 3, 5, 7], &[1, 2, 3], 3, &[Layout::Nhwc]), groups in any::<bool>()) {
        let (got, want, mag) = run(&p, 2, groups);
        reference::compare(&got, &want, &mag, REL_TOL, ABS_TOL).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn direct_conv_is_thread_count_invariant(p in conv_problem(&[3], &[1, 2], 1, &[Layout::Nhwc])) {
        let (one, _, _) = run(&p, 1, false);
        let (two, _, _) = run(&p, 2, true);
        prop_assert!(one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn resnet_stem_shapes() {
    for (ci, co, k, s, p, side) in [(3, 64, 7, 2, 3, 37), (3, 32, 3, 2, 1, 29), (32, 64, 3, 1, 1, 17)] {
        let prob = ConvProblem {
            input: Shape::new(1, ci, side, side),
            layout: Layout::Nhwc,
            filter: FilterShape::new(co, ci, k, k),
            window: Window::square(k, s, p),
            bias: true,
            residual: false,
            relu: true,
            accumulate: false,
            seed: 1,
        };
        let (got, want, mag) = run(&prob, 2, false);
        reference::compare(&got, &want, &mag, REL_TOL, ABS_TOL).unwrap();
    }
}

#[test]
fn direct_conv_errors() {
    let w = vec![0.0; 4 * 3 * 9];
    let f = FilterShape::new(4, 3, 3, 3);
    let mut dil = Window::square(3, 1, 1);
    dil.dilation = (2, 2);
    assert!(DirectConv::<f32>::new(f32_kernel(), &w, f, None, dil).unwrap_err().to_string().contains("dilation"));
    let mut ceil = Window::square(3, 2, 1);
    ceil.ceil_mode = true;
    assert!(DirectConv::<f32>::new(f32_kernel(), &w, f, None, ceil).unwrap_err().to_string().contains("ceil mode"));
    let mut uneven = Window::square(3, 1, 1);
    uneven.stride = (1, 2);
    let e = DirectConv::<f32>::new(f32_kernel(), &w, f, None, uneven).unwrap_err();
    assert!(e.to_string().contains("one stride >= 1, got (1, 2)"), "{e}");
    let e = DirectConv::<f32>::new(f32_kernel(), &w, f, None, Window::square(3, 0, 1)).unwrap_err();
    assert!(e.to_string().contains("stride"), "{e}");
    let conv = DirectConv::<f32>::new(f32_kernel(), &w, f, None, Window::square(3, 1, 1)).unwrap();
    let x = Tensor::zeros(Shape::new(1, 3, 5, 5), Layout::Nchw).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 4, 5, 5), Layout::Nhwc).unwrap();
    let e = conv.forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::zeros(0)).unwrap_err();
    assert!(e.to_string().contains("input layout"), "{e}");
}
