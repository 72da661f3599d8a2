//! The request pipeline shared by every endpoint: record, wait, authenticate, inject faults,
//! then hand over to [`wire::route`]. Also the per-request knobs and the two error shapes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::sse::Pacing;
use crate::tokens::{Reply, DEFAULT_REPLY};
use crate::{multipart, realtime, wire, Flavor, MockConfig, RecordedRequest, RequestLog, BAD_KEY};

/// OpenAI's answer to a body that is not a JSON object.
const BAD_JSON: &str = "We could not parse the JSON body of your request. (HINT: This likely \
means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but \
what was sent was not valid JSON.)";

/// State shared by all requests of one mock.
pub(crate) struct Shared {
    config: MockConfig,
    log: Option<RequestLog>,
    store: Mutex<Store>,
}

/// Objects created through the API, so that a `GET` list shows what a `POST` made.
#[derive(Default)]
pub(crate) struct Store {
    pub(crate) files: Vec<Value>,
    pub(crate) batches: Vec<Value>,
    pub(crate) assistants: Vec<Value>,
}

/// The per-request knobs, read from `x-mock-*` headers over the server's config.
#[derive(Clone, Debug)]
pub(crate) struct Knobs {
    pub(crate) latency: Duration,
    pub(crate) pacing: Pacing,
    pub(crate) status: Option<StatusCode>,
    pub(crate) flat_error: bool,
    pub(crate) bad_shape: bool,
    pub(crate) reply: Option<String>,
}

/// Everything a handler needs about the request being answered.
pub(crate) struct Ctx<'a> {
    pub(crate) flavor: Flavor,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a Bytes,
    pub(crate) knobs: Knobs,
    shared: &'a Shared,
}

/// A handler's early exit: an error answer already in the flavor's shape.
///
/// Boxed because a `Response` is too big to be a cheap `Err` (clippy's `result_large_err`).
pub(crate) struct Rejection(pub(crate) Box<Response>);

/// What a handler returns; both sides are complete answers.
pub(crate) type Answer = Result<Response, Rejection>;

/// A request body read as form fields, from `multipart/form-data` or a JSON object.
#[derive(Debug, Default)]
pub(crate) struct Form {
    fields: Map<String, Value>,
    pub(crate) files: Vec<FormFile>,
}

/// A file part of a multipart form; only its size is kept.
#[derive(Debug)]
pub(crate) struct FormFile {
    pub(crate) filename: String,
    pub(crate) bytes: usize,
}

/// The single axum handler: every request goes through here.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if let Some(control_path) = path.strip_prefix("/__mock/") {
        return control(&shared, &method, control_path);
    }
    if let Some(log) = &shared.log {
        log.push(record(&method, &uri, &headers, &body));
    }
    let mut knobs = Knobs::from_headers(&headers, &shared.config);
    let failing = shared
        .config
        .fail_status
        .load(std::sync::atomic::Ordering::SeqCst);
    if failing != 0 {
        knobs.status = StatusCode::from_u16(failing).ok();
    }
    if !knobs.latency.is_zero() {
        tokio::time::sleep(knobs.latency).await;
    }
    let ctx = Ctx {
        flavor: shared.config.flavor,
        method: &method,
        path,
        headers: &headers,
        body: &body,
        knobs,
        shared: shared.as_ref(),
    };
    let answered = if path == "/v1/realtime" {
        ctx.gate()
            .map(|()| realtime::answer(&ctx, upgrade.ok(), uri.query().unwrap_or("")))
    } else {
        answer(&ctx)
    };
    let mut response = match answered {
        Ok(response) => response,
        Err(Rejection(response)) => *response,
    };
    if let Some(name) = shared
        .config
        .name
        .as_deref()
        .and_then(|n| HeaderValue::from_str(n).ok())
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-mock-name"), name);
    }
    // Like OpenAI's `x-request-id`, so a test can correlate a gateway log line with the mock.
    if let Ok(id) = HeaderValue::from_str(&new_id("req_")) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), id);
    }
    response
}

/// Seconds since the epoch, for `created` fields.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

/// A fresh id in the provider's style, e.g. `chatcmpl-<32 hex>`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// `200 application/json`.
pub(crate) fn json_ok(body: Value) -> Response {
    Json(body).into_response()
}

/// Auth, then injected faults, then the endpoint.
fn answer(ctx: &Ctx<'_>) -> Answer {
    if !ctx.path.starts_with("/v1/") {
        return Err(ctx.not_found());
    }
    ctx.gate()?;
    wire::route(ctx)
}

fn record(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> RecordedRequest {
    RecordedRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body: body.clone(),
    }
}

/// `/__mock/*`: health and the request log, for tests that run the binary out of process.
fn control(shared: &Shared, method: &Method, path: &str) -> Response {
    match (method, path) {
        (&Method::GET, "health") => "ok".into_response(),
        (&Method::GET, "requests") => match &shared.log {
            Some(log) => {
                let requests: Vec<Value> = log.snapshot().iter().map(recorded_json).collect();
                json_ok(Value::Array(requests))
            }
            None => recording_off(),
        },
        (&Method::DELETE, "requests") => match &shared.log {
            Some(log) => {
                log.clear();
                StatusCode::NO_CONTENT.into_response()
            }
            None => recording_off(),
        },
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown mock control endpoint"})),
        )
            .into_response(),
    }
}

fn recording_off() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "request recording is off; start the mock with --record"})),
    )
        .into_response()
}

fn recorded_json(request: &RecordedRequest) -> Value {
    let headers: Vec<Value> = request
        .headers
        .iter()
        .map(|(name, value)| json!([name, value]))
        .collect();
    json!({
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&request.body),
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header(headers, name)?.parse().ok()
}

fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    header(headers, name).is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
}

/// xAI's `code` for an HTTP status: the gRPC status descriptions its API reports.
fn xai_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        403 => "The caller does not have permission to execute the specified operation",
        404 => "Some requested entity was not found",
        409 => "The operation was aborted",
        429 => "Some resource has been exhausted",
        501 => "Operation is not implemented or not supported",
        503 => "The service is currently unavailable",
        504 => "Deadline expired before operation could complete",
        code if code >= 500 => "Internal error",
        // xAI reports a wrong API key as an invalid argument too.
        _ => "Client specified an invalid argument",
    }
}

/// `sk-abcdef` → `sk***ef`, the way providers echo a wrong key.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}***{tail}")
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(config: MockConfig, log: Option<RequestLog>) -> Self {
        Self {
            config,
            log,
            store: Mutex::new(Store::default()),
        }
    }
}

// === impl Knobs ===

impl Knobs {
    fn from_headers(headers: &HeaderMap, config: &MockConfig) -> Self {
        let millis = |name: &str| header_u64(headers, name).map(Duration::from_millis);
        let fault = config
            .stream_fault
            .load(std::sync::atomic::Ordering::SeqCst);
        Self {
            latency: millis("x-mock-latency-ms").unwrap_or(config.latency),
            pacing: Pacing {
                gap: millis("x-mock-chunk-gap-ms").unwrap_or(config.chunk_gap),
                hold: millis("x-mock-hold-ms").unwrap_or_default(),
                cut_after: header_u64(headers, "x-mock-cut-after")
                    .map(|count| usize::try_from(count).unwrap_or(usize::MAX))
                    .or((fault == crate::STREAM_CUT).then_some(0)),
                error_first: fault == crate::STREAM_ERROR_FIRST,
            },
            status: header_u64(headers, "x-mock-status")
                .and_then(|code| u16::try_from(code).ok())
                .and_then(|code| StatusCode::from_u16(code).ok())
                .filter(|status| status.is_client_error() || status.is_server_error()),
            flat_error: header_flag(headers, "x-mock-flat-error"),
            bad_shape: header_flag(headers, "x-mock-bad-shape"),
            reply: header(headers, "x-mock-reply").map(str::to_owned),
        }
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// `openai` or `xai`, by flavor: default models and the like.
    pub(crate) fn pick(&self, openai: &'static str, xai: &'static str) -> &'static str {
        match self.flavor {
            Flavor::OpenAi => openai,
            Flavor::Xai => xai,
        }
    }

    /// The generated text for this request, cut to `max_tokens` words.
    pub(crate) fn reply(&self, max_tokens: Option<u64>) -> Reply {
        Reply::new(
            self.knobs.reply.as_deref().unwrap_or(DEFAULT_REPLY),
            max_tokens,
        )
    }

    /// Objects created through the API. Never held across an await (handlers are sync).
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.shared
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The body as a JSON object, or OpenAI's "could not parse" 400.
    pub(crate) fn json(&self) -> Result<Value, Rejection> {
        match serde_json::from_slice::<Value>(self.body) {
            Ok(value @ Value::Object(_)) => Ok(value),
            _ => Err(self.invalid(BAD_JSON, None)),
        }
    }

    /// The body as form fields: multipart when the content type says so, else a JSON object
    /// (OpenAI accepts both on several upload endpoints), else nothing.
    pub(crate) fn form(&self) -> Result<Form, Rejection> {
        let content_type = header(self.headers, CONTENT_TYPE.as_str()).unwrap_or("");
        if multipart::boundary(content_type).is_none() {
            if self.body.is_empty() {
                return Ok(Form::default());
            }
            return match self.json()? {
                Value::Object(fields) => Ok(Form {
                    fields,
                    files: Vec::new(),
                }),
                _ => Ok(Form::default()),
            };
        }
        let parts = multipart::parse(content_type, self.body)
            .ok_or_else(|| self.invalid("Could not parse the multipart form body.", None))?;
        let mut form = Form::default();
        for part in &parts {
            match &part.filename {
                Some(filename) => form.files.push(FormFile {
                    filename: filename.clone(),
                    bytes: part.data.len(),
                }),
                // The first of repeated fields wins, like most form readers.
                None if !form.fields.contains_key(&part.name) => {
                    let value = String::from_utf8_lossy(part.data).into_owned();
                    form.fields.insert(part.name.clone(), Value::String(value));
                }
                None => {}
            }
        }
        Ok(form)
    }

    /// The flavor's error body with `status`. `kind` and `code` are OpenAI's `type` and
    /// `code`; the flat xAI shape derives its `code` from the status instead.
    pub(crate) fn error(
        &self,
        status: StatusCode,
        message: &str,
        kind: &str,
        code: Option<&str>,
        param: Option<&str>,
    ) -> Rejection {
        let flat = self.flavor == Flavor::Xai || self.knobs.flat_error;
        let body = if flat {
            json!({"code": xai_code(status), "error": message})
        } else {
            json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
        };
        Rejection(Box::new((status, Json(body)).into_response()))
    }

    /// 400 `invalid_request_error`.
    pub(crate) fn invalid(&self, message: &str, param: Option<&str>) -> Rejection {
        self.error(
            StatusCode::BAD_REQUEST,
            message,
            "invalid_request_error",
            None,
            param,
        )
    }

    /// A required field is absent: OpenAI says 400, xAI's API 422.
    pub(crate) fn missing(&self, field: &str) -> Rejection {
        let status = match self.flavor {
            Flavor::OpenAi => StatusCode::BAD_REQUEST,
            Flavor::Xai => StatusCode::UNPROCESSABLE_ENTITY,
        };
        self.error(
            status,
            &format!("Missing required parameter: '{field}'."),
            "invalid_request_error",
            Some("missing_required_parameter"),
            Some(field),
        )
    }

    /// 404 for a path (or method) this flavor does not serve, in OpenAI's words.
    pub(crate) fn not_found(&self) -> Rejection {
        let message = format!("Invalid URL ({} {})", self.method, self.path);
        self.error(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            None,
            None,
        )
    }

    /// 404 for an object id that does not exist.
    pub(crate) fn no_such(&self, object: &str, id: &str) -> Rejection {
        let message = format!("No such {object} object: {id}");
        self.error(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            None,
            Some("id"),
        )
    }

    /// What every endpoint passes before it answers: the key, then an injected status.
    pub(crate) fn gate(&self) -> Result<(), Rejection> {
        self.authenticate()?;
        match self.knobs.status {
            Some(status) => Err(self.injected(status)),
            None => Ok(()),
        }
    }

    /// Any non-empty bearer key but [`BAD_KEY`] passes.
    fn authenticate(&self) -> Result<(), Rejection> {
        let authorization = header(self.headers, AUTHORIZATION.as_str()).unwrap_or("");
        let key = match authorization.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
            _ => "",
        };
        if !key.is_empty() && key != BAD_KEY {
            return Ok(());
        }
        let message = match (self.flavor, key.is_empty()) {
            (Flavor::OpenAi, true) if !self.knobs.flat_error => {
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                    .to_owned()
            }
            (Flavor::OpenAi, false) if !self.knobs.flat_error => format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                redact(key)
            ),
            _ => format!(
                "Incorrect API key provided: {}. You can obtain an API key from \
                 https://console.x.ai.",
                redact(key)
            ),
        };
        Err(self.error(
            StatusCode::UNAUTHORIZED,
            &message,
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        ))
    }

    /// The error asked for by `x-mock-status`, with the `type`/`code` OpenAI uses for it.
    fn injected(&self, status: StatusCode) -> Rejection {
        let message = format!(
            "Mock error {} {} (injected by x-mock-status)",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let (kind, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            429 => ("requests", Some("rate_limit_exceeded")),
            code if code >= 500 => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        self.error(status, &message, kind, code, None)
    }
}

// === impl Form ===

impl Form {
    /// A field that is a string.
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_str()
    }

    /// A field that is a string or a number, as text (multipart sends numbers as text).
    pub(crate) fn text(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// A field that is a number or a string holding one.
    pub(crate) fn u64(&self, key: &str) -> Option<u64> {
        match self.fields.get(key)? {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }
}
