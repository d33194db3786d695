//! `convkit run`: logits of an NCHW float32 .npy input, written as .npy.

use super::{print_json, CliResult, Machine, ModelArgs};
use clap::Args;
use convkit_cli::npy;
use convkit_model::Workspace;
use convkit_tensor::{Layout, Shape, TensorView};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// The options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input: float32 .npy of shape [n, 3, h, w] (NCHW RGB, normalised as the weights expect).
    #[arg(long)]
    input: PathBuf,
    /// Where the logits go: float32 .npy of shape [n, classes].
    #[arg(long)]
    output: PathBuf,
    /// Forward passes to time (each computes the same logits); the JSON reports the first
    /// one's time and the median.
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one())]
    repeat: usize,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct RunReport {
    #[serde(flatten)]
    machine: Machine,
    network: String,
    precision: &'static str,
    threads: usize,
    input: String,
    input_shape: Vec<usize>,
    output: String,
    output_shape: [usize; 2],
    /// The first pass (it also sizes the arena).
    forward_ms: f64,
    /// The median of the `--repeat` passes.
    median_ms: f64,
    passes: usize,
}

/// Runs `run`.
pub fn run(args: &RunArgs) -> CliResult {
    let (shape, values) = npy::read_f32(&args.input)?;
    let input = args.input.display();
    let [n, c, h, w] = shape[..] else {
        return Err(format!("{input}: input has shape {shape:?}; expected rank 4 NCHW [n, 3, h, w]").into());
    };
    if c != 3 {
        return Err(format!("{input}: input has {c} channels (shape {shape:?}); expected 3 (NCHW RGB)").into());
    }
    let view = TensorView::new(Shape::new(n, c, h, w), Layout::Nchw, &values).map_err(|e| format!("{input}: {e}"))?;
    let (model, _) = args.model.load()?;
    let mut ws = Workspace::new();
    let mut times = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        let start = Instant::now();
        model.forward(view, &mut ws).map_err(|e| format!("{input}: {e}"))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let forward_ms = times[0];
    let logits = model.forward(view, &mut ws).map_err(|e| format!("{input}: {e}"))?;
    npy::write_f32(&args.output, &[n, model.classes()], logits)?;
    if args.json {
        return print_json(&RunReport {
            machine: Machine::new(&args.model.kernels),
            network: model.spec().to_string(),
            precision: model.precision().name(),
            threads: args.model.threads,
            input: input.to_string(),
            input_shape: shape,
            output: args.output.display().to_string(),
            output_shape: [n, model.classes()],
            forward_ms,
            median_ms: super::median(&mut times),
            passes: args.repeat,
        });
    }
    Ok(())
}
