//! Process-wide metrics in Kong's names and labels (Kong 3.10 `kong/plugins/prometheus/
//! exporter.lua`), plus Sluice's own where Kong has none.
//!
//! **Recording** happens on the request path, so it never touches shared state: each proxy
//! worker thread records into its own [`WorkerTable`] (found through a thread-local, created on
//! the worker's first record). The table's mutex is only ever taken by its own worker and, once
//! per scrape, by the scraper, so a record is an uncontended lock, a hash lookup with a reused
//! key buffer and a few additions: no allocation once a series exists, no cross-worker
//! cache-line traffic.
//!
//! **Scraping** ([`Metrics::render`]) merges the worker tables into one sorted view and writes
//! it with `prometheus-client`'s OpenMetrics text encoder (sample names are Kong's:
//! `kong_http_requests_total`, `kong_kong_latency_ms_bucket`, ...).
//!
//! The tables live in a [`Metrics`] the binary creates once, outside any config snapshot, so a
//! reload never resets a counter.

mod histogram;
mod render;

use std::cell::RefCell;
use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use histogram::Histogram;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Kong's buckets (ms) for `kong_kong_latency_ms`.
pub const KONG_LATENCY_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
    3000.0, 6000.0,
];
/// Kong's buckets (ms) for `kong_upstream_latency_ms` and `kong_request_latency_ms`.
pub const UPSTREAM_LATENCY_BUCKETS: &[f64] = &[
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];
/// Kong's buckets (ms) for `kong_ai_llm_provider_latency_ms`.
pub const AI_LATENCY_BUCKETS: &[f64] = &[
    250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 4500.0, 5000.0, 10000.0,
    30000.0, 60000.0,
];
/// Sluice's buckets (ms) for `sluice_config_reload_duration_ms`.
pub const RELOAD_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Which families one prometheus plugin instance records (its config flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub status_code: bool,
    pub latency: bool,
    pub bandwidth: bool,
    pub ai: bool,
}

/// One proxied request, as the metrics see it. Label values are Kong's: `service` is the
/// service's name or host ("" without a service), `route` the route's name or id, `consumer`
/// the username when `per_consumer` is on ("" otherwise).
#[derive(Debug, Clone, Copy)]
pub struct HttpSample<'a> {
    pub service: &'a str,
    pub route: &'a str,
    pub consumer: &'a str,
    pub code: u16,
    /// Whether the response came from the upstream (`source="service"`) or from Sluice or a
    /// plugin (`source="kong"`).
    pub from_service: bool,
    pub kong_ms: f64,
    /// `None` when the request never went upstream.
    pub upstream_ms: Option<f64>,
    pub request_ms: f64,
    pub ingress_bytes: u64,
    pub egress_bytes: u64,
}

/// One AI request: what the AI plugin reported.
#[derive(Debug, Clone, Copy)]
pub struct AiSample<'a> {
    pub provider: &'a str,
    /// The requested model (Kong's `ai_model` is `meta.request_model`).
    pub model: &'a str,
    /// The consumer's username with `per_consumer` (Kong 3.11's label), "" otherwise.
    pub consumer: &'a str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost: f64,
    pub latency_ms: f64,
}

/// The process's metrics. Shared by every worker (`Arc`); lives as long as the process.
#[derive(Debug)]
pub struct Metrics {
    /// Tells this instance's tables apart in a worker's thread-local (tests run several).
    id: usize,
    workers: Mutex<Vec<Arc<WorkerTable>>>,
    node_id: String,
    version: String,
    config_version: AtomicU64,
    reloads: Mutex<Histogram>,
    /// -1: not a data plane; 0/1: connected to its control plane.
    control_plane_connected: AtomicI64,
    dropped_logs: Mutex<BTreeMap<&'static str, u64>>,
}

/// One worker's series. Only its worker and the scraper lock it.
#[derive(Debug, Default)]
pub struct WorkerTable {
    tables: Mutex<Tables>,
}

#[derive(Debug, Default, Clone)]
struct Tables {
    http: HashMap<String, HttpSeries>,
    latency: HashMap<String, LatencySeries>,
    ai: HashMap<String, AiSeries>,
    /// Reused to build lookup keys without allocating.
    scratch: String,
}

#[derive(Debug, Clone, Default)]
struct HttpSeries {
    service: String,
    route: String,
    consumer: String,
    /// (code, from service, count): a handful per route.
    codes: Vec<(u16, bool, u64)>,
    ingress: u64,
    egress: u64,
}

#[derive(Debug, Clone)]
struct LatencySeries {
    service: String,
    route: String,
    kong: Histogram,
    upstream: Histogram,
    request: Histogram,
}

#[derive(Debug, Clone)]
struct AiSeries {
    provider: String,
    model: String,
    consumer: String,
    requests: u64,
    cost: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    latency: Histogram,
}

thread_local! {
    /// This thread's table of each `Metrics` it recorded into.
    static LOCAL: RefCell<Vec<(usize, Arc<WorkerTable>)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

// === impl Metrics ===

impl Metrics {
    /// `node_id` and `version` label `kong_node_info`.
    pub fn new(node_id: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            workers: Mutex::new(Vec::new()),
            node_id: node_id.into(),
            version: version.into(),
            config_version: AtomicU64::new(0),
            reloads: Mutex::new(Histogram::new(RELOAD_BUCKETS)),
            control_plane_connected: AtomicI64::new(-1),
            dropped_logs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one request into the calling thread's table.
    pub fn record_http(&self, flags: Flags, sample: &HttpSample<'_>) {
        if !(flags.status_code || flags.bandwidth || flags.latency) {
            return;
        }
        self.with_table(|tables| {
            if flags.status_code || flags.bandwidth {
                let key = key(
                    &mut tables.scratch,
                    &[sample.service, sample.route, sample.consumer],
                );
                let series = tables.http.entry_ref(key).or_insert_with(|| HttpSeries {
                    service: sample.service.to_owned(),
                    route: sample.route.to_owned(),
                    consumer: sample.consumer.to_owned(),
                    ..HttpSeries::default()
                });
                if flags.status_code {
                    let code = (sample.code, sample.from_service);
                    match series.codes.iter_mut().find(|c| (c.0, c.1) == code) {
                        Some(entry) => entry.2 += 1,
                        None => series.codes.push((code.0, code.1, 1)),
                    }
                }
                if flags.bandwidth {
                    series.ingress += sample.ingress_bytes;
                    series.egress += sample.egress_bytes;
                }
            }
            if flags.latency {
                let key = key(&mut tables.scratch, &[sample.service, sample.route]);
                let series = tables
                    .latency
                    .entry_ref(key)
                    .or_insert_with(|| LatencySeries {
                        service: sample.service.to_owned(),
                        route: sample.route.to_owned(),
                        kong: Histogram::new(KONG_LATENCY_BUCKETS),
                        upstream: Histogram::new(UPSTREAM_LATENCY_BUCKETS),
                        request: Histogram::new(UPSTREAM_LATENCY_BUCKETS),
                    });
                series.kong.observe(sample.kong_ms);
                if let Some(upstream) = sample.upstream_ms {
                    series.upstream.observe(upstream);
                }
                series.request.observe(sample.request_ms);
            }
        });
    }

    /// Records one AI request (Kong's `ai_metrics`).
    pub fn record_ai(&self, sample: &AiSample<'_>) {
        self.with_table(|tables| {
            let key = key(
                &mut tables.scratch,
                &[sample.provider, sample.model, sample.consumer],
            );
            let series = tables.ai.entry_ref(key).or_insert_with(|| AiSeries {
                provider: sample.provider.to_owned(),
                model: sample.model.to_owned(),
                consumer: sample.consumer.to_owned(),
                requests: 0,
                cost: 0.0,
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                latency: Histogram::new(AI_LATENCY_BUCKETS),
            });
            series.requests += 1;
            series.cost += sample.cost.max(0.0);
            series.prompt_tokens += sample.prompt_tokens;
            series.completion_tokens += sample.completion_tokens;
            series.total_tokens += sample.total_tokens;
            if sample.latency_ms >= 0.0 {
                series.latency.observe(sample.latency_ms);
            }
        });
    }

    /// The config version this node serves (`sluice_config_version`).
    pub fn set_config_version(&self, version: u64) {
        self.config_version.store(version, Ordering::Relaxed);
    }

    /// One config compile and swap (`sluice_config_reload_duration_ms`).
    pub fn observe_reload(&self, took: Duration) {
        lock(&self.reloads).observe(took.as_secs_f64() * 1e3);
    }

    /// On a data plane: whether it is connected to its control plane
    /// (Kong's `kong_control_plane_connected`).
    pub fn set_control_plane_connected(&self, connected: bool) {
        self.control_plane_connected
            .store(i64::from(connected), Ordering::Relaxed);
    }

    /// Log entries a log plugin had to drop (`sluice_log_entries_dropped_total{plugin}`).
    pub fn count_dropped_logs(&self, plugin: &'static str, entries: u64) {
        *lock(&self.dropped_logs).entry(plugin).or_insert(0) += entries;
    }

    /// The exposition: every series of every worker, merged. `datastore_reachable` is
    /// `None` where the node has no database (DB-less, data planes).
    pub fn render(&self, datastore_reachable: Option<bool>) -> String {
        let merged = self.merge();
        render::render(self, &merged, datastore_reachable)
    }

    fn with_table(&self, record: impl FnOnce(&mut Tables)) {
        let table = LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if let Some((_, table)) = local.iter().find(|(id, _)| *id == self.id) {
                return table.clone();
            }
            let table = Arc::new(WorkerTable::default());
            lock(&self.workers).push(table.clone());
            local.push((self.id, table.clone()));
            table
        });
        record(&mut lock(&table.tables));
    }

    /// Every worker's tables added up, sorted by labels.
    fn merge(&self) -> Merged {
        let workers: Vec<Arc<WorkerTable>> = lock(&self.workers).clone();
        let mut merged = Merged::default();
        for worker in workers {
            // Copy out under the lock, merge after: the worker waits for a clone only.
            let tables = lock(&worker.tables).clone();
            for (_, series) in tables.http {
                let key = (series.service, series.route, series.consumer);
                let entry = merged.http.entry(key).or_default();
                for (code, from_service, count) in series.codes {
                    *entry.codes.entry((code, from_service)).or_insert(0) += count;
                }
                entry.ingress += series.ingress;
                entry.egress += series.egress;
            }
            for (_, series) in tables.latency {
                let key = (series.service, series.route);
                match merged.latency.get_mut(&key) {
                    Some(entry) => {
                        entry.0.merge(&series.kong);
                        entry.1.merge(&series.upstream);
                        entry.2.merge(&series.request);
                    }
                    None => {
                        merged
                            .latency
                            .insert(key, (series.kong, series.upstream, series.request));
                    }
                }
            }
            for (_, series) in tables.ai {
                let key = (
                    series.provider.clone(),
                    series.model.clone(),
                    series.consumer.clone(),
                );
                match merged.ai.get_mut(&key) {
                    Some(entry) => {
                        entry.requests += series.requests;
                        entry.cost += series.cost;
                        entry.prompt_tokens += series.prompt_tokens;
                        entry.completion_tokens += series.completion_tokens;
                        entry.total_tokens += series.total_tokens;
                        entry.latency.merge(&series.latency);
                    }
                    None => {
                        merged.ai.insert(key, series);
                    }
                }
            }
        }
        merged
    }
}

/// The merged view a scrape encodes.
#[derive(Debug, Default)]
struct Merged {
    http: BTreeMap<(String, String, String), MergedHttp>,
    latency: BTreeMap<(String, String), (Histogram, Histogram, Histogram)>,
    ai: BTreeMap<(String, String, String), AiSeries>,
}

#[derive(Debug, Default)]
struct MergedHttp {
    codes: BTreeMap<(u16, bool), u64>,
    ingress: u64,
    egress: u64,
}

/// `parts` joined by a byte no label value has, in the reused buffer.
fn key<'a>(scratch: &'a mut String, parts: &[&str]) -> &'a str {
    scratch.clear();
    for part in parts {
        let _ = write!(scratch, "{part}\u{0}");
    }
    scratch
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
