//! `ai-proxy-advanced` (Kong 3.13+ config shape): several ai-proxy targets behind one route,
//! balanced, retried and failed over within the client's one request, with a circuit
//! breaker per target.
//!
//! Each target is a whole ai-proxy: it is built by ai-proxy's own constructor from the
//! target's fields plus the top-level options, so it is validated exactly as ai-proxy is (an
//! error names `targets.<index>.<field>`). A request is shaped by the chosen target's
//! `access`; if the attempt fails in a way `failover_criteria` names, the proxy asks
//! [`Plugin::retry`], which picks the next target, shapes the client's original request for
//! it and hands it back. The response phases run the target that answered, so accounting
//! (the log record, the model header, cost) follows the target actually used.
//!
//! Balancer state ([`balancer::TargetState`]: connections, latency EWMA, usage, failures) lives
//! in the factory, keyed by plugin id and target config, so it survives reloads for targets
//! that did not change.

pub mod balancer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use sluice_plugin::{
    erase, Flow, Outcome, Plugin, PluginBuildError, PluginFactory, PluginHandler, PluginState,
    ProxyRequest, RequestBody, RequestCtx, StreamStart, WsDirection,
};

use balancer::{Algorithm, Balancer, Criteria, LatencyStrategy, TargetState, TokensStrategy, Used};

const PRIORITY: i64 = 770;

#[derive(Debug, Deserialize)]
struct Config {
    targets: Vec<Value>,
    /// Absent or null: every default (the schema fills null for an absent record).
    #[serde(default)]
    balancer: Option<BalancerConfig>,
    response_streaming: Option<Value>,
    max_request_body_size: Option<Value>,
    model_name_header: Option<Value>,
    llm_format: Option<Value>,
    genai_category: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct BalancerConfig {
    algorithm: Option<String>,
    retries: Option<u32>,
    failover_criteria: Option<Vec<String>>,
    connect_timeout: Option<u64>,
    read_timeout: Option<u64>,
    write_timeout: Option<u64>,
    tokens_count_strategy: Option<String>,
    latency_strategy: Option<String>,
    hash_on_header: Option<String>,
    max_fails: Option<u32>,
    fail_timeout: Option<u64>,
}

/// Long-lived: balancer state survives config swaps.
#[derive(Default)]
pub struct Factory {
    states: Arc<Mutex<HashMap<String, Arc<TargetState>>>>,
    balancers: Mutex<HashMap<String, Arc<Balancer>>>,
    /// The targets of each plugin as last built, for [`Factory::status`].
    current: Mutex<HashMap<uuid::Uuid, Vec<Arc<TargetState>>>>,
}

impl Factory {
    /// Every ai-proxy-advanced plugin's targets as this node sees them: circuit, in-flight
    /// requests, latency EWMA, tokens, requests and failures (`GET /ai/targets`).
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut plugins: Vec<(&uuid::Uuid, &Vec<Arc<TargetState>>)> = current.iter().collect();
        plugins.sort_by_key(|(id, _)| **id);
        let data: Vec<Value> = plugins
            .into_iter()
            .map(|(id, targets)| {
                serde_json::json!({
                    "plugin_id": id,
                    "targets": targets.iter().map(|t| t.status(now)).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "data": data })
    }
}

struct Advanced {
    targets: Vec<Target>,
    balancer: Arc<Balancer>,
    retries: u32,
    criteria: Criteria,
    timeout: Duration,
    hash_on_header: String,
    /// `max_request_body_size` (bytes; 0 = no limit), as ai-proxy reads it.
    max_body: usize,
}

struct Target {
    handler: Arc<dyn PluginHandler>,
    state: Arc<TargetState>,
    /// `model.name`, and `model_alias` when set: what a request's `model` may name.
    model_name: Option<String>,
    model_alias: Option<String>,
}

/// One request: the client's request as it arrived (to shape it again for another target),
/// the targets tried, and the state of the target now serving it.
#[derive(Default)]
pub struct Call {
    original: Option<(http::request::Parts, Bytes)>,
    /// Indexes into `targets`, in the order tried.
    tried: Vec<usize>,
    current: Option<(usize, PluginState)>,
    /// Candidates for this request (by model alias), in preference order for the ones the
    /// balancer does not rank itself.
    candidates: Vec<usize>,
    sent_at: Option<Instant>,
    hash_key: Option<String>,
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ai-proxy-advanced"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
        let mut config: Config = sluice_plugin::typed_config(plugin)?;
        if config.targets.is_empty() {
            return Err(PluginBuildError::at(
                plugin,
                "targets",
                "at least one target is required",
            ));
        }
        let b = &config.balancer.take().unwrap_or_default();
        let algorithm = Algorithm::parse(b.algorithm.as_deref().unwrap_or("round-robin"))
            .map_err(|e| PluginBuildError::at(plugin, "balancer.algorithm", e))?;
        if algorithm == Algorithm::ConsistentHashing
            && b.hash_on_header.as_deref().is_none_or(str::is_empty)
        {
            return Err(PluginBuildError::at(
                plugin,
                "balancer.hash_on_header",
                "required field missing (consistent-hashing hashes on this header)",
            ));
        }
        if b.max_fails.unwrap_or(0) > 0 && b.fail_timeout.unwrap_or(0) == 0 {
            return Err(PluginBuildError::at(
                plugin,
                "balancer.fail_timeout",
                "must be greater than 0 when max_fails is set",
            ));
        }
        let latency = LatencyStrategy::parse(b.latency_strategy.as_deref().unwrap_or("tpot"))
            .map_err(|e| PluginBuildError::at(plugin, "balancer.latency_strategy", e))?;
        let tokens =
            TokensStrategy::parse(b.tokens_count_strategy.as_deref().unwrap_or("total-tokens"))
                .map_err(|e| PluginBuildError::at(plugin, "balancer.tokens_count_strategy", e))?;
        let criteria = Criteria::parse(
            b.failover_criteria
                .as_deref()
                .unwrap_or(&["error".to_owned(), "timeout".to_owned()]),
        )
        .map_err(|e| PluginBuildError::at(plugin, "balancer.failover_criteria", e))?;

        let mut targets = Vec::with_capacity(config.targets.len());
        let mut weights = Vec::with_capacity(config.targets.len());
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        for (index, target) in config.targets.iter().enumerate() {
            let (handler, weight) = build_target(plugin, &config, index, target)?;
            // Same plugin, same target config: the same state across reloads.
            let key = format!("{}:{}", plugin.id, target);
            let state = states
                .entry(key)
                .or_insert_with(|| Arc::new(TargetState::new(describe(target, index))))
                .clone();
            state.set_breaker(
                b.max_fails.unwrap_or(0),
                Duration::from_millis(b.fail_timeout.unwrap_or(10_000)),
            );
            weights.push(weight);
            targets.push(Target {
                handler,
                state,
                model_name: target["model"]["name"].as_str().map(str::to_owned),
                model_alias: target["model"]["model_alias"].as_str().map(str::to_owned),
            });
        }
        drop(states);
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.id, targets.iter().map(|t| t.state.clone()).collect());
        // The balancer (round-robin position, hash ring) is per plugin and target list.
        let balancer_key = format!(
            "{}:{:?}:{latency:?}:{tokens:?}:{weights:?}",
            plugin.id, algorithm
        );
        let balancer = self
            .balancers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(balancer_key)
            .or_insert_with(|| {
                Arc::new(Balancer::measuring(
                    algorithm,
                    weights.clone(),
                    latency,
                    tokens,
                ))
            })
            .clone();
        let timeout = Duration::from_millis(
            b.connect_timeout.unwrap_or(60_000)
                + b.write_timeout.unwrap_or(60_000)
                + b.read_timeout.unwrap_or(60_000),
        );
        Ok(erase(Advanced {
            targets,
            balancer,
            retries: b.retries.unwrap_or(5),
            criteria,
            timeout,
            hash_on_header: b
                .hash_on_header
                .clone()
                .unwrap_or_else(|| "X-Kong-LLM-Request-ID".to_owned())
                .to_ascii_lowercase(),
            max_body: match config
                .max_request_body_size
                .as_ref()
                .and_then(Value::as_u64)
                .unwrap_or(1_048_576)
            {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
        }))
    }
}

/// `targets[index]` as an ai-proxy of its own: the target's fields and the top-level options.
fn build_target(
    plugin: &sluice_model::Plugin,
    config: &Config,
    index: usize,
    target: &Value,
) -> Result<(Arc<dyn PluginHandler>, u32), PluginBuildError> {
    let Some(fields) = target.as_object() else {
        return Err(PluginBuildError::at(
            plugin,
            &format!("targets.{index}"),
            "expected a record",
        ));
    };
    let weight = match fields.get("weight").and_then(Value::as_u64) {
        None => 100,
        Some(w @ 1..=65535) => w as u32,
        Some(_) => {
            return Err(PluginBuildError::at(
                plugin,
                &format!("targets.{index}.weight"),
                "value should be between 1 and 65535",
            ))
        }
    };
    let mut proxy = serde_json::Map::new();
    for key in ["route_type", "auth", "model", "logging"] {
        if let Some(value) = fields.get(key) {
            proxy.insert(key.to_owned(), value.clone());
        }
    }
    for (key, value) in [
        ("response_streaming", &config.response_streaming),
        ("max_request_body_size", &config.max_request_body_size),
        ("model_name_header", &config.model_name_header),
        ("llm_format", &config.llm_format),
        ("genai_category", &config.genai_category),
    ] {
        if let Some(value) = value {
            proxy.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(model) = proxy.get_mut("model").and_then(Value::as_object_mut) {
        model.remove("model_alias"); // ai-proxy has no alias; the balancer reads it
    }
    let entity = sluice_model::Plugin {
        name: "ai-proxy".to_owned(),
        config: Value::Object(proxy),
        ..plugin.clone()
    };
    let handler = crate::handler::build_target(&entity).map_err(|error| {
        // ai-proxy's field, under this target's index.
        let field = error
            .field
            .as_deref()
            .and_then(|f| f.strip_prefix("config."))
            .map_or(format!("targets.{index}"), |f| {
                format!("targets.{index}.{f}")
            });
        PluginBuildError::at(plugin, &field, error.source.to_string())
    })?;
    Ok((handler, weight))
}

/// How a target is named in status output and errors: its description, or provider/model.
fn describe(target: &Value, index: usize) -> String {
    if let Some(description) = target["description"].as_str().filter(|d| !d.is_empty()) {
        return description.to_owned();
    }
    format!(
        "targets[{index}] {}/{}",
        target["model"]["provider"].as_str().unwrap_or("?"),
        target["model"]["name"].as_str().unwrap_or("*")
    )
}

// === impl Advanced ===

impl Advanced {
    /// The targets a request may go to: those whose alias (or model name) it names, or all.
    fn candidates(&self, requested: Option<&str>) -> Result<Vec<usize>, String> {
        let all: Vec<usize> = (0..self.targets.len()).collect();
        let Some(requested) = requested else {
            return Ok(all);
        };
        let aliased: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| self.targets[i].model_alias.as_deref() == Some(requested))
            .collect();
        if !aliased.is_empty() {
            return Ok(aliased);
        }
        let any_alias = self.targets.iter().any(|t| t.model_alias.is_some());
        let named: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| self.targets[i].model_name.as_deref() == Some(requested))
            .collect();
        if !named.is_empty() {
            return Ok(named);
        }
        if any_alias {
            return Err(format!(
                "model '{requested}' is not one of this route's models or aliases"
            ));
        }
        Ok(all)
    }

    /// The next target for this call, skipping those tried and those whose circuit is open.
    fn pick(&self, call: &Call) -> Option<usize> {
        let now = Instant::now();
        let available: Vec<usize> = call
            .candidates
            .iter()
            .copied()
            .filter(|i| !call.tried.contains(i) && self.targets[*i].state.available(now))
            .collect();
        let states: Vec<&TargetState> = self.targets.iter().map(|t| &*t.state).collect();
        self.balancer
            .pick(&available, &states, call.hash_key.as_deref())
    }

    /// Shapes the original request for target `index` with that target's ai-proxy `access`.
    async fn shape(
        &self,
        index: usize,
        call: &mut Call,
        ctx: &mut RequestCtx,
    ) -> Result<ProxyRequest, Box<http::Response<Bytes>>> {
        let (parts, body) = call.original.clone().expect("access keeps the original");
        let target = &self.targets[index];
        let body = match &target.model_alias {
            // The request named the alias: the provider gets the target's model.
            Some(alias) => with_model(&body, alias, target.model_name.as_deref()),
            None => body,
        };
        let mut request = ProxyRequest {
            parts,
            body: RequestBody::Buffered(body),
        };
        let mut state = target.handler.new_state();
        ctx.ai = None;
        if let Flow::Respond(response) = target.handler.access(&mut request, ctx, &mut state).await
        {
            return Err(response);
        }
        if let Some(upstream) = ctx.upstream.as_mut() {
            upstream.timeout = Some(self.timeout);
        }
        target.state.started();
        call.tried.push(index);
        call.current = Some((index, state));
        call.sent_at = Some(Instant::now());
        Ok(request)
    }

    /// Books the finished attempt of the current target: latency, failure or success.
    fn book(&self, call: &mut Call, failed: bool) {
        if let Some((index, _)) = &call.current {
            let state = &self.targets[*index].state;
            let took = call.sent_at.map(|t| t.elapsed()).unwrap_or_default();
            state.finished(took, failed, Instant::now());
        }
    }

    fn all_open_error(&self, call: &Call) -> Box<http::Response<Bytes>> {
        let names: Vec<String> = call
            .candidates
            .iter()
            .map(|i| self.targets[*i].state.name.clone())
            .collect();
        let message = format!(
            "all upstream targets are unavailable (circuit open): {}",
            names.join(", ")
        );
        sluice_plugin::json_response(
            500,
            &serde_json::json!({"error": {"message": message, "type": "api_error",
                "code": "targets_unavailable"}}),
        )
    }
}

#[async_trait]
impl Plugin for Advanced {
    type State = Call;

    fn name(&self) -> &'static str {
        "ai-proxy-advanced"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    fn has_body_filter(&self) -> bool {
        true
    }

    fn openai_errors(&self) -> bool {
        true
    }

    fn balances(&self) -> bool {
        true
    }

    async fn access(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
        call: &mut Call,
    ) -> Flow {
        // The body is needed whole: for the model, and to send it again on failover. The
        // target's own size limit is checked again when it shapes the request.
        let body = match request.buffer(self.max_body).await {
            Ok(bytes) => bytes,
            Err(sluice_plugin::BodyError::TooLarge { limit }) => {
                return crate::error::RequestError::TooLarge { limit }.into()
            }
            Err(sluice_plugin::BodyError::Timeout) => {
                return crate::error::RequestError::BodyTimeout.into()
            }
            Err(_) => return crate::error::RequestError::Unreadable.into(),
        };
        let requested = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["model"].as_str().map(str::to_owned));
        call.candidates = match self.candidates(requested.as_deref()) {
            Ok(candidates) => candidates,
            Err(message) => {
                return Flow::Respond(crate::error::openai_error_response(400, &message))
            }
        };
        call.hash_key = request
            .parts
            .headers
            .get(self.hash_on_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        call.original = Some((request.parts.clone(), body));
        let Some(first) = self.pick(call) else {
            return Flow::Respond(self.all_open_error(call));
        };
        match self.shape(first, call, ctx).await {
            Ok(shaped) => {
                *request = shaped;
                Flow::Continue
            }
            Err(response) => Flow::Respond(response),
        }
    }

    async fn retry(
        &self,
        outcome: Outcome,
        ctx: &mut RequestCtx,
        call: &mut Call,
    ) -> Option<ProxyRequest> {
        let method = call.original.as_ref().map(|(p, _)| p.method.clone())?;
        let failed = self.criteria.names(outcome, &method);
        let breaker_failure = matches!(
            outcome,
            Outcome::Timeout | Outcome::ConnectFailed | Outcome::Failed | Outcome::StreamFailed
        ) || matches!(outcome, Outcome::Status(s) if s >= 500 || s == 429);
        self.book(call, breaker_failure);
        if !failed || call.tried.len() as u32 > self.retries {
            return None;
        }
        let next = self.pick(call)?;
        self.shape(next, call, ctx).await.ok()
    }

    fn stream_start(&self, read: &[u8], _ended: bool, _call: &Call) -> StreamStart {
        stream_start(read)
    }

    fn buffer_response(&self, ctx: &RequestCtx, call: &Call) -> bool {
        match &call.current {
            Some((index, state)) => self.targets[*index].handler.buffer_response(ctx, state),
            None => false,
        }
    }

    fn buffered_response(
        &self,
        response: &mut http::response::Parts,
        body: Bytes,
        ctx: &mut RequestCtx,
        call: &mut Call,
    ) -> Bytes {
        match call.current.as_mut() {
            Some((index, state)) => self.targets[*index]
                .handler
                .buffered_response(response, body, ctx, state),
            None => body,
        }
    }

    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        ctx: &mut RequestCtx,
        call: &mut Call,
    ) {
        if let Some((index, state)) = call.current.as_mut() {
            self.targets[*index]
                .handler
                .header_filter(response, ctx, state);
        }
        let tried: Vec<String> = call
            .tried
            .iter()
            .map(|i| self.targets[*i].state.name.clone())
            .collect();
        if let Ok(value) = http::HeaderValue::from_str(&tried.len().to_string()) {
            response.headers.insert(
                http::HeaderName::from_static("x-sluice-llm-attempts"),
                value,
            );
        }
    }

    fn body_filter(&self, chunk: Bytes, ctx: &mut RequestCtx, call: &mut Call) -> Bytes {
        match call.current.as_mut() {
            Some((index, state)) => self.targets[*index].handler.body_filter(chunk, ctx, state),
            None => chunk,
        }
    }

    fn body_end(&self, ctx: &mut RequestCtx, call: &mut Call) -> Option<Bytes> {
        let (index, state) = call.current.as_mut()?;
        self.targets[*index].handler.body_end(ctx, state)
    }

    fn body_error(&self, ctx: &mut RequestCtx, call: &mut Call) -> Option<Bytes> {
        let (index, state) = call.current.as_mut()?;
        self.targets[*index].handler.body_error(ctx, state)
    }

    fn reads_websocket(&self, call: &Call) -> bool {
        call.current
            .as_ref()
            .is_some_and(|(index, state)| self.targets[*index].handler.reads_websocket(state))
    }

    fn websocket_message(
        &self,
        direction: WsDirection,
        text: &str,
        ctx: &mut RequestCtx,
        call: &mut Call,
    ) {
        if let Some((index, state)) = call.current.as_mut() {
            self.targets[*index]
                .handler
                .websocket_message(direction, text, ctx, state);
        }
    }

    fn log(&self, ctx: &mut RequestCtx, call: &mut Call) {
        // The attempt that answered is booked here (a failed one was booked in `retry`).
        if let Some((index, _)) = &call.current {
            let failed = ctx.status >= 500;
            let state = &self.targets[*index].state;
            // A realtime session lasts as long as the user talks: its latency is the
            // handshake's, not the session's.
            let realtime = ctx.status == 101;
            let took = match (realtime, ctx.upstream_latency) {
                (true, Some(handshake)) => handshake,
                _ => call.sent_at.map(|t| t.elapsed()).unwrap_or_default(),
            };
            let used = ctx.ai.as_ref().map_or(Used::default(), |ai| Used {
                prompt_tokens: ai.prompt_tokens,
                completion_tokens: ai.completion_tokens,
                total_tokens: ai.total_tokens,
                cost: ai.cost,
            });
            state.answered(took, failed, used, Instant::now());
        }
        if let Some(ai) = ctx.ai.as_deref_mut() {
            // Accounting names the targets tried; the figures are the answering target's.
            ai.targets_tried = call
                .tried
                .iter()
                .map(|i| self.targets[*i].state.name.clone())
                .collect();
        }
        if let Some((index, state)) = call.current.as_mut() {
            self.targets[*index].handler.log(ctx, state);
        }
    }
}

/// `body` with its `model` replaced by `model` when it is `alias` (removed without a model).
fn with_model(body: &Bytes, alias: &str, model: Option<&str>) -> Bytes {
    let Ok(mut json) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    if json["model"].as_str() != Some(alias) {
        return body.clone();
    }
    let Some(object) = json.as_object_mut() else {
        return body.clone();
    };
    match model {
        Some(model) => {
            object.insert("model".to_owned(), Value::String(model.to_owned()));
        }
        None => {
            object.remove("model");
        }
    }
    Bytes::from(json.to_string())
}

/// Past this much read without content, the stream is sent on as it is.
const STREAM_START_LIMIT: usize = 64 * 1024;

/// Whether a streamed answer has begun (a content token, a tool call, the Responses API's
/// output, or a complete `[DONE]`), has failed (an SSE `error` event, or an `error` object),
/// or needs more reading. Only whole events are judged.
fn stream_start(read: &[u8]) -> StreamStart {
    let text = String::from_utf8_lossy(read);
    let text = text.replace("\r\n", "\n");
    let mut events: Vec<&str> = text.split("\n\n").collect();
    events.pop(); // the part after the last blank line is not a whole event yet
    for event in events {
        let mut name = None;
        let mut data = String::new();
        for line in event.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
        if name == Some("error") {
            return StreamStart::Fail;
        }
        if data.trim() == "[DONE]" {
            return StreamStart::Commit;
        }
        let Ok(json) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        if json.get("error").is_some_and(|e| !e.is_null()) {
            return StreamStart::Fail;
        }
        let content = json["choices"].as_array().is_some_and(|choices| {
            choices.iter().any(|c| {
                let delta = &c["delta"];
                delta["content"].as_str().is_some_and(|s| !s.is_empty())
                    || delta["tool_calls"].is_array()
                    || delta["refusal"].as_str().is_some_and(|s| !s.is_empty())
                    || c["text"].as_str().is_some_and(|s| !s.is_empty())
            })
        });
        let responses_output = json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("response.output_") || t == "response.completed");
        if content || responses_output {
            return StreamStart::Commit;
        }
    }
    if read.len() > STREAM_START_LIMIT {
        return StreamStart::Commit;
    }
    StreamStart::Wait
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn a_stream_begins_with_content_and_fails_with_an_error_first() {
        let role =
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        let token = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        assert_eq!(stream_start(role.as_bytes()), StreamStart::Wait);
        assert_eq!(
            stream_start(format!("{role}{token}").as_bytes()),
            StreamStart::Commit
        );
        assert_eq!(
            stream_start(&token.as_bytes()[..20]),
            StreamStart::Wait,
            "half an event"
        );
        let error = "event: error\ndata: {\"error\":{\"message\":\"x\"}}\n\n";
        assert_eq!(stream_start(error.as_bytes()), StreamStart::Fail);
        let inline = "data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
        assert_eq!(stream_start(inline.as_bytes()), StreamStart::Fail);
        assert_eq!(stream_start(b"data: [DONE]\n\n"), StreamStart::Commit);
    }
}
