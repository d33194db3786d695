//! `convkit report`: the claims of "Bag of Tricks" measured on this machine, written as
//! one self-contained page (`index.html`), its figures (SVG) and every number behind
//! them (`report.json`).

mod figures;
mod measure;
mod page;

use super::{default_threads, CliResult, KernelArgs, Machine};
use clap::Args;
use convkit_tensor::Precision;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The options of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Directory to write index.html, the figures and report.json into (made if missing).
    #[arg(short, long)]
    output: PathBuf,
    /// Precisions of the variant table, comma-separated (default: f32, and bf16 where
    /// the CPU has native bf16 dot products).
    #[arg(long, value_enum, value_delimiter = ',')]
    precision: Option<Vec<Precision>>,
    /// Worker threads (default: the machine's cores).
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
    /// The larger batch of the variant table, beside batch 1.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one())]
    batch: usize,
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Timed passes of every measurement, spread over the rounds.
    #[arg(long, default_value_t = 10, value_parser = super::at_least_one())]
    iters: usize,
    /// Alternating rounds of every comparison (at most --iters); each network is built at
    /// its turn in a round, so only one is held at a time.
    #[arg(long, default_value_t = 3, value_parser = super::at_least_one())]
    rounds: usize,
    /// Seed of the weights and the input.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also print report.json on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kernels: KernelArgs,
}

/// Multiply-adds by kind of layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ByKind {
    stem: f64,
    #[serde(rename = "1x1")]
    conv1x1: f64,
    #[serde(rename = "3x3")]
    conv3x3: f64,
    fc: f64,
    /// Pools, the input's layout change.
    other: f64,
}

/// The kinds of layer the figures stack, in order, with their key in [`ByKind`].
pub const KINDS: [&str; 5] = ["stem", "1x1", "3x3", "fc", "other"];

impl ByKind {
    fn add(&mut self, kind: &str, v: f64) {
        *match kind {
            "stem" => &mut self.stem,
            "1x1" => &mut self.conv1x1,
            "3x3" => &mut self.conv3x3,
            "fc" => &mut self.fc,
            _ => &mut self.other,
        } += v;
    }
    /// The values in [`KINDS`] order.
    pub fn values(&self) -> [f64; 5] {
        [self.stem, self.conv1x1, self.conv3x3, self.fc, self.other]
    }
}

/// One variant's size.
#[derive(Debug, Serialize)]
pub struct VariantCounts {
    variant: String,
    params: u64,
    /// The paper's nominal multiply-adds.
    macs: u64,
    macs_by_kind: ByKind,
    macs_over_a: f64,
}

/// One timed configuration of the variant table.
#[derive(Debug, Serialize)]
pub struct Timing {
    variant: String,
    precision: &'static str,
    batch: usize,
    median_ms: f64,
    min_ms: f64,
    time_over_a: f64,
    macs_over_a: f64,
    gflops: f64,
    peak_share: f64,
}

/// One variant's profile (f32, batch 1): multiply-adds and time by kind of layer.
#[derive(Debug, Serialize)]
pub struct KindProfile {
    variant: String,
    /// Multiply-adds run, by kind (A runs fewer than its nominal count).
    macs: ByKind,
    ms: ByKind,
    total_ms: f64,
}

/// One conv layer of D on the roofline.
#[derive(Debug, Serialize)]
pub struct RooflinePoint {
    name: String,
    kind: String,
    flops: u64,
    /// Input, weights and output, f32.
    bytes: u64,
    intensity: f64,
    gflops: f64,
}

/// D against A.
#[derive(Debug, Serialize)]
pub struct FlopsClaim {
    a_macs: u64,
    d_macs: u64,
    d_over_a: f64,
}

/// D's time against A's, whole and by kind of layer.
#[derive(Debug, Serialize)]
pub struct TimeClaim {
    a_ms: f64,
    d_ms: f64,
    d_over_a: f64,
    /// Multiply-adds D runs over those A runs (A computes only what is read).
    run_macs_d_over_a: f64,
    /// D's profile minus A's, by kind: where D's extra time goes.
    difference_ms: ByKind,
}

/// The first 1x1 of a downsampling block, in A (stride 2) and B (stride 1).
#[derive(Debug, Serialize)]
pub struct StridedRead {
    block: String,
    input: [usize; 3],
    a_reads: u64,
    b_reads: u64,
    a_over_b: f64,
}

/// One conv layer on the direct path and on im2col + gemm.
#[derive(Debug, Serialize)]
pub struct Im2colLayer {
    name: String,
    kind: String,
    macs: u64,
    direct_ms: f64,
    im2col_ms: f64,
    copy_ms: f64,
    copy_bytes: u64,
}

/// Time per multiply-add of a kind of layer on one path.
#[derive(Debug, Serialize)]
pub struct PerMac {
    kind: String,
    direct_ps: f64,
    im2col_ps: f64,
}

/// The downsampling blocks' branches side by side against one after the other.
#[derive(Debug, Serialize)]
pub struct BranchClaim {
    variant: String,
    sequential_ms: f64,
    parallel_ms: f64,
    parallel_over_sequential: f64,
    network_sequential_ms: f64,
    network_parallel_ms: f64,
}

/// A's network computing only what is read, against every position.
#[derive(Debug, Serialize)]
pub struct PositionsClaim {
    macs_read_only: u64,
    macs_every: u64,
    ms_read_only: f64,
    ms_every: f64,
    time_saved: f64,
}

/// Every number the page shows.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    machine: Machine,
    date: String,
    command: String,
    size: usize,
    batch: usize,
    threads: usize,
    iters: usize,
    rounds: usize,
    /// Measured GFLOP/s of all threads, by precision.
    peaks: BTreeMap<&'static str, f64>,
    /// Measured GB/s of all threads reading memory.
    bandwidth_gbs: f64,
    /// Where the roofline's two roofs meet: f32 peak over bandwidth.
    ridge_flop_per_byte: f64,
    /// Layers of the roofline left of the ridge (bound by memory).
    layers_below_ridge: usize,
    variants: Vec<VariantCounts>,
    timings: Vec<Timing>,
    profiles: Vec<KindProfile>,
    roofline: Vec<RooflinePoint>,
    flops: FlopsClaim,
    time: TimeClaim,
    strided_reads: Vec<StridedRead>,
    im2col: Vec<Im2colLayer>,
    per_mac: Vec<PerMac>,
    branches: Vec<BranchClaim>,
    positions: PositionsClaim,
}

/// Runs `report`.
pub fn run(args: &ReportArgs) -> CliResult {
    std::fs::create_dir_all(&args.output).map_err(|e| format!("{}: {e}", args.output.display()))?;
    let report = measure::measure(args)?;
    let write = |name: &str, text: &str| {
        let path = args.output.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| format!("JSON: {e}"))?;
    write("report.json", &json)?;
    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| format!("JSON: {e}"))?;
    figures::write_all(&report, &args.output)?;
    write("index.html", &page::render(&report, &value)?)?;
    eprintln!("wrote {}", args.output.join("index.html").display());
    if args.json {
        println!("{json}");
    }
    Ok(())
}

/// Today's date (UTC), as YYYY-MM-DD.
fn today() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
