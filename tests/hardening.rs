//! Regression tests from the hardening issue's attack run, against the real binary: inputs
//! that crashed, hung or weakened a node. (The poisoned-config part is `poisoned_config.rs`.)

mod common;

use common::Sluice;
use reqwest::StatusCode;
use serde_json::json;

/// A ~4 KB form body with a 1,500-level dotted key overflowed the stack and killed the whole
/// node. Now it, and a body past Kong's argument limit, are a 400; the node stays up.
#[tokio::test]
async fn hostile_form_bodies_are_refused_and_the_node_stays_up() {
    let kong = Sluice::start().await;
    let (status, body) = kong
        .post(
            "/services",
            json!({"name": "base", "host": "base.internal"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let version = kong.config_version().await;
    let deep_key = format!("config{}", ".a".repeat(1_500));
    let many: Vec<(String, String)> = (0..1_001)
        .map(|i| (format!("tags[{i}]"), "t".into()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (method, path, pairs, message) in [
        (
            "POST",
            "/plugins",
            vec![("name", "rate-limiting"), (deep_key.as_str(), "1")],
            "nested deeper",
        ),
        (
            "POST",
            "/services",
            vec![("name", "x"), (deep_key.as_str(), "1")],
            "nested deeper",
        ),
        (
            "PATCH",
            "/services/base",
            vec![(deep_key.as_str(), "1")],
            "nested deeper",
        ),
        ("POST", "/services", many.clone(), "Too many arguments"),
    ] {
        let (status, body) = kong.form(method, path, &pairs).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{method} {path}: {body}"
        );
    }
    // Still up, and nothing was written.
    assert_eq!(kong.config_version().await, version);
    let (status, _) = kong.get("/services/base").await;
    assert_eq!(status, StatusCode::OK);
}

/// The SQLite file holds provider keys: it and its WAL and SHM files are 0600.
#[cfg(unix)]
#[tokio::test]
async fn the_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let kong = Sluice::start().await;
    let (status, body) = kong
        .post("/services", json!({"name": "s", "host": "h"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for name in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        let mode = std::fs::metadata(kong.dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is {:o}", mode & 0o777);
    }
}
