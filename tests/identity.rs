//! Who is calling (the identity issue): consumer credentials through the Admin API and decK
//! files, and the key-auth, basic-auth and acl plugins on real requests through the real
//! binary. Kong 3.x is the reference for every status, message and header asserted here.

mod common;

use base64::Engine as _;
use common::{send, Sluice, NO_CHANGES};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A route `/{name}` to the echo upstream with `plugins` on it; waits until it is served.
async fn route_with(node: &Sluice, name: &str, plugins: &[Value]) {
    node.echo_route(name, json!([format!("/{name}")]), plugins)
        .await;
}

async fn consumer(node: &Sluice, username: &str) -> String {
    let (status, body) = node
        .post(
            "/consumers",
            json!({"username": username, "custom_id": format!("{username}-c")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn key(node: &Sluice, username: &str, key: &str) -> Value {
    let (status, body) = node
        .post(
            &format!("/consumers/{username}/key-auth"),
            json!({ "key": key }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[tokio::test]
async fn credentials_through_the_admin_api() {
    let node = Sluice::start().await;
    let alice = consumer(&node, "alice").await;

    // A key is generated when omitted: 32 characters, random.
    let (status, generated) = node.post("/consumers/alice/key-auth", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{generated}");
    let generated_key = generated["key"].as_str().unwrap();
    assert_eq!(generated_key.len(), 32);
    assert_eq!(generated["consumer"]["id"], json!(alice));
    assert!(
        generated.get("updated_at").is_none(),
        "Kong's credentials have no updated_at"
    );
    let explicit = key(&node, "alice", "alice-key").await;

    // Every address of a credential answers.
    let id = explicit["id"].as_str().unwrap();
    for path in [
        format!("/key-auths/{id}"),
        format!("/consumers/alice/key-auth/{id}"),
        format!("/consumers/{alice}/key-auth/alice-key"),
        "/key-auths/alice-key".to_owned(),
    ] {
        let (status, body) = node.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["key"], "alice-key", "{path}");
    }
    let (_, list) = node.get("/consumers/alice/key-auth").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (_, list) = node.get("/key-auths").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // Kong's unique violation for a key that exists.
    let (status, body) = node
        .post("/consumers/alice/key-auth", json!({"key": "alice-key"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["name"], "unique constraint violation");
    assert_eq!(
        body["message"],
        "UNIQUE violation detected on '{key=\"alice-key\"}'"
    );
    // A credential for a consumer that does not exist: 404, nothing written.
    let (status, _) = node
        .post("/consumers/nobody/key-auth", json!({"key": "k2"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = node
        .post(
            "/key-auths",
            json!({"key": "k3", "consumer": {"id": "6f6fb5d4-36e1-4d7a-9d5f-1c7a2c9e3d10"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        node.get("/key-auths").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // basic-auth: the password is stored as Kong hashes it and never returned in clear.
    let (status, body) = node
        .post(
            "/consumers/alice/basic-auth",
            json!({"username": "alice-basic", "password": "s3cret"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let expected = sluice_model::credentials::hash_password("s3cret", alice.parse().unwrap());
    assert_eq!(body["password"], json!(expected));
    assert!(!body.to_string().contains("s3cret"));
    // A PATCH that leaves the password alone keeps its hash (not a hash of the hash).
    let (status, body) = node
        .patch(
            "/consumers/alice/basic-auth/alice-basic",
            json!({"tags": ["t"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["password"], json!(expected));

    // ACL groups: one per consumer and group.
    let (status, body) = node
        .post("/consumers/alice/acls", json!({"group": "admins"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node
        .post("/consumers/alice/acls", json!({"group": "admins"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = node.get("/consumers/alice/acls/admins").await;
    assert_eq!(
        (status, body["group"].clone()),
        (StatusCode::OK, json!("admins"))
    );

    // Deleting the consumer deletes its credentials.
    let (status, _) = node.delete("/consumers/alice").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for collection in ["/key-auths", "/basic-auths", "/acls"] {
        let (_, list) = node.get(collection).await;
        assert_eq!(list["data"], json!([]), "{collection}");
    }
}

#[tokio::test]
async fn bad_plugin_configs_are_refused_and_nothing_is_written() {
    let node = Sluice::start().await;
    let id = consumer(&node, "alice").await;
    let cases = [
        (
            json!({"name": "key-auth", "consumer": {"id": id}}),
            "consumer",
            "value must be null",
        ),
        (
            json!({"name": "key-auth", "config": {"key_names": []}}),
            "config.key_names",
            "length must be at least 1",
        ),
        (
            json!({"name": "acl", "config": {"allow": ["a"], "deny": ["b"]}}),
            "@entity",
            "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'",
        ),
        (
            json!({"name": "acl", "config": {}}),
            "@entity",
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
        ),
    ];
    node.assert_plugins_refused(&cases).await;
    assert_eq!(node.count("plugins").await, 0);
}

#[tokio::test]
async fn key_auth_on_a_route() {
    let node = Sluice::start().await;
    let alice = consumer(&node, "alice").await;
    let credential = key(&node, "alice", "alice-key").await;
    let anonymous = consumer(&node, "guest").await;
    route_with(
        &node,
        "keyed",
        &[json!({"name": "key-auth", "config": {"hide_credentials": true}})],
    )
    .await;
    route_with(
        &node,
        "shown",
        &[json!({"name": "key-auth", "config": {"key_names": ["x-api-key"], "realm": "sluice"}})],
    )
    .await;
    route_with(
        &node,
        "open",
        &[json!({"name": "key-auth", "config": {"anonymous": "guest"}})],
    )
    .await;
    route_with(
        &node,
        "broken",
        &[json!({"name": "key-auth", "config": {"anonymous": "nobody"}})],
    )
    .await;

    // No key, a wrong key: Kong's 401s with WWW-Authenticate.
    let response = node.through("GET", "/keyed/x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Key");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "No API key found in request");
    let response = node
        .through("GET", "/shown/x")
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Key realm=\"sluice\""
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["message"],
        "Unauthorized"
    );

    // The key in a header: the consumer's headers reach the upstream, a client's own
    // X-Consumer-* headers do not, and hide_credentials keeps the key away.
    let (status, echo) = send(
        node.through("GET", "/keyed/x")
            .header("apikey", "alice-key")
            .header("x-anonymous-consumer", "true"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    let headers = &echo["headers"];
    assert_eq!(headers["x-consumer-id"], json!(alice));
    assert_eq!(headers["x-consumer-username"], "alice");
    assert_eq!(headers["x-consumer-custom-id"], "alice-c");
    assert_eq!(headers["x-credential-identifier"], credential["id"]);
    assert!(headers.get("x-anonymous-consumer").is_none(), "{headers}");
    assert!(
        headers.get("apikey").is_none(),
        "hide_credentials: {headers}"
    );

    // The key in the query string, removed from it before the upstream.
    let (status, echo) = send(node.through("GET", "/keyed/x?a=1&apikey=alice-key&b=2")).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["path_and_query"], "/x?a=1&b=2");
    // Without hide_credentials the key goes through.
    let (status, echo) = send(
        node.through("GET", "/shown/x")
            .header("x-api-key", "alice-key"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["x-api-key"], "alice-key");

    // anonymous: a request without a key goes through as the anonymous consumer.
    let (status, echo) = send(node.through("GET", "/open/x")).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["headers"]["x-consumer-id"], json!(anonymous));
    assert_eq!(echo["headers"]["x-anonymous-consumer"], "true");
    // An anonymous consumer that does not exist: Kong's 500.
    let (status, body) = send(node.through("GET", "/broken/x")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body["message"],
        "anonymous consumer nobody is configured but doesn't exist"
    );

    // A key removed through the Admin API stops working once the proxy has the change.
    let (status, _) = node.delete("/key-auths/alice-key").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    node.wait_for_served(node.config_version().await).await;
    let (status, _) = send(
        node.through("GET", "/keyed/x")
            .header("apikey", "alice-key"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn basic_auth_and_acl() {
    let node = Sluice::start().await;
    consumer(&node, "alice").await;
    consumer(&node, "bob").await;
    for (user, group) in [("alice", "admins"), ("bob", "readers")] {
        let (status, body) = node
            .post(
                &format!("/consumers/{user}/basic-auth"),
                json!({"username": user, "password": format!("{user}-pw")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = node
            .post(&format!("/consumers/{user}/acls"), json!({"group": group}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = node
        .post("/consumers/alice/acls", json!({"group": "ops"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    route_with(
        &node,
        "admin",
        &[
            json!({"name": "basic-auth", "config": {"hide_credentials": true}}),
            json!({"name": "acl", "config": {"allow": ["admins"]}}),
        ],
    )
    .await;

    let (status, echo) = send(
        node.through("GET", "/admin/x")
            .header("authorization", basic("alice", "alice-pw")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["headers"]["x-consumer-username"], "alice");
    assert_eq!(echo["headers"]["x-credential-identifier"], "alice");
    assert_eq!(echo["headers"]["x-consumer-groups"], "admins, ops");
    assert!(echo["headers"].get("authorization").is_none(), "hidden");

    // Bob authenticates but is not in the group: Kong's 403.
    let (status, body) = send(
        node.through("GET", "/admin/x")
            .header("authorization", basic("bob", "bob-pw")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "You cannot consume this service");

    // A wrong password, a header that is not base64, no header: 401 with the realm.
    for header in [
        Some(basic("alice", "wrong")),
        Some("Basic %%%not-base64".to_owned()),
        None,
    ] {
        let mut request = node.through("GET", "/admin/x");
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"service\""
        );
        assert_eq!(
            response.json::<Value>().await.unwrap()["message"],
            "Unauthorized"
        );
    }
}

/// A rate-limiting plugin on consumer A limits A only, and `limit_by: consumer` counts each
/// consumer on its own.
#[tokio::test]
async fn consumer_scoped_plugins_apply_to_their_consumer() {
    let node = Sluice::start().await;
    let alice = consumer(&node, "alice").await;
    consumer(&node, "bob").await;
    key(&node, "alice", "alice-key").await;
    key(&node, "bob", "bob-key").await;
    let (status, body) = node
        .post(
            "/consumers/alice/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["consumer"]["id"], json!(alice));
    route_with(&node, "limited", &[json!({"name": "key-auth"})]).await;
    route_with(
        &node,
        "shared",
        &[
            json!({"name": "key-auth"}),
            json!({"name": "rate-limiting", "config": {"minute": 2, "limit_by": "consumer"}}),
        ],
    )
    .await;

    let call = |path: &'static str, key: &'static str| {
        let request = node.through("GET", path).header("apikey", key);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(call("/limited/x", "alice-key").await, StatusCode::OK);
    assert_eq!(
        call("/limited/x", "alice-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..3 {
        assert_eq!(
            call("/limited/x", "bob-key").await,
            StatusCode::OK,
            "bob is not limited"
        );
    }
    // On `shared`, alice's own (more specific) limit of 1 wins over the route's 2 — and
    // her minute is already used; bob gets the route's limit, counted for him alone.
    assert_eq!(
        call("/shared/x", "alice-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call("/shared/x", "bob-key").await, StatusCode::OK);
    assert_eq!(call("/shared/x", "bob-key").await, StatusCode::OK);
    assert_eq!(
        call("/shared/x", "bob-key").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// An AI route behind key-auth: each consumer's calls are logged as theirs, with their own
/// rate limit, and the provider key never reaches the log.
#[tokio::test]
async fn ai_route_behind_key_auth_attributes_usage() {
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    let alice = consumer(&node, "alice").await;
    let bob = consumer(&node, "bob").await;
    key(&node, "alice", "alice-key").await;
    key(&node, "bob", "bob-key").await;
    let (status, _) = node
        .post("/routes", json!({"name": "chat", "paths": ["/chat"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for plugin in [
        json!({"name": "key-auth", "config": {"hide_credentials": true}}),
        json!({"name": "ai-proxy", "config": {
            "route_type": "llm/v1/chat",
            "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"},
            "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": mock.url()}},
            "logging": {"log_statistics": true},
        }}),
    ] {
        let (status, body) = node.post("/routes/chat/plugins", plugin).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _) = node
        .post(
            "/consumers/bob/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    node.wait_for_served(node.config_version().await).await;

    let chat = |key: Option<&'static str>| {
        let mut request = node
            .through("POST", "/chat")
            .json(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        if let Some(key) = key {
            request = request.header("apikey", key);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        chat(None).await,
        StatusCode::UNAUTHORIZED,
        "no key, no spend"
    );
    assert_eq!(chat(Some("alice-key")).await, StatusCode::OK);
    assert_eq!(chat(Some("alice-key")).await, StatusCode::OK);
    assert_eq!(chat(Some("bob-key")).await, StatusCode::OK);
    assert_eq!(
        chat(Some("bob-key")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "bob's own limit"
    );
    assert_eq!(
        mock.requests().len(),
        3,
        "refused calls never reach the provider"
    );

    let records = node.ai_records(3).await;
    let owners: Vec<&Value> = records.iter().map(|r| &r["consumer"]["id"]).collect();
    assert_eq!(owners, [&json!(alice), &json!(alice), &json!(bob)]);
    assert!(records
        .iter()
        .all(|r| r["ai"]["proxy"]["usage"]["total_tokens"].as_u64() > Some(0)));
    let logs = node.logs();
    assert!(!logs.contains("sk-provider") && !logs.contains("alice-key"));
}

const DECK_FILE: &str = r#"_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:9/
    routes:
      - name: api
        paths: [/api]
        plugins:
          - name: key-auth
          - name: acl
            config:
              allow: [admins]
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-key
        tags: [k]
    basicauth_credentials:
      - username: alice
        password: alice-pw
    acls:
      - group: admins
  - username: bob
    keyauth_credentials:
      - key: bob-key
"#;

#[tokio::test]
async fn credentials_in_a_deck_file() {
    let node = Sluice::start().await;
    let file = node.dir.join("kong.yaml");
    std::fs::write(&file, DECK_FILE).unwrap();
    let file = file.display().to_string();

    let (ok, out, err) = node.deck(&["sync", &file]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("creating acl-group admins for consumer alice"),
        "{out}"
    );
    assert!(out.contains("Created: 10"), "{out}");
    assert!(
        !out.contains("alice-pw") && !out.contains("alice-key"),
        "secrets: {out}"
    );
    let (ok, out, _) = node.deck(&["diff", &file]);
    assert!(ok);
    assert_eq!(
        out, NO_CHANGES,
        "no-op diff after sync, hashed password included"
    );

    // The dump carries the credentials (the password as its hash) and syncs back clean.
    let dump = node.dir.join("dump.yaml").display().to_string();
    let (ok, _, err) = node.deck(&["dump", "-o", &dump]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(
        text.contains("keyauth_credentials") && text.contains("key: alice-key"),
        "{text}"
    );
    assert!(
        text.contains("acls:") && !text.contains("alice-pw"),
        "{text}"
    );
    let (ok, out, err) = node.deck(&["diff", &dump]);
    assert!(ok, "{err}");
    assert_eq!(out, NO_CHANGES);
    let (ok, out, _) = node.deck(&["diff", &file]);
    assert!(ok);
    assert_eq!(out, NO_CHANGES);

    // A changed password is an update; a removed credential a delete.
    let changed = DECK_FILE
        .replace("password: alice-pw", "password: new-pw")
        .replace("    keyauth_credentials:\n      - key: bob-key\n", "");
    std::fs::write(&file, changed).unwrap();
    let (ok, out, err) = node.deck(&["sync", &file]);
    assert!(ok, "{err}");
    assert!(
        out.contains("updating basic-auth alice for consumer alice"),
        "{out}"
    );
    assert!(
        out.contains("Updated: 1") && out.contains("Deleted: 1"),
        "{out}"
    );
    assert!(!out.contains("new-pw"), "{out}");
    let (ok, out, _) = node.deck(&["diff", &file]);
    assert!(ok);
    assert_eq!(out, NO_CHANGES);

    // The synced config serves: alice's key is accepted through key-auth and acl.
    node.wait_for_served(node.config_version().await).await;
    let (status, _) = send(node.through("GET", "/api").header("apikey", "alice-key")).await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "authenticated, then the dead upstream"
    );
    let (status, _) = send(node.through("GET", "/api").header("apikey", "bob-key")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "bob's key was deleted");
}

/// A `{vault://env/...}` reference reaches the upstream as the environment's value, and never
/// appears in the stored config's dump, the Admin API or the logs; one that cannot be resolved
/// fails its plugin closed, naming the reference, while the rest keeps serving; a reference to
/// a vault Sluice lacks is refused when written.
#[tokio::test]
async fn secrets_by_reference() {
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .expect("mock");
    let node = Sluice::start_with_env(&[("SLUICE_TEST_OPENAI_KEY", "Bearer sk-from-env")]).await;
    let ai = |reference: &str| {
        json!({"name": "ai-proxy", "config": {
            "route_type": "llm/v1/chat",
            "auth": {"header_name": "Authorization", "header_value": reference},
            "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": mock.url()}},
        }})
    };
    for (name, reference) in [
        ("good", "{vault://env/sluice-test-openai-key}"),
        ("unset", "{vault://env/sluice-test-not-set}"),
    ] {
        let (status, _) = node
            .post(
                "/routes",
                json!({"name": name, "paths": [format!("/{name}")]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = node
            .post(&format!("/routes/{name}/plugins"), ai(reference))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // An unknown vault: refused, naming the field; nothing written.
    let (status, body) = node.post("/plugins", ai("{vault://aws/openai-key}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["fields"]["config"]["auth"]["header_value"]
            .as_str()
            .is_some_and(|m| m.contains("could not find vault (aws)")),
        "{body}"
    );
    assert_eq!(node.count("plugins").await, 2);
    node.wait_for_served(node.config_version().await).await;

    let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = send(node.through("POST", "/good").json(&chat)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = mock.last_request().expect("the provider was called");
    let auth = sent
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.as_str());
    assert_eq!(auth, Some("Bearer sk-from-env"));

    // The unresolvable reference: that route fails closed and names the reference.
    let (status, body) = send(node.through("POST", "/unset").json(&chat)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.to_string()
            .contains("{vault://env/sluice-test-not-set}"),
        "{body}"
    );
    let (_, status_body) = node.get("/status").await;
    let faults = status_body["proxy"]["configuration_faults"].to_string();
    assert!(faults.contains("SLUICE_TEST_NOT_SET"), "{faults}");

    // Stored, listed and dumped as the reference; the value is nowhere.
    let (_, plugins) = node.get("/plugins").await;
    assert!(plugins
        .to_string()
        .contains("{vault://env/sluice-test-openai-key}"));
    let (ok, dump, _) = node.deck(&["dump"]);
    assert!(ok);
    assert!(
        dump.contains("{vault://env/sluice-test-openai-key}"),
        "{dump}"
    );
    for place in [plugins.to_string(), dump, node.logs()] {
        assert!(!place.contains("sk-from-env"), "the value leaked: {place}");
    }
}

#[tokio::test]
async fn the_access_log_names_the_consumer() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::temp_dir();
    let file = dir.join("access.log");
    let node = Sluice::start_in(dir.clone(), &["--proxy-access-log", file.to_str().unwrap()]).await;
    let alice = consumer(&node, "alice").await;
    key(&node, "alice", "alice-key").await;
    route_with(&node, "logged", &[json!({"name": "key-auth"})]).await;

    let (status, _) = send(
        node.through("GET", "/logged/a?x=1")
            .header("apikey", "alice-key"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(node.through("POST", "/logged/b")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(node.through("GET", "/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Readiness was read from /status: these three are the only proxied requests.
    let lines = common::json_lines(&file, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let (ok, refused, unrouted) = (&lines[0], &lines[1], &lines[2]);

    assert_eq!(ok["request"]["method"], "GET");
    assert_eq!(ok["request"]["uri"], "/logged/a?x=1");
    assert_eq!(ok["upstream_uri"], "/a?x=1");
    assert_eq!(ok["response"]["status"], 200);
    assert!(ok["response"]["size"].as_u64().unwrap() > 0, "{ok}");
    assert!(ok["latencies"]["proxy"].as_i64().unwrap() >= 0, "{ok}");
    assert_eq!(ok["consumer"]["id"], json!(alice));
    assert_eq!(ok["consumer"]["username"], "alice");
    assert_eq!(ok["consumer"]["custom_id"], "alice-c");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert!(ok["route"]["id"].is_string() && ok["service"]["id"].is_string());
    assert!(
        !ok.to_string().contains("alice-key"),
        "the key is never logged: {ok}"
    );

    assert_eq!(refused["response"]["status"], 401);
    assert_eq!(refused["latencies"]["proxy"], -1, "it never went upstream");
    assert!(refused.get("consumer").is_none(), "{refused}");

    assert_eq!(unrouted["response"]["status"], 404);
    assert!(unrouted.get("route").is_none(), "{unrouted}");
    assert_eq!(unrouted["request"]["uri"], "/nowhere");

    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the access log is not world-readable");
}

#[tokio::test]
async fn an_access_log_that_cannot_be_opened_stops_the_start() {
    let dir = common::temp_dir();
    let database = format!("sqlite://{}", dir.join("sluice.db").display());
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["start", "--database", &database])
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .args(["--proxy-access-log", "/nonexistent-dir/access.log"])
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("sluice exits instead of serving without its access log")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--proxy-access-log /nonexistent-dir/access.log"),
        "{stderr}"
    );
    common::remove_dir(&dir);
}
