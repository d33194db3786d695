//! Window arithmetic: any sizes give an output inside the input's reach, or an error.
#![no_main]
use convkit_tensor::Window;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut words = data.chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        // Mostly small values, sometimes huge ones.
        let v = u64::from_le_bytes(b);
        (if v & 1 == 0 { v >> 1 & 0xff } else { v >> 1 }) as usize
    });
    let mut next = || words.next().unwrap_or(1);
    let window = Window {
        kernel: (next(), next()),
        stride: (next(), next()),
        padding: (next(), next()),
        dilation: (next(), next()),
        ceil_mode: next() & 1 == 1,
    };
    let (h, w) = (next(), next());
    if let Ok(out) = window.output_hw(h, w) {
        for (o, input, k, s, p, d) in [
            (out.0, h, window.kernel.0, window.stride.0, window.padding.0, window.dilation.0),
            (out.1, w, window.kernel.1, window.stride.1, window.padding.1, window.dilation.1),
        ] {
            let (o, input, k, s, p, d) = (o as u128, input as u128, k as u128, s as u128, p as u128, d as u128);
            let (padded, span, last) = (input + 2 * p, (k - 1) * d + 1, (o - 1) * s);
            assert!(o >= 1);
            // Every window starts inside the padded input; without ceil mode it ends there too.
            assert!(last < padded, "window {window:?} on {h}x{w}: last start {last} of {padded}");
            assert!(window.ceil_mode || last + span <= padded, "window {window:?} on {h}x{w}");
        }
    }
});
