//! `convkit`: ResNet-50 A/B/C/D counts, benchmarks, profiles, inference and weight export.

mod commands;

use clap::{Parser, Subcommand};
use commands::{bench, calibrate, classify, export, info, preprocess, profile, report, run};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "convkit", version, about = "ResNet-50 A/B/C/D (Bag of Tricks) on convkit's CPU kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The CPU, the kernel family, and the parameters and multiply-adds of A, B, C, D.
    Info(info::InfoArgs),
    /// Times the forward pass of each variant in alternating rounds (seeded weights).
    Bench(bench::BenchArgs),
    /// Times every layer of one variant, and sums by kind of layer (seeded weights).
    Profile(profile::ProfileArgs),
    /// Logits of an NCHW float32 .npy input, written as .npy.
    Run(run::RunArgs),
    /// Top ImageNet classes of JPEG/PNG images, directories or glob patterns.
    Classify(classify::ClassifyArgs),
    /// Writes the float32 tensor classify feeds the network, N x 3 x 224 x 224, as .npy.
    Preprocess(preprocess::PreprocessArgs),
    /// Writes seeded weights under timm/torchvision key names as safetensors.
    Export(export::ExportArgs),
    /// Quantizes float weights to int8 (post-training, ranges measured on calibration
    /// images) and writes the file `--precision int8` loads.
    Calibrate(calibrate::CalibrateArgs),
    /// Measures the paper's claims here and writes a page of tables and figures
    /// (index.html, SVG figures, report.json).
    Report(report::ReportArgs),
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
    let result = match Cli::parse().command {
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Classify(args) => classify::run(&args),
        Command::Preprocess(args) => preprocess::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Calibrate(args) => calibrate::run(&args),
        Command::Report(args) => report::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convkit: error: {e}");
            ExitCode::FAILURE
        }
    }
}
