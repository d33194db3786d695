//! The .npy reader: any bytes give an array whose length matches its shape, or an error.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((shape, values)) = convkit_cli::npy::parse(data) {
        assert_eq!(shape.iter().product::<usize>(), values.len());
    }
});
