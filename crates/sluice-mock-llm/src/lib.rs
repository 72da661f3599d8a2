//! A mock OpenAI / xAI upstream for Sluice's tests and benchmarks.
//!
//! It speaks the providers' real wire formats, so the gateway is tested against what it will
//! meet in production: OpenAI's nested error object and xAI's flat one, `chat.completion.chunk`
//! SSE events ended by `data: [DONE]`, the Responses API's typed `event:` SSE without `[DONE]`,
//! the `include_usage` chunk with `"choices": []`, multipart uploads. Every answer is
//! deterministic, so tests can assert exact token counts.
//!
//! Use [`start`] in a test (binds `127.0.0.1:0`, records every request, stops when the
//! [`MockHandle`] is dropped), [`router`] to mount it yourself, or the `sluice-mock-llm` binary
//! for benchmarks:
//!
//! ```text
//! sluice-mock-llm --listen 127.0.0.1:9000 --flavor openai|xai --chunk-gap-ms N --latency-ms N [--record]
//! ```
//!
//! # Endpoints
//!
//! | Method and path | OpenAI | xAI | Answer |
//! |---|---|---|---|
//! | `POST /v1/chat/completions` | yes | yes | `chat.completion`, or `chat.completion.chunk` SSE; `tool_calls` when the request has `tools` |
//! | `POST /v1/completions` | yes | yes | `text_completion`, or SSE of `text_completion` chunks |
//! | `POST /v1/embeddings` | yes | no | `list` of `embedding` objects (`encoding_format: "base64"` honoured) |
//! | `POST /v1/responses` | yes | yes | `response`, or typed SSE events ending in `response.completed` |
//! | `GET`/`DELETE /v1/responses/{id}` | yes | yes | a completed `response` / `{"deleted": true}` |
//! | `POST /v1/images/generations` | yes | yes | `{created, data: [{url}or{b64_json}]}`; xAI adds `revised_prompt` |
//! | `POST /v1/images/edits` (multipart or JSON; needs an image, not a prompt) | yes | no | as generations |
//! | `POST /v1/audio/speech` | yes | no | `audio/mpeg` bytes |
//! | `POST /v1/audio/transcriptions`, `/translations` (multipart) | yes | no | `{"text": ...}` (or plain text with `response_format=text`) |
//! | `POST`/`GET /v1/files`, `GET`/`DELETE /v1/files/{id}` | yes | no | `file` objects, kept in memory |
//! | `POST`/`GET /v1/batches`, `GET /v1/batches/{id}` | yes | no | `batch` objects, kept in memory |
//! | `POST`/`GET /v1/assistants` | yes | no | `assistant` objects; needs `OpenAI-Beta: assistants=v2`, else 400 |
//! | `POST /v1/videos`, `POST /v1/videos/generations`, `GET /v1/videos/{id}` | yes | no | a `video` job object |
//! | `GET /v1/models`, `GET /v1/models/{id}` | yes | yes | the flavor's model list |
//! | `POST /v1/messages` (Anthropic format) | no | yes | a `message` with `usage {input_tokens, output_tokens}` |
//! | `POST /v1/complete` (Anthropic legacy) | no | yes | a `completion` |
//! | `POST /v1/tokenize-text` | no | yes | `{token_ids: [...]}`, one per word |
//! | `GET /v1/language-models[/{id}]`, `/v1/image-generation-models[/{id}]` | no | yes | xAI's model objects |
//! | `GET /v1/api-key` | no | yes | the key's (redacted) description |
//! | `GET /v1/chat/deferred-completion/{id}` | no | yes | a `chat.completion` with usage |
//! | `GET /v1/realtime?model=...` (WebSocket upgrade) | yes | yes | a text-only Realtime API session (see `realtime.rs`): `session.created`, then deltas and `response.done` with `usage` per `response.create` |
//!
//! Server-wide faults for failover tests: [`MockConfig::fail_status`] (every request answers
//! that status) and [`MockConfig::stream_fault`] (a stream cut before its first event, or an
//! SSE `error` event first), both switchable while the mock runs through [`MockHandle`];
//! [`MockConfig::name`] is sent back as `x-mock-name`.
//!
//! Anything else is a 404 in the flavor's error shape. Bodies up to [`MAX_BODY_BYTES`] are read.
//!
//! Control endpoints, never recorded and never authenticated: `GET /__mock/health` (`ok`),
//! `GET /__mock/requests` (the request log as JSON, for tests that run the binary with
//! `--record`), `DELETE /__mock/requests` (clear it).
//!
//! # Authentication
//!
//! Every `/v1` request needs `Authorization: Bearer <key>`. A missing or empty key, or the key
//! [`BAD_KEY`] (`bad-key`), is answered 401 in the flavor's error shape:
//! OpenAI `{"error":{"message":"...","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`,
//! xAI `{"code":"Client specified an invalid argument","error":"Incorrect API key provided: ..."}`.
//! Any other key is accepted.
//!
//! # Knobs
//!
//! Server-wide, in [`MockConfig`] (or the binary's flags):
//!
//! | Field | Flag | Effect |
//! |---|---|---|
//! | `flavor` | `--flavor openai\|xai` | error body shape, which routes exist, default models, xAI's `revised_prompt` |
//! | `latency` | `--latency-ms N` | wait before sending response headers (default 0) |
//! | `chunk_gap` | `--chunk-gap-ms N` | wait between two SSE events (default 0) |
//! | — | `--record` | binary only: keep the request log for `GET /__mock/requests` (off, so benchmarks don't grow memory) |
//!
//! Per request, as request headers, so one mock can serve many tests:
//!
//! | Header | Effect |
//! |---|---|
//! | `x-mock-status: <code>` | answer that status (400–599) with the flavor's error body, after the auth check |
//! | `x-mock-flat-error: 1` | use xAI's flat `{"code","error"}` error shape even in the OpenAI flavor |
//! | `x-mock-latency-ms: N` | wait N ms before headers (replaces `latency`) |
//! | `x-mock-chunk-gap-ms: N` | wait N ms between SSE events (replaces `chunk_gap`) |
//! | `x-mock-cut-after: N` | streaming only: send the first N SSE events (counting `data: [DONE]`), then abort the connection mid-body (the chunked body never terminates) |
//! | `x-mock-hold-ms: N` | streaming only: after the first SSE event, wait N ms before the rest (time to first token) |
//! | `x-mock-bad-shape: 1` | chat, completions, responses: a 200 JSON body without `choices` / `output`, even when `stream` was asked for |
//! | `x-mock-reply: <text>` | the generated text instead of [`DEFAULT_REPLY`] (whitespace is normalised to single spaces) |
//!
//! The order of work for one request is: record it, wait the latency, check auth, apply
//! `x-mock-status`, route, answer.
//!
//! # Token counting
//!
//! Counts are words, not real tokens, so tests can compute them by hand:
//!
//! - A *word* is a run of non-whitespace (`str::split_whitespace`).
//! - **Prompt tokens** count the words of every string found in the request field below,
//!   looking through arrays and, in objects, only through their `content` and `text` fields
//!   (so message roles, names, `image_url` parts and tool definitions count nothing). A number
//!   counts 1 (pre-tokenised input).
//!   - chat: `messages`;
//!   - completions: `prompt`;
//!   - embeddings: `input`;
//!   - responses: `input` (not `instructions`);
//!   - images (`usage` only for `gpt-image*` models): `prompt`.
//! - **Completion tokens** are the words of the generated text, [`DEFAULT_REPLY`]
//!   (`"Hello from the Sluice mock provider"`, 6 words) or `x-mock-reply`. If the request sets
//!   a smaller limit (chat: `max_completion_tokens`, else `max_tokens`; completions:
//!   `max_tokens`; responses: `max_output_tokens`) the text is cut to that many words and the
//!   answer says so: `finish_reason: "length"`, or for responses `status: "incomplete"` with
//!   `incomplete_details.reason: "max_output_tokens"` and a final `response.incomplete` event.
//! - A **tool-call** reply (chat with a non-empty `tools` and `tool_choice` other than
//!   `"none"`) calls the first tool with arguments `"{}"` and counts 2 completion tokens; it is
//!   never cut.
//! - `total_tokens` = prompt + completion. Image generation: `output_tokens` =
//!   [`IMAGE_OUTPUT_TOKENS`] per image.
//!
//! # Streaming shapes
//!
//! Chat, `stream: true`: `data: {chunk}\n\n` events; the first delta is
//! `{"role":"assistant","content":""}`, then one event per word (`"Hello"`, `" from"`, ... so
//! the deltas concatenate to the text), then `{"delta":{},"finish_reason":...}`, then, only
//! with `stream_options.include_usage: true`, a chunk with `"choices": []` and `usage`, then
//! `data: [DONE]\n\n`. In the OpenAI flavor with `include_usage`, every other chunk carries
//! `"usage": null` (as OpenAI does); xAI chunks never do. A tool-call stream sends the call's
//! id and name, then its arguments, then `finish_reason: "tool_calls"`.
//!
//! Completions, `stream: true`: one `text_completion` chunk per word, a final chunk with
//! `text: ""` and the `finish_reason`, the optional usage chunk, `data: [DONE]`.
//!
//! Responses, `stream: true`: `event: <type>\ndata: {json}\n\n` for `response.created`,
//! `response.in_progress`, `response.output_item.added`, `response.content_part.added`, one
//! `response.output_text.delta` per word, `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`, then `response.completed` (or
//! `response.incomplete`) carrying the whole response with `usage`. Every payload has `type`
//! and an incrementing `sequence_number`. No `[DONE]`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod multipart;
mod realtime;
mod server;
mod sse;
mod tokens;
mod wire;

/// The text every completion generates unless `x-mock-reply` says otherwise: 6 words.
pub const DEFAULT_REPLY: &str = tokens::DEFAULT_REPLY;

/// The one API key the mock refuses (401), to test a wrong key without a missing one.
pub const BAD_KEY: &str = "bad-key";

/// Largest request body read; bigger ones get axum's 413. Generous because audio, image and
/// file uploads come through too.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// `usage.output_tokens` per generated image for `gpt-image*` models.
pub const IMAGE_OUTPUT_TOKENS: u64 = 16;

/// Which provider the mock imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    /// `api.openai.com`: every endpoint, nested `{"error":{...}}` errors.
    #[default]
    OpenAi,
    /// `api.x.ai`: chat, completions, responses, image generation and models only, flat
    /// `{"code","error"}` errors.
    Xai,
}

/// Server-wide behaviour. Per-request headers (see the crate docs) override the timings.
#[derive(Clone, Debug, Default)]
pub struct MockConfig {
    /// Error body shape, which routes exist, default models.
    pub flavor: Flavor,
    /// Wait between two SSE events of a streamed answer.
    pub chunk_gap: Duration,
    /// Wait before the response headers are sent.
    pub latency: Duration,
    /// Sent back as `x-mock-name`, to tell several instances apart.
    pub name: Option<String>,
    /// When not 0, every request is answered this status with the flavor's error body (as
    /// `x-mock-status`, for the whole server). Shared with the [`MockHandle`], which can
    /// change it while the mock runs ([`MockHandle::fail_with`]).
    pub fail_status: Arc<std::sync::atomic::AtomicU16>,
    /// A streamed answer's fault for every request, changeable while the mock runs
    /// ([`MockHandle::stream_fault`]): [`STREAM_CUT`] aborts the body before its first event,
    /// [`STREAM_ERROR_FIRST`] sends an SSE `error` event and ends.
    pub stream_fault: Arc<std::sync::atomic::AtomicU8>,
}

/// [`MockConfig::stream_fault`]: the body is cut before its first event.
pub const STREAM_CUT: u8 = 1;
/// [`MockConfig::stream_fault`]: the only event is an SSE `error` event.
pub const STREAM_ERROR_FIRST: u8 = 2;

/// One request as the mock received it, before it answered.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// In arrival order; names are lowercase (as `http` stores them). Values that are not
    /// UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// The shared, append-only list of requests a mock received. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    // A std Mutex, not tokio's: it is held only to push or copy, never across an await.
    entries: Arc<Mutex<Vec<RecordedRequest>>>,
}

/// A running mock started by [`start`].
///
/// The server stops when the handle is dropped, so keep it alive for as long as the test uses
/// the mock (`let mock = start(..).await?;`, not `start(..).await?.url()`).
#[derive(Debug)]
pub struct MockHandle {
    pub addr: SocketAddr,
    log: RequestLog,
    fail_status: Arc<std::sync::atomic::AtomicU16>,
    stream_fault: Arc<std::sync::atomic::AtomicU8>,
    task: JoinHandle<()>,
}

/// Starts a mock on `127.0.0.1` with an ephemeral port, serving in a spawned task, recording
/// every request.
pub async fn start(config: MockConfig) -> std::io::Result<MockHandle> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let log = RequestLog::new();
    let fail_status = config.fail_status.clone();
    let stream_fault = config.stream_fault.clone();
    let app = router(config, Some(log.clone()));
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(%err, "mock LLM server stopped");
        }
    });
    Ok(MockHandle {
        addr,
        log,
        fail_status,
        stream_fault,
        task,
    })
}

/// Serves the mock on `listener` until the server fails. `log: None` records nothing, which is
/// what a long benchmark wants.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    log: Option<RequestLog>,
) -> std::io::Result<()> {
    axum::serve(listener, router(config, log)).await
}

/// The mock as a plain `axum::Router`, for `.oneshot()` tests or custom serving. With
/// `log: None` nothing is recorded and `GET /__mock/requests` is a 404.
pub fn router(config: MockConfig, log: Option<RequestLog>) -> Router {
    let shared = Arc::new(server::Shared::new(config, log));
    // One fallback handler instead of a route table: every request, matched or not, goes
    // through the same record → latency → auth → fault → answer sequence, and unknown paths
    // get the flavor's own 404 body instead of axum's empty one.
    Router::new()
        .fallback(server::handle)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

// === impl MockConfig ===

impl MockConfig {
    /// OpenAI flavor, no delays.
    pub fn openai() -> Self {
        Self::default()
    }

    /// xAI flavor, no delays.
    pub fn xai() -> Self {
        Self {
            flavor: Flavor::Xai,
            ..Self::default()
        }
    }
}

// === impl RecordedRequest ===

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

// === impl RequestLog ===

impl RequestLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every request so far, in arrival order.
    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn push(&self, request: RecordedRequest) {
        self.lock().push(request);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic while holding the lock cannot leave the Vec half-written, so a poisoned
        // lock is still safe to use.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl MockHandle ===

impl MockHandle {
    /// From now on, answer every request with `status` (or normally again with `None`).
    pub fn fail_with(&self, status: Option<u16>) {
        self.fail_status
            .store(status.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, streamed answers have this fault ([`STREAM_CUT`], [`STREAM_ERROR_FIRST`],
    /// or 0 for none).
    pub fn stream_fault(&self, fault: u8) {
        self.stream_fault
            .store(fault, std::sync::atomic::Ordering::SeqCst);
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log.snapshot()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.log.lock().last().cloned()
    }

    /// Forgets the recorded requests. Files, batches and assistants created through the API
    /// stay.
    pub fn clear(&self) {
        self.log.clear();
    }

    /// The log itself, to share with another router.
    pub fn log(&self) -> &RequestLog {
        &self.log
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
