//! The control plane's cluster listener (`--cluster-listen`, port 8005).
//!
//! One task encodes each new snapshot once (hash + gzip, off the async workers) and publishes
//! the frame on a `watch` channel; one task per data plane sends it on. Every data plane thus
//! shares the same `Bytes`, and a burst of changes while a data plane is slow collapses into the
//! newest config (the `watch` keeps only the latest), which is all a data plane needs.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use sluice_model::Snapshot;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use crate::message::{
    check_version_compat, config_hash, decode_limited, encode, encode_reconfigure, Message,
    EMPTY_CONFIG_HASH, VERSION,
};
use crate::{tls, ClusterError, TlsFiles};

/// A data plane that sent nothing for this long is disconnected (Kong: 45 s, 1.5 ping periods).
pub const DP_SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// Bound on the TLS and websocket handshakes and on the wait for `basic_info`, so a peer that
/// connects and says nothing does not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A data plane that does not take a frame for this long is as good as silent.
const SEND_TIMEOUT: Duration = DP_SILENCE_LIMIT;

/// Data planes only send `basic_info` and pings: small frames.
const MAX_FRAME_FROM_DATA_PLANE: usize = 1 << 20;
const MAX_DECODED_FROM_DATA_PLANE: usize = 16 << 20;

/// Kong's `cluster_data_plane_purge_delay` default (14 days): how long a data plane that went
/// away stays listed.
const PURGE_AFTER_SECS: i64 = 14 * 24 * 3600;

/// `sync_status` values, Kong's names.
const SYNC_NORMAL: &str = "normal";
const SYNC_VERSION_INCOMPATIBLE: &str = "kong_version_incompatible";

/// One data plane as `GET /clustering/data-planes` shows it (Kong's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataPlaneStatus {
    /// The data plane's `node_id`.
    pub id: String,
    pub hostname: String,
    /// The address it connected from.
    pub ip: String,
    pub version: String,
    /// The hash of the config it reported running in its last ping.
    pub config_hash: String,
    /// Epoch seconds of its last ping (or of its connection).
    pub last_seen: i64,
    /// `"normal"` or `"kong_version_incompatible"`.
    pub sync_status: String,
}

/// The data planes this control plane has seen, by node id. Cheap to clone; the Admin API reads
/// it while the listener writes it.
///
/// A `std` mutex, not Tokio's: it is held only to copy or update a map entry, never across an
/// `.await`.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    nodes: Arc<Mutex<HashMap<String, DataPlaneStatus>>>,
    /// Connections refused at the TLS handshake (wrong or missing certificate, timeout):
    /// they never reach the registry as nodes, but an operator (and a test) can see them.
    refused_handshakes: Arc<std::sync::atomic::AtomicU64>,
}

/// A snapshot encoded once for all data planes.
struct Encoded {
    version: u64,
    config_hash: String,
    frame: Bytes,
    /// The change from the previous config as a `delta` frame, with that config's hash: what a
    /// data plane serving exactly that config receives instead of `frame`.
    delta: Option<(String, Bytes)>,
}

/// What a connection task needs besides its socket.
#[derive(Clone)]
struct Shared {
    encoded: watch::Receiver<Option<Arc<Encoded>>>,
    registry: Registry,
}

/// Serves data planes on `listener` until `shutdown` completes; then closes every data plane
/// connection and returns.
///
/// `snapshots` always holds the newest config (the binary feeds it from the store); each new
/// value is pushed to every connected data plane, whole. `tls: None` serves plain websockets
/// (only for an explicit "insecure" flag of the binary: configs carry credentials).
///
/// Per data plane: the TLS handshake requires the client certificate to be byte-identical to
/// ours (else Kong's `data plane presented incorrect client certificate during handshake` is
/// logged with the peer address); the first frame must be `basic_info`; an incompatible version
/// gets `refused` (recorded as `kong_version_incompatible`) and is closed; then the current
/// config goes out, and again on every change; each `ping` is answered with `pong` and
/// recorded in `registry`; a data plane silent for [`DP_SILENCE_LIMIT`] is dropped.
pub async fn serve_control_plane(
    listener: TcpListener,
    tls: Option<TlsFiles>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClusterError> {
    let acceptor = match &tls {
        Some(files) => {
            let loaded = tls::load(files)?;
            Some(TlsAcceptor::from(tls::server_config(&loaded)?))
        }
        None => {
            tracing::warn!(
                "the cluster listener runs without TLS: data planes are not authenticated and \
                 configs travel in the clear"
            );
            None
        }
    };
    let (encoded_tx, encoded_rx) = watch::channel(None);
    let encoder = tokio::spawn(encode_snapshots(snapshots, encoded_tx));
    let shared = Shared {
        encoded: encoded_rx,
        registry,
    };

    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(handle_connection(
                        stream,
                        peer,
                        acceptor.clone(),
                        shared.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a cluster connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connection tasks so the set does not grow with every reconnect.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    encoder.abort();
    Ok(())
}

/// Encodes every new snapshot once, off the async workers, and publishes the frame. A config
/// whose content did not change (same hash) is not republished.
async fn encode_snapshots(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    encoded: watch::Sender<Option<Arc<Encoded>>>,
) {
    let mut last_hash: Option<String> = None;
    let mut previous: Option<(Arc<Snapshot>, String)> = None;
    loop {
        let snapshot: Arc<Snapshot> = snapshots.borrow_and_update().clone();
        let version = snapshot.version;
        let base = previous.clone();
        let current = Arc::clone(&snapshot);
        let result = tokio::task::spawn_blocking(move || -> Result<Encoded, ClusterError> {
            let config_hash = config_hash(&snapshot);
            let frame = encode_reconfigure(&snapshot, &config_hash)?;
            let delta = match base {
                Some((old, base_hash)) if base_hash != config_hash => {
                    let changes = crate::message::DeltaChanges::between(&old, &snapshot);
                    let delta = encode(&Message::Delta {
                        version: snapshot.version,
                        base_hash: base_hash.clone(),
                        config_hash: config_hash.clone(),
                        changes,
                    })?;
                    // Only worth it when smaller than the whole config.
                    (delta.len() < frame.len()).then(|| (base_hash, Bytes::from(delta)))
                }
                _ => None,
            };
            Ok(Encoded {
                version: snapshot.version,
                config_hash,
                frame: Bytes::from(frame),
                delta,
            })
        })
        .await;
        if let Ok(Ok(next)) = &result {
            previous = Some((current, next.config_hash.clone()));
        }
        match result {
            Ok(Ok(next)) if last_hash.as_deref() == Some(next.config_hash.as_str()) => {
                tracing::debug!(version, "config content unchanged; data planes keep theirs");
            }
            Ok(Ok(next)) => {
                tracing::debug!(
                    version = next.version,
                    config_hash = %next.config_hash,
                    bytes = next.frame.len(),
                    "config encoded for data planes"
                );
                last_hash = Some(next.config_hash.clone());
                encoded.send_replace(Some(Arc::new(next)));
            }
            Ok(Err(error)) => tracing::error!(
                version,
                %error,
                "encoding the config for data planes failed; they keep the previous one"
            ),
            Err(error) => tracing::error!(version, %error, "the config encoding task failed"),
        }
        if snapshots.changed().await.is_err() {
            return; // the feed closed: the process is shutting down
        }
    }
}

/// One data plane connection, from TCP accept to close. Logs its own failures.
async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    shared: Shared,
) {
    // Pings and pongs are tiny; don't let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let result = match acceptor {
        Some(acceptor) => match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => serve_data_plane(stream, peer, shared).await,
            Ok(Err(error)) => {
                log_handshake_failure(peer, &error);
                shared.registry.refused_handshake();
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "cluster TLS handshake timed out");
                shared.registry.refused_handshake();
                return;
            }
        },
        None => serve_data_plane(stream, peer, shared).await,
    };
    if let Err(error) = result {
        tracing::warn!(%peer, %error, "data plane connection ended with an error");
    }
}

/// Tells a certificate mismatch (Kong's message) from other handshake failures.
fn log_handshake_failure(peer: SocketAddr, error: &io::Error) {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::InvalidCertificate(_)) => tracing::warn!(
            %peer,
            "data plane presented incorrect client certificate during handshake"
        ),
        Some(rustls::Error::NoCertificatesPresented) => tracing::warn!(
            %peer,
            "data plane presented no client certificate during handshake"
        ),
        _ => tracing::warn!(%peer, %error, "cluster TLS handshake failed"),
    }
}

/// The protocol over an established (TLS or plain) stream.
async fn serve_data_plane<S>(
    stream: S,
    peer: SocketAddr,
    shared: Shared,
) -> Result<(), ClusterError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Shared {
        mut encoded,
        registry,
    } = shared;
    let config = websocket_config(MAX_FRAME_FROM_DATA_PLANE);
    let mut ws = timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_async_with_config(stream, Some(config)),
    )
    .await
    .map_err(|_| ClusterError::Timeout("waiting for the websocket handshake"))?
    .map_err(ClusterError::websocket)?;

    let first = timeout(HANDSHAKE_TIMEOUT, next_message(&mut ws))
        .await
        .map_err(|_| ClusterError::Timeout("waiting for basic_info"))??;
    let (node_id, hostname, version, plugins) = match first {
        Message::BasicInfo {
            node_id,
            hostname,
            version,
            plugins,
        } => (node_id, hostname, version, plugins),
        other => {
            return Err(ClusterError::Protocol(format!(
                "expected basic_info as the first message, got {}",
                other.kind()
            )))
        }
    };

    let mut status = DataPlaneStatus {
        id: node_id.clone(),
        hostname,
        ip: peer.ip().to_string(),
        version,
        config_hash: EMPTY_CONFIG_HASH.to_owned(),
        last_seen: epoch_seconds(),
        sync_status: SYNC_NORMAL.to_owned(),
    };
    if let Err(incompatible) = check_version_compat(VERSION, &status.version) {
        tracing::warn!(%peer, %node_id, reason = %incompatible, "refusing a data plane");
        status.sync_status = SYNC_VERSION_INCOMPATIBLE.to_owned();
        registry.upsert(status);
        let refused = encode(&Message::Refused {
            reason: incompatible.to_string(),
        })?;
        // Best effort: the data plane learns why, then the connection ends either way.
        let _ = send_frame(&mut ws, Bytes::from(refused)).await;
        let _ = timeout(Duration::from_secs(5), SinkExt::close(&mut ws)).await;
        return Ok(());
    }
    tracing::info!(
        %peer,
        %node_id,
        hostname = %status.hostname,
        version = %status.version,
        plugins = plugins.len(),
        "data plane connected"
    );
    registry.upsert(status);

    let pong = Bytes::from(encode(&Message::Pong)?);
    // Kong pushes the full config on connect, whatever the data plane already has.
    let current = encoded.borrow_and_update().clone();
    // The hash of the config this data plane was last sent: it decides delta or full.
    let mut sent_hash = String::new();
    if let Some(current) = current {
        send_config(&mut ws, &current, &node_id, &sent_hash).await?;
        sent_hash.clone_from(&current.config_hash);
    }
    let mut feed_open = true;
    let mut deadline = Instant::now() + DP_SILENCE_LIMIT;
    loop {
        tokio::select! {
            changed = encoded.changed(), if feed_open => {
                if changed.is_err() {
                    // The encoder stopped (shutdown); keep answering pings until we are aborted.
                    feed_open = false;
                } else {
                    let next = encoded.borrow_and_update().clone();
                    if let Some(next) = next {
                        send_config(&mut ws, &next, &node_id, &sent_hash).await?;
                        sent_hash.clone_from(&next.config_hash);
                    }
                }
            }
            incoming = ws.next() => match incoming {
                None | Some(Ok(Frame::Close(_))) => {
                    tracing::info!(%peer, %node_id, "data plane disconnected");
                    return Ok(());
                }
                Some(Err(error)) => return Err(ClusterError::websocket(error)),
                Some(Ok(Frame::Binary(data))) => {
                    deadline = Instant::now() + DP_SILENCE_LIMIT;
                    match decode_limited(&data, MAX_DECODED_FROM_DATA_PLANE)? {
                        Message::Ping { config_hash } => {
                            registry.seen(&node_id, config_hash);
                            send_frame(&mut ws, pong.clone()).await?;
                        }
                        other => tracing::debug!(
                            %peer,
                            %node_id,
                            message = other.kind(),
                            "ignoring an unexpected message from a data plane"
                        ),
                    }
                }
                // Websocket-level pings (answered by tungstenite) still show the peer is alive.
                Some(Ok(_)) => deadline = Instant::now() + DP_SILENCE_LIMIT,
            },
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    %peer,
                    %node_id,
                    "data plane silent for {} s; closing its connection",
                    DP_SILENCE_LIMIT.as_secs()
                );
                return Ok(());
            }
        }
    }
}

/// The next protocol message, skipping websocket control frames.
async fn next_message<S>(ws: &mut WebSocketStream<S>) -> Result<Message, ClusterError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Frame::Binary(data))) => {
                return decode_limited(&data, MAX_DECODED_FROM_DATA_PLANE)
            }
            Some(Ok(Frame::Close(_))) | None => return Err(ClusterError::Closed),
            Some(Ok(Frame::Text(_))) => {
                return Err(ClusterError::Protocol(
                    "text frames are not part of the protocol".to_owned(),
                ))
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(ClusterError::websocket(error)),
        }
    }
}

async fn send_config<S>(
    ws: &mut WebSocketStream<S>,
    encoded: &Encoded,
    node_id: &str,
    sent_hash: &str,
) -> Result<(), ClusterError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = match &encoded.delta {
        Some((base, delta)) if base == sent_hash => delta.clone(),
        _ => encoded.frame.clone(),
    };
    tracing::debug!(%node_id, bytes = frame.len(), delta = frame.len() != encoded.frame.len(), "config push");
    send_frame(ws, frame).await?;
    tracing::debug!(
        %node_id,
        version = encoded.version,
        config_hash = %encoded.config_hash,
        bytes = encoded.frame.len(),
        "config sent to a data plane"
    );
    Ok(())
}

/// Sends one binary frame, bounded by [`SEND_TIMEOUT`].
pub(crate) async fn send_frame<S>(
    ws: &mut WebSocketStream<S>,
    frame: Bytes,
) -> Result<(), ClusterError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout(SEND_TIMEOUT, ws.send(Frame::binary(frame))).await {
        Ok(sent) => sent.map_err(ClusterError::websocket),
        Err(_) => Err(ClusterError::Timeout("sending to the peer")),
    }
}

/// Frame limits: both, because tungstenite sends a message as one frame, so a large config is
/// one large frame.
// `WebSocketConfig` is `#[non_exhaustive]`: no struct literal is possible.
#[allow(clippy::field_reassign_with_default)]
pub(crate) fn websocket_config(max_bytes: usize) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(max_bytes);
    config.max_frame_size = Some(max_bytes);
    config
}

fn epoch_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// === impl Registry ===

impl Registry {
    /// Every data plane seen in the last 14 days, by id.
    pub fn list(&self) -> Vec<DataPlaneStatus> {
        let mut nodes: Vec<DataPlaneStatus> = self.lock().values().cloned().collect();
        nodes.sort_unstable_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        nodes
    }

    /// Records a data plane that just connected (or was refused), forgetting ones gone for
    /// longer than Kong's purge delay.
    fn upsert(&self, status: DataPlaneStatus) {
        let cutoff = status.last_seen - PURGE_AFTER_SECS;
        let mut nodes = self.lock();
        nodes.retain(|_, node| node.last_seen >= cutoff);
        nodes.insert(status.id.clone(), status);
    }

    /// How many connections were refused at the TLS handshake since the listener started.
    pub fn refused_handshakes(&self) -> u64 {
        self.refused_handshakes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn refused_handshake(&self) {
        self.refused_handshakes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records a ping.
    fn seen(&self, node_id: &str, config_hash: String) {
        if let Some(node) = self.lock().get_mut(node_id) {
            node.last_seen = epoch_seconds();
            node.config_hash = config_hash;
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, DataPlaneStatus>> {
        // A panic while holding the lock leaves a consistent map (every update is one
        // assignment), so a poisoned lock is still usable.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
