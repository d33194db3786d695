//! Winograd F(2x2, 3x3) convolution against the f64 reference.

mod common;

use common::*;
use convkit_conv1x1::WinogradConv;
use convkit_reference as reference;
use convkit_tensor::{AlignedVec, Epilogue, Layout, Tensor};
use proptest::prelude::*;

/// `row_chunks` bounds the scratch to one tile row: every tile row is its own chunk.
fn run(p: &ConvProblem, threads: usize, row_chunks: bool) -> (Tensor, Tensor, Tensor) {
    let x = random_tensor(p.input, Layout::Nhwc, p.seed);
    let w = random_vec(p.filter.co * p.filter.reduction_len(), p.seed ^ 1);
    let b = p.bias.then(|| random_vec(p.filter.co, p.seed ^ 2));
    let mut conv = WinogradConv::new(&w, p.filter, b.as_deref()).unwrap();
    if row_chunks {
        conv = conv.with_scratch_bytes(1);
    }
    let out_shape = conv.output_shape(p.input).unwrap();
    let residual = p.residual.then(|| random_tensor(out_shape, Layout::Nhwc, p.seed ^ 3));
    let mut out = prior_output(out_shape, Layout::Nhwc);
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
    fn winograd_matches_reference(
        p in conv_problem(&[3], &[1], 1).prop_filter("padding 1", |p| p.window.padding == (1, 1)),
        row_chunks in any::<bool>(),
    ) {
        let (got, want, mag) = run(&p, 2, row_chunks);
        reference::compare(&got, &want, &mag, REL_TOL, ABS_TOL).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn winograd_is_thread_count_invariant(p in conv_problem(&[3], &[1], 1).prop_filter("padding 1", |p| p.window.padding == (1, 1))) {
        let (one, _, _) = run(&p, 1, false);
        let (two, _, _) = run(&p, 2, true);
        prop_assert!(one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
