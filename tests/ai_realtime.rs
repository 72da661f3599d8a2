//! Realtime (`realtime/v1/realtime`) through ai-proxy-advanced, over WebSocket, against the
//! real binary and the mock's Realtime API endpoint. Kong's shape (3.11+ EE): a `ws` service
//! and a `ws`/`wss` route, the plugin injecting the key and the model; the client sends
//! neither. Sluice reads the session's `response.done` events for usage.

mod common;

use std::time::Duration;

use common::Sluice;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_mock_llm::{MockConfig, MockHandle, DEFAULT_REPLY};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Socket = WebSocketStream<TcpStream>;

const MODEL: &str = "gpt-4o-realtime-preview";

async fn mock(name: &str) -> MockHandle {
    let config = MockConfig {
        name: Some(name.to_owned()),
        ..MockConfig::openai()
    };
    sluice_mock_llm::start(config).await.expect("mock")
}

fn realtime_target(mock: &MockHandle, extra: Value) -> Value {
    let mut target = json!({
        "route_type": "realtime/v1/realtime",
        "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"},
        "model": {"provider": "openai", "name": MODEL, "options": {
            "upstream_url": mock.url(), "input_cost": 5.0, "output_cost": 20.0,
        }},
        "logging": {"log_statistics": true},
    });
    for (key, value) in extra.as_object().unwrap() {
        target[key] = value.clone();
    }
    target
}

/// Kong's realtime setup: a `ws` service with a dummy host, a `ws`/`wss` route `/realtime`,
/// ai-proxy-advanced on the service.
async fn realtime_route(node: &Sluice, targets: Vec<Value>, balancer: Value) {
    let (status, body) = node
        .post(
            "/services",
            json!({"name": "rt", "protocol": "ws", "host": "dummy.invalid", "port": 80}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post(
            "/services/rt/routes",
            json!({"name": "rt", "paths": ["/realtime"], "protocols": ["ws", "wss"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post(
            "/services/rt/plugins",
            json!({"name": "ai-proxy-advanced", "config": {
                "genai_category": "realtime/generation",
                "targets": targets,
                "balancer": balancer,
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.wait_for_served(node.config_version().await).await;
}

/// Opens `ws://<proxy>/realtime` with `headers`; the 101's headers come back with the socket.
async fn connect(node: &Sluice, headers: &[(&str, &str)]) -> (Socket, http::HeaderMap) {
    let authority = node.proxy.trim_start_matches("http://").to_owned();
    let mut request = format!("ws://{authority}/realtime")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    let stream = TcpStream::connect(&authority).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the handshake through the gateway");
    (socket, response.headers().clone())
}

/// The next server event (text messages only), within 5 s.
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a server event within 5 s")
            .expect("the session is open")
            .expect("a valid message");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("a JSON event");
        }
    }
}

/// One user turn: the item, then `response.create`; returns the text deltas joined and the
/// `response.done` usage.
async fn turn(socket: &mut Socket, text: &str) -> (String, Value) {
    let item = json!({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}],
    }});
    socket
        .send(Message::Text(item.to_string().into()))
        .await
        .unwrap();
    assert_eq!(
        next_event(socket).await["type"],
        "conversation.item.created"
    );
    let create = json!({"type": "response.create", "response": {"modalities": ["text"]}});
    socket
        .send(Message::Text(create.to_string().into()))
        .await
        .unwrap();
    let mut said = String::new();
    loop {
        let event = next_event(socket).await;
        match event["type"].as_str().unwrap() {
            "response.text.delta" => said.push_str(event["delta"].as_str().unwrap()),
            "response.done" => return (said, event["response"]["usage"].clone()),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_realtime_session_goes_through_with_the_key_and_model_injected_and_usage_counted() {
    let provider = mock("rt").await;
    let node = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    realtime_route(
        &node,
        vec![realtime_target(&provider, json!({}))],
        json!({}),
    )
    .await;

    // As Kong's own realtime test: only the beta header, no key, no model. The client offers
    // compression; the gateway, which reads the messages, keeps it out of the handshake.
    let (mut socket, headers) = connect(
        &node,
        &[
            ("openai-beta", "realtime=v1"),
            ("sec-websocket-extensions", "permessage-deflate"),
        ],
    )
    .await;
    assert_eq!(
        headers.get("x-sluice-llm-model").unwrap(),
        &format!("openai/{MODEL}")
    );
    let created = next_event(&mut socket).await;
    assert_eq!(created["type"], "session.created");
    assert_eq!(created["session"]["model"], MODEL);

    let (said, usage) = turn(&mut socket, "one two three").await;
    assert_eq!(said, DEFAULT_REPLY);
    assert_eq!(usage["input_tokens"], 3);
    assert_eq!(usage["output_tokens"], 6);
    // The model reads the whole conversation on each turn: 3 + 2 input words.
    let (_, usage) = turn(&mut socket, "four five").await;
    assert_eq!(usage["input_tokens"], 5);

    // An event the API does not know is the provider's error event, and the session goes on.
    socket
        .send(Message::Text(r#"{"type":"no.such.event"}"#.into()))
        .await
        .unwrap();
    let error = next_event(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    socket.close(None).await.unwrap();

    let handshake = &provider.requests()[0];
    assert_eq!(handshake.path, "/v1/realtime");
    assert_eq!(
        handshake.query.as_deref(),
        Some(format!("model={MODEL}").as_str())
    );
    assert_eq!(
        handshake.header("authorization"),
        Some("Bearer sk-provider")
    );
    assert_eq!(handshake.header("openai-beta"), Some("realtime=v1"));
    assert_eq!(handshake.header("sec-websocket-extensions"), None);

    // The session's record, once it closed: both responses' usage, Kong's realtime mode.
    let records = node.ai_records(1).await;
    assert_eq!(records.len(), 1, "{records:?}\n{}", node.logs());
    let proxy = &records[0]["ai"]["proxy"];
    assert_eq!(proxy["meta"]["request_mode"], "realtime");
    assert_eq!(proxy["meta"]["route_type"], "realtime/v1/realtime");
    assert_eq!(proxy["meta"]["request_model"], MODEL);
    assert_eq!(proxy["meta"]["response_model"], MODEL);
    assert_eq!(proxy["meta"]["status"], 101);
    assert_eq!(proxy["usage"]["prompt_tokens"], 8);
    assert_eq!(proxy["usage"]["completion_tokens"], 12);
    assert_eq!(proxy["usage"]["total_tokens"], 20);
    // (8 × 5 + 12 × 20) / 1e6
    let cost = proxy["usage"]["cost"].as_f64().unwrap();
    assert!((cost - 0.00028).abs() < 1e-12, "{cost}");
}

#[tokio::test]
async fn a_failed_handshake_fails_over_to_the_next_target() {
    let (first, second) = (mock("first").await, mock("second").await);
    first.fail_with(Some(503));
    let node = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    realtime_route(
        &node,
        vec![
            realtime_target(&first, json!({"weight": 100})),
            realtime_target(&second, json!({"weight": 10})),
        ],
        json!({"algorithm": "priority", "retries": 2, "failover_criteria": ["error", "http_503"]}),
    )
    .await;
    let (mut socket, headers) = connect(&node, &[("openai-beta", "realtime=v1")]).await;
    assert_eq!(headers.get("x-mock-name").unwrap(), "second");
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    let (said, _) = turn(&mut socket, "hello").await;
    assert_eq!(said, DEFAULT_REPLY);
    socket.close(None).await.unwrap();
    assert_eq!(
        first.requests().len(),
        1,
        "the failed handshake was tried once"
    );

    let records = node.ai_records(1).await;
    let meta = &records[0]["ai"]["proxy"]["meta"];
    assert_eq!(meta["attempts"], 2, "{meta}");
}

#[tokio::test]
async fn a_plain_request_on_a_websocket_route_is_told_to_upgrade() {
    let provider = mock("rt").await;
    let node = Sluice::start().await;
    realtime_route(
        &node,
        vec![realtime_target(&provider, json!({}))],
        json!({}),
    )
    .await;
    let response = node.through("GET", "/realtime").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers().get("upgrade").unwrap(), "websocket");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Please use WebSocket protocol");
    assert!(provider.requests().is_empty(), "nothing went upstream");
}

#[tokio::test]
async fn realtime_and_websocket_misconfigurations_are_refused_naming_the_field() {
    let provider = mock("rt").await;
    let node = Sluice::start().await;
    let target = realtime_target(&provider, json!({}));

    // Kong EE's ws route rules.
    let (status, body) = node
        .post(
            "/routes",
            json!({"paths": ["/x"], "protocols": ["ws"], "methods": ["GET"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["fields"]["methods"],
        "cannot set 'methods' when 'protocols' is 'ws' or 'wss'"
    );
    let (status, body) = node
        .post("/routes", json!({"paths": ["/x"], "protocols": ["ws"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["fields"]["service"],
        "WebSocket routes must be attached to a service"
    );
    let (status, body) = node
        .post(
            "/services",
            json!({"name": "plain", "url": "http://example.test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post(
            "/services/plain/routes",
            json!({"paths": ["/x"], "protocols": ["ws", "wss"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["fields"]["protocols"],
        "route/service protocol mismatch"
    );
    let (status, body) = node
        .post(
            "/routes",
            json!({"paths": ["/x"], "protocols": ["http", "ws"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["fields"]["protocols"]
            .as_str()
            .unwrap()
            .contains("('ws', 'wss')"),
        "{body}"
    );

    // A realtime target on an http route, or on plain ai-proxy.
    let (status, body) = node
        .post(
            "/services/plain/routes",
            json!({"name": "web", "paths": ["/web"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post(
            "/routes/web/plugins",
            json!({"name": "ai-proxy-advanced", "config": {"targets": [target]}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["fields"]["config"]["targets"][0]["route_type"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(message.contains("needs a WebSocket route"), "{message}");
    let mut single = target.clone();
    single.as_object_mut().unwrap().remove("logging");
    let (status, body) = node
        .post("/plugins", json!({"name": "ai-proxy", "config": single}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["fields"]["config"]["route_type"]
            .as_str()
            .unwrap_or_default()
            .contains("only available with the ai-proxy-advanced plugin"),
        "{body}"
    );
    assert_eq!(node.count("plugins").await, 0, "nothing was written");

    // The same rules in a declarative file: the sync is refused whole.
    let file = node.dir.join("realtime.yaml");
    let config = json!({
        "_format_version": "3.0",
        "services": [{"name": "svc", "url": "http://example.test", "routes": [
            {"name": "http-rt", "paths": ["/rt"], "plugins": [
                {"name": "ai-proxy-advanced", "config": {"targets": [target]}},
            ]},
        ]}],
    });
    std::fs::write(&file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let (ok, _, stderr) = node.deck(&["sync", file.to_str().unwrap()]);
    assert!(!ok, "the sync was refused");
    assert!(stderr.contains("targets[0].route_type"), "{stderr}");
    assert!(stderr.contains("needs a WebSocket route"), "{stderr}");
    assert_eq!(
        node.count("services").await,
        1,
        "only `plain`: nothing written"
    );
}
