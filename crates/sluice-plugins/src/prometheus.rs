//! `prometheus` (Kong 3.10, priority 13): records each request it runs on into the process's
//! [`Metrics`], which the Admin API and the status listener expose at `GET /metrics`.
//!
//! As in Kong, only requests a prometheus instance runs on are counted (a global instance
//! counts every routed request), and the instance that ran decides which families are
//! recorded. The counters live in the long-lived factory's `Metrics`, never in a compiled
//! config, so a reload does not reset them.

use std::sync::Arc;

use serde::Deserialize;
use sluice_metrics::{AiSample, Flags, HttpSample, Metrics};
use sluice_plugin::{
    erase, typed_config, Plugin, PluginBuildError, PluginFactory, PluginHandler, RequestCtx,
};

const PRIORITY: i64 = 13;

#[derive(Debug, Deserialize)]
struct Config {
    per_consumer: Option<bool>,
    status_code_metrics: Option<bool>,
    ai_metrics: Option<bool>,
    latency_metrics: Option<bool>,
    bandwidth_metrics: Option<bool>,
}

pub struct Factory {
    metrics: Arc<Metrics>,
}

struct Handler {
    metrics: Arc<Metrics>,
    flags: Flags,
    per_consumer: bool,
}

// === impl Factory ===

impl Factory {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        Ok(erase(Handler {
            metrics: self.metrics.clone(),
            flags: Flags {
                status_code: config.status_code_metrics.unwrap_or(false),
                latency: config.latency_metrics.unwrap_or(false),
                bandwidth: config.bandwidth_metrics.unwrap_or(false),
                ai: config.ai_metrics.unwrap_or(false),
            },
            per_consumer: config.per_consumer.unwrap_or(false),
        }))
    }
}

// === impl Handler ===

impl Plugin for Handler {
    type State = ();

    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    fn log(&self, ctx: &mut RequestCtx, _state: &mut ()) {
        let request_ms = ctx.started.elapsed().as_secs_f64() * 1e3;
        let upstream_ms = ctx.upstream_latency.map(|d| d.as_secs_f64() * 1e3);
        let consumer = match (&ctx.consumer, self.per_consumer) {
            (Some(authenticated), true) => authenticated.consumer.username.as_deref(),
            _ => None,
        };
        self.metrics.record_http(
            self.flags,
            &HttpSample {
                service: &ctx.labels.service,
                route: &ctx.labels.route,
                consumer: consumer.unwrap_or(""),
                code: ctx.status,
                from_service: ctx.from_upstream,
                kong_ms: (request_ms - upstream_ms.unwrap_or(0.0)).max(0.0),
                upstream_ms,
                request_ms,
                ingress_bytes: ctx.request_bytes,
                egress_bytes: ctx.response_bytes,
            },
        );
        // Kong: AI metrics need the AI plugin to log statistics.
        if let Some(ai) = ctx
            .ai
            .as_deref()
            .filter(|ai| self.flags.ai && ai.log_statistics)
        {
            self.metrics.record_ai(&AiSample {
                provider: ai.provider,
                model: &ai.request_model,
                consumer: consumer.unwrap_or(""),
                prompt_tokens: ai.prompt_tokens,
                completion_tokens: ai.completion_tokens,
                total_tokens: ai.total_tokens,
                cost: ai.cost,
                latency_ms: ai.llm_latency_ms as f64,
            });
        }
    }
}
