//! Admin API handler tests without a socket: `sluice_admin::router(state)` is a
//! `tower::Service`, so each case is one `oneshot` call against a store on a temporary
//! SQLite file (the pattern of axum's `examples/testing`). Fast enough to cover the handlers
//! case by case; the end-to-end suites in `tests/` cover the real binary on real sockets.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_admin::{AdminGuard, AdminState, NodeInfo};
use sluice_model::Schemas;
use sluice_store::Store;
use tower::ServiceExt;

/// A router on a fresh store; the directory is removed when it drops.
struct App {
    router: axum::Router,
    dir: std::path::PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn app() -> App {
    let dir = std::env::temp_dir().join(format!("sluice-admin-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("admin.db").display());
    let store = Store::open(&url).await.expect("the store opens");
    let node = NodeInfo {
        node_id: "test-node".into(),
        hostname: "test".into(),
        role: "traditional".into(),
        database: "sqlite".into(),
        admin_listen: "127.0.0.1:8001".into(),
        proxy_listen: "127.0.0.1:8000".into(),
    };
    let schemas = Arc::new(Schemas::embedded().expect("embedded schemas load"));
    let guard = AdminGuard::for_listener("127.0.0.1:8001".parse().unwrap(), vec![], vec![]);
    let state = AdminState::new(store, schemas, node, false).with_guard(guard);
    App {
        router: sluice_admin::router(state),
        dir,
    }
}

/// What the client sends: a JSON body, a form body, or none.
enum Payload {
    None,
    Json(Value),
    Form(&'static str),
}

impl App {
    async fn call(&self, method: &str, uri: &str, payload: Payload) -> (StatusCode, Value) {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "127.0.0.1:8001");
        let request = match payload {
            Payload::None => builder.body(Body::empty()),
            Payload::Json(value) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(value.to_string())),
            Payload::Form(form) => builder
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form)),
        }
        .expect("a request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{method} {uri}: not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, body)
    }
}

/// Checks each `expect` entry (a dotted path into the body, and its value) of a response.
fn check(
    what: &str,
    (status, body): (StatusCode, Value),
    want: StatusCode,
    expect: &[(&str, Value)],
) {
    assert_eq!(status, want, "{what}: {body}");
    for (path, value) in expect {
        let mut node = &body;
        for segment in path.split('.') {
            node = match segment.parse::<usize>() {
                Ok(index) => &node[index],
                Err(_) => &node[segment],
            };
        }
        assert_eq!(node, value, "{what}: {path} in {body}");
    }
}

#[tokio::test]
async fn services_routes_and_errors_as_kong_answers_them() {
    let app = app().await;
    use Payload::{Form, Json, None as Empty};
    /// (what, method, uri, payload, status, expected body fields)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Payload,
        StatusCode,
        Vec<(&'static str, Value)>,
    );
    let cases: Vec<Case> = vec![
        (
            "create with the url shorthand",
            "POST",
            "/services",
            Json(json!({"name": "billing", "url": "https://billing.internal:8443/v1"})),
            StatusCode::CREATED,
            vec![
                ("protocol", json!("https")),
                ("host", json!("billing.internal")),
                ("port", json!(8443)),
                ("path", json!("/v1")),
                ("retries", json!(5)),
            ],
        ),
        (
            "a form body, typed by the schema",
            "POST",
            "/services",
            Form("name=orders&host=orders.internal&port=8080&tags[]=a&tags[]=b"),
            StatusCode::CREATED,
            vec![("port", json!(8080)), ("tags", json!(["a", "b"]))],
        ),
        (
            "read by name",
            "GET",
            "/services/billing",
            Empty,
            StatusCode::OK,
            vec![("name", json!("billing"))],
        ),
        (
            "a duplicate name is Kong's unique violation",
            "POST",
            "/services",
            Json(json!({"name": "billing", "host": "x"})),
            StatusCode::CONFLICT,
            vec![
                ("code", json!(5)),
                ("name", json!("unique constraint violation")),
                ("fields.name", json!("billing")),
            ],
        ),
        (
            "a schema violation names the field",
            "POST",
            "/services",
            Json(json!({"name": "bad", "host": "x", "port": 70000})),
            StatusCode::BAD_REQUEST,
            vec![("code", json!(2)), ("name", json!("schema violation"))],
        ),
        (
            "an unknown entity",
            "GET",
            "/services/nope",
            Empty,
            StatusCode::NOT_FOUND,
            vec![("message", json!("Not found"))],
        ),
        (
            "a route nested under its service",
            "POST",
            "/services/billing/routes",
            Json(json!({"name": "api", "paths": ["/api"]})),
            StatusCode::CREATED,
            vec![
                ("paths", json!(["/api"])),
                ("protocols", json!(["http", "https"])),
                ("strip_path", json!(true)),
            ],
        ),
        (
            "a service that routes use cannot be deleted",
            "DELETE",
            "/services/billing",
            Empty,
            StatusCode::BAD_REQUEST,
            vec![],
        ),
        (
            "PATCH merges",
            "PATCH",
            "/services/orders",
            Json(json!({"retries": 2})),
            StatusCode::OK,
            vec![("retries", json!(2)), ("host", json!("orders.internal"))],
        ),
        (
            "a plugin, with its schema's defaults filled in",
            "POST",
            "/plugins",
            Json(json!({"name": "rate-limiting", "config": {"minute": 5}})),
            StatusCode::CREATED,
            vec![
                ("config.minute", json!(5)),
                ("config.policy", json!("local")),
            ],
        ),
        (
            "an unknown plugin names the plugins Sluice has",
            "POST",
            "/plugins",
            Json(json!({"name": "nope"})),
            StatusCode::BAD_REQUEST,
            vec![("code", json!(2))],
        ),
        (
            "the status",
            "GET",
            "/status",
            Empty,
            StatusCode::OK,
            vec![("database.reachable", json!(true))],
        ),
        (
            "the node info decK reads",
            "GET",
            "/",
            Empty,
            StatusCode::OK,
            vec![
                ("version", json!(sluice_model::KONG_COMPAT_VERSION)),
                ("configuration.database", json!("sqlite")),
            ],
        ),
    ];
    for (what, method, uri, payload, status, expect) in cases {
        check(what, app.call(method, uri, payload).await, status, &expect);
    }
    // The version counts the accepted writes: 2 services, 1 route, 1 PATCH, 1 plugin.
    let (_, status) = app.call("GET", "/status", Empty).await;
    assert_eq!(status["configuration_version"], 5, "{status}");
}

#[tokio::test]
async fn lists_are_paginated_and_filtered_by_tags_as_kong_does() {
    let app = app().await;
    for (name, tags) in [
        ("a", json!(["x", "y"])),
        ("b", json!(["x"])),
        ("c", json!(["y"])),
    ] {
        let (status, body) = app
            .call(
                "POST",
                "/services",
                Payload::Json(json!({"name": name, "host": "h", "tags": tags})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, page) = app.call("GET", "/services?size=2", Payload::None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let offset = page["offset"].as_str().expect("a next page");
    assert!(page["next"].as_str().unwrap().contains("offset="), "{page}");
    let (_, rest) = app
        .call(
            "GET",
            &format!("/services?size=2&offset={offset}"),
            Payload::None,
        )
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert!(
        rest["offset"].is_null(),
        "the last page has no offset: {rest}"
    );

    let names = |body: &Value| -> Vec<String> {
        let mut names: Vec<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let (_, both) = app.call("GET", "/services?tags=x,y", Payload::None).await;
    assert_eq!(names(&both), ["a"], "a,b means both");
    let (_, either) = app.call("GET", "/services?tags=x/y", Payload::None).await;
    assert_eq!(names(&either), ["a", "b", "c"], "a/b means either");
    let (status, body) = app.call("GET", "/services?size=0", Payload::None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], 9, "{body}");
}

#[tokio::test]
async fn browser_requests_from_other_origins_never_reach_a_handler() {
    let app = app().await;
    let request = Request::builder()
        .method("POST")
        .uri("/services")
        .header(header::HOST, "127.0.0.1:8001")
        .header(header::ORIGIN, "https://attacker.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("name=evil&host=evil"))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (status, _) = app.call("GET", "/services/evil", Payload::None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");
}
