#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod conv;
mod element;
mod error;
mod quant;
mod shape;
mod storage;
mod tensor;
mod window;

pub use conv::{check_precision, Conv};
pub use element::{bf16, round_bf16, Element, Precision};
pub use error::{checked_product, Error, Result};
pub use quant::{quantize_per_channel, ConvQuant, Quant, Requant, WEIGHT_MAX};
pub use shape::{FilterShape, Layout, Shape, Strides};
pub use storage::{AlignedVec, ALIGN};
pub use tensor::{transpose, Tensor, TensorView, TensorViewMut};
pub use window::Window;

/// PyTorch's ReLU of one value: 0 where `v < 0`, else `v`, so NaN stays NaN (a plain
/// `v.max(0.0)` turns NaN into 0). The vector kernels compute the same with
/// `max(0, v)` in x86's operand order, which returns `v` when it is NaN.
#[inline(always)]
pub fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// Checks that an optional per-channel vector (bias) has `expected` entries.
pub fn check_channels(what: &str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::mismatch(what, format!("{expected} channels"), format!("{got}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_storage_is_aligned() {
        for len in [1, 15, 16, 17, 1000] {
            let v = AlignedVec::zeros(len);
            assert_eq!(v.as_ptr() as usize % ALIGN, 0);
            assert_eq!(v.len(), len);
        }
    }

    #[test]
    fn layout_round_trip_when_c_equals_h_equals_w() {
        let shape = Shape::new(2, 3, 3, 3);
        let t = Tensor::from_fn(shape, Layout::Nchw, |n, c, h, w| (n * 1000 + c * 100 + h * 10 + w) as f32).unwrap();
        let nhwc = t.to_layout(Layout::Nhwc);
        assert_eq!(nhwc.layout(), Layout::Nhwc);
        assert_eq!(nhwc.get(1, 2, 0, 1), 1201.0);
        assert_eq!(nhwc.data()[1], 100.0); // (n0, h0, w0, c1)
        let back = nhwc.to_layout(Layout::Nchw);
        assert_eq!(back.data(), t.data());
    }

    #[test]
    fn wrong_buffer_length_names_the_shape() {
        let e = TensorView::new(Shape::new(1, 2, 3, 4), Layout::Nhwc, &[0.0; 23]).unwrap_err();
        assert!(e.to_string().contains("expected 24, got 23"), "{e}");
    }

    #[test]
    fn zero_dim_and_overflow_are_errors() {
        assert!(Shape::new(1, 0, 3, 3).numel().is_err());
        let e = Shape::new(usize::MAX, 2, 2, 2).numel().unwrap_err();
        assert!(matches!(e, Error::Overflow(_)));
    }
}

/// What a convolution does to its output tile before storing it: the bias is always
/// added (it lives with the packed weights), then optionally a residual of the output's
/// shape and layout, then optionally the output's own prior contents (`accumulate`, so a
/// shortcut computed into the output buffer needs no buffer of its own), then optionally ReLU.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a, T: Element = f32> {
    /// Added after the bias: a tensor of the output's shape and layout.
    pub residual: Option<TensorView<'a, T>>,
    /// Add the output's prior contents (a shortcut computed into it).
    pub accumulate: bool,
    /// max(v, 0) last (NaN stays NaN).
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Bias only.
    pub const NONE: Epilogue<'static> = Epilogue { residual: None, accumulate: false, relu: false };
}

impl<'a, T: Element> Epilogue<'a, T> {
    /// Bias, then ReLU.
    pub fn relu() -> Self {
        Epilogue { residual: None, accumulate: false, relu: true }
    }

    /// The same epilogue over elements of type `U` (None if it holds a residual of
    /// another type).
    pub fn cast<U: Element>(self) -> Option<Epilogue<'a, U>> {
        let residual = match self.residual {
            Some(r) => Some(r.cast::<U>()?),
            None => None,
        };
        Some(Epilogue { residual, accumulate: self.accumulate, relu: self.relu })
    }

    /// Checks a conv call: input and output in the `layout` the conv was prepared for, the
    /// output of shape `expected`, and the residual (if any) like the output. `conv` names
    /// the kind of conv in messages.
    pub fn check_conv_call(
        &self,
        conv: &str,
        layout: Layout,
        input: &TensorView<'_, T>,
        output: &TensorViewMut<'_, T>,
        expected: Shape,
    ) -> Result<()> {
        for (what, got) in [("input layout", input.layout()), ("output layout", output.layout())] {
            if got != layout {
                return Err(Error::mismatch(format!("{what} of a {conv} prepared for {layout}"), layout, got));
            }
        }
        if output.shape() != expected {
            return Err(Error::mismatch(format!("{conv} output shape"), expected, output.shape()));
        }
        self.check(expected, layout)
    }

    /// Checks that the residual, if any, has the output's shape and layout.
    pub fn check(&self, output: Shape, layout: Layout) -> Result<()> {
        if let Some(r) = &self.residual {
            if r.shape() != output {
                return Err(Error::mismatch("residual shape", output, r.shape()));
            }
            if r.layout() != layout {
                return Err(Error::mismatch("residual layout", layout, r.layout()));
            }
        }
        Ok(())
    }
}
