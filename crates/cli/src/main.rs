//! `convkit`: ResNet-50 A/B/C/D counts, benchmarks, profiles, inference and weight export.

use clap::{Args, Parser, Subcommand};
use convkit_cli::{classify, npy};
use convkit_microkernel::{CacheSizes, Isa};
use convkit_model::{
    BatchRunner, ConvPath, KxkPath, ResNet, ResNetSpec, SeededWeights, StepTiming, Variant, Weights, Workspace,
};
use convkit_tensor::{Layout, Precision, Shape, Tensor, TensorView};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Seconds of the FMA probe that sets the share-of-peak column when --peak is not given.
const PEAK_PROBE_SECONDS: f64 = 0.3;

#[derive(Parser)]
#[command(name = "convkit", version, about = "ResNet-50 A/B/C/D (Bag of Tricks) on convkit's CPU kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parameters and multiply-adds of A, B, C, D, by kind of layer.
    Info {
        /// Input height and width.
        #[arg(long, default_value_t = 224)]
        size: usize,
    },
    /// Times the forward pass of each variant in alternating rounds (seeded weights).
    Bench(BenchArgs),
    /// Times every layer of one variant, and sums by kind of layer.
    Profile(ProfileArgs),
    /// Logits of an NCHW float32 .npy input, written as .npy.
    Run {
        #[arg(long, default_value = "d")]
        variant: String,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// f32 or bf16 (bf16 weights and activations, f32 accumulation and logits).
        #[arg(long, default_value = "f32")]
        precision: String,
    },
    /// Top-5 ImageNet classes of JPEG/PNG images (resize 256, center crop 224).
    Classify {
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long, default_value = "d")]
        variant: String,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// f32 or bf16 (bf16 weights and activations, f32 accumulation and logits).
        #[arg(long, default_value = "f32")]
        precision: String,
    },
    /// Writes seeded weights under timm/torchvision key names as safetensors.
    Export {
        #[arg(long, default_value = "d")]
        variant: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args)]
struct Common {
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Worker threads (one rayon pool, installed around every forward pass).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Timed forward passes per variant.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed passes per variant first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How KxK convs run: auto (stride-1 3x3 on Winograd, F(4x4) up to 128 channels and
    /// F(2x2) above; the others direct; the default), winograd (F(4x4) up to 256
    /// channels: fastest, 26 MB more weights), direct (the microkernel, no im2col) or im2col
    /// (+ gemm); bench takes a comma-separated list and times every path in the same rounds.
    #[arg(long, default_value = "auto")]
    kxk: String,
    /// Images run through the network at a time when --batch is larger (the arena holds one
    /// sub-batch); bench takes a comma-separated list and times each in the same rounds.
    #[arg(long, default_value_t = convkit_model::DEFAULT_SUB_BATCH.to_string())]
    sub_batch: String,
    /// f32 (the default) or bf16 (bf16 weights and activations, f32 accumulation; native
    /// on AVX512-BF16, emulated with f32 FMAs elsewhere); bench takes a comma-separated
    /// list and times each in the same rounds.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// f32 FMA peak of one core in GFLOP/s, for the share-of-peak column; measured on
    /// every worker thread at once (12 FMA chains of the selected kernel family) when not given.
    #[arg(long)]
    peak: Option<f64>,
}

/// How a bench case spreads work over the threads.
enum Runner {
    /// Every layer split across the pool's threads.
    Intra(Workspace),
    /// Each thread runs its share of the images through the whole network.
    Batch(BatchRunner),
}

#[derive(Args)]
struct BenchArgs {
    /// Comma-separated variants.
    #[arg(long, default_value = "a,b,c,d")]
    variant: String,
    /// Parallelism: intra (split each layer) and/or batch (split the images), comma-separated.
    #[arg(long, default_value = "intra")]
    parallel: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct ProfileArgs {
    #[arg(long, default_value = "d")]
    variant: String,
    #[command(flatten)]
    common: Common,
}

/// Restores the default action of SIGPIPE, which the Rust runtime ignores: a closed stdout
/// (`convkit info | head -1`) then ends the program quietly, as it ends `cat` or `ls`,
/// instead of a panic in `println!`.
#[cfg(unix)]
fn die_quietly_on_closed_stdout() {
    // SAFETY: `signal` is the C library's (a foreign API); it is called with a valid
    // signal number and the SIG_DFL disposition, before any other thread exists, so no
    // handler can race with it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn die_quietly_on_closed_stdout() {}

/// Large allocations always mapped, and unmapped when freed. glibc otherwise raises its
/// mmap threshold each time a large block is freed, so the raw f32 tensors a model build
/// frees one by one stay in the heap: `bench --variant d --precision bf16` peaked at 106
/// MiB, 21 MiB of it freed weights; with the threshold fixed, 85 MiB. The forward pass
/// allocates nothing after its first run, so this costs no time there.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_weights_to_the_system() {
    // SAFETY: `mallopt` is the C library's (a foreign API), called with a valid parameter
    // and value before any other thread exists or anything large is allocated.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_weights_to_the_system() {}

fn main() -> ExitCode {
    die_quietly_on_closed_stdout();
    return_freed_weights_to_the_system();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { size } => info(size),
        Command::Bench(args) => bench(&args),
        Command::Profile(args) => profile(&args),
        Command::Run { variant, weights, input, output, threads, precision } => {
            run(&variant, &weights, &input, &output, threads, &precision)
        }
        Command::Classify { images, variant, weights, threads, precision } => {
            classify(&images, &variant, &weights, threads, &precision)
        }
        Command::Export { variant, seed, output } => export(&variant, seed, &output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convkit: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), String>;

fn parse_variants(list: &str) -> Result<Vec<Variant>, String> {
    list.split(',').filter(|s| !s.trim().is_empty()).map(|s| Variant::parse(s).map_err(|e| e.to_string())).collect()
}

/// Peak GFLOP/s of the pool's threads together in `precision`: `--peak` per core times
/// threads, or measured on every thread at once (f32 FMAs, or the bf16 dot product of the
/// selected family).
fn pool_peak(c: &Common, pool: &rayon::ThreadPool, precision: Precision) -> Result<f64, String> {
    let isa = Isa::selected().map_err(|e| e.to_string())?;
    Ok(match (c.peak, precision) {
        (Some(per_core), Precision::F32) => per_core * c.threads as f64,
        (_, Precision::F32) => {
            pool.broadcast(|_| convkit_microkernel::measure_fma_gflops(isa, PEAK_PROBE_SECONDS)).iter().sum()
        }
        _ => pool.broadcast(|_| convkit_microkernel::measure_bf16_gflops(isa, PEAK_PROBE_SECONDS)).iter().sum(),
    })
}

/// The precisions of a comma-separated list.
fn precisions(list: &str) -> Result<Vec<Precision>, String> {
    let all: Vec<Precision> = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse::<Precision>().map_err(|e| format!("--precision: {e}")))
        .collect::<Result<_, _>>()?;
    if all.is_empty() {
        return Err("--precision: expected f32, bf16 or a list of them".into());
    }
    Ok(all)
}

/// The one precision of a command that takes one.
fn one_precision(list: &str) -> Result<Precision, String> {
    match precisions(list)?[..] {
        [p] => Ok(p),
        _ => Err("--precision: only bench takes a list".into()),
    }
}

/// Most worker threads a pool may have: far past any CPU this runs on, and short of
/// the thousands of threads an absurd count would spawn before failing.
const MAX_THREADS: usize = 1024;

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(format!("--threads must be between 1 and {MAX_THREADS}, got {threads}"));
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| format!("thread pool: {e}"))
}

fn counts(v: Variant, size: usize) -> Result<convkit_model::Counts, String> {
    ResNetSpec::resnet50(v).layers().counts(size, size).map_err(|e| format!("input size {size}: {e}"))
}

fn info(size: usize) -> CliResult {
    let base = counts(Variant::A, size)?.macs() as f64;
    let cache = CacheSizes::get();
    println!("CPU: {}", convkit_microkernel::cpu_name());
    let available: Vec<&str> = Isa::ALL.iter().filter(|i| i.is_available()).map(|i| i.name()).collect();
    match Isa::selected() {
        Ok(isa) => {
            let t = isa.tile();
            let forced =
                if std::env::var_os(convkit_microkernel::ISA_ENV).is_some() { ", forced by CONVKIT_ISA" } else { "" };
            println!(
                "kernels: {isa} ({} f32 lanes, {}x{} tiles{forced}); this CPU runs: {}",
                isa.lanes(),
                t.mr,
                t.nr * t.max_panels,
                available.join(", ")
            );
            let bf16 = if isa.native_bf16() {
                "native (vdpbf16ps)"
            } else {
                "emulated (f32 FMAs on bf16 values; the CPU lacks AVX512-BF16 or it is not selected)"
            };
            println!("bf16: {bf16}");
        }
        Err(e) => println!("kernels: {e}; this CPU runs: {}", available.join(", ")),
    }
    let kib = |b: usize| b >> 10;
    println!(
        "caches: L1d {} KiB, L2 {} KiB per core, L3 {} KiB{} -> row blocks {} KiB, conv scratch {} KiB\n",
        kib(cache.l1d),
        kib(cache.l2),
        kib(cache.l3),
        if cache.detected { "" } else { " (not detected: assumed)" },
        kib(cache.lhs_block_bytes()),
        kib(cache.scratch_bytes())
    );
    println!("ResNet-50 at {size}x{size} (MACs; FLOPs = 2 x MACs)");
    println!(
        "{:<8} {:>12} {:>8} {:>15} {:>15} {:>13} {:>11} {:>9}",
        "variant", "params", "GMACs", "1x1 MACs", "3x3 MACs", "stem MACs", "fc MACs", "MACs/A"
    );
    for v in Variant::ALL {
        let c = counts(v, size)?;
        println!(
            "{:<8} {:>12} {:>8.3} {:>15} {:>15} {:>13} {:>11} {:>9.3}",
            v.to_string(),
            c.params,
            c.macs() as f64 / 1e9,
            c.macs_1x1,
            c.macs_3x3,
            c.macs_stem,
            c.macs_fc,
            c.macs() as f64 / base
        );
    }
    Ok(())
}

fn kxk_path(name: &str) -> Result<KxkPath, String> {
    match name {
        "auto" => Ok(KxkPath::Auto),
        "winograd" => Ok(KxkPath::Winograd),
        "direct" => Ok(KxkPath::Direct),
        "im2col" => Ok(KxkPath::Im2col),
        other => Err(format!("unknown --kxk '{other}': expected auto, winograd, direct or im2col")),
    }
}

/// The --sub-batch values (at least one, each at least 1).
fn sub_batches(list: &str) -> Result<Vec<usize>, String> {
    let values = list
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("--sub-batch '{v}': expected a whole number of images, at least 1")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() {
        return Err("--sub-batch: expected at least one value".into());
    }
    Ok(values)
}

/// The single --sub-batch value of a command that runs one configuration.
fn one_sub_batch(c: &Common) -> Result<usize, String> {
    match sub_batches(&c.sub_batch)?[..] {
        [n] => Ok(n),
        _ => Err("--sub-batch: only bench takes a list".into()),
    }
}

fn seeded_model(v: Variant, c: &Common) -> Result<ResNet, String> {
    let weights = SeededWeights::new(ResNetSpec::resnet50(v), c.seed);
    let model = ResNet::build(weights, kxk_path(&c.kxk)?, one_precision(&c.precision)?).map_err(|e| e.to_string())?;
    Ok(model.with_sub_batch(one_sub_batch(c)?))
}

fn random_input(c: &Common) -> Result<Tensor, String> {
    let shape = Shape::new(c.batch, 3, c.size, c.size);
    let mut s = c.seed ^ 0x5EED;
    Tensor::from_fn(shape, Layout::Nchw, |_, _, _, _| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
    .map_err(|e| e.to_string())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn progress(len: u64, hidden: bool) -> indicatif::ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}").expect("valid template"),
    );
    bar
}

fn bench(args: &BenchArgs) -> CliResult {
    let c = &args.common;
    let variants = parse_variants(&args.variant)?;
    let paths: Vec<&str> = c.kxk.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if variants.is_empty() || paths.is_empty() || c.iters == 0 || c.batch == 0 {
        return Err("need at least one variant and --kxk path, --iters >= 1 and --batch >= 1".into());
    }
    let modes: Vec<&str> = args.parallel.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if let Some(bad) = modes.iter().find(|m| !matches!(**m, "intra" | "batch")) {
        return Err(format!("unknown --parallel '{bad}': expected intra or batch"));
    }
    // Every (KxK path, parallel mode, variant) is timed in the same alternating rounds.
    let subs = sub_batches(&c.sub_batch)?;
    let precs = precisions(&c.precision)?;
    let mut models = Vec::new();
    for &sub in &subs {
        for path in &paths {
            let kxk = kxk_path(path)?;
            for &precision in &precs {
                for &v in &variants {
                    let model = ResNet::build(SeededWeights::new(ResNetSpec::resnet50(v), c.seed), kxk, precision)
                        .map_err(|e| e.to_string())?
                        .with_sub_batch(sub);
                    let label = if subs.len() > 1 { format!("{path}/sub{sub}") } else { path.to_string() };
                    models.push((label, v, model));
                }
            }
        }
    }
    let mut cases = Vec::new();
    for mode in &modes {
        for (path, v, model) in &models {
            let label = if *mode == "intra" { path.clone() } else { format!("{path}/batch") };
            let runner = match *mode {
                "batch" => Runner::Batch(BatchRunner::new(c.threads).map_err(|e| e.to_string())?),
                _ => Runner::Intra(Workspace::new()),
            };
            cases.push((label, *v, model, runner));
        }
    }
    let pool = thread_pool(c.threads)?;
    let x = random_input(c)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let bar = progress(((c.warmup + c.iters) * cases.len()) as u64, c.json);
    bar.set_message("bench");
    for round in 0..c.warmup + c.iters {
        for (i, (_, _, model, runner)) in cases.iter_mut().enumerate() {
            let start = Instant::now();
            match runner {
                Runner::Intra(ws) => pool.install(|| model.forward(x.view(), ws)).map(|_| ()),
                Runner::Batch(r) => r.forward(model, x.view()).map(|_| ()),
            }
            .map_err(|e| e.to_string())?;
            if round >= c.warmup {
                times[i].push(start.elapsed().as_secs_f64());
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut peaks = BTreeMap::new();
    for &p in &precs {
        peaks.insert(p.name(), pool_peak(c, &pool, p)?);
    }
    let macs_a = counts(Variant::A, c.size)?.macs() as f64;
    let mut rows = Vec::new();
    for (i, (path, v, model, _)) in cases.iter().enumerate() {
        let macs = counts(*v, c.size)?.macs() as f64 * c.batch as f64;
        let min = times[i].iter().cloned().fold(f64::INFINITY, f64::min);
        let med = median(&mut times[i]);
        rows.push((path.as_str(), *v, med, min, macs, model.precision()));
    }
    let time_of_a =
        |path: &str, p: Precision| rows.iter().find(|r| r.0 == path && r.1 == Variant::A && r.5 == p).map(|r| r.2);
    if c.json {
        // serde_json writes a number that is not finite (a zero --peak, a zero time) as null.
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(path, v, med, min, macs, precision)| {
                let gflops = 2.0 * macs / med / 1e9;
                let peak = peaks[precision.name()];
                serde_json::json!({
                    "variant": v.to_string(), "kxk": path, "precision": precision.name(), "batch": c.batch,
                    "threads": c.threads, "size": c.size, "median_ms": med * 1e3, "min_ms": min * 1e3,
                    "images_per_s": c.batch as f64 / med, "gflops": gflops, "peak_gflops": peak,
                    "peak_share": gflops / peak, "macs": *macs as u64,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(());
    }
    let peak_list: Vec<String> = peaks.iter().map(|(p, g)| format!("{p} {g:.0}")).collect();
    println!(
        "ResNet-50, batch {}, {}x{}, {} thread(s), {} alternating rounds (measured peak GFLOP/s: {})",
        c.batch,
        c.size,
        c.size,
        c.threads,
        c.iters,
        peak_list.join(", ")
    );
    println!(
        "{:<8} {:<12} {:<5} {:>10} {:>10} {:>9} {:>9} {:>7} {:>8} {:>8}",
        "variant", "path", "prec", "median ms", "min ms", "images/s", "GFLOP/s", "peak", "time/A", "MACs/A"
    );
    for (path, v, med, min, macs, precision) in &rows {
        let gflops = 2.0 * macs / med / 1e9;
        let peak = peaks[precision.name()];
        let ratio = time_of_a(path, *precision).map_or("-".to_string(), |a| format!("{:.3}", med / a));
        println!(
            "{:<8} {:<12} {:<5} {:>10.2} {:>10.2} {:>9.1} {:>9.1} {:>6.0}% {:>8} {:>8.3}",
            v.to_string(),
            path,
            precision.name(),
            med * 1e3,
            min * 1e3,
            c.batch as f64 / med,
            gflops,
            100.0 * gflops / peak,
            ratio,
            macs / c.batch as f64 / macs_a
        );
    }
    Ok(())
}

fn profile(args: &ProfileArgs) -> CliResult {
    let c = &args.common;
    let variant = Variant::parse(&args.variant).map_err(|e| e.to_string())?;
    if c.iters == 0 || c.batch == 0 {
        return Err("--iters and --batch must be at least 1".into());
    }
    let pool = thread_pool(c.threads)?;
    let x = random_input(c)?;
    let model = seeded_model(variant, c)?;
    let mut ws = Workspace::new();
    let mut runs: Vec<Vec<StepTiming>> = Vec::new();
    let bar = progress((c.warmup + c.iters) as u64, c.json);
    bar.set_message("profile");
    for round in 0..c.warmup + c.iters {
        let mut steps = Vec::new();
        pool.install(|| model.forward_profiled(x.view(), &mut ws, &mut steps)).map_err(|e| e.to_string())?;
        if round >= c.warmup {
            runs.push(steps);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Median time of each step over the runs.
    let mut steps = runs[0].clone();
    for (i, s) in steps.iter_mut().enumerate() {
        let mut t: Vec<f64> = runs.iter().map(|r| r[i].seconds).collect();
        s.seconds = median(&mut t);
        let mut t: Vec<f64> = runs.iter().map(|r| r[i].lowering_seconds).collect();
        s.lowering_seconds = median(&mut t);
    }
    let total: f64 = steps.iter().map(|s| s.seconds).sum();
    let peak = pool_peak(c, &pool, model.precision())?;
    let gflops = |macs: u64, secs: f64| if secs > 0.0 { 2.0 * macs as f64 / secs / 1e9 } else { 0.0 };
    let mut by_kind: BTreeMap<&str, (u64, f64, usize)> = BTreeMap::new();
    for s in &steps {
        let e = by_kind.entry(s.kind.label()).or_default();
        e.0 += s.macs;
        e.1 += s.seconds;
        e.2 += 1;
    }
    if c.json {
        let layers: Vec<serde_json::Value> = steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "kind": s.kind.label(), "path": s.path.map_or("", ConvPath::label),
                    "input": [s.input.n, s.input.c, s.input.h, s.input.w],
                    "output": [s.output.n, s.output.c, s.output.h, s.output.w],
                    "macs": s.macs, "ms": s.seconds * 1e3, "gflops": gflops(s.macs, s.seconds),
                    "share": s.seconds / total, "scratch_bytes": s.scratch_bytes, "im2col_ms": s.lowering_seconds * 1e3,
                })
            })
            .collect();
        let kinds: Vec<serde_json::Value> = by_kind
            .iter()
            .map(|(k, (m, t, n))| {
                serde_json::json!({
                    "kind": k, "layers": n, "macs": m, "ms": t * 1e3, "gflops": gflops(*m, *t), "share": t / total,
                })
            })
            .collect();
        let report = serde_json::json!({
            "variant": variant.to_string(), "precision": model.precision().name(), "batch": c.batch,
            "threads": c.threads, "total_ms": total * 1e3, "peak_gflops": peak, "layers": layers, "by_kind": kinds,
        });
        println!("{report}");
        return Ok(());
    }
    println!(
        "ResNet-50-{variant}, {}, batch {}, {}x{}, {} thread(s), median of {} runs per layer",
        model.precision(),
        c.batch,
        c.size,
        c.size,
        c.threads,
        c.iters
    );
    println!(
        "{:<26} {:<8} {:<7} {:>18} {:>18} {:>11} {:>8} {:>8} {:>6} {:>9} {:>9}",
        "layer", "kind", "path", "input (n,c,h,w)", "output", "MACs", "ms", "GFLOP/s", "share", "scratch", "im2col ms"
    );
    let shape = |s: Shape| format!("{},{},{},{}", s.n, s.c, s.h, s.w);
    for s in &steps {
        println!(
            "{:<26} {:<8} {:<7} {:>18} {:>18} {:>11} {:>8.3} {:>8.1} {:>5.1}% {:>9} {:>9}",
            s.name,
            s.kind.label(),
            s.path.map_or("", ConvPath::label),
            shape(s.input),
            shape(s.output),
            s.macs,
            s.seconds * 1e3,
            gflops(s.macs, s.seconds),
            100.0 * s.seconds / total,
            if s.scratch_bytes > 0 { format!("{}K", s.scratch_bytes / 1024) } else { String::new() },
            if s.path == Some(ConvPath::Im2col) { format!("{:.3}", s.lowering_seconds * 1e3) } else { String::new() }
        );
    }
    println!("\nby kind (peak {peak:.0} GFLOP/s):");
    println!("{:<8} {:>7} {:>14} {:>9} {:>9} {:>7} {:>7}", "kind", "layers", "MACs", "ms", "GFLOP/s", "peak", "share");
    for (k, (m, t, n)) in &by_kind {
        let g = gflops(*m, *t);
        println!(
            "{:<8} {:>7} {:>14} {:>9.3} {:>9.1} {:>6.0}% {:>6.1}%",
            k,
            n,
            m,
            t * 1e3,
            g,
            100.0 * g / peak,
            100.0 * t / total
        );
    }
    let macs: u64 = steps.iter().map(|s| s.macs).sum();
    println!("{:<8} {:>7} {:>14} {:>9.3} {:>9.1}", "total", steps.len(), macs, total * 1e3, gflops(macs, total));
    let lowering: f64 = steps.iter().map(|s| s.lowering_seconds).sum();
    if lowering > 0.0 {
        println!("im2col copies: {:.3} ms, {:.1}% of the total", lowering * 1e3, 100.0 * lowering / total);
    }
    Ok(())
}

fn run(
    variant: &str,
    weights: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    threads: usize,
    precision: &str,
) -> CliResult {
    Variant::parse(variant).map_err(|e| e.to_string())?;
    let precision = one_precision(precision)?;
    let (shape, values) = npy::read_f32(input)?;
    let [n, c, h, w] = shape[..] else {
        return Err(format!("{}: input has shape {shape:?}; expected rank 4 NCHW [n, 3, h, w]", input.display()));
    };
    if c != 3 {
        return Err(format!("{}: input has {c} channels (shape {shape:?}); expected 3 (NCHW RGB)", input.display()));
    }
    let view = TensorView::new(Shape::new(n, c, h, w), Layout::Nchw, &values)
        .map_err(|e| format!("{}: {e}", input.display()))?;
    let model = load_model(variant, weights, precision)?;
    let pool = thread_pool(threads)?;
    let mut ws = Workspace::new();
    let logits = pool.install(|| model.forward(view, &mut ws)).map_err(|e| format!("{}: {e}", input.display()))?;
    npy::write_f32(output, &[n, model.classes()], logits)
}

fn export(variant: &str, seed: u64, output: &std::path::Path) -> CliResult {
    let spec = ResNetSpec::resnet50(Variant::parse(variant).map_err(|e| e.to_string())?);
    Weights::seeded(spec, seed).save(output).map_err(|e| e.to_string())
}

fn load_model(variant: &str, weights: &std::path::Path, precision: Precision) -> Result<ResNet, String> {
    let spec = ResNetSpec::resnet50(Variant::parse(variant).map_err(|e| e.to_string())?);
    ResNet::build(Weights::load(spec, weights).map_err(|e| e.to_string())?, KxkPath::default(), precision)
        .map_err(|e| e.to_string())
}

fn classify(
    images: &[PathBuf],
    variant: &str,
    weights: &std::path::Path,
    threads: usize,
    precision: &str,
) -> CliResult {
    let precision = one_precision(precision)?;
    // Every image is read first; one that fails is reported and the others are classified.
    let mut batch = Vec::new();
    let (mut good, mut errors) = (Vec::new(), Vec::new());
    for path in images {
        match classify::preprocess(path) {
            Ok(x) => {
                batch.extend(x);
                good.push(path);
            }
            Err(e) => errors.push(e),
        }
    }
    if good.is_empty() && errors.len() == 1 {
        return Err(errors.remove(0));
    }
    for e in &errors {
        eprintln!("convkit: error: {e}");
    }
    if !good.is_empty() {
        let model = load_model(variant, weights, precision)?;
        let shape = Shape::new(good.len(), 3, classify::CROP, classify::CROP);
        let view = TensorView::new(shape, Layout::Nchw, &batch).map_err(|e| e.to_string())?;
        let pool = thread_pool(threads)?;
        let mut ws = Workspace::new();
        let logits = pool.install(|| model.forward(view, &mut ws)).map_err(|e| e.to_string())?;
        let names = classify::class_names();
        for (path, row) in good.iter().zip(logits.chunks(model.classes())) {
            println!("{}:", path.display());
            for (class, p) in classify::top_k(row, 5) {
                println!("  {:>6.2}%  {:>3}  {}", 100.0 * p, class, names.get(class).copied().unwrap_or("?"));
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        n => Err(format!("{n} of {} images could not be classified (see above)", images.len())),
    }
}
