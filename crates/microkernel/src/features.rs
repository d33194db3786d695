//! What the CPU can do, apart from which kernel runs: a set of capabilities detected once,
//! and the mask `CONVKIT_ISA` puts over it.

use convkit_tensor::{Error, Result};
use std::sync::OnceLock;

/// The environment variable that masks the detected capabilities for tests and benchmarks:
/// a kernel family's name (`avx512bf16`, `avx512`, `avx2`, `portable`: the capabilities
/// that family needs) or capability names, joined by `+` (`avx2+fma`). Asking for a
/// capability this CPU lacks is an error that names it.
pub const ISA_ENV: &str = "CONVKIT_ISA";

/// A set of CPU capabilities: what a kernel requires, what this CPU has, or a mask a user
/// puts over the latter. Capabilities are independent bits (a CPU may have VNNI without
/// BF16, or BF16 without AMX), not a ladder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuFeatures(u32);

impl CpuFeatures {
    /// No capability: what the portable kernels require.
    pub const NONE: CpuFeatures = CpuFeatures(0);
    /// AVX2 (256-bit integer and float vectors).
    pub const AVX2: CpuFeatures = CpuFeatures(1 << 0);
    /// FMA3 fused multiply-add.
    pub const FMA: CpuFeatures = CpuFeatures(1 << 1);
    /// F16C half-precision conversions (rustc's `avx512f` implies it).
    pub const F16C: CpuFeatures = CpuFeatures(1 << 11);
    /// AVX-512 Foundation.
    pub const AVX512F: CpuFeatures = CpuFeatures(1 << 2);
    /// AVX-512 byte and word instructions.
    pub const AVX512BW: CpuFeatures = CpuFeatures(1 << 3);
    /// AVX-512 vector-length extensions (the 128- and 256-bit forms).
    pub const AVX512VL: CpuFeatures = CpuFeatures(1 << 4);
    /// AVX512-BF16: `vdpbf16ps` and `vcvtneps2bf16`.
    pub const AVX512BF16: CpuFeatures = CpuFeatures(1 << 5);
    /// AVX512-VNNI: `vpdpbusd` on 512-bit vectors.
    pub const AVX512VNNI: CpuFeatures = CpuFeatures(1 << 6);
    /// AVX-VNNI: `vpdpbusd` on 256-bit vectors, VEX-encoded.
    pub const AVXVNNI: CpuFeatures = CpuFeatures(1 << 7);
    /// AMX tiles (`ldtilecfg`, `tileloadd`), set only once the OS has granted the tile state.
    pub const AMX_TILE: CpuFeatures = CpuFeatures(1 << 8);
    /// AMX bf16 tile products (`tdpbf16ps`), with [`CpuFeatures::AMX_TILE`].
    pub const AMX_BF16: CpuFeatures = CpuFeatures(1 << 9);
    /// AMX int8 tile products (`tdpbusd`), with [`CpuFeatures::AMX_TILE`].
    pub const AMX_INT8: CpuFeatures = CpuFeatures(1 << 10);

    /// Every capability with its name, in the order names are printed.
    const NAMED: [(CpuFeatures, &'static str); 12] = [
        (CpuFeatures::AVX2, "avx2"),
        (CpuFeatures::FMA, "fma"),
        (CpuFeatures::F16C, "f16c"),
        (CpuFeatures::AVX512F, "avx512f"),
        (CpuFeatures::AVX512BW, "avx512bw"),
        (CpuFeatures::AVX512VL, "avx512vl"),
        (CpuFeatures::AVX512BF16, "avx512bf16"),
        (CpuFeatures::AVX512VNNI, "avx512vnni"),
        (CpuFeatures::AVXVNNI, "avxvnni"),
        (CpuFeatures::AMX_TILE, "amx-tile"),
        (CpuFeatures::AMX_BF16, "amx-bf16"),
        (CpuFeatures::AMX_INT8, "amx-int8"),
    ];

    /// `self` with what each of its capabilities needs with it, as rustc's target
    /// features imply them (avx512f brings avx2, fma and f16c; avx512bf16 brings
    /// avx512bw; avxvnni brings avx2 and fma; the AMX products bring the tiles). A mask written by name is closed this
    /// way, so no capability in it is unusable for want of another.
    pub const fn with_prerequisites(self) -> CpuFeatures {
        let avx512 = CpuFeatures::AVX512F.union(CpuFeatures::AVX2).union(CpuFeatures::FMA).union(CpuFeatures::F16C);
        let any_avx512 = CpuFeatures::AVX512F
            .union(CpuFeatures::AVX512BW)
            .union(CpuFeatures::AVX512VL)
            .union(CpuFeatures::AVX512BF16)
            .union(CpuFeatures::AVX512VNNI);
        let mut out = self;
        if !out.intersection(any_avx512).is_empty() {
            out = out.union(avx512);
        }
        if out.contains(CpuFeatures::AVX512BF16) {
            out = out.union(CpuFeatures::AVX512BW);
        }
        if out.contains(CpuFeatures::AVXVNNI) {
            // rustc's avxvnni implies avx2; every CPU with it has fma, and `avx2` by name
            // means the avx2 family's avx2+fma, so the set prints and parses back alike.
            out = out.union(CpuFeatures::AVX2).union(CpuFeatures::FMA);
        }
        if !out.intersection(CpuFeatures::AMX_BF16.union(CpuFeatures::AMX_INT8)).is_empty() {
            out = out.union(CpuFeatures::AMX_TILE);
        }
        out
    }

    /// Both sets together.
    pub const fn union(self, other: CpuFeatures) -> CpuFeatures {
        CpuFeatures(self.0 | other.0)
    }

    /// What both sets have.
    pub const fn intersection(self, other: CpuFeatures) -> CpuFeatures {
        CpuFeatures(self.0 & other.0)
    }

    /// Whether every capability of `other` is in `self`.
    pub const fn contains(self, other: CpuFeatures) -> bool {
        self.0 & other.0 == other.0
    }

    /// The capabilities of `self` that `have` lacks.
    pub const fn missing_from(self, have: CpuFeatures) -> CpuFeatures {
        CpuFeatures(self.0 & !have.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the capabilities in the set.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMED.iter().filter(|(f, _)| self.contains(*f)).map(|(_, name)| *name).collect()
    }

    /// What this CPU can do, read once. The AMX capabilities count only when the OS has
    /// granted this process the tile state (Linux's `arch_prctl` permission), so that a
    /// missing grant means "not available", never a fault at the first tile instruction.
    pub fn detected() -> CpuFeatures {
        static DETECTED: OnceLock<CpuFeatures> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// The process default: [`CpuFeatures::detected`] masked by [`ISA_ENV`] if it is set.
    /// Read once; a malformed mask, or one naming a capability this CPU lacks, is an error
    /// (every time it is asked). Embedders that choose per model pass their own mask
    /// instead.
    pub fn selected() -> Result<CpuFeatures> {
        static SELECTED: OnceLock<std::result::Result<CpuFeatures, Error>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var(ISA_ENV) {
                Ok(mask) if !mask.trim().is_empty() => {
                    let mask = mask.parse::<CpuFeatures>()?;
                    CpuFeatures::detected().check_has(mask, &format!("{ISA_ENV}={mask}"))?;
                    Ok(mask)
                }
                _ => Ok(CpuFeatures::detected()),
            })
            .clone()
    }

    /// The mask kernels are chosen within: `mask` if this CPU has all of it (else an error
    /// naming what it lacks: a kernel is never silently not the one asked for), or the
    /// process default ([`CpuFeatures::selected`]) for `None`.
    pub fn resolve(mask: Option<CpuFeatures>) -> Result<CpuFeatures> {
        match mask {
            Some(mask) => {
                CpuFeatures::detected().check_has(mask, &format!("the kernel mask {mask}"))?;
                Ok(mask)
            }
            None => CpuFeatures::selected(),
        }
    }

    /// Ok if `self` has every capability of `need`, else an error naming `what` and the
    /// capabilities missing.
    pub fn check_has(self, need: CpuFeatures, what: &str) -> Result<()> {
        let missing = need.missing_from(self);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(format!("{what} needs {}, which this CPU lacks", missing.names().join(" and "))))
        }
    }
}

impl std::fmt::Debug for CpuFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuFeatures({self})")
    }
}

/// Capability names joined by `+`, or `none`.
impl std::fmt::Display for CpuFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.names().join("+"))
        }
    }
}

/// Names joined by `+` (or `,`): each a kernel family (what it requires), a capability
/// (`avx512vnni`, `amx-bf16`, …, with its prerequisites:
/// [`CpuFeatures::with_prerequisites`]), or `none`. A name that is both (`avx2`,
/// `avx512bf16`) means the family: `avx2` is avx2+fma, what the avx2 kernels need.
impl std::str::FromStr for CpuFeatures {
    type Err = Error;
    fn from_str(s: &str) -> Result<CpuFeatures> {
        s.split(['+', ',']).map(str::trim).try_fold(CpuFeatures::NONE, |set, name| {
            let named = CpuFeatures::NAMED.iter().find(|(_, n)| *n == name).map(|(f, _)| *f);
            let family = crate::Family::ALL.iter().find(|f| f.name() == name).map(|f| f.requires());
            match family.or(named).or((name == "none").then_some(CpuFeatures::NONE)) {
                Some(f) => Ok(set.union(f.with_prerequisites())),
                None => Err(Error::invalid(format!(
                    "unknown CPU capability or kernel family {name:?} in {s:?} (capabilities: {}; families: {})",
                    CpuFeatures::NAMED.map(|(_, n)| n).join(", "),
                    crate::Family::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                ))),
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    let mut have = CpuFeatures::NONE;
    let flags = [
        (is_x86_feature_detected!("avx2"), CpuFeatures::AVX2),
        (is_x86_feature_detected!("fma"), CpuFeatures::FMA),
        (is_x86_feature_detected!("f16c"), CpuFeatures::F16C),
        (is_x86_feature_detected!("avx512f"), CpuFeatures::AVX512F),
        (is_x86_feature_detected!("avx512bw"), CpuFeatures::AVX512BW),
        (is_x86_feature_detected!("avx512vl"), CpuFeatures::AVX512VL),
        (is_x86_feature_detected!("avx512bf16"), CpuFeatures::AVX512BF16),
        (is_x86_feature_detected!("avx512vnni"), CpuFeatures::AVX512VNNI),
        (is_x86_feature_detected!("avxvnni"), CpuFeatures::AVXVNNI),
    ];
    for (present, feature) in flags {
        if present {
            have = have.union(feature);
        }
    }
    have.union(amx::granted())
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuFeatures {
    CpuFeatures::NONE
}

/// AMX by hand: `is_x86_feature_detected!("amx-tile")` is unstable. The CPU must report the
/// tile instructions (CPUID leaf 7, which leaf 0 must reach), the OS must enable the tile
/// state in XCR0, and Linux must have granted this process that state.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::CpuFeatures;
    use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    /// XCR0 bits of the tile configuration (17) and tile data (18) state components.
    const XCR0_TILE: u64 = (1 << 17) | (1 << 18);
    /// Linux's `arch_prctl` query of the extended state components this process may use,
    /// and the bit of the tile data among them.
    const ARCH_GET_XCOMP_PERM: libc::c_ulong = 0x1022;
    const XFEATURE_XTILEDATA: u32 = 18;

    pub(super) fn granted() -> CpuFeatures {
        if __cpuid(0).eax < 7 {
            return CpuFeatures::NONE;
        }
        let leaf7 = __cpuid_count(7, 0);
        let mut amx = CpuFeatures::NONE;
        for (bit, feature) in [(24, CpuFeatures::AMX_TILE), (22, CpuFeatures::AMX_BF16), (25, CpuFeatures::AMX_INT8)] {
            if leaf7.edx >> bit & 1 == 1 {
                amx = amx.union(feature);
            }
        }
        if !amx.contains(CpuFeatures::AMX_TILE) || !os_saves_tiles() || !permission_granted() {
            return CpuFeatures::NONE;
        }
        amx
    }

    /// Whether the OS enabled XSAVE (CPUID.1:ECX.OSXSAVE, bit 27) and the tile state in XCR0.
    fn os_saves_tiles() -> bool {
        if __cpuid(1).ecx >> 27 & 1 == 0 {
            return false;
        }
        // SAFETY: `xgetbv` exists when the OS enabled XSAVE, checked just above (OSXSAVE).
        let xcr0 = unsafe { xgetbv0() };
        xcr0 & XCR0_TILE == XCR0_TILE
    }

    #[target_feature(enable = "xsave")]
    fn xgetbv0() -> u64 {
        // SAFETY: `xgetbv` with ECX = 0 reads XCR0, which every XSAVE-enabled system has;
        // this function is entered only after the OSXSAVE check.
        unsafe { _xgetbv(0) }
    }

    /// Whether Linux already permits this process the tile data. No kernel family of this
    /// build uses AMX, so none asks for it (`ARCH_REQ_XCOMP_PERM` would enlarge every
    /// signal frame of the process); the family that does will make the request.
    #[cfg(target_os = "linux")]
    fn permission_granted() -> bool {
        let mut permitted: u64 = 0;
        // SAFETY: `arch_prctl(ARCH_GET_XCOMP_PERM, addr)` writes one u64 at `addr`, which
        // points at `permitted`, alive and writable for the call. A kernel without the
        // query answers an error, read as "no AMX".
        let status =
            unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_XCOMP_PERM, std::ptr::addr_of_mut!(permitted)) };
        status == 0 && permitted >> XFEATURE_XTILEDATA & 1 == 1
    }

    #[cfg(not(target_os = "linux"))]
    fn permission_granted() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::CpuFeatures;

    #[test]
    fn names_round_trip_and_families_are_masks() {
        let set = CpuFeatures::AVX2.union(CpuFeatures::FMA);
        assert_eq!(set.to_string(), "avx2+fma");
        assert_eq!("avx2+fma".parse::<CpuFeatures>().unwrap(), set);
        assert_eq!("avx2".parse::<CpuFeatures>().unwrap(), set, "the avx2 family needs avx2 and fma");
        assert_eq!("portable".parse::<CpuFeatures>().unwrap(), CpuFeatures::NONE);
        assert_eq!("none".parse::<CpuFeatures>().unwrap().to_string(), "none");
        // A capability brings what it needs: avx512f alone would leave every AVX-512 kernel
        // out (they need avx2 and fma too); printed and parsed back, a mask is the same.
        let avx512: CpuFeatures = "avx512f".parse().unwrap();
        assert!(avx512.contains(CpuFeatures::AVX2.union(CpuFeatures::FMA).union(CpuFeatures::F16C)), "{avx512}");
        for mask in ["avx512f+avx512bf16", "avx512vnni", "avxvnni", "amx-bf16", "avx2+fma+f16c"] {
            let parsed: CpuFeatures = mask.parse().unwrap();
            assert_eq!(parsed.to_string().parse::<CpuFeatures>().unwrap(), parsed, "{mask}");
        }
        assert!("amx-int8".parse::<CpuFeatures>().unwrap().contains(CpuFeatures::AMX_TILE));
        let e = "avx2+sse9".parse::<CpuFeatures>().unwrap_err().to_string();
        assert!(e.contains("\"sse9\"") && e.contains("avx512bf16"), "{e}");
    }

    #[test]
    fn missing_capabilities_are_named() {
        let e = CpuFeatures::AVX2.check_has(CpuFeatures::AVX2.union(CpuFeatures::AMX_BF16), "x").unwrap_err();
        assert!(e.to_string().contains("x needs amx-bf16, which this CPU lacks"), "{e}");
        assert!(CpuFeatures::NONE.check_has(CpuFeatures::NONE, "portable").is_ok());
    }

    /// Detection agrees with the flags Linux reports (its spellings differ for some).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn detection_matches_proc_cpuinfo() {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags: Vec<&str> = info.lines().find(|l| l.starts_with("flags")).unwrap().split_whitespace().collect();
        let linux_names = [
            (CpuFeatures::AVX2, "avx2"),
            (CpuFeatures::FMA, "fma"),
            (CpuFeatures::F16C, "f16c"),
            (CpuFeatures::AVX512F, "avx512f"),
            (CpuFeatures::AVX512BW, "avx512bw"),
            (CpuFeatures::AVX512VL, "avx512vl"),
            (CpuFeatures::AVX512BF16, "avx512_bf16"),
            (CpuFeatures::AVX512VNNI, "avx512_vnni"),
            (CpuFeatures::AVXVNNI, "avx_vnni"),
        ];
        let detected = CpuFeatures::detected();
        for (feature, linux) in linux_names {
            assert_eq!(detected.contains(feature), flags.contains(&linux), "{feature} ({linux}) in {detected}");
        }
        if !flags.contains(&"amx_tile") {
            assert!(!detected.contains(CpuFeatures::AMX_TILE), "{detected}");
        }
    }

    #[test]
    fn amx_only_with_its_tiles() {
        let d = CpuFeatures::detected();
        let amx = CpuFeatures::AMX_BF16.union(CpuFeatures::AMX_INT8);
        assert!(d.intersection(amx).is_empty() || d.contains(CpuFeatures::AMX_TILE), "{d}");
    }
}
