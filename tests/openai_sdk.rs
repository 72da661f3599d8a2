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
use sluice_mock_llm::{MockConfig, DEFAULT_REPLY};

/// A virtual environment with the `openai` package, shared by runs (under target/).
fn venv() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv");
    let python = root.join("bin/python");
    // The realtime extra brings `websockets`, which the SDK's Realtime client needs.
    let ready = root.join(".openai-realtime-installed");
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
        .args(["-m", "pip", "install", "--quiet", "openai[realtime]>=1.58"])
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

/// The SDK's Realtime client (GA, and beta when the installed SDK still has it) through a
/// `ws` route with ai-proxy-advanced: the gateway injects the key and the model, and counts
/// each session's usage from its `response.done` events.
#[tokio::test]
async fn official_openai_python_sdk_realtime_client() {
    let python = match venv() {
        Ok(python) => python,
        Err(reason) => {
            println!("SKIPPED official_openai_python_sdk_realtime_client: {reason}");
            return;
        }
    };
    let mock = sluice_mock_llm::start(MockConfig::openai()).await.unwrap();
    let kong = Sluice::start_in(common::temp_dir(), &["--log-format", "json"]).await;
    let (status, body) = kong
        .post(
            "/services",
            json!({"name": "rt", "protocol": "ws", "host": "dummy.invalid"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(
            "/services/rt/routes",
            json!({"paths": ["/sdk-rt"], "protocols": ["ws", "wss"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(
            "/services/rt/plugins",
            json!({"name": "ai-proxy-advanced", "config": {
                "genai_category": "realtime/generation",
                "targets": [{
                    "route_type": "realtime/v1/realtime",
                    "auth": {"header_name": "Authorization", "header_value": "Bearer sk-gateway"},
                    "model": {"provider": "openai", "name": "gpt-4o-realtime-preview",
                              "options": {"upstream_url": mock.url()}},
                    "logging": {"log_statistics": true},
                }],
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    kong.wait_for_served(kong.config_version().await).await;

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/check_openai_realtime.py");
    let output = tokio::task::spawn_blocking({
        let proxy = kong.proxy.clone();
        move || {
            Command::new(python)
                .arg(script)
                .args(["--base-url", &format!("{proxy}/sdk-rt")])
                .output()
                .expect("run the SDK script")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK realtime checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sessions: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON line per session"))
        .collect();
    assert!(!sessions.is_empty(), "{stdout}");
    for session in &sessions {
        assert_eq!(session["said"], DEFAULT_REPLY.repeat(2), "{session}");
        assert_eq!(
            session["usages"],
            json!([{"input": 3, "output": 6, "total": 9}, {"input": 5, "output": 6, "total": 11}]),
            "{session}"
        );
    }
    for handshake in mock.requests() {
        assert_eq!(handshake.path, "/v1/realtime");
        assert_eq!(
            handshake.query.as_deref(),
            Some("model=gpt-4o-realtime-preview")
        );
        assert_eq!(handshake.header("authorization"), Some("Bearer sk-gateway"));
    }
    let records = kong.ai_records(sessions.len()).await;
    assert_eq!(records.len(), sessions.len(), "one record per session");
    for record in &records {
        let usage = &record["ai"]["proxy"]["usage"];
        assert_eq!(usage["prompt_tokens"], 8, "{record}");
        assert_eq!(usage["completion_tokens"], 12, "{record}");
    }
}
