//! Test harness: starts the real `sluice` binary on an ephemeral port with its own SQLite
//! file, and talks to it over HTTP. Nothing of Sluice is mocked.

#![allow(dead_code)]

pub mod collector;
pub mod relay;
pub mod upstream;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// What `sluice diff` (and a no-op `sync`) prints when nothing would change.
pub const NO_CHANGES: &str = "Summary:\n  Created: 0\n  Updated: 0\n  Deleted: 0\n";

/// A running `sluice start`. Killed on drop; its directory is removed.
pub struct Sluice {
    child: Option<Child>,
    pub admin: String,
    /// `http://127.0.0.1:<port>` of the proxy listener.
    pub proxy: String,
    pub dir: PathBuf,
    pub client: reqwest::Client,
    keep_dir: bool,
}

/// A fresh directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Sluice {
    /// Starts a node with a new SQLite file.
    pub async fn start() -> Self {
        Self::start_in(temp_dir(), &[]).await
    }

    /// Starts a node whose database lives in `dir` (so a restart finds the same data).
    pub async fn start_in(dir: PathBuf, extra: &[&str]) -> Self {
        let database = format!("sqlite://{}", dir.join("sluice.db").display());
        let mut args = vec!["--database".to_owned(), database];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::launch(dir, &args).await
    }

    /// Starts a DB-less node serving `file`.
    pub async fn start_dbless(dir: PathBuf, file: &Path) -> Self {
        let args = [
            "--database".to_owned(),
            "off".to_owned(),
            "--declarative-config".to_owned(),
            file.display().to_string(),
            "--prefix".to_owned(),
            dir.join("prefix").display().to_string(),
        ];
        Self::launch(dir, &args).await
    }

    /// `sluice start` with `args`, on fresh admin and proxy ports.
    pub async fn launch(dir: PathBuf, args: &[String]) -> Self {
        Self::launch_with(dir, args, "--admin-listen", &[]).await
    }

    /// Starts a node with a new SQLite file and extra environment variables.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = temp_dir();
        let database = format!("sqlite://{}", dir.join("sluice.db").display());
        let args = ["--database".to_owned(), database];
        Self::launch_with(dir, &args, "--admin-listen", env).await
    }

    /// A data plane: it has no Admin API, so readiness is read from its status listener,
    /// which `admin` then points at.
    pub async fn launch_data_plane(dir: PathBuf, args: &[String]) -> Self {
        Self::launch_with(dir, args, "--status-listen", &[]).await
    }

    async fn launch_with(
        dir: PathBuf,
        args: &[String],
        status_flag: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let admin_port = free_port();
        let proxy_port = free_port();
        let admin = format!("127.0.0.1:{admin_port}");
        let log =
            std::fs::File::create(dir.join(format!("sluice-{admin_port}.log"))).expect("log file");
        let child = Command::new(BIN)
            .args(["start", status_flag, &admin])
            .args(["--proxy-listen", &format!("127.0.0.1:{proxy_port}")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        let mut node = Self {
            child: Some(child),
            admin: format!("http://{admin}"),
            proxy: format!("http://127.0.0.1:{proxy_port}"),
            dir,
            client: reqwest::Client::new(),
            keep_dir: false,
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/status", self.admin))
                .send()
                .await
            {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sluice exited early with {status}: {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not become ready: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the node logged so far.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// SIGTERM, then wait for a clean exit. Returns whether it exited with success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the node but keeps its directory, for a restart.
    pub fn stop_keep(mut self) -> PathBuf {
        assert!(self.stop(), "sluice did not stop cleanly");
        self.keep_dir = true;
        self.dir.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.client.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        send(self.client.delete(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.client.post(self.url(path)).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.client.put(self.url(path)).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.client.patch(self.url(path)).json(&body)).await
    }

    /// A form-encoded request, as `curl --data` sends it.
    pub async fn form(
        &self,
        method: &str,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let body: String = form_urlencoded(pairs);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        send(
            self.client
                .request(method, self.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        send(request).await
    }

    /// The number of entities in a collection (walking every page).
    pub async fn count(&self, collection: &str) -> usize {
        let mut total = 0;
        let mut offset: Option<String> = None;
        loop {
            let path = match &offset {
                Some(o) => format!("/{collection}?size=1000&offset={o}"),
                None => format!("/{collection}?size=1000"),
            };
            let (status, body) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            total += body["data"].as_array().map_or(0, Vec::len);
            match body["offset"].as_str() {
                Some(o) => offset = Some(o.to_owned()),
                None => return total,
            }
        }
    }

    /// A request through the proxy.
    pub fn through(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.client.request(method, format!("{}{path}", self.proxy))
    }

    /// Polls the proxy until `path` answers `status` (a config change has reached it).
    pub async fn wait_for_proxy(&self, path: &str, status: u16) -> Duration {
        let started = Instant::now();
        loop {
            if let Ok(r) = self.through("GET", path).send().await {
                if r.status().as_u16() == status {
                    return started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "proxy never answered {status} on {path}: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs the `sluice` CLI (`sync`, `diff`, `dump`, ...) against this node's Admin API:
    /// whether it succeeded, its stdout and its stderr.
    pub fn deck(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .env("SLUICE_ADMIN_URL", &self.admin)
            .output()
            .expect("run sluice");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Posts each plugin and asserts a 400 whose `fields` hold `message` at the dotted
    /// `field` (`config.origins`, `@entity`).
    pub async fn assert_plugins_refused(&self, cases: &[(Value, &str, &str)]) {
        for (plugin, field, message) in cases {
            let (status, body) = self.post("/plugins", plugin.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{plugin}: {body}");
            let at = field_at(&body["fields"], field);
            assert!(!at.is_null(), "{plugin} at {field}: {body}");
            assert!(at.to_string().contains(message), "{plugin}: {body}");
        }
    }

    /// A service to a fresh echo upstream and a route `name` on it with `paths`, carrying
    /// `plugins`; returns once the proxy serves it.
    pub async fn echo_route(&self, name: &str, paths: Value, plugins: &[Value]) {
        let up = upstream::start().await;
        let (status, body) = self
            .post(
                "/services",
                serde_json::json!({"name": name, "url": format!("http://{up}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self
            .post(
                &format!("/services/{name}/routes"),
                serde_json::json!({"name": name, "paths": paths}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for plugin in plugins {
            let (status, body) = self
                .post(&format!("/routes/{name}/plugins"), plugin.clone())
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        self.wait_for_served(self.config_version().await).await;
    }

    /// Polls `/status` until the proxy serves config `version` or a later one.
    pub async fn wait_for_served(&self, version: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, status) = self.get("/status").await;
            if status["proxy"]["configuration_version"].as_u64() >= Some(version) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy never served version {version}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The ai-proxy usage records this node logged (`--log-format json`), polled until there
    /// are at least `at_least` of them or 5 s passed.
    pub async fn ai_records(&self, at_least: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records: Vec<Value> = self
                .logs()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter_map(|line| {
                    line["fields"]["ai"]
                        .as_str()
                        .and_then(|s| serde_json::from_str(s).ok())
                })
                .collect();
            if records.len() >= at_least || Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn config_version(&self) -> u64 {
        let (_, status) = self.get("/status").await;
        status["configuration_version"]
            .as_u64()
            .expect("configuration_version")
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep_dir && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The records of a JSON-lines file (an access log, a file-log file), polled until there are
/// `count` or 5 s passed: a line is written just after the response that caused it.
pub async fn json_lines(file: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request failed");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "body is not JSON ({status}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, body)
}

fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// The node at a dotted path in a Kong `fields` object: a numeric segment is an array
/// position counted from 0 (Kong's `fields.paths` is `[null, "<error>"]`).
pub fn field_at<'a>(fields: &'a Value, path: &str) -> &'a Value {
    let mut node = fields;
    for segment in path.split('.') {
        node = match (segment.parse::<usize>(), node) {
            (Ok(index), Value::Array(items)) => items.get(index).unwrap_or(&Value::Null),
            _ => &node[segment],
        };
    }
    node
}

/// A dotted field path as Kong's message writes it: array positions counted from 1.
pub fn kong_message_path(path: &str) -> String {
    path.split('.')
        .map(|segment| match segment.parse::<usize>() {
            Ok(index) => (index + 1).to_string(),
            Err(_) => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}
