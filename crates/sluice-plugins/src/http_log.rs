//! `http-log` (Kong 3.10, priority 12): Kong's log record of each request, sent to
//! `http_endpoint` through Kong's queue (`queue.max_batch_size` records per request: one bare
//! JSON object when it is 1, a JSON array otherwise).
//!
//! Shipping never touches the response: the log phase only appends to the queue. Each queue
//! has its own sender thread (with its own runtime), so a collector that hangs or answers 500
//! holds only that thread. Failed sends are retried with Kong's backoff
//! (`initial_retry_delay * 2^n`, at most `max_retry_delay`) until `max_retry_time`; a full
//! queue drops its oldest entries, as Kong's does. Both are counted in
//! `sluice_log_entries_dropped_total{plugin="http-log"}`. Instances with the same endpoint and
//! settings share one queue (Kong's queue name), and queues outlive config reloads.

mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use sluice_metrics::Metrics;
use sluice_plugin::{erase, typed_config, PluginBuildError, PluginFactory, PluginHandler};

use crate::log_capture::{refuse_lua, LogPlugin, Sink};
use queue::{Queue, QueueConfig, Sender};

const PRIORITY: i64 = 12;

#[derive(Debug, Deserialize)]
struct Config {
    http_endpoint: String,
    method: Option<String>,
    content_type: Option<String>,
    timeout: Option<f64>,
    keepalive: Option<f64>,
    headers: Option<HashMap<String, String>>,
    queue: Option<QueueFields>,
    custom_fields_by_lua: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Kong's `queue` record (kong/tools/queue_schema.lua); defaults are Kong's.
#[derive(Debug, Default, Deserialize)]
struct QueueFields {
    max_batch_size: Option<usize>,
    max_coalescing_delay: Option<f64>,
    max_entries: Option<usize>,
    max_bytes: Option<usize>,
    max_retry_time: Option<f64>,
    initial_retry_delay: Option<f64>,
    max_retry_delay: Option<f64>,
    concurrency_limit: Option<i64>,
}

pub struct Factory {
    metrics: Arc<Metrics>,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

struct Handler {
    queue: Arc<Queue>,
}

// === impl Factory ===

impl Factory {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            queues: Mutex::default(),
        }
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "http-log"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        refuse_lua(plugin, &config.custom_fields_by_lua)?;
        let sender = sender(plugin, &config)?;
        let fields = config.queue.unwrap_or_default();
        let queue_config = QueueConfig {
            max_batch_size: fields.max_batch_size.unwrap_or(1).max(1),
            max_coalescing_delay: seconds(fields.max_coalescing_delay.unwrap_or(1.0)),
            max_entries: fields.max_entries.unwrap_or(10_000).max(1),
            max_bytes: fields.max_bytes,
            max_retry_time: seconds(fields.max_retry_time.unwrap_or(60.0)),
            initial_retry_delay: seconds(fields.initial_retry_delay.unwrap_or(0.01)),
            max_retry_delay: seconds(fields.max_retry_delay.unwrap_or(60.0)),
            concurrent: fields.concurrency_limit == Some(-1),
        };
        // Kong's queue name: instances that send the same way share a queue.
        let name = format!(
            "{}:{}:{}:{:?}:{:?}:{:?}",
            config.http_endpoint,
            sender.method,
            sender.content_type,
            sender.timeout,
            sender.keepalive,
            queue_config,
        );
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = match queues.get(&name) {
            Some(queue) => queue.clone(),
            None => {
                let queue = Queue::new(queue_config, sender, self.metrics.clone());
                queues.insert(name, queue.clone());
                queue
            }
        };
        Ok(erase(LogPlugin(Handler { queue })))
    }
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// How the records are sent: endpoint, method, headers (userinfo becomes Basic auth).
fn sender(plugin: &sluice_model::Plugin, config: &Config) -> Result<Sender, PluginBuildError> {
    let mut url = reqwest::Url::parse(&config.http_endpoint)
        .map_err(|e| PluginBuildError::at(plugin, "http_endpoint", format!("invalid url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PluginBuildError::at(
            plugin,
            "http_endpoint",
            format!("unsupported scheme '{}': use http or https", url.scheme()),
        ));
    }
    let mut headers = http::HeaderMap::new();
    for (name, value) in config.headers.iter().flatten() {
        // Kong's checks on the header names, in its words.
        for reserved in ["Host", "Content-Length", "Content-Type"] {
            if name.eq_ignore_ascii_case(reserved) {
                return Err(PluginBuildError::at(
                    plugin,
                    "headers",
                    format!("cannot contain '{reserved}' header"),
                ));
            }
        }
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .ok()
            .filter(|_| valid)
            .ok_or_else(|| {
                PluginBuildError::at(
                    plugin,
                    "headers",
                    format!(
                        "bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', \
                         and '-'"
                    ),
                )
            })?;
        let mut value = http::HeaderValue::from_str(value).map_err(|_| {
            // The value may be a secret: never echo it.
            PluginBuildError::at(plugin, "headers", "not a valid header value")
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if !url.username().is_empty() {
        if headers.contains_key(http::header::AUTHORIZATION) {
            return Err(PluginBuildError::new(
                plugin,
                "specifying both an 'Authorization' header and user info in 'http_endpoint' \
                 is not allowed",
            ));
        }
        let userinfo = format!("{}:{}", url.username(), url.password().unwrap_or(""));
        let encoded = base64::engine::general_purpose::STANDARD.encode(userinfo);
        let mut value = http::HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| PluginBuildError::at(plugin, "http_endpoint", "bad user info"))?;
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    let content_type = config
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".to_owned());
    let method = config.method.clone().unwrap_or_else(|| "POST".to_owned());
    Ok(Sender {
        url,
        method: http::Method::from_bytes(method.as_bytes()).map_err(|_| {
            PluginBuildError::at(plugin, "method", "expected one of: POST, PUT, PATCH")
        })?,
        content_type,
        headers,
        timeout: Duration::from_millis(config.timeout.unwrap_or(10_000.0).max(1.0) as u64),
        keepalive: Duration::from_millis(config.keepalive.unwrap_or(60_000.0).max(0.0) as u64),
    })
}

// === impl Handler ===

impl Sink for Handler {
    const NAME: &'static str = "http-log";
    const PRIORITY: i64 = PRIORITY;

    fn ship(&self, record: Vec<u8>) {
        self.queue.push(record);
    }
}
