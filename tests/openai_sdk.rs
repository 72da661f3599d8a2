//! The official `openai` Python SDK, installed from PyPI into a virtual environment, talks to
//! the real Sluice binary (ai-proxy routes in front of the mock provider).
//!
//! Skips with a printed reason when Python or PyPI is unavailable, so the README's test command
//! still passes offline; CI has both.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Sluice;
use reqwest::StatusCode;
use serde_json::json;
use sluice_mock_llm::MockConfig;

/// A virtual environment with the `openai` package, shared by runs (under target/).
fn venv() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv");
    let python = root.join("bin/python");
    let ready = root.join(".openai-installed");
    if ready.exists() {
        return Ok(python);
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&root)
        .status()
        .map_err(|e| format!("python3 not available: {e}"))?;
    if !status.success() {
        return Err("python3 -m venv failed".to_owned());
    }
    let output = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "openai>=1.40"])
        .output()
        .map_err(|e| format!("pip failed to start: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "pip install openai failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::write(&ready, b"ok").map_err(|e| e.to_string())?;
    Ok(python)
}

async fn route(kong: &Sluice, path: &str, route_type: &str, upstream: &str) {
    let name = path.trim_start_matches('/').replace('/', "-");
    let (status, body) = kong
        .post("/routes", json!({"name": name, "paths": [path]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(&format!("/routes/{name}/plugins"), json!({"name": "ai-proxy", "config": {
            "route_type": route_type,
            "auth": {"header_name": "Authorization", "header_value": "Bearer sk-gateway"},
            "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": upstream}},
        }}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn official_openai_python_sdk() {
    let python = match venv() {
        Ok(python) => python,
        Err(reason) => {
            println!("SKIPPED official_openai_python_sdk: {reason}");
            return;
        }
    };
    let mock = sluice_mock_llm::start(MockConfig::openai()).await.unwrap();
    let kong = Sluice::start().await;
    let up = mock.url();
    route(&kong, "/sdk/chat/completions", "llm/v1/chat", &up).await;
    route(&kong, "/sdk/completions", "llm/v1/completions", &up).await;
    route(&kong, "/sdk/embeddings", "llm/v1/embeddings", &up).await;
    route(&kong, "/sdk/responses", "llm/v1/responses", &up).await;
    route(
        &kong,
        "/sdk/images/generations",
        "image/v1/images/generations",
        &up,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = kong
            .through("GET", "/sdk/images/generations")
            .send()
            .await
            .unwrap();
        let body = probe.text().await.unwrap_or_default();
        if !body.contains("no Route matched") && !body.contains("no Service found") {
            break;
        }
        assert!(Instant::now() < deadline, "routes never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/check_openai_sdk.py");
    let output = tokio::task::spawn_blocking({
        let proxy = kong.proxy.clone();
        move || {
            Command::new(python)
                .arg(script)
                .args(["--base-url", &format!("{proxy}/sdk")])
                .output()
                .expect("run the SDK script")
        }
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "SDK checks failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!mock.requests().is_empty());
}
