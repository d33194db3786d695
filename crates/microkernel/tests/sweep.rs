//! The deterministic sweep over every tile of every kernel of the registry this CPU runs:
//! each row count 1..=MR, each panel count 1..=max_panels, each column count of that
//! width, reductions of length 1, odd, in segments, and long, and every epilogue
//! combination, against a scalar f64 loop. The kernels come from `Kernel::all()` and the
//! tile list from the kernel's `TileShape`, the same values the walk reads: a family
//! declared in the registry gets its sweep with no edit here.

use convkit_microkernel::{Family, Gemm, GemmElement, Kernel, Lhs, PackedWeights, RowMap};
use convkit_tensor::{bf16, Element, Precision};
use convkit_testkit::random_vec;

/// One GEMM case: a single tile of `rows` x `cols` over a reduction of `k` in `segments`.
#[derive(Debug, Clone, Copy)]
struct Case {
    rows: usize,
    cols: usize,
    k: usize,
    segments: usize,
    col_bias: bool,
    row_bias: bool,
    residual: bool,
    accumulate: bool,
    relu: bool,
}

/// `random_vec` rounded to `T`: the values a kernel of that element type reads exactly.
fn random_elements<T: Element>(len: usize, seed: u64) -> Vec<T> {
    random_vec(len, seed).into_iter().map(T::from_f32).collect()
}

/// Runs `case` on `kernel` with a left operand of `A` and an output of `O`, and checks every
/// output against the f64 loop over the same (rounded) operands, and that nothing
/// outside the tile's outputs was written. The tolerance is 1e-5 of the sum of |terms|,
/// plus the rounding of a bf16 output (2^-8 of its value). Returns the first error.
fn check<A: GemmElement, O: GemmElement>(kernel: Kernel, c: Case, seed: u64) -> Result<(), String> {
    let (m, n, k) = (c.rows, c.cols, c.k);
    let run_len = k / c.segments;
    // Row r's segment s starts at r * row_step + s * seg_step; the gaps hold NaN, so a
    // kernel that reads outside its runs fails.
    let seg_step = run_len + 3;
    let row_step = c.segments * seg_step + 5;
    let mut lhs = vec![A::from_f32(f32::NAN); m * row_step + 8];
    let a = random_elements::<A>(m * k, seed);
    for r in 0..m {
        for s in 0..c.segments {
            let dst = &mut lhs[r * row_step + s * seg_step..][..run_len];
            dst.copy_from_slice(&a[r * k + s * run_len..][..run_len]);
        }
    }
    let w: Vec<f32> = random_elements::<A>(k * n, seed ^ 1).into_iter().map(A::to_f32).collect();
    let col_bias = random_vec(n, seed ^ 2);
    let row_bias = random_vec(m, seed ^ 3);
    let packed = PackedWeights::new(kernel, k, n, c.segments, |kk, j| w[kk * n + j], Some(&col_bias))
        .map_err(|e| e.to_string())?;
    let panels = if c.col_bias { packed.panels() } else { packed.panels().without_bias() };
    // Output rows are longer than the tile and start at column 1: the sentinel cells
    // around the tile must survive.
    let (row_len, col0) = (n + 3, 1);
    let sentinel = O::from_f32(-7.25);
    let mut out = vec![sentinel; m * row_len];
    let prior = random_elements::<O>(m * n, seed ^ 4);
    for r in 0..m {
        out[r * row_len + col0..][..n].copy_from_slice(&prior[r * n..][..n]);
    }
    let residual_values = random_elements::<O>(m * row_len, seed ^ 5);
    let lhs_view = Lhs::strided(&lhs, 0, row_step).with_segments(c.segments, seg_step);
    let gemm = Gemm::new(lhs_view, panels, m, row_len)
        .with_col0(col0)
        .with_row_bias(c.row_bias.then_some(&row_bias[..]))
        .with_residual(c.residual.then_some(&residual_values[..]))
        .with_accumulate(c.accumulate)
        .with_relu(c.relu);
    gemm.run_serial(&mut out).map_err(|e| e.to_string())?;
    for r in 0..m {
        for j in 0..row_len {
            let got = out[r * row_len + j];
            let Some(col) = j.checked_sub(col0).filter(|&col| col < n) else {
                if got != sentinel {
                    return Err(format!("row {r} column {j} outside the tile was written: {got:?}"));
                }
                continue;
            };
            let got = got.to_f32();
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let term = a[r * k + kk].to_f32() as f64 * w[kk * n + col] as f64;
                want += term;
                mag += term.abs();
            }
            let mut add = |v: f32| {
                want += v as f64;
                mag += (v as f64).abs();
            };
            if c.col_bias {
                add(col_bias[col]);
            }
            if c.row_bias {
                add(row_bias[r]);
            }
            if c.residual {
                add(residual_values[r * row_len + col0 + col].to_f32());
            }
            if c.accumulate {
                add(prior[r * n + col].to_f32());
            }
            if c.relu {
                want = want.max(0.0);
            }
            let rounding = if O::PRECISION == Precision::Bf16 { want.abs() / 256.0 } else { 0.0 };
            let tol = 1e-5 * mag + 1e-6 + rounding;
            let err = (got as f64 - want).abs();
            if err.is_nan() || err > tol {
                return Err(format!("row {r} column {col}: got {got}, want {want} (tolerance {tol:.2e})"));
            }
        }
    }
    Ok(())
}

/// Reductions: (k, segments). 1, odd, a KxK conv's three runs (even and odd: bf16 pairs
/// a run's values, and pads an odd one), long.
const REDUCTIONS: [(usize, usize); 5] = [(1, 1), (7, 1), (12, 3), (15, 3), (259, 1)];

/// Every epilogue combination on the short reductions; none and all on the others.
fn epilogues(k: usize) -> Vec<[bool; 5]> {
    if k <= 15 {
        (0..32u32).map(|bits| std::array::from_fn(|i| bits >> i & 1 == 1)).collect()
    } else {
        vec![[false; 5], [true; 5]]
    }
}

/// Every tile of `kernel` with a left operand of `A` and an output of `O`; prints what it
/// swept (CI checks that every kernel `convkit info` lists printed its line).
fn sweep_types<A: GemmElement, O: GemmElement>(kernel: Kernel) {
    let tile = kernel.tile();
    let mut cases = 0;
    for rows in 1..=tile.mr {
        for panels in 1..=tile.max_panels {
            for cols in (panels - 1) * tile.nr + 1..=panels * tile.nr {
                for (k, segments) in REDUCTIONS {
                    for [col_bias, row_bias, residual, accumulate, relu] in epilogues(k) {
                        let case = Case { rows, cols, k, segments, col_bias, row_bias, residual, accumulate, relu };
                        let seed = (rows * 1000 + cols * 10 + k) as u64;
                        if let Err(e) = check::<A, O>(kernel, case, seed) {
                            panic!("{kernel} {}->{} {case:?}: {e}", A::PRECISION, O::PRECISION);
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    println!(
        "swept {kernel} {}->{}: {cases} cases, tiles up to {}x{}",
        A::PRECISION,
        O::PRECISION,
        tile.mr,
        tile.nr * tile.max_panels
    );
}

/// The sweeps of one kernel: every output type its element type's GEMMs write.
fn sweep(kernel: Kernel) {
    match kernel.precision() {
        Precision::F32 => sweep_types::<f32, f32>(kernel),
        Precision::Bf16 => {
            sweep_types::<bf16, bf16>(kernel);
            sweep_types::<bf16, f32>(kernel);
        }
    }
}

/// Sweeps every kernel of `precision` in the registry that this CPU runs; returns them.
fn sweep_registry(precision: Precision) -> Vec<Kernel> {
    let mut swept = Vec::new();
    for kernel in Kernel::all().filter(|k| k.precision() == precision) {
        if !kernel.is_available() {
            println!(
                "skipped {kernel}: this CPU lacks {}",
                kernel.requires().missing_from(convkit_microkernel::CpuFeatures::detected())
            );
            continue;
        }
        sweep(kernel);
        swept.push(kernel);
    }
    swept
}

#[test]
fn every_tile_of_every_f32_kernel() {
    let swept = sweep_registry(Precision::F32);
    assert!(swept.contains(&Kernel::new(Family::Portable, Precision::F32).unwrap()), "{swept:?}");
}

#[test]
fn every_tile_of_every_bf16_kernel() {
    let swept = sweep_registry(Precision::Bf16);
    assert!(swept.contains(&Kernel::new(Family::Portable, Precision::Bf16).unwrap()), "{swept:?}");
}

/// The registry lists every family's kernels, each family at least one, the names parse
/// back, and the kernels this CPU runs are exactly those within its capabilities: the list
/// the sweeps above and `convkit info` iterate.
#[test]
fn registry_lists_every_kernel() {
    let detected = convkit_microkernel::CpuFeatures::detected();
    for &family in Family::ALL {
        let kernels: Vec<Kernel> = Kernel::all().filter(|k| k.family() == family).collect();
        assert!(!kernels.is_empty(), "{family} declares no kernel");
        for kernel in kernels {
            assert_eq!(kernel.to_string().parse::<Kernel>().unwrap(), kernel);
            assert_eq!(kernel.is_available(), detected.contains(kernel.requires()), "{kernel}");
            println!(
                "registry: {kernel} requires {} tile {:?} k_group {}",
                kernel.requires(),
                kernel.tile(),
                kernel.k_group()
            );
        }
    }
    for precision in Precision::ALL {
        let picked = Kernel::pick(precision, detected).unwrap();
        let first = Kernel::all().find(|k| k.precision() == precision && k.is_available()).unwrap();
        assert_eq!(picked, first, "the picker takes the first available kernel of the registry");
        let portable = Kernel::pick(precision, convkit_microkernel::CpuFeatures::NONE).unwrap();
        assert_eq!(portable.family(), Family::Portable);
    }
}

/// Multi-tile GEMMs through the parallel walk: several row tiles and panels, M = 1 (the
/// panel split), on 1 and 2 threads, bitwise equal.
#[test]
fn parallel_walk_matches_serial() {
    for kernel in Kernel::all().filter(|k| k.is_available() && k.precision() == Precision::F32) {
        for (m, k, n) in [(1, 70, 1000), (1, 5, 17), (37, 33, 131), (200, 64, 64)] {
            let a = random_vec(m * k, 1);
            let w = random_vec(k * n, 2);
            let packed = PackedWeights::new(kernel, k, n, 1, |kk, j| w[kk * n + j], None).unwrap();
            let gemm = Gemm::new(Lhs::strided(&a, 0, k), packed.panels(), m, n);
            let mut serial = vec![0.0; m * n];
            gemm.run_serial(&mut serial).unwrap();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut par = vec![0.0; m * n];
                pool.install(|| gemm.run(&mut par)).unwrap();
                let same = serial.iter().zip(&par).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{kernel} m {m} k {k} n {n}: {threads} thread(s) differ from the serial walk");
            }
            for (i, &got) in serial.iter().enumerate() {
                let (r, j) = (i / n, i % n);
                let want: f64 = (0..k).map(|kk| a[r * k + kk] as f64 * w[kk * n + j] as f64).sum();
                let mag: f64 = (0..k).map(|kk| (a[r * k + kk] as f64 * w[kk * n + j] as f64).abs()).sum();
                assert!((got as f64 - want).abs() <= 1e-5 * mag + 1e-6, "{kernel} m {m} k {k} n {n} at {r},{j}");
            }
        }
    }
}

#[test]
fn bad_calls_are_errors() {
    let kernel = Kernel::new(Family::Portable, Precision::F32).unwrap();
    let packed = PackedWeights::new(kernel, 4, 3, 1, |_, _| 1.0, None).unwrap();
    let a = [1.0; 8];
    let mut out = [0.0; 5];
    let e = Gemm::new(Lhs::strided(&a, 0, 4), packed.panels(), 2, 3).run(&mut out).unwrap_err();
    assert!(e.to_string().contains("GEMM output length"), "{e}");
    let mut out = [0.0; 9];
    let e = Gemm::new(Lhs::strided(&a, 0, 4), packed.panels(), 3, 3).run(&mut out[..]).unwrap_err();
    assert!(e.to_string().contains("left operand"), "{e}");
    let rows = RowMap::Pixels { ho: 0, wo: 3, src_h: 1, src_w: 3, stride: 1, ci: 4 };
    let lhs = Lhs::new(&a[..], rows);
    let e = Gemm::new(lhs, packed.panels(), 2, 3).run(&mut out[..]).unwrap_err();
    assert!(e.to_string().contains("0x3 pixels"), "{e}");
    let e = PackedWeights::new(kernel, 0, 3, 1, |_, _| 1.0, None).unwrap_err();
    assert!(e.to_string().contains("K and N"), "{e}");
    let e = PackedWeights::new(kernel, 2, 3, 1, |_, _| 1.0, Some(&[0.0; 2])).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    // bf16 activations against f32 panels.
    let bf = [bf16::ONE; 8];
    let e = Gemm::<bf16, f32>::new(Lhs::strided(&bf, 0, 4), packed.panels(), 2, 3).run(&mut out[..]).unwrap_err();
    assert!(e.to_string().contains("precision"), "{e}");
    let e = "sse9".parse::<Family>().unwrap_err();
    assert!(
        e.to_string().contains("expected avx512bf16, avx512, avx2, portable") || !cfg!(target_arch = "x86_64"),
        "{e}"
    );
    let e = "avx512bf16.f32".parse::<Kernel>().unwrap_err();
    assert!(e.to_string().contains("has no f32 kernel") || !cfg!(target_arch = "x86_64"), "{e}");
    for kernel in Kernel::all().filter(|k| !k.is_available()) {
        let e = PackedWeights::new(kernel, 2, 3, 1, |_, _| 1.0, None).unwrap_err();
        assert!(e.to_string().contains("lacks"), "{e}");
    }
}
