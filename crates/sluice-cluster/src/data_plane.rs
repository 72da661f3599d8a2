//! The data plane's side (`--role data_plane`): keep one connection to the control plane, apply
//! every config it pushes, remember the last good one on disk, and reconnect forever.
//!
//! While the control plane is away nothing changes on the request path: the last applied config
//! keeps serving, and after a restart the cached one does (see [`crate::cache`]).

use std::fmt::Write as _;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName};
use sluice_model::Snapshot;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use crate::cache::{load_cache, write_cache_frame};
use crate::control_plane::{send_frame, websocket_config};
use crate::message::{decode, encode, Message, EMPTY_CONFIG_HASH, VERSION};
use crate::{tls, ApplyError, ClusterError, TlsFiles};

/// Kong's ping period (`PING_INTERVAL`, 30 s).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);

/// Kong's cluster port, used when `--cluster-control-plane` names no port.
const DEFAULT_CLUSTER_PORT: u16 = 8005;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The control plane answers every ping; silence this long (at least 45 s, and at least three
/// ping periods) means the connection is dead even if TCP has not noticed.
const CP_SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// A full config is one frame; leave room for very large ones (the control plane is trusted:
/// it passed the certificate pin).
const MAX_FRAME_FROM_CONTROL_PLANE: usize = 512 << 20;

/// Frames above this are decoded on the blocking pool: inflating and parsing a big config is
/// CPU work that must not stall the async workers serving requests.
const BLOCKING_DECODE_BYTES: usize = 64 * 1024;

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a data plane finds and talks to its control plane.
#[derive(Debug, Clone)]
pub struct DataPlaneOptions {
    /// `--cluster-control-plane`, `host:port` (port 8005 when omitted).
    pub control_plane: String,
    /// `--cluster-cert` / `--cluster-cert-key`; `None` only behind the binary's explicit
    /// insecure flag.
    pub tls: Option<TlsFiles>,
    /// Where the last applied config is kept (under `--prefix`).
    pub cache_path: PathBuf,
    /// This node's stable id (Kong keeps it in `<prefix>/kong.id`).
    pub node_id: String,
    /// [`DEFAULT_PING_INTERVAL`] in production; tests use less.
    pub ping_interval: Duration,
    /// Set while a session with the control plane is up (for status and metrics).
    pub connected: Arc<std::sync::atomic::AtomicBool>,
}

/// The TLS half of a data plane: our certificate doubles as the pin for the control plane's.
#[derive(Clone)]
struct ClientTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    own_cert: CertificateDer<'static>,
}

/// One data plane node across reconnects.
struct DataPlane<F> {
    options: DataPlaneOptions,
    tls: Option<ClientTls>,
    hostname: String,
    apply: Arc<F>,
    /// The hash of the config being served; [`EMPTY_CONFIG_HASH`] before the first.
    config_hash: String,
    /// The config being served, kept so a `delta` can be applied to it.
    current: Option<Arc<Snapshot>>,
    /// Set once the control plane answered on the current connection: the next reconnect
    /// starts over from the shortest backoff.
    synced: bool,
}

/// Exponential backoff with ±20 % jitter, so data planes restarted together do not reconnect in
/// lockstep.
pub(crate) struct Backoff {
    next: Duration,
    rng: SplitMix64,
}

/// A tiny PRNG for jitter; quality beyond "not in lockstep" does not matter.
struct SplitMix64(u64);

/// Runs the data plane side until `shutdown` completes.
///
/// Before connecting, loads the config cache at `options.cache_path` and applies it (a corrupt
/// or rejected cache is logged and ignored), so a restarted node serves immediately. Then:
/// connect (TLS with SNI `kong_clustering`, presenting the shared certificate and requiring the
/// control plane's to be the same), send `basic_info`, and for each `reconfigure` call `apply`
/// (compile + swap; `Err(reason)` if the config does not compile) on the blocking pool; on
/// success write the cache and ping with the new hash. Pings every `options.ping_interval`. Any
/// disconnect is retried with backoff 1 s → 30 s (±20 %), one warning per failed attempt.
///
/// Returns `Err` only for a configuration that can never work (unreadable certificate files).
pub async fn run_data_plane<F>(
    options: DataPlaneOptions,
    apply: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClusterError>
where
    F: Fn(&Snapshot) -> Result<(), ApplyError> + Send + Sync + 'static,
{
    let tls = match &options.tls {
        Some(files) => Some(ClientTls::load(files)?),
        None => {
            tracing::warn!(
                "connecting to the control plane without TLS: the control plane is not \
                 authenticated and configs travel in the clear"
            );
            None
        }
    };
    let mut backoff = Backoff::new(jitter_seed(&options.node_id));
    let mut node = DataPlane {
        options,
        tls,
        hostname: local_hostname(),
        apply: Arc::new(apply),
        config_hash: EMPTY_CONFIG_HASH.to_owned(),
        current: None,
        synced: false,
    };

    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return Ok(()),
        () = node.load_cached() => {}
    }
    let mut failures: u32 = 0;
    loop {
        node.synced = false;
        let outcome = tokio::select! {
            () = &mut shutdown => return Ok(()),
            outcome = node.connect_once() => outcome,
        };
        node.options
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if node.synced {
            backoff.reset();
            failures = 0;
        }
        let delay = backoff.next_delay();
        let control_plane = &node.options.control_plane;
        match outcome {
            Ok(()) => tracing::info!(
                %control_plane,
                retry_in = ?delay,
                "the control plane closed the connection; reconnecting"
            ),
            Err(ClusterError::Refused(reason)) => {
                failures += 1;
                tracing::error!(
                    %control_plane,
                    attempt = failures,
                    retry_in = ?delay,
                    %reason,
                    "the control plane refused this data plane"
                );
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(
                    %control_plane,
                    attempt = failures,
                    retry_in = ?delay,
                    %error,
                    "connection to the control plane failed; the current config keeps serving"
                );
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Decodes a frame, on the blocking pool when it is large.
async fn decode_frame(frame: Bytes) -> Result<Message, ClusterError> {
    if frame.len() < BLOCKING_DECODE_BYTES {
        return decode(&frame);
    }
    tokio::task::spawn_blocking(move || decode(&frame))
        .await
        .map_err(|error| ClusterError::Decode(format!("the decode task failed: {error}")))?
}

/// `host:port` with Kong's cluster port added when missing (IPv6 literals bracketed).
fn with_default_port(address: &str) -> String {
    if address.starts_with('[') {
        return if address.contains("]:") {
            address.to_owned()
        } else {
            format!("{address}:{DEFAULT_CLUSTER_PORT}")
        };
    }
    match address.matches(':').count() {
        0 => format!("{address}:{DEFAULT_CLUSTER_PORT}"),
        1 => address.to_owned(),
        _ => format!("[{address}]:{DEFAULT_CLUSTER_PORT}"),
    }
}

/// Kong's outlet URL. The query repeats `basic_info` so the control plane's access logs name
/// the node.
fn outlet_url(tls: bool, address: &str, node_id: &str, hostname: &str) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    format!(
        "{scheme}://{address}/v1/outlet?node_id={}&node_hostname={}&node_version={}",
        query_escape(node_id),
        query_escape(hostname),
        query_escape(VERSION)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            escaped.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    escaped
}

/// The kernel's hostname (what Kong reports), without a crate for it.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Different for every node and every start, so jitter actually spreads reconnects.
fn jitter_seed(node_id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    node_id.hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0)
        .hash(&mut hasher);
    hasher.finish()
}

// === impl ClientTls ===

impl ClientTls {
    fn load(files: &TlsFiles) -> Result<Self, ClusterError> {
        let loaded = tls::load(files)?;
        Ok(ClientTls {
            connector: TlsConnector::from(tls::client_config(&loaded)?),
            server_name: tls::server_name()?,
            own_cert: loaded.certs[0].clone(),
        })
    }
}

// === impl DataPlane ===

impl<F> DataPlane<F>
where
    F: Fn(&Snapshot) -> Result<(), ApplyError> + Send + Sync + 'static,
{
    /// Applies the cached config, if any, before the control plane is reached.
    async fn load_cached(&mut self) {
        let path = self.options.cache_path.clone();
        let apply = Arc::clone(&self.apply);
        let loaded = tokio::task::spawn_blocking(
            move || -> Result<Option<(Arc<Snapshot>, String)>, ClusterError> {
                let Some((snapshot, config_hash)) = load_cache(&path)? else {
                    return Ok(None);
                };
                (*apply)(&snapshot).map_err(ClusterError::Rejected)?;
                Ok(Some((Arc::new(snapshot), config_hash)))
            },
        )
        .await;
        let path = self.options.cache_path.display();
        match loaded {
            Ok(Ok(Some((snapshot, config_hash)))) => {
                tracing::info!(
                    %path,
                    version = snapshot.version,
                    %config_hash,
                    "found a cached config; serving it until the control plane answers"
                );
                self.config_hash = config_hash;
                self.current = Some(snapshot);
            }
            Ok(Ok(None)) => tracing::debug!(%path, "no cached config"),
            Ok(Err(error)) => tracing::warn!(%path, %error, "ignoring the cached config"),
            Err(error) => tracing::error!(%path, %error, "loading the cached config failed"),
        }
    }

    /// One connection, from TCP connect to its end. `Ok` when the control plane closed it.
    async fn connect_once(&mut self) -> Result<(), ClusterError> {
        let address = with_default_port(&self.options.control_plane);
        let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(address.as_str()))
            .await
            .map_err(|_| ClusterError::Timeout("connecting to the control plane"))?
            .map_err(|error| ClusterError::io(format!("connecting to {address}"), error))?;
        // Pings are tiny; don't let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let url = outlet_url(
            self.tls.is_some(),
            &address,
            &self.options.node_id,
            &self.hostname,
        );
        let Some(tls) = self.tls.clone() else {
            return self.converse(tcp, &url).await;
        };
        let stream = timeout(
            HANDSHAKE_TIMEOUT,
            tls.connector.connect(tls.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ClusterError::Timeout("in the cluster TLS handshake"))?
        .map_err(|error| ClusterError::io("cluster TLS handshake", error))?;
        // The pin (see `tls::SignatureOnlyServerCert`): checked before we send a single byte.
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first());
        if presented != Some(&tls.own_cert) {
            return Err(ClusterError::Protocol(
                "the control plane presented a certificate other than --cluster-cert; \
                 both sides must use the same certificate"
                    .to_owned(),
            ));
        }
        self.converse(stream, &url).await
    }

    /// The protocol over an established (TLS or plain) stream.
    async fn converse<S>(&mut self, stream: S, url: &str) -> Result<(), ClusterError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let config = websocket_config(MAX_FRAME_FROM_CONTROL_PLANE);
        let (mut ws, _response) = timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)),
        )
        .await
        .map_err(|_| ClusterError::Timeout("waiting for the websocket handshake"))?
        .map_err(ClusterError::websocket)?;
        let basic_info = encode(&Message::BasicInfo {
            node_id: self.options.node_id.clone(),
            hostname: self.hostname.clone(),
            version: VERSION.to_owned(),
            // The binary does not hand its plugin registry over yet; the control plane only
            // logs the count.
            plugins: Vec::new(),
        })?;
        send_frame(&mut ws, Bytes::from(basic_info)).await?;
        self.options
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            control_plane = %self.options.control_plane,
            "connected to the control plane"
        );

        // `interval` panics on a zero period.
        let ping_interval = self.options.ping_interval.max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(ping_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let silence_limit = (ping_interval * 3).max(CP_SILENCE_LIMIT);
        let mut deadline = Instant::now() + silence_limit;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.ping(&mut ws).await?,
                incoming = ws.next() => {
                    let frame = match incoming {
                        None | Some(Ok(Frame::Close(_))) => return Ok(()),
                        Some(Err(error)) => return Err(ClusterError::websocket(error)),
                        Some(Ok(Frame::Binary(frame))) => frame,
                        Some(Ok(_)) => {
                            deadline = Instant::now() + silence_limit;
                            continue;
                        }
                    };
                    match decode_frame(frame.clone()).await? {
                        Message::Reconfigure {
                            version,
                            config_hash,
                            snapshot,
                        } => {
                            self.synced = true;
                            self.reconfigure(frame, version, config_hash, snapshot).await;
                            // Report the new hash now rather than at the next tick.
                            self.ping(&mut ws).await?;
                        }
                        Message::Delta {
                            version,
                            base_hash,
                            config_hash,
                            changes,
                        } => {
                            self.synced = true;
                            let Some(base) = self.current.clone().filter(|_| base_hash == self.config_hash) else {
                                // Not the base we serve: reconnect, which brings a full push.
                                return Err(ClusterError::Protocol(
                                    "received a delta for a config this node does not serve".to_owned(),
                                ));
                            };
                            tracing::info!(version, changes = changes.len(), "applying a delta from the control plane");
                            let patched = changes.apply(&base, version);
                            if crate::message::config_hash(&patched) != config_hash {
                                return Err(ClusterError::Protocol(
                                    "a delta did not produce the announced config; asking for a full push".to_owned(),
                                ));
                            }
                            let frame = match crate::message::encode_reconfigure(&patched, &config_hash) {
                                Ok(frame) => Bytes::from(frame),
                                Err(error) => return Err(error),
                            };
                            self.reconfigure(frame, version, config_hash, patched).await;
                            self.ping(&mut ws).await?;
                        }
                        Message::Pong => self.synced = true,
                        Message::Refused { reason } => return Err(ClusterError::Refused(reason)),
                        other => tracing::debug!(
                            message = other.kind(),
                            "ignoring an unexpected message from the control plane"
                        ),
                    }
                    // After the work: applying a large config can outlast the silence limit.
                    deadline = Instant::now() + silence_limit;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ClusterError::Timeout("waiting for the silent control plane"));
                }
            }
        }
    }

    /// Applies one pushed config (off the async workers) and caches it once it compiled. A
    /// rejected config is logged and the previous one keeps serving.
    async fn reconfigure(
        &mut self,
        frame: Bytes,
        version: u64,
        config_hash: String,
        snapshot: Snapshot,
    ) {
        if config_hash == self.config_hash {
            tracing::debug!(version, %config_hash, "same config as the one serving; nothing to apply");
            return;
        }
        let apply = Arc::clone(&self.apply);
        let cache_path = self.options.cache_path.clone();
        // Outer error: the config was rejected; inner: it applied but caching it failed.
        let applied = tokio::task::spawn_blocking(
            move || -> Result<(Result<(), ClusterError>, Snapshot), ApplyError> {
                (*apply)(&snapshot)?;
                // The frame is the cache body as is: no second encode of a large config.
                Ok((write_cache_frame(&cache_path, &frame), snapshot))
            },
        )
        .await;
        match applied {
            Ok(Ok((cached, snapshot))) => {
                self.current = Some(Arc::new(snapshot));
                tracing::info!(version, %config_hash, "applied the config from the control plane");
                if let Err(error) = cached {
                    tracing::warn!(
                        %error,
                        "writing the config cache failed; after a restart this node waits for \
                         the control plane"
                    );
                }
                self.config_hash = config_hash;
            }
            Ok(Err(reason)) => tracing::error!(
                version,
                %config_hash,
                %reason,
                "the config from the control plane was rejected; the previous config keeps serving"
            ),
            Err(error) => tracing::error!(
                version,
                %error,
                "the config apply task failed; the previous config keeps serving"
            ),
        }
    }

    async fn ping<S>(&self, ws: &mut WebSocketStream<S>) -> Result<(), ClusterError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ping = encode(&Message::Ping {
            config_hash: self.config_hash.clone(),
        })?;
        send_frame(ws, Bytes::from(ping)).await
    }
}

// === impl Backoff ===

impl Backoff {
    pub(crate) fn new(seed: u64) -> Self {
        Backoff {
            next: BACKOFF_FIRST,
            rng: SplitMix64(seed),
        }
    }

    /// The wait before the next attempt: 1 s, 2 s, 4 s, … capped at 30 s, each ±20 %.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        base.mul_f64(0.8 + 0.4 * self.rng.next_unit())
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

// === impl SplitMix64 ===

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits as an f64 mantissa.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
