//! Table-driven tests of the ai-proxy request flow: the factory's checks, the request
//! transform (Kong's body checks, model rules, streaming rules, option filling, provider
//! field drops) and the upstream routing (paths, `upstream_url`, key injection).

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::json;
use sluice_plugin::{RequestBody, Upstream};

use super::*;
use crate::providers::OpenAi;

/// A stored ai-proxy plugin with `config`, as the store hands it to the factory.
fn plugin(config: Value) -> sluice_model::Plugin {
    serde_json::from_value(json!({
        "id": Uuid::nil(), "created_at": 1, "updated_at": 1, "name": "ai-proxy",
        "config": config, "protocols": ["http", "https"], "enabled": true,
    }))
    .expect("a plugin entity")
}

fn proxy(config: Value) -> AiProxy {
    AiProxy::new(&plugin(config)).expect("the config builds")
}

fn chat(model: Option<&str>) -> Value {
    json!({"route_type": "llm/v1/chat", "model": {"provider": "openai", "name": model}})
}

/// The status and error message of an answer the plugin gave instead of forwarding.
fn refusal(flow: Flow) -> (u16, String) {
    let Flow::Respond(response) = flow else {
        panic!("expected an answer, the request went on");
    };
    let body: Value = serde_json::from_slice(response.body()).expect("a JSON error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    (response.status().as_u16(), message.to_owned())
}

#[test]
fn the_factory_refuses_what_the_provider_cannot_serve() {
    // (config, field at fault, message)
    let cases = [
        (
            json!({"route_type": "llm/v1/embeddings", "model": {"provider": "xai"}}),
            "config.route_type",
            "route_type 'llm/v1/embeddings' is not supported by provider 'xai'",
        ),
        (
            json!({"route_type": "llm/v1/chat", "model": {"provider": "anthropic"}}),
            "config.model.provider",
            "provider 'anthropic' is not supported by Sluice yet (supported: openai, xai)",
        ),
        (
            json!({"route_type": "llm/v1/chat", "model": {"provider": "openai",
                "options": {"upstream_url": "ftp://files.example"}}}),
            "config.model.options.upstream_url",
            "url 'ftp://files.example' must be http or https",
        ),
        (
            json!({"route_type": "llm/v1/chat", "model": {"provider": "openai"},
                "auth": {"header_name": "Authorization", "header_value": "Bearer sk\nx"}}),
            "config.auth.header_value",
            "not a valid header value",
        ),
    ];
    for (config, field, message) in cases {
        let error = AiProxy::new(&plugin(config.clone()))
            .err()
            .expect("refused");
        assert_eq!(error.field.as_deref(), Some(field), "{config}");
        assert!(error.reason().contains(message), "{config}: {error}");
        assert!(
            !error.to_string().contains("sk\nx"),
            "the secret is not echoed"
        );
    }
    for route_type in RouteType::ALL {
        let config = json!({"route_type": route_type.as_str(), "model": {"provider": "openai"}});
        let built = AiProxy::new(&plugin(config));
        assert_eq!(built.is_ok(), OpenAi.serves(route_type), "{route_type}");
    }
}

#[test]
fn the_request_transform_follows_kongs_rules() {
    // (config, request body, expected: Ok(fields the sent body must have) or Err(status, message))
    type Expected = Result<Value, (u16, &'static str)>;
    let cases: Vec<(Value, Value, Expected)> = vec![
        // The configured model is filled in, and a different one is refused.
        (
            chat(Some("gpt-4o")),
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            Ok(json!({"model": "gpt-4o"})),
        ),
        (
            chat(Some("gpt-4o")),
            json!({"model": "gpt-3.5", "messages": [{"role": "user", "content": "hi"}]}),
            Err((400, "cannot use own model - must be: gpt-4o")),
        ),
        (
            chat(None),
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            Err((400, "model parameter not found in request, nor in gateway configuration")),
        ),
        (
            chat(None),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            Ok(json!({"model": "gpt-4o-mini"})),
        ),
        // The fields the gateway reads must have their types (the attack run's "stream": "yes"
        // was a 500 before).
        (
            chat(Some("m")),
            json!({"stream": "yes", "messages": [{"role": "user", "content": "hi"}]}),
            Err((400, "Invalid type for 'stream': expected a boolean")),
        ),
        (
            chat(None),
            json!({"model": 4, "messages": [{"role": "user", "content": "hi"}]}),
            Err((400, "Invalid type for 'model': expected a string")),
        ),
        (
            chat(Some("m")),
            json!({"messages": [{"role": "user", "content": "hi"}, "hello"]}),
            Err((400, "Invalid type for 'messages[1]': expected an object")),
        ),
        (
            chat(Some("m")),
            json!({"messages": [{"role": 7, "content": "hi"}]}),
            Err((400, "Invalid type for 'messages[0].role': expected a string")),
        ),
        (
            chat(Some("m")),
            json!({"messages": "hi"}),
            Err((400, "Invalid type for 'messages': expected an array")),
        ),
        (
            chat(Some("m")),
            json!({"stream": null, "messages": [{"role": "user", "content": "hi"}]}),
            Ok(json!({"model": "m"})),
        ),
        // Prompts: each route type's field, and the other format's message.
        (
            chat(Some("m")),
            json!({"prompt": "hi"}),
            Err((400, "[llm/v1/completions] message format is not compatible with [llm/v1/chat] route type")),
        ),
        (
            chat(Some("m")),
            json!({"messages": []}),
            Err((400, "request body doesn't contain valid prompts")),
        ),
        (
            json!({"route_type": "llm/v1/completions", "model": {"provider": "openai", "name": "m"}}),
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            Err((400, "[llm/v1/chat] message format is not compatible with [llm/v1/completions] route type")),
        ),
        (
            json!({"route_type": "llm/v1/embeddings", "model": {"provider": "openai", "name": "m"}}),
            json!({"input": null}),
            Err((400, "request body doesn't contain valid prompts")),
        ),
        (
            json!({"route_type": "image/v1/images/generations", "model": {"provider": "openai", "name": "m"}}),
            json!({"prompt": "a cat"}),
            Ok(json!({"model": "m", "prompt": "a cat"})),
        ),
        // Streaming: the usage chunk is asked for on chat, never on responses.
        (
            chat(Some("m")),
            json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            Ok(json!({"stream": true, "stream_options": {"include_usage": true}})),
        ),
        (
            json!({"route_type": "llm/v1/chat", "response_streaming": "deny",
                "model": {"provider": "openai", "name": "m"}}),
            json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            Err((400, "response streaming is not enabled for this LLM")),
        ),
        (
            json!({"route_type": "llm/v1/responses", "response_streaming": "always",
                "model": {"provider": "openai", "name": "m"}}),
            json!({"input": "hi"}),
            Ok(json!({"stream": true})),
        ),
        // Options fill what the request leaves out, under each route type's field name.
        (
            json!({"route_type": "llm/v1/responses", "model": {"provider": "openai", "name": "m",
                "options": {"max_tokens": 64, "temperature": 0.5}}}),
            json!({"input": "hi", "temperature": 1.0}),
            Ok(json!({"max_output_tokens": 64, "temperature": 1.0})),
        ),
        // xAI drops what it refuses.
        (
            json!({"route_type": "llm/v1/chat", "model": {"provider": "xai", "name": "grok-4"}}),
            json!({"store": true, "top_k": 3, "messages": [{"role": "user", "content": "hi"}]}),
            Ok(json!({"model": "grok-4"})),
        ),
    ];
    for (config, body, expected) in cases {
        let proxy = proxy(config.clone());
        let mut sent = body.clone();
        let mut call = Call::default();
        let result = proxy.transform(&mut sent, &mut call);
        match (result, expected) {
            (Ok(()), Ok(fields)) => {
                for (key, value) in fields.as_object().expect("an object") {
                    assert_eq!(&sent[key], value, "{config} {body}: {key} in {sent}");
                }
                for dropped in ["store", "top_k"] {
                    if config["model"]["provider"] == "xai" {
                        assert!(sent.get(dropped).is_none(), "{dropped} in {sent}");
                    }
                }
                assert_eq!(call.request_model, sent["model"].as_str().unwrap());
                assert_eq!(call.expect_key, proxy.config.route_type.expects());
            }
            (Err(error), Err((status, message))) => {
                assert_eq!(
                    refusal(error.into()),
                    (status, message.to_owned()),
                    "{config} {body}"
                );
            }
            (Ok(()), Err(wanted)) => panic!("{config} {body}: passed, wanted {wanted:?}"),
            (Err(error), Ok(_)) => panic!("{config} {body}: refused with {error}"),
        }
    }
}

fn request(method: http::Method, uri: &str) -> ProxyRequest {
    let (parts, ()) = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer client-key")
        .body(())
        .expect("a request")
        .into_parts();
    ProxyRequest {
        parts,
        body: RequestBody::Buffered(Bytes::new()),
    }
}

fn ctx(path_suffix: &str) -> RequestCtx {
    RequestCtx {
        request_id: "test".to_owned(),
        route_id: Uuid::nil(),
        service_id: None,
        labels: Default::default(),
        consumer_id: None,
        consumer: None,
        identities: Default::default(),
        client_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
        started: Instant::now(),
        method: http::Method::GET,
        uri: http::Uri::from_static("/"),
        upstream: None,
        upstream_latency: None,
        path_suffix: path_suffix.to_owned(),
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

#[test]
fn the_upstream_is_the_provider_or_upstream_url_with_the_key_injected() {
    let key = json!({"header_name": "Authorization", "header_value": "Bearer sk-gateway"});
    // (config, method, client URI, path after the route, expected upstream, expected auth)
    let cases = [
        (
            json!({"route_type": "llm/v1/chat", "auth": key, "model": {"provider": "openai"}}),
            http::Method::POST,
            "/chat?trace=1",
            "/",
            ("api.openai.com", 443, "/v1/chat/completions?trace=1"),
            "Bearer sk-gateway",
        ),
        (
            json!({"route_type": "llm/v1/chat", "auth": key, "model": {"provider": "xai"}}),
            http::Method::GET,
            "/grok/models",
            "/models",
            ("api.x.ai", 443, "/v1/models"),
            "Bearer sk-gateway",
        ),
        (
            json!({"route_type": "llm/v1/files", "auth": key, "model": {"provider": "openai"}}),
            http::Method::GET,
            "/files/file-1",
            "/file-1",
            ("api.openai.com", 443, "/v1/files/file-1"),
            "Bearer sk-gateway",
        ),
        (
            // A base URL without a path gets the route type's path appended.
            json!({"route_type": "llm/v1/chat", "auth": key, "model": {"provider": "openai",
                "options": {"upstream_url": "http://vllm:8000"}}}),
            http::Method::POST,
            "/chat",
            "/",
            ("vllm", 8000, "/v1/chat/completions"),
            "Bearer sk-gateway",
        ),
        (
            // A URL with a path is used whole.
            json!({"route_type": "llm/v1/chat", "model": {"provider": "openai",
                "options": {"upstream_url": "https://proxy.example/custom/chat"}}}),
            http::Method::POST,
            "/chat",
            "/",
            ("proxy.example", 443, "/custom/chat"),
            "Bearer client-key",
        ),
        (
            json!({"route_type": "preserve", "auth": key, "model": {"provider": "openai"}}),
            http::Method::POST,
            "/any/v1/thing",
            "/v1/thing",
            ("api.openai.com", 443, "/v1/thing"),
            "Bearer sk-gateway",
        ),
    ];
    for (config, method, uri, suffix, (host, port, path_and_query), auth) in cases {
        let proxy = proxy(config.clone());
        let mut request = request(method, uri);
        let mut ctx = ctx(suffix);
        assert!(
            proxy.route_upstream(&mut request, &mut ctx).is_ok(),
            "{config}"
        );
        let upstream: Upstream = ctx.upstream.expect("an upstream is set");
        assert_eq!(
            (
                upstream.host.as_str(),
                upstream.port,
                upstream.path_and_query.as_str()
            ),
            (host, port, path_and_query),
            "{config} {uri}"
        );
        assert_eq!(upstream.https, port == 443, "{config}");
        assert_eq!(request.parts.headers["authorization"], auth, "{config}");
    }

    // Query-parameter auth replaces the client's value instead of adding a second one.
    let proxy = proxy(
        json!({"route_type": "llm/v1/chat", "model": {"provider": "openai"},
        "auth": {"param_name": "key", "param_value": "gw secret", "param_location": "query"}}),
    );
    let mut request = request(http::Method::POST, "/chat?key=client&x=1");
    let mut ctx = ctx("/");
    assert!(proxy.route_upstream(&mut request, &mut ctx).is_ok());
    let upstream = ctx.upstream.expect("an upstream");
    assert_eq!(
        upstream.path_and_query,
        "/v1/chat/completions?x=1&key=gw%20secret"
    );
}

#[test]
fn the_payload_log_is_the_body_sent_upstream_without_the_key() {
    let proxy = proxy(json!({
        "route_type": "llm/v1/chat",
        "model": {"provider": "xai", "name": "grok-4"},
        "logging": {"log_payloads": true},
        "auth": {"param_name": "api_key", "param_value": "sk-secret", "param_location": "body"},
    }));
    let mut body = json!({"store": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut call = Call::default();
    proxy.transform(&mut body, &mut call).expect("accepted");
    assert_eq!(body["api_key"], "sk-secret", "the key goes upstream");
    let logged: Value =
        serde_json::from_slice(call.request_payload.as_deref().expect("logged")).unwrap();
    assert!(
        logged.get("api_key").is_none(),
        "but never into the log: {logged}"
    );
    assert!(
        logged.get("store").is_none(),
        "what xAI refuses was dropped, as sent: {logged}"
    );
    assert_eq!(logged["model"], "grok-4");
}
