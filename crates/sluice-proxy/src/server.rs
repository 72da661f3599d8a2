//! The proxy listener and the pipeline of one request:
//! match → access phase → upstream → header phase → body phase → log phase.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sluice_plugin::{Body, BoxError, Flow, ProxyRequest, RequestBody, RequestCtx, Upstream};
use tokio::net::TcpListener;

use crate::compile::RouteTarget;
use crate::forward::{Attempt, ForwardError};
use crate::response_body::{run_log, Phases, ResponseBody};
use crate::upstream::{Clients, HttpClient};
use crate::Live;

/// Settings of the proxy listener.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// Worker threads, each a single-threaded runtime with its own accept loop and its own
    /// upstream connection pools (default: one per core).
    pub workers: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            workers: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

thread_local! {
    /// This worker's upstream clients. Pools are per worker on purpose: a request and the
    /// task driving its upstream connection then run on the same thread, so hyper's
    /// request/connection hand-off never needs a cross-thread wake-up.
    static CLIENTS: Clients = Clients::default();
}

fn worker_client(connect_timeout_ms: u32, tls_verify: bool) -> HttpClient {
    CLIENTS.with(|clients| clients.get(connect_timeout_ms, tls_verify))
}

struct Shared {
    live: Live,
    via: HeaderValue,
    id_prefix: u32,
    next_id: AtomicU64,
    /// For routes without a service whose upstream a plugin sets (ai-proxy).
    default_client: HttpClient,
}

static X_UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-sluice-upstream-latency");
static X_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-sluice-proxy-latency");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-sluice-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Serves the proxy on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (up to the grace period).
pub async fn serve(
    listener: TcpListener,
    live: Live,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Like nginx's workers: N threads, each a single-threaded runtime accepting on the same
    // socket. A request never migrates between threads, which saves the cross-thread wake-ups
    // that dominated a multi-threaded runtime's profile.
    let listener = listener.into_std()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for index in 0..config.workers.max(1) {
        let listener = listener.try_clone()?;
        let (live, config) = (live.clone(), config.clone());
        let mut stop = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-proxy-{index}"))
            .spawn(move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let stopped = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    serve_worker(listener, live, config, stopped).await
                })
            })?;
        threads.push(thread);
    }
    drop(listener);
    shutdown.await;
    let _ = stop_tx.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("proxy worker panicked")))
            })
            .collect::<std::io::Result<Vec<()>>>()
    })
    .await
    .map_err(std::io::Error::other)?;
    joined.map(|_| ())
}

async fn serve_worker(
    listener: TcpListener,
    live: Live,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        default_client: worker_client(60_000, true),
        live,
        via: HeaderValue::from_static(concat!("1.1 sluice/", env!("CARGO_PKG_VERSION"))),
        id_prefix: std::process::id() ^ (Instant::now().elapsed().subsec_nanos()),
        next_id: AtomicU64::new(0),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper drops its header read timeout: a client that sends half a request
    // head and then nothing would hold its socket forever (slowloris). 60 s, like nginx.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
        let shared = shared.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(&shared, request, peer, local_port).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "proxy connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!("proxy shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}

async fn handle(
    shared: &Shared,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    local_port: u16,
) -> Response<Body> {
    let started = Instant::now();
    let compiled = shared.live.load();
    let request_id = format!(
        "{:08x}{:016x}",
        shared.id_prefix,
        shared.next_id.fetch_add(1, Ordering::Relaxed)
    );
    // A protocol upgrade (WebSocket): remember what was asked, and take hold of the client's
    // side of the connection for after the 101.
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .filter(|_| connection_has(request.headers(), "upgrade"))
        .cloned()
        .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
    let (mut parts, body) = request.into_parts();

    let host_header = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    let raw_path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let path = sluice_router::normalize_path(&raw_path).into_owned();
    // The router normalizes the raw path itself; normalizing twice would decode twice.
    let found = compiled.router.find_any_protocol(&sluice_router::Request {
        scheme: "http",
        method: parts.method.as_str(),
        host: &host_header,
        port: local_port,
        path: &raw_path,
        headers: &parts.headers,
        sni: None,
    });
    let Some(found) = found else {
        return error(
            StatusCode::NOT_FOUND,
            "no Route matched with those values",
            &request_id,
        );
    };
    let target: Arc<RouteTarget> = found.payload.clone();
    let matched_path = found.matched_path.clone();
    if target.https_only {
        // Kong's answer to plain http on an https-only route.
        let mut response = error(
            StatusCode::from_u16(target.https_redirect_status_code)
                .unwrap_or(StatusCode::UPGRADE_REQUIRED),
            "Please use HTTPS protocol",
            &request_id,
        );
        if response.status() == StatusCode::UPGRADE_REQUIRED {
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                header::UPGRADE,
                HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
            );
        } else if let Ok(location) = HeaderValue::from_str(&format!(
            "https://{}{}",
            strip_port(&host_header),
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        )) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    if let Some(reason) = &target.unavailable {
        return error(StatusCode::SERVICE_UNAVAILABLE, reason, &request_id);
    }

    let upstream = match &target.service {
        Some(service) => Upstream {
            https: service.https,
            host: service.host.clone(),
            port: service.port,
            path_and_query: encode_path(&sluice_router::upstream_path(
                service.path.as_deref(),
                &path,
                query.as_deref(),
                matched_path.as_deref(),
                target.strip_path,
                target.path_handling,
            )),
            host_header: if target.preserve_host {
                host_header.clone()
            } else {
                host_with_port(&service.host, service.port, service.https)
            },
        },
        None => Upstream {
            https: false,
            host: String::new(),
            port: 0,
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            host_header: host_header.clone(),
        },
    };

    let path_suffix = encode_path(match matched_path.as_deref() {
        Some(prefix) if target.strip_path && !prefix.is_empty() => {
            path.strip_prefix(prefix).unwrap_or(&path)
        }
        _ => &path,
    });
    // Hop-by-hop headers go first, before Sluice adds its own: a client listing
    // `Connection: X-Forwarded-For` must not be able to remove what the gateway sets.
    strip_hop_by_hop(&mut parts.headers);
    forwarded_headers(
        &mut parts.headers,
        peer,
        local_port,
        &host_header,
        &raw_path,
        matched_path.as_deref().filter(|_| target.strip_path),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        parts.headers.insert(X_REQUEST_ID.clone(), value);
    }
    parts.headers.append(header::VIA, shared.via.clone());

    let mut ctx = RequestCtx {
        request_id,
        route_id: target.route_id,
        service_id: target.service.as_ref().map(|s| s.id),
        consumer_id: None,
        client_addr: peer,
        started,
        upstream,
        upstream_latency: None,
        path_suffix,
        status: 0,
        log: serde_json::Map::new(),
    };
    let mut states: Vec<sluice_plugin::PluginState> = std::iter::repeat_with(|| None)
        .take(target.chain.len())
        .collect();

    // Access phase.
    let mut proxy_request = ProxyRequest {
        parts,
        body: RequestBody::Stream(body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
    };
    for (handler, state) in target.chain.iter().zip(states.iter_mut()) {
        if let Flow::Respond(response) = handler.access(&mut proxy_request, &mut ctx, state).await {
            let (mut parts, bytes) = (*response).into_parts();
            ctx.status = parts.status.as_u16();
            finish_headers(shared, &mut parts.headers, &ctx, started, None);
            let phases = Phases {
                target: target.clone(),
                ctx,
                states,
            };
            run_log(&phases);
            return Response::from_parts(parts, full(bytes));
        }
    }

    if ctx.upstream.host.is_empty() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Service found with those values",
            &ctx.request_id,
        );
    }
    let upstream_header = HeaderValue::from_str(&ctx.upstream.host_header).ok();
    let ProxyRequest { mut parts, body } = proxy_request;
    match upstream_header {
        Some(host) => {
            parts.headers.insert(header::HOST, host);
        }
        None => {
            parts.headers.remove(header::HOST);
        }
    }

    let (client, retries, timeout, read_timeout) = match &target.service {
        Some(s) => (
            &worker_client(s.connect_timeout_ms, s.tls_verify),
            s.retries,
            s.connect_timeout + s.write_timeout + s.read_timeout,
            s.read_timeout,
        ),
        None => (
            &shared.default_client,
            5,
            Duration::from_secs(180),
            Duration::from_secs(60),
        ),
    };
    let attempt = Attempt {
        client,
        upstream: &ctx.upstream,
        retries,
        timeout,
    };
    if let Some((protocol, _)) = &upgrade {
        // Hop-by-hop headers were stripped; an upgrade needs these two to reach the upstream.
        parts.headers.insert(header::UPGRADE, protocol.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let sent_at = Instant::now();
    let result = attempt.send(parts, body).await;
    let upstream_latency = sent_at.elapsed();
    ctx.upstream_latency = Some(upstream_latency);
    let response = match result {
        Ok(response) => response,
        Err(failure) => {
            tracing::warn!(
                request_id = %ctx.request_id,
                upstream = %ctx.upstream.host,
                error = %failure,
                "upstream request failed"
            );
            let timed_out = matches!(failure, ForwardError::Timeout);
            let proxy_started = started + upstream_latency;
            return upstream_failure(shared, target, ctx, states, timed_out, proxy_started);
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some((_, client_side)) = upgrade {
            return switch_protocols(shared, response, client_side, target, ctx, states, started);
        }
    }

    // Header phase.
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let buffer = target
        .chain
        .iter()
        .zip(states.iter())
        .any(|(handler, state)| handler.buffer_response(&ctx, state));
    if buffer {
        // A plugin must see the whole response before its headers go out.
        let collected = tokio::time::timeout(read_timeout, body.collect()).await;
        let mut bytes = match collected {
            Ok(Ok(collected)) => collected.to_bytes(),
            failed => {
                let timed_out = failed.is_err();
                let proxy_started = started + upstream_latency;
                return upstream_failure(shared, target, ctx, states, timed_out, proxy_started);
            }
        };
        for (handler, state) in target.chain.iter().zip(states.iter_mut()) {
            bytes = handler.buffered_response(&mut parts, bytes, &mut ctx, state);
        }
        for (handler, state) in target.chain.iter().zip(states.iter_mut()) {
            handler.header_filter(&mut parts, &mut ctx, state);
        }
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        ctx.status = parts.status.as_u16();
        finish_headers(
            shared,
            &mut parts.headers,
            &ctx,
            started + upstream_latency,
            Some(upstream_latency),
        );
        run_log(&Phases {
            target,
            ctx,
            states,
        });
        return Response::from_parts(parts, full(bytes));
    }
    for (handler, state) in target.chain.iter().zip(states.iter_mut()) {
        handler.header_filter(&mut parts, &mut ctx, state);
    }
    if target.has_body_filter {
        // A filter may change the length; let hyper frame the body.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    ctx.status = parts.status.as_u16();
    finish_headers(
        shared,
        &mut parts.headers,
        &ctx,
        started + upstream_latency,
        Some(upstream_latency),
    );

    // Body and log phases run as the body streams to the client.
    let phases = Box::new(Phases {
        target,
        ctx,
        states,
    });
    let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    let body = ResponseBody::new(body, read_timeout, Some(phases));
    Response::from_parts(parts, BodyExt::boxed_unsync(body))
}

/// The upstream agreed to switch protocols: answer the client's 101 with the upstream's
/// headers, then splice the two upgraded connections together until either side closes.
fn switch_protocols(
    shared: &Shared,
    mut response: http::Response<Incoming>,
    client_side: hyper::upgrade::OnUpgrade,
    target: Arc<RouteTarget>,
    mut ctx: RequestCtx,
    states: Vec<sluice_plugin::PluginState>,
    started: Instant,
) -> Response<Body> {
    let upstream_side = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    ctx.status = parts.status.as_u16();
    finish_headers(
        shared,
        &mut parts.headers,
        &ctx,
        started,
        ctx.upstream_latency,
    );
    let request_id = ctx.request_id.clone();
    tokio::spawn(async move {
        match tokio::try_join!(client_side, upstream_side) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    tracing::debug!(%request_id, %error, "upgraded connection ended with an error");
                }
            }
            Err(error) => tracing::warn!(%request_id, %error, "protocol upgrade failed"),
        }
        run_log(&Phases {
            target,
            ctx,
            states,
        });
    });
    Response::from_parts(parts, full(Bytes::new()))
}

/// Whether the `Connection` header lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Kong's 504 (timed out) or 502 (anything else) when the upstream fails, with the usual
/// headers; the log phase still runs.
fn upstream_failure(
    shared: &Shared,
    target: Arc<RouteTarget>,
    mut ctx: RequestCtx,
    states: Vec<sluice_plugin::PluginState>,
    timed_out: bool,
    proxy_started: Instant,
) -> Response<Body> {
    let (status, message) = if timed_out {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "The upstream server is timing out",
        )
    } else {
        (
            StatusCode::BAD_GATEWAY,
            "An invalid response was received from the upstream server",
        )
    };
    ctx.status = status.as_u16();
    let mut response = error(status, message, &ctx.request_id);
    finish_headers(
        shared,
        response.headers_mut(),
        &ctx,
        proxy_started,
        ctx.upstream_latency,
    );
    run_log(&Phases {
        target,
        ctx,
        states,
    });
    response
}

/// Latency, request id and `Via` headers on the response.
fn finish_headers(
    shared: &Shared,
    headers: &mut HeaderMap,
    ctx: &RequestCtx,
    proxy_started: Instant,
    upstream_latency: Option<Duration>,
) {
    if let Some(latency) = upstream_latency {
        headers.insert(
            X_UPSTREAM_LATENCY.clone(),
            HeaderValue::from(latency.as_millis() as u64),
        );
    }
    // Time spent in Sluice itself (the upstream's share subtracted by the caller).
    headers.insert(
        X_PROXY_LATENCY.clone(),
        HeaderValue::from(proxy_started.elapsed().as_millis() as u64),
    );
    if let Ok(value) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    headers.append(header::VIA, shared.via.clone());
}

fn forwarded_headers(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    local_port: u16,
    host_header: &str,
    raw_path: &str,
    stripped_prefix: Option<&str>,
) {
    let client_ip = peer.ip().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {client_ip}"),
        None => client_ip.clone(),
    };
    let set = |headers: &mut HeaderMap, name: &HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), value);
        }
    };
    set(headers, &X_FORWARDED_FOR, &forwarded_for);
    set(headers, &X_FORWARDED_PROTO, "http");
    set(headers, &X_FORWARDED_HOST, strip_port(host_header));
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(local_port));
    set(headers, &X_FORWARDED_PATH, raw_path);
    set(headers, &X_REAL_IP, &client_ip);
    // Only a prefix Sluice stripped is forwarded; a client's own value is not trusted.
    match stripped_prefix {
        Some(prefix) => set(headers, &X_FORWARDED_PREFIX, prefix),
        None => {
            headers.remove(&X_FORWARDED_PREFIX);
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are not forwarded.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in listed.split(',') {
            let name = name.trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
                headers.remove(name);
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The router matches on the percent-decoded path; what goes upstream must be a valid URI
/// again, so bytes outside RFC 3986's path characters are re-escaped (a decoded space becomes
/// `%20`, UTF-8 stays escaped). Existing escapes and the query are kept as they are.
fn encode_path(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path_and_query.len());
    for (i, &b) in bytes.iter().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@/".contains(&b)
            || (b == b'%'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn host_with_port(host: &str, port: u16, https: bool) -> String {
    if (https && port == 443) || (!https && port == 80) {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// Kong's error body: `{"message": ..., "request_id": ...}`.
fn error(status: StatusCode, message: &str, request_id: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message, "request_id": request_id });
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync()
}
