//! Which kernel family runs: read from the CPU once, when the program runs, and cached.

use crate::simd::{Portable, Simd};
use convkit_tensor::{Error, Result};
use std::sync::OnceLock;

/// The environment variable that forces a family (`avx512bf16`, `avx512`, `avx2` or `portable`) for
/// tests and benchmarks. Asking for one this CPU lacks is an error that names it.
pub const ISA_ENV: &str = "CONVKIT_ISA";

/// A kernel family: one instruction set, its vector width and its tile shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// AVX-512F with AVX512-BF16: the AVX-512 family whose bf16 dot product is native
    /// (`vdpbf16ps`); its f32 kernels are those of `Avx512`.
    Avx512Bf16,
    /// AVX-512F: 16 lanes, 32 registers, tiles of 6 rows x 32 or 64 columns.
    Avx512,
    /// AVX2 + FMA: 8 lanes, 16 registers, tiles of 4 rows x 16 columns.
    Avx2,
    /// `wide::f32x4` (SSE2, NEON, or scalar): 4 lanes, tiles of 4 rows x 8 columns.
    Portable,
}

/// The register tile of a family: up to `mr` rows by `max_panels` panels of `nr` columns.
/// The tile walk and the tests' sweep both read it, so no tile shape exists untested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileShape {
    /// Rows of the full tile (one broadcast each).
    pub mr: usize,
    /// Columns of one packed weight panel (a whole number of vectors).
    pub nr: usize,
    /// Adjacent panels one tile covers at most.
    pub max_panels: usize,
}

/// Most rows of any family's tile; `crate::gemm` lists the tiles of 1..=MR rows.
pub(crate) const MR: usize = 6;

impl Isa {
    /// Every family, fastest first.
    pub const ALL: [Isa; 4] = [Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name `CONVKIT_ISA` and `convkit info` use.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// f32 lanes of one vector.
    pub const fn lanes(self) -> usize {
        match self {
            Isa::Avx512Bf16 | Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Portable => 4,
        }
    }

    /// The register tile. 6 x 64 on AVX-512: 24 accumulators, 4 weight vectors and the
    /// broadcasts in 32 registers. 4 x 16 on AVX2: LLVM loads every row's broadcast
    /// before the FMAs, so 6 x 16 (12 + 2 + 6 > 16 registers) spills its accumulators and
    /// ran at 26-40 GFLOP/s on one Zen 3 core where 4 x 16 ran at 62-85 (peak 89).
    pub const fn tile(self) -> TileShape {
        let max_panels = match self {
            Isa::Avx512Bf16 | Isa::Avx512 => 2,
            Isa::Avx2 | Isa::Portable => 1,
        };
        let mr = match self {
            Isa::Avx512Bf16 | Isa::Avx512 => MR,
            Isa::Avx2 => 4,
            Isa::Portable => 4,
        };
        // Two vectors per panel on every family: AVX2 at 3 x 24 (three vectors, 9
        // accumulators) measured -6% to +20% against 4 x 16 per shape, and wastes a third
        // of its last panel on ResNet's channel counts (multiples of 16, not of 24).
        let panel_vectors = 2;
        TileShape { mr, nr: panel_vectors * self.lanes(), max_panels }
    }

    /// Whether this CPU runs the family.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => crate::simd::Avx512Bf16::try_new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::simd::Avx512::try_new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::simd::Avx2::try_new().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512Bf16 | Isa::Avx512 | Isa::Avx2 => false,
            Isa::Portable => true,
        }
    }

    /// The fastest family this CPU runs.
    pub fn best() -> Isa {
        Isa::ALL.into_iter().find(|i| i.is_available()).unwrap_or(Isa::Portable)
    }

    /// The family kernels are built for unless told otherwise: [`ISA_ENV`] if set, else
    /// [`Isa::best`]. Read once and cached; an unknown name, or a family this CPU lacks,
    /// is an error (every time it is asked).
    pub fn selected() -> Result<Isa> {
        static SELECTED: OnceLock<std::result::Result<Isa, Error>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var(ISA_ENV) {
                Ok(name) if !name.is_empty() => name.parse::<Isa>().and_then(Isa::check_available),
                _ => Ok(Isa::best()),
            })
            .clone()
    }

    /// `self` if this CPU runs it, else an error that names the family and the CPU features.
    pub fn check_available(self) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            let needs = match self {
                Isa::Avx512Bf16 => "avx512f and avx512bf16",
                Isa::Avx512 => "avx512f",
                Isa::Avx2 => "avx2 and fma",
                Isa::Portable => "nothing",
            };
            Err(Error::invalid(format!("kernel family {} needs {needs}, which this CPU lacks", self.name())))
        }
    }

    /// Whether the family's bf16 dot product is one instruction (else two f32 FMAs).
    pub const fn native_bf16(self) -> bool {
        matches!(self, Isa::Avx512Bf16)
    }

    /// Runs `op` under this family's target features. A family this CPU lacks (which no
    /// constructor accepts) runs the portable one instead: slower, never unsound. The f32
    /// kernels of `Avx512Bf16` are those of `Avx512` (one compiled copy of each).
    #[inline]
    pub fn dispatch<Op: SimdOp>(self, op: Op) -> Op::Output {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 | Isa::Avx512 => match crate::simd::Avx512::try_new() {
                // SAFETY: `run_avx512` enables avx512f, avx2 and fma; the token exists only
                // when `Avx512::try_new` saw them on this CPU.
                Some(s) => unsafe { run_avx512(s, op) },
                None => op.run(Portable),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => match crate::simd::Avx2::try_new() {
                // SAFETY: `run_avx2` enables avx2 and fma; the token exists only when
                // `Avx2::try_new` saw them on this CPU.
                Some(s) => unsafe { run_avx2(s, op) },
                None => op.run(Portable),
            },
            _ => op.run(Portable),
        }
    }

    /// As [`Isa::dispatch`], for kernels that use the bf16 dot product: `Avx512Bf16` runs
    /// them with its native instructions, every other family emulates them.
    #[inline]
    pub fn dispatch_bf16<Op: SimdOp>(self, op: Op) -> Op::Output {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => match crate::simd::Avx512Bf16::try_new() {
                // SAFETY: `run_avx512_bf16` enables avx512f, avx512bf16, avx2 and fma; the
                // token exists only when `Avx512Bf16::try_new` saw them on this CPU.
                Some(s) => unsafe { run_avx512_bf16(s, op) },
                None => self.dispatch(op),
            },
            _ => self.dispatch(op),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = Error;
    fn from_str(s: &str) -> Result<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s.trim()).ok_or_else(|| {
            Error::invalid(format!("unknown kernel family {s:?} (expected avx512bf16, avx512, avx2 or portable)"))
        })
    }
}

/// A kernel written once, generic over the family: `Isa::dispatch` compiles `run` for
/// each family inside a function with that family's target features. Implementations
/// mark `run` `#[inline(always)]` so that its body, and the `#[inline(always)]` helpers it
/// calls, are compiled with those features.
pub trait SimdOp {
    /// What the kernel returns.
    type Output;
    /// The kernel body for family `S`.
    fn run<S: Simd>(self, simd: S) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn run_avx512<Op: SimdOp>(s: crate::simd::Avx512, op: Op) -> Op::Output {
    op.run(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
fn run_avx512_bf16<Op: SimdOp>(s: crate::simd::Avx512Bf16, op: Op) -> Op::Output {
    op.run(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<Op: SimdOp>(s: crate::simd::Avx2, op: Op) -> Op::Output {
    op.run(s)
}

/// The CPU's model name as the OS reports it (Linux: /proc/cpuinfo), or "unknown CPU".
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}
