//! Direct KxK NHWC convolution against the f64 reference.

mod common;

use common::*;
use convkit_conv1x1::DirectConv;
use convkit_reference as reference;
use convkit_tensor::{AlignedVec, Epilogue, FilterShape, Layout, Shape, Tensor, Window};
use proptest::prelude::*;

/// `one_image_groups` bounds the scratch to one padded image: every image is its own group.
fn run(p: &ConvProblem, threads: usize, one_image_groups: bool) -> (Tensor, Tensor, Tensor) {
    let x = random_tensor(p.input, Layout::Nhwc, p.seed);
    let w = random_vec(p.filter.co * p.filter.reduction_len(), p.seed ^ 1);
    let b = p.bias.then(|| random_vec(p.filter.co, p.seed ^ 2));
    let mut conv = DirectConv::new(&w, p.filter, b.as_deref(), p.window).unwrap();
    if one_image_groups {
        conv = conv.with_scratch_bytes(1);
    }
    let out_shape = conv.output_shape(p.input).unwrap();
    let residual = p.residual.then(|| random_tensor(out_shape, Layout::Nhwc, p.seed ^ 3));
    let mut out = prior_output(out_shape, Layout::Nhwc);
    // Scratch holding stale values: the padding must be rewritten every call.
    let mut scratch = AlignedVec::from_slice(&vec![f32::NAN; conv.scratch_len(p.input).unwrap()]);
    let epilogue = Epilogue { residual: residual.as_ref().map(|r| r.view()), accumulate: p.accumulate, relu: p.relu };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| conv.forward(x.view(), &mut out.view_mut(), epilogue, &mut scratch)).unwrap();
    let (want, mag) = reference_conv(p, &x, &w, b.as_deref(), residual.as_ref());
    (out, want, mag)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn direct_conv_matches_reference(p in conv_problem(&[1, 2, 3, 5, 7], &[1, 2, 3], 3), groups in any::<bool>()) {
        let (got, want, mag) = run(&p, 2, groups);
        reference::compare(&got, &want, &mag, REL_TOL, ABS_TOL).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn direct_conv_is_thread_count_invariant(p in conv_problem(&[3], &[1, 2], 1)) {
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
    assert!(DirectConv::new(&w, f, None, dil).unwrap_err().to_string().contains("dilation"));
    let conv = DirectConv::new(&w, f, None, Window::square(3, 1, 1)).unwrap();
    let x = Tensor::zeros(Shape::new(1, 3, 5, 5), Layout::Nchw).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 4, 5, 5), Layout::Nhwc).unwrap();
    let e = conv.forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::zeros(0)).unwrap_err();
    assert!(e.to_string().contains("input layout"), "{e}");
}
