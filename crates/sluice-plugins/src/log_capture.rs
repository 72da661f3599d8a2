//! What the log plugins copy during a request for Kong's log record: the request headers (in
//! `access`, after the auth plugins ran, as Kong's serializer sees them) and the response
//! headers (in `header_filter`). Only routes with a log plugin pay for the copies.

use http::HeaderMap;
use sluice_plugin::log_serializer;
use sluice_plugin::RequestCtx;

/// One request's copies.
#[derive(Default)]
pub struct Captured {
    request_headers: Option<HeaderMap>,
    response_headers: Option<HeaderMap>,
}

impl Captured {
    pub fn request(&mut self, headers: &HeaderMap) {
        self.request_headers = Some(headers.clone());
    }

    pub fn response(&mut self, headers: &HeaderMap) {
        self.response_headers = Some(headers.clone());
    }

    /// Kong's log record of the request as one JSON text.
    pub fn record(&self, ctx: &RequestCtx) -> Vec<u8> {
        let record = log_serializer::with_headers(
            ctx,
            self.request_headers.as_ref(),
            self.response_headers.as_ref(),
        );
        serde_json::to_vec(&record).unwrap_or_default()
    }
}

/// Kong's `custom_fields_by_lua` runs Lua; Sluice has none, so a config that sets it is
/// refused rather than logging without the fields.
pub fn refuse_lua(
    plugin: &sluice_model::Plugin,
    fields: &Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<(), sluice_plugin::PluginBuildError> {
    match fields {
        Some(fields) if !fields.is_empty() => Err(sluice_plugin::PluginBuildError::at(
            plugin,
            "custom_fields_by_lua",
            "Sluice does not run Lua; custom_fields_by_lua is not supported",
        )),
        _ => Ok(()),
    }
}
