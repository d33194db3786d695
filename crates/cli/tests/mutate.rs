//! Valid files, mutated at random (bytes flipped, set, inserted, the file cut short): every
//! parser returns a correct result or an error, never a panic. The stable-toolchain twin
//! of the fuzz targets in fuzz/.

use convkit_cli::npy;
use convkit_model::{ResNetSpec, Variant, Weights};
use convkit_preprocess as images;
use proptest::prelude::*;
use std::sync::OnceLock;

/// One edit of a file: where (a fraction of its length), what byte, which operation.
type Edit = (f64, u8, u8);

fn mutate(valid: &[u8], edits: &[Edit], header_only: Option<usize>) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for &(at, byte, op) in edits {
        let span = header_only.unwrap_or(bytes.len()).min(bytes.len()).max(1);
        let i = ((at * span as f64) as usize).min(bytes.len().saturating_sub(1));
        match op % 4 {
            0 if !bytes.is_empty() => bytes[i] ^= 1 << (byte % 8),
            1 if !bytes.is_empty() => bytes[i] = byte,
            2 => bytes.insert(i, byte),
            _ => bytes.truncate(i),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((0.0f64..1.0, any::<u8>(), any::<u8>()), 1..6)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 128, ..ProptestConfig::default() }
}

fn valid_npy() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("convkit-mutate-{}.npy", std::process::id()));
        npy::write_f32(&path, &[1, 3, 4, 5], &(0..60).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        bytes
    })
}

fn spec() -> ResNetSpec {
    ResNetSpec::new(Variant::D, [1, 1, 1, 1])
}

fn valid_safetensors() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| Weights::seeded(spec(), 3).to_safetensors_bytes().unwrap())
}

fn valid_image(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 77]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_npy_is_parsed_or_refused(e in edits()) {
        if let Ok((shape, values)) = npy::parse(&mutate(valid_npy(), &e, None)) {
            prop_assert_eq!(shape.iter().product::<usize>(), values.len());
        }
    }

    /// Edits land in the 8-byte length and the JSON header, where a parser can go wrong.
    #[test]
    fn mutated_safetensors_are_loaded_or_refused(e in edits()) {
        let valid = valid_safetensors();
        let header = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
        if let Ok(w) = Weights::from_safetensors_bytes(spec(), &mutate(valid, &e, Some(header))) {
            prop_assert!(w.tensors().values().all(|t| t.data.iter().all(|v| v.is_finite())));
        }
    }

    #[test]
    fn mutated_images_are_decoded_or_refused(e in edits(), png in any::<bool>()) {
        let valid = valid_image(if png { image::ImageFormat::Png } else { image::ImageFormat::Jpeg });
        if let Ok(x) = images::preprocess_bytes(&mutate(&valid, &e, None), if png { images::Preprocess::Torchvision } else { images::Preprocess::Timm }) {
            prop_assert_eq!(x.len(), 3 * images::CROP * images::CROP);
        }
    }
}
