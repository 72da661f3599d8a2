//! The answer to a client that trickles its request head: `408 Request Timeout`, as nginx's
//! `client_header_timeout` gives, instead of a silent close.
//!
//! hyper enforces the header timeout but closes without a response, and it runs the same
//! timer on an idle keep-alive connection. So the connection's socket is wrapped to note
//! whether the client has sent bytes since Sluice last wrote (a request in progress); when
//! hyper's HTTP/1 connection ends with its header timeout and such bytes exist, Sluice writes
//! the 408 on a duplicate of the socket. An idle keep-alive connection is still closed
//! silently, and HTTP/2 connections are never answered this way.
//!
//! The wrapper also bounds the wait for a connection's first byte by the same timeout:
//! hyper-util's protocol detection reads the first bytes with no timer at all, so a client
//! that connects and sends nothing would otherwise hold its socket forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: application/json; charset=utf-8\r\n\
content-length: 30\r\n\
connection: close\r\n\r\n\
{\"message\":\"Request timeout\"}\n";

/// What the wrapper observed, shared with the task that owns the connection.
#[derive(Default)]
pub(crate) struct Observed {
    /// The client sent bytes since Sluice last wrote to it.
    pending: AtomicBool,
    /// The connection opened with HTTP/2's preface.
    http2: AtomicBool,
    /// Nothing has been read yet (to look at the first bytes once).
    fresh: AtomicBool,
}

/// A socket that records [`Observed`].
pub(crate) struct Watched<S> {
    inner: S,
    observed: Arc<Observed>,
    first_byte_timeout: Duration,
    /// Armed while waiting for the connection's first byte.
    first_byte: Option<Pin<Box<Sleep>>>,
}

// === impl Watched ===

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, first_byte_timeout: Duration) -> (Self, Arc<Observed>) {
        let observed = Arc::new(Observed {
            fresh: AtomicBool::new(true),
            ..Observed::default()
        });
        let watched = Self {
            inner,
            observed: observed.clone(),
            first_byte_timeout,
            first_byte: None,
        };
        (watched, observed)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if result.is_pending() && self.observed.fresh.load(Ordering::Relaxed) {
            let timeout = self.first_byte_timeout;
            let deadline = self
                .first_byte
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing after connecting",
                )));
            }
            return Poll::Pending;
        }
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            self.first_byte = None;
            if self.observed.fresh.swap(false, Ordering::Relaxed) && read.starts_with(b"PRI * ") {
                self.observed.http2.store(true, Ordering::Relaxed);
            }
            self.observed.pending.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.observed.pending.store(false, Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.observed.pending.store(false, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// After the connection ended with `error`: when it is hyper's HTTP/1 header timeout while a
/// request was in progress, write the 408 on `spare` (a duplicate of the socket). Best
/// effort: the socket's send buffer is empty at that point, so the write does not block.
pub(crate) fn answer_header_timeout(
    error: &(dyn std::error::Error + 'static),
    observed: &Observed,
    spare: Option<std::net::TcpStream>,
) -> bool {
    let header_timeout = error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout);
    if !header_timeout
        || !observed.pending.load(Ordering::Relaxed)
        || observed.http2.load(Ordering::Relaxed)
    {
        return false;
    }
    let Some(mut spare) = spare else {
        return false;
    };
    use std::io::Write;
    let _ = spare.set_nonblocking(true);
    let written = spare.write_all(REQUEST_TIMEOUT).is_ok();
    let _ = spare.shutdown(std::net::Shutdown::Both);
    written
}

#[cfg(test)]
mod tests {
    use super::REQUEST_TIMEOUT;

    #[test]
    fn the_408_is_well_framed() {
        let text = std::str::from_utf8(REQUEST_TIMEOUT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 "));
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
    }
}
