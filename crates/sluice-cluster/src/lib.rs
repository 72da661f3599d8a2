//! Hybrid mode: how a control plane (CP) hands its config to remote data planes (DPs), and how
//! a data plane keeps serving its last good config when the control plane is away.
//!
//! The shape follows Kong's protocol v1 (`kong-core.md` §5): the DP dials the CP's cluster
//! listener (`wss://cp:8005/v1/outlet?node_id=…`) over mTLS in Kong's `shared` mode (both sides
//! hold the same certificate, SNI `kong_clustering`), introduces itself with `basic_info`, and the
//! CP pushes the full config on connect. On every change after that, a DP known to serve the
//! previous config gets only a `delta` (what changed), and any other DP the full config
//! again (see [`message`]). The DP pings every 30 s with the
//! hash of the config it runs; the CP answers and records it for `GET /clustering/data-planes`.
//! It is not wire-compatible with Kong's nodes: the frames carry Sluice's own [`Snapshot`].
//!
//! # Layout
//! - [`message`]: the frames (gzip JSON in binary websocket frames), the config hash, the
//!   version compatibility rule.
//! - [`tls`]: `sluice cluster gen-cert`, loading the PEM files, the pinned-certificate verifiers.
//! - [`control_plane`]: the CP's listener, one task per DP, the [`Registry`] of data planes.
//! - [`data_plane`]: the DP's reconnect loop; applies each config through a callback.
//! - [`cache`]: the DP's on-disk copy of its last applied config (atomic write, checksummed).
//!
//! **Architecture Invariant:** this crate depends on `sluice-model` only. It never compiles or
//! swaps a config: the binary passes `apply` (compile + `ArcSwap::store`) to the data plane and
//! feeds the control plane a `watch` channel of snapshots read from the store.
//!
//! **Architecture Invariant:** a data plane writes its cache only after `apply` accepted the
//! config, so the cache always holds a config that compiled.
//!
//! **API boundary:** [`serve_control_plane`], [`run_data_plane`], [`gen_cert`], [`Registry`],
//! [`load_cache`] / [`write_cache`], [`encode`] / [`decode`].
//!
//! [`Snapshot`]: sluice_model::Snapshot

use std::io;
use std::path::PathBuf;

pub mod cache;
pub mod control_plane;
pub mod data_plane;
pub mod message;
pub mod tls;

pub use cache::{load_cache, write_cache};

/// Why a data plane could not apply a pushed config (from the binary's apply callback).
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;
pub use control_plane::{serve_control_plane, DataPlaneStatus, Registry, DP_SILENCE_LIMIT};
pub use data_plane::{run_data_plane, DataPlaneOptions, DEFAULT_PING_INTERVAL};
pub use message::{
    check_version_compat, config_hash, decode, encode, IncompatibleVersion, Message,
    EMPTY_CONFIG_HASH, VERSION,
};
pub use tls::{gen_cert, TlsFiles, SERVER_NAME};

/// Everything that can go wrong in hybrid mode. Connection-level failures are logged and retried
/// by the loops themselves; the public functions return the ones a caller must act on (unreadable
/// certificate files, a listener error, an unwritable cache).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{} already exists; remove it first to generate a new certificate", .0.display())]
    CertExists(PathBuf),
    #[error("generating the cluster certificate: {0}")]
    CertGen(#[from] rcgen::Error),
    #[error("reading {}: {}", .path.display(), .reason)]
    Pem { path: PathBuf, reason: String },
    #[error("cluster TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("encoding a cluster message: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("malformed cluster message: {0}")]
    Decode(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Boxed: tungstenite's error is large and would bloat every `Result` in the crate.
    #[error("websocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("connection closed by the peer")]
    Closed,
    #[error("{0}")]
    Protocol(String),
    #[error("refused by the control plane: {0}")]
    Refused(String),
    #[error("config rejected by the data plane: {0}")]
    Rejected(#[source] ApplyError),
}

/// A cache file that exists but cannot be trusted. The data plane logs it and starts empty
/// (waiting for the control plane) rather than serving half a config.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("corrupt config cache: {0}")]
    Corrupt(String),
}

// === impl ClusterError ===

impl ClusterError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ClusterError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn websocket(error: tokio_tungstenite::tungstenite::Error) -> Self {
        ClusterError::WebSocket(Box::new(error))
    }
}

#[cfg(test)]
mod tests;
