//! The one interface of every convolution kernel, so that a model, a test or a benchmark
//! has one code path whatever the kernel.

use crate::{
    AlignedVec, Element, Epilogue, Error, FilterShape, Layout, Precision, Result, Shape, TensorView, TensorViewMut,
    Window,
};
use std::time::Duration;

/// A convolution whose weights were packed once, at construction, for one layout, over
/// activations of element type `T` (f32 unless said). The convs of the kernel crates are
/// typed (`DirectConv<T>` implements `Conv<T>`), so activations of another type do not
/// compile; their constructors refuse a kernel of another precision with an error that
/// names both ([`check_precision`]).
pub trait Conv<T: Element = f32>: Send + Sync + std::fmt::Debug {
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

    /// The precision the weights were packed for: the element type [`Conv::forward`] takes.
    fn precision(&self) -> Precision;

    /// `output = epilogue(conv(input) + bias)` on the current rayon pool: f32 accumulation
    /// and epilogue whatever `T`, the output rounded to `T` when stored. `scratch` is
    /// grown to [`Conv::scratch_len`] if shorter; its contents are never read before they
    /// are written.
    fn forward(
        &self,
        input: TensorView<'_, T>,
        output: &mut TensorViewMut<'_, T>,
        epilogue: Epilogue<'_, T>,
        scratch: &mut AlignedVec,
    ) -> Result<()>;

    /// As [`Conv::forward`], and returns the time spent lowering the input (the im2col
    /// copies), zero for kernels that do not lower: what a profile shows as im2col's cost.
    fn forward_timed(
        &self,
        input: TensorView<'_, T>,
        output: &mut TensorViewMut<'_, T>,
        epilogue: Epilogue<'_, T>,
        scratch: &mut AlignedVec,
    ) -> Result<Duration> {
        self.forward(input, output, epilogue, scratch)?;
        Ok(Duration::ZERO)
    }
}

/// Ok if a conv packed in `packed` may run over activations of type `T`, else an error
/// naming both: what a conv's constructor checks of the kernel it is given.
pub fn check_precision<T: Element>(conv: &str, packed: Precision) -> Result<()> {
    if packed == T::PRECISION {
        Ok(())
    } else {
        Err(Error::mismatch(format!("activation precision of a {conv} packed in {packed}"), packed, T::PRECISION))
    }
}
