//! One module per command, and what they share: the typed values of the options, the
//! model options, thread pools, progress bars and JSON output.

pub mod bench;
pub mod classify;
pub mod export;
pub mod info;
pub mod profile;
pub mod report;
pub mod run;

use clap::{Args, ValueEnum};
use convkit_microkernel::Isa;
use convkit_model::{KxkPath, ResNet, ResNetSpec, SeededWeights, Variant, Weights};
use convkit_tensor::{Layout, Precision, Shape, Tensor};
use serde::Serialize;
use std::io::IsTerminal;

/// What a command returns: a one-line message on failure.
pub type CliResult = Result<(), String>;

/// The four variants of "Bag of Tricks".
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VariantArg {
    /// Original ResNet (stride on the first 1x1 of a downsampling block).
    A,
    /// Stride on the 3x3 (torchvision's resnet50).
    B,
    /// B with the deep stem.
    C,
    /// C with the average-pool shortcut (timm's resnet50d).
    D,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Self {
        match v {
            VariantArg::A => Variant::A,
            VariantArg::B => Variant::B,
            VariantArg::C => Variant::C,
            VariantArg::D => Variant::D,
        }
    }
}

/// The network depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DepthArg {
    /// ResNet-50.
    #[value(name = "50")]
    D50,
    /// ResNet-101.
    #[value(name = "101")]
    D101,
    /// ResNet-152.
    #[value(name = "152")]
    D152,
}

impl DepthArg {
    /// The network of `variant` at this depth.
    pub fn spec(self, variant: impl Into<Variant>) -> ResNetSpec {
        let v = variant.into();
        match self {
            DepthArg::D50 => ResNetSpec::resnet50(v),
            DepthArg::D101 => ResNetSpec::resnet101(v),
            DepthArg::D152 => ResNetSpec::resnet152(v),
        }
    }
}

/// The precision a network computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 throughout.
    F32,
    /// bf16 weights and activations, f32 accumulation and logits (native on AVX512-BF16,
    /// emulated with f32 FMAs elsewhere).
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// How the KxK convs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KxkArg {
    /// Stride-1 3x3 on Winograd (F(4x4) up to 128 channels, F(2x2) above), the rest direct.
    Auto,
    /// Winograd F(4x4) up to 256 channels: fastest in f32, 26 MB more weights.
    Winograd,
    /// The microkernel over a padded copy, no im2col.
    Direct,
    /// im2col + the gemm crate (f32 only).
    Im2col,
}

impl KxkArg {
    /// The model's path, and the label bench and profile print.
    pub fn path(self) -> KxkPath {
        match self {
            KxkArg::Auto => KxkPath::Auto,
            KxkArg::Winograd => KxkPath::Winograd,
            KxkArg::Direct => KxkPath::Direct,
            KxkArg::Im2col => KxkPath::Im2col,
        }
    }
    /// The option's value, as typed.
    pub fn label(self) -> &'static str {
        match self {
            KxkArg::Auto => "auto",
            KxkArg::Winograd => "winograd",
            KxkArg::Direct => "direct",
            KxkArg::Im2col => "im2col",
        }
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
}

/// The worker threads a command uses unless told: one per core this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads a pool may have: far past any CPU this runs on, and short of
/// the thousands of threads an absurd count would spawn before failing.
pub const MAX_THREADS: usize = 1024;

/// Refuses a `--threads` outside 1 to [`MAX_THREADS`].
pub fn check_threads(threads: usize) -> Result<(), String> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(format!("--threads must be between 1 and {MAX_THREADS}, got {threads}"));
    }
    Ok(())
}

/// A rayon pool of `threads` workers (1 to [`MAX_THREADS`]).
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    check_threads(threads)?;
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| format!("thread pool: {e}"))
}

/// The options of every command that builds a network from a weights file.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Variant of the network.
    #[arg(long, value_enum, default_value_t = VariantArg::D)]
    pub variant: VariantArg,
    /// Depth of the network.
    #[arg(long, value_enum, default_value_t = DepthArg::D50)]
    pub depth: DepthArg,
    /// safetensors weights under timm/torchvision key names (see the README for how to get them).
    #[arg(long)]
    pub weights: std::path::PathBuf,
    /// Precision of the computation.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Worker threads (default: the machine's cores).
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
}

impl ModelArgs {
    /// The network these options name.
    pub fn spec(&self) -> ResNetSpec {
        self.depth.spec(self.variant)
    }

    /// Loads the weights (checking their metadata and keys against the network) and
    /// builds the model on its own pool of `--threads` threads.
    pub fn load(&self) -> Result<(ResNet, convkit_model::WeightsMetadata), String> {
        check_threads(self.threads)?;
        let weights = Weights::load(self.spec(), &self.weights).map_err(|e| e.to_string())?;
        let metadata = weights.metadata().clone();
        let model = ResNet::build(weights, KxkPath::default(), self.precision.into())
            .and_then(|m| m.with_threads(self.threads))
            .map_err(|e| e.to_string())?;
        Ok((model, metadata))
    }
}

/// A network on seeded weights (bench and profile).
pub fn seeded_model(
    spec: ResNetSpec,
    seed: u64,
    kxk: KxkArg,
    precision: Precision,
    sub_batch: usize,
) -> Result<ResNet, String> {
    let model = ResNet::build(SeededWeights::new(spec, seed), kxk.path(), precision).map_err(|e| e.to_string())?;
    Ok(model.with_sub_batch(sub_batch))
}

/// A reproducible input in [-1, 1) of `batch` images, NCHW.
pub fn random_input(batch: usize, size: usize, seed: u64) -> Result<Tensor, String> {
    let mut s = seed ^ 0x5EED;
    Tensor::from_fn(Shape::new(batch, 3, size, size), Layout::Nchw, |_, _, _, _| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
    .map_err(|e| e.to_string())
}

/// Multiply-adds of `spec` at `size` x `size`.
pub fn counts(spec: ResNetSpec, size: usize) -> Result<convkit_model::Counts, String> {
    spec.layers().counts(size, size).map_err(|e| format!("input size {size}: {e}"))
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
    mut turn: impl FnMut(usize, usize) -> Result<Vec<f64>, String>,
) -> Result<Vec<Vec<f64>>, String> {
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
    mut pass: impl FnMut() -> Result<(), String>,
) -> Result<Vec<f64>, String> {
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

/// Peak GFLOP/s of the pool's threads together in `precision`: `per_core` times threads,
/// or measured on every thread at once (f32 FMAs, or the bf16 dot product of the
/// selected family).
pub fn pool_peak(per_core: Option<f64>, pool: &rayon::ThreadPool, precision: Precision) -> Result<f64, String> {
    /// Seconds of the probe.
    const PEAK_PROBE_SECONDS: f64 = 0.3;
    let isa = Isa::selected().map_err(|e| e.to_string())?;
    Ok(match (per_core, precision) {
        (Some(per_core), Precision::F32) => per_core * pool.current_num_threads() as f64,
        (_, Precision::F32) => {
            pool.broadcast(|_| convkit_microkernel::measure_fma_gflops(isa, PEAK_PROBE_SECONDS)).iter().sum()
        }
        _ => pool.broadcast(|_| convkit_microkernel::measure_bf16_gflops(isa, PEAK_PROBE_SECONDS)).iter().sum(),
    })
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
    /// The kernel family the kernels run ("avx512bf16", "avx512", "avx2", "portable").
    pub isa: String,
}

impl Machine {
    /// This machine, and the family selected on it.
    pub fn here() -> Self {
        Machine {
            convkit: env!("CARGO_PKG_VERSION"),
            cpu: convkit_microkernel::cpu_name(),
            isa: Isa::selected().map_or_else(|e| format!("none ({e})"), |i| i.name().to_string()),
        }
    }
}
