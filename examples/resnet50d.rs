//! ResNet-50-D from a timm safetensors file (the hub's `model.safetensors` of
//! `timm/resnet50d.ra2_in1k` loads as it is), in f32 or bf16:
//!
//! ```sh
//! cargo run --release --example resnet50d -- model.safetensors [f32|bf16]
//! ```
//!
//! With no file it writes convkit's seeded (random) weights first and says so.

use convkit::model::{ModelConfig, ResNetSpec, Variant, Weights, Workspace};
use convkit::tensor::{Layout, Precision, Shape, Tensor};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().map(PathBuf::from);
    let precision: Precision = args.next().as_deref().unwrap_or("f32").parse()?;
    let spec = ResNetSpec::resnet50(Variant::D);
    let file = match file {
        Some(file) => file,
        None => {
            let file = std::env::temp_dir().join("convkit-resnet50d-seeded.safetensors");
            Weights::seeded(spec, 0).save(&file)?;
            println!("no file given: wrote seeded (random) weights to {}", file.display());
            file
        }
    };
    // Every key and shape is checked; a file of another variant or depth is refused by name.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = ModelConfig::new(spec).with_precision(precision).with_threads(threads);
    let (model, _metadata) = config.load(&file)?;

    // One 224x224 image, NCHW, already normalised as timm's data config does (a smooth
    // synthetic one here; `convkit classify` decodes and preprocesses real images).
    let x = Tensor::from_fn(Shape::new(1, 3, 224, 224), Layout::Nchw, |_, c, h, w| {
        ((h as f32 / 224.0) - (w as f32 / 224.0)) * (1.0 + c as f32 * 0.5)
    })?;
    let mut ws = Workspace::new();
    model.forward(x.view(), &mut ws)?; // the first pass sizes the arena
    let start = Instant::now();
    let logits = model.forward(x.view(), &mut ws)?;
    let elapsed = start.elapsed();
    let mut classes: Vec<usize> = (0..logits.len()).collect();
    classes.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    println!("{spec} in {precision} on {threads} thread(s): {:.1} ms", elapsed.as_secs_f64() * 1e3);
    println!("top-5 classes: {:?}", &classes[..5]);
    Ok(())
}
