//! The one interface of every convolution kernel, so that a model, a test or a benchmark
//! has one code path whatever the kernel.

use crate::{
    bf16, AlignedVec, Element, Epilogue, Error, FilterShape, Layout, Precision, Result, Shape, TensorView,
    TensorViewMut, Window,
};
use std::time::Duration;

/// A convolution whose weights were packed once, at construction, for one layout.
pub trait Conv: Send + Sync + std::fmt::Debug {
    /// The filter: output and input channels, kernel size.
    fn filter(&self) -> FilterShape;

    /// The window: kernel, stride, padding (dilation 1).
    fn window(&self) -> Window;

    /// The activation layout the weights were packed for.
    fn layout(&self) -> Layout;

    /// The output shape for an input of shape `input`, or an error naming the mismatch.
    fn output_shape(&self, input: Shape) -> Result<Shape> {
        self.filter().output_shape(input, &self.window())
    }

    /// Floats of scratch [`Conv::forward`] uses for an input of shape `input` (0 if none).
    fn scratch_len(&self, input: Shape) -> Result<usize>;

    /// Bytes of the packed weights and bias.
    fn weight_bytes(&self) -> usize;

    /// The precision the weights were packed for: what [`Conv::forward`] (f32) or
    /// [`Conv::forward_bf16`] (bf16) takes.
    fn precision(&self) -> Precision {
        Precision::F32
    }

    /// `output = epilogue(conv(input) + bias)` on the current rayon pool. `scratch` is
    /// grown to [`Conv::scratch_len`] if shorter; its contents are never read before
    /// they are written.
    fn forward(
        &self,
        input: TensorView<'_>,
        output: &mut TensorViewMut<'_>,
        epilogue: Epilogue<'_>,
        scratch: &mut AlignedVec,
    ) -> Result<()>;

    /// `output = epilogue(conv(input) + bias)` over bf16 activations, for a conv whose
    /// [`Conv::precision`] is bf16: f32 accumulation and epilogue, the output rounded to
    /// bf16 when stored. An error for a conv without a bf16 path.
    fn forward_bf16(
        &self,
        input: TensorView<'_, bf16>,
        output: &mut TensorViewMut<'_, bf16>,
        epilogue: Epilogue<'_, bf16>,
        scratch: &mut AlignedVec,
    ) -> Result<()> {
        let _ = (input, output, epilogue, scratch);
        Err(Error::invalid(format!("this {}x{} conv has no bf16 path", self.filter().kh, self.filter().kw)))
    }

    /// As [`Conv::forward`], and returns the time spent lowering the input (the im2col
    /// copies), zero for kernels that do not lower: what a profile shows as im2col's cost.
    fn forward_timed(
        &self,
        input: TensorView<'_>,
        output: &mut TensorViewMut<'_>,
        epilogue: Epilogue<'_>,
        scratch: &mut AlignedVec,
    ) -> Result<Duration> {
        self.forward(input, output, epilogue, scratch)?;
        Ok(Duration::ZERO)
    }
}

/// Runs `conv` over activations of type `T`: [`Conv::forward`] for f32,
/// [`Conv::forward_bf16`] for bf16. A conv packed for the other precision is an error.
pub fn conv_forward<T: Element>(
    conv: &dyn Conv,
    input: TensorView<'_, T>,
    output: &mut TensorViewMut<'_, T>,
    epilogue: Epilogue<'_, T>,
    scratch: &mut AlignedVec,
) -> Result<Duration> {
    if conv.precision() != T::PRECISION {
        return Err(Error::mismatch("activation precision of a conv", conv.precision(), T::PRECISION));
    }
    let mismatch = || Error::invalid("conv_forward: element type and precision disagree");
    match T::PRECISION {
        Precision::F32 => conv.forward_timed(
            input.cast().ok_or_else(mismatch)?,
            &mut output.cast_mut().ok_or_else(mismatch)?,
            epilogue.cast().ok_or_else(mismatch)?,
            scratch,
        ),
        Precision::Bf16 => {
            conv.forward_bf16(
                input.cast().ok_or_else(mismatch)?,
                &mut output.cast_mut().ok_or_else(mismatch)?,
                epilogue.cast().ok_or_else(mismatch)?,
                scratch,
            )?;
            Ok(Duration::ZERO)
        }
    }
}
