//! The plugins this binary runs, and the schemas that check writes against them.

use std::sync::Arc;

use sluice_metrics::Metrics;
use sluice_model::{SchemaLoadError, Schemas};
use sluice_plugin::Registry;
use sluice_proxy::WriteCheck;

/// Every plugin this build can run on its data plane; `prometheus` records into `metrics`,
/// `ai-proxy-advanced` keeps its targets' state in `balancers`.
pub fn registry(metrics: Arc<Metrics>, balancers: Arc<sluice_ai::advanced::Factory>) -> Registry {
    let mut registry = Registry::default();
    sluice_plugins::register_all(&mut registry, metrics);
    sluice_ai::register(&mut registry, balancers);
    registry
}

/// The embedded schemas with the data plane's compile checks installed, so that every write
/// path (Admin API, sync, DB-less, `sluice validate`) refuses what the proxy would not compile.
pub fn schemas(registry: Arc<Registry>) -> Result<Schemas, SchemaLoadError> {
    Ok(Schemas::embedded()?.with_compile_check(Arc::new(WriteCheck::new(registry))))
}

/// A registry for checking files offline (`sluice validate`, `diff`): nothing records.
pub fn offline_registry() -> Registry {
    registry(
        Arc::new(Metrics::new("offline", env!("CARGO_PKG_VERSION"))),
        Arc::default(),
    )
}
