//! The ai-proxy handler: Kong's request flow (kong-ai.md §2) and response handling (§3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use sluice_plugin::{
    erase, typed_config, BodyError, Flow, Plugin, PluginBuildError, PluginFactory, PluginHandler,
    ProxyRequest, RequestCtx, Upstream, WsDirection,
};
use uuid::Uuid;

use crate::config::{AiProxyConfig, UpstreamUrl};
use crate::error::RequestError;
use crate::providers::{self, Driver};
use crate::route_type::{Prompt, RouteType};
use crate::sse::SseParser;
use crate::wire::{Answer, RealtimeEvent, StreamEvent, Usage};
use sluice_plugin::log_serializer::AiUsage;

/// Kong's ai-proxy handler priority.
const PRIORITY: i64 = 770;

/// Hard ceiling when `max_request_body_size` is 0 ("unlimited" in Kong, still bounded there
/// by nginx's client_max_body_size).
const UNLIMITED_BODY: usize = 64 * 1024 * 1024;

static MODEL_HEADER: HeaderName = HeaderName::from_static("x-sluice-llm-model");

pub struct Factory;

/// One configured ai-proxy instance.
pub struct AiProxy {
    plugin_id: Uuid,
    config: AiProxyConfig,
    driver: Box<dyn Driver>,
    upstream_url: Option<UpstreamUrl>,
    auth_header: Option<(HeaderName, HeaderValue)>,
}

/// Per-request state, from access to log.
#[derive(Default)]
pub struct Call {
    request_model: String,
    response_model: Option<String>,
    stream: bool,
    /// We asked the upstream for the usage chunk; the client did not, so hide it.
    strip_usage_chunk: bool,
    /// A JSON route type whose 200 body must have this key (Kong's shape check).
    expect_key: Option<&'static str>,
    status: u16,
    sent_at: Option<Instant>,
    first_token: Option<Duration>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    parser: SseParser,
    request_payload: Option<Bytes>,
    response_payload: Vec<u8>,
    translate_error: bool,
    error_buffer: Vec<u8>,
    /// `preserve`: a whole JSON answer is read as it streams by, for its usage (whatever
    /// endpoint it came from: chat, Anthropic-format messages, deferred completions).
    usage_body: Option<Vec<u8>>,
    /// A realtime session: its WebSocket messages are read for usage (`response.done`).
    realtime: bool,
}

/// The most of a `preserve` answer read for its usage; a longer one is passed on uncounted.
const USAGE_BODY_LIMIT: usize = 1 << 20;

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ai-proxy"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
        let proxy = AiProxy::new(plugin)?;
        if proxy.config.route_type == RouteType::Realtime {
            // Kong serves realtime only through ai-proxy-advanced (the seed page says so).
            return Err(PluginBuildError::at(
                plugin,
                "route_type",
                "'realtime/v1/realtime' is only available with the ai-proxy-advanced plugin",
            ));
        }
        Ok(erase(proxy))
    }
}

/// One ai-proxy-advanced target: ai-proxy's handler, realtime allowed.
pub(crate) fn build_target(
    plugin: &sluice_model::Plugin,
) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
    Ok(erase(AiProxy::new(plugin)?))
}

// === impl AiProxy ===

impl AiProxy {
    /// Builds the handler from a stored plugin: every check a config must pass to run.
    fn new(plugin: &sluice_model::Plugin) -> Result<Self, PluginBuildError> {
        let config: AiProxyConfig = typed_config(plugin)?;
        let provider = &config.model.provider;
        let driver = providers::driver(provider).ok_or_else(|| {
            let supported = providers::SUPPORTED.join(", ");
            PluginBuildError::at(
                plugin,
                "model.provider",
                format!(
                    "provider '{provider}' is not supported by Sluice yet (supported: {supported})"
                ),
            )
        })?;
        if !driver.serves(config.route_type) {
            return Err(PluginBuildError::at(
                plugin,
                "route_type",
                RequestError::UnsupportedRouteType {
                    route_type: config.route_type,
                    provider: driver.name(),
                },
            ));
        }
        let upstream_url = match config
            .model
            .options
            .as_ref()
            .and_then(|o| o.upstream_url.as_deref())
        {
            Some(url) => Some(
                UpstreamUrl::parse(url)
                    .map_err(|e| PluginBuildError::at(plugin, "model.options.upstream_url", e))?,
            ),
            None => None,
        };
        let auth_header = match config.auth.as_ref() {
            Some(auth) => match (&auth.header_name, &auth.header_value) {
                (Some(name), Some(value)) => {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        PluginBuildError::at(
                            plugin,
                            "auth.header_name",
                            format!("invalid header name {name:?}"),
                        )
                    })?;
                    // The value is a secret: the error must not echo it.
                    let mut value = HeaderValue::from_str(value).map_err(|_| {
                        PluginBuildError::at(
                            plugin,
                            "auth.header_value",
                            "not a valid header value (control characters such as CR, LF or \
                             NUL are not allowed)",
                        )
                    })?;
                    value.set_sensitive(true);
                    Some((name, value))
                }
                _ => None,
            },
            None => None,
        };
        Ok(AiProxy {
            plugin_id: plugin.id,
            config,
            driver,
            upstream_url,
            auth_header,
        })
    }
    fn allow_override(&self) -> bool {
        self.config
            .auth
            .as_ref()
            .and_then(|a| a.allow_override)
            .unwrap_or(false)
    }

    fn log_statistics(&self) -> bool {
        self.config
            .logging
            .as_ref()
            .and_then(|l| l.log_statistics)
            .unwrap_or(false)
    }

    fn log_payloads(&self) -> bool {
        self.config
            .logging
            .as_ref()
            .and_then(|l| l.log_payloads)
            .unwrap_or(false)
    }

    /// Only the methods the route type defines reach the provider with its key; the model
    /// list (`GET <route>/models`) is served on every route type.
    fn check_method(&self, request: &ProxyRequest, ctx: &RequestCtx) -> Result<(), RequestError> {
        let route_type = self.config.route_type;
        let method = &request.parts.method;
        let Some(methods) = route_type.methods() else {
            return Ok(());
        };
        let model_list = *method == http::Method::GET
            && ctx.path_suffix.trim_end_matches('/').ends_with("/models");
        if methods.contains(method) || model_list {
            return Ok(());
        }
        Err(RequestError::MethodNotAllowed {
            method: method.clone(),
            route_type,
        })
    }

    /// Points the request at the provider (or `upstream_url`) and injects the key.
    fn route_upstream(&self, request: &mut ProxyRequest, ctx: &mut RequestCtx) -> Result<(), Flow> {
        let route_type = self.config.route_type;
        let query = request.parts.uri.query().map(str::to_owned);
        let (https, host, port, mut path_and_query) = match &self.upstream_url {
            Some(url) if !url.base_only => (
                url.https,
                url.host.clone(),
                url.port,
                url.path_and_query.clone(),
            ),
            base => {
                let (https, host, port) = match base {
                    Some(url) => (url.https, url.host.as_str(), url.port),
                    None => self.driver.base(),
                };
                let suffix = ctx.path_suffix.trim_end_matches('/');
                let path = if request.parts.method == http::Method::GET
                    && (suffix.ends_with("/models") || suffix == "/models")
                {
                    // Model listing (`GET <route>/models`), served by both providers.
                    "/v1/models".to_owned()
                } else if route_type == RouteType::Preserve {
                    ctx.path_suffix.clone()
                } else {
                    // The factory refused route types the driver does not serve.
                    let Some(base) = self.driver.path(route_type) else {
                        return Err(RequestError::UnsupportedRouteType {
                            route_type,
                            provider: self.driver.name(),
                        }
                        .into());
                    };
                    // Sub-resources (`/files/{id}`, `/batches/{id}/cancel`) follow the base.
                    // A realtime session has one endpoint, whatever the client's path
                    // ends in (the SDKs append `/realtime` to their base URL).
                    let sub = if self.config.route_type.reads_json(&request.parts.method)
                        || route_type == RouteType::Realtime
                    {
                        ""
                    } else {
                        suffix
                    };
                    format!("{base}{sub}")
                };
                let path = match self
                    .config
                    .model
                    .options
                    .as_ref()
                    .and_then(|o| o.upstream_path.as_deref())
                {
                    Some(upstream_path) => upstream_path.to_owned(),
                    None => path,
                };
                let mut path_and_query = format!("/{}", path.trim_start_matches('/'));
                if let Some(query) = &query {
                    path_and_query.push('?');
                    path_and_query.push_str(query);
                }
                (https, host.to_owned(), port, path_and_query)
            }
        };

        if let Some(auth) = &self.config.auth {
            if let (Some(name), Some(value), Some(location)) =
                (&auth.param_name, &auth.param_value, &auth.param_location)
            {
                if location == "query" {
                    let (path, query) = match path_and_query.split_once('?') {
                        Some((path, query)) => (path.to_owned(), query.to_owned()),
                        None => (path_and_query.clone(), String::new()),
                    };
                    let is_ours = |kv: &&str| kv.split('=').next() == Some(name.as_str());
                    let present = query.split('&').any(|kv| is_ours(&kv));
                    if !present || !self.allow_override() {
                        // Replace, never append: with two values the upstream may read the
                        // client's first, which would defeat allow_override = false.
                        let mut pairs: Vec<&str> = query
                            .split('&')
                            .filter(|kv| !kv.is_empty() && !is_ours(kv))
                            .collect();
                        let ours = format!("{name}={}", encode(value));
                        pairs.push(&ours);
                        path_and_query = format!("{path}?{}", pairs.join("&"));
                    }
                }
            }
        }
        if let Some((name, value)) = &self.auth_header {
            if !request.parts.headers.contains_key(name) || !self.allow_override() {
                request.parts.headers.insert(name.clone(), value.clone());
            }
        }
        if route_type.needs_assistants_beta() && !request.parts.headers.contains_key("openai-beta")
        {
            request
                .parts
                .headers
                .insert("openai-beta", HeaderValue::from_static("assistants=v2"));
        }
        // We read the response (usage, shape); ask for it uncompressed.
        request.parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let default_port = if https { 443 } else { 80 };
        let host_header = if port == default_port {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        ctx.upstream = Some(Upstream {
            https,
            host,
            port,
            path_and_query,
            host_header,
            timeout: None,
        });
        Ok(())
    }

    /// Kong's request checks and transforms for JSON route types. Returns the rewritten body.
    fn transform(&self, body: &mut Value, call: &mut Call) -> Result<(), RequestError> {
        let route_type = self.config.route_type;
        let Some(object) = body.as_object_mut() else {
            return Err(RequestError::BadJson);
        };
        check_types(object)?;
        // Body validation per route type.
        let has_messages = object
            .get("messages")
            .and_then(Value::as_array)
            .is_some_and(|m| !m.is_empty());
        let has_prompt = object.get("prompt").is_some_and(Value::is_string);
        let has_input = object.get("input").is_some_and(|i| !i.is_null());
        match route_type.prompt() {
            // A completions body on a chat route, and the other way round, get Kong's
            // "not compatible" message rather than the generic one.
            Some(Prompt::Messages) if !has_messages && has_prompt => {
                return Err(RequestError::Incompatible {
                    body: RouteType::Completions,
                    route_type,
                });
            }
            Some(Prompt::Text)
                if route_type == RouteType::Completions && has_messages && !has_prompt =>
            {
                return Err(RequestError::Incompatible {
                    body: RouteType::Chat,
                    route_type,
                });
            }
            Some(Prompt::Messages) if !has_messages => return Err(RequestError::NoPrompts),
            Some(Prompt::Text) if !has_prompt => return Err(RequestError::NoPrompts),
            Some(Prompt::Input) if !has_input => return Err(RequestError::NoPrompts),
            _ => {}
        }

        // The model: from config, else from the request; a different one is refused.
        let requested = object
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        let model = match (&self.config.model.name, requested) {
            (Some(configured), Some(requested)) if *configured != requested => {
                return Err(RequestError::OwnModel {
                    configured: configured.clone(),
                });
            }
            (Some(configured), _) => configured.clone(),
            (None, Some(requested)) => requested,
            (None, None) => {
                return Err(RequestError::NoModel);
            }
        };
        object.insert("model".to_owned(), Value::from(model.clone()));
        call.request_model = model;

        // Streaming rules.
        let streams = route_type.streams();
        let asked = object
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mode = self.config.response_streaming.as_deref().unwrap_or("allow");
        let stream = streams && (asked || mode == "always");
        if stream && mode == "deny" {
            return Err(RequestError::StreamingDenied);
        }
        if stream {
            object.insert("stream".to_owned(), Value::Bool(true));
        }
        call.stream = stream;

        // Exact usage while streaming: ask for the usage chunk, hide it if the client did not.
        if stream && route_type.usage_needs_asking() {
            let options = object
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(options) = options.as_object_mut() {
                let wanted = options
                    .get("include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !wanted {
                    options.insert("include_usage".to_owned(), Value::Bool(true));
                    call.strip_usage_chunk = true;
                }
            }
        }

        // Config options fill what the request leaves out.
        if let (Some(options), Some(max_tokens_field)) =
            (&self.config.model.options, route_type.max_tokens_field())
        {
            let fill = |object: &mut Map<String, Value>, key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    object.entry(key.to_owned()).or_insert(value);
                }
            };
            fill(
                object,
                max_tokens_field,
                options.max_tokens.map(Value::from),
            );
            fill(object, "temperature", options.temperature.map(Value::from));
            fill(object, "top_p", options.top_p.map(Value::from));
        }
        object.remove("top_k"); // OpenAI-format providers refuse it (Kong deletes it too)

        // Body param auth.
        let mut body_key = None;
        if let Some(auth) = &self.config.auth {
            if let (Some(name), Some(value), Some("body")) = (
                &auth.param_name,
                &auth.param_value,
                auth.param_location.as_deref(),
            ) {
                body_key = Some(name);
                if !object.contains_key(name) || !self.allow_override() {
                    object.insert(name.clone(), Value::from(value.clone()));
                }
            }
        }

        self.driver.transform_request(route_type, object);
        // The payload log is the body as sent upstream, without the key parameter (neither
        // the gateway's nor a client's own): payload logs never carry a key.
        if self.log_payloads() {
            let mut logged = object.clone();
            if let Some(name) = body_key {
                logged.remove(name);
            }
            call.request_payload = Some(Bytes::from(Value::Object(logged).to_string()));
        }
        call.expect_key = route_type.expects();
        Ok(())
    }

    /// A realtime session's handshake: a WebSocket upgrade, for the configured model (a
    /// different `?model=` is refused as on the other route types), without extensions (the
    /// relay reads the messages, so none may be compressed).
    fn realtime_handshake(
        &self,
        request: &mut ProxyRequest,
        websocket: bool,
        call: &mut Call,
    ) -> Result<(), RequestError> {
        if !websocket {
            return Err(RequestError::NotWebSocket);
        }
        request
            .parts
            .headers
            .remove(header::SEC_WEBSOCKET_EXTENSIONS);
        let query = request.parts.uri.query().unwrap_or("");
        let requested = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == "model")
            .map(|(_, value)| value.to_owned())
            .filter(|m| !m.is_empty());
        let model = match (&self.config.model.name, requested) {
            (Some(configured), Some(requested)) if *configured != requested => {
                return Err(RequestError::OwnModel {
                    configured: configured.clone(),
                });
            }
            (Some(configured), _) => configured.clone(),
            (None, Some(requested)) => requested,
            (None, None) => return Err(RequestError::NoModel),
        };
        let mut pairs: Vec<String> = query
            .split('&')
            .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("model"))
            .map(str::to_owned)
            .collect();
        pairs.push(format!("model={}", encode(&model)));
        let path_and_query = format!("{}?{}", request.parts.uri.path(), pairs.join("&"));
        if let Ok(uri) = path_and_query.parse() {
            request.parts.uri = uri;
        }
        call.request_model = model;
        call.realtime = true;
        call.stream = true;
        Ok(())
    }

    /// A message from the upstream of a realtime session: the session's model, the first
    /// output, and each response's usage (OpenAI sends it in `response.done`). Returns
    /// whether the session's accounting changed.
    fn on_realtime_message(&self, call: &mut Call, text: &str) -> bool {
        // Most messages are deltas (audio ones large): look before parsing.
        let interesting = ["\"response.done\"", "\"session.created\"", "delta\""];
        if !interesting.iter().any(|needle| text.contains(needle)) {
            return false;
        }
        let Ok(event) = serde_json::from_str::<RealtimeEvent>(text) else {
            return false;
        };
        match event.kind.as_deref() {
            Some("session.created") => {
                if let Some(model) = event.session.and_then(|s| s.model) {
                    call.response_model = Some(model);
                }
                true
            }
            Some("response.done") => {
                let Some(usage) = event.response.and_then(|r| r.usage) else {
                    return false;
                };
                // Each response is billed on its own; a session's usage is their sum.
                let add = |field: &mut Option<u64>, value: Option<u64>| {
                    if let Some(value) = value {
                        *field = Some(field.unwrap_or(0) + value);
                    }
                };
                add(&mut call.prompt_tokens, usage.prompt());
                add(&mut call.completion_tokens, usage.completion());
                add(&mut call.total_tokens, usage.total());
                true
            }
            Some(kind) if kind.ends_with(".delta") && call.first_token.is_none() => {
                call.first_token = call.sent_at.map(|t| t.elapsed());
                false
            }
            _ => false,
        }
    }

    fn record_usage(&self, call: &mut Call, usage: &Usage) {
        if let Some(prompt) = usage.prompt() {
            call.prompt_tokens = Some(prompt);
        }
        if let Some(completion) = usage.completion() {
            call.completion_tokens = Some(completion);
        }
        if let Some(total) = usage.total() {
            call.total_tokens = Some(total);
        }
    }

    /// Puts what this request used into `ctx.ai`, for the loggers, the metrics and the
    /// token limits (all of which run after this plugin).
    fn publish(&self, ctx: &mut RequestCtx, call: &Call) {
        let prompt = call.prompt_tokens.unwrap_or(0);
        let completion = call.completion_tokens.unwrap_or(0);
        let total = call.total_tokens.unwrap_or(prompt + completion);
        let options = self.config.model.options.as_ref();
        let cost = match options.map(|o| (o.input_cost, o.output_cost)) {
            Some((Some(input), Some(output))) => {
                (prompt as f64 * input + completion as f64 * output) / 1e6
            }
            _ => 0.0,
        };
        let latency_ms = ctx.upstream_latency.map_or(0, |d| d.as_millis() as u64);
        let time_per_token = if completion > 0 {
            latency_ms as f64 / completion as f64
        } else {
            0.0
        };
        let payload = self.log_payloads().then(|| {
            (
                call.request_payload
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
                String::from_utf8_lossy(&call.response_payload).into_owned(),
            )
        });
        ctx.ai = Some(Box::new(AiUsage {
            plugin_id: self.plugin_id,
            provider: self.driver.name(),
            request_model: call.request_model.clone(),
            response_model: call
                .response_model
                .clone()
                .unwrap_or_else(|| call.request_model.clone()),
            route_type: self.config.route_type.as_str(),
            stream: call.stream,
            status: call.status,
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
            cost,
            llm_latency_ms: latency_ms,
            time_to_first_token_ms: call.first_token.map_or(0, |d| d.as_millis() as u64),
            time_per_token,
            log_statistics: self.log_statistics(),
            payload,
            request_id: ctx.request_id.clone(),
            targets_tried: Vec::new(),
        }));
    }

    /// Inspects one SSE event; returns whether to forward it.
    fn on_event(&self, call: &mut Call, name: Option<&str>, data: &str) -> bool {
        if data == "[DONE]" {
            return true;
        }
        let Ok(event) = serde_json::from_str::<StreamEvent>(data) else {
            return true; // not JSON (or not an object): pass it on untouched
        };
        if call.first_token.is_none() {
            call.first_token = call.sent_at.map(|t| t.elapsed());
        }
        if let Some(model) = event.model {
            call.response_model = Some(model);
        }
        // Responses API: usage arrives in `response.completed`.
        let kind = name.or(event.kind.as_deref());
        if kind == Some("response.completed") {
            if let Some(response) = event.response {
                if let Some(model) = response.model {
                    call.response_model = Some(model);
                }
                if let Some(usage) = &response.usage {
                    self.record_usage(call, usage);
                }
            }
            return true;
        }
        if let Some(usage) = &event.usage {
            self.record_usage(call, usage);
            let choices_empty = event.choices.as_ref().is_some_and(Vec::is_empty);
            if call.strip_usage_chunk && choices_empty {
                return false; // the extra chunk we asked for
            }
        }
        if self.log_payloads() {
            let delta = event
                .choices
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|c| c.delta.as_ref())
                .and_then(|d| d.content.as_deref());
            if let Some(text) = delta {
                call.response_payload.extend_from_slice(text.as_bytes());
            }
        }
        true
    }
}

/// The types of the fields the gateway reads: `model` a string, `stream` a boolean, and
/// `messages` an array of objects each with a string `role` (null counts as absent).
fn check_types(object: &Map<String, Value>) -> Result<(), RequestError> {
    let invalid = |field: String, expected| Err(RequestError::InvalidType { field, expected });
    let present = |key: &str| object.get(key).filter(|v| !v.is_null());
    if present("model").is_some_and(|v| !v.is_string()) {
        return invalid("model".into(), "a string");
    }
    if present("stream").is_some_and(|v| !v.is_boolean()) {
        return invalid("stream".into(), "a boolean");
    }
    if let Some(messages) = present("messages") {
        let Some(messages) = messages.as_array() else {
            return invalid("messages".into(), "an array");
        };
        for (index, message) in messages.iter().enumerate() {
            let Some(message) = message.as_object() else {
                return invalid(format!("messages[{index}]"), "an object");
            };
            if !message.get("role").is_some_and(Value::is_string) {
                return invalid(format!("messages[{index}].role"), "a string");
            }
        }
    }
    Ok(())
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl Plugin for AiProxy {
    /// The call as the access phase shaped it; `None` when access did not get that far.
    type State = Option<Call>;

    fn name(&self) -> &'static str {
        "ai-proxy"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
        state: &mut Option<Call>,
    ) -> Flow {
        if let Err(error) = self.check_method(request, ctx) {
            return error.into();
        }
        let mut call = Call {
            request_model: self.config.model.name.clone().unwrap_or_default(),
            ..Call::default()
        };
        if self.config.route_type.reads_json(&request.parts.method) {
            let limit = match self.config.max_request_body_size.unwrap_or(1_048_576) {
                0 => UNLIMITED_BODY,
                n => usize::try_from(n).unwrap_or(UNLIMITED_BODY),
            };
            let bytes = match request.buffer(limit).await {
                Ok(bytes) => bytes,
                Err(BodyError::TooLarge { limit }) => {
                    return RequestError::TooLarge { limit }.into();
                }
                Err(BodyError::Read(_)) => return RequestError::Unreadable.into(),
                Err(BodyError::Timeout) => return RequestError::BodyTimeout.into(),
            };
            let Ok(mut body) = serde_json::from_slice::<Value>(&bytes) else {
                return RequestError::BadJson.into();
            };
            if let Err(error) = self.transform(&mut body, &mut call) {
                return error.into();
            }
            request.set_body(Bytes::from(body.to_string()));
            request.parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if self.config.route_type == RouteType::Realtime {
            if let Err(error) = self.realtime_handshake(request, ctx.websocket, &mut call) {
                return error.into();
            }
        }
        if let Err(flow) = self.route_upstream(request, ctx) {
            return flow;
        }
        call.sent_at = Some(Instant::now());
        if self.config.route_type == RouteType::Preserve {
            call.usage_body = Some(Vec::new());
        }
        *state = Some(call);
        Flow::Continue
    }

    fn buffer_response(&self, _ctx: &RequestCtx, state: &Option<Call>) -> bool {
        // Non-streaming JSON answers are read whole: their shape is checked and their usage
        // counted before the status goes out. Streams are never buffered.
        state
            .as_ref()
            .is_some_and(|c| !c.stream && c.expect_key.is_some())
    }

    fn buffered_response(
        &self,
        response: &mut http::response::Parts,
        body: Bytes,
        ctx: &mut RequestCtx,
        state: &mut Option<Call>,
    ) -> Bytes {
        let Some(call) = state.as_mut() else {
            return body;
        };
        let body = self.check_buffered(response, body, call);
        self.publish(ctx, call);
        body
    }

    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        _ctx: &mut RequestCtx,
        state: &mut Option<Call>,
    ) {
        if response.status != http::StatusCode::OK {
            // Error bodies are rewritten; their length changes.
            response.headers.remove(header::CONTENT_LENGTH);
        }
        let Some(call) = state.as_mut() else {
            return;
        };
        if call.status == 0 {
            call.status = response.status.as_u16();
        }
        response.headers.remove(header::SET_COOKIE);
        // A realtime session's success is its 101.
        if call.status == 200 || (call.realtime && call.status == 101) {
            if self.config.model_name_header.unwrap_or(true) && !call.request_model.is_empty() {
                let model = call
                    .response_model
                    .as_deref()
                    .unwrap_or(&call.request_model);
                if let Ok(value) = HeaderValue::from_str(&format!("{}/{model}", self.driver.name()))
                {
                    response.headers.insert(MODEL_HEADER.clone(), value);
                }
            }
        } else {
            // An error on a streamed or pass-through route (buffered ones were translated
            // already): translate it in the body phase.
            let buffered = !call.stream && call.expect_key.is_some();
            call.translate_error = !buffered && self.driver.translates_errors();
        }
    }

    fn has_body_filter(&self) -> bool {
        true
    }

    fn openai_errors(&self) -> bool {
        true
    }

    fn body_filter(&self, chunk: Bytes, _ctx: &mut RequestCtx, state: &mut Option<Call>) -> Bytes {
        let Some(call) = state.as_mut() else {
            return chunk;
        };
        if call.translate_error {
            call.error_buffer.extend_from_slice(&chunk);
            return Bytes::new();
        }
        if !call.stream || call.status != 200 {
            if call.first_token.is_none() {
                call.first_token = call.sent_at.map(|t| t.elapsed());
            }
            if call.status == 200 {
                if let Some(body) = call.usage_body.as_mut() {
                    if body.len() + chunk.len() <= USAGE_BODY_LIMIT {
                        body.extend_from_slice(&chunk);
                    } else {
                        call.usage_body = None;
                    }
                }
            }
            return chunk;
        }
        let events = call.parser.feed(chunk);
        if events.is_empty() {
            return Bytes::new();
        }
        // Forward every event we keep; in the common case that is the whole chunk, and the
        // pieces are slices of it.
        let mut kept: Vec<Bytes> = Vec::with_capacity(events.len());
        for event in events {
            let data = event.data();
            let name = event.name().map(str::to_owned);
            if self.on_event(call, name.as_deref(), &data) {
                kept.push(event.raw);
            }
        }
        match kept.len() {
            0 => Bytes::new(),
            1 => kept.pop().unwrap_or_default(),
            _ => {
                let mut out = Vec::with_capacity(kept.iter().map(Bytes::len).sum());
                for piece in kept {
                    out.extend_from_slice(&piece);
                }
                Bytes::from(out)
            }
        }
    }

    fn body_end(&self, ctx: &mut RequestCtx, state: &mut Option<Call>) -> Option<Bytes> {
        let call = state.as_mut()?;
        let last = if call.translate_error {
            let body = std::mem::take(&mut call.error_buffer);
            let translated = self
                .driver
                .translate_error(call.status, &body)
                .unwrap_or(body);
            Some(Bytes::from(translated))
        } else {
            call.parser.finish()
        };
        if let Some(body) = call.usage_body.take() {
            if let Ok(answer) = serde_json::from_slice::<Answer>(&body) {
                if let Some(usage) = &answer.usage {
                    self.record_usage(call, usage);
                }
                if let Some(model) = answer.model {
                    call.response_model = Some(model);
                }
            }
        }
        self.publish(ctx, call);
        last
    }

    fn body_error(&self, ctx: &mut RequestCtx, state: &mut Option<Call>) -> Option<Bytes> {
        let call = state.as_mut()?;
        if !call.stream || call.status != 200 {
            return None;
        }
        // The stream broke after content reached the client: say so, in the event OpenAI's
        // SDKs raise on, rather than end it as if the answer were whole.
        self.publish(ctx, call);
        Some(Bytes::from_static(
            b"event: error\ndata: {\"error\":{\"message\":\"the upstream stream ended before \
              the answer was complete\",\"type\":\"server_error\",\"code\":\"upstream_stream_error\"}}\n\n",
        ))
    }

    fn reads_websocket(&self, state: &Option<Call>) -> bool {
        state.as_ref().is_some_and(|c| c.realtime)
    }

    fn websocket_message(
        &self,
        direction: WsDirection,
        text: &str,
        ctx: &mut RequestCtx,
        state: &mut Option<Call>,
    ) {
        if let (WsDirection::UpstreamToClient, Some(call)) = (direction, state.as_mut()) {
            if self.on_realtime_message(call, text) {
                // Kept current through the session, so the log phase (and whatever runs
                // before it, as ai-proxy-advanced's accounting) finds it.
                self.publish(ctx, call);
            }
        }
    }

    fn log(&self, ctx: &mut RequestCtx, state: &mut Option<Call>) {
        // A client that went away mid-body never reached `body_end`: publish what is known.
        if ctx.ai.is_none() {
            if let Some(call) = state.as_ref() {
                self.publish(ctx, call);
            }
        }
        let Some(ai) = ctx.ai.as_deref().filter(|ai| ai.log_statistics) else {
            return;
        };
        // One structured record per request; the provider key is never part of it.
        let mut record = json!({ "ai": ai.block() });
        if let Some(authenticated) = &ctx.consumer {
            // Kong's log serializer's `consumer`: whose key was spent.
            let consumer = &authenticated.consumer;
            record["consumer"] = json!({
                "id": consumer.id,
                "username": consumer.username,
                "custom_id": consumer.custom_id,
            });
        }
        tracing::info!(target: "sluice::ai", ai = %record, "ai-proxy request");
    }
}

impl AiProxy {
    /// A whole (non-streamed) answer: errors translated, Kong's shape check, usage read.
    fn check_buffered(
        &self,
        response: &mut http::response::Parts,
        body: Bytes,
        call: &mut Call,
    ) -> Bytes {
        call.status = response.status.as_u16();
        call.first_token = call.sent_at.map(|t| t.elapsed());
        if response.status != http::StatusCode::OK {
            // Upstream errors pass through with their status, translated if needed.
            if let Some(translated) = self.driver.translate_error(call.status, &body) {
                response.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return Bytes::from(translated);
            }
            return body;
        }
        let parsed: Option<Answer> = serde_json::from_slice(&body).ok();
        let key = call.expect_key.unwrap_or("choices");
        match parsed.filter(|answer| answer.has(key)) {
            Some(answer) => {
                if let Some(usage) = &answer.usage {
                    self.record_usage(call, usage);
                }
                if let Some(model) = answer.model {
                    call.response_model = Some(model);
                }
                if self.log_payloads() {
                    call.response_payload = body.to_vec();
                }
                body
            }
            None => {
                // Kong's transformation error, with its text.
                response.status = http::StatusCode::INTERNAL_SERVER_ERROR;
                call.status = 500;
                response.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let route_type = self.config.route_type;
                let message = format!(
                    "transformation failed from type {}://{route_type}: '{key}' not in \
                     {route_type} response",
                    self.driver.name(),
                );
                Bytes::from(json!({"error": {"message": message}}).to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests;
