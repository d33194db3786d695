//! Bad input returns an error whose message names the problem; no panic.

use convkit_im2col::{im2col_nhwc, Im2colConv, ImageDims};
use convkit_pool::{global_avg_pool_into, max_pool2d, pool2d_into, Family, PoolKind};
use convkit_tensor::{AlignedVec, Conv, Epilogue, FilterShape, Layout, Shape, Tensor, TensorView, Window};

fn conv(k: usize, layout: Layout) -> Im2colConv {
    Im2colConv::new(&vec![0.0; 4 * 3 * k * k], FilterShape::new(4, 3, k, k), None, Window::square(k, 1, 0), layout)
        .unwrap()
}

fn err_text<T: std::fmt::Debug>(r: convkit_tensor::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn conv_input_channel_mismatch() {
    let x = Tensor::zeros(Shape::new(1, 5, 8, 8), Layout::Nhwc).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 4, 6, 6), Layout::Nhwc).unwrap();
    let e =
        err_text(conv(3, Layout::Nhwc).forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::zeros(0)));
    assert!(e.contains("input channels") && e.contains("expected 3, got 5"), "{e}");
}

#[test]
fn conv_output_shape_mismatch() {
    let x = Tensor::zeros(Shape::new(1, 3, 8, 8), Layout::Nhwc).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 4, 8, 8), Layout::Nhwc).unwrap();
    let e =
        err_text(conv(3, Layout::Nhwc).forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::zeros(0)));
    assert!(e.contains("output shape"), "{e}");
}

#[test]
fn conv_layout_mismatch() {
    let x = Tensor::zeros(Shape::new(1, 3, 8, 8), Layout::Nchw).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 4, 6, 6), Layout::Nhwc).unwrap();
    let e =
        err_text(conv(3, Layout::Nhwc).forward(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut AlignedVec::zeros(0)));
    assert!(e.contains("input layout"), "{e}");
}

#[test]
fn conv_residual_shape_mismatch() {
    let x = Tensor::zeros(Shape::new(1, 3, 8, 8), Layout::Nhwc).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 4, 6, 6), Layout::Nhwc).unwrap();
    let r = Tensor::zeros(Shape::new(1, 4, 6, 5), Layout::Nhwc).unwrap();
    let ep = Epilogue { residual: Some(r.view()), ..Epilogue::NONE };
    let e = err_text(conv(3, Layout::Nhwc).forward(x.view(), &mut y.view_mut(), ep, &mut AlignedVec::zeros(0)));
    assert!(e.contains("residual shape"), "{e}");
}

#[test]
fn kernel_larger_than_padded_input() {
    let x = Tensor::zeros(Shape::new(1, 3, 4, 9), Layout::Nhwc).unwrap();
    let e = err_text(conv(5, Layout::Nhwc).output_shape(x.shape()));
    assert!(e.contains("larger than the padded input height"), "{e}");
    let e = err_text(max_pool2d(Family::best(), x.view(), Window::square(5, 1, 0)));
    assert!(e.contains("larger than the padded input"), "{e}");
}

#[test]
fn zero_size_dims() {
    let e = err_text(Tensor::zeros(Shape::new(1, 0, 4, 4), Layout::Nchw));
    assert!(e.contains("zero-size"), "{e}");
    let e = err_text(Im2colConv::new(&[], FilterShape::new(0, 3, 3, 3), None, Window::square(3, 1, 1), Layout::Nhwc));
    assert!(e.contains("zero-size"), "{e}");
    let e = err_text(Shape::new(1, 3, 0, 4).validate());
    assert!(e.contains("zero-size"), "{e}");
    let e = err_text(Window::square(3, 0, 1).output_hw(8, 8));
    assert!(e.contains("stride 0"), "{e}");
}

#[test]
fn dims_that_overflow() {
    let big = Shape::new(usize::MAX / 2, 4, 2, 2);
    let e = err_text(big.numel());
    assert!(e.contains("overflow"), "{e}");
    let e = err_text(conv(3, Layout::Nhwc).output_shape(Shape::new(1, 3, usize::MAX / 2, usize::MAX / 2)));
    assert!(e.contains("overflow"), "{e}");
    // Dimensions whose product wraps are an overflow in both im2col layouts, not a call
    // that writes nothing (the image slice is empty, as a wrapped product would allow).
    let dims = ImageDims { h: 1 << 32, w: 1 << 32, c: 1 << 1 };
    for f in [im2col_nhwc, convkit_im2col::im2col_nchw] {
        let e = err_text(f(&[], dims, &Window::square(1, 1, 0), 0..1, &mut []));
        assert!(e.contains("overflow") && e.contains("im2col image"), "{e}");
    }
}

#[test]
fn weight_and_bias_lengths() {
    let e = err_text(Im2colConv::new(
        &[0.0; 10],
        FilterShape::new(4, 3, 3, 3),
        None,
        Window::square(3, 1, 1),
        Layout::Nhwc,
    ));
    assert!(e.contains("weight length") && e.contains("expected 108, got 10"), "{e}");
    let e = err_text(Im2colConv::new(
        &[0.0; 108],
        FilterShape::new(4, 3, 3, 3),
        Some(&[0.0; 3]),
        Window::square(3, 1, 1),
        Layout::Nhwc,
    ));
    assert!(e.contains("bias length"), "{e}");
    let e = err_text(Im2colConv::new(
        &[0.0; 108],
        FilterShape::new(4, 3, 3, 3),
        None,
        Window::square(5, 1, 1),
        Layout::Nhwc,
    ));
    assert!(e.contains("window kernel"), "{e}");
}

#[test]
fn view_with_wrong_length() {
    let e = err_text(TensorView::new(Shape::new(2, 3, 4, 5), Layout::Nchw, &[0.0; 119]));
    assert!(e.contains("expected 120, got 119"), "{e}");
}

#[test]
fn im2col_scratch_too_short() {
    let dims = ImageDims { h: 4, w: 4, c: 2 };
    let e = err_text(im2col_nhwc(&[0.0; 32], dims, &Window::square(3, 1, 1), 0..4, &mut [0.0; 10]));
    assert!(e.contains("scratch length"), "{e}");
    let e = err_text(im2col_nhwc(&[0.0; 32], dims, &Window::square(3, 1, 1), 0..5, &mut [0.0; 1000]));
    assert!(e.contains("output rows"), "{e}");
}

#[test]
fn pool_errors() {
    let x = Tensor::zeros(Shape::new(1, 3, 8, 8), Layout::Nhwc).unwrap();
    let mut y = Tensor::zeros(Shape::new(1, 3, 3, 3), Layout::Nhwc).unwrap();
    let e = err_text(pool2d_into(Family::best(), x.view(), Window::square(2, 2, 0), PoolKind::Max, &mut y.view_mut()));
    assert!(e.contains("pool output shape"), "{e}");
    let e = err_text(max_pool2d(Family::best(), x.view(), Window::square(2, 2, 2)));
    assert!(e.contains("at most half the kernel"), "{e}");
    let e = err_text(global_avg_pool_into(Family::best(), x.view(), &mut [0.0; 2]));
    assert!(e.contains("expected 3, got 2"), "{e}");
}

/// A destination whose rows overlap would be written by two threads at once: refused.
#[test]
fn matmul_refuses_overlapping_destinations() {
    use convkit_im2col::{matmul, MatMut, MatRef, MatrixShape};
    let a = vec![1.0; 4 * 3];
    let b = vec![1.0; 3 * 4];
    let mut d = vec![0.0; 16];
    for (row_stride, col_stride) in [(2, 1), (1, 1), (0, 1), (4, 0)] {
        let shape = MatrixShape { rows: 4, cols: 4, row_stride, col_stride };
        let e = matmul(
            MatMut { data: &mut d, shape },
            MatRef { data: &a, shape: MatrixShape::row_major(4, 3) },
            MatRef { data: &b, shape: MatrixShape::row_major(3, 4) },
            false,
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("addresses some elements twice"), "{row_stride}, {col_stride}: {e}");
    }
    // Row-major and column-major destinations are fine.
    for shape in [MatrixShape::row_major(4, 4), MatrixShape { rows: 4, cols: 4, row_stride: 1, col_stride: 4 }] {
        let dst = MatMut { data: &mut d, shape };
        matmul(
            dst,
            MatRef { data: &a, shape: MatrixShape::row_major(4, 3) },
            MatRef { data: &b, shape: MatrixShape::row_major(3, 4) },
            false,
            true,
        )
        .unwrap();
        assert!(d.iter().all(|&v| v == 3.0));
    }
}
