//! Threshold expressions, durations and jitter distributions: parse, and what parses must
//! render back to text that parses again; sampling must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(broken) = planrun::plan::fuzz_scalar(text)
    {
        panic!("{broken}");
    }
});
