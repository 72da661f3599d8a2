//! The AI gateway: the `ai-proxy` plugin.
//!
//! One route in front of OpenAI, xAI (Grok) or any OpenAI-compatible endpoint
//! (`model.options.upstream_url`): the provider key is injected by the gateway, the model is
//! enforced, streaming is passed through event by event, and token usage is accounted.
//!
//! - [`handler`]: Kong's request flow and response handling.
//! - [`providers`]: one [`providers::Driver`] per provider (paths, field rules, error shape).
//! - [`sse`]: incremental, zero-copy SSE framing.

pub mod advanced;
pub mod config;
pub mod error;
pub mod handler;
pub mod providers;
pub mod route_type;
pub mod sse;
pub mod wire;

use std::sync::Arc;

use sluice_plugin::Registry;

/// Registers `ai-proxy` and `ai-proxy-advanced`; `balancers` is the process's, whose state
/// [`advanced::Factory::status`] reports.
pub fn register(registry: &mut Registry, balancers: Arc<advanced::Factory>) {
    registry.register(Arc::new(handler::Factory));
    registry.register(balancers);
}
