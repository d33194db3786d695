//! The dev-only harness every convkit kernel crate tests with: deterministic random data,
//! conv problem strategies for proptest, the reference result with its magnitude bound
//! (the sum of |a*b| terms), and a runner for NHWC kernels.

#![warn(missing_docs)]

use convkit_reference as reference;
use convkit_tensor::{Element, Epilogue, FilterShape, Layout, Shape, Tensor, TensorView, TensorViewMut, Window};
use proptest::prelude::*;

/// Cases per property: 256 by default (CI), more with PROPTEST_CASES.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, max_shrink_iters: 256, ..ProptestConfig::default() }
}

/// Deterministic values in [-1, 1) from a seed (splitmix64).
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Deterministic u8 values over all of 0..=255 from a seed ([`random_vec`] scaled).
pub fn random_u8(len: usize, seed: u64) -> Vec<u8> {
    random_vec(len, seed).into_iter().map(|v| ((v + 1.0) * 128.0).min(255.0) as u8).collect()
}

/// Deterministic s8 weights over all of -127..=127 from a seed ([`random_vec`] scaled).
pub fn random_i8(len: usize, seed: u64) -> Vec<i8> {
    random_vec(len, seed).into_iter().map(|v| (v * 127.5).round().clamp(-127.0, 127.0) as i8).collect()
}

/// A tensor of `shape` in `layout` holding [`random_vec`] values.
pub fn random_tensor(shape: Shape, layout: Layout, seed: u64) -> Tensor {
    Tensor::from_slice(shape, layout, &random_vec(shape.numel().unwrap(), seed)).unwrap()
}

/// Either layout.
pub fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Nchw), Just(Layout::Nhwc)]
}

/// A convolution problem: input shape and layout, filter, window, and a data seed.
#[derive(Debug, Clone)]
pub struct ConvProblem {
    /// Input shape.
    pub input: Shape,
    /// Input (and output) layout.
    pub layout: Layout,
    /// The filter.
    pub filter: FilterShape,
    /// The window.
    pub window: Window,
    /// Whether the conv has a bias.
    pub bias: bool,
    /// Whether the epilogue adds a residual.
    pub residual: bool,
    /// Add the output's prior contents (`Epilogue::accumulate`).
    pub accumulate: bool,
    /// Whether the epilogue applies ReLU.
    pub relu: bool,
    /// Seed of the data.
    pub seed: u64,
}

/// Draws a conv problem: batch 1-3, channels 1-70 each, spatial 1-33 (h and w drawn
/// independently), kernel from `kernels`, stride from `strides`, padding 0..=max_pad,
/// layout from `layouts` (the layouts the kernel under test takes).
/// Spatial size is capped so the f64 reference stays under ~2M MACs per case.
pub fn conv_problem(
    kernels: &'static [usize],
    strides: &'static [usize],
    max_pad: usize,
    layouts: &'static [Layout],
) -> impl Strategy<Value = ConvProblem> {
    (
        1usize..=3,
        1usize..=70,
        // Output channels past 64 as well: several 64-column tiles, and an odd 32-column
        // panel after them.
        prop_oneof![4 => 1usize..=70, 1 => proptest::sample::select(&[96usize, 128, 131, 160][..])],
        proptest::sample::select(kernels),
        proptest::sample::select(strides),
        0..=max_pad,
        proptest::sample::select(layouts),
        any::<(bool, bool, bool, bool, u64)>(),
    )
        .prop_flat_map(move |(n, ci, co, k, s, p, layout, flags)| {
            let macs_per_px = n * ci * co * k * k;
            let max_px = (2_000_000 / macs_per_px).max(1);
            let lo = k.saturating_sub(2 * p).max(1);
            let side = ((max_px as f64).sqrt() as usize).clamp(lo, 33);
            (lo..=side.max(lo), lo..=side.max(lo)).prop_map(move |(h, w)| ConvProblem {
                input: Shape::new(n, ci, h, w),
                layout,
                filter: FilterShape::new(co, ci, k, k),
                window: Window::square(k, s, p),
                bias: flags.0,
                residual: flags.1,
                relu: flags.2,
                accumulate: flags.3,
                seed: flags.4,
            })
        })
}

/// Tolerance of an f32 kernel against the f64 reference: relative to the sum of |a*b|
/// terms of each output (the reference run on absolute values), plus a tiny absolute floor.
pub const REL_TOL: f32 = 1e-5;
/// Absolute floor of that tolerance.
pub const ABS_TOL: f32 = 1e-6;

/// The output buffer a conv test starts from: values the kernel must overwrite, or add
/// to when the problem accumulates.
pub fn prior_output(shape: Shape, layout: Layout) -> Tensor {
    random_tensor(shape, layout, 9)
}

/// The reference result of a conv problem (conv + bias, + residual, + prior output when
/// accumulating, relu) and the magnitude bound of each output.
pub fn reference_conv(
    p: &ConvProblem,
    x: &Tensor,
    w: &[f32],
    b: Option<&[f32]>,
    residual: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let out_shape = p.filter.output_shape(x.shape(), &p.window).unwrap();
    let prior = p.accumulate.then(|| prior_output(out_shape, x.layout()));
    reference_conv_onto(p, x, w, b, residual, prior.as_ref())
}

/// As [`reference_conv`], adding `prior` (the output's prior contents a kernel read) where
/// `p` accumulates.
fn reference_conv_onto(
    p: &ConvProblem,
    x: &Tensor,
    w: &[f32],
    b: Option<&[f32]>,
    residual: Option<&Tensor>,
    prior: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let mut want = reference::conv2d(x.view(), w, p.filter, b, p.window).unwrap();
    let abs_b = b.map(reference::abs_vec);
    let mut mag =
        reference::conv2d(reference::abs(x).view(), &reference::abs_vec(w), p.filter, abs_b.as_deref(), p.window)
            .unwrap();
    if let Some(r) = residual {
        want = reference::add(&want, r).unwrap();
        mag = reference::add(&mag, &reference::abs(r)).unwrap();
    }
    if let Some(prior) = prior {
        want = reference::add(&want, prior).unwrap();
        mag = reference::add(&mag, &reference::abs(prior)).unwrap();
    }
    if p.relu {
        want = reference::relu(&want);
    }
    (want, mag)
}

/// Runs an NHWC conv kernel over activations of type `T` on problem `p` (whose layout must
/// be NHWC): random input, weights, bias and residual, a prior output, each rounded to `T`
/// (the bias stays f32), in a pool of `threads`. `forward(weights, bias, input, output,
/// epilogue)` builds and runs the kernel. Returns the output (as f32), the reference
/// result on the same rounded values and the magnitude bound (the sum of |a*b| terms).
/// A kernel with f32 accumulation is then within [`REL_TOL`] of the bound, plus, for a
/// bf16 output, its rounding ([`BF16_OUTPUT_TOL`] of its value; see [`check_bf16`]).
pub fn run_nhwc_kernel<T: Element>(
    p: &ConvProblem,
    threads: usize,
    forward: impl Fn(&[f32], Option<&[f32]>, TensorView<'_, T>, &mut TensorViewMut<'_, T>, Epilogue<'_, T>) + Send + Sync,
) -> (Tensor, Tensor, Tensor) {
    assert_eq!(p.layout, Layout::Nhwc, "run_nhwc_kernel runs NHWC problems only");
    let x = round_tensor::<T>(&random_tensor(p.input, Layout::Nhwc, p.seed));
    let w: Vec<f32> =
        random_vec(p.filter.co * p.filter.reduction_len(), p.seed ^ 1).into_iter().map(round::<T>).collect();
    let b = p.bias.then(|| random_vec(p.filter.co, p.seed ^ 2));
    let out_shape = p.filter.output_shape(p.input, &p.window).unwrap();
    let residual = p.residual.then(|| round_tensor::<T>(&random_tensor(out_shape, Layout::Nhwc, p.seed ^ 3)));
    let prior = round_tensor::<T>(&prior_output(out_shape, Layout::Nhwc));
    let (x_t, residual_t) = (elements::<T>(&x), residual.as_ref().map(elements::<T>));
    let mut out_t = elements::<T>(&prior);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let input = TensorView::new(p.input, Layout::Nhwc, &x_t).unwrap();
        let residual = residual_t.as_deref().map(|r| TensorView::new(out_shape, Layout::Nhwc, r).unwrap());
        let epilogue = Epilogue { residual, accumulate: p.accumulate, relu: p.relu };
        let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, &mut out_t).unwrap();
        forward(&w, b.as_deref(), input, &mut out, epilogue)
    });
    let (want, mag) = reference_conv_onto(p, &x, &w, b.as_deref(), residual.as_ref(), p.accumulate.then_some(&prior));
    let got: Vec<f32> = out_t.iter().map(|v| v.to_f32()).collect();
    (Tensor::from_slice(out_shape, Layout::Nhwc, &got).unwrap(), want, mag)
}

/// Scratch of `len` NaNs: a kernel that reads scratch it did not write fails its test.
pub fn nan_scratch(len: usize) -> convkit_tensor::AlignedVec {
    convkit_tensor::AlignedVec::from_slice(&vec![f32::NAN; len])
}

/// The rounding of a bf16 output: half a unit in the last place, 2^-8 of its value at most.
pub const BF16_OUTPUT_TOL: f32 = 1.0 / 256.0;

/// `v` rounded to `T` and back (exact for f32).
fn round<T: Element>(v: f32) -> f32 {
    T::from_f32(v).to_f32()
}

/// `t` with every value rounded to `T` (what a kernel over `T` reads exactly).
pub fn round_tensor<T: Element>(t: &Tensor) -> Tensor {
    let data: Vec<f32> = t.data().iter().map(|&v| round::<T>(v)).collect();
    Tensor::from_slice(t.shape(), t.layout(), &data).unwrap()
}

/// The values of `t` as `T` (exact for a tensor from [`round_tensor`]).
pub fn elements<T: Element>(t: &Tensor) -> Vec<T> {
    t.data().iter().map(|&v| T::from_f32(v)).collect()
}

/// Checks a bf16 kernel's output against [`run_nhwc_kernel`]'s reference: the f32 bound
/// plus the output's rounding. Returns the first output outside it.
pub fn check_bf16(got: &Tensor, want: &Tensor, mag: &Tensor) -> Result<(), String> {
    for (i, ((&g, &w), &m)) in got.data().iter().zip(want.data()).zip(mag.data()).enumerate() {
        let tol = REL_TOL * m + ABS_TOL + BF16_OUTPUT_TOL * w.abs();
        // A NaN output compares as None, and fails.
        let within =
            matches!((g - w).abs().partial_cmp(&tol), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal));
        if !within {
            return Err(format!("output {i}: got {g}, want {w} (tolerance {tol:.3e})"));
        }
    }
    Ok(())
}

/// What an int8 conv kernel is built from in [`run_int8_kernel`]: OIHW s8 weights, their
/// per-channel scales, the f32 bias and the tensors' quantization.
#[derive(Debug, Clone)]
pub struct Int8Conv {
    /// OIHW s8 weights in -127..=127.
    pub weights: Vec<i8>,
    /// One scale per output channel.
    pub weight_scales: Vec<f32>,
    /// The bias, if the problem has one.
    pub bias: Option<Vec<f32>>,
    /// Input, output and (if the problem has one) residual quantization.
    pub quant: convkit_tensor::ConvQuant,
}

/// Runs an NHWC int8 conv kernel on problem `p` (its layout must be NHWC; int8 does not
/// accumulate, so `p.accumulate` is ignored) in a pool of `threads`: random u8 input with
/// a zero point from the seed, s8 weights scaled so that outputs spread over the u8 grid,
/// a u8 residual. `forward(conv, input, output, epilogue)` builds and runs the kernel.
/// Returns the kernel's u8 output and the reference's (exact integer sums, then the
/// epilogue in the kernels' order), both NHWC: they must be equal.
pub fn run_int8_kernel(
    p: &ConvProblem,
    threads: usize,
    forward: impl Fn(&Int8Conv, TensorView<'_, u8>, &mut TensorViewMut<'_, u8>, Epilogue<'_, u8>) + Send + Sync,
) -> (Vec<u8>, Vec<u8>) {
    use convkit_tensor::{ConvQuant, Quant};
    assert_eq!(p.layout, Layout::Nhwc, "run_int8_kernel runs NHWC problems only");
    let k = p.filter.reduction_len();
    let x = random_u8(p.input.numel().unwrap(), p.seed);
    let input_quant = Quant::new(0.02, (p.seed % 256) as i32).unwrap();
    // Sums have an rms near sqrt(K) * rms(x - zero point) * 73 (uniform u8 and s8): these
    // scales give outputs of about 1, which the output scale 0.02 spreads over the grid.
    let centred = 127.5 - input_quant.zero_point() as f32;
    let rms = (74.0f32 * 74.0 + centred * centred).sqrt() * 73.0;
    let unit = 1.0 / (rms * (k as f32).sqrt() * input_quant.scale());
    let conv = Int8Conv {
        weights: random_i8(p.filter.co * k, p.seed ^ 1),
        weight_scales: random_vec(p.filter.co, p.seed ^ 4).iter().map(|v| unit * (1.0 + 0.5 * v)).collect(),
        bias: p.bias.then(|| random_vec(p.filter.co, p.seed ^ 2).iter().map(|v| 0.5 * v).collect()),
        quant: ConvQuant {
            input: input_quant,
            output: Quant::new(0.02, 128).unwrap(),
            residual: p.residual.then(|| Quant::new(0.01, 100).unwrap()),
        },
    };
    let out_shape = p.filter.output_shape(p.input, &p.window).unwrap();
    let residual = p.residual.then(|| random_u8(out_shape.numel().unwrap(), p.seed ^ 3));
    let mut got = vec![0u8; out_shape.numel().unwrap()];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let input = TensorView::new(p.input, Layout::Nhwc, &x).unwrap();
        let residual = residual.as_deref().map(|r| TensorView::new(out_shape, Layout::Nhwc, r).unwrap());
        let epilogue = Epilogue { residual, accumulate: false, relu: p.relu };
        let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, &mut got).unwrap();
        forward(&conv, input, &mut out, epilogue)
    });
    let input = TensorView::new(p.input, Layout::Nhwc, &x).unwrap();
    let zero_point = conv.quant.input.zero_point();
    let (_, sums) = reference::conv2d_int8(input, zero_point, &conv.weights, p.filter, p.window).unwrap();
    let column_scales = conv.quant.column_scales(&conv.weight_scales).unwrap();
    let o = out_shape;
    let mut want = vec![0u8; got.len()];
    for n in 0..o.n {
        for c in 0..o.c {
            for y in 0..o.h {
                for x in 0..o.w {
                    let nhwc = ((n * o.h + y) * o.w + x) * o.c + c;
                    let sum = sums[((n * o.c + c) * o.h + y) * o.w + x];
                    let res = residual.as_ref().zip(conv.quant.residual);
                    let res = res.map(|(r, q)| reference::Residual::Quantized(r[nhwc], q));
                    let bias = conv.bias.as_ref().map(|b| b[c]);
                    let output = Some(conv.quant.output);
                    // On the u8 grid: an integer in 0..=255.
                    want[nhwc] = reference::requantize(sum, column_scales[c], bias, res, p.relu, output) as u8;
                }
            }
        }
    }
    // The scales put most outputs inside the grid: a problem whose outputs all saturate
    // would test the clamp only. (A channel's outputs share its weights' offset, so with
    // few channels all of them may saturate together: checked from 4 channels.)
    let inside = want.iter().filter(|&&q| q > 0 && q < 255).count();
    let checked = want.len() >= 16 && p.filter.co >= 4;
    assert!(!checked || 4 * inside >= want.len(), "only {inside} of {} outputs inside the u8 grid", want.len());
    (got, want)
}

/// The first place two int8 outputs differ, as an error message.
pub fn check_int8(got: &[u8], want: &[u8]) -> Result<(), String> {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(i) => Err(format!("output {i}: got {}, want {}", got[i], want[i])),
        None if got.len() != want.len() => Err(format!("{} outputs, want {}", got.len(), want.len())),
        None => Ok(()),
    }
}
