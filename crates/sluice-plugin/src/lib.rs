//! The plugin contract of the data plane.
//!
//! A plugin is a [`PluginHandler`] with one method per Kong phase, each a no-op by default:
//! `access` (may rewrite the request or answer it), `header_filter`, `body_filter` (chunk by
//! chunk, never the whole body unless the plugin buffers on purpose), and `log` (after the
//! response, off the response path). Handlers are built from a stored plugin entity by a
//! [`PluginFactory`] when a snapshot compiles, so the config is parsed into typed structs once,
//! not per request.
//!
//! [`scope::select`] implements Kong's precedence for which configured instance applies.

pub mod identity;
pub mod log_serializer;
pub mod scope;

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use uuid::Uuid;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body as it travels through the proxy.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// One plugin's per-request state, type-erased so that a route's chain of different plugins
/// fits in one `Vec`. Only the [`erase`] adapter looks inside: a plugin sees its own
/// [`Plugin::State`], never this.
pub struct PluginState(Box<dyn Any + Send>);

/// Where the request goes upstream. Built from the route and service; plugins may change it
/// in `access` (ai-proxy points it at the provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query as sent upstream.
    pub path_and_query: String,
    /// The Host header to send (the service host, or the client's with `preserve_host`).
    pub host_header: String,
    /// Bound on the time to response headers, when a plugin sets one (ai-proxy-advanced's
    /// balancer timeouts); the service's timeouts otherwise.
    pub timeout: Option<Duration>,
}

/// Which way a WebSocket message travels through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsDirection {
    ClientToUpstream,
    UpstreamToClient,
}

/// How one upstream attempt ended, for a plugin that balances over several upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived with this status.
    Status(u16),
    /// No response headers in time.
    Timeout,
    /// The connection could not be made: the request was not sent.
    ConnectFailed,
    /// The request was sent and no valid response came back.
    Failed,
    /// A streamed answer failed before anything reached the client (cut, an error event, or
    /// the end before any content), as the balancing plugin's [`Plugin::stream_start`] judged.
    StreamFailed,
}

/// What the start of a streamed answer shows, to a plugin that balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// Not decided yet: read more before anything goes to the client.
    Wait,
    /// Content has begun: send what was read, then the rest.
    Commit,
    /// The stream failed before any content: try another upstream.
    Fail,
}

/// How logs and metrics name a route and its service (Kong's exporter labels): the route's
/// name or id, the service's name or host ("" without a service). Built once per route when
/// a config compiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLabels {
    pub route: String,
    pub service: String,
}

/// What every plugin of one request sees and shares.
pub struct RequestCtx {
    pub request_id: String,
    pub route_id: Uuid,
    pub service_id: Option<Uuid>,
    pub labels: Arc<RouteLabels>,
    /// The authenticated consumer's id (set with [`identity::authenticate`]).
    pub consumer_id: Option<Uuid>,
    /// Who the request was authenticated as, once an auth plugin ran.
    pub consumer: Option<identity::Authenticated>,
    /// The consumers and credentials of the config version serving this request.
    pub identities: Arc<identity::Identities>,
    pub client_addr: SocketAddr,
    pub started: Instant,
    /// The client's request line, as received (for the log phase).
    pub method: http::Method,
    pub uri: http::Uri,
    /// `None` until the route's service or a plugin (ai-proxy) names one; a request that
    /// reaches the upstream phase without one gets Kong's 503.
    pub upstream: Option<Upstream>,
    /// Time from sending upstream to its response headers; set by the proxy.
    pub upstream_latency: Option<Duration>,
    /// The request path after the part the route matched (with `strip_path`), e.g. `/file-1`
    /// for `/openai/files/file-1` on a route `/openai/files`; the whole path otherwise.
    pub path_suffix: String,
    /// The route's regex path captures: numbered ones as `"0"`, `"1"`, ..., then named ones
    /// (Kong's `uri_captures`). Empty for prefix paths.
    pub uri_captures: Vec<(String, String)>,
    /// The status sent to the client; set before `log`.
    pub status: u16,
    /// Body bytes sent to the client; final when `log` runs.
    pub response_bytes: u64,
    /// The request's size as received: request line, headers, and the body's declared
    /// length (a chunked body's size is not known up front and is left out).
    pub request_bytes: u64,
    /// The response came from the upstream (Kong's `source: service`), not from the gateway
    /// or a plugin.
    pub from_upstream: bool,
    /// Structured fields the log phase emits (e.g. `ai.proxy.usage`).
    pub log: serde_json::Map<String, serde_json::Value>,
    /// What an AI plugin learned about this request (model, tokens, cost, latency), set as
    /// soon as it is known (the end of the body at the latest), for the plugins that log,
    /// meter and limit it.
    pub ai: Option<Box<log_serializer::AiUsage>>,
    /// The client opened a WebSocket handshake (`Upgrade: websocket`). The request's
    /// `Upgrade` and `Connection` headers are hop-by-hop, so they are not in the plugins'
    /// view of it; the proxy sends them upstream itself.
    pub websocket: bool,
}

/// The request body: still streaming from the client, or read whole by a plugin.
pub enum RequestBody {
    Stream(Body),
    Buffered(Bytes),
}

/// The client request as the access phase sees it.
pub struct ProxyRequest {
    pub parts: http::request::Parts,
    pub body: RequestBody,
}

/// The client sent nothing for the proxy's `client_body_timeout` while its request body was
/// incomplete. It travels as the body stream's error, so whoever reads the body (a plugin
/// buffering it, or the upstream request) can tell it from other failures and answer 408.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?}")]
pub struct ClientBodyTimeout(pub Duration);

/// Whether `error` (or one of its causes) is a [`ClientBodyTimeout`].
pub fn is_client_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<ClientBodyTimeout>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The client stopped sending its body ([`ClientBodyTimeout`]).
    #[error("the client stopped sending its request body")]
    Timeout,
    #[error("reading the request body failed: {0}")]
    Read(BoxError),
}

/// The outcome of `access`.
pub enum Flow {
    Continue,
    /// Answer the client now; later plugins and the upstream are skipped. Boxed: a response
    /// head is large and `Flow` travels through every plugin's return value.
    Respond(Box<http::Response<Bytes>>),
}

/// A stored plugin config could not become a handler. The same build runs when the config
/// is written (through [`PluginFactory::check`]), so on a data plane this only happens to a
/// config written by an older or different control plane.
#[derive(Debug, thiserror::Error)]
#[error("plugin {name} ({id}): {}{source}", field_prefix(.field))]
pub struct PluginBuildError {
    pub name: String,
    pub id: Uuid,
    /// The config field at fault, dotted and relative to the plugin entity
    /// (`config.auth.header_name`); `None` for the config as a whole.
    pub field: Option<String>,
    #[source]
    pub source: BoxError,
}

fn field_prefix(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

// === impl PluginBuildError ===

impl PluginBuildError {
    /// An error about the config as a whole.
    pub fn new(plugin: &sluice_model::Plugin, source: impl Into<BoxError>) -> Self {
        Self {
            name: plugin.name.clone(),
            id: plugin.id,
            field: None,
            source: source.into(),
        }
    }

    /// An error about one field of `config` (`field` is relative to it: `auth.header_name`;
    /// empty for `config` itself).
    pub fn at(plugin: &sluice_model::Plugin, field: &str, source: impl Into<BoxError>) -> Self {
        let field = if field.is_empty() {
            "config".to_owned()
        } else {
            format!("config.{field}")
        };
        Self {
            field: Some(field),
            ..Self::new(plugin, source)
        }
    }

    /// The message without the plugin's name and id (for a field error in a schema violation).
    pub fn reason(&self) -> String {
        self.source.to_string()
    }
}

/// A plugin's stored config as the plugin's own typed struct (read in place, not cloned).
pub fn typed_config<T: serde::de::DeserializeOwned>(
    plugin: &sluice_model::Plugin,
) -> Result<T, PluginBuildError> {
    T::deserialize(&plugin.config).map_err(|e| PluginBuildError::at(plugin, "", e))
}

/// One plugin instance, built from its config. Phases default to no-ops. Each phase's
/// contract is on its method; per-request state is the plugin's own [`Plugin::State`],
/// created fresh for every request that runs the plugin (Pingora's `CTX`).
///
/// The proxy holds plugins as [`PluginHandler`] objects; [`erase`] turns one into the other.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// What this plugin carries from one phase of a request to the next.
    type State: Default + Send + 'static;

    fn name(&self) -> &'static str;

    /// Run order: highest first, as Kong's handler `PRIORITY`.
    fn priority(&self) -> i64;

    /// Before the upstream is contacted. May read or replace the body, change headers and
    /// the upstream, or answer the client with [`Flow::Respond`].
    async fn access(
        &self,
        _request: &mut ProxyRequest,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> Flow {
        Flow::Continue
    }

    /// Whether this request's upstream response must be read whole before the header phase
    /// (decided after `access`, e.g. a non-streaming LLM response whose shape is checked).
    /// Streaming responses should say no: nothing is buffered unless a plugin asks.
    fn buffer_response(&self, _ctx: &RequestCtx, _state: &Self::State) -> bool {
        false
    }

    /// With a buffered response: sees (and may replace) the whole body and may change the
    /// status and headers, before `header_filter`. `body_filter` is not called afterwards.
    fn buffered_response(
        &self,
        _response: &mut http::response::Parts,
        body: Bytes,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> Bytes {
        body
    }

    /// After the upstream's response headers arrive, before they go to the client.
    fn header_filter(
        &self,
        _response: &mut http::response::Parts,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) {
    }

    /// Whether `body_filter` does anything; when no plugin of a request says yes, the body is
    /// passed through without the per-chunk hook.
    fn has_body_filter(&self) -> bool {
        false
    }

    /// An upstream attempt ended (the proxy calls this for every plugin of the chain that
    /// balances, after each attempt). To try again, the plugin re-points `ctx.upstream` and
    /// returns the request to send; `None` keeps the outcome. A retried response's body is
    /// dropped unread.
    async fn retry(
        &self,
        _outcome: Outcome,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> Option<ProxyRequest> {
        None
    }

    /// Whether this plugin balances requests over several upstreams (its `retry` is called).
    fn balances(&self) -> bool {
        false
    }

    /// For a plugin that balances: the start of a streamed (SSE) answer, everything read so
    /// far. The proxy holds the body back while this says `Wait`; `ended` is set once the
    /// upstream body ended (or failed).
    fn stream_start(&self, _read: &[u8], _ended: bool, _state: &Self::State) -> StreamStart {
        StreamStart::Commit
    }

    /// Whether the gateway's own errors on this plugin's routes (upstream refused or timed
    /// out, no upstream) use OpenAI's `{"error": {"message", "type", "code"}}` shape instead
    /// of Kong's `{"message"}`: the clients of an AI route are OpenAI SDKs.
    fn openai_errors(&self) -> bool {
        false
    }

    /// Each response body chunk, in order, as it arrives. Returns what to send instead (may be
    /// empty to hold data back).
    fn body_filter(&self, chunk: Bytes, _ctx: &mut RequestCtx, _state: &mut Self::State) -> Bytes {
        chunk
    }

    /// The response body ended; may emit a last chunk.
    fn body_end(&self, _ctx: &mut RequestCtx, _state: &mut Self::State) -> Option<Bytes> {
        None
    }

    /// The upstream body failed midway (cut, or the read timeout). A plugin may return a last
    /// chunk that tells the client so in its own terms (an SSE `error` event); the body then
    /// ends there instead of being cut.
    fn body_error(&self, _ctx: &mut RequestCtx, _state: &mut Self::State) -> Option<Bytes> {
        None
    }

    /// Whether this request's WebSocket (after a 101) must be relayed message by message so
    /// that [`Plugin::websocket_message`] sees it. When no plugin of the request says yes,
    /// the two upgraded connections are spliced byte for byte.
    fn reads_websocket(&self, _state: &Self::State) -> bool {
        false
    }

    /// One text message of an upgraded WebSocket connection, in either direction, before it
    /// is passed on unchanged. Must not block: it runs on the relay, between two messages.
    fn websocket_message(
        &self,
        _direction: WsDirection,
        _text: &str,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) {
    }

    /// After the response was sent (or the client went away). Must not block. Runs in
    /// priority order like every phase; what a plugin leaves in `ctx` (ai-proxy's
    /// [`RequestCtx::ai`]) is there for the lower-priority loggers and meters.
    fn log(&self, _ctx: &mut RequestCtx, _state: &mut Self::State) {}
}

/// A [`Plugin`] with its state type erased: what a compiled route's chain holds. The proxy
/// creates each request's state with [`PluginHandler::new_state`] and hands the same value
/// back to every phase of that request.
#[async_trait]
pub trait PluginHandler: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn priority(&self) -> i64;
    fn has_body_filter(&self) -> bool;
    fn openai_errors(&self) -> bool;
    fn balances(&self) -> bool;
    fn stream_start(&self, read: &[u8], ended: bool, state: &PluginState) -> StreamStart;
    async fn retry(
        &self,
        outcome: Outcome,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) -> Option<ProxyRequest>;
    fn new_state(&self) -> PluginState;
    async fn access(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) -> Flow;
    fn buffer_response(&self, ctx: &RequestCtx, state: &PluginState) -> bool;
    fn buffered_response(
        &self,
        response: &mut http::response::Parts,
        body: Bytes,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) -> Bytes;
    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    );
    fn body_filter(&self, chunk: Bytes, ctx: &mut RequestCtx, state: &mut PluginState) -> Bytes;
    fn body_end(&self, ctx: &mut RequestCtx, state: &mut PluginState) -> Option<Bytes>;
    fn body_error(&self, ctx: &mut RequestCtx, state: &mut PluginState) -> Option<Bytes>;
    fn reads_websocket(&self, state: &PluginState) -> bool;
    fn websocket_message(
        &self,
        direction: WsDirection,
        text: &str,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    );
    fn log(&self, ctx: &mut RequestCtx, state: &mut PluginState);
}

/// Wraps a typed plugin for a route's chain.
pub fn erase<P: Plugin>(plugin: P) -> Arc<dyn PluginHandler> {
    Arc::new(Erased(plugin))
}

struct Erased<P>(P);

// === impl PluginState ===

impl PluginState {
    /// The state as the plugin that created it. A state only ever reaches the handler whose
    /// `new_state` made it (the proxy zips a chain with its states), so a mismatch is a bug
    /// in the proxy, not something a request can cause.
    fn typed<T: 'static>(&self) -> &T {
        self.0
            .downcast_ref()
            .expect("a plugin's state is passed only to the plugin that created it")
    }

    fn typed_mut<T: 'static>(&mut self) -> &mut T {
        self.0
            .downcast_mut()
            .expect("a plugin's state is passed only to the plugin that created it")
    }
}

// === impl Erased ===

#[async_trait]
impl<P: Plugin> PluginHandler for Erased<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn priority(&self) -> i64 {
        self.0.priority()
    }

    fn has_body_filter(&self) -> bool {
        self.0.has_body_filter()
    }

    fn openai_errors(&self) -> bool {
        self.0.openai_errors()
    }

    fn balances(&self) -> bool {
        self.0.balances()
    }

    fn stream_start(&self, read: &[u8], ended: bool, state: &PluginState) -> StreamStart {
        self.0.stream_start(read, ended, state.typed())
    }

    async fn retry(
        &self,
        outcome: Outcome,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) -> Option<ProxyRequest> {
        self.0.retry(outcome, ctx, state.typed_mut()).await
    }

    fn new_state(&self) -> PluginState {
        PluginState(Box::new(P::State::default()))
    }

    async fn access(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) -> Flow {
        self.0.access(request, ctx, state.typed_mut()).await
    }

    fn buffer_response(&self, ctx: &RequestCtx, state: &PluginState) -> bool {
        self.0.buffer_response(ctx, state.typed())
    }

    fn buffered_response(
        &self,
        response: &mut http::response::Parts,
        body: Bytes,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) -> Bytes {
        self.0
            .buffered_response(response, body, ctx, state.typed_mut())
    }

    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) {
        self.0.header_filter(response, ctx, state.typed_mut());
    }

    fn body_filter(&self, chunk: Bytes, ctx: &mut RequestCtx, state: &mut PluginState) -> Bytes {
        self.0.body_filter(chunk, ctx, state.typed_mut())
    }

    fn body_end(&self, ctx: &mut RequestCtx, state: &mut PluginState) -> Option<Bytes> {
        self.0.body_end(ctx, state.typed_mut())
    }

    fn body_error(&self, ctx: &mut RequestCtx, state: &mut PluginState) -> Option<Bytes> {
        self.0.body_error(ctx, state.typed_mut())
    }

    fn reads_websocket(&self, state: &PluginState) -> bool {
        self.0.reads_websocket(state.typed())
    }

    fn websocket_message(
        &self,
        direction: WsDirection,
        text: &str,
        ctx: &mut RequestCtx,
        state: &mut PluginState,
    ) {
        self.0
            .websocket_message(direction, text, ctx, state.typed_mut());
    }

    fn log(&self, ctx: &mut RequestCtx, state: &mut PluginState) {
        self.0.log(ctx, state.typed_mut());
    }
}

/// Builds handlers of one plugin name. Long-lived: it may keep state that must survive config
/// swaps (rate-limiting counters).
///
/// `build` must have no side effect beyond returning the handler: the Admin API, sync,
/// DB-less loads and `sluice validate` call it (through [`PluginFactory::check`]) on every
/// plugin written, so that a config that is accepted is a config that compiles.
pub trait PluginFactory: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError>;

    /// Whether `plugin` would build; the write-time check.
    fn check(&self, plugin: &sluice_model::Plugin) -> Result<(), PluginBuildError> {
        self.build(plugin).map(drop)
    }
}

/// The plugins this data plane can run.
#[derive(Default)]
pub struct Registry {
    factories: HashMap<&'static str, Arc<dyn PluginFactory>>,
}

// === impl Registry ===

impl Registry {
    pub fn register(&mut self, factory: Arc<dyn PluginFactory>) {
        self.factories.insert(factory.name(), factory);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn PluginFactory>> {
        self.factories.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}

// === impl ProxyRequest ===

impl ProxyRequest {
    /// Reads the whole body (at most `limit` bytes) and keeps it for the upstream request.
    ///
    /// Returns a boxed `Send` future on purpose: proving `Send` for the body-collecting future
    /// inside `#[async_trait]` methods trips a higher-ranked lifetime limitation of rustc;
    /// boxing it here settles `Send` once, in a non-generic context.
    pub fn buffer(
        &mut self,
        limit: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, BodyError>> + Send + '_>>
    {
        Box::pin(async move {
            if let RequestBody::Buffered(bytes) = &self.body {
                return Ok(bytes.clone());
            }
            if let Some(length) = self
                .parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
            {
                if length > limit {
                    return Err(BodyError::TooLarge { limit });
                }
            }
            let body = std::mem::replace(&mut self.body, RequestBody::Buffered(Bytes::new()));
            let RequestBody::Stream(mut body) = body else {
                unreachable!("checked above")
            };
            let mut collected = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| {
                    if is_client_body_timeout(&*error) {
                        BodyError::Timeout
                    } else {
                        BodyError::Read(error)
                    }
                })?;
                if let Ok(data) = frame.into_data() {
                    if collected.len() + data.len() > limit {
                        return Err(BodyError::TooLarge { limit });
                    }
                    collected.extend_from_slice(&data);
                }
            }
            let bytes = Bytes::from(collected);
            self.body = RequestBody::Buffered(bytes.clone());
            Ok(bytes)
        })
    }

    /// Replaces the body (a plugin rewrote it); Content-Length follows.
    pub fn set_body(&mut self, bytes: Bytes) {
        self.parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(bytes.len()),
        );
        self.parts.headers.remove(http::header::TRANSFER_ENCODING);
        self.body = RequestBody::Buffered(bytes);
    }
}

/// A JSON response, for plugins that answer the client themselves.
pub fn json_response(status: u16, body: &serde_json::Value) -> Box<http::Response<Bytes>> {
    let mut response = http::Response::new(Bytes::from(body.to_string()));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Box::new(response)
}
