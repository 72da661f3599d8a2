//! A small real HTTP upstream for proxy tests (axum on a real socket), standing in for the
//! user's API. It echoes what it received, can be slow, and streams.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::json;

#[derive(serde::Deserialize, Default)]
pub struct Knobs {
    /// Delay before answering, in ms.
    ms: Option<u64>,
    /// For /stream: number of chunks, bytes per chunk, and delay between chunks.
    chunks: Option<usize>,
    size: Option<usize>,
    gap_ms: Option<u64>,
}

/// Starts the upstream on an ephemeral port; returns its address.
pub async fn start() -> SocketAddr {
    let app = Router::new()
        .route("/stream", any(stream))
        .route("/stream/{*rest}", any(stream))
        .fallback(any(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("upstream serve");
    });
    addr
}

/// Echoes method, path, query, headers (repeated ones joined with ", "), the body (as text)
/// and its length as JSON.
async fn echo(Query(knobs): Query<Knobs>, request: Request) -> Response {
    if let Some(ms) = knobs.ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|name| {
            let values: Vec<&str> = parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or_default())
                .collect();
            (name.as_str().to_owned(), json!(values.join(", ")))
        })
        .collect();
    let body = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "path_and_query": parts.uri.path_and_query().map(|p| p.as_str()),
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
        "body_length": bytes.len(),
        "body_sha": checksum(&bytes),
    });
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert("x-upstream", "echo".parse().expect("header"));
    response
}

/// Streams `chunks` chunks of `size` bytes with `gap_ms` between them (chunked encoding).
async fn stream(Query(knobs): Query<Knobs>, _headers: HeaderMap) -> Response {
    let chunks = knobs.chunks.unwrap_or(4);
    let size = knobs.size.unwrap_or(1024);
    let gap = Duration::from_millis(knobs.gap_ms.unwrap_or(0));
    let stream = async_stream(chunks, size, gap);
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

fn async_stream(
    chunks: usize,
    size: usize,
    gap: Duration,
) -> impl futures_core::Stream<Item = Result<Bytes, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let byte = b'a' + (i % 26) as u8;
            if tx.send(Ok(Bytes::from(vec![byte; size]))).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream(rx)
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// A cheap content fingerprint (FNV-1a) so tests can compare large bodies.
pub fn checksum(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
