//! Pillow's resampling (`Image.resize` with `BILINEAR` or `BICUBIC`, which torchvision's
//! and timm's `Resize` call on a PIL image), reproduced to the bit: the same filter
//! weights in f64, normalised per output pixel, turned into 22-bit fixed point, a
//! horizontal pass then a vertical one, each rounded and clamped to 8 bits. Only the
//! pixels a center crop keeps are computed: each output pixel depends on its own
//! weights alone, so the crop of the whole resized image is the same.

/// Fractional bits of the fixed-point weights: Pillow's `PRECISION_BITS` (32 - 8 - 2,
/// so that a sum of 8-bit values times weights fits an i32).
const PRECISION_BITS: u32 = 22;

/// A resampling filter of Pillow's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// The triangle filter (`Image.BILINEAR`), support 1.
    Bilinear,
    /// Keys' cubic with a = -0.5 (`Image.BICUBIC`), support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// The weight at distance `x`, evaluated in Pillow's order of operations.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Bilinear => 0.0,
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// The fixed-point weights of some output pixels along one axis: output `i` reads
/// `len[i]` inputs from `first[i]` on, with the weights `weights[i * taps..][..len[i]]`.
#[derive(Debug)]
struct Weights {
    taps: usize,
    first: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Weights {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` to
    /// `out_size`, kept for the outputs `start..start + count`.
    fn new(in_size: usize, out_size: usize, start: usize, count: usize, filter: Filter) -> Weights {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        let taps = support.ceil() as usize * 2 + 1;
        let inverse = 1.0 / filter_scale;
        let mut w = Weights { taps, first: Vec::new(), len: Vec::new(), weights: vec![0; count * taps] };
        let mut row = vec![0.0f64; taps];
        for (i, out) in (start..start + count).enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // C's (int) conversions: truncation toward zero, then the clamps.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let len = end - first;
            let mut total = 0.0;
            for (x, r) in row.iter_mut().enumerate().take(len) {
                *r = filter.weight(((x + first) as f64 - center + 0.5) * inverse);
                total += *r;
            }
            for (x, r) in row.iter().enumerate().take(len) {
                let k = if total != 0.0 { r / total } else { *r };
                let fixed = k * (1u32 << PRECISION_BITS) as f64;
                w.weights[i * taps + x] = if k < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            w.first.push(first);
            w.len.push(len);
        }
        w
    }

    fn of(&self, i: usize) -> (usize, &[i32]) {
        (self.first[i], &self.weights[i * self.taps..i * self.taps + self.len[i]])
    }
}

/// A fixed-point sum back to 8 bits: Pillow's `clip8` (the rounding half is in the sum's
/// start value).
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The start value of every sum: one half, so that the shift in [`clip8`] rounds.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// The `crop_w` x `crop_h` window at (`crop_x`, `crop_y`) of `rgb` (`width` x `height`,
/// 3 bytes a pixel) resized to `out_w` x `out_h` by Pillow's `filter`: RGB bytes, row by
/// row. The window must lie inside the resized image.
#[allow(clippy::too_many_arguments)] // a size, a resize and a window: each pair belongs together
pub(crate) fn resize_window(
    rgb: &[u8],
    (width, height): (usize, usize),
    (out_w, out_h): (usize, usize),
    (crop_x, crop_y): (usize, usize),
    (crop_w, crop_h): (usize, usize),
    filter: Filter,
) -> Vec<u8> {
    debug_assert!(crop_x + crop_w <= out_w && crop_y + crop_h <= out_h && rgb.len() == 3 * width * height);
    // Pillow skips a pass whose size does not change; its weights would be the identity.
    let columns = (out_w != width).then(|| Weights::new(width, out_w, crop_x, crop_w, filter));
    let rows = (out_h != height).then(|| Weights::new(height, out_h, crop_y, crop_h, filter));
    // The input rows the vertical pass reads.
    let (row0, row_end) = match &rows {
        Some(r) => (r.first[0], (0..crop_h).map(|i| r.first[i] + r.len[i]).max().unwrap_or(0)),
        None => (crop_y, crop_y + crop_h),
    };
    // Horizontal pass: those rows at the window's columns.
    let stride = 3 * crop_w;
    let mut wide = vec![0u8; (row_end - row0) * stride];
    for (y, out) in (row0..row_end).zip(wide.chunks_exact_mut(stride)) {
        let src = &rgb[3 * width * y..3 * width * (y + 1)];
        match &columns {
            None => out.copy_from_slice(&src[3 * crop_x..3 * (crop_x + crop_w)]),
            Some(c) => {
                for (x, px) in out.chunks_exact_mut(3).enumerate() {
                    let (first, k) = c.of(x);
                    let mut sum = [HALF; 3];
                    for (j, &w) in k.iter().enumerate() {
                        let p = &src[3 * (first + j)..3 * (first + j) + 3];
                        for ch in 0..3 {
                            sum[ch] += p[ch] as i32 * w;
                        }
                    }
                    for ch in 0..3 {
                        px[ch] = clip8(sum[ch]);
                    }
                }
            }
        }
    }
    // Vertical pass over whole rows of the window.
    let Some(rows) = rows else { return wide };
    let mut out = vec![0u8; crop_h * stride];
    let mut sum = vec![0i32; stride];
    for (y, dst) in out.chunks_exact_mut(stride).enumerate() {
        let (first, k) = rows.of(y);
        sum.fill(HALF);
        for (j, &w) in k.iter().enumerate() {
            let src = &wide[(first + j - row0) * stride..(first + j - row0 + 1) * stride];
            for (s, &p) in sum.iter_mut().zip(src) {
                *s += p as i32 * w;
            }
        }
        for (d, &s) in dst.iter_mut().zip(&sum) {
            *d = clip8(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_stay_inside() {
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for (input, output) in [(500, 256), (256, 341), (100, 256), (7, 3), (3, 7)] {
                let w = Weights::new(input, output, 0, output, filter);
                for i in 0..output {
                    let (first, k) = w.of(i);
                    assert!(first + k.len() <= input && !k.is_empty());
                    let total: i64 = k.iter().map(|&v| v as i64).sum();
                    // Each weight rounds on its own: the sum is one within a unit per tap.
                    assert!((total - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{filter:?} {input}->{output}");
                }
            }
        }
    }

    #[test]
    fn a_uniform_image_stays_uniform_and_the_window_is_the_crop() {
        let (w, h) = (37, 23);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 10, 77]).collect();
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            let out = resize_window(&rgb, (w, h), (60, 40), (5, 7), (50, 30), filter);
            assert_eq!(out.len(), 50 * 30 * 3);
            assert!(out.chunks(3).all(|p| p == [200, 10, 77]), "{filter:?}");
        }
        // A window of a varied image: the same bytes as the crop of the whole resize.
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            let whole = resize_window(&rgb, (w, h), (60, 40), (0, 0), (60, 40), filter);
            let window = resize_window(&rgb, (w, h), (60, 40), (5, 7), (50, 30), filter);
            for y in 0..30 {
                assert_eq!(&window[y * 150..(y + 1) * 150], &whole[((y + 7) * 60 + 5) * 3..((y + 7) * 60 + 55) * 3]);
            }
            // Unchanged sizes pass the pixels through.
            assert_eq!(resize_window(&rgb, (w, h), (w, h), (0, 0), (w, h), filter), rgb);
        }
    }
}
