//! `convkit info`: the CPU, the kernel family and caches, and each variant's counts.

use super::{counts, depth_parser, print_json, spec, CliResult, KernelArgs, Machine};
use clap::Args;
use convkit_microkernel::{CacheSizes, CpuFeatures, Family, Kernel};
use convkit_model::Variant;
use serde::Serialize;

/// The options of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Depth of the network.
    #[arg(long, default_value_t = 50, value_parser = depth_parser())]
    depth: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kernels: KernelArgs,
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

/// One kernel of the registry, as this CPU sees it.
#[derive(Debug, Serialize)]
struct KernelRow {
    /// "family.precision", as the sweep names it.
    name: String,
    family: &'static str,
    precision: &'static str,
    /// The CPU capabilities it needs.
    requires: String,
    /// f32 lanes of a vector.
    lanes: usize,
    /// Rows and columns of the largest output tile.
    tile: [usize; 2],
    /// Reduction values per 32-bit panel slot.
    k_group: usize,
    /// Whether bf16 dot products are native instructions.
    bf16_native: bool,
    /// Whether this CPU runs it.
    available: bool,
}

/// What the CPU has and which kernels run.
#[derive(Debug, Serialize)]
struct Kernels {
    /// Every capability this CPU has (the AMX ones only once the OS granted them).
    detected: String,
    /// Whether --isa or CONVKIT_ISA masks them.
    masked: bool,
    /// The families this CPU runs within the mask, in the order the pickers prefer.
    families: Vec<&'static str>,
    /// The names of the kernels this CPU runs (whatever the mask): every one of them has
    /// a sweep in the microkernel tests.
    runs: Vec<String>,
    /// Every kernel of the registry.
    registry: Vec<KernelRow>,
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
    /// Named apart from the machine's `kernels` (the kernel of each precision), which
    /// the flattened machine writes at the same level.
    kernel_registry: Kernels,
    caches: Caches,
    depth: usize,
    size: usize,
    variants: Vec<VariantRow>,
}

/// Runs `info`.
pub fn run(args: &InfoArgs) -> CliResult {
    let cache = CacheSizes::get();
    let mask = args.kernels.mask()?;
    let registry: Vec<KernelRow> = Kernel::all()
        .map(|k| {
            let t = k.tile();
            KernelRow {
                name: k.to_string(),
                family: k.family().name(),
                precision: k.precision().name(),
                requires: k.requires().to_string(),
                lanes: k.family().lanes(),
                tile: [t.mr, t.nr * t.max_panels],
                k_group: k.k_group(),
                bf16_native: k.native_bf16(),
                available: k.is_available(),
            }
        })
        .collect();
    let kernels = Kernels {
        detected: CpuFeatures::detected().to_string(),
        masked: mask != CpuFeatures::detected(),
        families: Family::available_in(mask).map(Family::name).collect(),
        runs: registry.iter().filter(|k| k.available).map(|k| k.name.clone()).collect(),
        registry,
    };
    let base = counts(spec(Variant::A, args.depth)?, args.size)?.macs() as f64;
    let variants = Variant::ALL
        .into_iter()
        .map(|v| {
            let c = counts(spec(v, args.depth)?, args.size)?;
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
        .collect::<CliResult<Vec<_>>>()?;
    let info = Info {
        machine: Machine::new(&args.kernels),
        kernel_registry: kernels,
        caches: Caches {
            l1d: cache.l1d,
            l2: cache.l2,
            l3: cache.l3,
            detected: cache.detected,
            row_block: cache.lhs_block_bytes(),
            conv_scratch: cache.scratch_bytes(),
        },
        depth: args.depth,
        size: args.size,
        variants,
    };
    if args.json {
        return print_json(&info);
    }
    println!("CPU: {}", info.machine.cpu);
    let k = &info.kernel_registry;
    println!("CPU capabilities: {}", k.detected);
    let masked = if k.masked { format!(" (within the mask {})", info.machine.isa) } else { String::new() };
    let picks: Vec<String> = info.machine.kernels.iter().map(|(p, kernel)| format!("{p} on {kernel}")).collect();
    println!("kernels: {}{masked}; families this CPU runs: {}", picks.join(", "), k.families.join(", "));
    for row in &k.registry {
        let how = match row.precision {
            "bf16" if row.bf16_native => ", native vdpbf16ps",
            "bf16" => ", bf16 emulated with f32 FMAs",
            "int8" if row.requires.contains("vnni") => ", native vpdpbusd",
            "int8" => ", int8 widened to 16-bit products (exact)",
            _ => "",
        };
        let runs = if row.available { "" } else { " (this CPU lacks it)" };
        println!(
            "  {:<18} needs {:<46} {} lanes, {}x{} tiles{how}{runs}",
            row.name, row.requires, row.lanes, row.tile[0], row.tile[1]
        );
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
