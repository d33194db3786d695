//! The 16-lane vector every convkit kernel computes with, and its slice loads/stores.
//!
//! `wide::f32x16` is one zmm register when AVX-512 is enabled at compile time, and two
//! 8-lane halves otherwise (correct everywhere, fast only with AVX-512).

pub use wide::f32x16;

/// Lanes of [`f32x16`].
pub const LANES: usize = 16;

/// Loads `s[..16]`. Panics if `s` is shorter (callers slice exactly).
#[inline(always)]
pub fn load16(s: &[f32]) -> f32x16 {
    let a: [f32; LANES] = s[..LANES].try_into().expect("slice of 16");
    f32x16::new(a)
}

/// Stores `v` into `s[..16]`.
#[inline(always)]
pub fn store16(s: &mut [f32], v: f32x16) {
    s[..LANES].copy_from_slice(v.as_array());
}

/// Loads up to 16 values, zero-filling the missing lanes.
#[inline(always)]
pub fn load_partial(s: &[f32]) -> f32x16 {
    let mut a = [0.0f32; LANES];
    a[..s.len()].copy_from_slice(s);
    f32x16::new(a)
}

/// Stores the first `s.len()` (at most 16) lanes of `v`.
#[inline(always)]
pub fn store_partial(s: &mut [f32], v: f32x16) {
    let n = s.len();
    s.copy_from_slice(&v.as_array()[..n]);
}

/// f32 GFLOP/s this thread reaches with 12 independent 16-lane FMA chains for about
/// `seconds`: the machine's FMA peak as `wide` compiles it here (what kernels can reach).
pub fn measure_fma_gflops(seconds: f64) -> f64 {
    const CHAINS: usize = 12;
    const STEPS: usize = 4096;
    let x = f32x16::splat(std::hint::black_box(0.999_999));
    let y = f32x16::splat(std::hint::black_box(1e-7));
    let mut acc = [f32x16::splat(1.0); CHAINS];
    let start = std::time::Instant::now();
    let mut flops = 0.0f64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..STEPS {
            for a in acc.iter_mut() {
                *a = a.mul_add(x, y);
            }
        }
        flops += (STEPS * CHAINS * LANES * 2) as f64;
    }
    std::hint::black_box(acc);
    flops / start.elapsed().as_secs_f64() / 1e9
}
