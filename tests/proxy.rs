//! End-to-end proxy tests: the real `sluice` binary between a real client and a real upstream.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{upstream, Sluice};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn service_and_route(kong: &Sluice, name: &str, url: &str, route: Value) {
    let (status, body) = kong
        .post("/services", json!({"name": name, "url": url}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong.post(&format!("/services/{name}/routes"), route).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn proxies_with_kongs_path_and_headers() {
    let up = upstream::start().await;
    let kong = Sluice::start().await;
    service_and_route(
        &kong,
        "api",
        &format!("http://{up}/base"),
        json!({"name": "r", "paths": ["/v1"]}),
    )
    .await;
    kong.wait_for_proxy("/v1/ping", 200).await;

    let response = kong
        .through("GET", "/v1/users/7?x=1&y=2")
        .header("x-forwarded-for", "10.0.0.9")
        .send()
        .await
        .expect("proxy");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers["x-upstream"], "echo",
        "the upstream's headers come back"
    );
    assert!(headers["via"].to_str().unwrap().starts_with("1.1 sluice/"));
    assert!(headers.contains_key("x-sluice-upstream-latency"));
    assert!(headers.contains_key("x-sluice-proxy-latency"));
    let request_id = headers["x-sluice-request-id"].to_str().unwrap().to_owned();
    let echo: Value = response.json().await.unwrap();
    // strip_path: "/base" + "/v1/users/7" minus "/v1".
    assert_eq!(echo["path_and_query"], "/base/users/7?x=1&y=2");
    let h = &echo["headers"];
    assert_eq!(
        h["host"],
        format!("127.0.0.1:{}", up.port()),
        "Host is the service's"
    );
    assert_eq!(h["x-forwarded-for"], "10.0.0.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "127.0.0.1");
    let proxy_port = kong.proxy.rsplit(':').next().unwrap();
    assert_eq!(h["x-forwarded-port"], proxy_port);
    assert_eq!(h["x-forwarded-path"], "/v1/users/7");
    assert_eq!(h["x-forwarded-prefix"], "/v1");
    assert_eq!(h["x-sluice-request-id"], request_id.as_str());
    assert!(h["via"].as_str().unwrap().contains("sluice"));

    // Percent-encoded paths: routed decoded, sent upstream as a valid (re-encoded) URI.
    let response = kong
        .through("GET", "/v1/a%20b/caf%C3%A9?q=%20")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path_and_query"], "/base/a%20b/caf%C3%A9?q=%20");

    // A client cannot strip or spoof the headers the gateway sets.
    let response = kong
        .through("GET", "/v1/x")
        .header("connection", "x-forwarded-for, x-sluice-request-id")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-prefix", "/spoofed")
        .send()
        .await
        .unwrap();
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(echo["headers"]["x-sluice-request-id"].is_string());
    assert_eq!(echo["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-prefix"], "/v1");

    // preserve_host and strip_path off.
    let (status, _) = kong.post("/services/api/routes", json!({"name": "keep", "paths": ["/keep"], "strip_path": false, "preserve_host": true, "hosts": ["example.test"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut echo = Value::Null;
    for _ in 0..200 {
        let r = kong
            .through("GET", "/keep/x")
            .header("host", "example.test")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            echo = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(echo["path"], "/base/keep/x");
    assert_eq!(echo["headers"]["host"], "example.test");

    // No match: Kong's 404 body.
    let response = kong.through("GET", "/nothing-here").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "no Route matched with those values");
    assert!(body["request_id"].is_string());
}

#[tokio::test]
async fn request_and_response_bodies_stream() {
    let up = upstream::start().await;
    let kong = Sluice::start().await;
    service_and_route(
        &kong,
        "s",
        &format!("http://{up}"),
        json!({"paths": ["/"], "strip_path": false}),
    )
    .await;
    kong.wait_for_proxy("/", 200).await;

    // A 20 MB chunked response arrives whole.
    let response = kong
        .through("GET", "/stream?chunks=320&size=65536")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), 320 * 65536);
    assert!(
        bytes[..65536].iter().all(|b| *b == b'a')
            && bytes[65536..131072].iter().all(|b| *b == b'b')
    );

    // The first chunk reaches the client while the upstream still holds the rest.
    let started = Instant::now();
    let mut response = kong
        .through("GET", "/stream?chunks=3&size=10&gap_ms=1500")
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("a first chunk");
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"aaaaaaaaaa");
    assert!(
        first_at < Duration::from_millis(1200),
        "first chunk took {first_at:?}: the body was buffered"
    );
    while response.chunk().await.unwrap().is_some() {}
    assert!(started.elapsed() >= Duration::from_millis(3000));

    // A 12 MB upload streams through unchanged.
    let upload: Vec<u8> = (0..12 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = upstream::checksum(&upload);
    let response = kong
        .through("POST", "/upload")
        .body(upload)
        .send()
        .await
        .unwrap();
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["body_length"], 12 * 1024 * 1024);
    assert_eq!(echo["body_sha"], expected);

    // HTTP/2 from the client (prior knowledge, as gRPC-style clients connect).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(format!("{}/h2", kong.proxy)).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/h2");
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_with_json() {
    let up = upstream::start().await;
    let kong = Sluice::start().await;
    let (status, _) = kong.post("/services", json!({"name": "slow", "url": format!("http://{up}"), "read_timeout": 300, "connect_timeout": 1000, "write_timeout": 300})).await;
    assert_eq!(status, StatusCode::CREATED);
    kong.post(
        "/services/slow/routes",
        json!({"paths": ["/slow"], "strip_path": false}),
    )
    .await;
    // A port nothing listens on.
    let closed = common::free_port();
    kong.post(
        "/services",
        json!({"name": "gone", "url": format!("http://127.0.0.1:{closed}"), "retries": 2}),
    )
    .await;
    kong.post("/services/gone/routes", json!({"paths": ["/gone"]}))
        .await;
    kong.wait_for_proxy("/slow?ms=0", 200).await;

    let started = Instant::now();
    let response = kong.through("GET", "/slow?ms=5000").send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timed out late: {:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "The upstream server is timing out");

    let response = kong.through("GET", "/gone").send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "An invalid response was received from the upstream server"
    );
    assert!(body["request_id"].is_string());
    assert!(kong.logs().contains("upstream request failed"));
}

#[tokio::test]
async fn plugins_run_in_their_phases_with_kongs_precedence() {
    let up = upstream::start().await;
    let kong = Sluice::start().await;
    service_and_route(
        &kong,
        "s",
        &format!("http://{up}"),
        json!({"name": "limited", "paths": ["/limited"]}),
    )
    .await;
    kong.post(
        "/services/s/routes",
        json!({"name": "open", "paths": ["/open"]}),
    )
    .await;
    // Global: 100/minute. On route `limited`: 2/minute, which must win there.
    let (status, body) = kong
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 100}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = kong
        .post(
            "/routes/limited/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    kong.wait_for_proxy("/open", 200).await;

    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let response = kong.through("GET", "/limited").send().await.unwrap();
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    // The window may roll over between requests; then the count restarts. Allow that.
    let last = last.unwrap();
    if statuses == [200, 200, 429] {
        assert_eq!(last.headers()["x-ratelimit-limit-minute"], "2");
        assert_eq!(last.headers()["x-ratelimit-remaining-minute"], "0");
        let body: Value = last.json().await.unwrap();
        assert_eq!(body["message"], "API rate limit exceeded");
    } else {
        assert!(
            statuses.contains(&200) && statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
    }
    let response = kong.through("GET", "/open").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-ratelimit-limit-minute"],
        "100",
        "the global instance applies elsewhere"
    );
}

/// Requests flow continuously while 200 config changes are made; every request gets an
/// expected answer, none fails or hangs.
#[tokio::test]
async fn no_request_dropped_during_200_config_changes() {
    let up = upstream::start().await;
    let kong = Arc::new(Sluice::start().await);
    service_and_route(
        &kong,
        "stable",
        &format!("http://{up}"),
        json!({"name": "stable", "paths": ["/stable"]}),
    )
    .await;
    kong.wait_for_proxy("/stable", 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (kong, stop, ok) = (kong.clone(), stop.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = tokio::time::timeout(
                    Duration::from_secs(5),
                    kong.through("GET", "/stable/x").send(),
                )
                .await;
                match response {
                    Ok(Ok(r)) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(r)) => failures.push(format!("status {}", r.status())),
                    Ok(Err(e)) => failures.push(format!("error {e}")),
                    Err(_) => failures.push("hung for 5 s".to_owned()),
                }
            }
            failures
        }));
    }
    for i in 0..200 {
        let (status, body) = match i % 4 {
            0 => {
                kong.post(
                    "/services/stable/routes",
                    json!({"name": format!("churn-{i}"), "paths": [format!("/churn/{i}")]}),
                )
                .await
            }
            1 => {
                kong.patch("/services/stable", json!({"retries": i % 7}))
                    .await
            }
            2 => kong.delete(&format!("/routes/churn-{}", i - 2)).await,
            _ => {
                kong.patch(
                    "/routes/stable",
                    json!({"paths": ["/stable", format!("/alias-{i}")]}),
                )
                .await
            }
        };
        assert!(status.is_success(), "change {i}: {status} {body}");
    }
    // The last change is served.
    kong.wait_for_proxy("/alias-199", 200).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too few requests to mean anything: {}",
        ok.load(Ordering::Relaxed)
    );
}

/// A WebSocket-style upgrade passes through: the 101 reaches the client, then bytes flow
/// both ways over the spliced connections.
#[tokio::test]
async fn protocol_upgrades_are_spliced_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // An upstream that accepts the upgrade, then echoes whatever it receives.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        socket
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            socket.write_all(&buf[..n]).await.unwrap();
        }
    });

    let kong = Sluice::start().await;
    service_and_route(
        &kong,
        "ws",
        &format!("http://{up_addr}"),
        json!({"paths": ["/ws"]}),
    )
    .await;
    kong.wait_for_proxy("/nothing", 404).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let proxy = kong.proxy.trim_start_matches("http://").to_owned();
    let mut client = loop {
        // The route may not be served yet: retry the handshake until it is.
        let mut client = tokio::net::TcpStream::connect(&proxy).await.unwrap();
        client
            .write_all(b"GET /ws HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("HTTP/1.1 101") {
            assert!(head.to_lowercase().contains("upgrade: websocket"), "{head}");
            break client;
        }
        assert!(Instant::now() < deadline, "never upgraded: {head}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    client
        .write_all(b"hello through the gateway")
        .await
        .unwrap();
    let mut echoed = vec![0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&echoed, b"hello through the gateway");
}

/// Request ids (the `X-Sluice-Request-Id` header and the `request_id` of error bodies) repeat
/// neither between the proxy's workers nor across restarts. Each request goes on a new
/// connection, so the kernel spreads them over both workers' accept loops.
#[tokio::test]
async fn request_ids_are_unique_across_workers_and_restarts() {
    let up = upstream::start().await;
    let mut kong = Sluice::start().await;
    service_and_route(
        &kong,
        "ids",
        &format!("http://{up}"),
        json!({"name": "ids", "paths": ["/ids"]}),
    )
    .await;
    kong.wait_for_proxy("/ids", 200).await;
    let fresh_connections = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for restart in 0..3 {
        if restart > 0 {
            let dir = kong.stop_keep();
            kong = Sluice::start_in(dir, &[]).await;
            kong.wait_for_proxy("/ids", 200).await;
        }
        for i in 0..100 {
            // Proxied requests and the proxy's own error answers share one id space.
            let path = if i % 2 == 0 { "/ids" } else { "/no-such-route" };
            let response = fresh_connections
                .get(format!("{}{path}", kong.proxy))
                .send()
                .await
                .unwrap();
            let id = response.headers()["x-sluice-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(id.len(), 32, "Kong's length: {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            if path == "/no-such-route" {
                let body: Value = response.json().await.unwrap();
                assert_eq!(
                    body["request_id"],
                    id.as_str(),
                    "the body carries the same id"
                );
            }
            assert!(
                seen.insert(id.clone()),
                "request id {id} repeated (restart {restart})"
            );
        }
    }
    assert_eq!(seen.len(), 300);
    // Logs written to a file carry no terminal colour codes.
    assert!(!kong.logs().contains('\u{1b}'), "{}", kong.logs());
}
