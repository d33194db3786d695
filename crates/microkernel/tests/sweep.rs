//! The deterministic sweep over every tile of every kernel family this CPU runs: each
//! row count 1..=MR, each panel count 1..=max_panels, each column count of that width,
//! reductions of length 1, odd, in segments, and long, and every epilogue combination,
//! against a scalar f64 loop. The tile list is the family's `TileShape`, the same value
//! the tile walk reads, so a tile shape cannot exist without its sweep.

use convkit_microkernel::{Gemm, Isa, Lhs, PackedWeights, RowMap};
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

/// Runs `case` on `isa` and checks every output against the f64 loop, and that nothing
/// outside the tile's outputs was written. Returns a description of the first error.
fn check(isa: Isa, c: Case, seed: u64) -> Result<(), String> {
    let (m, n, k) = (c.rows, c.cols, c.k);
    let run_len = k / c.segments;
    // Row r's segment s starts at r * row_step + s * seg_step; the gaps hold NaN, so a
    // kernel that reads outside its runs fails.
    let seg_step = run_len + 3;
    let row_step = c.segments * seg_step + 5;
    let mut lhs = vec![f32::NAN; m * row_step + 8];
    let a = random_vec(m * k, seed);
    for r in 0..m {
        for s in 0..c.segments {
            let dst = &mut lhs[r * row_step + s * seg_step..][..run_len];
            dst.copy_from_slice(&a[r * k + s * run_len..][..run_len]);
        }
    }
    let w = random_vec(k * n, seed ^ 1);
    let col_bias = random_vec(n, seed ^ 2);
    let row_bias = random_vec(m, seed ^ 3);
    let packed = PackedWeights::new(isa, k, n, |kk, j| w[kk * n + j], Some(&col_bias)).map_err(|e| e.to_string())?;
    let panels = if c.col_bias { packed.panels() } else { packed.panels().without_bias() };
    // Output rows are longer than the tile and start at column 1: the sentinel cells
    // around the tile must survive.
    let (row_len, col0) = (n + 3, 1);
    let sentinel = -7.25f32;
    let mut out = vec![sentinel; m * row_len];
    let prior = random_vec(m * n, seed ^ 4);
    for r in 0..m {
        out[r * row_len + col0..][..n].copy_from_slice(&prior[r * n..][..n]);
    }
    let residual_values = random_vec(m * row_len, seed ^ 5);
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
                if got.to_bits() != sentinel.to_bits() {
                    return Err(format!("row {r} column {j} outside the tile was written: {got}"));
                }
                continue;
            };
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let term = a[r * k + kk] as f64 * w[kk * n + col] as f64;
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
                add(residual_values[r * row_len + col0 + col]);
            }
            if c.accumulate {
                add(prior[r * n + col]);
            }
            if c.relu {
                want = want.max(0.0);
            }
            let tol = 1e-5 * mag + 1e-6;
            let err = (got as f64 - want).abs();
            if err.is_nan() || err > tol {
                return Err(format!("row {r} column {col}: got {got}, want {want} (tolerance {tol:.2e})"));
            }
        }
    }
    Ok(())
}

/// Reductions: (k, segments). 1, odd, a KxK conv's three runs, long.
const REDUCTIONS: [(usize, usize); 4] = [(1, 1), (7, 1), (12, 3), (259, 1)];

/// Every epilogue combination on the short reductions; none and all on the others.
fn epilogues(k: usize) -> Vec<[bool; 5]> {
    if k <= 12 {
        (0..32u32).map(|bits| std::array::from_fn(|i| bits >> i & 1 == 1)).collect()
    } else {
        vec![[false; 5], [true; 5]]
    }
}

#[test]
fn every_tile_of_every_family() {
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
                            if let Err(e) = check(isa, case, seed) {
                                panic!("{isa} {case:?}: {e}");
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        println!("swept {isa}: {cases} cases, tiles up to {}x{}", tile.mr, tile.nr * tile.max_panels);
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
    assert!(e.to_string().contains("expected avx512, avx2 or portable"), "{e}");
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let e = PackedWeights::new(isa, 2, 3, |_, _| 1.0, None).unwrap_err();
        assert!(e.to_string().contains("lacks"), "{e}");
    }
}
