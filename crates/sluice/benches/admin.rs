//! Admin API load benchmark (not criterion: it measures the real binary over real sockets).
//!
//! Starts `sluice start` on a temporary SQLite file, creates 10,000 services through
//! `POST /services` with 16 concurrent clients, then times `GET /services?size=1000` page
//! reads with the 10,000 services in the store. Prints medians and p99.
//!
//! Run: `cargo bench -p sluice --bench admin`

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const SERVICES: usize = 10_000;
const CONCURRENCY: usize = 16;
const LIST_ROUNDS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let database = format!("sqlite://{}", dir.join("bench.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["start", "--database", &database])
        .args(["--admin-listen", &format!("127.0.0.1:{port}")])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "sluice did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Creates.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let client = client.clone();
        let base = base.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= SERVICES {
                    break;
                }
                let body = json!({"name": format!("service-{i:05}"), "url": format!("http://upstream-{i}.internal:8080/api"), "tags": ["bench"]});
                let response = client
                    .post(format!("{base}/services"))
                    .json(&body)
                    .send()
                    .await
                    .expect("create");
                assert_eq!(response.status(), 201);
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let create_elapsed = started.elapsed();
    println!(
        "admin/create: {SERVICES} services in {:.2} s = {:.0} creates/s ({CONCURRENCY} concurrent clients)",
        create_elapsed.as_secs_f64(),
        SERVICES as f64 / create_elapsed.as_secs_f64()
    );

    // Page reads with 10,000 services stored: walk all pages LIST_ROUNDS times.
    let mut latencies = Vec::new();
    for _ in 0..LIST_ROUNDS {
        let mut offset: Option<String> = None;
        loop {
            let url = match &offset {
                Some(o) => format!("{base}/services?size=1000&offset={o}"),
                None => format!("{base}/services?size=1000"),
            };
            let t = Instant::now();
            let response = client.get(url).send().await.expect("list");
            let body: serde_json::Value = response.json().await.expect("json");
            latencies.push(t.elapsed());
            assert_eq!(body["data"].as_array().map(Vec::len), Some(1000));
            match body["offset"].as_str() {
                Some(o) => offset = Some(o.to_owned()),
                None => break,
            }
        }
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "admin/list: page of 1000 with {SERVICES} stored: median {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} pages)",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().expect("latencies").as_secs_f64() * 1e3,
        latencies.len()
    );
    let t = Instant::now();
    let response = client
        .get(format!("{base}/services?size=1000&tags=bench"))
        .send()
        .await
        .expect("tag list");
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;
    println!(
        "admin/list: first page of 1000 filtered by tag: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
