//! The deterministic sweep over every tile of every kernel of the registry this CPU runs:
//! each row count 1..=MR, each panel count 1..=max_panels, each column count of that
//! width, reductions of length 1, odd, in segments, and long, and every epilogue
//! combination, against a scalar f64 loop (int8: exactly, against the reference crate's
//! integer sum and epilogue). The kernels come from `Kernel::all()` and the
//! tile list from the kernel's `TileShape`, the same values the walk reads: a family
//! declared in the registry gets its sweep with no edit here.

use convkit_microkernel::{Family, Gemm, GemmElement, Kernel, Lhs, PackedWeights, RowMap};
use convkit_reference::{requantize, Residual};
use convkit_tensor::{bf16, Element, Precision, Quant};
use convkit_testkit::{random_i8, random_u8, random_vec};

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

/// Runs `case` on the int8 `kernel` (u8 left operand, s8 panels) with an output of `O`
/// (u8, quantized, or f32) and checks every output against the reference's exact integer
/// sum and epilogue, bit for bit, and that nothing outside the tile was written. The row
/// bias and accumulation do not exist in int8 (errors, tested apart).
fn check_int8<O: GemmElement>(kernel: Kernel, c: Case, seed: u64) -> Result<(), String> {
    let (m, n, k) = (c.rows, c.cols, c.k);
    let run_len = k / c.segments;
    // The gaps between runs hold 255: a kernel that reads them gets another sum.
    let seg_step = run_len + 3;
    let row_step = c.segments * seg_step + 5;
    let mut lhs = vec![255u8; m * row_step + 8];
    let a = random_u8(m * k, seed);
    for r in 0..m {
        for s in 0..c.segments {
            lhs[r * row_step + s * seg_step..][..run_len].copy_from_slice(&a[r * k + s * run_len..][..run_len]);
        }
    }
    let w = random_i8(k * n, seed ^ 1);
    let col_bias = random_vec(n, seed ^ 2);
    // Scaled so that outputs spread over a few units: most u8 outputs land inside the
    // grid, not on its saturated ends.
    let unit = 1.0 / (50_000.0 * (k as f32).sqrt());
    let scales: Vec<f32> = random_vec(n, seed ^ 3).iter().map(|v| unit * (1.5 + v)).collect();
    let zero_point = (seed % 256) as i32;
    let packed =
        PackedWeights::new_int8(kernel, k, n, c.segments, |kk, j| w[kk * n + j], &scales, zero_point, Some(&col_bias))
            .map_err(|e| e.to_string())?;
    let panels = if c.col_bias { packed.panels() } else { packed.panels().without_bias() };
    let (row_len, col0) = (n + 3, 1);
    let sentinel = O::from_f32(77.0);
    let mut out = vec![sentinel; m * row_len];
    let residual_values: Vec<O> = match O::PRECISION {
        Precision::Int8 => random_u8(m * row_len, seed ^ 5).into_iter().map(|v| O::from_f32(f32::from(v))).collect(),
        _ => random_elements::<O>(m * row_len, seed ^ 5),
    };
    let out_quant = Quant::new(0.02, 128).unwrap();
    let residual_quant = Quant::new(0.015, 131).unwrap();
    let lhs_view = Lhs::strided(&lhs, 0, row_step).with_segments(c.segments, seg_step);
    let mut gemm = Gemm::<u8, O>::new(lhs_view, panels, m, row_len)
        .with_col0(col0)
        .with_residual(c.residual.then_some(&residual_values[..]))
        .with_relu(c.relu);
    if O::PRECISION == Precision::Int8 {
        gemm = gemm.with_output_quant(out_quant);
        if c.residual {
            gemm = gemm.with_residual_quant(residual_quant);
        }
    }
    gemm.run_serial(&mut out).map_err(|e| e.to_string())?;
    let mut inside_grid = 0;
    for r in 0..m {
        for j in 0..row_len {
            let got = out[r * row_len + j];
            let Some(col) = j.checked_sub(col0).filter(|&col| col < n) else {
                if got != sentinel {
                    return Err(format!("row {r} column {j} outside the tile was written: {got:?}"));
                }
                continue;
            };
            inside_grid += usize::from(got.to_f32() > 0.0 && got.to_f32() < 255.0);
            let sum: i32 = (0..k).map(|kk| (i32::from(a[r * k + kk]) - zero_point) * i32::from(w[kk * n + col])).sum();
            let res = residual_values[r * row_len + col0 + col];
            let residual = c.residual.then(|| match O::PRECISION {
                Precision::Int8 => Residual::Quantized(res.to_f32() as u8, residual_quant),
                _ => Residual::Real(res.to_f32()),
            });
            let output = (O::PRECISION == Precision::Int8).then_some(out_quant);
            let want = requantize(sum, scales[col], c.col_bias.then_some(col_bias[col]), residual, c.relu, output);
            if got.to_f32().to_bits() != want.to_bits() {
                return Err(format!("row {r} column {col}: got {got:?}, want {want} (sum {sum})"));
            }
        }
    }
    if O::PRECISION == Precision::Int8 && m * n >= 8 && inside_grid * 2 < m * n {
        return Err(format!(
            "only {inside_grid} of {} u8 outputs inside the grid: the case tests saturation only",
            m * n
        ));
    }
    Ok(())
}

/// Reductions: (k, segments). 1, odd, a KxK conv's three runs (even and odd: bf16 pairs
/// a run's values and int8 takes fours, padding the rest), long.
const REDUCTIONS: [(usize, usize); 6] = [(1, 1), (7, 1), (12, 3), (15, 3), (27, 3), (259, 1)];

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
                        let result = if A::PRECISION == Precision::Int8 {
                            if row_bias || accumulate {
                                continue;
                            }
                            check_int8::<O>(kernel, case, seed)
                        } else {
                            check::<A, O>(kernel, case, seed)
                        };
                        if let Err(e) = result {
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
        Precision::Int8 => {
            sweep_types::<u8, u8>(kernel);
            sweep_types::<u8, f32>(kernel);
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

#[test]
fn every_tile_of_every_int8_kernel() {
    let swept = sweep_registry(Precision::Int8);
    assert!(swept.contains(&Kernel::new(Family::Portable, Precision::Int8).unwrap()), "{swept:?}");
}

/// Sums past 2^24 (near the largest the s32 holds for ResNet's K), where the conversion
/// to f32 rounds: every int8 kernel this CPU runs rounds them as the reference does
/// (to nearest even), f32 outputs compared bit for bit.
#[test]
fn int8_sums_past_f32_precision_round_like_the_reference() {
    let (m, k, n) = (7, 4608, 37);
    // Values near the ends of the grids, varied so that the sums are not round numbers.
    let a: Vec<u8> = (0..m * k).map(|i| 255 - (i * 7 % 13) as u8).collect();
    let w: Vec<i8> =
        (0..k * n).map(|i| if i % n < n / 2 { 127 - (i % 5) as i8 } else { -127 + (i % 3) as i8 }).collect();
    let scales: Vec<f32> = (0..n).map(|j| 1e-6 * (1.0 + j as f32 / 7.0)).collect();
    let mut swept = 0;
    for kernel in Kernel::all().filter(|k| k.is_available() && k.precision() == Precision::Int8) {
        let packed = PackedWeights::new_int8(kernel, k, n, 1, |kk, j| w[kk * n + j], &scales, 3, None).unwrap();
        let mut out = vec![0.0f32; m * n];
        Gemm::<u8, f32>::new(Lhs::strided(&a, 0, k), packed.panels(), m, n).run(&mut out).unwrap();
        let mut rounded = 0;
        for r in 0..m {
            for j in 0..n {
                let sum: i64 = (0..k).map(|kk| (i64::from(a[r * k + kk]) - 3) * i64::from(w[kk * n + j])).sum();
                let sum = i32::try_from(sum).unwrap();
                rounded += usize::from(sum as f32 as i64 != i64::from(sum));
                let want = requantize(sum, scales[j], None, None, false, None);
                assert_eq!(out[r * n + j].to_bits(), want.to_bits(), "{kernel} row {r} column {j} (sum {sum})");
            }
        }
        assert!(rounded > m * n / 2, "{kernel}: only {rounded} sums needed rounding");
        swept += 1;
    }
    assert!(swept >= 1);
}

/// The int8 GEMM's refusals: no row bias, no accumulation, a u8 output or residual without
/// its quantization, a quantization for an f32 output, a u8 output of a float GEMM, a bf16
/// output, f32 packing of int8 weights, bad
/// weights, scales and zero points.
#[test]
fn bad_int8_calls_are_errors() {
    let kernel = Kernel::new(Family::Portable, Precision::Int8).unwrap();
    let packed = PackedWeights::new_int8(kernel, 4, 3, 1, |_, _| 1, &[0.5; 3], 3, None).unwrap();
    let a = [1u8; 8];
    let lhs = Lhs::strided(&a, 0, 4);
    let q = Quant::new(0.1, 0).unwrap();
    let (mut out8, mut out32) = ([0u8; 6], [0.0f32; 6]);
    let e = Gemm::<u8, u8>::new(lhs, packed.panels(), 2, 3).run(&mut out8).unwrap_err();
    assert!(e.to_string().contains("needs its quantization"), "{e}");
    let e = Gemm::<u8, f32>::new(lhs, packed.panels(), 2, 3).with_output_quant(q).run(&mut out32).unwrap_err();
    assert!(e.to_string().contains("for a f32 output"), "{e}");
    let e =
        Gemm::<u8, f32>::new(lhs, packed.panels(), 2, 3).with_row_bias(Some(&[0.0; 2])).run(&mut out32).unwrap_err();
    assert!(e.to_string().contains("row bias"), "{e}");
    let e = Gemm::<u8, f32>::new(lhs, packed.panels(), 2, 3).with_accumulate(true).run(&mut out32).unwrap_err();
    assert!(e.to_string().contains("accumulate"), "{e}");
    let res = [0u8; 6];
    let e = Gemm::<u8, u8>::new(lhs, packed.panels(), 2, 3)
        .with_output_quant(q)
        .with_residual(Some(&res))
        .run(&mut out8)
        .unwrap_err();
    assert!(e.to_string().contains("residual needs its quantization"), "{e}");
    let f32_kernel = Kernel::new(Family::Portable, Precision::F32).unwrap();
    let f32_packed = PackedWeights::new(f32_kernel, 4, 3, 1, |_, _| 1.0, None).unwrap();
    let e = Gemm::<f32, u8>::new(Lhs::strided(&[1.0; 8], 0, 4), f32_packed.panels(), 2, 3)
        .with_output_quant(q)
        .run(&mut out8)
        .unwrap_err();
    assert!(e.to_string().contains("needs a u8 left operand"), "{e}");
    let mut out16 = [bf16::default(); 6];
    let e = Gemm::<u8, bf16>::new(lhs, packed.panels(), 2, 3).run(&mut out16).unwrap_err();
    assert!(e.to_string().contains("not bf16"), "{e}");
    Gemm::<u8, u8>::new(lhs, packed.panels(), 2, 3).with_output_quant(q).run(&mut out8).unwrap();
    // Each output: 4 * (1 - 3) * 1 * 0.5 = -4, ReLU-free, quantized at scale 0.1 with zero point 0: 0.
    assert_eq!(out8, [0; 6]);
    Gemm::<u8, f32>::new(lhs, packed.panels(), 2, 3).run(&mut out32).unwrap();
    assert_eq!(out32, [-4.0; 6]);
    let e = PackedWeights::new(kernel, 4, 3, 1, |_, _| 1.0, None).unwrap_err();
    assert!(e.to_string().contains("new_int8"), "{e}");
    let e = PackedWeights::new_int8(kernel, 4, 3, 1, |_, _| -128, &[0.5; 3], 0, None).unwrap_err();
    assert!(e.to_string().contains("-128"), "{e}");
    let e = PackedWeights::new_int8(kernel, 4, 3, 1, |_, _| 1, &[0.5, 0.0, 0.5], 0, None).unwrap_err();
    assert!(e.to_string().contains("column 1 has scale 0"), "{e}");
    let e = PackedWeights::new_int8(kernel, 4, 3, 1, |_, _| 1, &[0.5; 3], 256, None).unwrap_err();
    assert!(e.to_string().contains("zero point 256"), "{e}");
    let e = PackedWeights::new_int8(kernel, 4, 3, 1, |_, _| 1, &[0.5; 2], 0, None).unwrap_err();
    assert!(e.to_string().contains("column scales"), "{e}");
    let e = PackedWeights::new_int8(kernel, 70_000, 1, 1, |_, _| 1, &[0.5], 0, None).unwrap_err();
    assert!(e.to_string().contains("K = 70000"), "{e}");
    let e = PackedWeights::new_int8(f32_kernel, 4, 3, 1, |_, _| 1, &[0.5; 3], 0, None).unwrap_err();
    assert!(e.to_string().contains("int8"), "{e}");
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

/// int8 GEMMs through the parallel walk on every int8 kernel this CPU runs: 1 and 2
/// threads and the serial walk give the same bytes, and every kernel the same bytes as
/// the first (integer sums, one fixed epilogue).
#[test]
fn int8_parallel_walk_is_the_same_bytes_on_every_kernel() {
    let mut first: Option<(Kernel, Vec<Vec<u8>>)> = None;
    for kernel in Kernel::all().filter(|k| k.is_available() && k.precision() == Precision::Int8) {
        let mut outputs = Vec::new();
        for (m, k, n) in [(1, 70, 1000), (1, 5, 17), (37, 33, 131), (200, 64, 64)] {
            let a = random_u8(m * k, 1);
            let w = random_i8(k * n, 2);
            let scales = vec![1.0 / (2000.0 * k as f32); n];
            let packed = PackedWeights::new_int8(kernel, k, n, 1, |kk, j| w[kk * n + j], &scales, 7, None).unwrap();
            let gemm = Gemm::<u8, u8>::new(Lhs::strided(&a, 0, k), packed.panels(), m, n)
                .with_output_quant(Quant::new(0.05, 128).unwrap())
                .with_relu(true);
            let mut serial = vec![0u8; m * n];
            gemm.run_serial(&mut serial).unwrap();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut par = vec![0u8; m * n];
                pool.install(|| gemm.run(&mut par)).unwrap();
                assert_eq!(serial, par, "{kernel} m {m} k {k} n {n}: {threads} thread(s) differ from the serial walk");
            }
            outputs.push(serial);
        }
        match &first {
            None => first = Some((kernel, outputs)),
            Some((first_kernel, want)) => assert!(outputs == *want, "{kernel} differs from {first_kernel}"),
        }
    }
    assert!(first.is_some(), "no int8 kernel ran");
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
        e.to_string().contains("expected avx512bf16, avx512vnni, avx512, avxvnni, avx2, portable")
            || !cfg!(target_arch = "x86_64"),
        "{e}"
    );
    let e = "avx512bf16.f32".parse::<Kernel>().unwrap_err();
    assert!(e.to_string().contains("has no f32 kernel") || !cfg!(target_arch = "x86_64"), "{e}");
    for kernel in Kernel::all().filter(|k| !k.is_available()) {
        let e = PackedWeights::new(kernel, 2, 3, 1, |_, _| 1.0, None).unwrap_err();
        assert!(e.to_string().contains("lacks"), "{e}");
    }
}
