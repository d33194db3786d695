use crate::error::{Error, Result};
use crate::shape::{Layout, Shape, Strides};
use crate::storage::AlignedVec;
use crate::Element;

/// An owned, contiguous 4-d f32 tensor in 64-byte aligned storage.
#[derive(Debug, Clone)]
pub struct Tensor {
    shape: Shape,
    layout: Layout,
    data: AlignedVec,
}

/// A borrowed, contiguous 4-d tensor of f32 (or of another [`Element`], bf16).
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a, T: Element = f32> {
    shape: Shape,
    layout: Layout,
    data: &'a [T],
}

/// A mutable borrowed, contiguous 4-d tensor of f32 (or of another [`Element`], bf16).
#[derive(Debug)]
pub struct TensorViewMut<'a, T: Element = f32> {
    shape: Shape,
    layout: Layout,
    data: &'a mut [T],
}

fn check_len(shape: Shape, len: usize) -> Result<()> {
    let numel = shape.numel()?;
    if numel != len {
        return Err(Error::mismatch(format!("buffer length for tensor of shape {shape}"), numel, len));
    }
    Ok(())
}

impl Tensor {
    /// A zero-filled tensor; running out of memory is an error.
    pub fn zeros(shape: Shape, layout: Layout) -> Result<Self> {
        let numel = shape.numel()?;
        Ok(Tensor { shape, layout, data: AlignedVec::try_zeros(numel)? })
    }

    /// A tensor whose element (n, c, h, w) is `f(n, c, h, w)`, whatever the layout.
    pub fn from_fn(shape: Shape, layout: Layout, mut f: impl FnMut(usize, usize, usize, usize) -> f32) -> Result<Self> {
        let mut t = Self::zeros(shape, layout)?;
        let s = shape.strides(layout);
        for n in 0..shape.n {
            for c in 0..shape.c {
                for h in 0..shape.h {
                    for w in 0..shape.w {
                        t.data[s.offset(n, c, h, w)] = f(n, c, h, w);
                    }
                }
            }
        }
        Ok(t)
    }

    /// A tensor holding a copy of `data`, laid out as `layout` says.
    pub fn from_slice(shape: Shape, layout: Layout, data: &[f32]) -> Result<Self> {
        check_len(shape, data.len())?;
        Ok(Tensor { shape, layout, data: AlignedVec::from_slice(data) })
    }

    /// Its shape (n, c, h, w).
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// Its layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Its elements in layout order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// Its elements in layout order, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// A borrowed view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView { shape: self.shape, layout: self.layout, data: &self.data }
    }
    /// A mutable borrowed view.
    pub fn view_mut(&mut self) -> TensorViewMut<'_> {
        TensorViewMut { shape: self.shape, layout: self.layout, data: &mut self.data }
    }
    /// Element strides of its layout.
    pub fn strides(&self) -> Strides {
        self.shape.strides(self.layout)
    }
    /// Element (n, c, h, w), whatever the layout. Panics out of range (like slice indexing).
    pub fn get(&self, n: usize, c: usize, h: usize, w: usize) -> f32 {
        self.view().get(n, c, h, w)
    }
    /// The same values in `layout` (a copy; a clone if the layout already matches).
    pub fn to_layout(&self, layout: Layout) -> Tensor {
        self.view().to_layout(layout)
    }
}

impl<'a, T: Element> TensorView<'a, T> {
    /// A view of `data` as a tensor of `shape` in `layout` (the length must match).
    pub fn new(shape: Shape, layout: Layout, data: &'a [T]) -> Result<Self> {
        check_len(shape, data.len())?;
        Ok(TensorView { shape, layout, data })
    }
    /// Its shape (n, c, h, w).
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// Its layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Its elements in layout order.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
    /// Element strides of its layout.
    pub fn strides(&self) -> Strides {
        self.shape.strides(self.layout)
    }
    #[inline]
    /// Element (n, c, h, w), whatever the layout.
    pub fn get(&self, n: usize, c: usize, h: usize, w: usize) -> T {
        self.data[self.strides().offset(n, c, h, w)]
    }
    /// The contiguous elements of image `n` (c*h*w values in this view's layout).
    pub fn image(&self, n: usize) -> &'a [T] {
        let len = self.shape.image_len();
        &self.data[n * len..(n + 1) * len]
    }
    /// The same view with elements of type `U`, if that is the type it holds (a generic
    /// caller's way to reach a kernel written for one element type).
    pub fn cast<U: Element>(self) -> Option<TensorView<'a, U>> {
        (T::PRECISION == U::PRECISION).then(|| TensorView {
            shape: self.shape,
            layout: self.layout,
            data: bytemuck::cast_slice(self.data),
        })
    }
}

impl<'a> TensorView<'a> {
    /// A copy in `layout`.
    pub fn to_layout(&self, layout: Layout) -> Tensor {
        let mut out = Tensor { shape: self.shape, layout, data: AlignedVec::zeros(self.data.len()) };
        convert_layout(self, &mut out.view_mut());
        out
    }
    /// An owned copy.
    pub fn to_tensor(&self) -> Tensor {
        Tensor { shape: self.shape, layout: self.layout, data: AlignedVec::from_slice(self.data) }
    }
}

impl<'a, T: Element> TensorViewMut<'a, T> {
    /// A mutable view of `data` as a tensor of `shape` in `layout` (the length must match).
    pub fn new(shape: Shape, layout: Layout, data: &'a mut [T]) -> Result<Self> {
        check_len(shape, data.len())?;
        Ok(TensorViewMut { shape, layout, data })
    }
    /// Its shape (n, c, h, w).
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// Its layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Its elements in layout order.
    pub fn data(&self) -> &[T] {
        self.data
    }
    /// Its elements in layout order, mutable.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }
    /// The elements, for as long as the view was borrowed.
    pub fn into_data(self) -> &'a mut [T] {
        self.data
    }
    /// A read-only view of the same elements.
    pub fn as_view(&self) -> TensorView<'_, T> {
        TensorView { shape: self.shape, layout: self.layout, data: self.data }
    }
    /// A view of the same elements with type `U`, if that is the type it holds.
    pub fn cast_mut<U: Element>(&mut self) -> Option<TensorViewMut<'_, U>> {
        (T::PRECISION == U::PRECISION).then(|| TensorViewMut {
            shape: self.shape,
            layout: self.layout,
            data: bytemuck::cast_slice_mut(&mut *self.data),
        })
    }
}

/// Copies `src` into `dst` (same shape), converting between layouts.
fn convert_layout(src: &TensorView<'_>, dst: &mut TensorViewMut<'_>) {
    let shape = src.shape;
    if src.layout == dst.layout {
        dst.data.copy_from_slice(src.data);
        return;
    }
    let (hw, c) = (shape.h * shape.w, shape.c);
    for n in 0..shape.n {
        let s = &src.data[n * c * hw..(n + 1) * c * hw];
        let d = &mut dst.data[n * c * hw..(n + 1) * c * hw];
        match src.layout {
            // NCHW -> NHWC: transpose a c x hw matrix.
            Layout::Nchw => transpose(s, d, c, hw),
            Layout::Nhwc => transpose(s, d, hw, c),
        }
    }
}

/// `dst` (cols x rows) = transpose of `src` (rows x cols), in cache-sized blocks.
pub fn transpose(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}
