//! A config that is accepted is a config that compiles (the hardening issue's "poisoned
//! config"). Before the fix, each input below was accepted, the proxy refused the snapshot,
//! and from then on no later change reached it; after a restart it served nothing.
//!
//! Every write path runs the data plane's own compile checks: the Admin API (POST, PATCH,
//! PUT), `POST /sluice/sync`, `POST /config`, a DB-less file and `sluice validate`. And if a
//! snapshot still holds an entity that does not compile (written by an older control plane,
//! or straight into the database), only that entity is left out.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{temp_dir, upstream, Sluice, BIN};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One input the proxy cannot compile: the entity, where it goes, and the field a 400 names.
struct Poison {
    what: &'static str,
    collection: &'static str,
    body: Value,
    /// Dotted path under Kong's `fields` (`@entity` for an entity-level check).
    field: &'static str,
}

fn ai_proxy(auth: Value, options: Value) -> Value {
    json!({"name": "ai-proxy", "config": {
        "route_type": "llm/v1/chat",
        "auth": auth,
        "model": {"provider": "openai", "name": "gpt-4o", "options": options},
    }})
}

fn bearer() -> Value {
    json!({"header_name": "Authorization", "header_value": "Bearer sk-test"})
}

/// The eleven inputs the attack run found, plus one more of the same kind.
fn poisons() -> Vec<Poison> {
    let route = |name: &str, header: &str| json!({"name": name, "paths": [format!("/{name}")], "headers": {header: ["1"]}});
    let upstream_url = |url: &str| ai_proxy(bearer(), json!({"upstream_url": url}));
    vec![
        Poison {
            what: "rate-limiting without any window",
            collection: "/plugins",
            body: json!({"name": "rate-limiting"}),
            field: "@entity",
        },
        Poison {
            what: "rate-limiting with a policy this data plane lacks",
            collection: "/plugins",
            body: json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "cluster"}}),
            field: "config.policy",
        },
        Poison {
            what: "rate-limiting with the redis policy and no redis host",
            collection: "/plugins",
            body: json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis"}}),
            field: "config.redis.host",
        },
        Poison {
            what: "rate-limiting by header without the header's name",
            collection: "/plugins",
            body: json!({"name": "rate-limiting", "config": {"minute": 5, "limit_by": "header"}}),
            field: "config.header_name",
        },
        Poison {
            what: "route header name with a space",
            collection: "/services/base/routes",
            body: route("space", "x y"),
            field: "headers",
        },
        Poison {
            what: "route header name with CRLF",
            collection: "/services/base/routes",
            body: route("crlf", "x\r\ninjected"),
            field: "headers",
        },
        Poison {
            what: "ai-proxy header_name with a space",
            collection: "/plugins",
            body: ai_proxy(
                json!({"header_name": "Author ization", "header_value": "Bearer sk-test"}),
                json!({}),
            ),
            field: "config.auth.header_name",
        },
        Poison {
            what: "ai-proxy header_name with CRLF",
            collection: "/plugins",
            body: ai_proxy(
                json!({"header_name": "Authorization\r\nX-Injected", "header_value": "Bearer sk"}),
                json!({}),
            ),
            field: "config.auth.header_name",
        },
        Poison {
            what: "ai-proxy header_value with CRLF",
            collection: "/plugins",
            body: ai_proxy(
                json!({"header_name": "Authorization", "header_value": "Bearer sk\r\nX-Injected: 1"}),
                json!({}),
            ),
            field: "config.auth.header_value",
        },
        Poison {
            what: "ai-proxy header_value with NUL",
            collection: "/plugins",
            body: ai_proxy(
                json!({"header_name": "Authorization", "header_value": "Bearer sk\u{0}"}),
                json!({}),
            ),
            field: "config.auth.header_value",
        },
        Poison {
            what: "ai-proxy upstream_url file:///etc/passwd",
            collection: "/plugins",
            body: upstream_url("file:///etc/passwd"),
            field: "config.model.options.upstream_url",
        },
        Poison {
            what: "ai-proxy upstream_url gopher://",
            collection: "/plugins",
            body: upstream_url("gopher://internal.example/1"),
            field: "config.model.options.upstream_url",
        },
        Poison {
            what: "ai-proxy upstream_url without a host",
            collection: "/plugins",
            body: upstream_url("http://"),
            field: "config.model.options.upstream_url",
        },
    ]
}

fn names_field(what: &str, body: &Value, field: &str) {
    assert_eq!(body["code"], 2, "{what}: {body}");
    assert_eq!(body["name"], "schema violation", "{what}: {body}");
    let mut node = &body["fields"];
    for segment in field.split('.') {
        node = &node[segment];
    }
    assert!(!node.is_null(), "{what}: fields.{field} missing: {body}");
    if field != "@entity" {
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{what}: the message names {field}: {body}"
        );
    }
    // The secret is never echoed back in an error.
    assert!(
        !body.to_string().contains("sk-test") && !body.to_string().contains("Bearer sk"),
        "{what}: {body}"
    );
}

/// The stored and the served version agree, and nothing is reported as not compiling.
async fn in_sync(kong: &Sluice) {
    let (_, status) = kong.get("/status").await;
    assert_eq!(
        status["proxy"]["configuration_version"], status["configuration_version"],
        "{status}"
    );
    assert_eq!(
        status["proxy"]["configuration_faults"],
        json!([]),
        "{status}"
    );
}

/// Polls `/status` until the proxy serves the stored version (a change has compiled).
async fn wait_served(kong: &Sluice) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, status) = kong.get("/status").await;
        if status["proxy"]["configuration_version"] == status["configuration_version"] {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn admin_api_refuses_what_the_proxy_cannot_compile_and_later_changes_still_apply() {
    let up = upstream::start().await;
    let kong = Sluice::start().await;
    let (status, body) = kong
        .post(
            "/services",
            json!({"name": "base", "url": format!("http://{up}")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(
            "/services/base/routes",
            json!({"name": "ok", "paths": ["/ok"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    kong.wait_for_proxy("/ok", 200).await;
    let version = kong.config_version().await;

    for poison in poisons() {
        let (status, body) = kong.post(poison.collection, poison.body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {body}", poison.what);
        names_field(poison.what, &body, poison.field);
        assert_eq!(kong.config_version().await, version, "{}", poison.what);
    }

    // The form body of the issue: `curl --data name=rate-limiting`.
    let (status, body) = kong
        .form("POST", "/plugins", &[("name", "rate-limiting")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    names_field("form rate-limiting", &body, "@entity");

    // PATCH and PUT run the same checks on the merged entity.
    let (status, plugin) = kong
        .post(
            "/routes/ok/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 1000}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plugin}");
    let id = plugin["id"].as_str().unwrap();
    let version = kong.config_version().await;
    let (status, body) = kong
        .patch(
            &format!("/plugins/{id}"),
            json!({"config": {"policy": "cluster"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    names_field("PATCH policy cluster", &body, "config.policy");
    let (status, body) = kong
        .put(
            "/routes/ok-put",
            json!({"paths": ["/put"], "headers": {"bad name": ["1"]}, "service": {"name": "base"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    names_field("PUT bad header", &body, "headers");
    assert_eq!(kong.config_version().await, version);

    // Nothing froze: a later change reaches the proxy, and what is served is what is stored.
    let (status, body) = kong
        .form(
            "POST",
            "/services/base/routes",
            &[("name", "new"), ("paths[]", "/new")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    kong.wait_for_proxy("/new", 200).await;
    wait_served(&kong).await;
    in_sync(&kong).await;
}

const GOOD: &str = r#"_format_version: "3.0"
services:
  - name: base
    url: http://127.0.0.1:1
    routes:
      - name: ok
        paths: [/ok]
"#;

/// A decK file whose line 9 holds a plugin the proxy cannot compile.
const POISONED: &str = r#"_format_version: "3.0"
services:
  - name: base
    url: http://127.0.0.1:1
    routes:
      - name: ok
        paths: [/ok]
        plugins:
          - name: rate-limiting
            config:
              policy: local
      - name: bad-header
        paths: [/bad]
        headers:
          "x y": ["1"]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn every_declarative_path_refuses_it_with_file_and_line() {
    let dir = temp_dir();
    let file = write(&dir, "kong.yaml", POISONED);

    // `sluice validate`: exit 1, both problems, each with its file and line.
    let output = Command::new(BIN)
        .args(["validate", &file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kong.yaml:9:") && stderr.contains("at least one of these fields"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kong.yaml:12:") || stderr.contains("kong.yaml:15:"),
        "the route's problem has a location too: {stderr}"
    );
    assert!(stderr.contains("invalid header name"), "{stderr}");

    // `sluice sync`: refused before anything is sent; the store is untouched.
    let kong = Sluice::start().await;
    let version = kong.config_version().await;
    let output = Command::new(BIN)
        .args(["sync", &file, "--admin-url", &kong.admin])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kong.yaml:9:"), "{stderr}");
    assert_eq!(kong.config_version().await, version);

    // `POST /sluice/sync` does not trust the client: a plan carrying such a plugin is a 400.
    let good = write(&dir, "good.yaml", GOOD);
    let output = Command::new(BIN)
        .args(["sync", &good, "--admin-url", &kong.admin])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let version = kong.config_version().await;
    let (_, snapshot) = kong.get("/sluice/snapshot").await;
    let route = snapshot["routes"][0].clone();
    let plugin = json!({
        "id": uuid::Uuid::new_v4(), "name": "rate-limiting", "config": {"policy": "local"},
        "route": {"id": route["id"]}, "enabled": true, "protocols": ["http", "https"],
        "created_at": 1, "updated_at": 1,
    });
    let plan = json!({"expected_version": version, "plan": {"changes": [
        {"op": "create", "kind": "plugin", "id": plugin["id"], "label": "rate-limiting", "new": plugin}
    ]}});
    let (status, body) = kong.post("/sluice/sync", plan).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at least one of these fields"),
        "{body}"
    );
    assert_eq!(kong.config_version().await, version);
    drop(kong);

    // A DB-less node started with it refuses to start, naming the file and line.
    let output = Command::new(BIN)
        .args(["start", "--database", "off", "--declarative-config", &file])
        .args([
            "--admin-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args([
            "--proxy-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args(["--prefix", &dir.join("prefix").display().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("kong.yaml:9:"), "{stderr}");

    // A running DB-less node: `POST /config` is a 400 and the old config keeps serving.
    let good = write(&dir, "dbless.yaml", GOOD);
    let kong = Sluice::start_dbless(temp_dir(), Path::new(&good)).await;
    let version = kong.config_version().await;
    let (status, body) = kong
        .raw(
            "POST",
            "/config",
            Some("application/yaml"),
            POISONED.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], 14, "{body}");
    assert!(body.to_string().contains("invalid header name"), "{body}");
    assert_eq!(kong.config_version().await, version);
    in_sync(&kong).await;
    common::remove_dir(&dir);
}

/// Defence in depth: rows that do not compile, written past the Admin API (an older control
/// plane, a restore, a hand edit), cost only themselves, also across a restart.
#[tokio::test]
async fn an_entity_that_does_not_compile_is_contained_to_itself() {
    let up = upstream::start().await;
    let kong = Sluice::start().await;
    for (name, path) in [
        ("good", "/good"),
        ("limited", "/limited"),
        ("headed", "/headed"),
    ] {
        let (status, body) = kong
            .post(
                "/services",
                json!({"name": name, "url": format!("http://{up}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = kong
            .post(
                &format!("/services/{name}/routes"),
                json!({"name": name, "paths": [path]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, plugin) = kong
        .post(
            "/routes/limited/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 100}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plugin}");
    let plugin_id = plugin["id"].as_str().unwrap().to_owned();
    let (_, route) = kong.get("/routes/headed").await;
    let route_id = route["id"].as_str().unwrap().to_owned();
    kong.wait_for_proxy("/headed", 200).await;
    let dir = kong.stop_keep();

    // Edit the rows directly, the way a config written elsewhere would arrive.
    let db = dir.join("sluice.db");
    let output = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "UPDATE plugins SET body = json_set(body, '$.config.policy', 'cluster') WHERE id = '{plugin_id}';
             UPDATE routes SET body = json_set(body, '$.headers', json('{{\"x y\": [\"1\"]}}')) WHERE id = '{route_id}';
             UPDATE config_version SET version = version + 1;"
        ))
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            println!("skipped: the sqlite3 command is not available ({error})");
            common::remove_dir(&dir);
            return;
        }
    };
    assert!(output.status.success(), "{output:?}");

    let kong = Sluice::start_in(dir, &[]).await;
    // The rest of the config is served after the restart (before the fix: nothing was).
    kong.wait_for_proxy("/good", 200).await;
    let response = kong.through("GET", "/limited").send().await.unwrap();
    assert_eq!(response.status(), 503, "the plugin's route fails closed");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains(&plugin_id),
        "the 503 names the plugin: {body}"
    );
    let response = kong.through("GET", "/headed").send().await.unwrap();
    assert_eq!(
        response.status(),
        404,
        "a route that does not compile is left out"
    );

    // /status says what is served and what is not, and why.
    let status = wait_served(&kong).await;
    let faults = status["proxy"]["configuration_faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{status}");
    assert!(
        faults
            .iter()
            .any(|f| f["entity"] == "plugin" && f["id"] == plugin_id.as_str()),
        "{status}"
    );
    assert!(
        faults
            .iter()
            .any(|f| f["entity"] == "route" && f["id"] == route_id.as_str()),
        "{status}"
    );

    // Changes still apply: fixing the plugin through the Admin API heals the route.
    let (status, body) = kong
        .patch(
            &format!("/plugins/{plugin_id}"),
            json!({"config": {"policy": "local"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    kong.wait_for_proxy("/limited", 200).await;
    let status = wait_served(&kong).await;
    assert_eq!(
        status["proxy"]["configuration_faults"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{status}"
    );
}
