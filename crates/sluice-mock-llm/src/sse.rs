//! SSE framing and paced delivery of a streamed answer.
//!
//! A streamed answer is built up front as a list of frames, then a spawned task feeds them
//! into the response body through a channel, sleeping between frames as the knobs ask. The
//! task ends as soon as the client goes away (the channel's receiver is dropped with the body).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_core::Stream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::HeaderValue;
use serde_json::Value;
use tokio::sync::mpsc;

/// The frame that ends a chat or completions stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// How a stream is delivered.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pacing {
    /// Wait before every frame but the first.
    pub(crate) gap: Duration,
    /// Extra wait between the first and the second frame.
    pub(crate) hold: Duration,
    /// Send this many frames, then abort the body.
    pub(crate) cut_after: Option<usize>,
    /// Send one SSE `error` event instead of the answer, and end.
    pub(crate) error_first: bool,
}

/// The response body's side of the channel.
///
/// Written by hand rather than taken from `tokio-stream` because of the one thing it adds: an
/// error is delayed by one `Pending`, see [`Stream::poll_next`] below.
struct ChannelStream {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    pending_error: Option<io::Error>,
}

/// A `data: {json}\n\n` frame (chat and completions).
pub(crate) fn data_frame(json: &Value) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

/// An `event: <type>\ndata: {json}\n\n` frame (Responses API).
pub(crate) fn typed_frame(event: &str, json: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

/// A `200 text/event-stream` response that delivers `frames` with `pacing`.
pub(crate) fn response(frames: Vec<Bytes>, pacing: Pacing) -> Response {
    // Small: the producer should feel the client's back-pressure, not run ahead of it.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(produce(frames, pacing, tx));
    let body = Body::from_stream(ChannelStream {
        rx,
        pending_error: None,
    });
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Sends the frames with the pacing's waits; on a cut, sends an error instead of the rest.
async fn produce(frames: Vec<Bytes>, pacing: Pacing, tx: mpsc::Sender<Result<Bytes, io::Error>>) {
    if pacing.error_first {
        let event = "event: error\ndata: {\"error\":{\"message\":\"The server had an error while \
                     processing your request.\",\"type\":\"server_error\"}}\n\n";
        let _ = tx.send(Ok(Bytes::from_static(event.as_bytes()))).await;
        return;
    }
    for (index, frame) in frames.into_iter().enumerate() {
        if pacing.cut_after == Some(index) {
            let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "x-mock-cut-after");
            // If the client is already gone there is nothing left to cut.
            let _ = tx.send(Err(cut)).await;
            return;
        }
        if index > 0 {
            let mut wait = pacing.gap;
            if index == 1 {
                // Saturating: the knobs come from request headers and may be absurd.
                wait = wait.saturating_add(pacing.hold);
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        if tx.send(Ok(frame)).await.is_err() {
            // The client hung up; stop producing.
            return;
        }
    }
}

// === impl ChannelStream ===

impl Stream for ChannelStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(err) = this.pending_error.take() {
            return Poll::Ready(Some(Err(err)));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Err(err))) => {
                // hyper drops the connection as soon as the body yields an error, without
                // flushing what it has buffered. Returning `Pending` once first lets it flush
                // the frames sent before the cut, so the client really gets N events; the
                // self-wake brings it straight back for the error.
                this.pending_error = Some(err);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}
