//! `convkit preprocess`: the float32 tensor `classify` feeds the network, written as .npy,
//! so that `convkit run`, onnxruntime or torch can take the same input.

use super::{print_json, CliResult, FailedImage};
use clap::builder::TypedValueParser;
use clap::Args;
use convkit_cli::{images, npy};
use convkit_preprocess::{Preprocess, CROP};
use serde::Serialize;
use std::path::PathBuf;

/// The values of `--preprocess`.
fn preprocess_parser() -> impl TypedValueParser<Value = Preprocess> {
    clap::builder::PossibleValuesParser::new(Preprocess::ALL.map(Preprocess::name))
        .map(|name| name.parse::<Preprocess>().expect("every listed name parses"))
}

/// The options of `preprocess`.
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Image files (JPEG, PNG), directories or quoted glob patterns, as classify takes them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Whose evaluation transform: torchvision's (bilinear) or timm's (bicubic).
    #[arg(long, default_value = "timm", value_parser = preprocess_parser())]
    preprocess: Preprocess,
    /// Where the tensor goes: float32 .npy of shape [n, 3, 224, 224], the images that
    /// could be read, in order.
    #[arg(short, long)]
    output: PathBuf,
    /// Print the files written and the errors as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PreprocessReport {
    preprocess: &'static str,
    output: String,
    shape: [usize; 4],
    /// The images in the tensor, in its order.
    files: Vec<String>,
    errors: Vec<FailedImage>,
}

/// Runs `preprocess`: every image that reads is written; one that does not is named on
/// stderr (and in the JSON), and the exit status says so.
pub fn run(args: &PreprocessArgs) -> CliResult {
    let inputs = images::expand_inputs(&args.images);
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut tensor = Vec::new();
    for (file, x) in images::preprocess_inputs(&inputs, args.preprocess) {
        match x {
            Ok(x) => {
                tensor.extend(x);
                files.push(file);
            }
            Err(error) => {
                eprintln!("convkit: error: {error}");
                errors.push(FailedImage { file, error });
            }
        }
    }
    if files.is_empty() {
        return Err(format!("none of the {} images could be read: nothing written", inputs.len()).into());
    }
    let shape = [files.len(), 3, CROP, CROP];
    npy::write_f32(&args.output, &shape, &tensor)?;
    let failed = errors.len();
    if args.json {
        print_json(&PreprocessReport {
            preprocess: args.preprocess.name(),
            output: args.output.display().to_string(),
            shape,
            files,
            errors,
        })?;
    }
    match failed {
        0 => Ok(()),
        n => Err(format!("{n} of {} images could not be read (see above); the others are in the tensor", inputs.len())
            .into()),
    }
}
