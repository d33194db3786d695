//! The one interface of every convolution kernel, so that a model, a test or a benchmark
//! has one code path whatever the kernel.

use crate::{AlignedVec, Epilogue, FilterShape, Layout, Result, Shape, TensorView, TensorViewMut, Window};
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
