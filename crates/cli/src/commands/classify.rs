//! `convkit classify`: the top ImageNet classes of image files, directories and globs.

use super::{print_json, progress, CliResult, FailedImage as Failed, Machine, ModelArgs};
use clap::{Args, ValueEnum};
use convkit_cli::images;
use convkit_model::{Variant, WeightsMetadata, Workspace};
use convkit_preprocess::{self as preprocessing, Preprocess};
use convkit_tensor::{Layout, Shape, TensorView};
use serde::Serialize;
use std::path::PathBuf;

/// Whose preprocessing images get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreprocessArg {
    /// That of the weights' source: torchvision for A and B, timm for C and D.
    Auto,
    /// torchvision's: resize 256 bilinear (antialiased), center crop 224.
    Torchvision,
    /// timm's resolved config for resnet50d: resize 256 bicubic (crop_pct 0.875), center crop 224.
    Timm,
}

impl PreprocessArg {
    pub(crate) fn resolve(self, variant: Variant) -> Preprocess {
        match (self, variant) {
            (PreprocessArg::Torchvision, _) | (PreprocessArg::Auto, Variant::A | Variant::B) => Preprocess::Torchvision,
            (PreprocessArg::Timm, _) | (PreprocessArg::Auto, Variant::C | Variant::D) => Preprocess::Timm,
        }
    }
}

/// The options of `classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Image files (JPEG, PNG), directories (their .jpg, .jpeg and .png files) or quoted
    /// glob patterns ("photos/*.jpg").
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Images run through the network at once.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one())]
    batch: usize,
    /// Classes printed per image.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    top: usize,
    /// Whose preprocessing the images get.
    #[arg(long, value_enum, default_value_t = PreprocessArg::Auto)]
    preprocess: PreprocessArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Class {
    class: usize,
    name: &'static str,
    probability: f32,
}

#[derive(Debug, Serialize)]
struct Classified {
    file: String,
    top: Vec<Class>,
}

#[derive(Debug, Serialize)]
struct ClassifyReport {
    #[serde(flatten)]
    machine: Machine,
    network: String,
    precision: &'static str,
    weights: String,
    /// The seed of convkit's seeded weights, when the file holds them: the classes are
    /// then meaningless.
    seeded: Option<u64>,
    preprocess: &'static str,
    results: Vec<Classified>,
    errors: Vec<Failed>,
}

/// What a user should know of the weights before reading the classes.
fn warnings(args: &ModelArgs, metadata: &WeightsMetadata) -> Vec<String> {
    let file = args.weights.display();
    let mut out = Vec::new();
    if let Some(seed) = metadata.seed {
        out.push(format!(
            "{file} holds convkit's seeded random weights (seed {seed}), not trained ones: the classes below mean nothing"
        ));
    }
    if metadata.variant.is_none() && matches!(args.variant, Variant::A | Variant::B) {
        out.push(format!(
            "A and B have the same keys and shapes, so nothing in {file} says which it is; \
             torchvision's resnet50 is B (--variant b)"
        ));
    }
    out
}

/// Runs `classify`.
pub fn run(args: &ClassifyArgs) -> CliResult {
    let inputs = images::expand_inputs(&args.images);
    let (model, metadata) = args.model.load()?;
    for w in warnings(&args.model, &metadata) {
        eprintln!("convkit: warning: {w}");
    }
    let mode = args.preprocess.resolve(args.model.variant);
    let names = preprocessing::class_names();
    let lone = inputs.len() == 1;
    let mut errors: Vec<Failed> = Vec::new();
    let mut report_error = |file: String, error: String| {
        // A lone input's error is the command's error, printed once at the end.
        if !lone {
            eprintln!("convkit: error: {error}");
        }
        errors.push(Failed { file, error });
    };
    let mut results = Vec::new();
    let mut ws = Workspace::new();
    let bar = progress(inputs.len() as u64, "classify", false);
    for chunk in inputs.chunks(args.batch) {
        let decoded = images::preprocess_inputs(chunk, mode);
        let mut batch = Vec::new();
        let mut files = Vec::new();
        for (file, x) in decoded {
            match x {
                Ok(x) => {
                    batch.extend(x);
                    files.push(file);
                }
                Err(e) => report_error(file, e),
            }
        }
        if !files.is_empty() {
            let shape = Shape::new(files.len(), 3, preprocessing::CROP, preprocessing::CROP);
            let view = TensorView::new(shape, Layout::Nchw, &batch)?;
            let logits = model.forward(view, &mut ws)?;
            for (file, row) in files.into_iter().zip(logits.chunks(model.classes())) {
                let top = preprocessing::top_k(row, args.top)
                    .into_iter()
                    .map(|(class, probability)| Class {
                        class,
                        name: names.get(class).copied().unwrap_or("?"),
                        probability,
                    })
                    .collect::<Vec<_>>();
                if !args.json {
                    bar.suspend(|| {
                        println!("{file}:");
                        for c in &top {
                            println!("  {:>6.2}%  {:>3}  {}", 100.0 * c.probability, c.class, c.name);
                        }
                    });
                }
                results.push(Classified { file, top });
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if args.json {
        print_json(&ClassifyReport {
            machine: Machine::new(&args.model.kernels),
            network: model.spec().to_string(),
            precision: model.precision().name(),
            weights: args.model.weights.display().to_string(),
            seeded: metadata.seed,
            preprocess: mode.name(),
            results,
            errors: errors.iter().map(|f| Failed { file: f.file.clone(), error: f.error.clone() }).collect(),
        })?;
    }
    match errors.len() {
        0 => Ok(()),
        _ if lone => Err(errors.remove(0).error.into()),
        n => Err(format!("{n} of {} images could not be classified (see above)", inputs.len()).into()),
    }
}
