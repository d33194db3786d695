//! One file per kernel family: its token, vector operations and declaration.

// The registry: one line per family, in the order the pickers prefer. Each line declares
// the module of that name (the file beside this one) and the family its token stands for.
families! {
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16 => avx512bf16::Avx512Bf16,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni => avx512vnni::Avx512Vnni,
    #[cfg(target_arch = "x86_64")]
    Avx512 => avx512::Avx512,
    #[cfg(target_arch = "x86_64")]
    AvxVnni => avxvnni::AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx2 => avx2::Avx2,
    Portable => portable::Portable,
}
