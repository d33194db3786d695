//! Pooling against the f64 reference.

use convkit_microkernel::CpuFeatures;
use convkit_pool::{global_avg_pool, global_avg_pool_into, pool2d, pool2d_into, Family, PoolKind};
use convkit_reference as reference;
use convkit_tensor::{bf16, Layout, Shape, Tensor, TensorView, TensorViewMut, Window};
use convkit_testkit::*;
use proptest::prelude::*;

/// The family of the process default (`CONVKIT_ISA` masks it in CI).
fn family() -> Family {
    Family::pick(CpuFeatures::selected().unwrap())
}

/// Every family this CPU runs within the process default.
fn families() -> impl Strategy<Value = Family> {
    proptest::sample::select(Family::available_in(CpuFeatures::selected().unwrap()).collect::<Vec<_>>())
}

#[derive(Debug, Clone)]
struct PoolProblem {
    input: Shape,
    layout: Layout,
    window: Window,
    kind: PoolKind,
    seed: u64,
}

fn pool_problem() -> impl Strategy<Value = PoolProblem> {
    (1usize..=3, 1usize..=70, 1usize..=4, 1usize..=3, any::<bool>(), layout(), 0usize..3, any::<u64>()).prop_flat_map(
        |(n, c, k, s, ceil, layout, kind, seed)| {
            let pad = 0..=k / 2;
            (1usize..=33, 1usize..=33, pad).prop_map(move |(h, w, p)| PoolProblem {
                input: Shape::new(n, c, h.max(k), w.max(k)),
                layout,
                window: Window::square(k, s, p).with_ceil_mode(ceil),
                kind: match kind {
                    0 => PoolKind::Max,
                    1 => PoolKind::Average { count_include_pad: true },
                    _ => PoolKind::Average { count_include_pad: false },
                },
                seed,
            })
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pool_matches_reference(p in pool_problem()) {
        let x = random_tensor(p.input, p.layout, p.seed);
        let got = pool2d(family(), x.view(), p.window, p.kind).unwrap();
        let (want, mag) = match p.kind {
            PoolKind::Max => (reference::max_pool2d(x.view(), p.window).unwrap(), Tensor::zeros(got.shape(), got.layout()).unwrap()),
            PoolKind::Average { count_include_pad } => (
                reference::avg_pool2d(x.view(), p.window, count_include_pad).unwrap(),
                reference::avg_pool2d(reference::abs(&x).view(), p.window, count_include_pad).unwrap(),
            ),
        };
        prop_assert_eq!(got.layout(), p.layout);
        reference::compare(&got, &want, &mag, REL_TOL, 0.0).map_err(TestCaseError::fail)?;
    }

    /// bf16 activations on every family this CPU runs (the `avx512bf16` one rounds with
    /// `vcvtneps2bf16`): summed in f32 and rounded once per output, against the reference
    /// on the same bf16-rounded input; the global mean stays f32.
    #[test]
    fn bf16_pools_match_reference(p in pool_problem(), family in families()) {
        let x = round_tensor::<bf16>(&random_tensor(p.input, p.layout, p.seed));
        let x16 = elements::<bf16>(&x);
        let input = TensorView::new(p.input, p.layout, &x16).unwrap();
        let out_shape = convkit_pool::output_shape(p.input, p.window).unwrap();
        let mut out16 = vec![bf16::ZERO; out_shape.numel().unwrap()];
        pool2d_into(family, input, p.window, p.kind, &mut TensorViewMut::new(out_shape, p.layout, &mut out16).unwrap()).unwrap();
        let got = Tensor::from_slice(out_shape, p.layout, &out16.iter().map(|v| v.to_f32()).collect::<Vec<_>>()).unwrap();
        let want = match p.kind {
            PoolKind::Max => reference::max_pool2d(x.view(), p.window).unwrap(),
            PoolKind::Average { count_include_pad } => reference::avg_pool2d(x.view(), p.window, count_include_pad).unwrap(),
        };
        for (i, (g, w)) in got.data().iter().zip(want.data()).enumerate() {
            // A maximum is exact; a mean is rounded once (and summed in f32).
            prop_assert!((g - w).abs() <= BF16_OUTPUT_TOL * w.abs() + ABS_TOL, "{}: output {}: got {} want {}", family, i, g, w);
        }
        let mut features = vec![0.0; p.input.n * p.input.c];
        global_avg_pool_into(family, input, &mut features).unwrap();
        let want = reference::global_avg_pool(x.view()).unwrap();
        let mag = reference::global_avg_pool(reference::abs(&x).view()).unwrap();
        for i in 0..features.len() {
            prop_assert!((features[i] - want[i]).abs() <= REL_TOL * mag[i] + ABS_TOL, "feature {}: got {} want {}", i, features[i], want[i]);
        }
    }

    /// u8 (quantized) activations on every family this CPU runs: a maximum is exact, a
    /// mean is the reference's mean rounded to the nearest integer (sum times 1/count in
    /// f32, then rounded to nearest even: a mean exactly halfway between two integers may
    /// go either way when 1/count is inexact); the global mean stays f32 (on the u8 grid:
    /// the caller dequantizes it).
    #[test]
    fn u8_pools_match_reference(p in pool_problem(), family in families()) {
        let values = random_u8(p.input.numel().unwrap(), p.seed);
        let x = Tensor::from_slice(p.input, p.layout, &values.iter().map(|&v| f32::from(v)).collect::<Vec<_>>()).unwrap();
        let input = TensorView::new(p.input, p.layout, &values).unwrap();
        let out_shape = convkit_pool::output_shape(p.input, p.window).unwrap();
        let mut out8 = vec![0u8; out_shape.numel().unwrap()];
        let result = pool2d_into(family, input, p.window, p.kind, &mut TensorViewMut::new(out_shape, p.layout, &mut out8).unwrap());
        if p.kind == (PoolKind::Average { count_include_pad: true }) && p.window.padding != (0, 0) {
            let e = result.unwrap_err();
            prop_assert!(e.to_string().contains("counts padding"), "{}", e);
            return Ok(());
        }
        result.unwrap();
        let want = match p.kind {
            PoolKind::Max => reference::max_pool2d(x.view(), p.window).unwrap(),
            PoolKind::Average { count_include_pad } => reference::avg_pool2d(x.view(), p.window, count_include_pad).unwrap(),
        };
        for (i, (&g, &w)) in out8.iter().zip(want.data()).enumerate() {
            let halfway = (w - w.floor() - 0.5).abs() < 1e-4;
            let ok = f32::from(g) == w.round_ties_even() || (halfway && (f32::from(g) - w).abs() <= 0.5 + 1e-4);
            prop_assert!(ok, "{}: output {}: got {} want {}", family, i, g, w);
        }
        let mut features = vec![0.0; p.input.n * p.input.c];
        global_avg_pool_into(family, input, &mut features).unwrap();
        let want = reference::global_avg_pool(x.view()).unwrap();
        for i in 0..features.len() {
            prop_assert!((features[i] - want[i]).abs() <= REL_TOL * want[i] + ABS_TOL, "feature {}: got {} want {}", i, features[i], want[i]);
        }
    }

    #[test]
    fn global_avg_pool_matches_reference(n in 1usize..=3, c in 1usize..=70, h in 1usize..=20, w in 1usize..=20, l in layout(), seed in any::<u64>()) {
        let x = random_tensor(Shape::new(n, c, h, w), l, seed);
        let got = global_avg_pool(family(), x.view()).unwrap();
        let want = reference::global_avg_pool(x.view()).unwrap();
        let mag = reference::global_avg_pool(reference::abs(&x).view()).unwrap();
        for i in 0..got.len() {
            prop_assert!((got[i] - want[i]).abs() <= REL_TOL * mag[i] + ABS_TOL, "index {}: got {} want {}", i, got[i], want[i]);
        }
    }
}

#[test]
fn resnet_d_shortcut_pool_on_odd_input() {
    // 2x2 stride 2, ceil mode, padding not counted: the last row/column averages 2 or 1 cells.
    let x = random_tensor(Shape::new(1, 17, 7, 5), Layout::Nhwc, 3);
    let w = Window::square(2, 2, 0).with_ceil_mode(true);
    let got = pool2d(family(), x.view(), w, PoolKind::Average { count_include_pad: false }).unwrap();
    assert_eq!(got.shape(), Shape::new(1, 17, 4, 3));
    let want = reference::avg_pool2d(x.view(), w, false).unwrap();
    let mag = reference::avg_pool2d(reference::abs(&x).view(), w, false).unwrap();
    reference::compare(&got, &want, &mag, REL_TOL, 0.0).unwrap();
}

/// A NaN in a max-pool window makes that output NaN, as in PyTorch, in both layouts and in
/// the vector lanes and the tail of the channels; windows without it are unaffected.
#[test]
fn max_pool_keeps_nan() {
    for layout in [Layout::Nhwc, Layout::Nchw] {
        let shape = Shape::new(1, 19, 6, 6);
        let mut x = random_tensor(shape, layout, 4);
        for c in [0, 7, 18] {
            let at = shape.strides(layout).offset(0, c, 1, 1);
            x.data_mut()[at] = f32::NAN;
        }
        let w = Window::square(3, 2, 1).with_ceil_mode(true);
        let got = pool2d(family(), x.view(), w, PoolKind::Max).unwrap();
        let want = reference::max_pool2d(x.view(), w).unwrap();
        for c in 0..19 {
            for (oy, ox) in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)] {
                let (g, r) = (got.get(0, c, oy, ox), want.get(0, c, oy, ox));
                let nan_window = [0, 7, 18].contains(&c) && oy <= 1 && ox <= 1;
                assert_eq!(g.is_nan(), nan_window, "{layout} c {c} ({oy}, {ox}): got {g}");
                assert!(r.is_nan() == g.is_nan() && (g.is_nan() || g == r), "{layout} c {c}: got {g}, reference {r}");
            }
        }
    }
}
