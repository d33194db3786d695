//! The registry of kernel families and the kernels they declare.
//!
//! A family is one file under `families/`: a token type that implements [`Simd`] (its
//! vector operations) and `FamilyDecl` (its name, the CPU capabilities it requires, its
//! register tile, the element types it has kernels for, and how to enter code compiled
//! with its target features), plus one line in the `families!` list in
//! `families/mod.rs`. Everything else (the module, the [`Family`] values, the [`Kernel`]
//! list and its pickers, the tile checks, the sweep in `tests/sweep.rs`, `convkit info`)
//! is made from that list.

use crate::simd::Simd;
use crate::CpuFeatures;
use convkit_tensor::{Element, Error, Precision, Result};

/// Most rows of any family's tile; `crate::gemm` compiles the tiles of 1..=MR rows.
pub(crate) const MR: usize = 6;

/// The register tile of a family: up to `mr` rows by `max_panels` panels of `nr` columns.
/// The tile walk and the tests' sweep both read it, so no tile shape exists untested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileShape {
    /// Rows of the full tile (one broadcast each).
    pub mr: usize,
    /// Columns of one packed weight panel (two vectors).
    pub nr: usize,
    /// Adjacent panels one tile covers at most.
    pub max_panels: usize,
}

/// What one family file declares. Sealed: implemented by the tokens of this crate only.
pub(crate) trait FamilyDecl: Simd + Sized {
    /// The name `CONVKIT_ISA`, `convkit info` and the kernel names use.
    const NAME: &'static str;
    /// The CPU capabilities its code is compiled for; `try_new` checks the same ones.
    const REQUIRES: CpuFeatures;
    /// Its register tile.
    const TILE: TileShape;
    /// The element types it has GEMM kernels for (each one a [`Kernel`]).
    const PRECISIONS: &'static [Precision];
    /// The token, if this CPU has [`FamilyDecl::REQUIRES`].
    fn try_new() -> Option<Self>;
    /// Runs `op` inside a function compiled with the family's target features.
    fn enter<Op: SimdOp>(self, op: Op) -> Op::Output;
}

/// A kernel written once, generic over the family: [`Family::dispatch`] compiles `run` for
/// each family inside a function with that family's target features. Implementations
/// mark `run` `#[inline(always)]` so that its body, and the `#[inline(always)]` helpers it
/// calls, are compiled with those features.
pub trait SimdOp {
    /// What the kernel returns.
    type Output;
    /// The kernel body for family `S`.
    fn run<S: Simd>(self, simd: S) -> Self::Output;
}

/// A tile shape the walk can run: 1..=MR rows, panels of two vectors, one or two panels.
/// Anything else fails to compile where the family is declared.
pub(crate) const fn check_tile(tile: TileShape, lanes: usize) {
    assert!(tile.mr >= 1 && tile.mr <= MR, "a tile has 1..=MR rows");
    assert!(tile.nr == 2 * lanes, "a panel is two vectors wide");
    assert!(tile.max_panels == 1 || tile.max_panels == 2, "a tile covers one or two panels");
}

/// Forwards the listed [`Simd`] methods of a family built on another to the other's token
/// in field `$inner` (their vectors are the same type): a family file then spells out
/// only what it does differently.
macro_rules! forward_simd {
    ($inner:ident: $($method:ident),* $(,)?) => { $(forward_simd!(@ $inner $method);)* };
    (@ $i:ident splat) => { #[inline(always)] fn splat(self, v: f32) -> Self::F32 { self.$i.splat(v) } };
    (@ $i:ident load) => { #[inline(always)] fn load(self, s: &[f32]) -> Self::F32 { self.$i.load(s) } };
    (@ $i:ident store) => {
        #[inline(always)] fn store(self, s: &mut [f32], v: Self::F32) { self.$i.store(s, v) }
    };
    (@ $i:ident load_partial) => {
        #[inline(always)] fn load_partial(self, s: &[f32]) -> Self::F32 { self.$i.load_partial(s) }
    };
    (@ $i:ident store_partial) => {
        #[inline(always)] fn store_partial(self, s: &mut [f32], v: Self::F32) { self.$i.store_partial(s, v) }
    };
    (@ $i:ident bf16_halves) => {
        #[inline(always)]
        fn bf16_halves(self, pairs: Self::F32) -> (Self::F32, Self::F32) { self.$i.bf16_halves(pairs) }
    };
    (@ $i:ident load_bf16) => {
        #[inline(always)]
        fn load_bf16(self, s: &[convkit_tensor::bf16]) -> Self::F32 { self.$i.load_bf16(s) }
    };
    (@ $i:ident store_bf16) => {
        #[inline(always)]
        fn store_bf16(self, s: &mut [convkit_tensor::bf16], v: Self::F32) { self.$i.store_bf16(s, v) }
    };
    (@ $i:ident i32_to_f32) => {
        #[inline(always)] fn i32_to_f32(self, v: Self::F32) -> Self::F32 { self.$i.i32_to_f32(v) }
    };
    (@ $i:ident load_u8) => { #[inline(always)] fn load_u8(self, s: &[u8]) -> Self::F32 { self.$i.load_u8(s) } };
    (@ $i:ident store_u8) => {
        #[inline(always)] fn store_u8(self, s: &mut [u8], v: Self::F32) { self.$i.store_u8(s, v) }
    };
    (@ $i:ident mul_add) => {
        #[inline(always)]
        fn mul_add(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32 { self.$i.mul_add(a, b, c) }
    };
    (@ $i:ident dot_bf16) => {
        #[inline(always)]
        fn dot_bf16(self, acc: Self::F32, a: Self::F32, b: Self::F32) -> Self::F32 { self.$i.dot_bf16(acc, a, b) }
    };
    (@ $i:ident dot_u8s8) => {
        #[inline(always)]
        fn dot_u8s8(self, acc: Self::F32, a: Self::F32, b: Self::F32) -> Self::F32 { self.$i.dot_u8s8(acc, a, b) }
    };
    // add, sub, mul, max, max_keep_nan, min, add_i32: two vectors in, one out.
    (@ $i:ident $binary:ident) => {
        #[inline(always)] fn $binary(self, a: Self::F32, b: Self::F32) -> Self::F32 { self.$i.$binary(a, b) }
    };
}

/// Declares the families: for each line `Variant => module::Token`, the module (a file
/// beside the list) and a [`Family`] value that stands for its token.
macro_rules! families {
    ($($(#[cfg($cfg:meta)])? $variant:ident => $module:ident :: $token:ident,)*) => {
        $($(#[cfg($cfg)])? pub(crate) mod $module;)*

        use crate::family::{FamilyDecl, SimdOp, TileShape};
        use crate::{CpuFeatures, Simd};
        use convkit_tensor::Precision;
        $($(#[cfg($cfg)])? use $module::$token;)*

        /// A kernel family: one instruction set's vector operations and register tile,
        /// declared in a file of its own under `families/`. Families are not ordered by
        /// capability (real CPUs combine AVX-512, BF16, VNNI and AMX freely); [`Family::ALL`]
        /// is the order the pickers prefer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Family {
            $(
                #[doc = concat!("The `", stringify!($variant), "` family (`", stringify!($token), "`).")]
                $(#[cfg($cfg)])?
                $variant,
            )*
        }

        impl Family {
            /// Every family of this build, in the order the pickers prefer.
            pub const ALL: &'static [Family] = &[$($(#[cfg($cfg)])? Family::$variant,)*];

            /// The name `CONVKIT_ISA` and `convkit info` use.
            pub const fn name(self) -> &'static str {
                match self {
                    $($(#[cfg($cfg)])? Family::$variant => <$token as FamilyDecl>::NAME,)*
                }
            }

            /// The CPU capabilities the family's code needs.
            pub const fn requires(self) -> CpuFeatures {
                match self {
                    $($(#[cfg($cfg)])? Family::$variant => <$token as FamilyDecl>::REQUIRES,)*
                }
            }

            /// The register tile.
            pub const fn tile(self) -> TileShape {
                match self {
                    $($(#[cfg($cfg)])? Family::$variant => <$token as FamilyDecl>::TILE,)*
                }
            }

            /// f32 lanes of one vector.
            pub const fn lanes(self) -> usize {
                match self {
                    $($(#[cfg($cfg)])? Family::$variant => <$token as Simd>::LANES,)*
                }
            }

            /// The element types the family has GEMM kernels for.
            pub const fn precisions(self) -> &'static [Precision] {
                match self {
                    $($(#[cfg($cfg)])? Family::$variant => <$token as FamilyDecl>::PRECISIONS,)*
                }
            }

            /// Runs `op` under the family's target features, or on the portable family if
            /// this CPU lacks them.
            pub(crate) fn enter_or_portable<Op: SimdOp>(self, op: Op) -> Op::Output {
                match self {
                    $($(#[cfg($cfg)])? Family::$variant => match <$token as FamilyDecl>::try_new() {
                        Some(token) => token.enter(op),
                        None => portable::Portable::TOKEN.enter(op),
                    },)*
                }
            }
        }

        $($(#[cfg($cfg)])? const _: () = crate::family::check_tile(<$token as FamilyDecl>::TILE, <$token as Simd>::LANES);)*
    };
}

pub use crate::families::Family;

impl Family {
    /// Whether this CPU runs the family.
    pub fn is_available(self) -> bool {
        CpuFeatures::detected().contains(self.requires())
    }

    /// `self` if this CPU runs it, else an error that names the family and the capabilities
    /// it lacks.
    pub fn check_available(self) -> Result<Family> {
        CpuFeatures::detected().check_has(self.requires(), &format!("kernel family {}", self.name()))?;
        Ok(self)
    }

    /// The families this CPU runs within `mask`, in the order the pickers prefer.
    pub fn available_in(mask: CpuFeatures) -> impl Iterator<Item = Family> {
        let have = mask.intersection(CpuFeatures::detected());
        Family::ALL.iter().copied().filter(move |f| have.contains(f.requires()))
    }

    /// The family of the f32 kernel [`Kernel::pick`] chooses within `mask`: the one a model
    /// pools on and Winograd transforms on (f32 arithmetic; bf16 stored by exact rounding).
    pub fn pick(mask: CpuFeatures) -> Family {
        Family::available_in(mask).find(|f| f.precisions().contains(&Precision::F32)).unwrap_or(Family::Portable)
    }

    /// The family of the f32 kernel this CPU runs best ([`Family::pick`] over every
    /// capability it has).
    pub fn best() -> Family {
        Family::pick(CpuFeatures::detected())
    }

    /// Runs `op` under this family's target features. On a CPU that lacks them it runs
    /// the portable family instead: for element-wise work (pooling, Winograd's transforms)
    /// slower, never wrong. The GEMM walk never gets here with a family the CPU lacks: its
    /// panels are packed only for an available kernel.
    #[inline]
    pub fn dispatch<Op: SimdOp>(self, op: Op) -> Op::Output {
        self.enter_or_portable(op)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = Error;
    fn from_str(s: &str) -> Result<Family> {
        Family::ALL.iter().copied().find(|f| f.name() == s.trim()).ok_or_else(|| {
            let names: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
            Error::invalid(format!("unknown kernel family {s:?} (expected {})", names.join(", ")))
        })
    }
}

/// One GEMM kernel: a family's tile walk over one element type. Packed weights record the
/// kernel they were packed for, and the walk reads the tile from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel {
    family: Family,
    precision: Precision,
}

impl Kernel {
    /// The kernel of `family` over `precision`, or an error if the family declares none.
    pub fn new(family: Family, precision: Precision) -> Result<Kernel> {
        if family.precisions().contains(&precision) {
            Ok(Kernel { family, precision })
        } else {
            Err(Error::invalid(format!("kernel family {family} has no {precision} kernel")))
        }
    }

    /// Every kernel of this build, family by family in the order the pickers prefer.
    pub fn all() -> impl Iterator<Item = Kernel> {
        Family::ALL
            .iter()
            .flat_map(|&family| family.precisions().iter().map(move |&precision| Kernel { family, precision }))
    }

    /// The kernels for `precision` this CPU runs within `mask`, in the order the pickers
    /// prefer.
    pub fn available(precision: Precision, mask: CpuFeatures) -> impl Iterator<Item = Kernel> {
        Family::available_in(mask)
            .filter(move |f| f.precisions().contains(&precision))
            .map(move |family| Kernel { family, precision })
    }

    /// The kernel for `precision`: the first of [`Kernel::available`] within `mask`. The
    /// portable family runs every precision, so there is always one.
    pub fn pick(precision: Precision, mask: CpuFeatures) -> Result<Kernel> {
        Kernel::available(precision, mask)
            .next()
            .ok_or_else(|| Error::invalid(format!("no {precision} kernel runs within the CPU capabilities {mask}")))
    }

    /// The kernel for `precision` this CPU runs best ([`Kernel::pick`] over every
    /// capability it has).
    pub fn best(precision: Precision) -> Kernel {
        Kernel::available(precision, CpuFeatures::detected())
            .next()
            .unwrap_or(Kernel { family: Family::Portable, precision })
    }

    /// [`Kernel::pick`] for the element type `T`.
    pub fn for_element<T: Element>(mask: CpuFeatures) -> Result<Kernel> {
        Kernel::pick(T::PRECISION, mask)
    }

    /// The family.
    pub const fn family(self) -> Family {
        self.family
    }

    /// The element type of its left operand and panels.
    pub const fn precision(self) -> Precision {
        self.precision
    }

    /// The CPU capabilities it needs.
    pub const fn requires(self) -> CpuFeatures {
        self.family.requires()
    }

    /// The register tile.
    pub const fn tile(self) -> TileShape {
        self.family.tile()
    }

    /// Reduction values per 32-bit slot of its panels (1 in f32, 2 in bf16).
    pub const fn k_group(self) -> usize {
        self.precision.k_group()
    }

    /// Whether its bf16 dot product is one instruction (`vdpbf16ps`) rather than two FMAs.
    pub const fn native_bf16(self) -> bool {
        matches!(self.precision, Precision::Bf16) && self.family.requires().contains(CpuFeatures::AVX512BF16)
    }

    /// Whether this CPU runs it.
    pub fn is_available(self) -> bool {
        self.family.is_available()
    }

    /// `self` if this CPU runs it, else an error naming the capabilities it lacks.
    pub fn check_available(self) -> Result<Kernel> {
        CpuFeatures::detected().check_has(self.requires(), &format!("kernel {self}"))?;
        Ok(self)
    }
}

/// `family.precision`, as `avx512bf16.bf16`.
impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.family, self.precision)
    }
}

impl std::str::FromStr for Kernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kernel> {
        let (family, precision) = s
            .trim()
            .split_once('.')
            .ok_or_else(|| Error::invalid(format!("kernel name {s:?} is not family.precision (avx2.f32)")))?;
        Kernel::new(family.parse()?, precision.parse()?)
    }
}
