//! The safetensors loader: any bytes give weights that match the spec, or an error.
#![no_main]
use convkit_model::{ResNetSpec, Variant, Weights};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let spec = ResNetSpec::new(Variant::D, [1, 1, 1, 1]);
    if let Ok(w) = Weights::from_safetensors_bytes(spec, data) {
        assert!(w.tensors().values().all(|t| t.data.iter().all(|v| v.is_finite())));
    }
});
