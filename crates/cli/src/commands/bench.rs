//! `convkit bench`: the forward pass of each case in alternating rounds, on seeded weights.
//!
//! A case is one (variant, KxK path, parallel mode, precision, sub-batch). Each round runs
//! every case in turn, so a busy moment of the machine falls on all of them alike. Up to
//! [`MAX_HELD_NETWORKS`] networks are built once and held; with more cases, only one
//! network is held at a time: each is built at its turn in the round and dropped after.

use super::{
    alternating_rounds, at_least_one, counts, depth_parser, median, pool_peak, print_json, progress, random_input,
    spec, thread_pool, timed_passes, CliResult, Machine, TimingArgs,
};
use clap::{Args, ValueEnum};
use convkit_microkernel::Kernel;
use convkit_model::{BatchRunner, KxkPath, RangeMethod, ResNet, Variant, Workspace, SEEDED_CALIBRATION_IMAGES};
use convkit_tensor::Precision;
use serde::Serialize;
use std::collections::BTreeMap;

/// Most networks bench holds at once (about 100 MiB each in f32): the four variants of
/// the default run are built once; larger runs build each case at its turn.
pub const MAX_HELD_NETWORKS: usize = 4;

/// How a case spreads work over the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parallel {
    /// Every layer split across the threads.
    Intra,
    /// Each thread runs its share of the images through the whole network.
    Batch,
}

/// The options of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Variants, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Variant::ALL)]
    variant: Vec<Variant>,
    /// Depth of the network.
    #[arg(long, default_value_t = 50, value_parser = depth_parser())]
    depth: usize,
    /// How KxK convs run, comma-separated: every path is timed in the same rounds.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [KxkPath::Auto])]
    kxk: Vec<KxkPath>,
    /// Parallelism, comma-separated: intra (split each layer) and/or batch (split the images).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Parallel::Intra])]
    parallel: Vec<Parallel>,
    /// Precisions, comma-separated: each is timed in the same rounds, its share of peak
    /// against its own measured peak.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Precision::F32])]
    precision: Vec<Precision>,
    /// Images run through the network at a time when --batch is larger, comma-separated
    /// (the arena holds one sub-batch).
    #[arg(long, value_delimiter = ',', default_values_t = [convkit_model::DEFAULT_SUB_BATCH], value_parser = at_least_one())]
    sub_batch: Vec<usize>,
    /// Alternating rounds (at most --iters).
    #[arg(long, default_value_t = 5, value_parser = at_least_one())]
    rounds: usize,
    /// Untimed passes of each case at the start of each round.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[command(flatten)]
    timing: TimingArgs,
}

/// One case to time.
#[derive(Debug, Clone, Copy)]
struct Case {
    variant: Variant,
    kxk: KxkPath,
    parallel: Parallel,
    precision: Precision,
    sub_batch: usize,
}

/// One timed case: a row of the table and of the JSON.
#[derive(Debug, Serialize)]
struct BenchRow {
    variant: String,
    depth: usize,
    kxk: &'static str,
    parallel: Parallel,
    precision: &'static str,
    sub_batch: usize,
    median_ms: f64,
    min_ms: f64,
    images_per_s: f64,
    gflops: f64,
    peak_gflops: f64,
    peak_share: f64,
    macs: u64,
    /// Median time over A's in the same configuration, when A was timed.
    time_over_a: Option<f64>,
    macs_over_a: f64,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    #[serde(flatten)]
    machine: Machine,
    batch: usize,
    threads: usize,
    size: usize,
    iters: usize,
    rounds: usize,
    /// Measured (or --peak) GFLOP/s of all threads, by precision.
    peaks: BTreeMap<&'static str, f64>,
    rows: Vec<BenchRow>,
}

/// A case's runner, kept across rounds: its arena stays allocated.
enum Runner {
    Intra(Box<Workspace>),
    Batch(BatchRunner),
}

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> CliResult {
    let t = &args.timing;
    let pool = thread_pool(t.threads)?;
    let mut cases = Vec::new();
    for &sub_batch in &args.sub_batch {
        for &kxk in &args.kxk {
            for &precision in &args.precision {
                for &parallel in &args.parallel {
                    for &variant in &args.variant {
                        cases.push(Case { variant, kxk, parallel, precision, sub_batch });
                    }
                }
            }
        }
    }
    if cases.iter().any(|c| c.precision == Precision::Int8) {
        eprintln!(
            "convkit: int8 runs the seeded weights calibrated on {SEEDED_CALIBRATION_IMAGES} seeded images ({} ranges) \
             when each network is built",
            RangeMethod::default()
        );
    }
    let x = random_input(t.batch, t.size, t.seed)?;
    let rounds = args.rounds.min(t.iters);
    let mut runners = cases
        .iter()
        .map(|c| match c.parallel {
            Parallel::Intra => Ok(Runner::Intra(Box::default())),
            Parallel::Batch => BatchRunner::new(t.threads).map(Runner::Batch),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let build = |c: &Case| -> CliResult<ResNet> {
        let config = t.kernels.config(spec(c.variant, args.depth)?);
        let config = config.with_kxk(c.kxk).with_precision(c.precision).with_sub_batch(c.sub_batch);
        Ok(config.build_seeded(t.seed)?)
    };
    let mut held: Vec<ResNet> =
        if cases.len() <= MAX_HELD_NETWORKS { cases.iter().map(build).collect::<Result<_, _>>()? } else { Vec::new() };
    let bar = progress(((args.warmup * rounds + t.iters) * cases.len()) as u64, "bench", t.json);
    let mut times = alternating_rounds(cases.len(), rounds, t.iters, |i, passes| {
        let built;
        let model: &ResNet = match held.get(i) {
            Some(m) => m,
            None => {
                built = build(&cases[i])?;
                &built
            }
        };
        let runner = &mut runners[i];
        timed_passes(args.warmup, passes, &bar, || {
            match runner {
                Runner::Intra(ws) => pool.install(|| model.forward(x.view(), ws))?,
                Runner::Batch(r) => r.forward(model, x.view())?,
            };
            Ok(())
        })
    })?;
    bar.finish_and_clear();
    held.clear();
    let mut peaks = BTreeMap::new();
    let mask = t.kernels.mask()?;
    for c in &cases {
        if !peaks.contains_key(c.precision.name()) {
            let kernel = Kernel::pick(c.precision, mask)?;
            peaks.insert(c.precision.name(), pool_peak(t.peak, &pool, kernel));
        }
    }
    let macs_a = counts(spec(Variant::A, args.depth)?, t.size)?.macs() as f64;
    let mut rows = Vec::new();
    for (case, passes) in cases.iter().zip(&mut times) {
        let macs = counts(spec(case.variant, args.depth)?, t.size)?.macs() * t.batch as u64;
        let min = passes.iter().cloned().fold(f64::INFINITY, f64::min);
        let med = median(passes);
        let gflops = 2.0 * macs as f64 / med / 1e9;
        let peak = peaks[case.precision.name()];
        rows.push(BenchRow {
            variant: case.variant.to_string(),
            depth: args.depth,
            kxk: case.kxk.name(),
            parallel: case.parallel,
            precision: case.precision.name(),
            sub_batch: case.sub_batch,
            median_ms: med * 1e3,
            min_ms: min * 1e3,
            images_per_s: t.batch as f64 / med,
            gflops,
            peak_gflops: peak,
            peak_share: gflops / peak,
            macs,
            time_over_a: None,
            macs_over_a: macs as f64 / t.batch as f64 / macs_a,
        });
    }
    for i in 0..rows.len() {
        let c = cases[i];
        let a = cases.iter().position(|o| {
            o.variant == Variant::A
                && (o.kxk, o.parallel, o.precision, o.sub_batch) == (c.kxk, c.parallel, c.precision, c.sub_batch)
        });
        rows[i].time_over_a = a.map(|a| rows[i].median_ms / rows[a].median_ms);
    }
    let report = BenchReport {
        machine: Machine::new(&t.kernels),
        batch: t.batch,
        threads: t.threads,
        size: t.size,
        iters: t.iters,
        rounds,
        peaks,
        rows,
    };
    if t.json {
        return print_json(&report);
    }
    print_table(&report);
    Ok(())
}

fn print_table(r: &BenchReport) {
    let peak_list: Vec<String> = r.peaks.iter().map(|(p, g)| format!("{p} {g:.0}")).collect();
    println!(
        "ResNet-{}, batch {}, {}x{}, {} thread(s), {} passes in {} alternating rounds, {} on {} (measured peak GFLOP/s: {})",
        r.rows.first().map_or(50, |row| row.depth),
        r.batch,
        r.size,
        r.size,
        r.threads,
        r.iters,
        r.rounds,
        r.machine.isa,
        r.machine.cpu,
        peak_list.join(", ")
    );
    println!(
        "{:<8} {:<16} {:<5} {:>10} {:>10} {:>9} {:>9} {:>7} {:>8} {:>8}",
        "variant", "path", "prec", "median ms", "min ms", "images/s", "GFLOP/s", "peak", "time/A", "MACs/A"
    );
    let multi_sub = r.rows.iter().any(|row| row.sub_batch != r.rows[0].sub_batch);
    for row in &r.rows {
        let mut path = row.kxk.to_string();
        if multi_sub {
            path += &format!("/sub{}", row.sub_batch);
        }
        if row.parallel == Parallel::Batch {
            path += "/batch";
        }
        let ratio = row.time_over_a.map_or("-".to_string(), |a| format!("{a:.3}"));
        println!(
            "{:<8} {:<16} {:<5} {:>10.2} {:>10.2} {:>9.1} {:>9.1} {:>6.0}% {:>8} {:>8.3}",
            row.variant,
            path,
            row.precision,
            row.median_ms,
            row.min_ms,
            row.images_per_s,
            row.gflops,
            100.0 * row.peak_share,
            ratio,
            row.macs_over_a
        );
    }
}
