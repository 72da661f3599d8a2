//! What the log plugins copy during a request for Kong's log record: the request headers (in
//! `access`, after the auth plugins ran, as Kong's serializer sees them) and the response
//! headers (in `header_filter`). Only routes with a log plugin pay for the copies.

use async_trait::async_trait;
use http::HeaderMap;
use sluice_plugin::log_serializer;
use sluice_plugin::{Flow, Plugin, ProxyRequest, RequestCtx};

/// Where a log plugin sends each record: the one part http-log and file-log do not share.
pub trait Sink: Send + Sync + 'static {
    const NAME: &'static str;
    const PRIORITY: i64;
    /// One record (Kong's log serializer JSON), from the log phase: must not wait.
    fn ship(&self, record: Vec<u8>);
}

/// A log plugin: copies the headers in its phases and ships the record in `log`.
pub struct LogPlugin<S>(pub S);

#[async_trait]
impl<S: Sink> Plugin for LogPlugin<S> {
    type State = Captured;

    fn name(&self) -> &'static str {
        S::NAME
    }

    fn priority(&self) -> i64 {
        S::PRIORITY
    }

    async fn access(
        &self,
        request: &mut ProxyRequest,
        _ctx: &mut RequestCtx,
        state: &mut Captured,
    ) -> Flow {
        state.request(&request.parts.headers);
        Flow::Continue
    }

    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        _ctx: &mut RequestCtx,
        state: &mut Captured,
    ) {
        state.response(&response.headers);
    }

    fn log(&self, ctx: &mut RequestCtx, state: &mut Captured) {
        self.0.ship(state.record(ctx));
    }
}

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
