//! The decK file reader (YAML with positions, `${{ env }}` templates) on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_model::declarative::{self, SourceFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = [SourceFile {
        name: "kong.yaml".to_owned(),
        text: text.to_owned(),
    }];
    let env = |name: &str| (name == "DECK_KEY").then(|| "value".to_owned());
    let _ = declarative::parse(&files, &env);
});
