//! DB-less mode: a declarative file is the config; the proxy follows edits to it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{temp_dir, upstream, Sluice};
use reqwest::StatusCode;
use serde_json::json;

fn config(upstream: std::net::SocketAddr, paths: &[&str]) -> String {
    let routes: String = paths
        .iter()
        .enumerate()
        .map(|(i, p)| format!("      - name: r{i}\n        paths: [\"{p}\"]\n"))
        .collect();
    format!("_format_version: \"3.0\"\nservices:\n  - name: echo\n    url: http://{upstream}\n    routes:\n{routes}")
}

fn write_atomically(file: &Path, text: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[tokio::test]
async fn follows_the_file_and_keeps_the_old_config_on_errors() {
    let up = upstream::start().await;
    let dir = temp_dir();
    let file = dir.join("kong.yaml");
    std::fs::write(&file, config(up, &["/one"])).unwrap();
    let kong = Sluice::start_dbless(dir.clone(), &file).await;
    kong.wait_for_proxy("/one", 200).await;

    // Reading the file (an editor, `cat`, our own reload) is not a change: no reload loop.
    let version = kong.config_version().await;
    for _ in 0..5 {
        let _ = std::fs::read_to_string(&file).unwrap();
    }

    // Edited in place. The watcher handles events in order, so once this edit is served any
    // reload the reads above had caused would have happened before it: exactly one load
    // (this edit) means the reads caused none.
    std::fs::write(&file, config(up, &["/one", "/two"])).unwrap();
    kong.wait_for_proxy("/two", 200).await;
    assert_eq!(
        kong.config_version().await,
        version + 1,
        "reads must not reload the config"
    );

    // Replaced by rename, as editors save.
    write_atomically(&file, &config(up, &["/three"]));
    kong.wait_for_proxy("/three", 200).await;
    kong.wait_for_proxy("/one", 404).await;

    // A broken file: the old config keeps serving and the log names the file and line.
    std::fs::write(&file, "_format_version: \"3.0\"\nservices:\n  - name: echo\n    url: http://x\n    routes:\n      - paths: [\"no-slash\"]\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !kong.logs().contains("keeping the previous config") {
        assert!(
            std::time::Instant::now() < deadline,
            "no error logged: {}",
            kong.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = kong.logs();
    assert!(
        logs.contains("kong.yaml:6"),
        "the error names the file and line: {logs}"
    );
    assert_eq!(
        kong.through("GET", "/three").send().await.unwrap().status(),
        200
    );

    // Entity writes are refused as in Kong's DB-less mode.
    let (status, body) = kong.post("/services", json!({"host": "x.internal"})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        body["message"],
        "cannot create 'services' entities when not using a database"
    );
    // Reads work.
    let (status, body) = kong.get("/routes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["paths"], json!(["/three"]));

    // POST /config replaces the config; an invalid one is refused with Kong's code 14.
    let (status, body) = kong
        .raw(
            "POST",
            "/config",
            Some("application/yaml"),
            config(up, &["/posted"]).into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    kong.wait_for_proxy("/posted", 200).await;
    let (status, body) = kong
        .raw(
            "POST",
            "/config",
            Some("application/yaml"),
            b"_format_version: \"1.0\"\n".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], 14);
    assert_eq!(
        kong.through("GET", "/posted")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
