//! Lowering a padded, strided KxK window to a matrix, for one image and a range of
//! output rows. Positions in the padding become zeros.

use convkit_tensor::{checked_product, Error, Result, Window};
use std::ops::Range;

/// Height, width and channels of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageDims {
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

/// The input index along one axis read by output `o`, tap `k`, or None in padding.
#[inline]
fn source(o: usize, k: usize, stride: usize, dilation: usize, pad: usize, len: usize) -> Option<usize> {
    (o * stride + k * dilation).checked_sub(pad).filter(|&i| i < len)
}

fn check(
    image: &[f32],
    dims: ImageDims,
    window: &Window,
    rows: &Range<usize>,
    out_len: usize,
) -> Result<(usize, usize)> {
    let image_len = checked_product("im2col image", &[dims.h, dims.w, dims.c])?;
    if image.len() != image_len {
        return Err(Error::mismatch(format!("im2col image length for {dims:?}"), image_len, image.len()));
    }
    let (ho, wo) = window.output_hw(dims.h, dims.w)?;
    if rows.start > rows.end || rows.end > ho {
        return Err(Error::invalid(format!("im2col output rows {rows:?} outside 0..{ho}")));
    }
    let row_len = checked_product("im2col row", &[window.kernel.0, window.kernel.1, dims.c])?;
    let need = checked_product("im2col scratch", &[rows.len(), wo, row_len])?;
    if out_len < need {
        return Err(Error::mismatch("im2col scratch length", format!("at least {need}"), out_len));
    }
    Ok((wo, row_len))
}

/// NHWC im2col: one matrix row per output position of `rows` (row-major over oy, ox),
/// each row kh*kw*c long in (ky, kx, c) order, so every tap is a contiguous copy of c
/// channels. Writes `rows.len() * wo * kh*kw*c` values to the front of `out`.
pub fn im2col_nhwc(image: &[f32], dims: ImageDims, window: &Window, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
    let (kh, kw) = window.kernel;
    let c = dims.c;
    let (wo, k_len) = check(image, dims, window, &rows, out.len())?;
    let (sy, sx) = window.stride;
    let (dy, dx) = window.dilation;
    let (py, px) = window.padding;
    let mut dst = out.chunks_exact_mut(k_len);
    for oy in rows {
        for ox in 0..wo {
            let row = dst.next().expect("length checked");
            for ky in 0..kh {
                let taps = &mut row[ky * kw * c..(ky + 1) * kw * c];
                let Some(iy) = source(oy, ky, sy, dy, py, dims.h) else {
                    taps.fill(0.0);
                    continue;
                };
                let in_row = &image[iy * dims.w * c..(iy + 1) * dims.w * c];
                if dx == 1 {
                    // Taps kx..kx+n inside the image are one contiguous run of the input row.
                    let base = ox * sx; // padded column of tap 0
                    let first = px.saturating_sub(base).min(kw);
                    let last = (dims.w + px).saturating_sub(base).min(kw).max(first);
                    taps[..first * c].fill(0.0);
                    if last > first {
                        let start = base + first - px;
                        taps[first * c..last * c].copy_from_slice(&in_row[start * c..(start + last - first) * c]);
                    }
                    taps[last * c..].fill(0.0);
                } else {
                    for kx in 0..kw {
                        let tap = &mut taps[kx * c..(kx + 1) * c];
                        match source(ox, kx, sx, dx, px, dims.w) {
                            Some(ix) => tap.copy_from_slice(&in_row[ix * c..(ix + 1) * c]),
                            None => tap.fill(0.0),
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// NCHW im2col, the classic layout: a (c*kh*kw) x (rows.len()*wo) row-major matrix,
/// row index (c, ky, kx), column index (oy, ox) over the output rows `rows`.
pub fn im2col_nchw(image: &[f32], dims: ImageDims, window: &Window, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
    let (kh, kw) = window.kernel;
    let (wo, k_len) = check(image, dims, window, &rows, out.len())?;
    let cols = rows.len() * wo;
    let (sy, sx) = window.stride;
    let (dy, dx) = window.dilation;
    let (py, px) = window.padding;
    let plane = dims.h * dims.w;
    for (r, dst) in out[..k_len * cols].chunks_exact_mut(cols).enumerate() {
        let (c, ky, kx) = (r / (kh * kw), r / kw % kh, r % kw);
        let src = &image[c * plane..(c + 1) * plane];
        for (i, oy) in rows.clone().enumerate() {
            let line = &mut dst[i * wo..(i + 1) * wo];
            let Some(iy) = source(oy, ky, sy, dy, py, dims.h) else {
                line.fill(0.0);
                continue;
            };
            for (ox, v) in line.iter_mut().enumerate() {
                *v = source(ox, kx, sx, dx, px, dims.w).map_or(0.0, |ix| src[iy * dims.w + ix]);
            }
        }
    }
    Ok(())
}
