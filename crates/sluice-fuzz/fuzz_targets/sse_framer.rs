//! The SSE framer on arbitrary bytes split at arbitrary points: never panics, and every byte
//! fed comes out exactly once (in events or the final flush), in order.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_ai::sse::SseParser;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let mut parser = SseParser::default();
    let mut out = Vec::new();
    let step = usize::from(split).max(1);
    for chunk in body.chunks(step) {
        for event in parser.feed(Bytes::copy_from_slice(chunk)) {
            let _ = event.data();
            let _ = event.name();
            out.extend_from_slice(&event.raw);
        }
    }
    if let Some(rest) = parser.finish() {
        out.extend_from_slice(&rest);
    }
    assert_eq!(out, body, "the framer loses or invents bytes");
});
