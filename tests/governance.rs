//! Governing and observing AI traffic (the governance issue): metrics in Kong's names read
//! with a real OpenMetrics parser, log shipping, token budgets, and limits shared through
//! Redis, through the real binary and the mock provider. Kong 3.10 is the reference.

mod common;

use common::{send, Sluice};
use openmetrics_parser::openmetrics::parse_openmetrics;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The sum of the samples named `sample` (as exposed: `kong_http_requests_total`,
/// `..._count`) whose labels include all of `labels`; `None` when there is no such sample.
fn metric(text: &str, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use openmetrics_parser::OpenMetricsValue as V;
    let exposition = parse_openmetrics(text).expect("GET /metrics parses as OpenMetrics");
    let (family, suffix) = ["_total", "_count", "_sum", ""].iter().find_map(|suffix| {
        let name = sample.strip_suffix(suffix)?;
        exposition.families.get(name).map(|f| (f, *suffix))
    })?;
    let mut found = None;
    for s in family.iter_samples() {
        let set = s.get_labelset().expect("labels");
        if !labels
            .iter()
            .all(|(k, v)| set.get_label_value(k) == Some(*v))
        {
            continue;
        }
        let value = match (&s.value, suffix) {
            (V::Counter(c), _) => c.value.as_f64(),
            (V::Gauge(g), _) => g.as_f64(),
            (V::Histogram(h), "_count") => h.count.unwrap_or(0) as f64,
            (V::Histogram(h), "_sum") => h.sum.as_ref().map_or(0.0, |s| s.as_f64()),
            _ => continue,
        };
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// `GET /metrics` of the Admin API, polled until `ready` holds (the log phase runs just
/// after the last byte reaches the client) or 5 s pass.
async fn scrape(node: &Sluice, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = node.client.get(node.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        if ready(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn consumer_with_key(node: &Sluice, username: &str) {
    let (status, body) = node.post("/consumers", json!({"username": username})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post(
            &format!("/consumers/{username}/key-auth"),
            json!({"key": format!("{username}-key")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A route `/chat` with key-auth and ai-proxy (statistics logged) to the mock.
async fn ai_route(node: &Sluice, mock: &sluice_mock_llm::MockHandle, extra: &[Value]) {
    let (status, _) = node
        .post("/routes", json!({"name": "chat", "paths": ["/chat"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut plugins = vec![
        json!({"name": "key-auth"}),
        json!({"name": "ai-proxy", "config": {
            "route_type": "llm/v1/chat",
            "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"},
            "model": {"provider": "openai", "name": "gpt-4o", "options": {
                "upstream_url": mock.url(), "input_cost": 2.0, "output_cost": 8.0}},
            "logging": {"log_statistics": true},
        }}),
    ];
    plugins.extend_from_slice(extra);
    for plugin in plugins {
        let (status, body) = node.post("/routes/chat/plugins", plugin).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    node.wait_for_served(node.config_version().await).await;
}

/// A chat as `who`; returns the status and the usage the provider reported to the client.
async fn chat(node: &Sluice, who: &str, stream: bool) -> (StatusCode, Value) {
    let (status, _, text) = chat_raw(node, who, stream).await;
    if !stream {
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        return (status, body["usage"].clone());
    }
    (status, stream_usage(&text))
}

/// The usage chunk of a streamed answer: the last `data:` event with a `usage` object.
fn stream_usage(text: &str) -> Value {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .rfind(|event| event["usage"].is_object())
        .map(|event| event["usage"].clone())
        .unwrap_or(Value::Null)
}

const ALL_METRICS: &str = r#"{"name": "prometheus", "config": {"per_consumer": true,
    "status_code_metrics": true, "latency_metrics": true, "bandwidth_metrics": true,
    "ai_metrics": true}}"#;

#[tokio::test]
async fn metrics_count_what_the_provider_reported_and_survive_a_reload() {
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start().await;
    consumer_with_key(&node, "alice").await;
    consumer_with_key(&node, "bob").await;
    let (status, body) = node
        .post("/plugins", serde_json::from_str(ALL_METRICS).unwrap())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    ai_route(&node, &mock, &[]).await;

    let mut reported = [0u64; 3]; // prompt, completion, total, as the provider said
    for (who, stream) in [("alice", false), ("alice", true), ("bob", false)] {
        let (status, usage) = chat(&node, who, stream).await;
        assert_eq!(status, StatusCode::OK);
        for (slot, key) in ["prompt_tokens", "completion_tokens", "total_tokens"]
            .iter()
            .enumerate()
        {
            let tokens = usage[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key} in {usage}"));
            assert!(tokens > 0);
            reported[slot] += tokens;
        }
    }
    let (status, _) = send(node.through("POST", "/chat")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let ai = [("ai_provider", "openai"), ("ai_model", "gpt-4o")];
    let text = scrape(&node, |t| {
        metric(t, "kong_ai_llm_requests_total", &ai) == Some(3.0)
            && metric(t, "kong_http_requests_total", &[("code", "401")]) == Some(1.0)
    })
    .await;
    for (slot, token_type) in ["prompt_tokens", "completion_tokens", "total_tokens"]
        .iter()
        .enumerate()
    {
        let labels = [("ai_model", "gpt-4o"), ("token_type", *token_type)];
        assert_eq!(
            metric(&text, "kong_ai_llm_tokens_total", &labels),
            Some(reported[slot] as f64),
            "{token_type} equals what the provider reported\n{text}"
        );
    }
    // cost = (prompt * 2 + completion * 8) / 1e6
    let cost = metric(&text, "kong_ai_llm_cost_total", &ai).unwrap();
    let expected = (reported[0] as f64 * 2.0 + reported[1] as f64 * 8.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    assert_eq!(
        metric(&text, "kong_ai_llm_provider_latency_ms_count", &ai),
        Some(3.0)
    );

    let by = |consumer: &'static str, code: &'static str, source: &'static str| {
        metric(
            &text,
            "kong_http_requests_total",
            &[
                ("route", "chat"),
                ("service", ""),
                ("code", code),
                ("source", source),
                ("consumer", consumer),
            ],
        )
    };
    assert_eq!(by("alice", "200", "service"), Some(2.0), "{text}");
    assert_eq!(by("bob", "200", "service"), Some(1.0));
    assert_eq!(
        by("", "401", "kong"),
        Some(1.0),
        "key-auth's answer is Kong's own"
    );
    assert_eq!(
        metric(&text, "kong_request_latency_ms_count", &[("route", "chat")]),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &text,
            "kong_upstream_latency_ms_count",
            &[("route", "chat")]
        ),
        Some(3.0),
        "the 401 never went upstream"
    );
    let egress = metric(
        &text,
        "kong_bandwidth_bytes_total",
        &[("direction", "egress"), ("consumer", "alice")],
    );
    assert!(egress > Some(0.0), "{text}");
    assert_eq!(metric(&text, "kong_datastore_reachable", &[]), Some(1.0));
    assert!(text.contains("kong_node_info{node_id="), "{text}");
    assert!(!text.contains("sk-provider") && !text.contains("alice-key"));

    // A reload (any config change) recompiles every plugin; the counters go on.
    let (status, _) = node
        .post(
            "/services",
            json!({"name": "other", "url": "http://127.0.0.1:9"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let version = node.config_version().await;
    node.wait_for_served(version).await;
    assert_eq!(chat(&node, "bob", false).await.0, StatusCode::OK);
    let text = scrape(&node, |t| {
        metric(t, "kong_ai_llm_requests_total", &ai) == Some(4.0)
    })
    .await;
    assert_eq!(
        metric(&text, "kong_ai_llm_requests_total", &ai),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "kong_http_requests_total",
            &[("consumer", "bob"), ("code", "200")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "sluice_config_version", &[]),
        Some(version as f64)
    );
    assert!(metric(&text, "sluice_config_reload_duration_ms_count", &[]) >= Some(2.0));
}

#[tokio::test]
async fn metrics_flags_decide_what_is_recorded() {
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start().await;
    consumer_with_key(&node, "alice").await;
    // Only status codes, not per consumer, no AI metrics: Kong's defaults are all off.
    ai_route(
        &node,
        &mock,
        &[json!({"name": "prometheus", "config": {"status_code_metrics": true}})],
    )
    .await;
    assert_eq!(chat(&node, "alice", false).await.0, StatusCode::OK);
    let text = scrape(&node, |t| {
        metric(t, "kong_http_requests_total", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "kong_http_requests_total",
            &[("consumer", ""), ("code", "200")]
        ),
        Some(1.0),
        "per_consumer off: the consumer label is empty\n{text}"
    );
    assert_eq!(
        metric(&text, "kong_ai_llm_requests_total", &[]),
        None,
        "{text}"
    );
    assert_eq!(metric(&text, "kong_request_latency_ms_count", &[]), None);
    assert_eq!(metric(&text, "kong_bandwidth_bytes_total", &[]), None);

    // A flag that is not a boolean is refused, naming the field; nothing is written.
    let before = node.count("plugins").await;
    let (status, body) = node
        .post(
            "/plugins",
            json!({"name": "prometheus", "config": {"ai_metrics": "yes"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["fields"]["config"]["ai_metrics"].is_string(), "{body}");
    assert_eq!(node.count("plugins").await, before);
}

#[tokio::test]
async fn file_log_and_http_log_records_carry_the_usage() {
    use std::os::unix::fs::PermissionsExt;
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start().await;
    consumer_with_key(&node, "alice").await;
    let file = node.dir.join("ai.log");
    // The collector fails its first two sends: the queue retries them.
    let collector = common::collector::Collector::start(2).await;
    ai_route(
        &node,
        &mock,
        &[
            json!({"name": "file-log", "config": {"path": file.to_str().unwrap()}}),
            json!({"name": "http-log", "config": {
                "http_endpoint": collector.url("/logs"),
                "headers": {"X-Log-Token": "t0k"},
                "queue": {"max_batch_size": 2, "max_coalescing_delay": 0.5, "initial_retry_delay": 0.01},
            }}),
        ],
    )
    .await;

    let mut usages = Vec::new();
    for stream in [false, true] {
        let response = node
            .through("POST", "/chat")
            .header("apikey", "alice-key")
            .header("authorization", "Bearer client-secret")
            .json(&json!({"messages": [{"role": "user", "content": "hi"}], "stream": stream,
                "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        let usage = if stream {
            stream_usage(&text)
        } else {
            serde_json::from_str::<Value>(&text).unwrap()["usage"].clone()
        };
        usages.push(usage);
    }

    let lines = common::json_lines(&file, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, usage) in lines.iter().zip(&usages) {
        let logged = &line["ai"]["proxy"]["usage"];
        for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(logged[key], usage[key], "{key}: {line}");
        }
        assert_eq!(line["ai"]["proxy"]["meta"]["provider_name"], "openai");
        assert_eq!(line["ai"]["proxy"]["meta"]["request_model"], "gpt-4o");
        assert_eq!(line["consumer"]["username"], "alice");
        assert_eq!(line["response"]["status"], 200);
        assert_eq!(line["source"], "upstream");
        assert_eq!(
            line["request"]["headers"]["authorization"], "REDACTED",
            "{line}"
        );
        assert!(
            line["response"]["headers"]["content-type"].is_string(),
            "{line}"
        );
        assert!(!line.to_string().contains("client-secret"));
        assert!(!line.to_string().contains("sk-provider"));
    }
    assert_eq!(lines[1]["ai"]["proxy"]["meta"]["stream"], true);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // http-log: the same records, in batches (max_batch_size 2: always a JSON array), after
    // the two failed sends were retried.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let shipped: Vec<Value> = loop {
        let received = collector.wait_for(1).await;
        let records: Vec<Value> = received
            .iter()
            .flat_map(|(headers, body)| {
                assert_eq!(headers["x-log-token"], "t0k");
                assert_eq!(headers["content-type"], "application/json");
                let batch: Value = serde_json::from_slice(body).expect("JSON body");
                batch.as_array().expect("a batch is a JSON array").clone()
            })
            .collect();
        if records.len() >= 2 || std::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(shipped.len(), 2, "{shipped:?}");
    assert_eq!(
        collector.failed.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let shipped_total: u64 = shipped
        .iter()
        .map(|r| r["ai"]["proxy"]["usage"]["total_tokens"].as_u64().unwrap())
        .sum();
    let reported_total: u64 = usages
        .iter()
        .map(|u| u["total_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(shipped_total, reported_total);
}

#[tokio::test]
async fn a_hanging_collector_never_holds_a_response_and_drops_are_counted() {
    let node = Sluice::start().await;
    let collector = common::collector::Collector::start(0).await;
    collector
        .hang
        .store(true, std::sync::atomic::Ordering::SeqCst);
    node.echo_route(
        "shipped",
        json!(["/shipped"]),
        &[json!({"name": "http-log", "config": {
            "http_endpoint": collector.url("/logs"),
            "timeout": 200,
            "queue": {"max_entries": 2, "max_coalescing_delay": 0, "max_retry_time": 0},
        }})],
    )
    .await;
    // Every request is answered while the collector holds every send.
    for _ in 0..5 {
        let (status, _) = send(node.through("GET", "/shipped")).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Each record is lost in the end: pushed out of the full queue, or given up on after its
    // send timed out (max_retry_time 0).
    let dropped = [("plugin", "http-log")];
    let text = scrape(&node, |t| {
        metric(t, "sluice_log_entries_dropped_total", &dropped) == Some(5.0)
    })
    .await;
    assert_eq!(
        metric(&text, "sluice_log_entries_dropped_total", &dropped),
        Some(5.0),
        "{text}"
    );
}

#[tokio::test]
async fn bad_log_plugin_configs_are_refused_and_nothing_is_written() {
    let node = Sluice::start().await;
    let missing_dir = node.dir.join("no-such-dir").join("x.log");
    let cases = [
        (
            json!({"name": "file-log", "config": {"path": missing_dir.to_str().unwrap()}}),
            "config.path",
            "does not exist",
        ),
        (
            json!({"name": "file-log", "config": {"path": "/tmp/ovo*"}}),
            "config.path",
            "not a valid filename",
        ),
        (
            json!({"name": "file-log", "config": {}}),
            "config.path",
            "required field missing",
        ),
        (
            json!({"name": "file-log", "config": {"path": "/tmp/x.log", "custom_fields_by_lua": {"a": "return 1"}}}),
            "config.custom_fields_by_lua",
            "does not run Lua",
        ),
        (
            json!({"name": "http-log", "config": {"http_endpoint": "not a url"}}),
            "config.http_endpoint",
            "invalid url",
        ),
        (
            json!({"name": "http-log", "config": {"http_endpoint": "ftp://logs.example/x"}}),
            "config.http_endpoint",
            "unsupported scheme",
        ),
        (
            json!({"name": "http-log", "config": {"http_endpoint": "http://c.example", "headers": {"Host": "x"}}}),
            "config.headers",
            "cannot contain 'Host' header",
        ),
        (
            json!({"name": "http-log", "config": {"http_endpoint": "http://c.example", "method": "GET"}}),
            "config.method",
            "expected one of: POST, PUT, PATCH",
        ),
        (
            json!({"name": "http-log", "config": {"http_endpoint": "http://c.example", "queue": {"max_batch_size": 0}}}),
            "config.queue",
            "value should be between 1 and 1000000",
        ),
    ];
    node.assert_plugins_refused(&cases).await;
    assert_eq!(node.count("plugins").await, 0, "nothing was written");
    let (status, body) = node
        .post(
            "/plugins",
            json!({"name": "http-log", "config": {"http_endpoint": "http://u:p@c.example",
                "headers": {"Authorization": "Bearer x"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains(
            "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed"
        ),
        "{body}"
    );
}

/// The machine's Redis (`SLUICE_TEST_REDIS_URL`, set by `.ci/run`), as host and port.
fn redis() -> Option<(String, u16)> {
    let Ok(url) = std::env::var("SLUICE_TEST_REDIS_URL") else {
        eprintln!("skipped: SLUICE_TEST_REDIS_URL is not set (export redis://127.0.0.1:6379)");
        return None;
    };
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "6379"));
    Some((host.to_owned(), port.parse().expect("redis port")))
}

/// A service and route with these ids on `node`, to a fresh echo upstream, with `plugin`.
async fn limited_route(node: &Sluice, ids: (uuid::Uuid, uuid::Uuid), plugin: Value) {
    let upstream = common::upstream::start().await;
    let (status, body) = node
        .post(
            "/services",
            json!({"id": ids.0, "name": "limited", "url": format!("http://{upstream}")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post(
            "/services/limited/routes",
            json!({"id": ids.1, "name": "limited", "paths": ["/limited"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node.post("/routes/limited/plugins", plugin).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.wait_for_served(node.config_version().await).await;
}

/// A request through `node`'s `/limited`: status and `X-RateLimit-Remaining-Hour`.
async fn limited(node: &Sluice) -> (StatusCode, Option<String>, Value) {
    let response = node.through("GET", "/limited").send().await.unwrap();
    let status = response.status();
    let remaining = response
        .headers()
        .get("x-ratelimit-remaining-hour")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, remaining, body)
}

#[tokio::test]
async fn rate_limiting_through_redis_is_shared_by_two_nodes() {
    let Some((host, port)) = redis() else {
        return;
    };
    // Fresh ids: Kong's keys name the route and service, so this run counts on its own.
    let ids = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let plugin = json!({"name": "rate-limiting", "config": {
        "hour": 3, "policy": "redis", "redis": {"host": host, "port": port}}});
    let (a, b) = (Sluice::start().await, Sluice::start().await);
    limited_route(&a, ids, plugin.clone()).await;
    limited_route(&b, ids, plugin).await;

    let mut seen = Vec::new();
    for node in [&a, &b, &a] {
        let (status, remaining, _) = limited(node).await;
        assert_eq!(status, StatusCode::OK);
        seen.push(remaining.expect("the window's headers"));
    }
    assert_eq!(seen, ["2", "1", "0"], "one count across both nodes");
    let response = b.through("GET", "/limited").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "API rate limit exceeded");
}

#[tokio::test]
async fn a_redis_that_goes_away_is_survived_counting_locally() {
    let Some((host, port)) = redis() else {
        return;
    };
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = common::relay::Relay::start(target).await;
    let node = Sluice::start().await;
    let ids = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    limited_route(
        &node,
        ids,
        json!({"name": "rate-limiting", "config": {"hour": 2, "policy": "redis",
            "redis": {"host": "127.0.0.1", "port": relay.port, "timeout": 300}}}),
    )
    .await;
    let (status, remaining, _) = limited(&node).await;
    assert_eq!((status, remaining.as_deref()), (StatusCode::OK, Some("1")));

    relay.stop();
    // Served, never a 500, and still limited: by this node's own count (limit 2).
    assert_eq!(limited(&node).await.0, StatusCode::OK);
    assert_eq!(limited(&node).await.0, StatusCode::OK);
    assert_eq!(limited(&node).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        node.logs().contains("failed to get usage"),
        "{}",
        node.logs()
    );

    // Redis comes back: requests are counted there again (read straight from Redis).
    relay.resume().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = format!(
        "ratelimit:{}:{}:127.0.0.1:{}:hour",
        ids.1,
        ids.0,
        (now - now % 3600) * 1000
    );
    let before = redis_get(target, &key).await;
    assert!(
        before >= 1.0,
        "the first request was counted in redis: {before}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !node.logs().contains("redis answers again") {
        let (status, _, body) = limited(&node).await;
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "redis never counted again: {}",
            node.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        redis_get(target, &key).await > before,
        "counted in redis again"
    );
}

/// Waits (bounded) until the node's log has `text`: a line is written just after the
/// response that caused it.
async fn logged(node: &Sluice, text: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !node.logs().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "never logged {text:?}: {}",
            node.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `GET key` on the Redis at `addr`, as a number (0 when absent), over RESP by hand: the
/// test reads the shared store without going through Sluice.
async fn redis_get(addr: std::net::SocketAddr, key: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let command = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    stream.write_all(command.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buffer = [0u8; 256];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        reply.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&reply);
        if text.starts_with("$-1\r\n") {
            return 0.0;
        }
        // `$<len>\r\n<value>\r\n`
        let mut lines = text.split("\r\n");
        if let (Some(_), Some(value), Some(_)) = (lines.next(), lines.next(), lines.next()) {
            return value.parse().unwrap_or(0.0);
        }
        assert!(n > 0, "redis closed the connection: {text}");
    }
}

#[tokio::test]
async fn bad_rate_limiting_redis_configs_are_refused() {
    let node = Sluice::start().await;
    let cases = [
        (
            json!({"name": "rate-limiting", "config": {"minute": 1, "policy": "redis"}}),
            "config.redis.host",
            "required field missing",
        ),
        (
            json!({"name": "rate-limiting", "config": {"minute": 1, "sync_rate": 1}}),
            "config.sync_rate",
            "sync_rate can only be used with the redis policy",
        ),
        (
            json!({"name": "rate-limiting", "config": {"minute": 1, "policy": "redis",
                "sync_rate": 0.01, "redis": {"host": "127.0.0.1"}}}),
            "config.sync_rate",
            "sync_rate must be greater than 0.02, or -1 to disable",
        ),
    ];
    node.assert_plugins_refused(&cases).await;
    assert_eq!(node.count("plugins").await, 0);
}

/// A chat as `who` on `node`, returning the status, the headers and the body text.
async fn chat_raw(
    node: &Sluice,
    who: &str,
    stream: bool,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut body = json!({"messages": [{"role": "user", "content": format!("hello from {who}")}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let response = node
        .through("POST", "/chat")
        .header("apikey", format!("{who}-key"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn token_budgets_per_consumer_refuse_at_the_right_request_streaming_included() {
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start().await;
    for who in ["probe", "alice", "bob"] {
        consumer_with_key(&node, who).await;
    }
    ai_route(&node, &mock, &[]).await;
    // What one chat costs (the mock counts words: the same for every caller here).
    let (_, usage) = chat(&node, "probe", false).await;
    let tokens = usage["total_tokens"].as_u64().unwrap();
    assert!(tokens > 1);

    // A budget of two chats less one token: the second chat crosses it and completes; the
    // third is refused before it reaches the provider.
    let limit = 2 * tokens - 1;
    let (status, body) = node
        .post(
            "/routes/chat/plugins",
            json!({"name": "ai-rate-limiting-advanced", "config": {
                // Sliding (the default): a run that crosses the hour still sees the spend.
                "llm_providers": [{"name": "openai", "limit": [limit], "window_size": [3600]}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.wait_for_served(node.config_version().await).await;

    let remaining = |headers: &reqwest::header::HeaderMap| {
        headers["x-ai-ratelimit-remaining-hour-openai"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // The first is streamed: its usage is counted from the stream's usage chunk.
    let (status, headers, _) = chat_raw(&node, "alice", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-ai-ratelimit-limit-hour-openai"],
        limit.to_string().as_str()
    );
    assert_eq!(remaining(&headers), limit.to_string());
    let (status, headers, _) = chat_raw(&node, "alice", false).await;
    assert_eq!(status, StatusCode::OK, "the crossing request completes");
    assert_eq!(remaining(&headers), (limit - tokens).to_string());
    let calls = mock.requests().len();

    let (status, headers, text) = chat_raw(&node, "alice", false).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(
        mock.requests().len(),
        calls,
        "refused before any upstream call"
    );
    assert_eq!(remaining(&headers), "0");
    for name in [
        "x-ai-ratelimit-reset-hour-openai",
        "x-ai-ratelimit-retry-after-hour-openai",
        "x-ai-ratelimit-reset",
        "x-ai-ratelimit-retry-after",
        "retry-after",
    ] {
        let seconds: u64 = headers[name].to_str().unwrap().parse().unwrap();
        // Sliding: Kong adds the overshoot share of a window, so up to two windows.
        assert!((1..=7200).contains(&seconds), "{name}: {seconds}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["message"],
        "AI token rate limit exceeded for provider(s): openai"
    );
    assert_eq!(
        body["error"]["code"], "rate_limit_exceeded",
        "OpenAI's shape too"
    );

    // Bob's budget is his own.
    let (status, headers, _) = chat_raw(&node, "bob", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(remaining(&headers), limit.to_string());
}

#[tokio::test]
async fn two_nodes_share_one_token_budget_through_redis() {
    let Some((host, port)) = redis() else {
        return;
    };
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let namespace = format!("budget-{}", uuid::Uuid::new_v4());
    let budget = json!({"name": "ai-rate-limiting-advanced", "config": {
        "llm_providers": [{"name": "openai", "limit": [1], "window_size": [3600]}],
        "window_type": "fixed", "identifier": "ip", "namespace": namespace,
        "strategy": "redis", "sync_rate": 0, "redis": {"host": host, "port": port}}});
    let (a, b) = (Sluice::start().await, Sluice::start().await);
    for node in [&a, &b] {
        consumer_with_key(node, "alice").await;
        ai_route(node, &mock, std::slice::from_ref(&budget)).await;
    }
    let (status, headers, _) = chat_raw(&a, "alice", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-ai-ratelimit-remaining-hour-openai"], "1");

    // Node A adds the answer's tokens to Redis after the answer; wait until they are there.
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = format!(
        "ai-ratelimit:{namespace}:openai:127.0.0.1:{}:3600",
        now - now % 3600
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while redis_get(target, &key).await == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "node A never counted in redis"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _, text) = chat_raw(&b, "alice", false).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "node B sees A's spend: {text}"
    );
}

#[tokio::test]
async fn bad_token_budget_configs_are_refused() {
    let node = Sluice::start().await;
    let with = |providers: Value, extra: Value| {
        let mut config = json!({"llm_providers": providers});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        json!({"name": "ai-rate-limiting-advanced", "config": config})
    };
    let openai = json!([{"name": "openai", "limit": [100], "window_size": [60]}]);
    let cases = [
        (
            with(
                json!([{"name": "openai", "limit": [100, 1000], "window_size": [60]}]),
                json!({}),
            ),
            "config.llm_providers",
            "You must provide the same number of windows and limits",
        ),
        (
            with(
                json!([{"name": "openai", "limit": [100], "window_size": [0]}]),
                json!({}),
            ),
            "config.llm_providers",
            "value must be greater than 0",
        ),
        (
            with(
                json!([{"name": "openia", "limit": [100], "window_size": [60]}]),
                json!({}),
            ),
            "config.llm_providers",
            "expected one of",
        ),
        (
            with(openai.clone(), json!({"strategy": "redis", "sync_rate": 0})),
            "config.redis.host",
            "required field missing",
        ),
        (
            with(openai.clone(), json!({"sync_rate": 1})),
            "config.sync_rate",
            "sync_rate cannot be configured when using a local strategy",
        ),
        (
            with(openai.clone(), json!({"identifier": "header"})),
            "config.header_name",
            "No header name provided",
        ),
        (
            with(
                json!([{"name": "openai", "limit": [1], "window_size": [60]},
                       {"name": "openai", "limit": [2], "window_size": [60]}]),
                json!({}),
            ),
            "config.llm_providers",
            "Provider 'openai' is not unique",
        ),
    ];
    node.assert_plugins_refused(&cases).await;
    assert_eq!(node.count("plugins").await, 0);
}

#[tokio::test]
async fn the_governance_example_file_works_as_written() {
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start().await;
    // deck/ai-governance.yaml as shipped, pointed at the mock provider and a log file of
    // this test's own.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deck/ai-governance.yaml"),
    )
    .unwrap();
    let log = node.dir.join("calls.log");
    let file_text = example
        .replace(
            "            options:\n",
            &format!(
                "            options:\n              upstream_url: {}\n",
                mock.url()
            ),
        )
        .replace("/tmp/sluice-ai-calls.log", log.to_str().unwrap());
    assert_ne!(file_text, example);
    let file = node.dir.join("ai-governance.yaml");
    std::fs::write(&file, file_text).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["sync", file.to_str().unwrap()])
        .env("SLUICE_ADMIN_URL", &node.admin)
        .env("DECK_OPENAI_API_KEY", "sk-example")
        .env("DECK_TEAM_A_KEY", "team-a-secret")
        .env("DECK_TEAM_B_KEY", "team-b-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.wait_for_served(node.config_version().await).await;

    let call = |key: Option<&'static str>| {
        let mut request = node
            .through("POST", "/ai/chat")
            .json(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        if let Some(key) = key {
            request = request.header("apikey", key);
        }
        request.send()
    };
    assert_eq!(call(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let response = call(Some("team-a-secret")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-ai-ratelimit-limit-hour-openai"],
        "20000"
    );
    assert_eq!(
        response.headers()["x-ai-ratelimit-limit-day-openai"],
        "200000"
    );
    let response = call(Some("team-b-secret")).await.unwrap();
    assert_eq!(
        response.headers()["x-ai-ratelimit-limit-hour-openai"],
        "5000"
    );
    assert_eq!(
        mock.last_request().unwrap().header("authorization"),
        Some("Bearer sk-example"),
        "the gateway's key reaches the provider"
    );
    let text = scrape(&node, |t| {
        metric(t, "kong_ai_llm_requests_total", &[("consumer", "team-b")]) == Some(1.0)
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "kong_ai_llm_requests_total",
            &[("consumer", "team-a")]
        ),
        Some(1.0),
        "{text}"
    );
    // Every call is logged, the refused one too (as in Kong, the log phase runs for it).
    let lines = common::json_lines(&log, 3).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["response"]["status"], 401);
    assert!(lines[0].get("consumer").is_none());
    assert_eq!(lines[1]["consumer"]["username"], "team-a");
    assert!(lines[1]["ai"]["proxy"]["usage"]["cost"].as_f64().unwrap() > 0.0);
    assert_eq!(lines[2]["consumer"]["username"], "team-b");
}

#[tokio::test]
async fn a_token_budget_survives_its_redis_going_away() {
    let Some((host, port)) = redis() else {
        return;
    };
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = common::relay::Relay::start(target).await;
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start().await;
    consumer_with_key(&node, "alice").await;
    ai_route(
        &node,
        &mock,
        &[json!({"name": "ai-rate-limiting-advanced", "config": {
            "llm_providers": [{"name": "openai", "limit": [1], "window_size": [3600]}],
            "window_type": "fixed", "namespace": format!("down-{}", uuid::Uuid::new_v4()),
            "strategy": "redis", "sync_rate": 0,
            "redis": {"host": "127.0.0.1", "port": relay.port, "read_timeout": 300}}})],
    )
    .await;
    relay.stop();
    // Redis is gone: the first call is served and its tokens counted here; the budget still
    // holds, by this node's count.
    let (status, _, text) = chat_raw(&node, "alice", false).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, _, text) = chat_raw(&node, "alice", false).await;
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never held: {}",
            node.logs()
        );
    }
    logged(&node, "counting locally").await;
}
