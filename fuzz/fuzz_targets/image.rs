//! Image preprocessing: any bytes give a 3x224x224 input, or an error; never a panic or
//! an allocation past the decoder's limits.
#![no_main]
use convkit_preprocess::{preprocess_bytes, Preprocess, CROP};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first byte picks the filter, so both resampling paths are fuzzed.
    let mode = if data.first().is_some_and(|b| b & 1 == 1) { Preprocess::Timm } else { Preprocess::Torchvision };
    if let Ok(x) = preprocess_bytes(data, mode) {
        assert_eq!(x.len(), 3 * CROP * CROP);
    }
});
