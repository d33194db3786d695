//! Affine quantization: u8 activations with a scale and a zero point per tensor, s8
//! weights with a scale per output channel and no zero point.

use crate::{Element, Error, Result};

/// How one u8 tensor stands for real values: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    scale: f32,
    zero_point: i32,
}

impl Quant {
    /// A scale (finite, > 0) and a zero point (0..=255), or an error that names the bad value.
    pub fn new(scale: f32, zero_point: i32) -> Result<Quant> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid(format!("quantization scale {scale} is not a finite positive number")));
        }
        if !(0..=255).contains(&zero_point) {
            return Err(Error::invalid(format!("u8 zero point {zero_point} is outside 0..=255")));
        }
        Ok(Quant { scale, zero_point })
    }

    /// The parameters that map `min..=max` onto 0..=255, the range first widened to hold
    /// 0, so that 0 (the padding of a convolution) is exactly a u8 value; a range of one
    /// point gets the scale of 1/255.
    pub fn from_range(min: f32, max: f32) -> Result<Quant> {
        if !(min.is_finite() && max.is_finite()) || min > max {
            return Err(Error::invalid(format!("activation range {min}..{max} is not a finite interval")));
        }
        let (min, max) = (min.min(0.0), max.max(0.0));
        let span = max - min;
        let scale = if span > 0.0 { span / 255.0 } else { 1.0 / 255.0 };
        let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as i32;
        Quant::new(scale, zero_point)
    }

    /// The scale.
    pub const fn scale(self) -> f32 {
        self.scale
    }

    /// The zero point, the u8 value of 0.
    pub const fn zero_point(self) -> i32 {
        self.zero_point
    }

    /// `v` on the u8 grid: `v * (1 / scale) + zero_point` (two f32 operations, each rounded
    /// once), rounded to nearest even and saturated. How a model quantizes its image; the
    /// kernels' epilogue folds its steps differently ([`Requant`]).
    pub fn quantize(self, v: f32) -> u8 {
        u8::from_f32(v * (1.0 / self.scale) + self.zero_point as f32)
    }

    /// The real value of `q`: `(q - zero_point) * scale`, the subtraction exact.
    pub fn dequantize(self, q: u8) -> f32 {
        (f32::from(q) - self.zero_point as f32) * self.scale
    }
}

impl std::fmt::Display for Quant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scale {} zero point {}", self.scale, self.zero_point)
    }
}

/// The quantization of an int8 convolution's u8 tensors: its input (whose zero point is
/// its padding and whose scale goes into the weights' column scales), its output, and
/// the residual its epilogue adds, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvQuant {
    /// The input's.
    pub input: Quant,
    /// The output's.
    pub output: Quant,
    /// The residual's (the tensor the epilogue adds), if the convolution takes one.
    pub residual: Option<Quant>,
}

impl ConvQuant {
    /// The scale of one unit of output channel c's s32 sum: the input's scale times the
    /// channel's weight scale (one f32 multiplication), for every channel. An error if a
    /// product is not a finite positive number.
    pub fn column_scales(&self, weight_scales: &[f32]) -> Result<Vec<f32>> {
        let scales: Vec<f32> = weight_scales.iter().map(|w| self.input.scale * w).collect();
        match scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            Some(c) => Err(Error::invalid(format!(
                "output channel {c}: weight scale {} times input scale {} is not a finite positive number",
                weight_scales[c], self.input.scale
            ))),
            None => Ok(scales),
        }
    }
}

/// The constants of an int8 GEMM's requantization epilogue, folded once per output
/// column so that each output costs one fused multiply-add, one more for a residual:
///
/// 1. `v = fma(f32(sum), multiplier, shift)`, `sum` the exact s32 sum (the input zero
///    point's share included), converted to nearest even;
/// 2. a residual `r` (its u8 value, or a real value): `v = fma(f32(r), residual_scale, v)`;
/// 3. ReLU: `v = max(floor, v)` (`floor` the output's zero point: real 0; NaN stays);
/// 4. a u8 output: `v` clamped to 0..=255 (NaN to 0) and rounded to nearest even; a real
///    output is `v`.
///
/// Every constant is one f32 expression of the quantizations (the order below), so the
/// kernels of every family and the reference give the same bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requant {
    /// `1 / output scale` (1 for a real output).
    pub inverse: f32,
    /// The output's zero point (0 for a real output): the real 0 that ReLU keeps to.
    pub floor: f32,
    /// What a residual is multiplied by: `residual scale * inverse` for a u8 residual,
    /// `inverse` for a real one.
    pub residual_scale: f32,
    /// `-(residual zero point) * residual_scale` (0 without a u8 residual): part of every
    /// column's shift.
    pub residual_shift: f32,
}

impl Requant {
    /// The constants for an output quantized with `output` (None: real) adding a residual
    /// quantized with `residual` (None: a real residual, or none).
    pub fn new(output: Option<Quant>, residual: Option<Quant>) -> Requant {
        let inverse = output.map_or(1.0, |q| 1.0 / q.scale);
        let residual_scale = residual.map_or(inverse, |r| r.scale * inverse);
        Requant {
            inverse,
            floor: output.map_or(0.0, |q| q.zero_point as f32),
            residual_scale,
            residual_shift: residual.map_or(0.0, |r| -(r.zero_point as f32) * residual_scale),
        }
    }

    /// One column's `(multiplier, shift)`: `column_scale * inverse` and
    /// `bias * inverse + floor + residual_shift` (left to right; bias 0 where there is none).
    #[inline]
    pub fn column(&self, column_scale: f32, bias: f32) -> (f32, f32) {
        (column_scale * self.inverse, bias * self.inverse + self.floor + self.residual_shift)
    }
}

/// The largest magnitude of a quantized weight: symmetric s8 weights use -127..=127, so
/// that negating a weight stays on the grid.
pub const WEIGHT_MAX: i32 = 127;

/// Weights of `channels` output channels (each a contiguous run of the same length, as
/// in OIHW) quantized symmetrically per channel: `w = scale[c] * q`, `q` in
/// -127..=127 rounded to nearest even. A channel of zeros gets scale 1. An error for an
/// empty or uneven split, or a weight that is not finite.
pub fn quantize_per_channel(weights: &[f32], channels: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    if channels == 0 || weights.is_empty() || !weights.len().is_multiple_of(channels) {
        return Err(Error::invalid(format!(
            "{} weights do not split into {channels} output channels of equal length",
            weights.len()
        )));
    }
    if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
        return Err(Error::invalid(format!("weight {i} is {}, which int8 cannot hold", weights[i])));
    }
    let per = weights.len() / channels;
    let mut scales = Vec::with_capacity(channels);
    let mut q = Vec::with_capacity(weights.len());
    for run in weights.chunks_exact(per) {
        let max = run.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / WEIGHT_MAX as f32 } else { 1.0 };
        if !scale.is_normal() {
            let c = scales.len();
            return Err(Error::invalid(format!(
                "output channel {c}'s weights (largest |w| {max}) are too small to quantize"
            )));
        }
        let inverse = 1.0 / scale;
        q.extend(run.iter().map(|w| (w * inverse).round_ties_even().clamp(-127.0, 127.0) as i8));
        scales.push(scale);
    }
    Ok((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_exact_and_the_range_ends_map_to_the_grid_ends() {
        for (min, max) in [(-1.5f32, 3.0f32), (0.0, 6.0), (-2.0, -1.0), (0.5, 0.5), (0.0, 0.0)] {
            let q = Quant::from_range(min, max).unwrap();
            assert_eq!(q.dequantize(q.quantize(0.0)), 0.0, "{min}..{max}: {q}");
            let (lo, hi) = (min.min(0.0), max.max(0.0));
            assert!(q.quantize(lo) <= 1 && (hi == lo || q.quantize(hi) >= 254), "{min}..{max}: {q}");
        }
    }

    #[test]
    fn bad_parameters_are_errors_that_name_the_value() {
        assert!(Quant::new(0.0, 0).unwrap_err().to_string().contains("scale 0"));
        assert!(Quant::new(f32::NAN, 0).is_err());
        assert!(Quant::new(1.0, 256).unwrap_err().to_string().contains("256"));
        assert!(Quant::new(1.0, -1).is_err());
        assert!(Quant::from_range(1.0, -1.0).is_err());
        assert!(Quant::from_range(f32::NEG_INFINITY, 1.0).is_err());
        assert!(quantize_per_channel(&[1.0; 5], 2).unwrap_err().to_string().contains("5 weights"));
        assert!(quantize_per_channel(&[1.0, f32::NAN], 1).unwrap_err().to_string().contains("weight 1"));
    }

    #[test]
    fn per_channel_weights_reach_127_and_round_back_within_half_a_step() {
        let w: Vec<f32> = (0..24).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.013 * (1 + i / 8) as f32).collect();
        let (q, scales) = quantize_per_channel(&w, 3).unwrap();
        for (c, (run, qrun)) in w.chunks(8).zip(q.chunks(8)).enumerate() {
            assert_eq!(qrun.iter().map(|v| v.unsigned_abs()).max(), Some(127), "channel {c}");
            for (w, q) in run.iter().zip(qrun) {
                assert!((w - scales[c] * f32::from(*q)).abs() <= scales[c] * 0.5 + 1e-7, "channel {c}: {w} vs {q}");
            }
        }
        assert_eq!(quantize_per_channel(&[0.0; 4], 2).unwrap().1, vec![1.0, 1.0]);
        let e = quantize_per_channel(&[1.0, 1.0, 1e-40, 0.0], 2).unwrap_err();
        assert!(e.to_string().contains("channel 1"), "{e}");
    }

    #[test]
    fn u8_elements_round_to_even_and_saturate() {
        let cases =
            [(0.5f32, 0u8), (1.5, 2), (2.5, 2), (-3.0, 0), (254.5, 254), (255.5, 255), (1e30, 255), (f32::NAN, 0)];
        for (v, want) in cases {
            assert_eq!(u8::from_f32(v), want, "{v}");
        }
    }

    /// The folded constants stand for the real-domain epilogue: `sum * column_scale + bias
    /// + (r - z_r) * s_r`, on the output's grid `/ s_y + z_y` (float64 here), to within a
    /// few f32 roundings; and a real output with a real residual is `sum * scale + bias + r`.
    #[test]
    fn requant_folds_the_real_domain_epilogue() {
        let (output, residual) = (Quant::new(0.037, 97).unwrap(), Quant::new(0.021, 140).unwrap());
        let (column_scale, bias) = (3.1e-4f32, -0.73f32);
        let folded = Requant::new(Some(output), Some(residual));
        let (multiplier, shift) = folded.column(column_scale, bias);
        let real = Requant::new(None, None);
        assert_eq!(real.column(column_scale, bias), (column_scale, bias));
        assert_eq!((real.residual_scale, real.residual_shift, real.floor), (1.0, 0.0, 0.0));
        assert_eq!(folded.floor, 97.0);
        for (sum, r) in [(0i32, 140u8), (12_345, 0), (-40_000, 255), (7_777, 141)] {
            let v = (sum as f32).mul_add(multiplier, shift);
            let v = f32::from(r).mul_add(folded.residual_scale, v);
            let want = (f64::from(sum) * f64::from(column_scale)
                + f64::from(bias)
                + (f64::from(r) - 140.0) * f64::from(residual.scale))
                / f64::from(output.scale)
                + 97.0;
            assert!((f64::from(v) - want).abs() < 1e-4 * want.abs().max(1.0), "sum {sum} r {r}: {v} vs {want}");
        }
    }
}
