//! The router's path normaliser: never panics, and normalizing is idempotent on its output
//! for paths that decode to no further escapes (Kong normalizes once; a second pass must not
//! be needed to reach a stable form for dot segments and slashes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let once = sluice_router::normalize_path(path);
    if !once.contains('%') {
        let twice = sluice_router::normalize_path(&once);
        assert_eq!(once, twice, "normalizing {path:?} twice changes it");
    }
});
