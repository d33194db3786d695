//! `convkit profile`: the time of every layer of one variant, and sums by kind of layer.

use super::{
    at_least_one, depth_parser, median, pool_peak, print_json, progress, random_input, spec, thread_pool, CliResult,
    Machine, TimingArgs,
};
use clap::Args;
use convkit_model::{ConvPath, KxkPath, StepTiming, Variant};
use convkit_tensor::Precision;
use serde::Serialize;
use std::collections::BTreeMap;

/// The options of `profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Variant of the network.
    #[arg(long, value_enum, default_value_t = Variant::D)]
    variant: Variant,
    /// Depth of the network.
    #[arg(long, default_value_t = 50, value_parser = depth_parser())]
    depth: usize,
    /// How KxK convs run.
    #[arg(long, value_enum, default_value_t = KxkPath::Auto)]
    kxk: KxkPath,
    /// Precision of the computation.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Images run through the network at a time when --batch is larger.
    #[arg(long, default_value_t = convkit_model::DEFAULT_SUB_BATCH, value_parser = at_least_one())]
    sub_batch: usize,
    /// Untimed passes first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[command(flatten)]
    timing: TimingArgs,
}

/// One step of the forward pass.
#[derive(Debug, Serialize)]
struct LayerRow {
    name: String,
    kind: &'static str,
    path: &'static str,
    input: [usize; 4],
    output: [usize; 4],
    macs: u64,
    ms: f64,
    gflops: f64,
    share: f64,
    scratch_bytes: usize,
    im2col_ms: f64,
}

/// The steps of one kind, summed.
#[derive(Debug, Serialize)]
struct KindRow {
    kind: &'static str,
    layers: usize,
    macs: u64,
    ms: f64,
    gflops: f64,
    peak_share: f64,
    share: f64,
}

#[derive(Debug, Serialize)]
struct ProfileReport {
    #[serde(flatten)]
    machine: Machine,
    variant: String,
    depth: usize,
    precision: &'static str,
    batch: usize,
    threads: usize,
    size: usize,
    iters: usize,
    total_ms: f64,
    peak_gflops: f64,
    layers: Vec<LayerRow>,
    by_kind: Vec<KindRow>,
}

fn gflops(macs: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        2.0 * macs as f64 / secs / 1e9
    } else {
        0.0
    }
}

/// Runs `profile`.
pub fn run(args: &ProfileArgs) -> CliResult {
    let t = &args.timing;
    let pool = thread_pool(t.threads)?;
    let x = random_input(t.batch, t.size, t.seed)?;
    let spec = spec(args.variant, args.depth)?;
    let config =
        t.kernels.config(spec).with_kxk(args.kxk).with_precision(args.precision).with_sub_batch(args.sub_batch);
    let model = config.build_seeded(t.seed)?;
    let mut ws = convkit_model::Workspace::new();
    let mut runs: Vec<Vec<StepTiming>> = Vec::new();
    let bar = progress((args.warmup + t.iters) as u64, "profile", t.json);
    for round in 0..args.warmup + t.iters {
        let mut steps = Vec::new();
        pool.install(|| model.forward_profiled(x.view(), &mut ws, &mut steps))?;
        if round >= args.warmup {
            runs.push(steps);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Median time of each step over the runs.
    let mut steps = runs[0].clone();
    for (i, s) in steps.iter_mut().enumerate() {
        s.seconds = median(&mut runs.iter().map(|r| r[i].seconds).collect::<Vec<_>>());
        s.lowering_seconds = median(&mut runs.iter().map(|r| r[i].lowering_seconds).collect::<Vec<_>>());
    }
    let total: f64 = steps.iter().map(|s| s.seconds).sum();
    let peak = pool_peak(t.peak, &pool, model.kernel());
    let mut by_kind: BTreeMap<&str, (u64, f64, usize)> = BTreeMap::new();
    for s in &steps {
        let e = by_kind.entry(s.kind.label()).or_default();
        e.0 += s.macs;
        e.1 += s.seconds;
        e.2 += 1;
    }
    let dims = |s: convkit_tensor::Shape| [s.n, s.c, s.h, s.w];
    let report = ProfileReport {
        machine: Machine::new(&t.kernels),
        variant: args.variant.to_string(),
        depth: spec.depth(),
        precision: model.precision().name(),
        batch: t.batch,
        threads: t.threads,
        size: t.size,
        iters: t.iters,
        total_ms: total * 1e3,
        peak_gflops: peak,
        layers: steps
            .iter()
            .map(|s| LayerRow {
                name: s.name.clone(),
                kind: s.kind.label(),
                path: s.path.map_or("", ConvPath::label),
                input: dims(s.input),
                output: dims(s.output),
                macs: s.macs,
                ms: s.seconds * 1e3,
                gflops: gflops(s.macs, s.seconds),
                share: s.seconds / total,
                scratch_bytes: s.scratch_bytes,
                im2col_ms: s.lowering_seconds * 1e3,
            })
            .collect(),
        by_kind: by_kind
            .iter()
            .map(|(&kind, &(macs, t, layers))| KindRow {
                kind,
                layers,
                macs,
                ms: t * 1e3,
                gflops: gflops(macs, t),
                peak_share: gflops(macs, t) / peak,
                share: t / total,
            })
            .collect(),
    };
    if t.json {
        return print_json(&report);
    }
    print_table(&report);
    Ok(())
}

fn print_table(r: &ProfileReport) {
    println!(
        "ResNet-{}-{}, {}, batch {}, {}x{}, {} thread(s), median of {} runs per layer, {} on {}",
        r.depth, r.variant, r.precision, r.batch, r.size, r.size, r.threads, r.iters, r.machine.isa, r.machine.cpu
    );
    println!(
        "{:<26} {:<8} {:<7} {:>18} {:>18} {:>11} {:>8} {:>8} {:>6} {:>9} {:>9}",
        "layer", "kind", "path", "input (n,c,h,w)", "output", "MACs", "ms", "GFLOP/s", "share", "scratch", "im2col ms"
    );
    let shape = |s: [usize; 4]| format!("{},{},{},{}", s[0], s[1], s[2], s[3]);
    for l in &r.layers {
        println!(
            "{:<26} {:<8} {:<7} {:>18} {:>18} {:>11} {:>8.3} {:>8.1} {:>5.1}% {:>9} {:>9}",
            l.name,
            l.kind,
            l.path,
            shape(l.input),
            shape(l.output),
            l.macs,
            l.ms,
            l.gflops,
            100.0 * l.share,
            if l.scratch_bytes > 0 { format!("{}K", l.scratch_bytes / 1024) } else { String::new() },
            if l.path == "im2col" { format!("{:.3}", l.im2col_ms) } else { String::new() }
        );
    }
    println!("\nby kind (peak {:.0} GFLOP/s):", r.peak_gflops);
    println!("{:<8} {:>7} {:>14} {:>9} {:>9} {:>7} {:>7}", "kind", "layers", "MACs", "ms", "GFLOP/s", "peak", "share");
    for k in &r.by_kind {
        println!(
            "{:<8} {:>7} {:>14} {:>9.3} {:>9.1} {:>6.0}% {:>6.1}%",
            k.kind,
            k.layers,
            k.macs,
            k.ms,
            k.gflops,
            100.0 * k.peak_share,
            100.0 * k.share
        );
    }
    let macs: u64 = r.layers.iter().map(|l| l.macs).sum();
    println!(
        "{:<8} {:>7} {:>14} {:>9.3} {:>9.1}",
        "total",
        r.layers.len(),
        macs,
        r.total_ms,
        gflops(macs, r.total_ms / 1e3)
    );
    let lowering: f64 = r.layers.iter().map(|l| l.im2col_ms).sum();
    if lowering > 0.0 {
        println!("im2col copies: {lowering:.3} ms, {:.1}% of the total", 100.0 * lowering / r.total_ms);
    }
}
