//! `convkit calibrate`: post-training int8 quantization of a float network, written as an
//! int8 safetensors file that `--precision int8` loads.

use super::classify::PreprocessArg;
use super::{at_least_one, default_threads, depth_parser, print_json, spec, CliResult, KernelArgs};
use clap::Args;
use convkit_cli::{images, npy};
use convkit_model::{seeded_images, RangeMethod, SeededWeights, Variant, Weights};
use convkit_preprocess::CROP;
use convkit_tensor::{Layout, Precision, Shape, TensorView};
use serde::Serialize;
use std::path::PathBuf;

/// The options of `calibrate`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("calibration").required(true).args(["images", "seeded", "input"])))]
pub struct CalibrateArgs {
    /// Variant of the network.
    #[arg(long, value_enum, default_value_t = Variant::D)]
    variant: Variant,
    /// Depth of the network.
    #[arg(long, default_value_t = 50, value_parser = depth_parser())]
    depth: usize,
    /// Float safetensors weights under timm/torchvision key names (default: convkit's
    /// seeded weights of --seed).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Calibration images: files (JPEG, PNG), directories or quoted globs, preprocessed as
    /// `classify` does.
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Calibrate on a float32 .npy of shape [n, 3, h, w] (NCHW, normalised as the weights
    /// expect) instead.
    #[arg(long, value_name = "NPY")]
    input: Option<PathBuf>,
    /// Calibrate on this many seeded images (values uniform in -1..1, 224x224) instead.
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    seeded: Option<usize>,
    /// How each activation tensor's range is measured.
    #[arg(long, value_enum, default_value_t = RangeMethod::default())]
    method: RangeMethod,
    /// Whose preprocessing the images get.
    #[arg(long, value_enum, default_value_t = PreprocessArg::Auto)]
    preprocess: PreprocessArg,
    /// Seed of the seeded weights and images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: the machine's cores).
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
    #[command(flatten)]
    kernels: KernelArgs,
    /// The int8 safetensors file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct CalibrateReport {
    output: String,
    network: String,
    weights: String,
    images: usize,
    method: &'static str,
    recipe: String,
    bytes: u64,
}

/// Runs `calibrate`.
pub fn run(args: &CalibrateArgs) -> CliResult {
    super::check_threads(args.threads)?;
    let spec = spec(args.variant, args.depth)?;
    let config = args.kernels.config(spec).with_threads(args.threads).with_precision(Precision::Int8);
    let (data, source, shape) = match (&args.input, args.seeded) {
        (Some(path), _) => {
            let (shape, data) = npy::read_f32(path)?;
            let file = path.display();
            let [n, 3, h, w] = shape[..] else {
                return Err(format!("{file}: calibration input has shape {shape:?}; expected NCHW [n, 3, h, w]").into());
            };
            let name = path.file_name().map_or_else(|| file.to_string(), |f| f.to_string_lossy().into_owned());
            (data, format!("images of {name}"), Shape::new(n, 3, h, w))
        }
        (None, Some(n)) => (
            seeded_images(n, CROP, CROP, args.seed),
            format!("seeded images (seed {})", args.seed),
            Shape::new(n, 3, CROP, CROP),
        ),
        (None, None) => {
            let mode = args.preprocess.resolve(args.variant);
            let inputs = images::expand_inputs(&args.images);
            let mut data = Vec::new();
            for (file, x) in images::preprocess_inputs(&inputs, mode) {
                data.extend(x.map_err(|e| format!("calibration image {file}: {e}"))?);
            }
            let n = data.len() / (3 * CROP * CROP);
            (data, format!("images ({} preprocessing)", mode.name()), Shape::new(n, 3, CROP, CROP))
        }
    };
    let n = shape.n;
    if n == 0 {
        return Err("calibration needs at least one image; none was given".to_string().into());
    }
    let view = TensorView::new(shape, Layout::Nchw, &data)?;
    let (calibrated, weights) = match &args.weights {
        Some(path) => {
            (config.calibrate(Weights::load(spec, path)?, view, args.method, &source)?, path.display().to_string())
        }
        None => (
            config.calibrate(SeededWeights::new(spec, args.seed), view, args.method, &source)?,
            format!("seeded (seed {})", args.seed),
        ),
    };
    calibrated.save(&args.output)?;
    let recipe = calibrated.metadata().calibration.clone().unwrap_or_default();
    if args.json {
        let bytes = std::fs::metadata(&args.output).map_err(|e| format!("{}: {e}", args.output.display()))?.len();
        return print_json(&CalibrateReport {
            output: args.output.display().to_string(),
            network: spec.to_string(),
            weights,
            images: n,
            method: args.method.name(),
            recipe,
            bytes,
        });
    }
    eprintln!("convkit: wrote {} (int8 {spec}, {recipe})", args.output.display());
    Ok(())
}
