//! Data-driven checks of validation: each case is an input and the error Kong would give.

use serde_json::{json, Value};

use super::*;
use crate::{Route, Service};

fn schemas() -> Schemas {
    Schemas::embedded().expect("embedded schemas load")
}

fn with_meta(mut input: Value) -> Map<String, Value> {
    input["id"] = json!("7c0e2c6e-8f55-4b5e-a6f6-8d3b0b1a2f10");
    input["created_at"] = json!(1);
    input["updated_at"] = json!(1);
    input.as_object().expect("object").clone()
}

/// `(kind, input, expected Kong message)`; `None` means valid.
fn check(kind: EntityKind, input: Value, expected: Option<&str>) {
    let got = schemas().check(kind, with_meta(input.clone()));
    match (got, expected) {
        (Ok(_), None) => {}
        (Err(v), Some(message)) => assert_eq!(v.message(), message, "input {input}"),
        (Ok(v), Some(message)) => panic!("expected `{message}` for {input}, got valid {v}"),
        (Err(v), None) => panic!("expected {input} to be valid, got `{}`", v.message()),
    }
}

#[test]
fn services() {
    use EntityKind::Service as S;
    check(S, json!({"host": "example.com"}), None);
    check(S, json!({"url": "https://example.com:8443/v1"}), None);
    check(
        S,
        json!({}),
        Some("schema violation (host: required field missing)"),
    );
    check(
        S,
        json!({"host": "a:1"}),
        Some("schema violation (host: must not have a port)"),
    );
    check(
        S,
        json!({"host": "x", "port": 0.5}),
        Some("schema violation (port: expected an integer)"),
    );
    check(S, json!({"host": "x", "protocol": "ftp"}), Some("schema violation (protocol: expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp, ws, wss)"));
    check(
        S,
        json!({"host": "x", "path": "/a//b"}),
        Some("schema violation (path: must not have empty segments)"),
    );
    check(
        S,
        json!({"host": "x", "path": "/a/../b"}),
        Some("schema violation (path: non-normalized path, consider use '/b' instead)"),
    );
    check(
        S,
        json!({"host": "x", "protocol": "tcp", "path": "/a"}),
        Some("schema violation (path: value must be null when 'protocol' is 'tcp')"),
    );
    check(
        S,
        json!({"host": "x", "tls_verify": true}),
        Some("schema violation (tls_verify: value must be null when 'protocol' is 'http')"),
    );
    check(
        S,
        json!({"url": "example.com"}),
        // Kong reads text without a scheme as a path (Kong 3.x, services_routes spec).
        Some("2 schema violations (host: required field missing; path: should start with: /)"),
    );
    check(S, json!({"host": "x", "tags": ["a,b"]}), Some("schema violation (tags.1: invalid tag 'a,b': expected printable ascii (except `,` and `/`) or valid utf-8 sequences)"));
    check(S, json!({"name": "ünïcode-ok", "host": "x"}), None);
    check(S, json!({"host": "x", "retries": -1, "read_timeout": 0}), Some("2 schema violations (read_timeout: value should be between 1 and 2147483646; retries: value should be between 0 and 32767)"));
}

#[test]
fn service_url_shorthand_fills_protocol_host_port_path() {
    let service: Service = schemas()
        .build(with_meta(json!({"url": "https://api.example.com"})))
        .expect("valid");
    assert_eq!(
        (
            service.protocol.as_str(),
            service.host.as_str(),
            service.port,
            service.path
        ),
        ("https", "api.example.com", 443, None)
    );
    let service: Service = schemas()
        .build(with_meta(json!({"url": "http://[::1]:9000/a/b?x=1"})))
        .expect("valid");
    assert_eq!((service.host.as_str(), service.port), ("[::1]", 9000));
}

#[test]
fn routes() {
    use EntityKind::Route as R;
    check(R, json!({"paths": ["/a"]}), None);
    check(R, json!({"paths": ["~/users/(?<id>\\d+)$"]}), None);
    check(R, json!({"paths": ["~/broken("]}), Some("schema violation (paths.1: invalid regex: '/broken(' (regex parse error:\n    /broken(\n           ^\nerror: unclosed group))"));
    check(R, json!({"hosts": ["*.example.com", "example.*"]}), None);
    check(
        R,
        json!({"hosts": ["*.*.com"]}),
        Some("schema violation (hosts.1: invalid wildcard: must have at most one wildcard)"),
    );
    check(R, json!({"hosts": ["a.*.com"]}), Some("schema violation (hosts.1: invalid wildcard: must be placed at leftmost or rightmost label)"));
    check(
        R,
        json!({"methods": ["get"]}),
        Some("schema violation (methods.1: invalid value: get)"),
    );
    check(R, json!({"headers": {"host": ["a"]}}), Some("schema violation (headers: cannot contain 'host' header, which must be specified in the 'hosts' attribute)"));
    check(R, json!({"protocols": ["http"], "snis": ["a.com"], "paths": ["/"]}), Some("schema violation (snis: 'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough')"));
    check(R, json!({"protocols": ["http", "tcp"], "paths": ["/"]}), Some("schema violation (protocols: these sets are mutually exclusive: ('grpc', 'grpcs'), ('http', 'https'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('ws', 'wss'))"));
    check(
        R,
        json!({"protocols": ["tcp"], "sources": [{"ip": "10.0.0.0/8"}]}),
        None,
    );
    check(
        R,
        json!({"paths": ["/a"], "sources": [{"ip": "10.0.0.0/8"}]}),
        Some("schema violation (cannot set 'sources' when 'protocols' is 'http' or 'https')"),
    );
    check(R, json!({"paths": ["/a"], "https_redirect_status_code": 200}), Some("schema violation (https_redirect_status_code: expected one of: 426, 301, 302, 307, 308)"));
}

#[test]
fn sets_drop_duplicates_like_kong() {
    let route: Route = schemas()
        .build(with_meta(
            json!({"methods": ["GET", "GET", "POST"], "tags": ["a", "a"]}),
        ))
        .expect("valid");
    assert_eq!(
        route.methods,
        Some(vec!["GET".to_owned(), "POST".to_owned()])
    );
    assert_eq!(route.tags, Some(vec!["a".to_owned()]));
}

#[test]
fn plugins() {
    use EntityKind::Plugin as P;
    let chat = json!({"route_type": "llm/v1/chat", "model": {"provider": "xai", "name": "grok-4"}});
    check(P, json!({"name": "ai-proxy", "config": chat}), None);
    check(P, json!({"name": "nope"}), Some("schema violation (name: plugin 'nope' not enabled; Sluice has: acl, ai-proxy, ai-proxy-advanced, ai-rate-limiting-advanced, basic-auth, cors, file-log, http-log, key-auth, prometheus, rate-limiting, request-transformer)"));
    check(
        P,
        json!({"name": "ai-proxy", "config": {"model": {"provider": "openai"}}}),
        Some("schema violation (config.route_type: required field missing)"),
    );
    check(
        P,
        json!({"name": "rate-limiting", "config": {"minute": 0}}),
        Some("schema violation (config.minute: value must be greater than 0)"),
    );
}

#[test]
fn plugin_defaults_are_filled_and_unset_fields_are_null() {
    let value = schemas()
        .check(
            EntityKind::Plugin,
            with_meta(json!({"name": "ai-proxy", "config": {"route_type": "llm/v1/chat", "model": {"provider": "openai"}}})),
        )
        .expect("valid");
    assert_eq!(value["config"]["response_streaming"], "allow");
    assert_eq!(value["config"]["max_request_body_size"], 1048576);
    assert_eq!(
        value["config"]["logging"],
        json!({"log_statistics": false, "log_payloads": false})
    );
    assert!(value["config"].as_object().unwrap().contains_key("auth"));
    assert!(value["config"]["auth"].is_null());
    assert_eq!(
        value["protocols"],
        json!(["grpc", "grpcs", "http", "https"])
    );
}

#[test]
fn violation_fields_nest_like_kong() {
    let err = schemas()
        .check(
            EntityKind::Plugin,
            with_meta(json!({"name": "ai-proxy", "config": {"route_type": "llm/v1/chat", "model": {"provider": "openai", "options": {"temperature": 7}}}})),
        )
        .expect_err("temperature out of range");
    assert_eq!(
        err.fields_json(),
        json!({"config": {"model": {"options": {"temperature": "value should be between 0 and 5"}}}})
    );
}
