//! TOML plan text → parse, validate, compile, scan for inline secrets. Must never panic, hang
//! or allocate without bound, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        planrun::plan::fuzz_plan(text, true);
    }
});
