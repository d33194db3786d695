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

/// Whether Pillow runs the horizontal pass first: unless the height shrinks by more than
/// twice as many pixels as the width (Pillow 13's rule, which makes that case faster;
/// earlier Pillows always ran the horizontal pass first). The 8-bit rounding between the
/// passes makes the order show in the result.
fn horizontal_first((width, height): (usize, usize), (out_w, out_h): (usize, usize)) -> bool {
    let (shrink_w, shrink_h) = (width as i64 - out_w as i64, height as i64 - out_h as i64);
    !(shrink_h > 0 && shrink_h > 2 * shrink_w)
}

/// The horizontal pass over `rows` rows of `src` (a row every `stride` bytes): the outputs
/// `columns` holds, reading input column `c` at byte `3 * (c - col0)` of its row.
fn horizontal(src: &[u8], stride: usize, rows: usize, col0: usize, columns: &Weights) -> Vec<u8> {
    let count = columns.first.len();
    let mut out = vec![0u8; rows * 3 * count];
    for (y, dst) in out.chunks_exact_mut(3 * count).enumerate() {
        let row = &src[y * stride..];
        for (x, px) in dst.chunks_exact_mut(3).enumerate() {
            let (first, k) = columns.of(x);
            let mut sum = [HALF; 3];
            for (j, &w) in k.iter().enumerate() {
                let p = &row[3 * (first + j - col0)..][..3];
                for ch in 0..3 {
                    sum[ch] += p[ch] as i32 * w;
                }
            }
            for ch in 0..3 {
                px[ch] = clip8(sum[ch]);
            }
        }
    }
    out
}

/// The vertical pass: output row `i` sums the input rows `rows` names (row `r` at byte
/// `(r - row0) * stride + offset` of `src`, `len` bytes of it).
fn vertical(src: &[u8], stride: usize, (offset, len): (usize, usize), row0: usize, rows: &Weights) -> Vec<u8> {
    let count = rows.first.len();
    let mut out = vec![0u8; count * len];
    let mut sum = vec![0i32; len];
    for (y, dst) in out.chunks_exact_mut(len).enumerate() {
        let (first, k) = rows.of(y);
        sum.fill(HALF);
        for (j, &w) in k.iter().enumerate() {
            let start = (first + j - row0) * stride + offset;
            for (s, &p) in sum.iter_mut().zip(&src[start..start + len]) {
                *s += p as i32 * w;
            }
        }
        for (d, &s) in dst.iter_mut().zip(&sum) {
            *d = clip8(s);
        }
    }
    out
}

/// The input indices `weights` reads: from its first output's first to the largest end.
fn span(weights: &Weights) -> (usize, usize) {
    let end = (0..weights.first.len()).map(|i| weights.first[i] + weights.len[i]).max().unwrap_or(0);
    (weights.first.first().copied().unwrap_or(0), end)
}

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
    let stride = 3 * width;
    // Pillow skips a pass whose size does not change; its weights would be the identity.
    let columns = (out_w != width).then(|| Weights::new(width, out_w, crop_x, crop_w, filter));
    let rows = (out_h != height).then(|| Weights::new(height, out_h, crop_y, crop_h, filter));
    match (columns, rows) {
        (None, None) => {
            let mut out = Vec::with_capacity(3 * crop_w * crop_h);
            for y in crop_y..crop_y + crop_h {
                out.extend_from_slice(&rgb[y * stride + 3 * crop_x..y * stride + 3 * (crop_x + crop_w)]);
            }
            out
        }
        (Some(columns), None) => horizontal(&rgb[crop_y * stride..], stride, crop_h, 0, &columns),
        (None, Some(rows)) => vertical(rgb, stride, (3 * crop_x, 3 * crop_w), 0, &rows),
        (Some(columns), Some(rows)) if horizontal_first((width, height), (out_w, out_h)) => {
            // The rows the vertical pass reads, at the window's columns, then down.
            let (row0, row_end) = span(&rows);
            let wide = horizontal(&rgb[row0 * stride..], stride, row_end - row0, 0, &columns);
            vertical(&wide, 3 * crop_w, (0, 3 * crop_w), row0, &rows)
        }
        (Some(columns), Some(rows)) => {
            // The columns the horizontal pass reads, at the window's rows, then across.
            let (col0, col_end) = span(&columns);
            let tall = vertical(rgb, stride, (3 * col0, 3 * (col_end - col0)), 0, &rows);
            horizontal(&tall, 3 * (col_end - col0), crop_h, col0, &columns)
        }
    }
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
    fn the_pass_order_follows_pillow() {
        // Pillow 13: vertical first when the height shrinks by more than twice the width.
        assert!(!horizontal_first((257, 600), (256, 597)));
        assert!(horizontal_first((257, 300), (256, 298)));
        assert!(horizontal_first((600, 257), (597, 256)));
        assert!(!horizontal_first((300, 300), (299, 200)));
        assert!(horizontal_first((100, 50), (512, 256)));
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
        // Horizontal first, vertical first (the height shrinks), one pass of each kind.
        for (out_w, out_h) in [(60, 40), (36, 12), (w, 40), (60, h)] {
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                let whole = resize_window(&rgb, (w, h), (out_w, out_h), (0, 0), (out_w, out_h), filter);
                let (cw, ch) = (out_w - 7, out_h - 5);
                let window = resize_window(&rgb, (w, h), (out_w, out_h), (5, 3), (cw, ch), filter);
                for y in 0..ch {
                    let at = ((y + 3) * out_w + 5) * 3;
                    assert_eq!(&window[y * cw * 3..(y + 1) * cw * 3], &whole[at..at + cw * 3], "{out_w}x{out_h}");
                }
            }
        }
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            // Unchanged sizes pass the pixels through.
            assert_eq!(resize_window(&rgb, (w, h), (w, h), (0, 0), (w, h), filter), rgb);
        }
    }
}
