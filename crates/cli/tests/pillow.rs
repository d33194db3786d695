//! classify's preprocessing against Pillow's resize and crop, which is what torchvision and
//! timm apply to the PIL images they load: the same images, written by this test, through
//! both, compared after normalisation.
//!
//! Needs a Python with Pillow and numpy: `CONVKIT_PYTHON` names it (CI points it at
//! tools/compare/.venv), else `python3`. Without Pillow the test says so and passes,
//! unless `CONVKIT_REQUIRE_PILLOW` is set (CI sets it), when it fails.

use convkit_cli::npy;
use convkit_preprocess::{preprocess, Preprocess, CROP};
use std::path::PathBuf;
use std::process::Command;

/// torchvision's Resize(256) + CenterCrop(224) on a PIL image, with the filter the mode
/// names, then ToTensor and Normalize: the reference of each mode.
const SCRIPT: &str = r#"
import sys
import numpy as np
from PIL import Image
mode, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
flt = {"torchvision": Image.BILINEAR, "timm": Image.BICUBIC}[mode]
mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
xs = []
for p in paths:
    img = Image.open(p).convert("RGB")
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = 256, int(256 * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    img = img.resize(size, flt)
    w, h = img.size
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - mean) / std
    xs.append(x.transpose(2, 0, 1).astype(np.float32))
np.save(out, np.stack(xs))
"#;

/// The Python to run, if it has Pillow and numpy.
fn python() -> Option<String> {
    let python = std::env::var("CONVKIT_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python).args(["-c", "import PIL, numpy"]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(std::env::var_os("CONVKIT_REQUIRE_PILLOW").is_none(), "{python} has no Pillow or numpy");
    eprintln!("skipped: {python} has no Pillow or numpy (set CONVKIT_PYTHON)");
    None
}

/// Photographs are smooth with edges; this image has both: gradients, a disc, fine stripes.
fn test_image(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = ((fx - 0.5).powi(2) + (fy - 0.45).powi(2)) < 0.08;
        let stripes = ((x / 3 + y / 5 + seed) % 2) as f32;
        let r = 255.0 * fx;
        let g = if disc { 230.0 } else { 40.0 + 60.0 * stripes };
        let b = 255.0 * (1.0 - fy) * (0.5 + 0.5 * (((x * 7 + y * 13 + seed) % 17) as f32 / 16.0));
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

#[test]
fn preprocessing_matches_pillow() {
    let Some(python) = python() else { return };
    let dir = std::env::temp_dir().join(format!("convkit-pillow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Wide, tall, odd crop margins (341 -> 58.5 rounds down to 58, 343 -> 59.5 up to 60),
    // near-square, upsampled.
    let sizes = [(640, 480), (480, 640), (343, 256), (256, 343), (500, 375), (257, 300), (1024, 683), (200, 150)];
    let paths: Vec<PathBuf> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| {
            let p = dir.join(format!("img{i}.png"));
            test_image(w, h, i as u32).save(&p).unwrap();
            p
        })
        .collect();
    for mode in [Preprocess::Torchvision, Preprocess::Timm] {
        let out = dir.join(format!("{}.npy", mode.name()));
        let status = Command::new(&python)
            .args(["-c", SCRIPT, mode.name(), out.to_str().unwrap()])
            .args(&paths)
            .status()
            .unwrap();
        assert!(status.success(), "the Pillow script failed");
        let (shape, want) = npy::read_f32(&out).unwrap();
        assert_eq!(shape, vec![paths.len(), 3, CROP, CROP]);
        for (i, p) in paths.iter().enumerate() {
            let got = preprocess(p, mode).unwrap();
            let want = &want[i * got.len()..(i + 1) * got.len()];
            // Differences in units of one 8-bit level (the normalised values are divided
            // by std, at most 0.229, so one level is at least 1 / (255 * 0.229)).
            let level = 1.0 / (255.0 * 0.225);
            let diffs: Vec<f32> = got.iter().zip(want).map(|(a, b)| (a - b).abs() / level).collect();
            let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
            let max = diffs.iter().cloned().fold(0.0, f32::max);
            println!("{} {:?}: mean {mean:.3} levels, max {max:.2} levels", mode.name(), sizes[i]);
            assert!(
                mean <= MEAN_LEVELS && max <= MAX_LEVELS,
                "{} {:?}: mean {mean}, max {max} levels",
                mode.name(),
                sizes[i]
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Bounds, in 8-bit levels: Pillow resamples in 8-bit fixed point and rounds its
/// intermediate (horizontal) pass to 8 bits; the image crate keeps f32 between its passes.
const MEAN_LEVELS: f32 = 0.25;
const MAX_LEVELS: f32 = 1.05;
