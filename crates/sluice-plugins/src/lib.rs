//! Built-in plugins. Each module is one plugin: a typed config (deserialized once, when a
//! snapshot compiles), a factory, and a handler implementing the phases it needs.

pub mod acl;
pub mod ai_rate_limiting;
mod auth;
pub mod basic_auth;
pub mod cors;
pub mod file_log;
pub mod http_log;
pub mod key_auth;
mod log_capture;
pub mod prometheus;
pub mod rate_limiting;
pub mod redis_counters;
pub mod request_transformer;

use std::sync::Arc;

use sluice_plugin::Registry;

/// Registers every built-in plugin. `metrics` is the process's, which `prometheus` records
/// into.
pub fn register_all(registry: &mut Registry, metrics: Arc<sluice_metrics::Metrics>) {
    registry.register(Arc::new(prometheus::Factory::new(metrics.clone())));
    registry.register(Arc::new(file_log::Factory::new(metrics.clone())));
    registry.register(Arc::new(http_log::Factory::new(metrics)));
    registry.register(Arc::new(rate_limiting::Factory::default()));
    registry.register(Arc::new(ai_rate_limiting::Factory::default()));
    registry.register(Arc::new(key_auth::Factory));
    registry.register(Arc::new(basic_auth::Factory));
    registry.register(Arc::new(acl::Factory));
    registry.register(Arc::new(cors::Factory));
    registry.register(Arc::new(request_transformer::Factory));
}
