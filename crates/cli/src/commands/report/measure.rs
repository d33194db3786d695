//! What the report measures, each comparison in alternating rounds.

use super::*;
use crate::commands::CliResult;
use crate::commands::{
    alternating_rounds, counts, median, pool_peak, progress, random_input, thread_pool, timed_passes,
};
use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_im2col::Im2colConv;
use convkit_microkernel::{CacheSizes, CpuFeatures, Kernel};
use convkit_model::{ModelConfig, ResNet, ResNetSpec, StepTiming, Variant, Workspace};
use convkit_tensor::{AlignedVec, Conv, Epilogue, FilterShape, Layout, Shape, Tensor, Window};

/// Seconds of the memory-bandwidth probe.
const BANDWIDTH_SECONDS: f64 = 0.5;

/// What every measurement of the report shares: the options, the thread pool, the kernel
/// mask, the rounds and the progress bar.
struct Lab<'a> {
    args: &'a ReportArgs,
    pool: rayon::ThreadPool,
    mask: CpuFeatures,
    rounds: usize,
    bar: indicatif::ProgressBar,
}

impl Lab<'_> {
    /// ResNet-50 of `v` on the report's kernels, f32, batch 1 unless changed.
    fn config(&self, v: Variant) -> ModelConfig {
        self.args.kernels.config(ResNetSpec::resnet50(v))
    }

    /// The model of `config` on the report's seeded weights.
    fn build(&self, config: ModelConfig) -> CliResult<ResNet> {
        Ok(config.build_seeded(self.args.seed)?)
    }

    /// The kernel `precision` runs on.
    fn kernel(&self, precision: Precision) -> CliResult<Kernel> {
        Ok(Kernel::pick(precision, self.mask)?)
    }

    /// Multiply-adds of ResNet-50 of `v` at the report's size.
    fn counts(&self, v: Variant) -> CliResult<convkit_model::Counts> {
        counts(ResNetSpec::resnet50(v), self.args.size)
    }

    /// Section 1, the variant table: every (variant, precision, batch), one network at a time, in
    /// alternating rounds; and the peak of each precision.
    fn variant_table(
        &self,
        precisions: &[Precision],
        inputs: &[(usize, Tensor)],
    ) -> CliResult<(Vec<Timing>, BTreeMap<&'static str, f64>)> {
        let mut cases = Vec::new();
        for (batch, x) in inputs {
            for &precision in precisions {
                for v in Variant::ALL {
                    cases.push((v, precision, *batch, x));
                }
            }
        }
        let mut spaces: Vec<Workspace> = cases.iter().map(|_| Workspace::new()).collect();
        let times = alternating_rounds(cases.len(), self.rounds, self.args.iters, |i, passes| {
            let (v, precision, _, x) = cases[i];
            let model = self.build(self.config(v).with_precision(precision))?;
            let ws = &mut spaces[i];
            timed_passes(1, passes, &self.bar, || {
                self.pool.install(|| model.forward(x.view(), ws))?;
                Ok(())
            })
        })?;
        drop(spaces);
        let mut peaks = BTreeMap::new();
        for &p in precisions {
            peaks.insert(p.name(), pool_peak(None, &self.pool, self.kernel(p)?));
        }
        let macs_a = self.counts(Variant::A)?.macs() as f64;
        let mut timings = Vec::new();
        for (&(v, precision, batch, _), mut t) in cases.iter().zip(times) {
            let (med, macs) = (median(&mut t), self.counts(v)?.macs());
            let min = t.iter().cloned().fold(f64::INFINITY, f64::min);
            let gflops = 2.0 * (macs * batch as u64) as f64 / med / 1e9;
            timings.push(Timing {
                variant: v.to_string(),
                precision: precision.name(),
                batch,
                median_ms: med * 1e3,
                min_ms: min * 1e3,
                time_over_a: 0.0,
                macs_over_a: macs as f64 / macs_a,
                gflops,
                peak_share: gflops / peaks[precision.name()],
            });
        }
        for i in 0..timings.len() {
            let a = timings
                .iter()
                .position(|t| t.variant == "A" && t.precision == timings[i].precision && t.batch == timings[i].batch)
                .expect("A is timed in every configuration");
            timings[i].time_over_a = timings[i].median_ms / timings[a].median_ms;
        }
        Ok((timings, peaks))
    }

    /// Section 2, the median steps of each variant's profile (f32, batch 1), in alternating rounds.
    fn profile_steps(&self, x1: &Tensor) -> CliResult<Vec<Vec<StepTiming>>> {
        let mut runs: Vec<Vec<Vec<StepTiming>>> = vec![Vec::new(); Variant::ALL.len()];
        let mut spaces: Vec<Workspace> = runs.iter().map(|_| Workspace::new()).collect();
        alternating_rounds(runs.len(), self.rounds, self.args.iters, |i, passes| {
            let model = self.build(self.config(Variant::ALL[i]))?;
            profiled_passes(&model, x1, &self.pool, &mut spaces[i], &mut runs[i], passes, &self.bar)
        })?;
        Ok(runs.iter().map(|r| median_steps(r)).collect())
    }

    /// Section 3, the memory bandwidth of the pool's threads, and the roofline points of D's conv
    /// layers from its profile.
    fn roofline(&self, d_steps: &[StepTiming]) -> CliResult<(f64, Vec<RooflinePoint>)> {
        let probe_bytes = (2 * CacheSizes::get().l3).clamp(256 << 20, 1 << 30);
        let family = self.kernel(Precision::F32)?.family();
        let bandwidth_gbs =
            self.pool.install(|| convkit_microkernel::measure_read_gbs(family, probe_bytes, BANDWIDTH_SECONDS));
        let points = d_steps
            .iter()
            .filter(|s| s.path.is_some() && s.macs > 0 && s.seconds > 0.0)
            .map(|s| {
                let (inp, out) = (s.input.numel().unwrap_or(0) as u64, s.output.numel().unwrap_or(0) as u64);
                let reduction = s.macs / out.max(1);
                let weights = s.output.c as u64 * reduction + s.output.c as u64;
                let bytes = 4 * (inp + out + weights);
                let flops = 2 * s.macs;
                RooflinePoint {
                    name: s.name.clone(),
                    kind: s.kind.label().to_string(),
                    flops,
                    bytes,
                    intensity: flops as f64 / bytes as f64,
                    gflops: flops as f64 / s.seconds / 1e9,
                }
            })
            .collect();
        Ok((bandwidth_gbs, points))
    }

    /// Section 4a, D's FLOPs and time against A's, with the time difference by kind of layer.
    fn flops_and_time(&self, timings: &[Timing], profiles: &[KindProfile]) -> CliResult<(FlopsClaim, TimeClaim)> {
        let (ca, cd) = (self.counts(Variant::A)?, self.counts(Variant::D)?);
        let flops = FlopsClaim { a_macs: ca.macs(), d_macs: cd.macs(), d_over_a: cd.macs() as f64 / ca.macs() as f64 };
        let t = |v: &str| timings.iter().find(|t| t.variant == v && t.precision == "f32" && t.batch == 1);
        let (ta, td) = (t("A").map_or(f64::NAN, |t| t.median_ms), t("D").map_or(f64::NAN, |t| t.median_ms));
        let mut difference_ms = ByKind::default();
        for (k, (a, d)) in KINDS.iter().zip(profiles[0].ms.values().into_iter().zip(profiles[3].ms.values())) {
            difference_ms.add(k, d - a);
        }
        let run_macs = |p: &KindProfile| p.macs.values().iter().sum::<f64>();
        let run_macs_d_over_a = run_macs(&profiles[3]) / run_macs(&profiles[0]);
        Ok((flops, TimeClaim { a_ms: ta, d_ms: td, d_over_a: td / ta, run_macs_d_over_a, difference_ms }))
    }

    /// Section 4d, branches side by side against one after the other, on the downsampling blocks.
    fn branches(&self, x1: &Tensor) -> CliResult<Vec<BranchClaim>> {
        let variants = Variant::ALL;
        let mut runs: Vec<Vec<Vec<StepTiming>>> = vec![Vec::new(); 2 * variants.len()];
        let mut spaces: Vec<Workspace> = runs.iter().map(|_| Workspace::new()).collect();
        let whole = alternating_rounds(runs.len(), self.rounds, self.args.iters, |i, passes| {
            let model = self.build(self.config(variants[i / 2]).with_parallel_branches(i % 2 == 1))?;
            profiled_passes(&model, x1, &self.pool, &mut spaces[i], &mut runs[i], passes, &self.bar)
        })?;
        Ok(variants
            .iter()
            .enumerate()
            .map(|(vi, v)| {
                let (seq, par) = (median_steps(&runs[2 * vi]), median_steps(&runs[2 * vi + 1]));
                let blocks: Vec<String> = par
                    .iter()
                    .filter(|s| s.name.ends_with(".branches"))
                    .map(|s| s.name.replace(".branches", "."))
                    .collect();
                let sequential: f64 = seq
                    .iter()
                    .filter(|s| blocks.iter().any(|b| s.name.starts_with(b.as_str())) && !s.name.ends_with(".conv3"))
                    .map(|s| s.seconds)
                    .sum();
                let parallel: f64 = par.iter().filter(|s| s.name.ends_with(".branches")).map(|s| s.seconds).sum();
                let whole_ms = |i: usize| median(&mut whole[i].clone()) * 1e3;
                BranchClaim {
                    variant: v.to_string(),
                    sequential_ms: sequential * 1e3,
                    parallel_ms: parallel * 1e3,
                    parallel_over_sequential: parallel / sequential,
                    network_sequential_ms: whole_ms(2 * vi),
                    network_parallel_ms: whole_ms(2 * vi + 1),
                }
            })
            .collect())
    }

    /// Section 4e, A computing only what is read, against every position.
    fn positions(&self, x1: &Tensor) -> CliResult<PositionsClaim> {
        let configs = [self.config(Variant::A), self.config(Variant::A).every_position()];
        let mut spaces: Vec<Workspace> = configs.iter().map(|_| Workspace::new()).collect();
        let mut positions_macs = [0u64; 2];
        let mut times = alternating_rounds(2, self.rounds, self.args.iters, |i, passes| {
            let model = self.build(configs[i])?;
            let ws = &mut spaces[i];
            let mut steps = Vec::new();
            self.pool.install(|| model.forward_profiled(x1.view(), ws, &mut steps))?;
            positions_macs[i] = steps.iter().map(|s| s.macs).sum();
            timed_passes(0, passes, &self.bar, || {
                self.pool.install(|| model.forward(x1.view(), ws))?;
                Ok(())
            })
        })?;
        let (read_only, every) = (median(&mut times[0]) * 1e3, median(&mut times[1]) * 1e3);
        Ok(PositionsClaim {
            macs_read_only: positions_macs[0],
            macs_every: positions_macs[1],
            ms_read_only: read_only,
            ms_every: every,
            time_saved: 1.0 - read_only / every,
        })
    }

    /// The parameter and multiply-add counts of each variant, by kind of layer.
    fn variant_counts(&self) -> CliResult<Vec<VariantCounts>> {
        let macs_a = self.counts(Variant::A)?.macs() as f64;
        Variant::ALL
            .iter()
            .map(|&v| {
                let c = self.counts(v)?;
                let mut by_kind = ByKind::default();
                by_kind.add("stem", c.macs_stem as f64);
                by_kind.add("1x1", c.macs_1x1 as f64);
                by_kind.add("3x3", c.macs_3x3 as f64);
                by_kind.add("fc", c.macs_fc as f64);
                Ok(VariantCounts {
                    variant: v.to_string(),
                    params: c.params,
                    macs: c.macs(),
                    macs_by_kind: by_kind,
                    macs_over_a: c.macs() as f64 / macs_a,
                })
            })
            .collect()
    }
}

/// Profiles of each variant by kind of layer, from their median steps.
fn kind_profiles(profiles_steps: &[Vec<StepTiming>]) -> Vec<KindProfile> {
    Variant::ALL
        .iter()
        .zip(profiles_steps)
        .map(|(v, steps)| {
            let (mut macs, mut ms) = (ByKind::default(), ByKind::default());
            for s in steps {
                macs.add(s.kind.label(), s.macs as f64);
                ms.add(s.kind.label(), s.seconds * 1e3);
            }
            KindProfile { variant: v.to_string(), total_ms: steps.iter().map(|s| s.seconds * 1e3).sum(), macs, ms }
        })
        .collect()
}

/// Section 4b, elements the first 1x1 of each downsampling block reads, in A and in B (whose layer
/// shapes, unreduced, B's profile holds).
fn strided_reads(b_steps: &[StepTiming]) -> Vec<StridedRead> {
    b_steps
        .iter()
        .filter(|s| s.name.ends_with(".0.conv1"))
        .map(|s| {
            let (c, h, w) = (s.input.c as u64, s.input.h as u64, s.input.w as u64);
            let stride = if s.name.starts_with("layer1.") { 1 } else { 2 };
            let a_reads = c * h.div_ceil(stride) * w.div_ceil(stride);
            let b_reads = c * h * w;
            StridedRead {
                block: s.name.trim_end_matches(".conv1").to_string(),
                input: [s.input.c, s.input.h, s.input.w],
                a_reads,
                b_reads,
                a_over_b: a_reads as f64 / b_reads as f64,
            }
        })
        .collect()
}

/// The parts of the report that need a clock, and the counts beside them: each section
/// measured in alternating rounds of its own.
pub fn measure(args: &ReportArgs) -> CliResult<Report> {
    let mask = args.kernels.mask()?;
    let rounds = args.rounds.min(args.iters);
    let precisions: Vec<Precision> = match &args.precision {
        Some(list) => list.clone(),
        None if Kernel::pick(Precision::Bf16, mask)?.native_bf16() => vec![Precision::F32, Precision::Bf16],
        None => vec![Precision::F32],
    };
    let mut batches = vec![1];
    if args.batch > 1 {
        batches.push(args.batch);
    }
    // Every forward pass the report runs, for the progress bar.
    let timing_cases = Variant::ALL.len() * precisions.len() * batches.len();
    let passes = (timing_cases + 4 + 8 + 2) * (args.iters + rounds);
    let lab =
        Lab { args, pool: thread_pool(args.threads)?, mask, rounds, bar: progress(passes as u64, "report", false) };

    let inputs: Vec<(usize, Tensor)> =
        batches.iter().map(|&b| Ok((b, random_input(b, args.size, args.seed)?))).collect::<CliResult<_>>()?;
    let (timings, peaks) = lab.variant_table(&precisions, &inputs)?;
    let x1 = &inputs[0].1;
    let profiles_steps = lab.profile_steps(x1)?;
    let profiles = kind_profiles(&profiles_steps);
    let (bandwidth_gbs, roofline) = lab.roofline(&profiles_steps[3])?;
    let ridge = peaks.get("f32").copied().unwrap_or(f64::NAN) / bandwidth_gbs;
    let (flops, time) = lab.flops_and_time(&timings, &profiles)?;
    let strided_reads = strided_reads(&profiles_steps[1]);
    // 4c. Every distinct 1x1 and 3x3 layer of B on the direct path and on im2col + gemm.
    let (im2col, per_mac) = im2col_against_direct(&profiles_steps[1], args, rounds, &lab.pool, &lab.bar)?;
    let branches = lab.branches(x1)?;
    let positions = lab.positions(x1)?;
    lab.bar.finish_and_clear();
    Ok(Report {
        machine: Machine::new(&args.kernels),
        date: today(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        size: args.size,
        batch: args.batch,
        threads: args.threads,
        iters: args.iters,
        rounds,
        ridge_flop_per_byte: ridge,
        layers_below_ridge: roofline.iter().filter(|p: &&RooflinePoint| p.intensity < ridge).count(),
        peaks,
        bandwidth_gbs,
        variants: lab.variant_counts()?,
        timings,
        profiles,
        roofline,
        flops,
        time,
        strided_reads,
        im2col,
        per_mac,
        branches,
        positions,
    })
}

/// One untimed then `passes` profiled forward passes of `model` on `x`: their steps go to
/// `runs`, their seconds are returned.
fn profiled_passes(
    model: &ResNet,
    x: &Tensor,
    pool: &rayon::ThreadPool,
    ws: &mut Workspace,
    runs: &mut Vec<Vec<StepTiming>>,
    passes: usize,
    bar: &indicatif::ProgressBar,
) -> CliResult<Vec<f64>> {
    let mut first = true;
    timed_passes(1, passes, bar, || {
        let mut steps = Vec::new();
        pool.install(|| model.forward_profiled(x.view(), ws, &mut steps))?;
        if !std::mem::take(&mut first) {
            runs.push(steps);
        }
        Ok(())
    })
}

/// Each step's median time over `runs` (every run has the same steps).
fn median_steps(runs: &[Vec<StepTiming>]) -> Vec<StepTiming> {
    let Some(first) = runs.first() else { return Vec::new() };
    let mut steps = first.clone();
    for (i, s) in steps.iter_mut().enumerate() {
        s.seconds = median(&mut runs.iter().map(|r| r[i].seconds).collect::<Vec<_>>());
        s.lowering_seconds = median(&mut runs.iter().map(|r| r[i].lowering_seconds).collect::<Vec<_>>());
    }
    steps
}

/// A conv layer of ResNet as its profile step shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LayerShape {
    input: Shape,
    co: usize,
    kernel: usize,
    stride: usize,
}

/// Every distinct 1x1 and 3x3 layer among `steps` timed on the direct path (no im2col)
/// and on im2col + gemm, in alternating rounds; and the time per MAC of each kind on each.
fn im2col_against_direct(
    steps: &[StepTiming],
    args: &ReportArgs,
    rounds: usize,
    pool: &rayon::ThreadPool,
    bar: &indicatif::ProgressBar,
) -> CliResult<(Vec<Im2colLayer>, Vec<PerMac>)> {
    let mut layers: Vec<(String, String, LayerShape, u64)> = Vec::new();
    for s in steps.iter().filter(|s| matches!(s.kind.label(), "1x1" | "3x3")) {
        let out = s.output.numel()? as u64;
        let reduction = (s.macs / out.max(1)) as usize;
        let kernel = if s.kind.label() == "1x1" { 1 } else { 3 };
        let shape = LayerShape { input: s.input, co: s.output.c, kernel, stride: s.input.h / s.output.h.max(1) };
        debug_assert_eq!(reduction, s.input.c * kernel * kernel);
        if !layers.iter().any(|l| l.2 == shape) {
            layers.push((s.name.clone(), s.kind.label().to_string(), shape, s.macs));
        }
    }
    let err = |e: convkit_tensor::Error| e.to_string();
    let kernel = Kernel::pick(Precision::F32, args.kernels.mask()?)?;
    let mut convs: Vec<(Box<dyn Conv>, Tensor, Tensor)> = Vec::new();
    for (_, _, l, _) in &layers {
        let filter = FilterShape::new(l.co, l.input.c, l.kernel, l.kernel);
        let weights: Vec<f32> =
            (0..filter.co * filter.reduction_len()).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
        let window = Window::square(l.kernel, l.stride, l.kernel / 2);
        let x = Tensor::from_fn(l.input, Layout::Nhwc, |_, c, h, w| ((c + 3 * h + 7 * w) % 11) as f32 * 0.1 - 0.5)
            .map_err(err)?;
        let direct: Box<dyn Conv> = if l.kernel == 1 {
            Box::new(Conv1x1::new(kernel, &weights, filter, None, l.stride, Layout::Nhwc).map_err(err)?)
        } else {
            Box::new(DirectConv::new(kernel, &weights, filter, None, window).map_err(err)?)
        };
        let lowered = Im2colConv::new(&weights, filter, None, window, Layout::Nhwc).map_err(err)?;
        let y = Tensor::zeros(direct.output_shape(l.input).map_err(err)?, Layout::Nhwc).map_err(err)?;
        convs.push((direct, x.clone(), y.clone()));
        convs.push((Box::new(lowered), x, y));
    }
    let mut copy = vec![Vec::new(); convs.len()];
    let mut scratch = AlignedVec::default();
    let mut times = alternating_rounds(convs.len(), rounds, args.iters, |i, passes| {
        let (conv, x, y) = &mut convs[i];
        let copies = &mut copy[i];
        timed_passes(1, passes, bar, || {
            let lowering = pool
                .install(|| conv.forward_timed(x.view(), &mut y.view_mut(), Epilogue::NONE, &mut scratch))
                .map_err(err)?;
            copies.push(lowering.as_secs_f64());
            Ok(())
        })
    })?;
    let mut out = Vec::new();
    for (i, (name, kind, l, macs)) in layers.iter().enumerate() {
        let out_shape = convs[2 * i].2.shape();
        let rows = (out_shape.h * out_shape.w) as u64;
        out.push(Im2colLayer {
            name: name.clone(),
            kind: kind.clone(),
            macs: *macs,
            direct_ms: median(&mut times[2 * i]) * 1e3,
            im2col_ms: median(&mut times[2 * i + 1]) * 1e3,
            copy_ms: median(&mut copy[2 * i + 1]) * 1e3,
            copy_bytes: 4 * rows * (l.kernel * l.kernel * l.input.c) as u64,
        });
    }
    let per_mac = ["1x1", "3x3"]
        .into_iter()
        .map(|kind| {
            let of = out.iter().filter(|l| l.kind == kind);
            let macs: u64 = of.clone().map(|l| l.macs).sum();
            let ps = |ms: f64| ms * 1e9 / macs as f64;
            PerMac {
                kind: kind.to_string(),
                direct_ps: ps(of.clone().map(|l| l.direct_ms).sum()),
                im2col_ps: ps(of.map(|l| l.im2col_ms).sum()),
            }
        })
        .collect();
    Ok((out, per_mac))
}
