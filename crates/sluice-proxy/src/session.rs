//! The pipeline of one proxied request, one method per phase, in the order Pingora's
//! `ProxyHttp` reads:
//!
//! 1. [`route`]: match the request; a request no route takes is answered here (404, 426 or
//!    the redirect of an https-only route, 503 for a route that cannot run).
//! 2. [`Session::new`]: the upstream request's head (forwarded headers, the request id) and
//!    the per-request context and plugin states.
//! 3. [`Session::access`]: the plugins' access phase; any of them may answer.
//! 4. [`Session::upstream`]: the request goes upstream (retries, timeouts).
//! 5. [`Session::response`]: the header phase, then the body, buffered when a plugin asks or
//!    streamed through the body filters; or [`Session::switch_protocols`] for an upgrade.
//! 6. The log phase, once, after the last byte (see `response_body`).
//!
//! Every response that has a session leaves through [`Session::finish`]: it records the
//! status and sets Sluice's headers, and hands over the state the log phase needs. So the
//! "finish headers, then log" sequence is written once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sluice_plugin::{
    Body, BoxError, Flow, Outcome, PluginState, ProxyRequest, RequestBody, RequestCtx, Upstream,
};

use crate::access_log::WorkerLog;
use crate::compile::{Chain, Compiled, RouteTarget};
use crate::forward::{Attempt, ForwardError};
use crate::headers::{
    connection_has, encode_path, forwarded_headers, host_with_port, strip_hop_by_hop, strip_port,
};
use crate::listener::worker_client;
use crate::request_body::ClientBody;
use crate::request_id::RequestIds;
use crate::response_body::{run_log, Phases, ResponseBody};
use crate::upstream::HttpClient;
use crate::websocket;
use crate::Live;

static X_UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-sluice-upstream-latency");
static X_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-sluice-proxy-latency");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-sluice-request-id");

/// What every request of one worker shares.
pub(crate) struct Shared {
    live: Live,
    via: HeaderValue,
    ids: RequestIds,
    /// For routes without a service whose upstream a plugin sets (ai-proxy).
    default_client: HttpClient,
    client_body_timeout: Duration,
    pub(crate) access_log: Option<Arc<WorkerLog>>,
}

/// A request a route took: what the later phases need from the routing phase.
struct Routed {
    target: Arc<RouteTarget>,
    /// What the route's path matched, in the normalized path.
    matched_path: Option<String>,
    /// The normalized (percent-decoded) path.
    path: String,
    host_header: String,
    captures: Vec<(String, String)>,
}

/// A protocol upgrade the client asked for (WebSocket): the protocol, and the client's side
/// of the connection for after the 101.
type Upgrade = (HeaderValue, hyper::upgrade::OnUpgrade);

/// One request from the access phase on: its route, context and plugin states.
struct Session<'a> {
    shared: &'a Shared,
    started: Instant,
    compiled: Arc<Compiled>,
    target: Arc<RouteTarget>,
    /// The plugins this request runs: the route's chain, until an authenticated consumer
    /// with plugins of its own switches the rest of it ([`Session::switch_to_consumer`]).
    chain: Arc<Chain>,
    ctx: RequestCtx,
    /// Parallel to `chain`.
    states: Vec<PluginState>,
    /// The start of a streamed answer a balancing plugin had read before committing to it;
    /// sent ahead of the rest of the body.
    prefetched: Vec<Bytes>,
}

/// A response that ends the request early; the phase that made it already finished it.
type Answered = Response<Body>;

/// Runs one request through every phase.
pub(crate) async fn handle(
    shared: &Shared,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    local_port: u16,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = shared.ids.next();
    let compiled = shared.live.load();
    let upgrade = take_upgrade(&mut request);
    let (mut parts, body) = request.into_parts();
    let routed = match route(&compiled, &parts, local_port, &request_id) {
        Ok(routed) => routed,
        Err(answer) => {
            if let Some(log) = &shared.access_log {
                log_unrouted(log, &parts, &answer, peer, started, &request_id);
            }
            return answer;
        }
    };
    let session = Session::new(
        shared, started, compiled, routed, &mut parts, peer, local_port, request_id,
    );
    let body = ClientBody::new(body, shared.client_body_timeout);
    let request = ProxyRequest {
        parts,
        body: RequestBody::Stream(BodyExt::boxed_unsync(body)),
    };
    let (session, request) = match session.access(request).await {
        Ok(next) => next,
        Err(answered) => return answered,
    };
    let protocol = upgrade.as_ref().map(|(protocol, _)| protocol);
    let (session, response) = match session.upstream(request, protocol).await {
        Ok(next) => next,
        Err(answered) => return answered,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some((_, client_side)) = upgrade {
            return session.switch_protocols(response, client_side);
        }
    }
    session.response(response).await
}

/// Whether the response is a server-sent event stream.
fn is_event_stream(response: &http::Response<Incoming>) -> bool {
    response.status() == StatusCode::OK
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// What Kong counts as the request's length (nginx's `$request_length`): the request line,
/// the headers and the body, the body by its declared `Content-Length`.
fn request_size(parts: &http::request::Parts) -> u64 {
    let line = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let body = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (line + headers + 2) as u64 + body
}

/// The access log line of a request no route took: Kong's record without route, service or
/// consumer.
fn log_unrouted(
    log: &WorkerLog,
    parts: &http::request::Parts,
    answer: &Answered,
    peer: SocketAddr,
    started: Instant,
    request_id: &str,
) {
    use http_body::Body as _;
    use sluice_plugin::log_serializer as ls;
    let request_ms = started.elapsed().as_millis() as u64;
    log.unrouted(&ls::Record {
        request: ls::RequestPart {
            id: request_id,
            method: parts.method.as_str(),
            uri: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            size: request_size(parts),
            querystring: None,
            headers: None,
        },
        upstream_uri: "",
        response: ls::ResponsePart {
            status: answer.status().as_u16(),
            size: answer.body().size_hint().exact().unwrap_or(0),
            headers: None,
        },
        latencies: ls::Latencies {
            kong: request_ms,
            proxy: -1,
            request: request_ms,
        },
        route: None,
        service: None,
        consumer: None,
        client_ip: peer.ip().to_string(),
        started_at: ls::started_at_ms(started),
        source: "kong",
        upstream_status: String::new(),
        ai: None,
    });
}

/// Takes hold of the client's side of a protocol upgrade, if one is asked for.
fn take_upgrade(request: &mut Request<Incoming>) -> Option<Upgrade> {
    let protocol = request
        .headers()
        .get(header::UPGRADE)
        .filter(|_| connection_has(request.headers(), "upgrade"))
        .cloned()?;
    Some((protocol, hyper::upgrade::on(request)))
}

/// The routing phase: the route that takes the request, or the answer when none can.
// The answer is the response itself, moved once to the client; boxing it would cost an
// allocation on every 404.
#[allow(clippy::result_large_err)]
fn route(
    compiled: &Compiled,
    parts: &http::request::Parts,
    local_port: u16,
    request_id: &str,
) -> Result<Routed, Answered> {
    let host_header = match request_host(parts) {
        Ok(host) => host,
        Err(reason) => return Err(error(StatusCode::BAD_REQUEST, reason, request_id)),
    };
    if let Err(reason) = check_transfer_encoding(&parts.headers) {
        return Err(error(StatusCode::BAD_REQUEST, reason, request_id));
    }
    let raw_path = parts.uri.path();
    // The router normalizes the raw path itself; normalizing twice would decode twice.
    let found = compiled.router.find_any_protocol(&sluice_router::Request {
        scheme: "http",
        method: parts.method.as_str(),
        host: &host_header,
        port: local_port,
        path: raw_path,
        headers: &parts.headers,
        sni: None,
    });
    let Some(found) = found else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no Route matched with those values",
            request_id,
        ));
    };
    let target: Arc<RouteTarget> = found.payload.clone();
    if target.https_only {
        return Err(https_required(&target, parts, &host_header, request_id));
    }
    if target.websocket_only && !is_websocket_handshake(&parts.headers) {
        return Err(websocket_required(request_id));
    }
    if let Some(reason) = &target.unavailable {
        let shape = ErrorShape::of(&target);
        let response = shape.body(StatusCode::SERVICE_UNAVAILABLE, reason, request_id);
        return Err(response.map(full));
    }
    Ok(Routed {
        target,
        matched_path: found.matched_path,
        path: sluice_router::normalize_path(raw_path).into_owned(),
        host_header,
        captures: found.captures,
    })
}

/// The host a request is for (RFC 9112 §3.2): the authority of an absolute-form target
/// (`GET http://a/ HTTP/1.1`) or HTTP/2's `:authority` wins over `Host`; otherwise exactly one
/// `Host`, which HTTP/1.1 requires. A missing or repeated `Host` is a 400, never a guess.
fn request_host(parts: &http::request::Parts) -> Result<String, &'static str> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err("Bad request: more than one Host header");
    }
    if let Some(authority) = parts.uri.authority() {
        return Ok(authority.as_str().to_owned());
    }
    match first.map(|h| h.to_str()) {
        Some(Ok(host)) => Ok(host.to_owned()),
        Some(Err(_)) => Err("Bad request: invalid Host header"),
        None if parts.version == http::Version::HTTP_11 => Err("Bad request: missing Host header"),
        None => Ok(String::new()), // HTTP/1.0 may omit it
    }
}

/// RFC 9112 §6.1: a request's transfer codings must end in `chunked`, and a proxy may refuse
/// any other coding; Sluice accepts only a single `chunked`, so that it and the upstream can
/// never disagree on where a body ends.
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err("Bad request: invalid Transfer-Encoding");
        };
        codings.extend(value.split(',').map(str::trim).filter(|c| !c.is_empty()));
    }
    match codings.as_slice() {
        [] => Ok(()),
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(()),
        _ => Err("Bad request: unsupported Transfer-Encoding (only chunked is accepted)"),
    }
}

/// A WebSocket opening handshake (RFC 6455 §4.1): `Upgrade: websocket` and `Connection:
/// upgrade`.
fn is_websocket_handshake(headers: &HeaderMap) -> bool {
    connection_has(headers, "upgrade")
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// A plain request on a route whose protocols are only `ws`/`wss`: 426, naming the
/// protocol to upgrade to.
fn websocket_required(request_id: &str) -> Answered {
    let mut response = error(
        StatusCode::UPGRADE_REQUIRED,
        "Please use WebSocket protocol",
        request_id,
    );
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response
}

/// Kong's answer to plain http on an https-only route: 426, or the route's redirect.
fn https_required(
    target: &RouteTarget,
    parts: &http::request::Parts,
    host_header: &str,
    request_id: &str,
) -> Answered {
    let status = StatusCode::from_u16(target.https_redirect_status_code)
        .unwrap_or(StatusCode::UPGRADE_REQUIRED);
    let mut response = error(status, "Please use HTTPS protocol", request_id);
    if status == StatusCode::UPGRADE_REQUIRED {
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            header::UPGRADE,
            HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
        );
    } else if let Ok(location) = HeaderValue::from_str(&format!(
        "https://{}{}",
        strip_port(host_header),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    )) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(
        live: Live,
        default_client: HttpClient,
        client_body_timeout: Duration,
        access_log: Option<Arc<WorkerLog>>,
    ) -> Self {
        Self {
            live,
            via: HeaderValue::from_static(concat!("1.1 sluice/", env!("CARGO_PKG_VERSION"))),
            ids: RequestIds::new(),
            default_client,
            client_body_timeout,
            access_log,
        }
    }
}

// === impl Session ===

impl<'a> Session<'a> {
    /// The upstream request's head and the request's context, before any plugin runs.
    #[allow(clippy::too_many_arguments)]
    fn new(
        shared: &'a Shared,
        started: Instant,
        compiled: Arc<Compiled>,
        routed: Routed,
        parts: &mut http::request::Parts,
        peer: SocketAddr,
        local_port: u16,
        request_id: String,
    ) -> Self {
        let Routed {
            target,
            matched_path,
            path,
            host_header,
            captures,
        } = routed;
        let upstream = target.service.as_ref().map(|service| Upstream {
            https: service.https,
            host: service.host.clone(),
            port: service.port,
            path_and_query: encode_path(&sluice_router::upstream_path(
                service.path.as_deref(),
                &path,
                parts.uri.query(),
                matched_path.as_deref(),
                target.strip_path,
                target.path_handling,
            )),
            host_header: if target.preserve_host {
                host_header.clone()
            } else {
                host_with_port(&service.host, service.port, service.https)
            },
            timeout: None,
        });
        let path_suffix = encode_path(match matched_path.as_deref() {
            Some(prefix) if target.strip_path && !prefix.is_empty() => {
                path.strip_prefix(prefix).unwrap_or(&path)
            }
            _ => &path,
        });
        // Read before the hop-by-hop headers that say it go.
        let websocket = is_websocket_handshake(&parts.headers);
        // Hop-by-hop headers go first, before Sluice adds its own: a client listing
        // `Connection: X-Forwarded-For` must not be able to remove what the gateway sets.
        strip_hop_by_hop(&mut parts.headers);
        forwarded_headers(
            &mut parts.headers,
            peer,
            local_port,
            &host_header,
            parts.uri.path(),
            matched_path.as_deref().filter(|_| target.strip_path),
        );
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            parts.headers.insert(X_REQUEST_ID.clone(), value);
        }
        parts.headers.append(header::VIA, shared.via.clone());
        let request_bytes = request_size(parts);
        let ctx = RequestCtx {
            request_id,
            route_id: target.route_id,
            service_id: target.service.as_ref().map(|s| s.id),
            labels: target.labels.clone(),
            consumer_id: None,
            consumer: None,
            identities: compiled.identities.clone(),
            client_addr: peer,
            started,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            upstream,
            upstream_latency: None,
            path_suffix,
            uri_captures: captures,
            status: 0,
            response_bytes: 0,
            request_bytes,
            from_upstream: false,
            log: serde_json::Map::new(),
            ai: None,
            websocket,
        };
        let chain = target.chain.clone();
        let states = chain.handlers.iter().map(|h| h.new_state()).collect();
        Self {
            shared,
            started,
            compiled,
            target,
            chain,
            ctx,
            states,
            prefetched: Vec::new(),
        }
    }

    /// The access phase: each plugin in priority order; the first that answers ends it. When
    /// a plugin authenticates a consumer that has plugins of its own, the rest of the chain
    /// is chosen again for that consumer, as Kong's plugin iterator does.
    async fn access(mut self, mut request: ProxyRequest) -> Result<(Self, ProxyRequest), Answered> {
        // One handle on the chain for the loop (not one per plugin); taken again only when a
        // consumer switches it.
        let mut chain = self.chain.clone();
        let mut position = 0;
        while let Some(handler) = chain.handlers.get(position) {
            let before = self.ctx.consumer_id;
            let state = &mut self.states[position];
            if let Flow::Respond(response) =
                handler.access(&mut request, &mut self.ctx, state).await
            {
                let (mut parts, bytes) = (*response).into_parts();
                // The plugins that ran before this answer still see it (Kong: a cors
                // plugin's headers reach a browser on key-auth's 401).
                self.header_filters_before(position, &mut parts);
                return Err(self.respond(parts, bytes));
            }
            if self.ctx.consumer_id != before {
                if let Err(reason) = self.switch_to_consumer(position) {
                    return Err(self.fail(StatusCode::SERVICE_UNAVAILABLE, &reason));
                }
                chain = self.chain.clone();
            }
            position += 1;
        }
        Ok((self, request))
    }

    /// The chain after `position` for the consumer just authenticated: each plugin name takes
    /// the most specific instance (Kong's precedence), counting the consumer's own plugins
    /// that apply to this route and run after this point. Only consumers with plugins of
    /// their own pay for this; the others keep the route's chain.
    fn switch_to_consumer(&mut self, position: usize) -> Result<(), String> {
        let Some(consumer) = self.ctx.consumer_id else {
            return Ok(());
        };
        let Some(own) = self.compiled.consumer_plugins.get(&consumer) else {
            return Ok(());
        };
        let priority = self.chain.handlers[position].priority();
        let (route, service) = (Some(self.target.route_id), self.ctx.service_id);
        let mut rest: Vec<(
            Arc<dyn sluice_plugin::PluginHandler>,
            u8,
            Option<PluginState>,
        )> = Vec::new();
        let mut states = std::mem::take(&mut self.states);
        let later_states = states.split_off(position + 1);
        for ((handler, rank), state) in self
            .chain
            .handlers
            .iter()
            .zip(&self.chain.ranks)
            .skip(position + 1)
            .zip(later_states)
        {
            rest.push((handler.clone(), *rank, Some(state)));
        }
        for scoped in own {
            let Some(rank) =
                sluice_plugin::scope::rank(&scoped.plugin, route, service, Some(consumer))
            else {
                continue;
            };
            let handler = scoped.handler.clone()?;
            if handler.priority() >= priority {
                continue; // its turn has passed
            }
            match rest.iter_mut().find(|(h, _, _)| h.name() == handler.name()) {
                Some(slot) if slot.1 >= rank => {}
                Some(slot) => *slot = (handler, rank, None),
                None => rest.push((handler, rank, None)),
            }
        }
        rest.sort_by_key(|(h, _, _)| std::cmp::Reverse(h.priority()));
        let mut selected: Vec<(Arc<dyn sluice_plugin::PluginHandler>, u8)> = self.chain.handlers
            [..=position]
            .iter()
            .cloned()
            .zip(self.chain.ranks[..=position].iter().copied())
            .collect();
        for (handler, rank, state) in rest {
            states.push(state.unwrap_or_else(|| handler.new_state()));
            selected.push((handler, rank));
        }
        // Already in priority order: Chain::new's stable sort keeps it.
        self.chain = Arc::new(Chain::new(selected));
        self.states = states;
        Ok(())
    }

    /// The upstream phase: the request goes to the service (or where a plugin pointed it).
    /// A plugin that balances (ai-proxy-advanced) sees each attempt's outcome and may send
    /// the request again, to another upstream, within the client's one request.
    async fn upstream(
        mut self,
        request: ProxyRequest,
        upgrade: Option<&HeaderValue>,
    ) -> Result<(Self, http::Response<Incoming>), Answered> {
        let balancer = self.chain.handlers.iter().position(|h| h.balances());
        let mut request = request;
        loop {
            let Some(result) = self.send_once(request, upgrade).await else {
                return Err(self.fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no Service found with those values",
                ));
            };
            let Some(index) = balancer else {
                return self.upstream_result(result);
            };
            let handler = self.chain.handlers[index].clone();
            let (result, outcome) = match result {
                Ok(response) if is_event_stream(&response) => {
                    // A stream can still fail before anything reaches the client.
                    match self.prefetch(&handler, index, response).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            (Ok(response), Outcome::Status(status))
                        }
                        Err(()) => {
                            let failed = Err(ForwardError::StreamFailed);
                            (failed, Outcome::StreamFailed)
                        }
                    }
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    (Ok(response), Outcome::Status(status))
                }
                Err(error) => {
                    let outcome = match &error {
                        ForwardError::Timeout => Outcome::Timeout,
                        ForwardError::Connect(_) => Outcome::ConnectFailed,
                        _ => Outcome::Failed,
                    };
                    (Err(error), outcome)
                }
            };
            match handler
                .retry(outcome, &mut self.ctx, &mut self.states[index])
                .await
            {
                Some(next) => request = next, // the failed response is dropped unread
                None => return self.upstream_result(result),
            }
        }
    }

    /// One attempt to `ctx.upstream`; `None` when there is none (Kong's 503).
    async fn send_once(
        &mut self,
        request: ProxyRequest,
        upgrade: Option<&HeaderValue>,
    ) -> Option<Result<http::Response<Incoming>, ForwardError>> {
        let upstream = self.ctx.upstream.as_ref()?;
        let ProxyRequest { mut parts, body } = request;
        match HeaderValue::from_str(&upstream.host_header) {
            Ok(host) => parts.headers.insert(header::HOST, host),
            Err(_) => parts.headers.remove(header::HOST),
        };
        if let Some(protocol) = upgrade {
            // Hop-by-hop headers were stripped; an upgrade needs these two to reach it.
            parts.headers.insert(header::UPGRADE, protocol.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let client = match &self.target.service {
            Some(s) => worker_client(s.connect_timeout_ms, s.tls_verify),
            None => self.shared.default_client.clone(),
        };
        let service_timeout = self
            .target
            .service
            .as_ref()
            .map_or(Duration::from_secs(180), |s| {
                s.connect_timeout + s.write_timeout + s.read_timeout
            });
        let attempt = Attempt {
            client: &client,
            upstream,
            retries: self.target.service.as_ref().map_or(5, |s| s.retries),
            timeout: upstream.timeout.unwrap_or(service_timeout),
        };
        let sent_at = Instant::now();
        let result = attempt.send(parts, body).await;
        self.ctx.upstream_latency = Some(sent_at.elapsed());
        Some(result)
    }

    /// Reads the start of a streamed answer until the balancing plugin commits to it (kept
    /// in `prefetched`) or finds it failed (`Err`: another target may be tried).
    async fn prefetch(
        &mut self,
        handler: &Arc<dyn sluice_plugin::PluginHandler>,
        index: usize,
        response: http::Response<Incoming>,
    ) -> Result<http::Response<Incoming>, ()> {
        use sluice_plugin::StreamStart;
        let read_timeout = self
            .ctx
            .upstream
            .as_ref()
            .and_then(|u| u.timeout)
            .unwrap_or_else(|| self.read_timeout());
        let (parts, mut body) = response.into_parts();
        let mut read: Vec<u8> = Vec::new();
        self.prefetched.clear();
        loop {
            let frame = tokio::time::timeout(read_timeout, body.frame()).await;
            let (chunk, ended) = match frame {
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => (Some(data), false),
                    Err(_) => (None, false), // trailers: nothing to judge
                },
                Ok(None) => (None, true),
                Ok(Some(Err(_))) | Err(_) => (None, true),
            };
            if let Some(chunk) = chunk {
                read.extend_from_slice(&chunk);
                self.prefetched.push(chunk);
            }
            match handler.stream_start(&read, ended, &self.states[index]) {
                StreamStart::Commit => {
                    // What was not read yet still streams; an ended body has nothing more.
                    return Ok(http::Response::from_parts(parts, body));
                }
                StreamStart::Fail => {
                    self.prefetched.clear();
                    return Err(());
                }
                StreamStart::Wait if ended => {
                    self.prefetched.clear();
                    return Err(());
                }
                StreamStart::Wait => {}
            }
        }
    }

    // Answered is the response itself, moved once to the client (see `route`).
    #[allow(clippy::result_large_err)]
    fn upstream_result(
        self,
        result: Result<http::Response<Incoming>, ForwardError>,
    ) -> Result<(Self, http::Response<Incoming>), Answered> {
        match result {
            Ok(response) => Ok((self, response)),
            Err(failure) => {
                let host = self.ctx.upstream.as_ref().map_or("", |u| u.host.as_str());
                tracing::warn!(
                    request_id = %self.ctx.request_id,
                    upstream = %host,
                    error = %failure,
                    "upstream request failed"
                );
                if failure.client_body_timed_out() {
                    return Err(self.fail(StatusCode::REQUEST_TIMEOUT, "Request timeout"));
                }
                let timed_out = matches!(failure, ForwardError::Timeout);
                Err(self.upstream_failure(timed_out))
            }
        }
    }

    /// The header phase and the body: buffered whole when a plugin asks to see it, streamed
    /// through the body filters otherwise (the log phase then runs when the body ends).
    async fn response(mut self, response: http::Response<Incoming>) -> Response<Body> {
        self.ctx.from_upstream = true;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let chain = self.chain.clone();
        let buffer = chain
            .handlers
            .iter()
            .zip(self.states.iter())
            .any(|(handler, state)| handler.buffer_response(&self.ctx, state));
        let read_timeout = self.read_timeout();
        if buffer {
            let mut bytes = match tokio::time::timeout(read_timeout, body.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(_)) => return self.upstream_failure(false),
                Err(_) => return self.upstream_failure(true),
            };
            for (handler, state) in chain.handlers.iter().zip(self.states.iter_mut()) {
                bytes = handler.buffered_response(&mut parts, bytes, &mut self.ctx, state);
            }
            self.header_filters(&mut parts);
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            return self.respond(parts, bytes);
        }
        self.header_filters(&mut parts);
        if chain.has_body_filter {
            // A filter may change the length; let hyper frame the body.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let prefetched = std::mem::take(&mut self.prefetched);
        let phases = self.finish(&mut parts);
        let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
        let body = if prefetched.is_empty() {
            body
        } else {
            crate::response_body::Prefixed::new(prefetched, body).boxed_unsync()
        };
        let body = ResponseBody::new(body, read_timeout, Some(Box::new(phases)));
        Response::from_parts(parts, BodyExt::boxed_unsync(body))
    }

    /// The header phase of the plugins ahead of `position` in the chain.
    fn header_filters_before(&mut self, position: usize, parts: &mut http::response::Parts) {
        let chain = self.chain.clone();
        for (handler, state) in chain.handlers[..position]
            .iter()
            .zip(self.states.iter_mut())
        {
            handler.header_filter(parts, &mut self.ctx, state);
        }
    }

    fn header_filters(&mut self, parts: &mut http::response::Parts) {
        for (handler, state) in self.chain.handlers.iter().zip(self.states.iter_mut()) {
            handler.header_filter(parts, &mut self.ctx, state);
        }
    }

    /// The upstream agreed to switch protocols: answer the client's 101 with the upstream's
    /// headers, then splice the two upgraded connections until either side closes. The log
    /// phase runs when the splice ends.
    fn switch_protocols(
        mut self,
        mut response: http::Response<Incoming>,
        client_side: hyper::upgrade::OnUpgrade,
    ) -> Response<Body> {
        let upstream_side = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        self.ctx.from_upstream = true;
        self.header_filters(&mut parts);
        let mut phases = self.finish(&mut parts);
        tokio::spawn(async move {
            match tokio::try_join!(client_side, upstream_side) {
                Ok((client, upstream)) if websocket::wants_messages(&phases) => {
                    websocket::relay(client, upstream, &mut phases).await;
                }
                Ok((client, upstream)) => websocket::splice(client, upstream, &mut phases).await,
                Err(error) => {
                    let request_id = &phases.ctx.request_id;
                    tracing::warn!(%request_id, %error, "protocol upgrade failed");
                }
            }
            run_log(&mut phases);
        });
        Response::from_parts(parts, full(Bytes::new()))
    }

    /// Kong's 504 (timed out) or 502 (anything else) when the upstream fails.
    fn upstream_failure(self, timed_out: bool) -> Answered {
        if timed_out {
            self.fail(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream server is timing out",
            )
        } else {
            self.fail(
                StatusCode::BAD_GATEWAY,
                "An invalid response was received from the upstream server",
            )
        }
    }

    /// Answers with the gateway's error body (Kong's, or OpenAI's on an AI route).
    fn fail(self, status: StatusCode, message: &str) -> Answered {
        let shape = ErrorShape::of(&self.target);
        let (parts, body) = shape
            .body(status, message, &self.ctx.request_id)
            .into_parts();
        self.respond(parts, body)
    }

    /// Sends a whole response now and runs the log phase.
    fn respond(self, mut parts: http::response::Parts, body: Bytes) -> Response<Body> {
        let mut phases = self.finish(&mut parts);
        phases.ctx.response_bytes = body.len() as u64;
        run_log(&mut phases);
        Response::from_parts(parts, full(body))
    }

    /// The one way out: records the status, sets the latency, request id and `Via` headers,
    /// and hands over what the log phase needs (run by the caller, now or after the body).
    fn finish(mut self, parts: &mut http::response::Parts) -> Phases {
        self.ctx.status = parts.status.as_u16();
        let headers = &mut parts.headers;
        if let Some(latency) = self.ctx.upstream_latency {
            headers.insert(
                X_UPSTREAM_LATENCY.clone(),
                HeaderValue::from(latency.as_millis() as u64),
            );
        }
        // Time spent in Sluice itself: the upstream's share is left out.
        let upstream = self.ctx.upstream_latency.unwrap_or_default();
        let proxy = self.started.elapsed().saturating_sub(upstream);
        headers.insert(
            X_PROXY_LATENCY.clone(),
            HeaderValue::from(proxy.as_millis() as u64),
        );
        set_request_id(headers, &self.ctx.request_id);
        headers.append(header::VIA, self.shared.via.clone());
        Phases {
            chain: self.chain,
            ctx: self.ctx,
            states: self.states,
            access_log: self.shared.access_log.clone(),
        }
    }

    /// The service's read timeout between body frames (60 s without a service, as Kong).
    fn read_timeout(&self) -> Duration {
        self.target
            .service
            .as_ref()
            .map_or(Duration::from_secs(60), |s| s.read_timeout)
    }
}

fn set_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
}

/// Which error body a route's clients read.
#[derive(Clone, Copy)]
enum ErrorShape {
    Kong,
    OpenAi,
}

impl ErrorShape {
    fn of(target: &RouteTarget) -> Self {
        if target.openai_errors {
            ErrorShape::OpenAi
        } else {
            ErrorShape::Kong
        }
    }

    fn body(self, status: StatusCode, message: &str, request_id: &str) -> Response<Bytes> {
        match self {
            ErrorShape::Kong => kong_error(status, message, request_id),
            ErrorShape::OpenAi => openai_error(status, message, request_id),
        }
    }
}

/// OpenAI's error body, which the OpenAI SDKs turn into their typed errors (an
/// `InternalServerError` for these statuses); the request id rides beside it.
fn openai_error(status: StatusCode, message: &str, request_id: &str) -> Response<Bytes> {
    let code = match status {
        StatusCode::BAD_GATEWAY => "upstream_error",
        StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
        _ => "service_unavailable",
    };
    let body = serde_json::json!({
        "error": {"message": message, "type": "server_error", "code": code},
        "request_id": request_id,
    });
    let mut response = kong_error(status, message, request_id);
    *response.body_mut() = Bytes::from(body.to_string());
    response
}

/// Kong's error body: `{"message": ..., "request_id": ...}`.
fn kong_error(status: StatusCode, message: &str, request_id: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "message": message, "request_id": request_id });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    set_request_id(headers, request_id);
    response
}

/// An answer before any session exists (no route, or one that cannot run): no plugin ran,
/// so there is no log phase.
fn error(status: StatusCode, message: &str, request_id: &str) -> Response<Body> {
    kong_error(status, message, request_id).map(full)
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync()
}
