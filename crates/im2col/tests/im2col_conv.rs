//! im2col convolution against the f64 reference: random shapes, strides, paddings,
//! channel counts that are not multiples of the SIMD width, both layouts, epilogues.

use convkit_im2col::{im2col_nchw, im2col_nhwc, Im2colConv, ImageDims};
use convkit_reference as reference;
use convkit_tensor::{AlignedVec, Conv, Epilogue, Layout, Shape, Tensor, Window};
use convkit_testkit::*;
use proptest::prelude::*;

/// Runs `p` on `threads` threads: (output, reference, magnitude bound).
fn forward(p: &ConvProblem, scratch_bytes: usize, threads: usize) -> (Tensor, Tensor, Tensor) {
    let x = random_tensor(p.input, p.layout, p.seed);
    let w = random_vec(p.filter.co * p.filter.reduction_len(), p.seed ^ 1);
    let b = p.bias.then(|| random_vec(p.filter.co, p.seed ^ 2));
    let conv =
        Im2colConv::new(&w, p.filter, b.as_deref(), p.window, p.layout).unwrap().with_scratch_bytes(scratch_bytes);
    let out_shape = conv.output_shape(p.input).unwrap();
    let residual = p.residual.then(|| random_tensor(out_shape, p.layout, p.seed ^ 3));
    let mut out = prior_output(out_shape, p.layout);
    let mut scratch = AlignedVec::zeros(0);
    let epilogue = Epilogue { residual: residual.as_ref().map(|r| r.view()), accumulate: p.accumulate, relu: p.relu };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| conv.forward(x.view(), &mut out.view_mut(), epilogue, &mut scratch)).unwrap();
    let (want, mag) = reference_conv(p, &x, &w, b.as_deref(), residual.as_ref());
    (out, want, mag)
}

fn run_im2col_conv(p: &ConvProblem, scratch_bytes: usize) -> Result<(), TestCaseError> {
    let (out, want, mag) = forward(p, scratch_bytes, 2);
    reference::compare(&out, &want, &mag, REL_TOL, ABS_TOL).map_err(TestCaseError::fail)
}

/// Both layouts: im2col takes NCHW and NHWC.
const BOTH: &[Layout] = &[Layout::Nchw, Layout::Nhwc];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn im2col_conv_matches_reference(p in conv_problem(&[1, 3, 5, 7], &[1, 2, 3], 3, BOTH)) {
        run_im2col_conv(&p, im2col_conv_default_scratch())?;
    }

    /// A scratch bound of one byte forces one output row per GEMM: the tiling seams.
    #[test]
    fn im2col_conv_row_tiles_match_reference(p in conv_problem(&[1, 3], &[1, 2], 1, BOTH)) {
        run_im2col_conv(&p, 1)?;
    }

    /// 1 and 2 threads give the same bits.
    #[test]
    fn im2col_conv_is_thread_count_invariant(p in conv_problem(&[1, 3], &[1, 2], 1, BOTH)) {
        let (one, _, _) = forward(&p, im2col_conv_default_scratch(), 1);
        let (two, _, _) = forward(&p, im2col_conv_default_scratch(), 2);
        prop_assert!(one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "{:?}", p);
    }

    /// Both im2col layouts hold the same values, element for element.
    #[test]
    fn im2col_layouts_agree(p in conv_problem(&[1, 2, 3, 5], &[1, 2, 3], 3, BOTH), dil in 1usize..=2) {
        let mut window = p.window;
        window.dilation = (dil, dil);
        let s = p.input;
        let hw = window.output_hw(s.h, s.w);
        prop_assume!(hw.is_ok(), "the dilated kernel is larger than the input");
        let (ho, wo) = hw.unwrap();
        let dims = ImageDims { h: s.h, w: s.w, c: s.c };
        let k = window.kernel.0 * window.kernel.1 * s.c;
        let x = random_tensor(Shape::new(1, s.c, s.h, s.w), Layout::Nchw, p.seed);
        let xh = x.to_layout(Layout::Nhwc);
        let mut a = vec![f32::NAN; ho * wo * k];
        let mut b = vec![f32::NAN; ho * wo * k];
        im2col_nchw(x.data(), dims, &window, 0..ho, &mut a).unwrap();
        im2col_nhwc(xh.data(), dims, &window, 0..ho, &mut b).unwrap();
        let (kh, kw) = window.kernel;
        for px in 0..ho * wo {
            for c in 0..s.c {
                for t in 0..kh * kw {
                    let nchw = a[(c * kh * kw + t) * ho * wo + px];
                    let nhwc = b[px * k + t * s.c + c];
                    prop_assert_eq!(nchw.to_bits(), nhwc.to_bits(), "pixel {} channel {} tap {}", px, c, t);
                }
            }
        }
    }
}

fn im2col_conv_default_scratch() -> usize {
    convkit_im2col::DEFAULT_SCRATCH_BYTES
}

#[test]
fn conv_with_c_equal_h_equal_w_in_both_layouts() {
    let p = ConvProblem {
        input: Shape::new(2, 5, 5, 5),
        layout: Layout::Nhwc,
        filter: convkit_tensor::FilterShape::new(5, 5, 3, 3),
        window: Window::square(3, 1, 1),
        bias: true,
        residual: true,
        relu: true,
        accumulate: true,
        seed: 42,
    };
    run_im2col_conv(&p, 1 << 20).unwrap();
    run_im2col_conv(&ConvProblem { layout: Layout::Nchw, ..p }, 1 << 20).unwrap();
}
