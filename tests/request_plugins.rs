//! The plugins real decK files put in front of APIs: `cors` and `request-transformer`, through
//! the real binary, with Kong 3.10's statuses, headers and rewrites; and the real decK files of
//! `../shared/deck-corpus/` that use them or consumer credentials.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{send, Sluice, BIN, NO_CHANGES};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A request from a browser page at `origin`.
fn from_origin(node: &Sluice, method: &str, path: &str, origin: &str) -> reqwest::RequestBuilder {
    node.through(method, path).header("Origin", origin)
}

/// A CORS preflight for a `method` request.
fn preflight(node: &Sluice, path: &str, origin: &str, method: &str) -> reqwest::RequestBuilder {
    from_origin(node, "OPTIONS", path, origin).header("Access-Control-Request-Method", method)
}

async fn fetch(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request failed")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_responses() {
    let node = Sluice::start().await;
    let cors = json!({"name": "cors", "config": {
        "origins": ["http://a.example", "(.*[.])?b\\.example"],
        "credentials": true,
        "max_age": 3600,
        "exposed_headers": ["X-Total"],
    }});
    node.echo_route("c1", json!(["/c1"]), &[cors]).await;

    // A preflight is answered by the gateway: 200, no body, the upstream never sees it.
    let response = fetch(
        preflight(&node, "/c1", "http://api.b.example", "POST")
            .header("Access-Control-Request-Headers", "X-Foo"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-upstream"), None, "not proxied");
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("http://api.b.example"),
        "a regex entry matches the origin's host"
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&response, "access-control-allow-methods"),
        Some("GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT")
    );
    assert_eq!(
        header(&response, "access-control-allow-headers"),
        Some("X-Foo"),
        "without configured headers, the requested ones are echoed"
    );
    assert_eq!(header(&response, "access-control-max-age"), Some("3600"));
    assert_eq!(header(&response, "vary"), Some("Origin"));
    assert!(response.bytes().await.unwrap().is_empty());

    // A normal request goes upstream and comes back with the headers; a literal origin is
    // compared with its default port dropped.
    let response = fetch(from_origin(&node, "GET", "/c1", "http://a.example:80")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-upstream"), Some("echo"));
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("http://a.example")
    );
    assert_eq!(
        header(&response, "access-control-expose-headers"),
        Some("X-Total")
    );

    // An origin that is not allowed gets no Allow-Origin, and the regex is anchored: a host
    // that merely contains the allowed one does not pass.
    for origin in ["http://evil.example", "http://b.example.evil.net"] {
        let response = fetch(from_origin(&node, "GET", "/c1", origin)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            None,
            "{origin}"
        );
        assert_eq!(header(&response, "vary"), Some("Origin"));
    }
}

#[tokio::test]
async fn cors_reaches_auth_failures_and_can_leave_preflights_to_the_upstream() {
    let node = Sluice::start().await;
    let (status, body) = node.post("/consumers", json!({"username": "ann"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.echo_route(
        "guarded",
        json!(["/guarded"]),
        &[json!({"name": "cors"}), json!({"name": "key-auth"})],
    )
    .await;

    // cors runs first (priority 2000): key-auth's 401 carries its headers, so a browser can
    // read the error; the preflight is answered before key-auth asks for a key.
    let response = fetch(from_origin(&node, "GET", "/guarded", "http://app.example")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    let response = fetch(preflight(&node, "/guarded", "http://app.example", "GET")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));

    // preflight_continue: the upstream answers the preflight, untouched by the plugin.
    node.echo_route(
        "continued",
        json!(["/continued"]),
        &[json!({"name": "cors", "config": {"preflight_continue": true}})],
    )
    .await;
    let response = fetch(preflight(&node, "/continued", "http://app.example", "GET")).await;
    assert_eq!(header(&response, "x-upstream"), Some("echo"));
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn bad_configs_are_refused_with_kongs_messages_and_nothing_is_written() {
    let mut node = Sluice::start().await;
    let cases = [
        (
            json!({"name": "cors", "config": {"origins": ["http://ok.example", "(unclosed"]}}),
            "config.origins",
            "'(unclosed' is not a valid regex",
        ),
        (
            json!({"name": "request-transformer",
                   "config": {"rename": {"headers": ["x-old:bad header"]}}}),
            "config.rename.headers",
            "'bad header' is not a valid header",
        ),
        (
            json!({"name": "request-transformer",
                   "config": {"remove": {"headers": ["x y"]}}}),
            "config.remove.headers",
            "'x y' is not a valid header",
        ),
        (
            json!({"name": "request-transformer", "config": {"add": {"body": ["field"]}}}),
            "config.add.body",
            "key 'field' has no value",
        ),
        (
            json!({"name": "request-transformer",
                   "config": {"add": {"headers": ["x-a:$(os.getenv('HOME'))"]}}}),
            "config.add.headers",
            "is not in supported format",
        ),
        (
            json!({"name": "request-transformer", "config": {"http_method": "get"}}),
            "config.http_method",
            "",
        ),
    ];
    node.assert_plugins_refused(&cases).await;
    assert_eq!(node.count("plugins").await, 0);
    assert!(node.stop(), "the node stayed up through bad input");
}

#[tokio::test]
async fn request_transformer_rewrites_in_kongs_order() {
    let node = Sluice::start().await;
    let transformer = json!({"name": "request-transformer", "config": {
        "http_method": "PUT",
        "remove": {"headers": ["x-drop"], "querystring": ["drop"], "body": ["secret"]},
        "rename": {"headers": ["x-old:x-new"], "querystring": ["a:b"]},
        "replace": {"headers": ["x-rep:new", "x-absent:no"],
                    "uri": "/users/$(uri_captures.user)"},
        "add": {"headers": ["x-user:$(uri_captures.user)", "x-rep:not-added",
                            "x-from:$(headers.x_client or 'none')"],
                "querystring": ["q:1"], "body": ["added:yes"]},
        "append": {"headers": ["x-multi:b"], "body": ["list:two"]},
    }});
    node.echo_route("rt", json!(["~/rt/(?<user>[a-z]+)$"]), &[transformer])
        .await;

    let (status, echo) = send(
        node.through("POST", "/rt/ann?drop=1&a=2&keep=%7E")
            .header("x-drop", "1")
            .header("x-old", "o")
            .header("x-rep", "old")
            .header("x-multi", "a")
            .header("x-client", "mobile")
            .json(&json!({"secret": "s", "keep": 1, "list": "one"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(
        echo["path_and_query"], "/users/ann?b=2&keep=%7E&q=1",
        "uri replaced (query kept), args removed, renamed and added, untouched ones verbatim"
    );
    let headers = &echo["headers"];
    assert!(
        headers.get("x-drop").is_none() && headers.get("x-old").is_none(),
        "{headers}"
    );
    assert_eq!(headers["x-new"], "o");
    assert_eq!(
        headers["x-rep"], "new",
        "replaced, and add leaves a present header"
    );
    assert!(
        headers.get("x-absent").is_none(),
        "replace only replaces: {headers}"
    );
    assert_eq!(
        headers["x-user"], "ann",
        "a template reads the route's captures"
    );
    assert_eq!(
        headers["x-from"], "mobile",
        "headers.x_client reads x-client"
    );
    assert_eq!(headers["x-multi"], "a, b");
    let body: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"keep": 1, "added": "yes", "list": ["one", "two"]})
    );
    assert_eq!(
        headers["content-length"],
        echo["body_length"].to_string(),
        "Content-Length follows the new body"
    );

    // A form body is rewritten the same way; a body that is neither JSON nor a form is not.
    let (_, echo) = send(
        node.through("POST", "/rt/bob")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("secret=s&keep=1"),
    )
    .await;
    assert_eq!(echo["body"], "keep=1&added=yes&list=two");
    let (_, echo) = send(
        node.through("POST", "/rt/bob")
            .header("content-type", "text/plain")
            .body("secret=s"),
    )
    .await;
    assert_eq!(echo["body"], "secret=s");
}

#[tokio::test]
async fn request_transformer_scoped_to_a_consumer() {
    let node = Sluice::start().await;
    for name in ["alice", "bob"] {
        let (status, body) = node.post("/consumers", json!({"username": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = node
            .post(
                &format!("/consumers/{name}/key-auth"),
                json!({"key": format!("{name}-key")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = node
        .post(
            "/consumers/alice/plugins",
            json!({"name": "request-transformer",
                   "config": {"add": {"headers": ["x-tier:gold"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    node.echo_route("api", json!(["/api"]), &[json!({"name": "key-auth"})])
        .await;

    let (_, echo) = send(node.through("GET", "/api").header("apikey", "alice-key")).await;
    assert_eq!(echo["headers"]["x-tier"], "gold");
    let (_, echo) = send(node.through("GET", "/api").header("apikey", "bob-key")).await;
    assert!(echo["headers"].get("x-tier").is_none(), "{echo}");
}

// === the real decK files ===

fn corpus(name: &str) -> PathBuf {
    // The test crate is crates/sluice; the repo's sibling `shared` holds the corpus.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/deck-corpus")
        .join(name)
}

/// A corpus file as a 3.0 state file, wrapped as the corpus's INDEX says: a file without
/// `_format_version` gets `"3.0"`; a docs plugin example becomes a global plugin.
fn state_file(node: &Sluice, name: &str) -> String {
    let text = std::fs::read_to_string(corpus(name)).expect("the deck corpus is beside the repo");
    let text = if let Some(plugin) = name
        .strip_prefix("developer.konghq.com__app___kong_plugins__")
        .and_then(|rest| rest.split("__").next())
    {
        let example: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let file = json!({
            "_format_version": "3.0",
            "plugins": [{"name": plugin, "config": serde_json::to_value(&example["config"]).unwrap()}],
        });
        serde_yaml::to_string(&file).unwrap()
    } else if !text.contains("_format_version") {
        format!("_format_version: \"3.0\"\n{text}")
    } else {
        text
    };
    let path = node.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Each corpus file that uses cors, request-transformer, key-auth or consumer credentials
/// syncs, diffs clean, and round-trips through dump (the dump syncs to no change, and the
/// original file still diffs clean against it).
#[tokio::test]
async fn deck_corpus_files_with_these_plugins_sync_diff_clean_and_round_trip() {
    for name in [
        "deck__tests__integration__testdata__diff__006-plugin-update__initial-request-transformer-reorder-array.yaml",
        "deck__tests__integration__testdata__validate__kong-ee.yaml",
        "deck__kong2tf__testdata__route-plugin-input.yaml",
        "developer.konghq.com__app___kong_plugins__cors__examples__allow-requests-from-specific-domain.yaml",
    ] {
        let node = Sluice::start().await;
        let file = state_file(&node, name);
        let (ok, out, err) = node.deck(&["sync", &file]);
        assert!(ok, "{name}: {out}{err}");
        let (ok, out, err) = node.deck(&["diff", &file]);
        assert!(ok, "{name}: {err}");
        assert_eq!(out, NO_CHANGES, "{name}: a no-op diff after sync");
        let dump = node.dir.join("dump.yaml").display().to_string();
        let (ok, _, err) = node.deck(&["dump", "-o", &dump]);
        assert!(ok, "{name}: {err}");
        let (ok, out, err) = node.deck(&["sync", &dump]);
        assert!(ok, "{name}: {err}");
        assert_eq!(out, NO_CHANGES, "{name}: the dump is the synced state");
        let (_, out, _) = node.deck(&["diff", &file]);
        assert_eq!(out, NO_CHANGES, "{name}: after syncing the dump");
    }
}

/// decK's own pair: the same request-transformer with its `rename.headers` reordered is an
/// update, because order decides what the rewrite does.
#[tokio::test]
async fn reordering_a_transformer_array_is_a_change() {
    let node = Sluice::start().await;
    let name = "deck__tests__integration__testdata__diff__006-plugin-update__initial-request-transformer-reorder-array.yaml";
    let file = state_file(&node, name);
    let (ok, _, err) = node.deck(&["sync", &file]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    let reordered = text.replace(
        "        - custom-token:Authorization\n        - Authorization:something-else\n",
        "        - Authorization:something-else\n        - custom-token:Authorization\n",
    );
    assert_ne!(text, reordered, "the corpus file changed shape");
    std::fs::write(&file, reordered).unwrap();
    let (ok, out, err) = node.deck(&["diff", &file]);
    assert!(ok, "{err}");
    assert!(
        out.contains("updating plugin request-transformer (global)") && out.contains("Updated: 1"),
        "{out}"
    );
}

/// decK refuses these two corpus files with these messages; so does Sluice, naming the line.
#[test]
fn deck_corpus_files_decks_refuses_are_refused() {
    for (name, message) in [
        (
            "go-database-reconciler__tests__integration__testdata__sync__036-scoped-plugins-validation__3x__service-plugins.yaml",
            "nesting service (example-service) under service-scoped plugin (request-transformer) is not allowed",
        ),
        (
            "go-database-reconciler__tests__integration__testdata__sync__036-scoped-plugins-validation__3x__consumer-plugins.yaml",
            "nesting consumer (foo) under consumer-scoped plugin (request-transformer) is not allowed",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["validate", &corpus(name).display().to_string()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert!(err.contains(message), "{name}: {err}");
        assert!(!err.contains("not enabled"), "{name}: the plugin is known: {err}");
    }
}
