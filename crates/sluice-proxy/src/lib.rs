//! The data plane.
//!
//! - [`compile`]: a config [`Snapshot`](sluice_model::Snapshot) becomes a [`Compiled`]: the
//!   router, and per route its service target, upstream client and plugin chain. Every
//!   fallible step happens here, off the request path.
//! - [`Live`]: the only holder of the `ArcSwap<Compiled>`. A swap is one infallible
//!   `ArcSwap::store`; requests in flight finish on the snapshot they loaded.
//! - `listener`: the hyper listener (HTTP/1.1 and HTTP/2), one single-threaded runtime per
//!   core, each with its own upstream pools.
//! - `session`: the pipeline of one request, a method per phase (route, access, upstream,
//!   response headers, body, log) and one `finish` path.
//! - `headers`: forwarded headers, hop-by-hop stripping, path re-encoding.
//! - `forward`: sending upstream (retries, timeouts); `response_body`: the streamed body and
//!   the log phase.
//!
//! **Architecture Invariant:** nothing on the request path parses config or can fail to
//! compile; it only reads the `Compiled` it loaded once at the start of the request.

mod access_log;
pub mod compile;
mod forward;
mod headers;
mod listener;
pub mod request_body;
mod request_id;
mod response_body;
mod session;
mod slow_client;
mod upstream;
mod websocket;

use std::sync::Arc;

use arc_swap::ArcSwap;
use sluice_model::Snapshot;
use sluice_plugin::Registry;

pub use access_log::{AccessLog, AccessLogTarget};
pub use compile::{CompileError, Compiled, EntityFault, WriteCheck};
pub use listener::{serve, ProxyConfig};
pub use upstream::Clients;

/// The live config of a data plane. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    current: Arc<ArcSwap<Compiled>>,
    registry: Arc<Registry>,
}

// === impl Live ===

impl Live {
    /// Starts with an empty config (every request gets Kong's 404) until the first swap.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Compiled::empty())),
            registry,
        }
    }

    /// Compiles `snapshot` and, only if that succeeds, makes it the live config. On failure
    /// the previous config keeps serving and the error says why. An entity that does not
    /// compile does not fail the config: it is left out (see [`EntityFault`]) and listed in
    /// the result, and the rest is served.
    pub fn apply(&self, snapshot: &Snapshot) -> Result<Vec<EntityFault>, CompileError> {
        let compiled = compile::compile(snapshot, &self.registry)?;
        let faults = compiled.faults.clone();
        self.current.store(Arc::new(compiled));
        Ok(faults)
    }

    /// The config version being served.
    pub fn version(&self) -> u64 {
        self.current.load().version
    }

    /// The entities of the served config that did not compile (empty when it is clean).
    pub fn faults(&self) -> Vec<EntityFault> {
        self.current.load().faults.clone()
    }

    /// The write-time check matching what [`Live::apply`] compiles.
    pub fn write_check(&self) -> WriteCheck {
        WriteCheck::new(self.registry.clone())
    }

    /// The number of routes being served.
    pub fn routes(&self) -> usize {
        self.current.load().router.len()
    }

    pub(crate) fn load(&self) -> Arc<Compiled> {
        self.current.load_full()
    }
}
