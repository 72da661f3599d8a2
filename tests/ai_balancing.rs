//! ai-proxy-advanced (the AI load-balancing issue): several mock providers behind one route,
//! balanced, failed over within one client request, and taken out of rotation by the circuit
//! breaker, through the real binary. Kong 3.13's ai-proxy-advanced is the reference for the
//! config; nginx's `proxy_next_upstream` for what a failure criterion means.

mod common;

use common::Sluice;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_mock_llm::{MockConfig, MockHandle};

async fn mocks(names: &[&str]) -> Vec<MockHandle> {
    let mut started = Vec::new();
    for name in names {
        let config = MockConfig {
            name: Some((*name).to_owned()),
            ..MockConfig::openai()
        };
        started.push(sluice_mock_llm::start(config).await.expect("mock"));
    }
    started
}

/// A target for `mock`, with model `model` and `extra` fields (weight, description, ...).
fn target(mock: &MockHandle, model: &str, extra: Value) -> Value {
    let mut target = json!({
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"},
        "model": {"provider": "openai", "name": model, "options": {"upstream_url": mock.url()}},
        "logging": {"log_statistics": true},
    });
    for (key, value) in extra.as_object().unwrap() {
        if key == "model_alias" {
            target["model"]["model_alias"] = value.clone();
        } else {
            target[key] = value.clone();
        }
    }
    target
}

/// A route `/lb` with ai-proxy-advanced over `targets` and `balancer`.
async fn balanced(node: &Sluice, targets: Vec<Value>, balancer: Value) {
    let (status, body) = node
        .post("/routes", json!({"name": "lb", "paths": ["/lb"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post(
            "/routes/lb/plugins",
            json!({"name": "ai-proxy-advanced", "config": {"targets": targets, "balancer": balancer}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.wait_for_served(node.config_version().await).await;
}

/// `body` POSTed to `/lb` with `headers`: status, the mock that answered (`x-mock-name`),
/// `x-sluice-llm-attempts`, and the body text.
async fn post_lb(
    node: &Sluice,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String, String) {
    let mut request = node.through("POST", "/lb").json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (status, served_by, attempts) = (
        response.status(),
        header("x-mock-name"),
        header("x-sluice-llm-attempts"),
    );
    (
        status,
        served_by,
        attempts,
        response.text().await.unwrap_or_default(),
    )
}

/// One chat through `/lb`: status, the mock that answered, attempts, the JSON body.
async fn chat(
    node: &Sluice,
    headers: &[(&str, &str)],
    model: Option<&str>,
) -> (StatusCode, String, String, Value) {
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    let (status, served_by, attempts, text) = post_lb(node, body, headers).await;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, served_by, attempts, body)
}

#[tokio::test]
async fn weighted_round_robin_shares_requests_by_weight() {
    let m = mocks(&["a", "b"]).await;
    let node = Sluice::start().await;
    balanced(
        &node,
        vec![
            target(&m[0], "gpt-a", json!({"weight": 300})),
            target(&m[1], "gpt-b", json!({"weight": 100})),
        ],
        json!({"algorithm": "round-robin"}),
    )
    .await;
    let mut a = 0;
    for _ in 0..40 {
        let (status, served_by, _, body) = chat(&node, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if served_by == "a" {
            a += 1;
        }
    }
    // Smooth weighted round-robin is exact over a full cycle; allow one cycle of slack.
    assert!((28..=32).contains(&a), "3:1 of 40 is 30 to a: {a}");
}

#[tokio::test]
async fn priority_fails_over_within_one_request_and_recovers() {
    let m = mocks(&["primary", "backup"]).await;
    let node = Sluice::start().await;
    balanced(
        &node,
        vec![
            target(&m[0], "gpt-4o", json!({"weight": 100})),
            target(&m[1], "gpt-4o-mini", json!({"weight": 1})),
        ],
        json!({"algorithm": "priority",
               "failover_criteria": ["error", "timeout", "http_500", "http_429", "non_idempotent"]}),
    )
    .await;
    let (status, served_by, attempts, _) = chat(&node, &[], None).await;
    assert_eq!(
        (status, served_by.as_str(), attempts.as_str()),
        (StatusCode::OK, "primary", "1")
    );

    // The primary fails: the client still gets one answer, from the backup, in one request.
    for failure in [500, 429] {
        m[0].fail_with(Some(failure));
        let (status, served_by, attempts, body) = chat(&node, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{failure}: {body}");
        assert_eq!(
            (served_by.as_str(), attempts.as_str()),
            ("backup", "2"),
            "{failure}"
        );
        assert_eq!(body["model"], "gpt-4o-mini", "the answer is the backup's");
        let usage = &body["usage"];
        assert!(usage["total_tokens"].as_u64() > Some(0), "{body}");
    }
    // A 400 is the caller's problem: returned as it is, never retried.
    m[0].fail_with(Some(400));
    let backup_calls = m[1].requests().len();
    let (status, served_by, attempts, body) = chat(&node, &[], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!((served_by.as_str(), attempts.as_str()), ("primary", "1"));
    assert_eq!(m[1].requests().len(), backup_calls);
    // Recovery: the primary takes the traffic again.
    m[0].fail_with(None);
    let (status, served_by, _, _) = chat(&node, &[], None).await;
    assert_eq!((status, served_by.as_str()), (StatusCode::OK, "primary"));
}

#[tokio::test]
async fn without_non_idempotent_a_sent_post_is_not_retried() {
    // Kong's default criteria are error and timeout; a 500 to a POST stays the answer.
    let m = mocks(&["primary", "backup"]).await;
    let node = Sluice::start().await;
    balanced(
        &node,
        vec![
            target(&m[0], "gpt-4o", json!({"weight": 100})),
            target(&m[1], "gpt-4o", json!({"weight": 1})),
        ],
        json!({"algorithm": "priority", "failover_criteria": ["error", "timeout", "http_500"]}),
    )
    .await;
    m[0].fail_with(Some(500));
    let (status, served_by, attempts, _) = chat(&node, &[], None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!((served_by.as_str(), attempts.as_str()), ("primary", "1"));
    assert!(m[1].requests().is_empty());
}

#[tokio::test]
async fn the_circuit_breaker_opens_answers_at_once_when_all_are_open_and_closes() {
    let m = mocks(&["a", "b"]).await;
    let node = Sluice::start().await;
    balanced(
        &node,
        vec![
            target(
                &m[0],
                "gpt-4o",
                json!({"weight": 100, "description": "openai-a"}),
            ),
            target(
                &m[1],
                "gpt-4o",
                json!({"weight": 1, "description": "openai-b"}),
            ),
        ],
        json!({"algorithm": "priority", "max_fails": 1, "fail_timeout": 1000,
               "failover_criteria": ["error", "http_503", "non_idempotent"]}),
    )
    .await;
    for mock in &m {
        mock.fail_with(Some(503));
    }
    // Both fail: the client sees the last failure, and both circuits are now open.
    let (status, _, attempts, _) = chat(&node, &[], None).await;
    assert_eq!(
        (status, attempts.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "2")
    );
    let calls = m[0].requests().len() + m[1].requests().len();
    let (status, _, _, body) = chat(&node, &[], None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("openai-a") && message.contains("openai-b"),
        "it says which targets are open: {message}"
    );
    assert_eq!(
        m[0].requests().len() + m[1].requests().len(),
        calls,
        "no upstream call"
    );

    // The providers recover; after fail_timeout the targets are tried again.
    for mock in &m {
        mock.fail_with(None);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, served_by, _, _) = chat(&node, &[], None).await;
        if status == StatusCode::OK {
            assert_eq!(served_by, "a", "the primary again");
            let (_, targets) = node.get("/ai/targets").await;
            assert_eq!(
                targets["data"][0]["targets"][0]["circuit"], "closed",
                "{targets}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the circuit never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn consistent_hashing_keeps_a_key_on_one_target() {
    let m = mocks(&["a", "b", "c"]).await;
    let node = Sluice::start().await;
    balanced(
        &node,
        m.iter()
            .enumerate()
            .map(|(i, mock)| target(mock, "gpt-4o", json!({"description": format!("t{i}")})))
            .collect(),
        json!({"algorithm": "consistent-hashing", "hash_on_header": "X-User"}),
    )
    .await;
    let mut owners = std::collections::BTreeMap::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let (status, served_by, _, _) = chat(&node, &[("x-user", &user)], None).await;
            assert_eq!(status, StatusCode::OK);
            seen.insert(served_by);
        }
        assert_eq!(seen.len(), 1, "{user} stays on one target: {seen:?}");
        owners.insert(user, seen.into_iter().next().unwrap());
    }
    let used: std::collections::BTreeSet<_> = owners.values().collect();
    assert!(used.len() >= 2, "keys spread over targets: {owners:?}");
}

#[tokio::test]
async fn lowest_latency_prefers_the_faster_target() {
    let slow = sluice_mock_llm::start(MockConfig {
        name: Some("slow".to_owned()),
        latency: std::time::Duration::from_millis(80),
        ..MockConfig::openai()
    })
    .await
    .unwrap();
    let fast = mocks(&["fast"]).await.remove(0);
    let node = Sluice::start().await;
    balanced(
        &node,
        vec![
            target(&slow, "gpt-4o", json!({})),
            target(&fast, "gpt-4o", json!({})),
        ],
        json!({"algorithm": "lowest-latency"}),
    )
    .await;
    let mut fast_count = 0;
    for _ in 0..12 {
        let (status, served_by, _, _) = chat(&node, &[], None).await;
        assert_eq!(status, StatusCode::OK);
        if served_by == "fast" {
            fast_count += 1;
        }
    }
    // Each target is measured once at least; then the faster one wins.
    assert!(fast_count >= 10, "fast served {fast_count} of 12");
}

#[tokio::test]
async fn a_model_alias_picks_its_targets_and_an_unknown_one_is_refused() {
    let m = mocks(&["cheap", "smart"]).await;
    let node = Sluice::start().await;
    balanced(
        &node,
        vec![
            target(&m[0], "gpt-4o-mini", json!({"model_alias": "fast"})),
            target(&m[1], "gpt-4o", json!({"model_alias": "best"})),
        ],
        json!({}),
    )
    .await;
    for _ in 0..3 {
        let (status, served_by, _, body) = chat(&node, &[], Some("best")).await;
        assert_eq!(
            (status, served_by.as_str()),
            (StatusCode::OK, "smart"),
            "{body}"
        );
        assert_eq!(
            body["model"], "gpt-4o",
            "the target's model is what the provider got"
        );
    }
    let (status, served_by, _, _) = chat(&node, &[], Some("fast")).await;
    assert_eq!((status, served_by.as_str()), (StatusCode::OK, "cheap"));
    let (status, _, _, body) = chat(&node, &[], Some("gpt-5")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("gpt-5"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_ai_proxy_advanced_configs_are_refused_naming_the_target() {
    let m = mocks(&["a"]).await;
    let node = Sluice::start().await;
    let with = |targets: Vec<Value>, balancer: Value| json!({"name": "ai-proxy-advanced", "config": {"targets": targets, "balancer": balancer}});
    let good = target(&m[0], "gpt-4o", json!({}));
    let mut xai_embeddings = target(&m[0], "grok-4", json!({}));
    xai_embeddings["route_type"] = json!("llm/v1/embeddings");
    xai_embeddings["model"]["provider"] = json!("xai");
    let cases = [
        (with(vec![], json!({})), "config.targets", ""),
        (
            with(vec![good.clone(), xai_embeddings], json!({})),
            "config.targets.1.route_type",
            "xai",
        ),
        (
            with(
                vec![target(&m[0], "gpt-4o", json!({"weight": 0}))],
                json!({}),
            ),
            "config.targets",
            "between 1 and 65535",
        ),
        (
            with(vec![good.clone()], json!({"algorithm": "semantic"})),
            "config.balancer.algorithm",
            "semantic",
        ),
        (
            with(
                vec![good.clone()],
                json!({"algorithm": "consistent-hashing", "hash_on_header": ""}),
            ),
            "config.balancer.hash_on_header",
            "",
        ),
        (
            with(
                vec![good.clone()],
                json!({"max_fails": 3, "fail_timeout": 0}),
            ),
            "config.balancer.fail_timeout",
            "",
        ),
    ];
    node.assert_plugins_refused(&cases).await;
    assert_eq!(node.count("plugins").await, 0);
}

/// A streamed chat through `/lb`: status, the mock that answered, and the body text.
async fn stream_chat(node: &Sluice, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    let (status, served_by, _, text) = post_lb(node, body, headers).await;
    (status, served_by, text)
}

#[tokio::test]
async fn streams_fail_over_until_content_reaches_the_client() {
    let m = mocks(&["primary", "backup"]).await;
    let node = Sluice::start().await;
    balanced(
        &node,
        vec![
            target(&m[0], "gpt-4o", json!({"weight": 100})),
            target(&m[1], "gpt-4o", json!({"weight": 1})),
        ],
        json!({"algorithm": "priority"}),
    )
    .await;
    for fault in [
        sluice_mock_llm::STREAM_CUT,
        sluice_mock_llm::STREAM_ERROR_FIRST,
    ] {
        m[0].stream_fault(fault);
        let (status, served_by, text) = stream_chat(&node, &[]).await;
        assert_eq!(
            (status, served_by.as_str()),
            (StatusCode::OK, "backup"),
            "{fault}: {text}"
        );
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "one clean stream: {text}"
        );
        assert!(
            !text.contains("event: error"),
            "the failed start never reached the client"
        );
        let events = text.matches("data: ").count();
        assert!(events > 2, "{text}");
    }
    m[0].stream_fault(0);

    // Once content has reached the client, a cut ends the stream with an error event (in
    // the format OpenAI's SDKs raise on), never as if the answer were whole.
    let (status, served_by, text) = stream_chat(&node, &[("x-mock-cut-after", "3")]).await;
    assert_eq!((status, served_by.as_str()), (StatusCode::OK, "primary"));
    assert!(text.contains("\"content\""), "content came first: {text}");
    assert!(text.trim_end().ends_with("}"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn connection_errors_and_timeouts_fail_over_and_the_record_names_the_targets() {
    let slow = sluice_mock_llm::start(MockConfig {
        name: Some("slow".to_owned()),
        latency: std::time::Duration::from_secs(3),
        ..MockConfig::openai()
    })
    .await
    .unwrap();
    let good = mocks(&["good"]).await.remove(0);
    // A target nobody listens on.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let node = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    let mut dead = target(
        &good,
        "gpt-4o",
        json!({"weight": 100, "description": "dead"}),
    );
    dead["model"]["options"]["upstream_url"] = json!(closed);
    balanced(
        &node,
        vec![
            dead,
            target(
                &slow,
                "gpt-4o",
                json!({"weight": 50, "description": "slow"}),
            ),
            target(
                &good,
                "gpt-4o-mini",
                json!({"weight": 1, "description": "good"}),
            ),
        ],
        // Timeouts of a sent POST need non_idempotent (nginx); a refused connection does not.
        json!({"algorithm": "priority", "failover_criteria": ["error", "timeout", "non_idempotent"],
               "connect_timeout": 200, "write_timeout": 200, "read_timeout": 400}),
    )
    .await;
    let (status, served_by, attempts, body) = chat(&node, &[], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((served_by.as_str(), attempts.as_str()), ("good", "3"));
    assert_eq!(
        slow.requests().len(),
        1,
        "the slow target was tried and timed out"
    );

    let records = node.ai_records(1).await;
    let meta = &records.last().expect("a log record")["ai"]["proxy"]["meta"];
    assert_eq!(meta["attempts"], 3, "{meta}");
    assert_eq!(
        meta["targets_tried"],
        json!(["dead", "slow", "good"]),
        "{meta}"
    );
    assert_eq!(
        meta["request_model"], "gpt-4o-mini",
        "accounting is the answering target's"
    );
}

#[tokio::test]
async fn the_whole_xai_rest_api_behind_one_route_with_the_key_injected() {
    let mock = sluice_mock_llm::start(MockConfig::xai()).await.unwrap();
    let node = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    let (status, _) = node
        .post("/routes", json!({"name": "xai", "paths": ["/xai"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = node
        .post(
            "/routes/xai/plugins",
            json!({"name": "ai-proxy", "config": {
                "route_type": "preserve",
                "auth": {"header_name": "Authorization", "header_value": "Bearer xai-gateway"},
                "model": {"provider": "xai", "options": {"upstream_url": mock.url()}},
                "logging": {"log_statistics": true}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.wait_for_served(node.config_version().await).await;

    let chat = json!({"model": "grok-4", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello there"}]});
    let calls: Vec<(&str, &str, Option<Value>, &str)> = vec![
        ("POST", "/v1/messages", Some(chat.clone()), "message"),
        (
            "POST",
            "/v1/complete",
            Some(json!({"model": "grok-4", "prompt": "\n\nHuman: hi\n\nAssistant:"})),
            "completion",
        ),
        (
            "POST",
            "/v1/tokenize-text",
            Some(json!({"model": "grok-4", "text": "one two"})),
            "token_ids",
        ),
        ("GET", "/v1/language-models", None, "models"),
        ("GET", "/v1/language-models/grok-4", None, "grok-4"),
        ("GET", "/v1/image-generation-models", None, "models"),
        (
            "GET",
            "/v1/image-generation-models/grok-2-image",
            None,
            "grok-2-image",
        ),
        ("GET", "/v1/models/grok-4", None, "grok-4"),
        ("GET", "/v1/api-key", None, "redacted_api_key"),
        (
            "GET",
            "/v1/chat/deferred-completion/req-1",
            None,
            "chat.completion",
        ),
        ("GET", "/v1/responses/resp_1", None, "resp_1"),
        ("DELETE", "/v1/responses/resp_1", None, "resp_1"),
    ];
    for (method, path, body, expect) in &calls {
        let mut request = node
            .through(method, &format!("/xai{path}"))
            .header("authorization", "Bearer the-clients-own");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{method} {path}: {text}");
        assert!(text.contains(expect), "{method} {path}: {text}");
        let sent = mock.last_request().unwrap();
        assert_eq!(sent.path, *path, "the path is xAI's own");
        assert_eq!(
            sent.header("authorization"),
            Some("Bearer xai-gateway"),
            "{path}"
        );
    }
    // Usage is counted wherever the answer carries it: Anthropic-format messages
    // (input/output tokens) and the deferred chat completion.
    let records = node.ai_records(calls.len()).await;
    let usages: Vec<u64> = records
        .iter()
        .map(|r| {
            r["ai"]["proxy"]["usage"]["total_tokens"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert!(usages[0] > 0, "messages: {:?}", records[0]);
    assert_eq!(
        records[0]["ai"]["proxy"]["usage"]["prompt_tokens"], 2,
        "{:?}",
        records[0]
    );
    assert!(usages[9] > 0, "deferred completion: {:?}", records[9]);
    assert!(
        !node.logs().contains("xai-gateway"),
        "the key is never logged"
    );
}

/// A provider whose every answer is not HTTP: a status line, then a header line without a
/// colon. Returns its URL; the listener task lives as long as the test's runtime.
async fn garbled_provider() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nthis is not a header\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_invalid_response_header_fails_over_only_when_the_criteria_name_it() {
    let good = mocks(&["good"]).await.remove(0);
    let garbled = garbled_provider().await;
    let node = Sluice::start().await;
    let mut broken = target(&good, "gpt-4o", json!({"weight": 100}));
    broken["model"]["options"]["upstream_url"] = json!(garbled);
    let targets = vec![broken, target(&good, "gpt-4o", json!({"weight": 1}))];
    balanced(
        &node,
        targets,
        json!({"algorithm": "priority", "failover_criteria": ["invalid_header", "non_idempotent"]}),
    )
    .await;
    let (status, served_by, attempts, body) = chat(&node, &[], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((served_by.as_str(), attempts.as_str()), ("good", "2"));

    // Without invalid_header (or error) in the list, the client gets the gateway's 502 in
    // OpenAI's shape and the second target is never asked.
    let (_, plugins) = node.get("/plugins").await;
    let id = plugins["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = node
        .patch(
            &format!("/plugins/{id}"),
            json!({"config": {"balancer": {"failover_criteria": ["timeout", "http_500", "non_idempotent"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.wait_for_served(node.config_version().await).await;
    let before = good.requests().len();
    let (status, _, _, body) = chat(&node, &[], None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(good.requests().len(), before, "no failover");
}
