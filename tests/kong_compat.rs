//! The data-driven Kong-compat suite: `tests/fixtures/kong-compat.yaml` holds the cases (a
//! request, Kong's status, body fields and headers), run in order against one real node after
//! the file's setup requests. A behaviour found to differ from Kong is one case to add.

mod common;

use std::collections::BTreeMap;

use common::Sluice;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Suite {
    setup: Vec<(String, String, Value)>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    form: Option<Vec<(String, String)>>,
    /// A body sent as written, with `content_type` (multipart, empty JSON, ...).
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    status: u16,
    #[serde(default)]
    expect: BTreeMap<String, Value>,
    #[serde(default)]
    contains: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn request(node: &Sluice, method: &str, path: &str) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    reqwest::Client::new().request(method, node.url(path))
}

#[tokio::test]
async fn kong_admin_api_behaviours_from_the_case_file() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/kong-compat.yaml"),
    )
    .expect("the case file");
    let suite: Suite = serde_yaml::from_str(&text).expect("the case file parses");
    let node = Sluice::start().await;
    for (method, path, body) in &suite.setup {
        let response = request(&node, method, path)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "setup {method} {path}: {status} {text}"
        );
    }
    let mut failures = Vec::new();
    for case in &suite.cases {
        let mut builder = request(&node, &case.method, &case.path);
        if let Some(body) = &case.body {
            builder = builder.json(body);
        }
        if let Some(form) = &case.form {
            builder = builder.form(form);
        }
        if let Some(raw) = &case.raw {
            builder = builder.body(raw.replace("\n", "\r\n"));
        }
        if let Some(content_type) = &case.content_type {
            builder = builder.header("content-type", content_type);
        }
        let response = builder.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut wrong = Vec::new();
        if status != case.status {
            wrong.push(format!("status {status}, Kong answers {}", case.status));
        }
        for (pointer, value) in &case.expect {
            let got = body.pointer(pointer).unwrap_or(&Value::Null);
            if got != value {
                wrong.push(format!("{pointer} is {got}, Kong has {value}"));
            }
        }
        for (pointer, part) in &case.contains {
            let got = match body.pointer(pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            if !got.contains(part.as_str()) {
                wrong.push(format!("{pointer} is {got:?}, Kong's contains {part:?}"));
            }
        }
        for (name, value) in &case.headers {
            let got = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if got != value {
                wrong.push(format!("header {name} is {got:?}, Kong sends {value:?}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} ({} {}): {}\n  body: {text}",
                case.name,
                case.method,
                case.path,
                wrong.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Kong:\n{}",
        failures.len(),
        suite.cases.len(),
        failures.join("\n")
    );
}
