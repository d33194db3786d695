//! Winograd F(2x2, 3x3) convolution against the f64 reference.

mod common;

use common::*;
use convkit_conv1x1::WinogradConv;
use convkit_reference as reference;
use convkit_tensor::Tensor;
use proptest::prelude::*;

/// `row_chunks` bounds the scratch to one tile row: every tile row is its own chunk.
fn run(p: &ConvProblem, threads: usize, row_chunks: bool) -> (Tensor, Tensor, Tensor) {
    run_nhwc_kernel(p, threads, |w, b, x, out, epilogue| {
        let mut conv = WinogradConv::new(w, p.filter, b).unwrap();
        if row_chunks {
            conv = conv.with_scratch_bytes(1);
        }
        let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
        conv.forward(x, out, epilogue, &mut scratch).unwrap();
    })
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
