//! The Admin API's body parser (JSON, and form keys with Kong's syntax) on arbitrary bytes:
//! it must answer Ok or an error, never panic, overflow or run away.
#![no_main]

use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for content_type in ["application/x-www-form-urlencoded", "application/json"] {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let _ = sluice_admin::body::parse(&headers, data);
    }
});
