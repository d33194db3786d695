#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use convkit_tensor::{Error, FilterShape, Layout, Result, Shape, Tensor, TensorView, Window};

/// 2-d convolution (groups = 1, zero padding) of `input` with OIHW `weights`. The output
/// has the input's layout.
pub fn conv2d(
    input: TensorView<'_>,
    weights: &[f32],
    filter: FilterShape,
    bias: Option<&[f32]>,
    window: Window,
) -> Result<Tensor> {
    filter.check(weights, bias)?;
    filter.check_window(&window)?;
    let s = input.shape();
    let out_shape = filter.output_shape(s, &window)?;
    Tensor::from_fn(out_shape, input.layout(), |n, co, oy, ox| {
        let mut acc = bias.map_or(0.0, |b| b[co] as f64);
        for ci in 0..filter.ci {
            for ky in 0..filter.kh {
                for kx in 0..filter.kw {
                    let Some((iy, ix)) = input_pos(&window, s, oy, ox, ky, kx) else {
                        continue;
                    };
                    let w = weights[((co * filter.ci + ci) * filter.kh + ky) * filter.kw + kx];
                    acc += w as f64 * input.get(n, ci, iy, ix) as f64;
                }
            }
        }
        acc as f32
    })
}

/// The input position read by kernel tap (ky, kx) of output (oy, ox), or None in padding.
fn input_pos(window: &Window, s: Shape, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * window.stride.0 + ky * window.dilation.0).checked_sub(window.padding.0)?;
    let ix = (ox * window.stride.1 + kx * window.dilation.1).checked_sub(window.padding.1)?;
    (iy < s.h && ix < s.w).then_some((iy, ix))
}

/// Max pooling; padding never wins (it is -inf), and a NaN in the window makes the
/// output NaN (PyTorch's rule).
pub fn max_pool2d(input: TensorView<'_>, window: Window) -> Result<Tensor> {
    let s = input.shape();
    s.validate()?;
    let (ho, wo) = window.output_hw(s.h, s.w)?;
    Tensor::from_fn(Shape::new(s.n, s.c, ho, wo), input.layout(), |n, c, oy, ox| {
        let mut m = f32::NEG_INFINITY;
        for ky in 0..window.kernel.0 {
            for kx in 0..window.kernel.1 {
                if let Some((iy, ix)) = input_pos(&window, s, oy, ox, ky, kx) {
                    let v = input.get(n, c, iy, ix);
                    if v.is_nan() || v > m {
                        m = v;
                    }
                }
            }
        }
        m
    })
}

/// Average pooling with PyTorch/ONNX semantics. With `count_include_pad` the divisor is
/// the window clipped to the padded input (so ceil-mode overhang is not counted);
/// without, it is the number of input elements the window covers.
pub fn avg_pool2d(input: TensorView<'_>, window: Window, count_include_pad: bool) -> Result<Tensor> {
    let s = input.shape();
    s.validate()?;
    let (ho, wo) = window.output_hw(s.h, s.w)?;
    let (ph, pw) = window.padding;
    Tensor::from_fn(Shape::new(s.n, s.c, ho, wo), input.layout(), |n, c, oy, ox| {
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for ky in 0..window.kernel.0 {
            for kx in 0..window.kernel.1 {
                if let Some((iy, ix)) = input_pos(&window, s, oy, ox, ky, kx) {
                    sum += input.get(n, c, iy, ix) as f64;
                    count += 1;
                }
            }
        }
        if count_include_pad {
            let y0 = oy * window.stride.0;
            let x0 = ox * window.stride.1;
            let y1 = (y0 + window.kernel.0).min(s.h + 2 * ph);
            let x1 = (x0 + window.kernel.1).min(s.w + 2 * pw);
            count = (y1 - y0) * (x1 - x0);
        }
        (sum / count as f64) as f32
    })
}

/// Mean over h and w: returns [n, c] row-major.
pub fn global_avg_pool(input: TensorView<'_>) -> Result<Vec<f32>> {
    let s = input.shape();
    s.validate()?;
    let mut out = Vec::with_capacity(s.n * s.c);
    for n in 0..s.n {
        for c in 0..s.c {
            let mut sum = 0.0f64;
            for h in 0..s.h {
                for w in 0..s.w {
                    sum += input.get(n, c, h, w) as f64;
                }
            }
            out.push((sum / (s.h * s.w) as f64) as f32);
        }
    }
    Ok(out)
}

/// `y[n, o] = sum_i x[n, i] * w[o, i] + b[o]`; x is `[n, inputs]`, w is `[outputs, inputs]`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, inputs: usize) -> Result<Vec<f32>> {
    if inputs == 0 || !x.len().is_multiple_of(inputs) || !w.len().is_multiple_of(inputs) {
        return Err(Error::mismatch(
            "linear: lengths of x and w must be multiples of the input features",
            inputs,
            format!("x {} and w {}", x.len(), w.len()),
        ));
    }
    let outputs = w.len() / inputs;
    if let Some(b) = bias {
        if b.len() != outputs {
            return Err(Error::mismatch("linear bias length", outputs, b.len()));
        }
    }
    let mut y = Vec::with_capacity(x.len() / inputs * outputs);
    for row in x.chunks(inputs) {
        for o in 0..outputs {
            let mut acc = bias.map_or(0.0, |b| b[o] as f64);
            for (a, b) in row.iter().zip(&w[o * inputs..(o + 1) * inputs]) {
                acc += *a as f64 * *b as f64;
            }
            y.push(acc as f32);
        }
    }
    Ok(y)
}

/// max(x, 0) elementwise.
pub fn relu(t: &Tensor) -> Tensor {
    let mut out = t.clone();
    out.data_mut().iter_mut().for_each(|v| *v = convkit_tensor::relu(*v));
    out
}

/// a + b elementwise; both in any layout, the result in `a`'s.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(Error::mismatch("add: shapes", a.shape(), b.shape()));
    }
    let b = b.to_layout(a.layout());
    let mut out = a.clone();
    out.data_mut().iter_mut().zip(b.data()).for_each(|(x, y)| *x += *y);
    Ok(out)
}

/// |x| elementwise, for the magnitude bound of a test's tolerance.
pub fn abs(t: &Tensor) -> Tensor {
    let mut out = t.clone();
    out.data_mut().iter_mut().for_each(|v| *v = v.abs());
    out
}

/// |x| of a slice, for weights and biases.
pub fn abs_vec(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Layout-independent comparison of `got` against `want` with per-element tolerance
/// `rel * magnitude + abs_tol`. Returns a description of the worst elements on failure.
pub fn compare(
    got: &Tensor,
    want: &Tensor,
    magnitude: &Tensor,
    rel: f32,
    abs_tol: f32,
) -> std::result::Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape: got {}, want {}", got.shape(), want.shape()));
    }
    let s = got.shape();
    let mut bad = Vec::new();
    let mut count = 0usize;
    for n in 0..s.n {
        for c in 0..s.c {
            for h in 0..s.h {
                for w in 0..s.w {
                    let (g, e) = (got.get(n, c, h, w), want.get(n, c, h, w));
                    let tol = rel * magnitude.get(n, c, h, w) + abs_tol;
                    let within = (g - e).abs() <= tol; // false for NaN too
                    if !within {
                        count += 1;
                        if bad.len() < 8 {
                            bad.push(format!("(n={n}, c={c}, h={h}, w={w}): got {g}, want {e}, tol {tol}"));
                        }
                    }
                }
            }
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(format!("{count} of {} elements wrong, first: {}", got.data().len(), bad.join("; ")))
    }
}

/// A layout tag for tests that draw one.
pub const LAYOUTS: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv2d_by_hand() {
        // 1x1x3x3 input 1..9, 2x2 all-ones kernel, stride 1, no padding: window sums.
        let x =
            Tensor::from_slice(Shape::new(1, 1, 3, 3), Layout::Nchw, &[1., 2., 3., 4., 5., 6., 7., 8., 9.]).unwrap();
        let y =
            conv2d(x.view(), &[1.0; 4], FilterShape::new(1, 1, 2, 2), Some(&[0.5]), Window::square(2, 1, 0)).unwrap();
        assert_eq!(y.data(), &[12.5, 16.5, 24.5, 28.5]);
    }

    #[test]
    fn avg_pool_padding_divisors() {
        let x = Tensor::from_slice(Shape::new(1, 1, 2, 2), Layout::Nhwc, &[4.0; 4]).unwrap();
        let w = Window::square(3, 1, 1);
        // Corner window covers 4 real + 5 padded cells.
        assert_eq!(avg_pool2d(x.view(), w, true).unwrap().get(0, 0, 0, 0), 16.0 / 9.0);
        assert_eq!(avg_pool2d(x.view(), w, false).unwrap().get(0, 0, 0, 0), 4.0);
    }

    #[test]
    fn ceil_mode_average_excludes_overhang() {
        let x = Tensor::from_fn(Shape::new(1, 1, 3, 3), Layout::Nchw, |_, _, h, w| (h * 3 + w) as f32).unwrap();
        let y = avg_pool2d(x.view(), Window::square(2, 2, 0).with_ceil_mode(true), false).unwrap();
        assert_eq!(y.shape(), Shape::new(1, 1, 2, 2));
        assert_eq!(y.get(0, 0, 1, 1), 8.0);
        assert_eq!(y.get(0, 0, 0, 1), (2.0 + 5.0) / 2.0);
    }
}

/// Exact int8 convolution (groups = 1): for each output, the s32 sum over its taps of
/// `(x - input_zero_point) * w`, where padding reads as the zero point (a real zero).
/// `weights` are OIHW s8. The sums come back as `[n][co][oy][ox]` whatever the input's
/// layout, with the output shape. An error if a sum leaves s32 (it never does for a
/// reduction below 66 000).
pub fn conv2d_int8(
    input: TensorView<'_, u8>,
    input_zero_point: i32,
    weights: &[i8],
    filter: FilterShape,
    window: Window,
) -> Result<(Shape, Vec<i32>)> {
    filter.check_window(&window)?;
    let per_out = filter.ci * filter.kh * filter.kw;
    if weights.len() != filter.co * per_out {
        return Err(Error::mismatch(format!("int8 weights of a {filter} filter"), filter.co * per_out, weights.len()));
    }
    let s = input.shape();
    let out = filter.output_shape(s, &window)?;
    let mut sums = Vec::with_capacity(out.n * out.c * out.h * out.w);
    for n in 0..out.n {
        for co in 0..out.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let mut acc = 0i64;
                    for ci in 0..filter.ci {
                        for ky in 0..filter.kh {
                            for kx in 0..filter.kw {
                                let Some((iy, ix)) = input_pos(&window, s, oy, ox, ky, kx) else {
                                    continue;
                                };
                                let w = weights[((co * filter.ci + ci) * filter.kh + ky) * filter.kw + kx];
                                let x = i64::from(input.get(n, ci, iy, ix)) - i64::from(input_zero_point);
                                acc += x * i64::from(w);
                            }
                        }
                    }
                    sums.push(i32::try_from(acc).map_err(|_| Error::overflow(format!("int8 sum {acc} leaves s32")))?);
                }
            }
        }
    }
    Ok((out, sums))
}

/// The residual an int8 epilogue adds: a real value, or a u8 one with its scale and zero
/// point.
#[derive(Debug, Clone, Copy)]
pub enum Residual {
    /// An f32 residual, added as it is.
    Real(f32),
    /// A u8 residual: its real value `(q - zero_point) * scale` is added, folded into the
    /// epilogue's constants as [`convkit_tensor::Requant`] defines.
    Quantized(u8, convkit_tensor::Quant),
}

/// What the int8 epilogue makes of the exact sum `sum` of one output, each step written
/// out in scalar f32 in the order [`convkit_tensor::Requant`] defines: a real value, or
/// for an output quantized with `output` its u8 value (as f32). `column_scale` is the
/// input scale times the channel's weight scale.
pub fn requantize(
    sum: i32,
    column_scale: f32,
    bias: Option<f32>,
    residual: Option<Residual>,
    relu: bool,
    output: Option<convkit_tensor::Quant>,
) -> f32 {
    let residual_quant = match residual {
        Some(Residual::Quantized(_, q)) => Some(q),
        _ => None,
    };
    let requant = convkit_tensor::Requant::new(output, residual_quant);
    let (multiplier, shift) = requant.column(column_scale, bias.unwrap_or(0.0));
    let mut v = (sum as f32).mul_add(multiplier, shift);
    match residual {
        Some(Residual::Real(r)) => v = r.mul_add(requant.residual_scale, v),
        Some(Residual::Quantized(q, _)) => v = f32::from(q).mul_add(requant.residual_scale, v),
        None => {}
    }
    // max(floor, v) as x86's maxps computes it: v unless floor > v (so NaN stays).
    if relu && requant.floor > v {
        v = requant.floor;
    }
    if output.is_none() {
        return v;
    }
    // Clamped to the grid as max(v, 0) then min(v, 255) compute it (NaN to 0), rounded to
    // nearest even.
    let v = if v > 0.0 { v } else { 0.0 };
    let v = if v < 255.0 { v } else { 255.0 };
    v.round_ties_even()
}
