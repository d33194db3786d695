use crate::error::{checked_product, Error, Result};
use crate::window::Window;
use std::fmt;

/// Memory order of a 4-d activation. Always carried explicitly: it is never inferred
/// from strides (when C == H == W the strides cannot tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// batch, channel, row, column (PyTorch, ONNX).
    Nchw,
    /// batch, row, column, channel (channels-last; what convkit's model runs on).
    Nhwc,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        })
    }
}

/// Logical size of a 4-d activation, independent of its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[n={}, c={}, h={}, w={}]", self.n, self.c, self.h, self.w)
    }
}

impl Shape {
    /// A shape of `n` images of `c` channels of `h` x `w`, in this order whatever the layout the tensor is stored in.
    pub const fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Shape { n, c, h, w }
    }

    /// Number of elements, or an error if any dim is zero or the product overflows.
    pub fn numel(&self) -> Result<usize> {
        self.validate()?;
        checked_product("shape", &[self.n, self.c, self.h, self.w])
    }

    /// Every dim must be at least 1 and the element count must fit in `usize`.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 || self.c == 0 || self.h == 0 || self.w == 0 {
            return Err(Error::invalid(format!("shape {self} has a zero-size dim")));
        }
        checked_product("shape", &[self.n, self.c, self.h, self.w]).map(|_| ())
    }

    /// Element strides (n, c, h, w) of a contiguous tensor of this shape in `layout`.
    pub fn strides(&self, layout: Layout) -> Strides {
        match layout {
            Layout::Nchw => Strides { n: self.c * self.h * self.w, c: self.h * self.w, h: self.w, w: 1 },
            Layout::Nhwc => Strides { n: self.h * self.w * self.c, c: 1, h: self.w * self.c, w: self.c },
        }
    }

    /// Elements of one image (c*h*w).
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// Element strides of the four logical dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    /// Distance between images.
    pub n: usize,
    /// Distance between channels.
    pub c: usize,
    /// Distance between rows.
    pub h: usize,
    /// Distance between columns.
    pub w: usize,
}

impl Strides {
    #[inline]
    /// Offset of element (n, c, h, w).
    pub fn offset(&self, n: usize, c: usize, h: usize, w: usize) -> usize {
        n * self.n + c * self.c + h * self.h + w * self.w
    }
}

/// Shape of convolution weights in OIHW order (PyTorch's layout): output channels,
/// input channels, kernel height, kernel width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilterShape {
    /// Output channels.
    pub co: usize,
    /// Input channels.
    pub ci: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
}

impl fmt::Display for FilterShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[co={}, ci={}, kh={}, kw={}]", self.co, self.ci, self.kh, self.kw)
    }
}

impl FilterShape {
    /// A filter of `co` output and `ci` input channels and a `kh` x `kw` kernel (OIHW order).
    pub const fn new(co: usize, ci: usize, kh: usize, kw: usize) -> Self {
        FilterShape { co, ci, kh, kw }
    }

    /// Length of the reduction of one output: ci * kh * kw.
    pub fn reduction_len(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    /// Checks that the dims are non-zero, that `weights` holds co*ci*kh*kw values and
    /// that `bias`, if given, holds co.
    pub fn check(&self, weights: &[f32], bias: Option<&[f32]>) -> Result<()> {
        if self.co == 0 || self.ci == 0 || self.kh == 0 || self.kw == 0 {
            return Err(Error::invalid(format!("filter shape {self} has a zero-size dim")));
        }
        let len = checked_product("filter shape", &[self.co, self.ci, self.kh, self.kw])?;
        if weights.len() != len {
            return Err(Error::mismatch(format!("weight length for filter {self}"), len, weights.len()));
        }
        if let Some(b) = bias {
            if b.len() != self.co {
                return Err(Error::mismatch(format!("bias length for filter {self}"), self.co, b.len()));
            }
        }
        Ok(())
    }

    /// Checks that `window` slides a kernel of this filter's size.
    pub fn check_window(&self, window: &Window) -> Result<()> {
        if window.kernel != (self.kh, self.kw) {
            return Err(Error::mismatch(
                format!("window kernel for filter {self}"),
                format!("({}, {})", self.kh, self.kw),
                format!("{:?}", window.kernel),
            ));
        }
        Ok(())
    }

    /// Output shape of convolving `input` with this filter over `window` (checks the
    /// input's channels and the window arithmetic).
    pub fn output_shape(&self, input: Shape, window: &Window) -> Result<Shape> {
        self.check_input(input)?;
        let (h, w) = window.output_hw(input.h, input.w)?;
        Ok(Shape::new(input.n, self.co, h, w))
    }

    /// Checks that an input of `input` shape fits this filter (channel count).
    pub fn check_input(&self, input: Shape) -> Result<()> {
        input.validate()?;
        if input.c != self.ci {
            return Err(Error::mismatch(format!("input channels of {input} for filter {self}"), self.ci, input.c));
        }
        Ok(())
    }
}
