//! JPEG decoding as Pillow decodes it: libjpeg-turbo's decoder (through the `mozjpeg`
//! crate, which builds it from C source with the C compiler Rust links with) at its
//! defaults, which Pillow keeps: the accurate integer IDCT (ISLOW), "fancy" triangular
//! upsampling of 4:2:0 and 4:2:2 chroma, libjpeg's YCbCr -> RGB. Measured equal to
//! Pillow's decode on every byte of scikit-image's photographs re-encoded at qualities
//! 75-95 in 4:2:0, 4:2:2, 4:4:4, progressive and grayscale; the `image` crate's decoder
//! differed by up to 6 levels on 4:2:0 files.

use crate::{PreprocessError, Result, MAX_DECODE_BYTES, MAX_SIDE};
use mozjpeg::ColorSpace;

/// Bytes of decoder memory a pixel may need at most: the RGB output (3) and, in a
/// progressive file, its DCT coefficients (2 bytes for each of 3 components).
const DECODE_BYTES_PER_PIXEL: u64 = 9;

/// Why a decode stopped, before it becomes an error.
enum Refused {
    Io(std::io::Error),
    Message(String),
}

impl From<std::io::Error> for Refused {
    fn from(e: std::io::Error) -> Self {
        Refused::Io(e)
    }
}

/// The RGB bytes of a JPEG, `width` x `height`, row by row.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32)> {
    let decode = || -> std::result::Result<(Vec<u8>, u32, u32), Refused> {
        let header = mozjpeg::Decompress::new_mem(bytes)?;
        let (w, h) = (header.width(), header.height());
        if w == 0 || h == 0 || w > MAX_SIDE as usize || h > MAX_SIDE as usize {
            return Err(Refused::Message(format!("the JPEG is {w}x{h}: a side of 1 to {MAX_SIDE} pixels is accepted")));
        }
        if (w * h) as u64 * DECODE_BYTES_PER_PIXEL > MAX_DECODE_BYTES {
            return Err(Refused::Message(format!(
                "the JPEG is {w}x{h}: decoding it could take more than {} MiB",
                MAX_DECODE_BYTES >> 20
            )));
        }
        if matches!(header.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK) {
            return Err(Refused::Message("CMYK JPEGs are not supported: convert the file to RGB".into()));
        }
        let mut rgb = header.rgb()?;
        let pixels: Vec<u8> = rgb.read_scanlines()?;
        rgb.finish()?;
        // Both sides are at most MAX_SIDE (checked above): they fit a u32.
        Ok((pixels, w as u32, h as u32))
    };
    // libjpeg reports a fatal error by calling back into the crate, which unwinds with
    // `resume_unwind` (no panic hook, nothing printed): caught here as an error.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg failed".into());
        Err(Refused::Message(message))
    });
    outcome.map_err(|refused| {
        let why = match refused {
            Refused::Io(e) => e.to_string(),
            Refused::Message(m) => m,
        };
        PreprocessError::Image(format!("cannot decode the JPEG: {why}"))
    })
}
