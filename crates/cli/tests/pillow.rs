//! classify's preprocessing against Pillow, which is what torchvision and timm apply to
//! the PIL images they load: the same files through both, compared bit for bit after
//! normalisation. Synthetic PNGs of every awkward size, and real photographs
//! (scikit-image's sample photos) written by Pillow as JPEGs at several qualities and
//! chroma subsamplings, progressive and grayscale, and as PNGs of every mode Pillow
//! converts to RGB.
//!
//! Needs a Python with Pillow and numpy (and scikit-image for the photographs):
//! `CONVKIT_PYTHON` names it (CI points it at tools/compare/.venv), else `python3`.
//! Without them the tests say so and pass, unless `CONVKIT_REQUIRE_PILLOW` is set (CI
//! sets it), when they fail.

use convkit_cli::npy;
use convkit_preprocess::{preprocess, Preprocess, CROP};
use std::path::{Path, PathBuf};
use std::process::Command;

/// torchvision's Resize(256) + CenterCrop(224) on a PIL image, with the filter the mode
/// names, then ToTensor and Normalize in float32, in torchvision's order: the reference.
const SCRIPT: &str = r#"
import sys
import numpy as np
from PIL import Image
mode, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
flt = {"torchvision": Image.BILINEAR, "timm": Image.BICUBIC}[mode]
mean = np.array([0.485, 0.456, 0.406], np.float32)
std = np.array([0.229, 0.224, 0.225], np.float32)
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
    x = (np.asarray(img, dtype=np.float32) / np.float32(255) - mean) / std
    xs.append(x.transpose(2, 0, 1))
np.save(out, np.stack(xs).astype(np.float32))
"#;

/// Writes scikit-image's sample photographs as Pillow writes them: JPEG (quality and
/// subsampling per name; progressive; grayscale) and PNG in the modes P, L, LA and RGBA.
const PHOTOS: &str = r#"
import sys
import numpy as np
import skimage.data
from PIL import Image
out = sys.argv[1]
for name in ["astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry"]:
    img = Image.fromarray(getattr(skimage.data, name)())
    for quality, subsampling in [(90, 2), (75, 1), (95, 0)]:
        img.save(f"{out}/{name}_q{quality}_s{subsampling}.jpg", quality=quality, subsampling=subsampling)
    img.save(f"{out}/{name}_progressive.jpg", quality=85, progressive=True)
    img.convert("L").save(f"{out}/{name}_gray.jpg", quality=90)
img = Image.fromarray(skimage.data.astronaut())
img.quantize(200).save(f"{out}/astronaut_palette.png")
img.convert("L").save(f"{out}/astronaut_l.png")
img.convert("LA").save(f"{out}/astronaut_la.png")
rgba = img.convert("RGBA")
rgba.putalpha(Image.fromarray((np.arange(512 * 512).reshape(512, 512) % 256).astype(np.uint8)))
rgba.save(f"{out}/astronaut_rgba.png")
chelsea = Image.fromarray(skimage.data.chelsea())
chelsea.resize((200, 150)).save(f"{out}/chelsea_small.jpg", quality=90)
chelsea.resize((257, 1001)).save(f"{out}/chelsea_tall_odd.jpg", quality=85)
chelsea.resize((1200, 255)).save(f"{out}/chelsea_wide.jpg", quality=85, subsampling=1)
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

/// Each file through Pillow's recipe and through `preprocess`, for both recipes: the
/// normalised tensors must be equal bit for bit.
fn assert_equal_to_pillow(python: &str, dir: &Path, paths: &[PathBuf]) {
    for mode in Preprocess::ALL {
        let out = dir.join(format!("{}.npy", mode.name()));
        let status =
            Command::new(python).args(["-c", SCRIPT, mode.name(), out.to_str().unwrap()]).args(paths).status().unwrap();
        assert!(status.success(), "the Pillow script failed");
        let (shape, want) = npy::read_f32(&out).unwrap();
        assert_eq!(shape, vec![paths.len(), 3, CROP, CROP]);
        for (i, p) in paths.iter().enumerate() {
            let got = preprocess(p, mode).unwrap();
            let want = &want[i * got.len()..(i + 1) * got.len()];
            let equal = got.iter().zip(want).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
            let name = p.file_name().unwrap().to_string_lossy();
            println!("{} {name}: {equal} of {} values equal", mode.name(), got.len());
            assert_eq!(equal, got.len(), "{} {name}: {} values differ from Pillow's", mode.name(), got.len() - equal);
        }
    }
}

#[test]
fn synthetic_images_of_every_size_match_pillow() {
    let Some(python) = python() else { return };
    let dir = std::env::temp_dir().join(format!("convkit-pillow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Wide, tall, odd crop margins (341 -> 58.5 rounds down to 58, 343 -> 59.5 up to 60),
    // near-square, upsampled, tall enough that Pillow resizes vertically first, tiny, thin.
    let sizes = [
        (640, 480),
        (480, 640),
        (343, 256),
        (256, 343),
        (500, 375),
        (257, 300),
        (1024, 683),
        (200, 150),
        (257, 600),
        (300, 1001),
        (1, 1),
        (3, 700),
        (700, 3),
        (255, 257),
    ];
    let paths: Vec<PathBuf> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| {
            let p = dir.join(format!("img{i}_{w}x{h}.png"));
            test_image(w, h, i as u32).save(&p).unwrap();
            p
        })
        .collect();
    assert_equal_to_pillow(&python, &dir, &paths);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn photographs_match_pillow() {
    let Some(python) = python() else { return };
    let has_skimage =
        Command::new(&python).args(["-c", "import skimage.data"]).output().is_ok_and(|o| o.status.success());
    if !has_skimage {
        assert!(std::env::var_os("CONVKIT_REQUIRE_PILLOW").is_none(), "{python} has no scikit-image");
        eprintln!("skipped: {python} has no scikit-image (its sample photographs are the test's)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("convkit-photos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new(&python).args(["-c", PHOTOS, dir.to_str().unwrap()]).status().unwrap();
    assert!(status.success(), "the script writing the photographs failed");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert_eq!(paths.len(), 37, "photographs written");
    assert_equal_to_pillow(&python, &dir, &paths);
    std::fs::remove_dir_all(&dir).ok();
}
