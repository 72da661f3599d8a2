//! A log collector for the log-shipping tests (axum on a real socket): it keeps every request
//! body it receives, and can answer 500 to the first few or hold requests without answering,
//! as a broken collector in the field does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;

#[derive(Default)]
pub struct Collector {
    pub addr: Option<SocketAddr>,
    /// Each request: its headers and body.
    received: Mutex<Vec<(HeaderMap, Bytes)>>,
    /// Requests answered 500 before it starts answering 200.
    failures_left: AtomicUsize,
    /// Requests answered 500 so far.
    pub failed: AtomicUsize,
    /// Hold every request without answering.
    pub hang: AtomicBool,
}

impl Collector {
    /// Starts a collector that fails its first `failures` requests.
    pub async fn start(failures: usize) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let collector = Arc::new(Collector {
            addr: Some(listener.local_addr().expect("addr")),
            failures_left: AtomicUsize::new(failures),
            ..Collector::default()
        });
        let state = collector.clone();
        let app = Router::new().fallback(any(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                if state.hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let failing = state
                    .failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    state.failed.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                state.received.lock().unwrap().push((headers, body));
                StatusCode::OK
            }
        }));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("collector serve");
        });
        collector
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("started"))
    }

    /// The requests received with a 200, polled until there are `count` or 10 s passed.
    pub async fn wait_for(&self, count: usize) -> Vec<(HeaderMap, Bytes)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count || Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
