//! `convkit export`: seeded weights under timm/torchvision key names, as safetensors.

use super::{depth_parser, print_json, spec, CliResult};
use clap::Args;
use convkit_model::{Variant, Weights};
use serde::Serialize;
use std::path::PathBuf;

/// The options of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Variant of the network.
    #[arg(long, value_enum, default_value_t = Variant::D)]
    variant: Variant,
    /// Depth of the network.
    #[arg(long, default_value_t = 50, value_parser = depth_parser())]
    depth: usize,
    /// Seed of the weights (the same seed gives the same file).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The safetensors file to write; its metadata names the variant, depth and seed.
    #[arg(short, long)]
    output: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ExportReport {
    output: String,
    network: String,
    variant: String,
    depth: usize,
    seed: u64,
    tensors: usize,
    bytes: usize,
}

/// Runs `export`.
pub fn run(args: &ExportArgs) -> CliResult {
    let spec = spec(args.variant, args.depth)?;
    let weights = Weights::seeded(spec, args.seed);
    let bytes = weights.to_safetensors_bytes()?;
    std::fs::write(&args.output, &bytes).map_err(|e| format!("{}: {e}", args.output.display()))?;
    if args.json {
        return print_json(&ExportReport {
            output: args.output.display().to_string(),
            network: spec.to_string(),
            variant: args.variant.to_string(),
            depth: spec.depth(),
            seed: args.seed,
            tensors: weights.tensors().len(),
            bytes: bytes.len(),
        });
    }
    Ok(())
}
