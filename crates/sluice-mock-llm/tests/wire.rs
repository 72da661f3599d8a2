//! The mock's wire formats, checked over a real socket with a real HTTP client. SSE bodies are
//! parsed strictly: every event ends with a blank line, chat streams end with `data: [DONE]`,
//! Responses streams never do.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_mock_llm::{start, Flavor, MockConfig, MockHandle, DEFAULT_REPLY};

const AUTHORIZATION: &str = "Bearer sk-test";

async fn mock(flavor: Flavor) -> MockHandle {
    start(MockConfig {
        flavor,
        ..MockConfig::default()
    })
    .await
    .expect("the mock starts")
}

/// POSTs JSON with a valid key and extra headers.
async fn post(
    mock: &MockHandle,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", mock.url()))
        .header("authorization", AUTHORIZATION)
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the mock answers")
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

fn chat_request(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi there"}],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Splits a complete SSE body into events of `(field, value)` lines, insisting on the framing:
/// every event is terminated by a blank line, none is empty, nothing trails the last one.
fn sse_events(body: &str) -> Vec<Vec<(String, String)>> {
    assert!(
        body.ends_with("\n\n"),
        "a stream ends with a blank line: {body:?}"
    );
    body[..body.len() - 2]
        .split("\n\n")
        .map(|event| {
            assert!(!event.is_empty(), "no empty events: {body:?}");
            event
                .split('\n')
                .map(|line| {
                    let (field, value) = line
                        .split_once(": ")
                        .unwrap_or_else(|| panic!("not an SSE field line: {line:?}"));
                    (field.to_owned(), value.to_owned())
                })
                .collect()
        })
        .collect()
}

/// The JSON chunks of a chat or completions stream, which must be `data:`-only events ending
/// with exactly one `data: [DONE]`.
fn data_chunks(body: &str) -> Vec<Value> {
    let events = sse_events(body);
    let (last, chunks) = events.split_last().expect("at least one event");
    assert_eq!(last, &[("data".to_owned(), "[DONE]".to_owned())]);
    chunks
        .iter()
        .map(|event| {
            assert_eq!(event.len(), 1, "one data line per event: {event:?}");
            assert_eq!(event[0].0, "data");
            serde_json::from_str(&event[0].1).expect("each chunk is JSON")
        })
        .collect()
}

/// The `(type, payload)` events of a Responses stream: `event:` then `data:`, the payload's
/// `type` matching the event name and `sequence_number` counting from 0.
fn typed_events(body: &str) -> Vec<(String, Value)> {
    sse_events(body)
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            assert_eq!(event.len(), 2, "event and data lines: {event:?}");
            assert_eq!(event[0].0, "event");
            assert_eq!(event[1].0, "data");
            let payload: Value = serde_json::from_str(&event[1].1).expect("payload is JSON");
            assert_eq!(payload["type"], event[0].1.as_str());
            assert_eq!(payload["sequence_number"], index);
            (event[0].1.clone(), payload)
        })
        .collect()
}

#[tokio::test]
async fn chat_completion_echoes_the_model_and_counts_words() {
    let mock = mock(Flavor::OpenAi).await;
    let request = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": [{"type": "text", "text": "What is one plus one?"}]},
        ],
    });
    let response = post(&mock, "/v1/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("application/json"));
    assert!(header(&response, "x-request-id").starts_with("req_"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], DEFAULT_REPLY);
    assert_eq!(choice["finish_reason"], "stop");
    // "Be brief" + "What is one plus one?" = 2 + 5 words; the reply is 6 words.
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 6);
    assert_eq!(body["usage"]["total_tokens"], 13);

    let mut limited = request.clone();
    limited["max_tokens"] = json!(3);
    let body: Value = post(&mock, "/v1/chat/completions", &limited, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn chat_with_tools_calls_the_first_tool() {
    let mock = mock(Flavor::Xai).await;
    let request = json!({
        "model": "grok-4",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
            {"type": "function", "function": {"name": "other", "parameters": {}}},
        ],
    });
    let body: Value = post(&mock, "/v1/chat/completions", &request, &[])
        .await
        .json()
        .await
        .unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{}");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn chat_stream_is_strict_sse_ending_in_done() {
    let mock = mock(Flavor::OpenAi).await;
    let response = post(
        &mock,
        "/v1/chat/completions",
        &chat_request(true, false),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("text/event-stream"));
    let chunks = data_chunks(&response.text().await.unwrap());

    // The role, one chunk per word, the finish.
    assert_eq!(chunks.len(), 1 + 6 + 1);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks[1..7]
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, DEFAULT_REPLY);
    assert_eq!(chunks[7]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[7]["choices"][0]["finish_reason"], "stop");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o");
        assert!(
            chunk.get("usage").is_none(),
            "no usage unless asked: {chunk}"
        );
    }
}

#[tokio::test]
async fn chat_stream_with_include_usage_ends_with_a_usage_chunk() {
    let mock = mock(Flavor::OpenAi).await;
    let response = post(
        &mock,
        "/v1/chat/completions",
        &chat_request(true, true),
        &[],
    )
    .await;
    let chunks = data_chunks(&response.text().await.unwrap());
    assert_eq!(chunks.len(), 1 + 6 + 1 + 1);
    let (usage_chunk, others) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 2);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 8);
    for chunk in others {
        assert_eq!(
            chunk.get("usage"),
            Some(&Value::Null),
            "OpenAI marks {chunk}"
        );
    }

    // xAI sends the usage chunk too, but never `"usage": null` on the others.
    let xai = self::mock(Flavor::Xai).await;
    let response = post(&xai, "/v1/chat/completions", &chat_request(true, true), &[]).await;
    let chunks = data_chunks(&response.text().await.unwrap());
    let (usage_chunk, others) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["usage"]["total_tokens"], 8);
    assert!(others.iter().all(|chunk| chunk.get("usage").is_none()));
}

#[tokio::test]
async fn completions_stream_and_not() {
    let mock = mock(Flavor::OpenAi).await;
    let request = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello"});
    let body: Value = post(&mock, "/v1/completions", &request, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], DEFAULT_REPLY);
    assert_eq!(body["usage"]["prompt_tokens"], 2);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let response = post(&mock, "/v1/completions", &streamed, &[]).await;
    let chunks = data_chunks(&response.text().await.unwrap());
    assert_eq!(chunks.len(), 6 + 1);
    let text: String = chunks
        .iter()
        .map(|chunk| chunk["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, DEFAULT_REPLY);
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn responses_stream_has_typed_events_and_usage_at_the_end() {
    let mock = mock(Flavor::OpenAi).await;
    let request = json!({"model": "gpt-4o", "input": "Tell me a joke", "stream": true});
    let response = post(&mock, "/v1/responses", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    assert!(!body.contains("[DONE]"), "the Responses API has no [DONE]");
    let events = typed_events(&body);

    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    let text: String = events
        .iter()
        .filter(|(kind, _)| kind == "response.output_text.delta")
        .map(|(_, payload)| payload["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, DEFAULT_REPLY);
    let done = events
        .iter()
        .find(|(kind, _)| kind == "response.output_text.done")
        .expect("an output_text.done event");
    assert_eq!(done.1["text"], DEFAULT_REPLY);

    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["object"], "response");
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["model"], "gpt-4o");
    assert_eq!(completed["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(completed["output"][0]["content"][0]["text"], DEFAULT_REPLY);
    assert_eq!(completed["usage"]["input_tokens"], 4);
    assert_eq!(completed["usage"]["output_tokens"], 6);
    assert_eq!(completed["usage"]["total_tokens"], 10);
}

#[tokio::test]
async fn responses_non_stream_and_token_limit() {
    let mock = mock(Flavor::Xai).await;
    let request = json!({"model": "grok-4", "input": "Tell me a joke", "max_output_tokens": 2});
    let body: Value = post(&mock, "/v1/responses", &request, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello from");
    assert_eq!(body["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn injected_errors_use_the_flavors_shape() {
    let openai = mock(Flavor::OpenAi).await;
    let stream = chat_request(true, false);
    let response = post(
        &openai,
        "/v1/chat/completions",
        &stream,
        &[("x-mock-status", "429")],
    )
    .await;
    assert_eq!(response.status(), 429);
    assert!(
        header(&response, "content-type").starts_with("application/json"),
        "errors are never streamed"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].is_string());

    let response = post(
        &openai,
        "/v1/chat/completions",
        &stream,
        &[("x-mock-status", "503"), ("x-mock-flat-error", "1")],
    )
    .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "The service is currently unavailable");
    assert!(body["error"].is_string(), "flat shape: {body}");

    let xai = mock(Flavor::Xai).await;
    let response = post(
        &xai,
        "/v1/chat/completions",
        &stream,
        &[("x-mock-status", "400")],
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "Client specified an invalid argument");
    assert!(body["error"].is_string());

    let response = post(&xai, "/v1/embeddings", &json!({"input": "x"}), &[]).await;
    assert_eq!(response.status(), 404, "xAI has no embeddings");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "Some requested entity was not found");
}

#[tokio::test]
async fn missing_or_bad_keys_are_refused() {
    let openai = mock(Flavor::OpenAi).await;
    let url = format!("{}/v1/chat/completions", openai.url());
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .json(&chat_request(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let response = client
        .post(&url)
        .header("authorization", "Bearer bad-key")
        .json(&chat_request(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ba***ey"));

    let xai = mock(Flavor::Xai).await;
    let response = client
        .post(format!("{}/v1/chat/completions", xai.url()))
        .header("authorization", "Bearer bad-key")
        .json(&chat_request(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "Client specified an invalid argument");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("Incorrect API key provided"));
}

#[tokio::test]
async fn cut_after_aborts_the_stream_without_done() {
    let mock = mock(Flavor::OpenAi).await;
    let mut response = post(
        &mock,
        "/v1/chat/completions",
        &chat_request(true, false),
        &[("x-mock-cut-after", "3")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    assert!(outcome.is_err(), "the body ends in an error, not cleanly");
    let text = String::from_utf8(received).unwrap();
    assert_eq!(
        text.matches("\n\n").count(),
        3,
        "three whole events: {text:?}"
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn latency_and_hold_delay_headers_and_the_second_event() {
    let mock = mock(Flavor::OpenAi).await;
    let sent = Instant::now();
    let mut response = post(
        &mock,
        "/v1/chat/completions",
        &chat_request(true, false),
        &[("x-mock-latency-ms", "150"), ("x-mock-hold-ms", "300")],
    )
    .await;
    assert!(sent.elapsed() >= Duration::from_millis(150));
    let first = response.chunk().await.unwrap().expect("a first event");
    let after_first = Instant::now();
    assert!(first.starts_with(b"data: "));
    let mut rest = Vec::new();
    while let Some(bytes) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&bytes);
    }
    // Some slack: the first chunk may reach the client a little after it was sent.
    assert!(after_first.elapsed() >= Duration::from_millis(250));
    assert!(String::from_utf8(rest)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn bad_shape_drops_choices() {
    let mock = mock(Flavor::OpenAi).await;
    let response = post(
        &mock,
        "/v1/chat/completions",
        &chat_request(true, false),
        &[("x-mock-bad-shape", "1")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body.get("choices").is_none());
}

#[tokio::test]
async fn every_request_is_recorded_in_order() {
    let mock = mock(Flavor::OpenAi).await;
    let client = reqwest::Client::new();
    client
        .post(format!("{}/v1/chat/completions?trace=1", mock.url()))
        .header("authorization", AUTHORIZATION)
        .header("x-extra", "yes")
        .json(&chat_request(false, false))
        .send()
        .await
        .unwrap();
    // Refused requests are recorded too.
    client
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap();

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.query.as_deref(), Some("trace=1"));
    assert_eq!(first.header("x-extra"), Some("yes"));
    assert_eq!(first.header("Authorization"), Some(AUTHORIZATION));
    assert_eq!(first.json().unwrap()["model"], "gpt-4o");
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].header("authorization"), None);

    mock.clear();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn uploads_assistants_and_models() {
    let mock = mock(Flavor::OpenAi).await;
    let client = reqwest::Client::new();
    let multipart = "--b0undary\r\n\
Content-Disposition: form-data; name=\"purpose\"\r\n\r\n\
batch\r\n\
--b0undary\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n\
Content-Type: application/jsonl\r\n\r\n\
{\"custom_id\":\"1\"}\n\r\n\
--b0undary--\r\n";
    let response = client
        .post(format!("{}/v1/files", mock.url()))
        .header("authorization", AUTHORIZATION)
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let file: Value = response.json().await.unwrap();
    assert_eq!(file["object"], "file");
    assert_eq!(file["filename"], "input.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["bytes"], 18);
    let listed: Value = client
        .get(format!("{}/v1/files", mock.url()))
        .header("authorization", AUTHORIZATION)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], file["id"]);

    let assistant = json!({"model": "gpt-4o", "name": "helper"});
    let response = post(&mock, "/v1/assistants", &assistant, &[]).await;
    assert_eq!(response.status(), 400, "the beta header is required");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_beta");
    let response = post(
        &mock,
        "/v1/assistants",
        &assistant,
        &[("openai-beta", "assistants=v2")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "assistant");

    let xai = self::mock(Flavor::Xai).await;
    let models: Value = client
        .get(format!("{}/v1/models", xai.url()))
        .header("authorization", AUTHORIZATION)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"grok-4") && ids.contains(&"grok-2-image"));

    let image: Value = post(
        &xai,
        "/v1/images/generations",
        &json!({"model": "grok-2-image", "prompt": "King Kong", "n": 2}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(image["data"].as_array().unwrap().len(), 2);
    assert!(image["data"][0]["url"].is_string());
    assert!(image["data"][0]["revised_prompt"].is_string());
}
