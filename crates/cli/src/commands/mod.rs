//! One module per command, and what they share: the typed values of the options, the
//! model options, thread pools, progress bars and JSON output.

pub mod bench;
pub mod calibrate;
pub mod classify;
pub mod export;
pub mod info;
pub mod preprocess;
pub mod profile;
pub mod report;
pub mod run;

use clap::builder::TypedValueParser;
use clap::Args;
use convkit_microkernel::{CpuFeatures, Kernel};
use convkit_model::{ModelConfig, ResNetSpec, Variant};
use convkit_tensor::{Layout, Precision, Shape, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// What a command fails with. A model or kernel error is kept whole (its kind, and the
/// `source()` chain of an io error), so that a front end can act on it; the CLI's own
/// failures (a bad input file, a JSON error) are messages.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Building or running a model: a weights file, a key, a shape.
    #[error(transparent)]
    Model(#[from] convkit_model::ModelError),
    /// A kernel or tensor call refused its arguments.
    #[error(transparent)]
    Kernel(#[from] convkit_tensor::Error),
    /// A failure of the command itself, said in one line.
    #[error("{0}")]
    Message(String),
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Message(message)
    }
}

/// What a command returns.
pub type CliResult<T = ()> = Result<T, CliError>;

/// The values of `--depth`: the depths [`ResNetSpec::with_depth`] builds.
pub fn depth_parser() -> impl TypedValueParser<Value = usize> {
    clap::builder::PossibleValuesParser::new(["50", "101", "152"])
        .map(|depth| depth.parse::<usize>().expect("every listed depth is a number"))
}

/// The network of `variant` at `depth` (one of [`depth_parser`]'s values).
pub fn spec(variant: Variant, depth: usize) -> CliResult<ResNetSpec> {
    Ok(ResNetSpec::with_depth(variant, depth)?)
}

/// The CPU capabilities the kernels may use: a kernel family's name (`avx2`) or
/// capabilities joined by `+` (`avx512f+avx512bf16`); `CONVKIT_ISA`, else all this CPU
/// has, when not given.
#[derive(Debug, Clone, Copy, Args)]
pub struct KernelArgs {
    /// CPU capabilities the kernels may use: a kernel family (avx512bf16, avx512, avx2,
    /// portable) or capabilities joined by + (default: CONVKIT_ISA, else all this CPU has).
    #[arg(long, value_name = "MASK")]
    pub isa: Option<CpuFeatures>,
}

impl KernelArgs {
    /// The model config for `spec` with this mask (the process default when not given).
    pub fn config(&self, spec: ResNetSpec) -> ModelConfig {
        ModelConfig::new(spec).with_features_opt(self.isa)
    }

    /// The mask in effect, checked against this CPU.
    pub fn mask(&self) -> CliResult<CpuFeatures> {
        Ok(CpuFeatures::resolve(self.isa)?)
    }
}

/// The value parser of a count that must be at least one (a batch, passes, rounds).
pub fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// The options bench and profile share: what runs, on how many threads, how often.
#[derive(Debug, Args)]
pub struct TimingArgs {
    /// Batch size.
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub batch: usize,
    /// Worker threads (default: the machine's cores).
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Timed forward passes (bench: of each case, spread over its rounds; profile: each
    /// layer's time is its median over them).
    #[arg(long, default_value_t = 20, value_parser = at_least_one())]
    pub iters: usize,
    /// Seed of the weights and the input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// f32 FMA peak of one core in GFLOP/s for the share-of-peak column; measured on every
    /// worker thread at once when not given.
    #[arg(long)]
    pub peak: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kernels: KernelArgs,
}

/// An image a command could not read, in its JSON report.
#[derive(Debug, Serialize)]
pub struct FailedImage {
    /// The file (or argument) as given.
    pub file: String,
    /// What is wrong with it.
    pub error: String,
}

/// The worker threads a command uses unless told: one per core this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads a pool may have: far past any CPU this runs on, and short of
/// the thousands of threads an absurd count would spawn before failing.
pub const MAX_THREADS: usize = 1024;

/// Refuses a `--threads` outside 1 to [`MAX_THREADS`].
pub fn check_threads(threads: usize) -> CliResult<()> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(format!("--threads must be between 1 and {MAX_THREADS}, got {threads}").into());
    }
    Ok(())
}

/// A rayon pool of `threads` workers (1 to [`MAX_THREADS`]).
pub fn thread_pool(threads: usize) -> CliResult<rayon::ThreadPool> {
    check_threads(threads)?;
    Ok(rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| format!("thread pool: {e}"))?)
}

/// The options of every command that builds a network from a weights file.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Variant of the network.
    #[arg(long, value_enum, default_value_t = Variant::D)]
    pub variant: Variant,
    /// Depth of the network.
    #[arg(long, default_value_t = 50, value_parser = depth_parser())]
    pub depth: usize,
    /// safetensors weights under timm/torchvision key names (see the README for how to get
    /// them); with --precision int8, a file written by `convkit calibrate`.
    #[arg(long)]
    pub weights: std::path::PathBuf,
    /// Precision of the computation.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Worker threads (default: the machine's cores).
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
    #[command(flatten)]
    pub kernels: KernelArgs,
}

impl ModelArgs {
    /// The model these options describe, on its own pool of `--threads` threads.
    pub fn config(&self) -> CliResult<ModelConfig> {
        check_threads(self.threads)?;
        let spec = spec(self.variant, self.depth)?;
        Ok(self.kernels.config(spec).with_precision(self.precision).with_threads(self.threads))
    }

    /// Loads the weights (checking their metadata and keys against the network) and
    /// builds the model.
    pub fn load(&self) -> CliResult<(convkit_model::ResNet, convkit_model::WeightsMetadata)> {
        Ok(self.config()?.load(&self.weights)?)
    }
}

/// A reproducible input in [-1, 1) of `batch` images, NCHW.
pub fn random_input(batch: usize, size: usize, seed: u64) -> CliResult<Tensor> {
    let mut s = seed ^ 0x5EED;
    Ok(Tensor::from_fn(Shape::new(batch, 3, size, size), Layout::Nchw, |_, _, _, _| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })?)
}

/// Multiply-adds of `spec` at `size` x `size`.
pub fn counts(spec: ResNetSpec, size: usize) -> CliResult<convkit_model::Counts> {
    Ok(spec.layers().counts(size, size).map_err(|e| format!("input size {size}: {e}"))?)
}

/// Median of `v` (sorted in place); NaN for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Times cases in `rounds` alternating rounds: in each round every case takes its turn,
/// `turn(case, passes)` returning the seconds of `passes` timed passes (after any
/// warm-up of its own); `iters` passes per case in all, spread evenly over the rounds.
pub fn alternating_rounds(
    cases: usize,
    rounds: usize,
    iters: usize,
    mut turn: impl FnMut(usize, usize) -> CliResult<Vec<f64>>,
) -> CliResult<Vec<Vec<f64>>> {
    let rounds = rounds.clamp(1, iters.max(1));
    let mut times = vec![Vec::new(); cases];
    for round in 0..rounds {
        let passes = iters / rounds + usize::from(round < iters % rounds);
        for (case, t) in times.iter_mut().enumerate() {
            t.extend(turn(case, passes)?);
        }
    }
    Ok(times)
}

/// `warmup` untimed then `passes` timed calls of `pass`: the seconds of the timed ones.
pub fn timed_passes(
    warmup: usize,
    passes: usize,
    bar: &indicatif::ProgressBar,
    mut pass: impl FnMut() -> CliResult<()>,
) -> CliResult<Vec<f64>> {
    let mut times = Vec::with_capacity(passes);
    for i in 0..warmup + passes {
        let start = std::time::Instant::now();
        pass()?;
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
        bar.inc(1);
    }
    Ok(times)
}

/// A progress bar on stderr when it is a terminal and the output is not JSON.
pub fn progress(len: u64, message: &'static str, hidden: bool) -> indicatif::ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}").expect("valid template"),
    );
    bar.set_message(message);
    bar
}

/// Peak GFLOP/s of the pool's threads together on `kernel`: `per_core` times threads (f32
/// only), or measured on every thread at once (f32 FMAs, or the bf16 or u8 x s8 dot
/// product of the kernel's family).
pub fn pool_peak(per_core: Option<f64>, pool: &rayon::ThreadPool, kernel: Kernel) -> f64 {
    /// Seconds of the probe.
    const PEAK_PROBE_SECONDS: f64 = 0.3;
    let family = kernel.family();
    match (per_core, kernel.precision()) {
        (Some(per_core), Precision::F32) => per_core * pool.current_num_threads() as f64,
        (None, Precision::F32) => {
            pool.broadcast(|_| convkit_microkernel::measure_fma_gflops(family, PEAK_PROBE_SECONDS)).iter().sum()
        }
        (_, Precision::Bf16) => {
            pool.broadcast(|_| convkit_microkernel::measure_bf16_gflops(family, PEAK_PROBE_SECONDS)).iter().sum()
        }
        (_, Precision::Int8) => {
            pool.broadcast(|_| convkit_microkernel::measure_int8_gops(family, PEAK_PROBE_SECONDS)).iter().sum()
        }
    }
}

/// Prints `value` as one JSON document (numbers that are not finite become null).
pub fn print_json(value: &impl Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("JSON: {e}"))?;
    println!("{text}");
    Ok(())
}

/// What every JSON report says of the machine and the build.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// convkit's version.
    pub convkit: &'static str,
    /// The CPU's model name.
    pub cpu: String,
    /// The CPU capabilities the kernels may use ("avx2+fma+avx512f+..."): the mask of
    /// `--isa` or `CONVKIT_ISA` over what this CPU has.
    pub isa: String,
    /// The kernel each precision runs on within that mask ("avx512.f32", "avx512bf16.bf16").
    pub kernels: BTreeMap<&'static str, String>,
}

impl Machine {
    /// This machine, and the kernels `kernels` chooses on it.
    pub fn new(kernels: &KernelArgs) -> Self {
        let (isa, picks) = match kernels.mask() {
            Ok(mask) => {
                let pick = |p: Precision| Kernel::pick(p, mask).map_or_else(|e| e.to_string(), |k| k.to_string());
                (mask.to_string(), Precision::ALL.into_iter().map(|p| (p.name(), pick(p))).collect())
            }
            Err(e) => (format!("none ({e})"), BTreeMap::new()),
        };
        Machine { convkit: env!("CARGO_PKG_VERSION"), cpu: convkit_microkernel::cpu_name(), isa, kernels: picks }
    }
}
