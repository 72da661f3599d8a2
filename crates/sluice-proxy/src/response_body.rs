//! The response body on its way to the client: streamed frame by frame, through the body
//! filters of the route's plugins, with the service's read timeout between frames, and the
//! log phase run once when it ends (or when the client goes away).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use sluice_plugin::{Body, BoxError, PluginState, RequestCtx};
use tokio::time::{Instant, Sleep};

use crate::access_log::WorkerLog;
use crate::compile::Chain;

/// The per-request plugin state carried from the access phase to the log phase.
pub struct Phases {
    /// The chain this request ran: the route's, or the one its consumer switched it to.
    /// `states` is parallel to it.
    pub chain: Arc<Chain>,
    pub ctx: RequestCtx,
    pub states: Vec<PluginState>,
    pub access_log: Option<Arc<WorkerLog>>,
}

pub struct ResponseBody {
    inner: Body,
    read_timeout: Duration,
    /// Armed lazily, the first time the upstream makes us wait: most small bodies arrive in
    /// the first poll and never need a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    phases: Option<Box<Phases>>,
    /// Chunks produced by `body_end` hooks, sent before the end of the stream.
    tail: Vec<Bytes>,
    ended: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream read timed out after {0:?}")]
struct ReadTimeout(Duration);

// === impl ResponseBody ===

impl ResponseBody {
    pub fn new(inner: Body, read_timeout: Duration, phases: Option<Box<Phases>>) -> Self {
        Self {
            inner,
            read_timeout,
            sleep: None,
            phases,
            tail: Vec::new(),
            ended: false,
        }
    }

    /// The chunk after the body filters, counted as sent.
    fn filter(&mut self, chunk: Bytes) -> Bytes {
        let Some(phases) = self.phases.as_deref_mut() else {
            return chunk;
        };
        let mut chunk = chunk;
        if phases.chain.has_body_filter {
            for (handler, state) in phases.chain.handlers.iter().zip(phases.states.iter_mut()) {
                chunk = handler.body_filter(chunk, &mut phases.ctx, state);
            }
        }
        phases.ctx.response_bytes += chunk.len() as u64;
        chunk
    }

    fn end(&mut self) {
        let Some(phases) = self.phases.as_deref_mut() else {
            return;
        };
        if phases.chain.has_body_filter {
            for (handler, state) in phases.chain.handlers.iter().zip(phases.states.iter_mut()) {
                if let Some(chunk) = handler.body_end(&mut phases.ctx, state) {
                    phases.ctx.response_bytes += chunk.len() as u64;
                    self.tail.push(chunk);
                }
            }
        }
        self.tail.reverse(); // popped from the back
    }

    /// The upstream body failed: the plugins' last words for the client (an SSE error event
    /// on an AI stream), if any. With some, the body ends after them instead of being cut.
    fn failed(&mut self) -> bool {
        let Some(phases) = self.phases.as_deref_mut() else {
            return false;
        };
        for (handler, state) in phases.chain.handlers.iter().zip(phases.states.iter_mut()) {
            if let Some(chunk) = handler.body_error(&mut phases.ctx, state) {
                phases.ctx.response_bytes += chunk.len() as u64;
                self.tail.push(chunk);
            }
        }
        self.tail.reverse();
        !self.tail.is_empty()
    }

    fn log(&mut self) {
        if let Some(mut phases) = self.phases.take() {
            run_log(&mut phases);
        }
    }
}

/// The log phase. Runs after the last byte, never before the response is sent: the
/// plugins' `log`, then the access log line.
pub fn run_log(phases: &mut Phases) {
    for (handler, state) in phases.chain.handlers.iter().zip(phases.states.iter_mut()) {
        handler.log(&mut phases.ctx, state);
    }
    if let Some(log) = &phases.access_log {
        log.request(&phases.ctx);
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                if let Some(chunk) = this.tail.pop() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                this.log();
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(sleep) = this.sleep.as_mut() {
                        sleep.as_mut().reset(Instant::now() + this.read_timeout);
                    }
                    match frame.into_data() {
                        Ok(data) => {
                            let data = this.filter(data);
                            if data.is_empty() {
                                continue; // a filter held this chunk back
                            }
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    if this.failed() {
                        continue; // the tail is sent, then the body ends
                    }
                    this.log();
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    this.end();
                }
                Poll::Pending => {
                    let read_timeout = this.read_timeout;
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(read_timeout)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        this.ended = true;
                        if this.failed() {
                            continue;
                        }
                        this.log();
                        return Poll::Ready(Some(Err(Box::new(ReadTimeout(this.read_timeout)))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.tail.is_empty() && self.phases.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.phases {
            Some(p) if p.chain.has_body_filter => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The client went away mid-body: the log phase still runs, once.
        self.log();
    }
}

/// A body that sends `prefix` first, then `inner`: the start of a stream a balancing plugin
/// read before committing to it.
pub struct Prefixed {
    prefix: std::collections::VecDeque<Bytes>,
    inner: Body,
}

impl Prefixed {
    pub fn new(prefix: Vec<Bytes>, inner: Body) -> Self {
        Self {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.inner.is_end_stream()
    }
}
