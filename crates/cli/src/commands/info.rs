//! `convkit info`: the CPU, the kernel family and caches, and each variant's counts.

use super::{counts, print_json, CliResult, DepthArg, Machine};
use clap::Args;
use convkit_microkernel::{CacheSizes, Isa};
use convkit_model::Variant;
use serde::Serialize;

/// The options of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Depth of the network.
    #[arg(long, value_enum, default_value_t = DepthArg::D50)]
    depth: DepthArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One variant's counts.
#[derive(Debug, Serialize)]
struct VariantRow {
    variant: String,
    params: u64,
    macs: u64,
    macs_1x1: u64,
    macs_3x3: u64,
    macs_stem: u64,
    macs_fc: u64,
    macs_over_a: f64,
}

/// The kernel family and what it runs.
#[derive(Debug, Serialize)]
struct Kernels {
    /// f32 lanes of a vector.
    lanes: usize,
    /// Rows and columns of the largest output tile.
    tile: [usize; 2],
    /// Whether CONVKIT_ISA chose the family.
    forced: bool,
    /// Whether bf16 dot products are native instructions.
    bf16_native: bool,
}

/// Cache sizes and the blocks derived from them, bytes.
#[derive(Debug, Serialize)]
struct Caches {
    l1d: usize,
    l2: usize,
    l3: usize,
    detected: bool,
    row_block: usize,
    conv_scratch: usize,
}

#[derive(Debug, Serialize)]
struct Info {
    #[serde(flatten)]
    machine: Machine,
    available: Vec<&'static str>,
    kernels: Option<Kernels>,
    caches: Caches,
    depth: usize,
    size: usize,
    variants: Vec<VariantRow>,
}

/// Runs `info`.
pub fn run(args: &InfoArgs) -> CliResult {
    let cache = CacheSizes::get();
    let available: Vec<&str> = Isa::ALL.iter().filter(|i| i.is_available()).map(|i| i.name()).collect();
    let selected = Isa::selected();
    let kernels = selected.as_ref().ok().map(|isa| {
        let t = isa.tile();
        Kernels {
            lanes: isa.lanes(),
            tile: [t.mr, t.nr * t.max_panels],
            forced: std::env::var_os(convkit_microkernel::ISA_ENV).is_some(),
            bf16_native: isa.native_bf16(),
        }
    });
    let base = counts(args.depth.spec(Variant::A), args.size)?.macs() as f64;
    let variants = Variant::ALL
        .into_iter()
        .map(|v| {
            let c = counts(args.depth.spec(v), args.size)?;
            Ok(VariantRow {
                variant: v.to_string(),
                params: c.params,
                macs: c.macs(),
                macs_1x1: c.macs_1x1,
                macs_3x3: c.macs_3x3,
                macs_stem: c.macs_stem,
                macs_fc: c.macs_fc,
                macs_over_a: c.macs() as f64 / base,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let info = Info {
        machine: Machine::here(),
        available,
        kernels,
        caches: Caches {
            l1d: cache.l1d,
            l2: cache.l2,
            l3: cache.l3,
            detected: cache.detected,
            row_block: cache.lhs_block_bytes(),
            conv_scratch: cache.scratch_bytes(),
        },
        depth: args.depth.spec(Variant::A).depth(),
        size: args.size,
        variants,
    };
    if args.json {
        return print_json(&info);
    }
    println!("CPU: {}", info.machine.cpu);
    match (&selected, &info.kernels) {
        (Ok(isa), Some(k)) => {
            let forced = if k.forced { ", forced by CONVKIT_ISA" } else { "" };
            println!(
                "kernels: {isa} ({} f32 lanes, {}x{} tiles{forced}); this CPU runs: {}",
                k.lanes,
                k.tile[0],
                k.tile[1],
                info.available.join(", ")
            );
            let bf16 = if k.bf16_native {
                "native (vdpbf16ps)"
            } else {
                "emulated (f32 FMAs on bf16 values; the CPU lacks AVX512-BF16 or it is not selected)"
            };
            println!("bf16: {bf16}");
        }
        _ => {
            let why = selected.as_ref().err().map_or(String::new(), |e| e.to_string());
            println!("kernels: {why}; this CPU runs: {}", info.available.join(", "))
        }
    }
    let kib = |b: usize| b >> 10;
    let c = &info.caches;
    println!(
        "caches: L1d {} KiB, L2 {} KiB per core, L3 {} KiB{} -> row blocks {} KiB, conv scratch {} KiB\n",
        kib(c.l1d),
        kib(c.l2),
        kib(c.l3),
        if c.detected { "" } else { " (not detected: assumed)" },
        kib(c.row_block),
        kib(c.conv_scratch)
    );
    println!("ResNet-{} at {}x{} (MACs; FLOPs = 2 x MACs)", info.depth, args.size, args.size);
    println!(
        "{:<8} {:>12} {:>8} {:>15} {:>15} {:>13} {:>11} {:>9}",
        "variant", "params", "GMACs", "1x1 MACs", "3x3 MACs", "stem MACs", "fc MACs", "MACs/A"
    );
    for r in &info.variants {
        println!(
            "{:<8} {:>12} {:>8.3} {:>15} {:>15} {:>13} {:>11} {:>9.3}",
            r.variant,
            r.params,
            r.macs as f64 / 1e9,
            r.macs_1x1,
            r.macs_3x3,
            r.macs_stem,
            r.macs_fc,
            r.macs_over_a
        );
    }
    Ok(())
}
