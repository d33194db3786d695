//! Image preprocessing: any bytes give a 3x224x224 input, or an error; never a panic or
//! an allocation past the decoder's limits.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(x) = convkit_cli::classify::preprocess_bytes(data) {
        assert_eq!(x.len(), 3 * convkit_cli::classify::CROP * convkit_cli::classify::CROP);
    }
});
