//! ai-proxy conformance suite, run once per provider against the mock LLM provider (the only
//! faked part: it speaks OpenAI's and xAI's real wire formats, SSE included). Sluice is the
//! real binary; the usage numbers are read from its real log records.

mod common;

use std::time::{Duration, Instant};

use common::Sluice;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_mock_llm::{MockConfig, MockHandle};

const GATEWAY_KEY: &str = "sk-gateway-secret-1234";

/// A gateway with one ai-proxy route at `/ai` in front of a mock of `provider`.
struct Setup {
    kong: Sluice,
    mock: MockHandle,
    model: &'static str,
}

fn default_model(provider: &str) -> &'static str {
    if provider == "xai" {
        "grok-4"
    } else {
        "gpt-4o"
    }
}

async fn setup(provider: &str, route_type: &str, config: Value) -> Setup {
    let mock = sluice_mock_llm::start(if provider == "xai" {
        MockConfig::xai()
    } else {
        MockConfig::openai()
    })
    .await
    .expect("mock");
    let kong = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    let model = default_model(provider);
    let mut plugin = json!({
        "route_type": route_type,
        "auth": {"header_name": "Authorization", "header_value": format!("Bearer {GATEWAY_KEY}")},
        "model": {"provider": provider, "name": model, "options": {"upstream_url": mock.url()}},
        "logging": {"log_statistics": true},
    });
    merge(&mut plugin, config);
    add_route(&kong, "/ai", plugin).await;
    Setup { kong, mock, model }
}

async fn add_route(kong: &Sluice, path: &str, config: Value) {
    let name = path.trim_start_matches('/').replace('/', "-");
    let (status, body) = kong
        .post("/routes", json!({"name": name, "paths": [path]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(
            &format!("/routes/{name}/plugins"),
            json!({"name": "ai-proxy", "config": config}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Wait for the data plane to serve the route (anything but the router's 404).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = kong
            .through("GET", &format!("{path}/__probe"))
            .send()
            .await
            .unwrap();
        let body = response.text().await.unwrap_or_default();
        if !body.contains("no Route matched") && !body.contains("no Service found") {
            return;
        }
        assert!(Instant::now() < deadline, "route {path} never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                match base.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Splits an SSE body into its events' data fields, checking the framing strictly.
fn sse_data(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "every event ends with a blank line: {body:?}"
    );
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

async fn post(setup: &Setup, path: &str, body: Value) -> reqwest::Response {
    setup
        .kong
        .through("POST", path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

// === the cases, each run per provider ===

async fn chat(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    let response = post(
        &s,
        "/ai",
        json!({"messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-sluice-llm-model"],
        format!("{provider}/{}", s.model)
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let usage = body["usage"].clone();
    let sent = s.mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {GATEWAY_KEY}").as_str()),
        "the gateway's key is injected"
    );
    assert_eq!(
        sent.json().unwrap()["model"],
        s.model,
        "the configured model is sent"
    );
    let records = s.kong.ai_records(1).await;
    let record = &records.last().expect("a log record")["ai"]["proxy"];
    assert_eq!(record["meta"]["provider_name"], provider);
    assert_eq!(record["meta"]["request_model"], s.model);
    assert_eq!(record["usage"]["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(
        record["usage"]["completion_tokens"],
        usage["completion_tokens"]
    );
    assert_eq!(record["usage"]["total_tokens"], usage["total_tokens"]);
    assert!(
        !s.kong.logs().contains(GATEWAY_KEY),
        "the key is never logged"
    );
}

async fn chat_tools(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]);
    let response = post(
        &s,
        "/ai",
        json!({"messages": [{"role": "user", "content": "weather?"}], "tools": tools}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        s.mock.last_request().unwrap().json().unwrap()["tools"],
        tools,
        "tools reach the provider"
    );
}

async fn chat_streaming(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    // Without include_usage: Sluice asks for it anyway and hides the extra chunk.
    let response = post(
        &s,
        "/ai",
        json!({"messages": [{"role": "user", "content": "one two three"}], "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "no usage-only chunk reaches a client that did not ask: {text}"
    );
    let sent = s.mock.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "usage was requested upstream"
    );
    let words = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    let records = s.kong.ai_records(1).await;
    let usage = &records.last().unwrap()["ai"]["proxy"]["usage"];
    assert_eq!(
        usage["completion_tokens"], words,
        "exact completion tokens from the stripped usage chunk"
    );
    assert_eq!(usage["prompt_tokens"], 3);

    // With include_usage: the usage chunk is the client's.
    let response = post(&s, "/ai", json!({"messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}})).await;
    let events = sse_data(&response.text().await.unwrap());
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 1);
}

async fn completions(provider: &str) {
    let s = setup(provider, "llm/v1/completions", json!({})).await;
    let response = post(&s, "/ai", json!({"prompt": "say hello"})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["choices"][0]["text"].is_string());
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/completions");
    // The chat format on a completions route is refused with Kong's text.
    let response = post(
        &s,
        "/ai",
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "[llm/v1/chat] message format is not compatible with [llm/v1/completions] route type"
    );
}

async fn responses(provider: &str) {
    let s = setup(provider, "llm/v1/responses", json!({})).await;
    let response = post(&s, "/ai", json!({"input": "tell me a story"})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/responses");
    // Streaming: typed events pass through; usage comes from response.completed.
    let response = post(
        &s,
        "/ai",
        json!({"input": "tell me a story", "stream": true}),
    )
    .await;
    let text = response.text().await.unwrap();
    assert!(
        text.contains("event: response.created") && text.contains("event: response.completed"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
    let completed: Value = serde_json::from_str(sse_data(&text).last().unwrap()).unwrap();
    let records = s.kong.ai_records(2).await;
    let usage = &records.last().unwrap()["ai"]["proxy"]["usage"];
    assert_eq!(
        usage["prompt_tokens"],
        completed["response"]["usage"]["input_tokens"]
    );
    assert_eq!(
        usage["completion_tokens"],
        completed["response"]["usage"]["output_tokens"]
    );
}

async fn image_generation(provider: &str) {
    let model = if provider == "xai" {
        "grok-2-image"
    } else {
        "gpt-image-1"
    };
    let s = setup(
        provider,
        "image/v1/images/generations",
        json!({"genai_category": "image/generation", "model": {"name": model}}),
    )
    .await;
    let response = post(
        &s,
        "/ai",
        json!({"prompt": "a lighthouse", "size": "1024x1024", "quality": "hd", "style": "vivid"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["data"][0].is_object());
    let sent = s.mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/images/generations");
    let sent = sent.json().unwrap();
    if provider == "xai" {
        assert!(
            sent.get("size").is_none()
                && sent.get("quality").is_none()
                && sent.get("style").is_none(),
            "xAI refuses these: {sent}"
        );
    } else {
        assert_eq!(sent["size"], "1024x1024");
    }
}

async fn model_rules(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    let response = post(
        &s,
        "/ai",
        json!({"model": "another-model", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": format!("cannot use own model - must be: {}", s.model)}})
    );
    let response = post(
        &s,
        "/ai",
        json!({"model": s.model, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 200, "the same model is fine");

    // No model in config: the request's is used; none at all is refused.
    add_route(&s.kong, "/free", json!({
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": format!("Bearer {GATEWAY_KEY}")},
        "model": {"provider": provider, "options": {"upstream_url": s.mock.url(), "max_tokens": 3, "temperature": 0.5}},
    })).await;
    let response = post(
        &s,
        "/free",
        json!({"model": "my-model", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-sluice-llm-model"],
        format!("{provider}/my-model")
    );
    let sent = s.mock.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "my-model");
    assert_eq!(
        sent["max_tokens"], 3,
        "config options fill what the request leaves out"
    );
    assert_eq!(sent["temperature"], 0.5);
    let response = post(&s, "/free", json!({"model": "my-model", "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        s.mock.last_request().unwrap().json().unwrap()["temperature"],
        1.5,
        "the request's own value stays"
    );
    let response = post(
        &s,
        "/free",
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "model parameter not found in request, nor in gateway configuration"
    );
}

/// Fields the gateway reads with the wrong type are a 400 before anything goes upstream (the
/// attack run's `"stream": "yes"` was a 500 "transformation failed").
async fn mistyped_fields(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    s.mock.clear(); // the setup's readiness probe went through
    let cases = [
        (
            json!({"stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
            "stream",
        ),
        (
            json!({"model": ["a"], "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            json!({"messages": [{"content": "no role"}]}),
            "messages[0].role",
        ),
        (json!({"messages": ["x"]}), "messages[0]"),
    ];
    for (body, field) in cases {
        let response = post(&s, "/ai", body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("'{field}'")), "{body}: {answer}");
    }
    assert!(s.mock.requests().is_empty(), "nothing reached the provider");
}

/// A method the route type does not define is a 405 before the key is injected; the gateway's
/// own failures on an AI route come in OpenAI's error shape, which the SDKs read.
async fn methods_and_gateway_errors(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    s.mock.clear(); // the setup's readiness probe went through
    for method in ["GET", "DELETE", "PUT"] {
        let response = s.kong.through(method, "/ai").send().await.unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST", "{method}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    }
    assert!(
        s.mock.requests().is_empty(),
        "nothing reached the provider, no key was spent"
    );
    // The model list is a GET every route type serves.
    let response = s.kong.through("GET", "/ai/models").send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A provider that refuses connections: 502, OpenAI-shaped, with the request id.
    let closed = common::free_port();
    add_route(&s.kong, "/down", json!({
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": format!("Bearer {GATEWAY_KEY}")},
        "model": {"provider": provider, "name": s.model,
            "options": {"upstream_url": format!("http://127.0.0.1:{closed}")}},
    }))
    .await;
    let response = post(
        &s,
        "/down",
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 502);
    let request_id = response.headers()["x-sluice-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(body["request_id"], request_id.as_str());
}

async fn auth_rules(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    let chat = json!({"messages": [{"role": "user", "content": "x"}]});
    let response = s
        .kong
        .through("POST", "/ai")
        .bearer_auth("client-key")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        s.mock.last_request().unwrap().header("authorization"),
        Some(format!("Bearer {GATEWAY_KEY}").as_str()),
        "the client's header is replaced"
    );

    add_route(&s.kong, "/override", json!({
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": format!("Bearer {GATEWAY_KEY}"), "allow_override": true},
        "model": {"provider": provider, "name": s.model, "options": {"upstream_url": s.mock.url()}},
    })).await;
    s.kong
        .through("POST", "/override")
        .bearer_auth("client-key")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.mock.last_request().unwrap().header("authorization"),
        Some("Bearer client-key"),
        "allow_override keeps the client's"
    );
    s.kong
        .through("POST", "/override")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.mock.last_request().unwrap().header("authorization"),
        Some(format!("Bearer {GATEWAY_KEY}").as_str())
    );

    // A key in the query string.
    add_route(&s.kong, "/query", json!({
        "route_type": "llm/v1/chat",
        "auth": {"param_name": "api-key", "param_value": "q-secret", "param_location": "query"},
        "model": {"provider": provider, "name": s.model, "options": {"upstream_url": s.mock.url()}},
    })).await;
    s.kong
        .through("POST", "/query")
        .bearer_auth("k")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.mock.last_request().unwrap().query.as_deref(),
        Some("api-key=q-secret")
    );
}

async fn error_paths(provider: &str) {
    let s = setup(
        provider,
        "llm/v1/chat",
        json!({"max_request_body_size": 2048}),
    )
    .await;
    let chat = json!({"messages": [{"role": "user", "content": "x"}]});
    // Upstream errors pass through with their status, in OpenAI's shape.
    let response = s
        .kong
        .through("POST", "/ai")
        .header("x-mock-status", "429")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].is_string(),
        "OpenAI-shaped: {body}"
    );
    // xAI's flat error body is translated; OpenAI's passes unchanged.
    let response = s
        .kong
        .through("POST", "/ai")
        .header("x-mock-status", "400")
        .header("x-mock-flat-error", "1")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    if provider == "xai" {
        assert!(
            body["error"]["message"].is_string() && body["error"]["code"].is_string(),
            "translated: {body}"
        );
    } else {
        assert!(
            body["error"].is_string(),
            "OpenAI's errors are never rewritten: {body}"
        );
    }
    // A 200 without the expected shape: Kong's transformation error.
    let response = s
        .kong
        .through("POST", "/ai")
        .header("x-mock-bad-shape", "1")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], format!("transformation failed from type {provider}://llm/v1/chat: 'choices' not in llm/v1/chat response"));
    // Too large a body: 413, OpenAI-shaped.
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let response = post(&s, "/ai", big).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_request_body_size"));
    // Bad JSON, no prompts.
    let response = s
        .kong
        .through("POST", "/ai")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "content-type header does not match request body, or bad JSON formatting"
    );
    let response = post(&s, "/ai", json!({"segassem": []})).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "request body doesn't contain valid prompts"
    );
    // A stream cut mid-way ends the client's stream too; nothing hangs.
    let started = Instant::now();
    let response = s
        .kong
        .through("POST", "/ai")
        .header("x-mock-cut-after", "2")
        .json(&json!({"messages": [{"role": "user", "content": "x"}], "stream": true}))
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), response.text())
        .await
        .expect("no hang");
    assert!(text.map(|t| !t.contains("[DONE]")).unwrap_or(true));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Streaming denied.
    add_route(&s.kong, "/nostream", json!({
        "route_type": "llm/v1/chat", "response_streaming": "deny",
        "auth": {"header_name": "Authorization", "header_value": "Bearer k"},
        "model": {"provider": provider, "name": s.model, "options": {"upstream_url": s.mock.url()}},
    })).await;
    let response = post(
        &s,
        "/nostream",
        json!({"messages": [{"role": "user", "content": "x"}], "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "response streaming is not enabled for this LLM"
    );
}

async fn first_token_is_not_held_back(provider: &str) {
    let s = setup(provider, "llm/v1/chat", json!({})).await;
    let started = Instant::now();
    let mut response = s
        .kong
        .through("POST", "/ai")
        .header("x-mock-hold-ms", "1500")
        .json(&json!({"messages": [{"role": "user", "content": "x"}], "stream": true}))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("a first event");
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    assert!(
        first_at < Duration::from_millis(1000),
        "the first token waited {first_at:?}: the stream was buffered"
    );
    while response.chunk().await.unwrap().is_some() {}
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

async fn full_upstream_url_is_used_whole(provider: &str) {
    let mock = sluice_mock_llm::start(MockConfig::openai()).await.unwrap();
    let kong = Sluice::start().await;
    add_route(&kong, "/compat", json!({
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": "Bearer k"},
        "model": {"provider": provider, "name": "m", "options": {"upstream_url": format!("{}/v1/chat/completions?api-version=1", mock.url())}},
    })).await;
    let response = kong
        .through("POST", "/compat")
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = mock.last_request().unwrap();
    assert_eq!(
        (sent.path.as_str(), sent.query.as_deref()),
        ("/v1/chat/completions", Some("api-version=1"))
    );
}

macro_rules! provider_tests {
    ($provider:ident: $($case:ident),* $(,)?) => {
        mod $provider {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(stringify!($provider)).await;
                }
            )*
        }
    };
}

provider_tests!(openai: chat, chat_tools, chat_streaming, completions, responses, image_generation,
    model_rules, mistyped_fields, methods_and_gateway_errors, auth_rules, error_paths, first_token_is_not_held_back,
    full_upstream_url_is_used_whole);
provider_tests!(xai: chat, chat_tools, chat_streaming, completions, responses, image_generation,
    model_rules, mistyped_fields, methods_and_gateway_errors, auth_rules, error_paths, first_token_is_not_held_back,
    full_upstream_url_is_used_whole);

// === OpenAI-only route types ===

#[tokio::test]
async fn openai_other_route_types() {
    let s = setup(
        "openai",
        "llm/v1/embeddings",
        json!({"model": {"name": "text-embedding-3-small"}}),
    )
    .await;
    let response = post(&s, "/ai", json!({"input": "embed me"})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["data"][0]["embedding"].is_array());
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/embeddings");
    let key =
        json!({"header_name": "Authorization", "header_value": format!("Bearer {GATEWAY_KEY}")});
    let route = |route_type: &str, model: Option<&str>| {
        json!({
            "route_type": route_type, "auth": key,
            "model": {"provider": "openai", "name": model, "options": {"upstream_url": s.mock.url()}},
        })
    };
    add_route(
        &s.kong,
        "/speech",
        route("audio/v1/audio/speech", Some("tts-1")),
    )
    .await;
    let response = post(&s, "/speech", json!({"input": "hello", "voice": "alloy"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    assert!(!response.bytes().await.unwrap().is_empty());

    add_route(
        &s.kong,
        "/transcribe",
        route("audio/v1/audio/transcriptions", None),
    )
    .await;
    let boundary = "sluiceboundary";
    let multipart = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\nID3fakeaudio\r\n--{boundary}--\r\n");
    let response = s
        .kong
        .through("POST", "/transcribe")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["text"].is_string());
    let sent = s.mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/audio/transcriptions");
    assert_eq!(
        sent.body.len(),
        multipart.len(),
        "multipart bodies pass through untouched"
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {GATEWAY_KEY}").as_str())
    );

    add_route(&s.kong, "/assistants", route("llm/v1/assistants", None)).await;
    let response = post(
        &s,
        "/assistants",
        json!({"model": "gpt-4o", "name": "helper"}),
    )
    .await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(
        s.mock.last_request().unwrap().header("openai-beta"),
        Some("assistants=v2")
    );

    add_route(&s.kong, "/files", route("llm/v1/files", None)).await;
    let response = s.kong.through("GET", "/files").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/files");
    let response = s
        .kong
        .through("GET", "/files/file-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.mock.last_request().unwrap().path,
        "/v1/files/file-123",
        "sub-resources follow the base path"
    );
    drop(response);

    add_route(&s.kong, "/batches", route("llm/v1/batches", None)).await;
    let response = post(&s, "/batches", json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/batches");

    add_route(
        &s.kong,
        "/edits",
        route("image/v1/images/edits", Some("gpt-image-1")),
    )
    .await;
    let response = s
        .kong
        .through("POST", "/edits")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/images/edits");

    add_route(
        &s.kong,
        "/video",
        route("video/v1/videos/generations", Some("sora-2")),
    )
    .await;
    let response = post(&s, "/video", json!({"prompt": "waves"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/videos");
}

#[tokio::test]
async fn xai_model_listing() {
    let s = setup("xai", "llm/v1/chat", json!({})).await;
    let response = s.kong.through("GET", "/ai/models").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["data"].as_array().is_some_and(|d| !d.is_empty()));
    assert_eq!(s.mock.last_request().unwrap().path, "/v1/models");
}

#[tokio::test]
async fn payloads_are_logged_only_when_asked() {
    let s = setup(
        "openai",
        "llm/v1/chat",
        json!({"logging": {"log_payloads": true}}),
    )
    .await;
    post(
        &s,
        "/ai",
        json!({"messages": [{"role": "user", "content": "remember-this-prompt"}]}),
    )
    .await;
    let records = s.kong.ai_records(1).await;
    let payload = &records.last().unwrap()["ai"]["proxy"]["payload"];
    assert!(payload["request"]
        .as_str()
        .unwrap()
        .contains("remember-this-prompt"));
    let s = setup("openai", "llm/v1/chat", json!({})).await;
    post(
        &s,
        "/ai",
        json!({"messages": [{"role": "user", "content": "secret-prompt"}]}),
    )
    .await;
    let records = s.kong.ai_records(1).await;
    assert!(records.last().unwrap()["ai"]["proxy"]
        .get("payload")
        .is_none());
    assert!(!s.kong.logs().contains("secret-prompt"));
}

#[tokio::test]
async fn cost_is_computed_from_config_prices() {
    let s = setup(
        "openai",
        "llm/v1/chat",
        json!({"model": {"options": {"input_cost": 10.0, "output_cost": 20.0}}}),
    )
    .await;
    let body: Value = post(
        &s,
        "/ai",
        json!({"messages": [{"role": "user", "content": "a b c d"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    let (prompt, completion) = (
        body["usage"]["prompt_tokens"].as_f64().unwrap(),
        body["usage"]["completion_tokens"].as_f64().unwrap(),
    );
    let records = s.kong.ai_records(1).await;
    let cost = records.last().unwrap()["ai"]["proxy"]["usage"]["cost"]
        .as_f64()
        .unwrap();
    assert!(
        (cost - (prompt * 10.0 + completion * 20.0) / 1e6).abs() < 1e-12,
        "cost {cost}"
    );
}
