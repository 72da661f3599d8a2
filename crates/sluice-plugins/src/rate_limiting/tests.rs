//! rate-limiting through its real factory and phases: the limit, Kong's answer and headers,
//! what it counts by, and counters that outlive a config swap. Windows are an hour long so
//! that no test straddles a window boundary.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{json, Value};
use sluice_plugin::{Flow, PluginHandler, ProxyRequest, RequestBody, RequestCtx};

use super::*;

fn plugin(id: Uuid, config: Value) -> sluice_model::Plugin {
    serde_json::from_value(json!({
        "id": id, "created_at": 1, "updated_at": 1, "name": "rate-limiting",
        "config": config, "protocols": ["http", "https"], "enabled": true,
    }))
    .expect("a plugin entity")
}

fn request(headers: &[(&str, &str)]) -> ProxyRequest {
    let mut builder = http::Request::builder().uri("/limited");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (parts, ()) = builder.body(()).expect("a request").into_parts();
    ProxyRequest {
        parts,
        body: RequestBody::Buffered(bytes::Bytes::new()),
    }
}

fn ctx(ip: [u8; 4]) -> RequestCtx {
    RequestCtx {
        request_id: "test".to_owned(),
        route_id: Uuid::nil(),
        service_id: None,
        labels: Default::default(),
        consumer_id: None,
        consumer: None,
        identities: Default::default(),
        client_addr: SocketAddr::from((ip, 5000)),
        started: Instant::now(),
        method: http::Method::GET,
        uri: http::Uri::from_static("/"),
        upstream: None,
        upstream_latency: None,
        path_suffix: "/".to_owned(),
        uri_captures: Vec::new(),
        status: 0,
        response_bytes: 0,
        request_bytes: 0,
        from_upstream: false,
        log: serde_json::Map::new(),
        ai: None,
        websocket: false,
    }
}

/// Runs the access phase (and, when it lets the request on, the header phase); returns the
/// status the client sees and the response headers.
async fn call(
    handler: &dyn PluginHandler,
    headers: &[(&str, &str)],
    ip: [u8; 4],
) -> (u16, http::HeaderMap) {
    let mut request = request(headers);
    let mut ctx = ctx(ip);
    let mut state = handler.new_state();
    match handler.access(&mut request, &mut ctx, &mut state).await {
        Flow::Respond(response) => (response.status().as_u16(), response.headers().clone()),
        Flow::Continue => {
            let (mut parts, ()) = http::Response::new(()).into_parts();
            handler.header_filter(&mut parts, &mut ctx, &mut state);
            (200, parts.headers)
        }
    }
}

#[tokio::test]
async fn the_limit_answers_kongs_429_with_its_headers_and_refusals_cost_nothing() {
    let factory = Factory::default();
    let handler = factory
        .build(&plugin(Uuid::new_v4(), json!({"hour": 2})))
        .unwrap();
    let (status, headers) = call(&*handler, &[], [10, 0, 0, 1]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit-hour"], "2");
    assert_eq!(headers["x-ratelimit-remaining-hour"], "1");
    assert_eq!(headers["ratelimit-limit"], "2");
    assert_eq!(call(&*handler, &[], [10, 0, 0, 1]).await.0, 200);
    for _ in 0..3 {
        let (status, headers) = call(&*handler, &[], [10, 0, 0, 1]).await;
        assert_eq!(status, 429);
        assert_eq!(headers["x-ratelimit-remaining-hour"], "0");
        assert!(headers.contains_key("retry-after"));
    }
    // Another client has its own window.
    assert_eq!(call(&*handler, &[], [10, 0, 0, 2]).await.0, 200);
}

#[tokio::test]
async fn what_it_counts_by_and_what_it_hides() {
    let factory = Factory::default();
    /// (config, whether the two requests share a window, their headers, their client IPs)
    type Case<'a> = (Value, bool, [&'a [(&'a str, &'a str)]; 2], [[u8; 4]; 2]);
    let cases: [Case; 3] = [
        (
            json!({"hour": 1, "limit_by": "header", "header_name": "X-Team"}),
            false,
            [&[("x-team", "a")], &[("x-team", "b")]],
            [[10, 0, 0, 1], [10, 0, 0, 1]],
        ),
        (
            json!({"hour": 1, "limit_by": "header", "header_name": "X-Team"}),
            true,
            [&[("x-team", "a")], &[("x-team", "a")]],
            [[10, 0, 0, 1], [10, 0, 0, 2]],
        ),
        (
            json!({"hour": 1, "limit_by": "ip"}),
            false,
            [&[], &[]],
            [[10, 0, 0, 1], [10, 0, 0, 2]],
        ),
    ];
    for (config, shared, headers, ips) in cases {
        let handler = factory
            .build(&plugin(Uuid::new_v4(), config.clone()))
            .unwrap();
        assert_eq!(call(&*handler, headers[0], ips[0]).await.0, 200, "{config}");
        let second = call(&*handler, headers[1], ips[1]).await.0;
        assert_eq!(second, if shared { 429 } else { 200 }, "{config}");
    }

    let hidden = factory
        .build(&plugin(
            Uuid::new_v4(),
            json!({"hour": 1, "hide_client_headers": true, "error_code": 503,
                "error_message": "slow down"}),
        ))
        .unwrap();
    let (status, headers) = call(&*hidden, &[], [10, 0, 0, 9]).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-ratelimit-limit-hour"));
    let (status, headers) = call(&*hidden, &[], [10, 0, 0, 9]).await;
    assert_eq!(status, 503, "error_code is honoured");
    assert!(!headers.contains_key("retry-after"));
}

#[tokio::test]
async fn counters_survive_a_rebuild_of_the_same_plugin() {
    // A config swap rebuilds every handler; the factory (and its counters) lives on.
    let factory = Factory::default();
    let id = Uuid::new_v4();
    let first = factory.build(&plugin(id, json!({"hour": 1}))).unwrap();
    assert_eq!(call(&*first, &[], [10, 0, 0, 1]).await.0, 200);
    let rebuilt = factory.build(&plugin(id, json!({"hour": 1}))).unwrap();
    assert_eq!(call(&*rebuilt, &[], [10, 0, 0, 1]).await.0, 429);
    // Another plugin instance counts on its own.
    let other = factory
        .build(&plugin(Uuid::new_v4(), json!({"hour": 1})))
        .unwrap();
    assert_eq!(call(&*other, &[], [10, 0, 0, 1]).await.0, 200);
}

#[test]
fn configs_it_cannot_run_are_refused_naming_the_field() {
    let factory = Factory::default();
    let cases = [
        (json!({}), None),
        (
            json!({"hour": 1, "policy": "redis"}),
            Some("config.redis.host"),
        ),
        (
            json!({"hour": 1, "policy": "cluster"}),
            Some("config.policy"),
        ),
        (json!({"hour": 1, "sync_rate": 5}), Some("config.sync_rate")),
        (
            json!({"hour": 1, "policy": "redis", "sync_rate": 0.01, "redis": {"host": "127.0.0.1"}}),
            Some("config.sync_rate"),
        ),
        (
            json!({"hour": 1, "limit_by": "header"}),
            Some("config.header_name"),
        ),
    ];
    for (config, field) in cases {
        let error = factory
            .check(&plugin(Uuid::new_v4(), config.clone()))
            .unwrap_err();
        assert_eq!(error.field.as_deref(), field, "{config}: {error}");
    }
    assert!(factory
        .check(&plugin(Uuid::new_v4(), json!({"day": 5})))
        .is_ok());
}
