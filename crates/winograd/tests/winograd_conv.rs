//! Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution against the f64 reference.

use convkit_reference as reference;
use convkit_tensor::{Layout, Tensor};
use convkit_testkit::*;
use convkit_winograd::{Conv, WinogradConv, WinogradTile};
use proptest::prelude::*;

/// `row_chunks` bounds the scratch to one tile row: every tile row is its own chunk.
fn run(p: &ConvProblem, tile: WinogradTile, threads: usize, row_chunks: bool) -> (Tensor, Tensor, Tensor) {
    run_nhwc_kernel(p, threads, |w, b, x, out, epilogue| {
        let mut conv = WinogradConv::new(w, p.filter, b, tile).unwrap();
        if row_chunks {
            conv = conv.with_scratch_bytes(1);
        }
        let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
        conv.forward(x, out, epilogue, &mut scratch).unwrap();
    })
}

/// Relative tolerance (of the sum of |a*b| terms) per tile. F(4x4)'s transforms scale
/// values by up to 5 (input) and 8 (output) and its weights carry 1/6 and 1/24, so its
/// rounding error is several times the direct conv's.
fn tolerance(tile: WinogradTile) -> f32 {
    match tile {
        WinogradTile::F2x2 => REL_TOL,
        WinogradTile::F4x4 => F4_REL_TOL,
    }
}

const F4_REL_TOL: f32 = 3e-5;

fn tiles() -> impl Strategy<Value = WinogradTile> {
    prop_oneof![Just(WinogradTile::F2x2), Just(WinogradTile::F4x4)]
}

fn padded_3x3() -> impl Strategy<Value = ConvProblem> {
    conv_problem(&[3], &[1], 1, &[Layout::Nhwc]).prop_map(|p| ConvProblem { window: WinogradConv::WINDOW, ..p })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn winograd_matches_reference(p in padded_3x3(), tile in tiles(), row_chunks in any::<bool>()) {
        let (got, want, mag) = run(&p, tile, 2, row_chunks);
        reference::compare(&got, &want, &mag, tolerance(tile), ABS_TOL).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn winograd_is_thread_count_invariant(p in padded_3x3(), tile in tiles()) {
        let (one, _, _) = run(&p, tile, 1, false);
        let (two, _, _) = run(&p, tile, 2, true);
        prop_assert!(one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn winograd_errors_name_the_problem() {
    use convkit_tensor::{AlignedVec, Epilogue, FilterShape, Layout, Shape, Window};
    for tile in [WinogradTile::F2x2, WinogradTile::F4x4] {
        // Only 3x3 windows: a 5x5 filter is refused at construction.
        let e = WinogradConv::new(&[0.0; 4 * 3 * 25], FilterShape::new(4, 3, 5, 5), None, tile).unwrap_err();
        assert!(e.to_string().contains("window kernel for filter"), "{e}");
        // Weights of the wrong length.
        let e = WinogradConv::new(&[0.0; 7], FilterShape::new(4, 3, 3, 3), None, tile).unwrap_err();
        assert!(e.to_string().contains("weight length"), "{e}");
        let conv = WinogradConv::new(&[0.0; 4 * 3 * 9], FilterShape::new(4, 3, 3, 3), None, tile).unwrap();
        assert_eq!(conv.filter(), FilterShape::new(4, 3, 3, 3));
        assert_eq!(conv.window(), Window::square(3, 1, 1));
        assert_eq!(conv.tile(), tile);
        let mut scratch = AlignedVec::zeros(0);
        // NCHW input, wrong channel count, wrong output shape.
        let x = Tensor::zeros(Shape::new(1, 3, 5, 5), Layout::Nchw).unwrap();
        let mut y = Tensor::zeros(Shape::new(1, 4, 5, 5), Layout::Nhwc).unwrap();
        let e = conv.forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut scratch).unwrap_err();
        assert!(e.to_string().contains("layout"), "{e}");
        let x = Tensor::zeros(Shape::new(1, 2, 5, 5), Layout::Nhwc).unwrap();
        let e = conv.forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut scratch).unwrap_err();
        assert!(e.to_string().contains("channels"), "{e}");
        let x = Tensor::zeros(Shape::new(1, 3, 5, 5), Layout::Nhwc).unwrap();
        let mut small = Tensor::zeros(Shape::new(1, 4, 4, 5), Layout::Nhwc).unwrap();
        let e = conv.forward(x.view(), &mut small.view_mut(), Epilogue::NONE, &mut scratch).unwrap_err();
        assert!(e.to_string().contains("output"), "{e}");
    }
}

/// Both ways the position GEMMs split across tasks, on purpose rather than by chance: tiles
/// when all transformed weights fit in 1 MiB, positions above (here 36 x 48 x 160 floats).
#[test]
fn both_gemm_splits_match_reference() {
    use convkit_tensor::{FilterShape, Layout, Shape, Window};
    for (ci, co) in [(16, 40), (48, 160)] {
        for tile in [WinogradTile::F2x2, WinogradTile::F4x4] {
            let p = ConvProblem {
                input: Shape::new(2, ci, 13, 11),
                layout: Layout::Nhwc,
                filter: FilterShape::new(co, ci, 3, 3),
                window: Window::square(3, 1, 1),
                bias: true,
                residual: true,
                accumulate: false,
                relu: true,
                seed: (ci * co) as u64,
            };
            let (got, want, mag) = run(&p, tile, 2, false);
            reference::compare(&got, &want, &mag, tolerance(tile), ABS_TOL).unwrap();
        }
    }
}
