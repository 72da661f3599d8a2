//! Sending one request upstream: URI, retries on connection failure, the response timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sluice_plugin::{Body, BoxError, RequestBody, Upstream};

use crate::upstream::HttpClient;

/// Why the upstream gave no response. The `Display` of each carries its causes (the client
/// error's own message is terse: "client error (Connect)"), since it goes to a log line.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No response headers within connect + write + read timeout, or the connect timed out.
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream connection failed: {}", chain(.0))]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("upstream request failed: {}", chain(.0))]
    Failed(#[source] hyper_util::client::legacy::Error),
    /// A streamed answer failed before its content began (judged by a balancing plugin).
    #[error("upstream stream failed before its first content")]
    StreamFailed,
    /// Names scheme, host and path only: a query may carry a provider key.
    #[error("invalid upstream uri {target}")]
    Uri {
        target: String,
        #[source]
        source: http::uri::InvalidUri,
    },
}

// === impl ForwardError ===

impl ForwardError {
    /// The request failed because the client stopped sending its body (its 408, not the
    /// upstream's 502).
    pub fn client_body_timed_out(&self) -> bool {
        match self {
            ForwardError::Connect(error) | ForwardError::Failed(error) => {
                sluice_plugin::is_client_body_timeout(error)
            }
            _ => false,
        }
    }
}

pub struct Attempt<'a> {
    pub client: &'a HttpClient,
    pub upstream: &'a Upstream,
    pub retries: u16,
    /// Bound on the time to response headers: connect + write + read timeouts.
    pub timeout: Duration,
}

// === impl Attempt ===

impl Attempt<'_> {
    /// Sends the request. A connection failure is retried up to `retries` times when the body
    /// can be replayed (buffered or empty); a streamed body is sent once.
    pub async fn send(
        &self,
        parts: http::request::Parts,
        body: RequestBody,
    ) -> Result<http::Response<Incoming>, ForwardError> {
        let uri = self.uri()?;
        let replayable: Option<Bytes> = match &body {
            RequestBody::Buffered(bytes) => Some(bytes.clone()),
            RequestBody::Stream(stream) if http_body::Body::is_end_stream(stream) => {
                Some(Bytes::new())
            }
            RequestBody::Stream(_) => None,
        };
        let mut body = Some(body);
        let mut parts = Some(parts);
        let mut attempt = 0u16;
        loop {
            let retry_possible = replayable.is_some() && attempt < self.retries;
            let this_body: Body = match (&replayable, body.take()) {
                (Some(_), Some(RequestBody::Stream(stream))) => stream, // empty: reuse it
                (Some(bytes), _) => full(bytes.clone()),
                (None, Some(RequestBody::Stream(stream))) => stream,
                (None, Some(RequestBody::Buffered(bytes))) => full(bytes),
                (None, None) => unreachable!("a streamed body is only sent once"),
            };
            // Clone the head only when another attempt may need it.
            let this_parts = if retry_possible {
                parts.clone()
            } else {
                parts.take()
            };
            let Some(this_parts) = this_parts else {
                unreachable!("the last attempt takes the parts")
            };
            let mut request = http::Request::from_parts(this_parts, this_body);
            *request.uri_mut() = uri.clone();
            *request.version_mut() = http::Version::HTTP_11;
            let result = tokio::time::timeout(self.timeout, self.client.request(request)).await;
            match result {
                Err(_) => return Err(ForwardError::Timeout),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) if error.is_connect() => {
                    if replayable.is_some() && attempt < self.retries {
                        attempt += 1;
                        continue;
                    }
                    if caused_by_timeout(&error) {
                        return Err(ForwardError::Timeout);
                    }
                    return Err(ForwardError::Connect(error));
                }
                Ok(Err(error)) => return Err(ForwardError::Failed(error)),
            }
        }
    }

    fn uri(&self) -> Result<http::Uri, ForwardError> {
        let upstream = self.upstream;
        let scheme = if upstream.https { "https" } else { "http" };
        let text = format!(
            "{scheme}://{}:{}{}",
            upstream.host, upstream.port, upstream.path_and_query
        );
        text.parse().map_err(|source| ForwardError::Uri {
            target: text.split('?').next().unwrap_or_default().to_owned(),
            source,
        })
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync()
}

/// Whether a connect failure was the connector's timeout: an `io::Error` of kind `TimedOut`
/// somewhere in its causes (hyper-util's `HttpConnector` reports its connect timeout so).
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
