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

fn dbless_config(upstream: std::net::SocketAddr, path: &str) -> String {
    format!("_format_version: \"3.0\"\nservices:\n  - name: echo\n    url: http://{upstream}\n    routes:\n      - name: r\n        paths: [\"{path}\"]\n")
}

/// Waits until the node has logged `needle` at least `times` times.
async fn logged(kong: &Sluice, needle: &str, times: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kong.logs().matches(needle).count() < times {
        assert!(
            std::time::Instant::now() < deadline,
            "never logged {needle:?} {times}x: {}",
            kong.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// DB-less file tricks: a symlink to `/dev/zero` grew memory to GBs; a FIFO blocked reloads
/// forever and kept the process alive after SIGTERM. Only regular files are read, up to a
/// size cap; the reason is logged and the old config keeps serving.
#[cfg(unix)]
#[tokio::test]
async fn dbless_reads_only_regular_files_within_the_size_cap() {
    let up = common::upstream::start().await;
    let dir = common::temp_dir();
    let file = dir.join("kong.yaml");
    std::fs::write(&file, dbless_config(up, "/one")).unwrap();
    let mut kong = Sluice::start_dbless(dir.clone(), &file).await;
    kong.wait_for_proxy("/one", 200).await;

    // Replaced by a symlink to /dev/zero, the way `ln -sf /dev/zero kong.yaml` does.
    let link = dir.join("zero.tmp");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    std::fs::rename(&link, &file).unwrap();
    logged(&kong, "not a regular file", 1).await;
    kong.wait_for_proxy("/one", 200).await;

    // Replaced by a FIFO nobody writes to.
    let fifo = dir.join("fifo.tmp");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        std::fs::rename(&fifo, &file).unwrap();
        logged(&kong, "not a regular file", 2).await;
        kong.wait_for_proxy("/one", 200).await;
    } else {
        println!("FIFO case skipped: mkfifo is not available");
    }

    // Reloads still work afterwards.
    let good = dir.join("good.tmp");
    std::fs::write(&good, dbless_config(up, "/two")).unwrap();
    std::fs::rename(&good, &file).unwrap();
    kong.wait_for_proxy("/two", 200).await;
    assert!(
        kong.stop(),
        "SIGTERM stops the node cleanly: {}",
        kong.logs()
    );

    // A file over the cap is refused at start with the reason.
    let small = common::temp_dir();
    let output = std::process::Command::new(common::BIN)
        .args([
            "start",
            "--database",
            "off",
            "--declarative-config-max-size",
            "64",
        ])
        .args(["--declarative-config", &file.display().to_string()])
        .args([
            "--admin-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args([
            "--proxy-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args(["--prefix", &small.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("larger than the 64 byte limit"), "{stderr}");
    common::remove_dir(&small);
}

/// Any web page an operator opened could reconfigure the gateway through their browser: a
/// cross-site form POST, or DNS rebinding (a hostile name resolving to 127.0.0.1). Both are
/// refused; an allowed origin gets CORS; command-line clients are unaffected.
#[tokio::test]
async fn the_admin_api_refuses_cross_site_browser_requests_and_foreign_hosts() {
    let kong = Sluice::start_in(
        common::temp_dir(),
        &["--admin-allow-origin", "https://gui.example"],
    )
    .await;
    let version = kong.config_version().await;
    let form = |origin: Option<&str>, site: Option<&str>, host: Option<&str>| {
        let mut request = kong
            .client
            .post(kong.url("/services"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=evil&host=evil.example");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request
    };
    let port = kong.admin.rsplit(':').next().unwrap().to_owned();
    let rebound = format!("attacker.example:{port}");
    for (what, request) in [
        (
            "a foreign Origin",
            form(Some("https://attacker.example"), None, None),
        ),
        (
            "a cross-site fetch without Origin",
            form(None, Some("cross-site"), None),
        ),
        ("a rebound Host", form(None, None, Some(&rebound))),
    ] {
        let (status, body) = common::send(request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
    }
    assert_eq!(kong.config_version().await, version, "nothing was written");

    // An allowed origin: CORS headers, and its preflight answered.
    let response = form(Some("https://gui.example"), Some("cross-site"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://gui.example"
    );
    let preflight = kong
        .client
        .request(reqwest::Method::OPTIONS, kong.url("/services"))
        .header("origin", "https://gui.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));

    // curl-like clients (no Origin, Host naming the address dialled) work as before.
    let (status, _) = kong.get("/services/evil").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = common::send(
        kong.client
            .get(kong.url("/status"))
            .header("host", format!("localhost:{port}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Sends raw bytes to the proxy and returns the status line and the whole answer. Blocking
/// IO, so it runs off the test's runtime (which also serves the upstream).
async fn raw_http(proxy: &str, request: &str) -> (String, String) {
    let (proxy, request) = (proxy.to_owned(), request.to_owned());
    tokio::task::spawn_blocking(move || raw_http_blocking(&proxy, &request))
        .await
        .unwrap()
}

fn raw_http_blocking(proxy: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr = proxy.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // The proxy must close the connection itself; a read timeout here means it held it.
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|error| panic!("the proxy did not close the connection: {error}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, answer)
}

/// RFC 9112 strictness on the proxy: a missing or repeated Host is a 400; the authority of
/// an absolute-form target is what routes; a transfer coding other than a single `chunked`
/// is a 400 (before, `identity, chunked` was accepted and the upstream could disagree on
/// where the body ends).
#[tokio::test]
async fn the_proxy_routes_only_requests_whose_host_and_framing_are_unambiguous() {
    let up = common::upstream::start().await;
    let kong = Sluice::start().await;
    for side in ["a", "b"] {
        let (status, body) = kong
            .post(
                "/services",
                json!({"name": side, "url": format!("http://{up}/{side}-side")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = kong
            .post(
                &format!("/services/{side}/routes"),
                json!({"hosts": [format!("{side}.example")], "paths": ["/r"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Wait until both routes are served.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = raw_http(
            &kong.proxy,
            "GET /r HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        if status.contains(" 200 ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let cases = [
        ("no Host", "GET /r HTTP/1.1\r\nConnection: close\r\n\r\n", " 400 "),
        (
            "two Hosts",
            "GET /r HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
            " 400 ",
        ),
        (
            "identity, chunked",
            "POST /r HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: identity, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            " 400 ",
        ),
        (
            "a plain chunked body is fine",
            "POST /r HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            " 200 ",
        ),
    ];
    for (what, request, expected) in cases {
        let (status, answer) = raw_http(&kong.proxy, request).await;
        assert!(status.contains(expected), "{what}: {answer}");
    }
    // The absolute-form authority routes, not the Host header.
    let (status, answer) = raw_http(
        &kong.proxy,
        "GET http://a.example/r HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 200 "), "{answer}");
    assert!(
        answer.contains("/a-side"),
        "routed by the target's authority: {answer}"
    );
}

/// A ~1,000-tag AND filter answered 500 (SQLite's expression depth), and a 100,000-tag body
/// took a minute of CPU (quadratic set handling). A filter is bounded as Kong bounds it (5
/// tags, Kong's code-11 answer), an entity at 1,000 tags (Kong sets no number), and the
/// handling is linear; a filter at the bound still works.
#[tokio::test]
async fn tag_counts_are_bounded_and_filters_at_the_bound_work() {
    let kong = Sluice::start().await;
    let version = kong.config_version().await;
    let tags: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
    let (status, body) = kong
        .post(
            "/services",
            json!({"name": "many", "host": "h", "tags": tags}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["fields"]["tags"].is_string(), "{body}");
    assert_eq!(kong.config_version().await, version);

    let tags: Vec<String> = (0..1_000).map(|i| format!("t{i}")).collect();
    let (status, body) = kong
        .post(
            "/services",
            json!({"name": "at-bound", "host": "h", "tags": tags}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let filter = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    for n in [6, 1_000] {
        let (status, body) = kong
            .get(&format!("/services?tags={}", filter(n).join(",")))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], 11, "Kong's invalid options: {body}");
        assert_eq!(
            body["message"], "invalid option (tags: cannot query more than 5 tags)",
            "{body}"
        );
    }
    for separator in [",", "/"] {
        let (status, body) = kong
            .get(&format!("/services?tags={}", filter(5).join(separator)))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"][0]["name"], "at-bound", "{separator}: {body}");
    }
    let (_, body) = kong.get("/services?tags=t1,t1,t2").await;
    assert_eq!(
        body["data"][0]["name"], "at-bound",
        "a repeated tag is still one tag"
    );
    let (_, body) = kong.get("/services?tags=t1,nope").await;
    assert_eq!(body["data"], json!([]), "AND means all of them");
}

/// A client that starts a body and stops sending had no deadline on AI routes (the body is
/// read whole first) and only the overall upstream deadline elsewhere. Now every route gives
/// it `--client-body-timeout` between reads, then 408: Kong's body on a plain route, OpenAI's
/// on an AI route. The upstream never sees a request on the AI route.
#[tokio::test]
async fn a_request_body_that_stops_arriving_gets_408_on_every_route() {
    let up = common::upstream::start().await;
    let mock = sluice_mock_llm::start(sluice_mock_llm::MockConfig::openai())
        .await
        .unwrap();
    let kong = Sluice::start_in(common::temp_dir(), &["--client-body-timeout", "1"]).await;
    let (status, body) = kong
        .post(
            "/services",
            json!({"name": "plain", "url": format!("http://{up}")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(
            "/services/plain/routes",
            json!({"name": "plain", "paths": ["/plain"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post("/routes", json!({"name": "ai", "paths": ["/ai"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(
            "/routes/ai/plugins",
            json!({"name": "ai-proxy", "config": {
                "route_type": "llm/v1/chat",
                "auth": {"header_name": "Authorization", "header_value": "Bearer sk-test"},
                "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": mock.url()}},
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    kong.wait_for_proxy("/plain", 200).await;
    mock.clear();

    for (path, shape) in [("/plain", "message"), ("/ai", "error")] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"messages\":"
        );
        let (status, answer) = raw_http(&kong.proxy, &request).await;
        assert!(status.contains(" 408 "), "{path}: {answer}");
        assert!(
            answer.contains(&format!("{{\"{shape}\"")),
            "{path}: {answer}"
        );
    }
    assert!(
        mock.requests().is_empty(),
        "the AI route never called the provider"
    );
}

/// A client that trickles its request head was closed at the header timeout without an
/// answer; it now gets nginx's 408. An idle keep-alive connection is still closed silently.
#[tokio::test]
async fn a_request_head_that_stops_arriving_gets_408() {
    let kong = Sluice::start_in(common::temp_dir(), &["--client-header-timeout", "1"]).await;
    // Half a head, then nothing.
    let (status, answer) = raw_http(
        &kong.proxy,
        "GET /anything HTTP/1.1\r\nHost: gw\r\nX-Slow: ",
    )
    .await;
    assert!(status.contains(" 408 "), "{answer:?}");
    assert!(answer.contains("Request timeout"), "{answer}");
    // A connection that never sends anything is closed without bytes.
    let (status, answer) = raw_http(&kong.proxy, "").await;
    assert!(status.is_empty() && answer.is_empty(), "{answer:?}");
    // One whole request on a keep-alive connection, then idle: one answer, no 408 after it.
    let (status, answer) =
        raw_http(&kong.proxy, "GET /anything HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert!(status.contains(" 404 "), "{answer}");
    assert!(
        !answer.contains(" 408 "),
        "an idle keep-alive connection gets no 408: {answer}"
    );
}
