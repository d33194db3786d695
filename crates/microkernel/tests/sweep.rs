//! The deterministic sweep over every tile of every kernel family this CPU runs: each
//! row count 1..=MR, each panel count 1..=max_panels, each column count of that width,
//! reductions of length 1, odd, in segments, and long, and every epilogue combination,
//! against a scalar f64 loop. The tile list is the family's `TileShape`, the same value
//! the tile walk reads, so a tile shape cannot exist without its sweep.

use convkit_microkernel::{Gemm, Isa, Lhs, PackedWeights, RowMap};
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

/// Packs the K x N matrix `w` (row-major) in `A`'s precision.
fn pack<A: Element>(isa: Isa, k: usize, n: usize, segments: usize, w: &[f32], bias: Option<&[f32]>) -> PackedWeights {
    let entry = |kk: usize, j: usize| w[kk * n + j];
    match A::PRECISION {
        Precision::F32 => PackedWeights::new(isa, k, n, entry, bias),
        _ => PackedWeights::new_bf16(isa, k, n, segments, entry, bias),
    }
    .unwrap()
}

/// Runs `case` on `isa` with a left operand of `A` and an output of `O`, and checks every
/// output against the f64 loop over the same (rounded) operands, and that nothing
/// outside the tile's outputs was written. The tolerance is 1e-5 of the sum of |terms|,
/// plus the rounding of a bf16 output (2^-8 of its value). Returns the first error.
fn check<A: Element, O: Element>(isa: Isa, c: Case, seed: u64) -> Result<(), String> {
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
    let packed = pack::<A>(isa, k, n, c.segments, &w, Some(&col_bias));
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
    let lhs_view = Lhs {
        data: &lhs,
        rows: RowMap::Strided { start: 0, step: row_step },
        segments: c.segments,
        segment_step: seg_step,
    };
    let gemm = Gemm {
        col0,
        row_bias: c.row_bias.then_some(&row_bias[..]),
        residual: c.residual.then_some(&residual_values[..]),
        accumulate: c.accumulate,
        relu: c.relu,
        ..Gemm::new(lhs_view, panels, m, row_len)
    };
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

/// The element types a sweep runs: the left operand's and the output's.
#[derive(Debug, Clone, Copy)]
enum Types {
    F32,
    Bf16ToBf16,
    Bf16ToF32,
}

fn check_types(types: Types, isa: Isa, c: Case, seed: u64) -> Result<(), String> {
    match types {
        Types::F32 => check::<f32, f32>(isa, c, seed),
        Types::Bf16ToBf16 => check::<bf16, bf16>(isa, c, seed),
        Types::Bf16ToF32 => check::<bf16, f32>(isa, c, seed),
    }
}

#[test]
fn every_tile_of_every_family() {
    sweep(Types::F32);
}

#[test]
fn every_bf16_tile_of_every_family() {
    sweep(Types::Bf16ToBf16);
    sweep(Types::Bf16ToF32);
}

fn sweep(types: Types) {
    let mut swept = 0;
    for isa in Isa::ALL {
        if !isa.is_available() {
            println!("skipped {isa}: this CPU lacks it");
            continue;
        }
        let tile = isa.tile();
        let mut cases = 0;
        for rows in 1..=tile.mr {
            for panels in 1..=tile.max_panels {
                for cols in (panels - 1) * tile.nr + 1..=panels * tile.nr {
                    for (k, segments) in REDUCTIONS {
                        for [col_bias, row_bias, residual, accumulate, relu] in epilogues(k) {
                            let case = Case { rows, cols, k, segments, col_bias, row_bias, residual, accumulate, relu };
                            let seed = (rows * 1000 + cols * 10 + k) as u64;
                            if let Err(e) = check_types(types, isa, case, seed) {
                                panic!("{isa} {types:?} {case:?}: {e}");
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        println!("swept {isa} {types:?}: {cases} cases, tiles up to {}x{}", tile.mr, tile.nr * tile.max_panels);
        swept += 1;
    }
    assert!(swept > 0, "no kernel family ran");
}

/// Multi-tile GEMMs through the parallel walk: several row tiles and panels, M = 1 (the
/// panel split), on 1 and 2 threads, bitwise equal.
#[test]
fn parallel_walk_matches_serial() {
    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        for (m, k, n) in [(1, 70, 1000), (1, 5, 17), (37, 33, 131), (200, 64, 64)] {
            let a = random_vec(m * k, 1);
            let w = random_vec(k * n, 2);
            let packed = PackedWeights::new(isa, k, n, |kk, j| w[kk * n + j], None).unwrap();
            let gemm = Gemm::new(Lhs::strided(&a, 0, k), packed.panels(), m, n);
            let mut serial = vec![0.0; m * n];
            gemm.run_serial(&mut serial).unwrap();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut par = vec![0.0; m * n];
                pool.install(|| gemm.run(&mut par)).unwrap();
                let same = serial.iter().zip(&par).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{isa} m {m} k {k} n {n}: {threads} thread(s) differ from the serial walk");
            }
            for (i, &got) in serial.iter().enumerate() {
                let (r, j) = (i / n, i % n);
                let want: f64 = (0..k).map(|kk| a[r * k + kk] as f64 * w[kk * n + j] as f64).sum();
                let mag: f64 = (0..k).map(|kk| (a[r * k + kk] as f64 * w[kk * n + j] as f64).abs()).sum();
                assert!((got as f64 - want).abs() <= 1e-5 * mag + 1e-6, "{isa} m {m} k {k} n {n} at {r},{j}");
            }
        }
    }
}

#[test]
fn bad_calls_are_errors() {
    let isa = Isa::Portable;
    let packed = PackedWeights::new(isa, 4, 3, |_, _| 1.0, None).unwrap();
    let a = [1.0; 8];
    let mut out = [0.0; 5];
    let e = Gemm::new(Lhs::strided(&a, 0, 4), packed.panels(), 2, 3).run(&mut out).unwrap_err();
    assert!(e.to_string().contains("GEMM output length"), "{e}");
    let mut out = [0.0; 9];
    let e = Gemm::new(Lhs::strided(&a, 0, 4), packed.panels(), 3, 3).run(&mut out[..]).unwrap_err();
    assert!(e.to_string().contains("left operand"), "{e}");
    let rows = RowMap::Pixels { ho: 0, wo: 3, src_h: 1, src_w: 3, stride: 1, ci: 4 };
    let lhs = Lhs { data: &a, rows, segments: 1, segment_step: 0 };
    let e = Gemm::new(lhs, packed.panels(), 2, 3).run(&mut out[..]).unwrap_err();
    assert!(e.to_string().contains("0x3 pixels"), "{e}");
    let e = PackedWeights::new(isa, 0, 3, |_, _| 1.0, None).unwrap_err();
    assert!(e.to_string().contains("K and N"), "{e}");
    let e = PackedWeights::new(isa, 2, 3, |_, _| 1.0, Some(&[0.0; 2])).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    let e = "sse9".parse::<Isa>().unwrap_err();
    assert!(e.to_string().contains("expected avx512bf16, avx512, avx2 or portable"), "{e}");
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let e = PackedWeights::new(isa, 2, 3, |_, _| 1.0, None).unwrap_err();
        assert!(e.to_string().contains("lacks"), "{e}");
    }
}
