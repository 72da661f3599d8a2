//! End-to-end tests of the Admin API against the real `sluice` binary and a real SQLite file.

mod common;

use common::{remove_dir, Sluice};
use reqwest::StatusCode;
use serde_json::{json, Value};

// === Kong's getting-started walkthrough ===

/// Kong docs: create a service with `url`, add a route with `paths[]`, enable a plugin on the
/// route, list with pagination, PATCH, DELETE. Same status codes and body shapes as Kong.
#[tokio::test]
async fn kong_walkthrough() {
    let kong = Sluice::start().await;

    let (status, service) = kong
        .form(
            "POST",
            "/services",
            &[
                ("name", "example_service"),
                ("url", "http://httpbin.konghq.com/anything"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{service}");
    assert_eq!(service["protocol"], "http");
    assert_eq!(service["host"], "httpbin.konghq.com");
    assert_eq!(service["port"], 80);
    assert_eq!(service["path"], "/anything");
    assert_eq!(service["retries"], 5);
    assert_eq!(service["connect_timeout"], 60000);
    assert!(service["tags"].is_null() && service["client_certificate"].is_null());
    assert!(service.get("url").is_none(), "url is input only");
    assert!(uuid::Uuid::parse_str(service["id"].as_str().unwrap()).is_ok());
    assert!(service["created_at"].as_i64().unwrap() > 1_600_000_000);

    let (status, route) = kong
        .form(
            "POST",
            "/services/example_service/routes",
            &[("paths[]", "/mock"), ("name", "example_route")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{route}");
    assert_eq!(route["paths"], json!(["/mock"]));
    assert_eq!(route["service"], json!({"id": service["id"]}));
    assert_eq!(route["protocols"], json!(["http", "https"]));
    assert_eq!(route["strip_path"], true);
    assert_eq!(route["path_handling"], "v0");
    assert!(route["hosts"].is_null() && route["methods"].is_null());

    let (status, plugin) = kong
        .form(
            "POST",
            "/routes/example_route/plugins",
            &[
                ("name", "rate-limiting"),
                ("config.minute", "5"),
                ("config.policy", "local"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plugin}");
    assert_eq!(plugin["route"], json!({"id": route["id"]}));
    assert!(plugin["service"].is_null() && plugin["consumer"].is_null());
    assert_eq!(plugin["config"]["minute"], 5);
    assert_eq!(plugin["config"]["policy"], "local");
    assert_eq!(plugin["config"]["limit_by"], "consumer", "defaults filled");
    assert!(
        plugin["config"]["hour"].is_null(),
        "unset config fields render as null"
    );
    assert_eq!(plugin["enabled"], true);

    // Pagination: three services, pages of two.
    for name in ["svc-b", "svc-c"] {
        let (status, _) = kong
            .post("/services", json!({"name": name, "host": "example.com"}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, page1) = kong.get("/services?size=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    let offset = page1["offset"].as_str().expect("offset on a non-last page");
    assert_eq!(page1["next"], format!("/services?offset={offset}&size=2"));
    let (_, page2) = kong.get(page1["next"].as_str().unwrap()).await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert!(page2.get("offset").is_none());
    assert!(page2["next"].is_null());
    let mut ids: Vec<Value> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["data"].as_array().unwrap())
        .map(|s| s["id"].clone())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "pages do not overlap");

    let (status, patched) = kong
        .form("PATCH", "/services/example_service", &[("retries", "6")])
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["retries"], 6);
    assert_eq!(
        patched["host"], "httpbin.konghq.com",
        "PATCH keeps other fields"
    );
    assert_eq!(patched["created_at"], service["created_at"]);

    let (status, body) = kong.delete("/routes/example_route").await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = kong.get("/routes/example_route").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, _) = kong
        .get(&format!("/plugins/{}", plugin["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "plugins go with their route");
    let (status, _) = kong.delete("/services/example_service").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = kong.delete("/services/example_service").await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "DELETE of an absent entity is 204 too"
    );
}

// === every endpoint ===

#[tokio::test]
async fn crud_on_every_collection_and_nested_endpoint() {
    let kong = Sluice::start().await;

    // Consumers.
    let (status, alice) = kong
        .post(
            "/consumers",
            json!({"username": "alice", "tags": ["team-a"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    assert!(alice["custom_id"].is_null());
    let (status, by_name) = kong.get("/consumers/alice").await;
    assert_eq!((status, &by_name["id"]), (StatusCode::OK, &alice["id"]));
    let alice_id = alice["id"].as_str().unwrap();
    let (status, by_id) = kong.get(&format!("/consumers/{alice_id}")).await;
    assert_eq!(
        (status, &by_id["username"]),
        (StatusCode::OK, &json!("alice"))
    );
    let (status, patched) = kong
        .patch("/consumers/alice", json!({"custom_id": "c-1"}))
        .await;
    assert_eq!(
        (status, &patched["custom_id"]),
        (StatusCode::OK, &json!("c-1"))
    );

    // Services by PUT (upsert by name, then by id).
    let (status, svc) = kong
        .put(
            "/services/billing",
            json!({"host": "billing.internal", "port": 8080}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{svc}");
    assert_eq!(svc["name"], "billing");
    let svc_id = svc["id"].as_str().unwrap().to_owned();
    let (status, again) = kong
        .put("/services/billing", json!({"host": "billing2.internal"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], svc["id"], "PUT by name keeps the id");
    assert_eq!(
        again["port"], 80,
        "PUT replaces the whole entity: port back to its default"
    );
    let fixed = "5b7f6a1e-0d3c-4a7e-9f55-3a2c1d0e9b88";
    let (status, put_id) = kong
        .put(
            &format!("/services/{fixed}"),
            json!({"name": "orders", "host": "orders.internal"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put_id}");
    assert_eq!(
        put_id["id"], fixed,
        "PUT by id creates with that id (decK relies on it)"
    );

    // Routes: top level with a service reference, and nested.
    let (status, r1) = kong
        .post("/routes", json!({"name": "r1", "paths": ["/billing"], "service": {"id": svc_id}, "tags": ["team-a", "public"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r1}");
    let (status, r2) = kong
        .post(
            "/services/orders/routes",
            json!({"name": "r2", "hosts": ["*.example.com"], "methods": ["GET"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r2}");
    assert_eq!(r2["service"]["id"], fixed);
    let (_, billing_routes) = kong.get("/services/billing/routes").await;
    assert_eq!(billing_routes["data"].as_array().unwrap().len(), 1);
    assert_eq!(billing_routes["data"][0]["name"], "r1");
    let (status, owner) = kong.get("/routes/r2/service").await;
    assert_eq!((status, &owner["name"]), (StatusCode::OK, &json!("orders")));
    // PATCH can move a route to another service by name (the reference is replaced).
    let (status, moved) = kong
        .patch("/routes/r1", json!({"service": {"name": "orders"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["service"]["id"], fixed);
    let (status, r1b) = kong.put("/routes/r1", json!({"paths": ["/billing/v2"], "service": {"id": svc_id}, "tags": ["team-a", "public"]})).await;
    assert_eq!((status, &r1b["id"]), (StatusCode::OK, &r1["id"]));

    // Plugins in every scope.
    let ai = json!({"route_type": "llm/v1/chat", "model": {"provider": "openai", "name": "gpt-4o"}, "auth": {"header_name": "Authorization", "header_value": "Bearer sk-test"}});
    let (status, global) = kong
        .post(
            "/plugins",
            json!({"name": "cors", "instance_name": "global-cors"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{global}");
    let (status, on_service) = kong
        .post(
            "/services/billing/plugins",
            json!({"name": "ai-proxy", "config": ai}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{on_service}");
    assert_eq!(on_service["config"]["max_request_body_size"], 1048576);
    assert_eq!(on_service["config"]["response_streaming"], "allow");
    let (status, on_route) = kong
        .post("/routes/r2/plugins", json!({"name": "key-auth"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{on_route}");
    let (status, on_consumer) = kong
        .post(
            "/consumers/alice/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 10}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{on_consumer}");
    assert_eq!(on_consumer["consumer"]["id"], alice["id"]);
    assert_eq!(kong.count("plugins").await, 4);
    for (path, n) in [
        ("/services/billing/plugins", 1),
        ("/routes/r2/plugins", 1),
        ("/consumers/alice/plugins", 1),
    ] {
        let (status, body) = kong.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"].as_array().unwrap().len(), n, "{path}: {body}");
    }
    let (status, by_instance) = kong.get("/plugins/global-cors").await;
    assert_eq!(
        (status, &by_instance["id"]),
        (StatusCode::OK, &global["id"])
    );
    // PATCH on a plugin merges config deeply.
    let (status, merged) = kong
        .patch(
            &format!("/plugins/{}", on_service["id"].as_str().unwrap()),
            json!({"config": {"model": {"name": "gpt-4o-mini"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["config"]["model"]["name"], "gpt-4o-mini");
    assert_eq!(
        merged["config"]["model"]["provider"], "openai",
        "sibling fields kept"
    );
    assert_eq!(merged["config"]["route_type"], "llm/v1/chat");
    let (status, enabled) = kong.get("/plugins/enabled").await;
    assert_eq!(status, StatusCode::OK);
    assert!(enabled["enabled_plugins"]
        .as_array()
        .unwrap()
        .contains(&json!("ai-proxy")));

    // Tag filters: `a,b` is AND, `a/b` is OR.
    let (status, _) = kong
        .post(
            "/services",
            json!({"name": "tagged", "host": "t.internal", "tags": ["public"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, and) = kong.get("/routes?tags=team-a,public").await;
    assert_eq!(and["data"].as_array().unwrap().len(), 1);
    let (_, none) = kong.get("/routes?tags=team-a,nope").await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let (_, or) = kong.get("/services?tags=public/nope").await;
    assert_eq!(or["data"][0]["name"], "tagged");
    let (_, or_consumers) = kong.get("/consumers?tags=nope/team-a").await;
    assert_eq!(or_consumers["data"].as_array().unwrap().len(), 1);

    // Deleting a consumer takes its plugins; deleting a route its plugins.
    assert_eq!(
        kong.delete("/consumers/alice").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(kong.delete("/routes/r2").await.0, StatusCode::NO_CONTENT);
    assert_eq!(kong.count("plugins").await, 2);
    // A service still referenced by a route cannot go.
    let (status, body) = kong.delete("/services/billing").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], 4);
    assert_eq!(
        body["message"],
        "an existing 'routes' entity references this 'services' entity"
    );
    assert!(kong.get("/services/billing").await.0.is_success());
}

#[tokio::test]
async fn info_status_and_schema_endpoints() {
    let kong = Sluice::start().await;
    let (status, root) = kong.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        root["version"].as_str().unwrap().starts_with("3."),
        "decK reads a 3.x version: {root}"
    );
    assert_eq!(
        root["plugins"]["available_on_server"]["ai-proxy"]["priority"],
        770
    );
    assert!(root["node_id"].is_string() && root["hostname"].is_string());

    let (status, st) = kong.get("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(st["database"]["reachable"], true);
    assert!(st["server"]["total_requests"].as_u64().unwrap() >= 1);

    let (status, services) = kong.get("/schemas/services").await;
    assert_eq!(status, StatusCode::OK);
    let field = |schema: &Value, name: &str| -> Value {
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|f| f.get(name).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(field(&services, "retries")["default"], 5);
    assert_eq!(
        field(&services, "protocol")["one_of"]
            .as_array()
            .unwrap()
            .len(),
        10,
        "Kong EE's eight and ws, wss"
    );
    assert_eq!(field(&services, "port")["between"], json!([0, 65535]));
    let (_, routes) = kong.get("/schemas/routes").await;
    assert_eq!(field(&routes, "service")["type"], "foreign");
    assert_eq!(
        field(&routes, "protocols")["default"],
        json!(["http", "https"])
    );

    let (status, ai) = kong.get("/schemas/plugins/ai-proxy").await;
    assert_eq!(status, StatusCode::OK);
    let config = field(&ai, "config");
    assert_eq!(config["type"], "record");
    assert_eq!(field(&config, "response_streaming")["default"], "allow");
    assert_eq!(field(&config, "max_request_body_size")["default"], 1048576);
    let (status, body) = kong.get("/schemas/plugins/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "No plugin named 'nope'");
    let (status, _) = kong.get("/schemas/widgets").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, ok) = kong
        .post("/schemas/services/validate", json!({"host": "example.com"}))
        .await;
    assert_eq!(
        (status, ok),
        (
            StatusCode::OK,
            json!({"message": "schema validation successful"})
        )
    );
    let (status, bad) = kong
        .post("/schemas/routes/validate", json!({"protocols": ["http"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad["fields"]["@entity"][0],
        "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
    );
    assert_eq!(kong.count("services").await, 0, "validate writes nothing");

    let (status, body) = kong.get("/no/such/endpoint").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, body) = kong.delete("/services").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Method not allowed"})
        )
    );
}

#[tokio::test]
async fn entities_survive_a_restart() {
    let kong = Sluice::start().await;
    let (_, svc) = kong
        .post(
            "/services",
            json!({"name": "keep", "url": "https://api.example.com/v1"}),
        )
        .await;
    let (_, route) = kong
        .post(
            "/services/keep/routes",
            json!({"name": "keep-route", "paths": ["/k"]}),
        )
        .await;
    let (_, plugin) = kong
        .post(
            "/routes/keep-route/plugins",
            json!({"name": "key-auth", "config": {"key_names": ["x-key"]}}),
        )
        .await;
    let version = kong.config_version().await;
    assert_eq!(version, 3, "every write bumps the config version");
    let dir = kong.stop_keep();

    let kong = Sluice::start_in(dir.clone(), &[]).await;
    assert_eq!(kong.get("/services/keep").await.1, svc);
    assert_eq!(kong.get("/routes/keep-route").await.1, route);
    assert_eq!(
        kong.get(&format!("/plugins/{}", plugin["id"].as_str().unwrap()))
            .await
            .1,
        plugin
    );
    assert_eq!(
        kong.config_version().await,
        version,
        "the version survives a restart"
    );
    drop(kong);
    remove_dir(&dir);
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm_and_json_logs() {
    let mut kong = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    assert!(kong.stop(), "exit status 0 after SIGTERM");
    let logs = kong.logs();
    let first = logs.lines().next().expect("a log line");
    let record: Value = serde_json::from_str(first).expect("JSON log line");
    assert_eq!(record["level"], "INFO");
    assert!(logs.contains("shutdown signal received"));
}

// === conflicts ===

#[tokio::test]
async fn unique_and_foreign_key_violations_in_kongs_words() {
    let kong = Sluice::start().await;
    let (_, svc) = kong
        .post("/services", json!({"name": "s1", "host": "a.internal"}))
        .await;

    let (status, body) = kong
        .post("/services", json!({"name": "s1", "host": "b.internal"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"code": 5, "name": "unique constraint violation", "message": "UNIQUE violation detected on '{name=\"s1\"}'", "fields": {"name": "s1"}})
    );

    let (status, body) = kong
        .post("/services", json!({"id": svc["id"], "host": "c.internal"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["fields"]["id"],
        format!(
            "already exists with value '{}'",
            svc["id"].as_str().unwrap()
        )
    );

    let (status, _) = kong
        .post("/services/s1/plugins", json!({"name": "key-auth"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = kong
        .post("/services/s1/plugins", json!({"name": "key-auth"}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one plugin of a name per scope"
    );
    assert_eq!(
        body["message"],
        format!("UNIQUE violation detected on '{{consumer=null,name=\"key-auth\",route=null,service={{id=\"{}\"}}}}'", svc["id"].as_str().unwrap())
    );

    let missing = "0d9b2f4e-1c1e-4a53-a0a5-4a63c1b8f6f1";
    let (status, body) = kong
        .post(
            "/routes",
            json!({"paths": ["/x"], "service": {"id": missing}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], 4);
    assert_eq!(body["name"], "foreign key violation");
    assert_eq!(body["fields"], json!({"service": {"id": missing}}));
    assert_eq!(body["message"], format!("the foreign key '{{id=\"{missing}\"}}' does not reference an existing 'services' entity."));
    assert_eq!(kong.count("routes").await, 0);
    assert_eq!(kong.count("services").await, 1);
}

/// Kong's `GET /consumers?custom_id=` (kong/api/routes/consumers.lua, Kong 3.10): the one
/// consumer with it, not the whole list a script would take `data[0]` of.
#[tokio::test]
async fn consumers_are_found_by_custom_id() {
    let kong = Sluice::start().await;
    for (username, custom_id) in [("alice", "a-1"), ("bob", "b-2")] {
        let (status, body) = kong
            .post(
                "/consumers",
                serde_json::json!({"username": username, "custom_id": custom_id}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = kong.get("/consumers?custom_id=b-2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["data"][0]["username"], "bob");
    assert!(body["next"].is_null());
    let (status, body) = kong.get("/consumers?custom_id=nobody").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], serde_json::json!([]), "{body}");
    for bad in [
        "/consumers?custom_id=",
        "/consumers?custom_id=a-1&custom_id=b-2",
    ] {
        let (status, body) = kong.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["message"], "custom_id must be an unempty string");
    }
    // Without the filter: the list, as before.
    let (_, body) = kong.get("/consumers").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
}
