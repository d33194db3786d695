use crate::error::{Error, Result};

/// The sliding-window geometry shared by convolution and pooling: kernel, stride,
/// symmetric padding, dilation and PyTorch's ceil mode. All output-size arithmetic of
/// convkit lives here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// (height, width) of the kernel.
    pub kernel: (usize, usize),
    /// Step between windows (height, width).
    pub stride: (usize, usize),
    /// Zero (conv) or ignored (pool) padding added on both sides of each axis.
    pub padding: (usize, usize),
    /// Step between kernel taps (height, width); 1 is a dense kernel.
    pub dilation: (usize, usize),
    /// Round the output size up (pooling only in practice).
    pub ceil_mode: bool,
}

impl Window {
    /// Square kernel `k`, stride `s`, padding `p`, no dilation, floor mode.
    pub const fn square(k: usize, s: usize, p: usize) -> Self {
        Window { kernel: (k, k), stride: (s, s), padding: (p, p), dilation: (1, 1), ceil_mode: false }
    }

    /// The same window with ceil mode on or off.
    pub const fn with_ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
    }

    /// Output (height, width) for an input of `h` x `w`.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((
            self.output_len("height", h, self.kernel.0, self.stride.0, self.padding.0, self.dilation.0)?,
            self.output_len("width", w, self.kernel.1, self.stride.1, self.padding.1, self.dilation.1)?,
        ))
    }

    /// One axis: floor or ceil of (in + 2p - d(k-1) - 1) / s, plus one. In ceil mode the
    /// last window must start inside the input or its left padding (PyTorch's rule).
    fn output_len(
        &self,
        axis: &str,
        input: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> Result<usize> {
        if input == 0 {
            return Err(Error::invalid(format!("input {axis} is 0")));
        }
        if kernel == 0 || stride == 0 || dilation == 0 {
            return Err(Error::invalid(format!(
                "window along {axis}: kernel {kernel}, stride {stride}, dilation {dilation} must all be at least 1"
            )));
        }
        let overflow = || {
            Error::overflow(format!(
                "window arithmetic along {axis} (input {input}, padding {pad}, kernel {kernel}, dilation {dilation})"
            ))
        };
        let padded = pad.checked_mul(2).and_then(|p2| input.checked_add(p2)).ok_or_else(overflow)?;
        let span = (kernel - 1).checked_mul(dilation).ok_or_else(overflow)? + 1;
        // PyTorch's rule in signed arithmetic (i128: no size here overflows it): in ceil
        // mode a window may start inside the input and hang over its end, so a 2x2 pool
        // over a 1-pixel input has one output; then the last window must start inside the
        // input or its left padding.
        let (room, s) = (padded as i128 - span as i128, stride as i128);
        let mut out = (room + if self.ceil_mode { s - 1 } else { 0 }).div_euclid(s) + 1;
        if self.ceil_mode && out >= 1 && (out - 1) * s >= (input + pad) as i128 {
            out -= 1;
        }
        if out < 1 {
            return Err(Error::invalid(format!(
                "kernel {axis} {span} (kernel {kernel}, dilation {dilation}) is larger than the padded input {axis} {padded}"
            )));
        }
        let out = out as usize; // at most padded + 1, a usize
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_shapes() {
        assert_eq!(Window::square(7, 2, 3).output_hw(224, 224).unwrap(), (112, 112));
        assert_eq!(Window::square(3, 2, 1).output_hw(112, 112).unwrap(), (56, 56));
        assert_eq!(Window::square(1, 2, 0).output_hw(56, 56).unwrap(), (28, 28));
    }

    #[test]
    fn ceil_mode_rounds_up_but_stays_inside() {
        let w = Window::square(2, 2, 0).with_ceil_mode(true);
        assert_eq!(w.output_hw(7, 7).unwrap(), (4, 4));
        assert_eq!(Window::square(2, 2, 0).output_hw(7, 7).unwrap(), (3, 3));
        // PyTorch: input 5, kernel 2, stride 2, pad 1, ceil -> 3 (a 4th window would start in right padding)
        let w = Window::square(2, 2, 1).with_ceil_mode(true);
        assert_eq!(w.output_hw(5, 5).unwrap(), (3, 3));
        // PyTorch (torch.nn.AvgPool2d(2, 2, ceil_mode=True)): a 1x1 input has one window,
        // which hangs over its end; without ceil mode it has none.
        let w = Window::square(2, 2, 0).with_ceil_mode(true);
        assert_eq!(w.output_hw(1, 1).unwrap(), (1, 1));
        assert_eq!(w.output_hw(3, 1).unwrap(), (2, 1));
        assert!(Window::square(2, 2, 0).output_hw(1, 1).is_err());
        // ResNet's stem pool (3x3, stride 2, padding 1) on 1 pixel: one window.
        assert_eq!(Window::square(3, 2, 1).output_hw(1, 1).unwrap(), (1, 1));
        // A kernel of 3 with ceil mode over 1 pixel and no padding: none.
        assert!(Window::square(3, 2, 0).with_ceil_mode(true).output_hw(1, 1).is_err());
    }

    #[test]
    fn kernel_larger_than_input_is_an_error() {
        let e = Window::square(5, 1, 0).output_hw(3, 8).unwrap_err();
        assert!(e.to_string().contains("larger than the padded input height"), "{e}");
    }

    #[test]
    fn huge_padding_is_an_overflow_error() {
        let e = Window::square(3, 1, usize::MAX / 2 + 1).output_hw(3, 3).unwrap_err();
        assert!(matches!(e, Error::Overflow(_)), "{e}");
    }
}
