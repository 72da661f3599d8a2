//! One request as a log record, in the shape of Kong's `kong.log.serialize()` (Kong 3.x
//! `kong/pdk/log.lua`): the fields log shippers and dashboards built for Kong read
//! (`request.method`, `response.status`, `latencies.*`, `consumer.username`, ...).
//!
//! `route`/`service` carry their ids (and names), not the whole entities. Request and response
//! headers and the query table are there only when the caller has them ([`with_headers`]: the
//! log plugins copy the headers in their own phases; the access log does not pay for that).
//! As in Kong, `authorization` and `proxy-authorization` are written as `REDACTED`. The record
//! is serialized straight from borrowed fields: a line costs one buffer and no intermediate
//! `serde_json::Value`.

use serde::Serialize;
use uuid::Uuid;

use crate::RequestCtx;

#[derive(Serialize)]
pub struct Record<'a> {
    pub request: RequestPart<'a>,
    /// Path and query as sent upstream (empty when the request never went upstream).
    pub upstream_uri: &'a str,
    pub response: ResponsePart<'a>,
    pub latencies: Latencies,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Consumer<'a>>,
    pub client_ip: String,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub started_at: u64,
    /// `upstream` when the upstream answered, `kong` when the gateway or a plugin did.
    pub source: &'static str,
    /// The upstream's status as a string ("" when it never answered), as Kong writes it.
    pub upstream_status: String,
    /// The AI plugin's block (Kong's `ai.proxy`), when it logs statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiBlock<'a>>,
}

/// What an AI plugin learned about one request. Set in [`RequestCtx::ai`] once the answer is
/// known; read by the loggers (`ai.proxy` in the record), the metrics and the token limits.
#[derive(Debug, Clone, Default)]
pub struct AiUsage {
    pub plugin_id: Uuid,
    /// Kong's provider name (`openai`, `xai`).
    pub provider: &'static str,
    pub request_model: String,
    /// The model the provider says answered (the requested one when it does not say).
    pub response_model: String,
    pub route_type: &'static str,
    pub stream: bool,
    /// The upstream's status.
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// From the model's `input_cost` / `output_cost` (per million tokens); 0 without them.
    pub cost: f64,
    /// Upstream time, ms.
    pub llm_latency_ms: u64,
    pub time_to_first_token_ms: u64,
    /// `llm_latency_ms / completion_tokens` (0 without completion tokens).
    pub time_per_token: f64,
    /// Kong's `logging.log_statistics`: whether logs and metrics carry these figures.
    pub log_statistics: bool,
    /// Kong's `logging.log_payloads`: the request as sent upstream and the response.
    pub payload: Option<(String, String)>,
    pub request_id: String,
    /// ai-proxy-advanced: the targets tried for this request, the one that answered last.
    pub targets_tried: Vec<String>,
}

/// Kong's `ai` block of the log record.
#[derive(Serialize)]
pub struct AiBlock<'a> {
    pub proxy: AiProxyBlock<'a>,
}

#[derive(Serialize)]
pub struct AiProxyBlock<'a> {
    pub meta: AiMeta<'a>,
    pub usage: AiUsageBlock,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<AiPayload<'a>>,
}

#[derive(Serialize)]
pub struct AiMeta<'a> {
    pub plugin_id: Uuid,
    pub provider_name: &'a str,
    pub request_model: &'a str,
    pub response_model: &'a str,
    pub llm_latency: u64,
    pub time_to_first_token: u64,
    pub route_type: &'a str,
    pub status: u16,
    pub stream: bool,
    /// Kong 3.12's `oneshot`, `stream` or `realtime`.
    pub request_mode: &'static str,
    pub request_id: &'a str,
    /// ai-proxy-advanced: how many targets were tried, and which (Sluice's addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<usize>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub targets_tried: &'a [String],
}

#[derive(Serialize)]
pub struct AiUsageBlock {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost: f64,
    pub time_per_token: f64,
}

#[derive(Serialize)]
pub struct AiPayload<'a> {
    pub request: &'a str,
    pub response: &'a str,
}

// === impl AiUsage ===

impl AiUsage {
    /// Kong 3.12's `request_mode`: a WebSocket session, a streamed answer or a whole one.
    pub fn request_mode(&self) -> &'static str {
        if self.route_type == "realtime/v1/realtime" {
            "realtime"
        } else if self.stream {
            "stream"
        } else {
            "oneshot"
        }
    }

    /// Kong's `ai.proxy` block for the log record.
    pub fn block(&self) -> AiBlock<'_> {
        AiBlock {
            proxy: AiProxyBlock {
                meta: AiMeta {
                    plugin_id: self.plugin_id,
                    provider_name: self.provider,
                    request_model: &self.request_model,
                    response_model: &self.response_model,
                    llm_latency: self.llm_latency_ms,
                    time_to_first_token: self.time_to_first_token_ms,
                    route_type: self.route_type,
                    status: self.status,
                    stream: self.stream,
                    request_mode: self.request_mode(),
                    request_id: &self.request_id,
                    attempts: (!self.targets_tried.is_empty()).then_some(self.targets_tried.len()),
                    targets_tried: &self.targets_tried,
                },
                usage: AiUsageBlock {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: self.completion_tokens,
                    total_tokens: self.total_tokens,
                    cost: self.cost,
                    time_per_token: self.time_per_token,
                },
                payload: self
                    .payload
                    .as_ref()
                    .map(|(request, response)| AiPayload { request, response }),
            },
        }
    }
}

#[derive(Serialize)]
pub struct RequestPart<'a> {
    pub id: &'a str,
    pub method: &'a str,
    /// The URI as the client sent it (path and query).
    pub uri: &'a str,
    /// Request line, headers and declared body length.
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub querystring: Option<Query<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers<'a>>,
}

#[derive(Serialize)]
pub struct ResponsePart<'a> {
    pub status: u16,
    /// Body bytes sent to the client.
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers<'a>>,
}

/// Headers as Kong's serializer writes them: lowercase names, a string for one value and an
/// array for several, credentials redacted.
pub struct Headers<'a>(pub &'a http::HeaderMap);

/// The query string as a table: `a=1&a=2&b` is `{"a": ["1", "2"], "b": true}` (Kong's
/// `kong.request.get_query()`).
pub struct Query<'a>(pub &'a str);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let redact =
                name == http::header::AUTHORIZATION || name == http::header::PROXY_AUTHORIZATION;
            let values: Vec<&str> = self
                .0
                .get_all(name)
                .iter()
                .map(|v| {
                    if redact {
                        "REDACTED"
                    } else {
                        v.to_str().unwrap_or("")
                    }
                })
                .collect();
            match values.as_slice() {
                [one] => map.serialize_entry(name.as_str(), one)?,
                many => map.serialize_entry(name.as_str(), many)?,
            }
        }
        map.end()
    }
}

impl Serialize for Query<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // Keys in first-seen order, each with its values.
        let mut pairs: Vec<(String, Vec<Option<String>>)> = Vec::new();
        for part in self.0.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k, Some(decode(v))),
                None => (part, None),
            };
            let key = decode(key);
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => pairs.push((key, vec![value])),
            }
        }
        let mut map = serializer.serialize_map(Some(pairs.len()))?;
        for (key, values) in &pairs {
            let as_json = |v: &Option<String>| match v {
                Some(s) => serde_json::Value::String(s.clone()),
                None => serde_json::Value::Bool(true),
            };
            match values.as_slice() {
                [one] => map.serialize_entry(key, &as_json(one))?,
                many => map.serialize_entry(key, &many.iter().map(as_json).collect::<Vec<_>>())?,
            }
        }
        map.end()
    }
}

/// Milliseconds, as Kong reports them: `request` from first byte to log, `proxy` waiting for
/// the upstream (-1 when the request never went upstream, as Kong), `kong` the rest.
#[derive(Serialize)]
pub struct Latencies {
    pub kong: u64,
    pub proxy: i64,
    pub request: u64,
}

#[derive(Serialize)]
pub struct Id {
    pub id: Uuid,
}

#[derive(Serialize)]
pub struct Consumer<'a> {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<&'a str>,
}

/// Percent-decoding of a query component, `+` as a space.
fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The record of a request that ran the pipeline (it had a route), with the request and
/// response headers a log plugin copied, and the query table when it has them.
pub fn with_headers<'a>(
    ctx: &'a RequestCtx,
    request_headers: Option<&'a http::HeaderMap>,
    response_headers: Option<&'a http::HeaderMap>,
) -> Record<'a> {
    let mut record = serialize(ctx);
    if let Some(headers) = request_headers {
        record.request.headers = Some(Headers(headers));
        record.request.querystring = Some(Query(ctx.uri.query().unwrap_or("")));
    }
    record.response.headers = response_headers.map(Headers);
    record
}

/// The record of a request that ran the pipeline (it had a route).
pub fn serialize(ctx: &RequestCtx) -> Record<'_> {
    let request_ms = ctx.started.elapsed().as_millis() as u64;
    let proxy = ctx.upstream_latency.map(|d| d.as_millis() as u64);
    Record {
        request: RequestPart {
            id: &ctx.request_id,
            method: ctx.method.as_str(),
            uri: ctx.uri.path_and_query().map_or("/", |p| p.as_str()),
            size: ctx.request_bytes,
            querystring: None,
            headers: None,
        },
        upstream_uri: ctx.upstream.as_ref().map_or("", |u| &u.path_and_query),
        response: ResponsePart {
            status: ctx.status,
            size: ctx.response_bytes,
            headers: None,
        },
        latencies: Latencies {
            kong: request_ms.saturating_sub(proxy.unwrap_or(0)),
            proxy: proxy.map_or(-1, |p| p as i64),
            request: request_ms,
        },
        route: Some(Id { id: ctx.route_id }),
        service: ctx.service_id.map(|id| Id { id }),
        consumer: ctx.consumer.as_ref().map(|authenticated| {
            let consumer = &authenticated.consumer;
            Consumer {
                id: consumer.id,
                username: consumer.username.as_deref(),
                custom_id: consumer.custom_id.as_deref(),
            }
        }),
        client_ip: ctx.client_addr.ip().to_string(),
        started_at: started_at_ms(ctx.started),
        source: if ctx.from_upstream {
            "upstream"
        } else {
            "kong"
        },
        upstream_status: if ctx.from_upstream {
            ctx.status.to_string()
        } else {
            String::new()
        },
        ai: ctx
            .ai
            .as_deref()
            .filter(|ai| ai.log_statistics)
            .map(AiUsage::block),
    }
}

/// The wall-clock time of `started`, in milliseconds since the Unix epoch.
pub fn started_at_ms(started: std::time::Instant) -> u64 {
    let now = std::time::SystemTime::now();
    now.checked_sub(started.elapsed())
        .unwrap_or(now)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::identity::{Authenticated, ConsumerInfo};

    fn ctx() -> RequestCtx {
        RequestCtx {
            request_id: "req-1".to_owned(),
            route_id: Uuid::nil(),
            service_id: None,
            labels: Default::default(),
            consumer_id: None,
            consumer: None,
            identities: Default::default(),
            client_addr: SocketAddr::from(([10, 0, 0, 7], 5555)),
            started: Instant::now(),
            method: http::Method::POST,
            uri: http::Uri::from_static("/chat?x=1"),
            upstream: None,
            upstream_latency: None,
            path_suffix: String::new(),
            uri_captures: Vec::new(),
            status: 401,
            response_bytes: 12,
            request_bytes: 0,
            from_upstream: false,
            log: serde_json::Map::new(),
            ai: None,
            websocket: false,
        }
    }

    #[test]
    fn a_request_that_never_went_upstream_has_proxy_latency_minus_one_and_no_consumer() {
        let ctx = ctx();
        let record = serde_json::to_value(serialize(&ctx)).unwrap();
        assert_eq!(record["request"]["method"], "POST");
        assert_eq!(record["request"]["uri"], "/chat?x=1");
        assert_eq!(record["request"]["id"], "req-1");
        assert_eq!(record["response"]["status"], 401);
        assert_eq!(record["response"]["size"], 12);
        assert_eq!(record["latencies"]["proxy"], -1);
        assert_eq!(record["client_ip"], "10.0.0.7");
        assert_eq!(record["upstream_uri"], "");
        assert!(record.get("consumer").is_none());
        assert!(record.get("service").is_none());
    }

    #[test]
    fn the_authenticated_consumer_and_the_upstream_wait_are_in_the_record() {
        let mut ctx = ctx();
        ctx.upstream_latency = Some(Duration::from_millis(0));
        ctx.consumer = Some(Authenticated {
            consumer: Arc::new(ConsumerInfo {
                id: Uuid::from_u128(7),
                username: Some("team-a".to_owned()),
                custom_id: None,
                groups: Vec::new(),
                id_header: http::HeaderValue::from_static("x"),
                username_header: None,
                custom_id_header: None,
                groups_header: None,
            }),
            credential: true,
        });
        let record = serde_json::to_value(serialize(&ctx)).unwrap();
        assert_eq!(record["consumer"]["username"], "team-a");
        assert_eq!(record["consumer"]["id"], Uuid::from_u128(7).to_string());
        assert!(record["consumer"].get("custom_id").is_none());
        assert_eq!(record["latencies"]["proxy"], 0);
    }
}
