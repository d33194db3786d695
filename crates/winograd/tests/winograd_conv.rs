//! Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution against the f64 reference.

use convkit_microkernel::CpuFeatures;
use convkit_reference as reference;
use convkit_tensor::{bf16, Layout, Precision, Tensor};
use convkit_testkit::*;
use convkit_winograd::{Conv, Kernel, WinogradConv, WinogradTile};
use proptest::prelude::*;

/// The f32 kernel of the process default (`CONVKIT_ISA` masks it in CI).
fn f32_kernel() -> Kernel {
    Kernel::pick(Precision::F32, CpuFeatures::selected().unwrap()).unwrap()
}

/// `row_chunks` bounds the scratch to one tile row: every tile row is its own chunk.
fn run(p: &ConvProblem, tile: WinogradTile, threads: usize, row_chunks: bool) -> (Tensor, Tensor, Tensor) {
    run_nhwc_kernel::<f32>(p, threads, |w, b, x, out, epilogue| {
        let mut conv = WinogradConv::new(f32_kernel(), w, p.filter, b, tile).unwrap();
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
    conv_problem(&[3], &[1], 1, &[Layout::Nhwc]).prop_map(|p| ConvProblem { window: convkit_winograd::WINDOW, ..p })
}

/// The bf16 conv on `kernel`.
fn run_bf16(p: &ConvProblem, tile: WinogradTile, kernel: Kernel) -> (Tensor, Tensor, Tensor) {
    run_nhwc_kernel::<bf16>(p, 2, |w, b, x, out, epilogue| {
        let conv = WinogradConv::new(kernel, w, p.filter, b, tile).unwrap();
        let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
        conv.forward(x, out, epilogue, &mut scratch).unwrap();
    })
}

/// The magnitude an F(2x2) bf16 output's error scales with: the transformed inputs of its
/// 4x4 tile patch and the transformed weights are each rounded to bf16, and the rounding
/// of patch values outside the output's own 3x3 window does not cancel, so the bound is
/// sum over ci of (sum of |x| over the patch) x (sum of |w| over the 3x3 kernel), not the
/// output's own sum of |terms|. The microkernel's bf16 sweep and the f32 properties above
/// check the GEMMs and the transforms term by term; this one checks the bf16 loads,
/// stores and roundings around them.
fn patch_magnitude(p: &ConvProblem) -> Vec<f32> {
    let s = p.input;
    let (ci, co) = (p.filter.ci, p.filter.co);
    let x: Vec<f32> = random_tensor(s, Layout::Nhwc, p.seed).data().iter().map(|&v| v.abs()).collect();
    let w = random_vec(co * ci * 9, p.seed ^ 1);
    let mut mag = vec![0.0f32; s.n * s.h * s.w * co];
    for n in 0..s.n {
        for y in 0..s.h {
            for xx in 0..s.w {
                let (ys, xs) = ((y / 2 * 2).saturating_sub(1), (xx / 2 * 2).saturating_sub(1));
                let (ye, xe) = ((y / 2 * 2 + 3).min(s.h), (xx / 2 * 2 + 3).min(s.w));
                for o in 0..co {
                    let mut total = 0.0;
                    for c in 0..ci {
                        let mut patch = 0.0;
                        for py in ys..ye {
                            for px in xs..xe {
                                patch += x[((n * s.h + py) * s.w + px) * ci + c];
                            }
                        }
                        let kernel: f32 = w[(o * ci + c) * 9..][..9].iter().map(|v| v.abs()).sum();
                        total += patch * kernel;
                    }
                    mag[((n * s.h + y) * s.w + xx) * co + o] = total;
                }
            }
        }
    }
    mag
}

/// Error bound of an F(2x2) bf16 output beyond its own rounding, relative to
/// [`patch_magnitude`]: largest seen over 1500 cases, 9.5e-4.
const BF16_F2_REL_TOL: f32 = 1.0 / 256.0;

/// The bf16 kernels this CPU runs within the process default.
fn bf16_kernels() -> impl Strategy<Value = Kernel> {
    proptest::sample::select(Kernel::available(Precision::Bf16, CpuFeatures::selected().unwrap()).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bf16_winograd_matches_reference(p in padded_3x3(), kernel in bf16_kernels()) {
        let tile = WinogradTile::F2x2;
        let (got, want, _) = run_bf16(&p, tile, kernel);
        let mag = patch_magnitude(&p);
        let mut worst = 0.0f32;
        for (i, ((&g, &w), &m)) in got.data().iter().zip(want.data()).zip(&mag).enumerate() {
            let excess = ((g - w).abs() - BF16_OUTPUT_TOL * w.abs()).max(0.0) / (m + ABS_TOL);
            worst = worst.max(excess);
            prop_assert!(excess <= BF16_F2_REL_TOL, "{kernel} output {i}: got {g}, want {w}, bound {m}");
        }
        if std::env::var_os("CONVKIT_PRINT_ERRORS").is_some() {
            println!("F2x2 worst {worst:.2e}");
        }
    }

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
fn bf16_f4_is_refused() {
    let filter = convkit_tensor::FilterShape::new(4, 4, 3, 3);
    let kernel = Kernel::pick(Precision::Bf16, CpuFeatures::selected().unwrap()).unwrap();
    let e = WinogradConv::<bf16>::new(kernel, &[0.5; 144], filter, None, WinogradTile::F4x4).unwrap_err().to_string();
    assert!(e.contains("F(4x4, 3x3) has no bf16 path"), "{e}");
}

#[test]
fn winograd_errors_name_the_problem() {
    use convkit_tensor::{AlignedVec, Epilogue, FilterShape, Layout, Shape, Window};
    for tile in [WinogradTile::F2x2, WinogradTile::F4x4] {
        // Only 3x3 windows: a 5x5 filter is refused at construction.
        let e = WinogradConv::<f32>::new(f32_kernel(), &[0.0; 4 * 3 * 25], FilterShape::new(4, 3, 5, 5), None, tile)
            .unwrap_err();
        assert!(e.to_string().contains("window kernel for filter"), "{e}");
        // Weights of the wrong length.
        let e =
            WinogradConv::<f32>::new(f32_kernel(), &[0.0; 7], FilterShape::new(4, 3, 3, 3), None, tile).unwrap_err();
        assert!(e.to_string().contains("weight length"), "{e}");
        let conv =
            WinogradConv::new(f32_kernel(), &[0.0; 4 * 3 * 9], FilterShape::new(4, 3, 3, 3), None, tile).unwrap();
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

/// Both ways the position GEMMs split across tasks, forced whatever this CPU's L2: tiles
/// (all positions of a task's tiles) and positions (one task per position). Each matches
/// the reference, and the two are bitwise the same.
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
            let mut outputs = Vec::new();
            for split_bytes in [usize::MAX, 0] {
                let (got, want, mag) = run_nhwc_kernel::<f32>(&p, 2, |w, b, x, out, epilogue| {
                    let conv = WinogradConv::new(f32_kernel(), w, p.filter, b, tile)
                        .unwrap()
                        .with_tile_split_bytes(split_bytes);
                    assert_eq!(conv.splits_tiles(), split_bytes == usize::MAX);
                    let mut scratch = nan_scratch(conv.scratch_len(p.input).unwrap());
                    conv.forward(x, out, epilogue, &mut scratch).unwrap();
                });
                reference::compare(&got, &want, &mag, tolerance(tile), ABS_TOL).unwrap();
                outputs.push(got);
            }
            let same = outputs[0].data().iter().zip(outputs[1].data()).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{tile:?} ci {ci} co {co}: the tile and position splits differ");
        }
    }
}
