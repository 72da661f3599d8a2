//! The proxy listener: one single-threaded runtime per core, each accepting on the shared
//! socket with its own upstream pools (like nginx's workers), and graceful shutdown. What
//! happens to one request is [`crate::session`]'s business.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::access_log::{WorkerLog, FLUSH_EVERY};
use crate::session::{self, Shared};
use crate::slow_client::{answer_header_timeout, Watched};
use crate::upstream::{Clients, HttpClient};
use crate::{AccessLog, Live};

/// Settings of the proxy listener.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// Worker threads, each a single-threaded runtime with its own accept loop and its own
    /// upstream connection pools (default: one per core).
    pub workers: usize,
    /// Longest wait between two reads of a request body (nginx's `client_body_timeout`);
    /// past it the client gets 408.
    pub client_body_timeout: Duration,
    /// Longest time to receive a whole request head (nginx's `client_header_timeout`); past
    /// it a client that started one gets 408, an idle keep-alive connection is closed.
    pub client_header_timeout: Duration,
    /// The access log, when one is configured (off by default).
    pub access_log: Option<AccessLog>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            client_body_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(60),
            access_log: None,
        }
    }
}

thread_local! {
    /// This worker's upstream clients. Pools are per worker on purpose: a request and the
    /// task driving its upstream connection then run on the same thread, so hyper's
    /// request/connection hand-off never needs a cross-thread wake-up.
    static CLIENTS: Clients = Clients::default();
}

pub(crate) fn worker_client(connect_timeout_ms: u32, tls_verify: bool) -> HttpClient {
    CLIENTS.with(|clients| clients.get(connect_timeout_ms, tls_verify))
}

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
    let access_log = config
        .access_log
        .as_ref()
        .map(|log| Arc::new(log.for_worker()));
    if let Some(log) = &access_log {
        tokio::spawn(flush_access_log(Arc::downgrade(log)));
    }
    let shared = Arc::new(Shared::new(
        live,
        worker_client(60_000, true),
        config.client_body_timeout,
        access_log.clone(),
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper drops its header read timeout: a client that sends half a request
    // head and then nothing would hold its socket forever (slowloris). 60 s, like nginx.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.client_header_timeout);
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
        // A duplicate of the socket, for the 408 hyper cannot send (see `slow_client`).
        let spare = {
            use std::os::fd::AsFd;
            stream
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(std::net::TcpStream::from)
        };
        let (stream, observed) = Watched::new(stream, config.client_header_timeout);
        let shared = shared.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(session::handle(&shared, request, peer, local_port).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                if answer_header_timeout(&*error, &observed, spare) {
                    tracing::debug!(%peer, "request head not received in time; answered 408");
                } else {
                    tracing::debug!(%error, "proxy connection ended with an error");
                }
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
    if let Some(log) = &access_log {
        log.flush();
    }
    Ok(())
}

/// Hands the worker's access log buffer to the writer every [`FLUSH_EVERY`], until the
/// worker is gone.
async fn flush_access_log(log: std::sync::Weak<WorkerLog>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match log.upgrade() {
            Some(log) => log.flush(),
            None => return,
        }
    }
}
