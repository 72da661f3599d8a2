//! The exposition: the merged tables written through `prometheus-client`'s encoder, one
//! family at a time. A family with no samples is left out, as Kong's exporter does.

use std::collections::HashMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{Histogram, Merged, Metrics};

/// Kong's label for entities of the default workspace; Sluice has only that one.
const WORKSPACE: &str = "default";

type Labels = Vec<(&'static str, String)>;

/// Everything one scrape writes, owned, so it can be a `Collector`.
#[derive(Debug)]
struct Scrape {
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Counter(Vec<(Labels, f64)>),
    Gauge(Vec<(Labels, i64)>),
    Histogram(Vec<(Labels, Histogram)>),
}

pub(crate) fn render(metrics: &Metrics, merged: &Merged, reachable: Option<bool>) -> String {
    let mut families = Vec::new();
    http_families(merged, &mut families);
    ai_families(merged, &mut families);
    node_families(metrics, reachable, &mut families);
    families.retain(|family| match &family.kind {
        Kind::Counter(samples) => !samples.is_empty(),
        Kind::Gauge(samples) => !samples.is_empty(),
        Kind::Histogram(samples) => !samples.is_empty(),
    });
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { families }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

fn http_families(merged: &Merged, families: &mut Vec<Family>) {
    let mut requests = Vec::new();
    let mut bandwidth = Vec::new();
    for ((service, route, consumer), series) in &merged.http {
        for ((code, from_service), count) in &series.codes {
            let source = if *from_service { "service" } else { "kong" };
            requests.push((
                vec![
                    ("service", service.clone()),
                    ("route", route.clone()),
                    ("code", code.to_string()),
                    ("source", source.to_owned()),
                    ("workspace", WORKSPACE.to_owned()),
                    ("consumer", consumer.clone()),
                ],
                *count as f64,
            ));
        }
        for (direction, bytes) in [("ingress", series.ingress), ("egress", series.egress)] {
            if bytes > 0 {
                bandwidth.push((
                    vec![
                        ("service", service.clone()),
                        ("route", route.clone()),
                        ("direction", direction.to_owned()),
                        ("workspace", WORKSPACE.to_owned()),
                        ("consumer", consumer.clone()),
                    ],
                    bytes as f64,
                ));
            }
        }
    }
    families.push(Family {
        name: "kong_http_requests",
        help: "HTTP status codes per consumer/service/route in Kong",
        kind: Kind::Counter(requests),
    });
    families.push(Family {
        name: "kong_bandwidth_bytes",
        help: "Total bandwidth (ingress/egress) throughput in bytes",
        kind: Kind::Counter(bandwidth),
    });
    let (mut kong, mut upstream, mut request) = (Vec::new(), Vec::new(), Vec::new());
    for ((service, route), (k, u, r)) in &merged.latency {
        let labels = vec![
            ("service", service.clone()),
            ("route", route.clone()),
            ("workspace", WORKSPACE.to_owned()),
        ];
        if k.count() > 0 {
            kong.push((labels.clone(), k.clone()));
        }
        if u.count() > 0 {
            upstream.push((labels.clone(), u.clone()));
        }
        if r.count() > 0 {
            request.push((labels, r.clone()));
        }
    }
    families.push(Family {
        name: "kong_kong_latency_ms",
        help: "Latency added by Kong and enabled plugins for each service/route in Kong",
        kind: Kind::Histogram(kong),
    });
    families.push(Family {
        name: "kong_upstream_latency_ms",
        help: "Latency added by upstream response for each service/route in Kong",
        kind: Kind::Histogram(upstream),
    });
    families.push(Family {
        name: "kong_request_latency_ms",
        help: "Total latency incurred during requests for each service/route in Kong",
        kind: Kind::Histogram(request),
    });
}

fn ai_families(merged: &Merged, families: &mut Vec<Family>) {
    let (mut requests, mut cost, mut tokens, mut latency) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((provider, model, consumer), series) in &merged.ai {
        // Kong's AI labels; the cache and embeddings ones are empty without a semantic cache.
        let labels = |extra: Option<&'static str>| {
            let mut labels: Labels = vec![
                ("ai_provider", provider.clone()),
                ("ai_model", model.clone()),
                ("cache_status", String::new()),
                ("vector_db", String::new()),
                ("embeddings_provider", String::new()),
                ("embeddings_model", String::new()),
            ];
            if let Some(token_type) = extra {
                labels.push(("token_type", token_type.to_owned()));
            }
            labels.push(("workspace", WORKSPACE.to_owned()));
            // Kong 3.11 added the consumer to the AI metrics.
            labels.push(("consumer", consumer.clone()));
            labels
        };
        requests.push((labels(None), series.requests as f64));
        if series.cost > 0.0 {
            cost.push((labels(None), series.cost));
        }
        for (token_type, count) in [
            ("prompt_tokens", series.prompt_tokens),
            ("completion_tokens", series.completion_tokens),
            ("total_tokens", series.total_tokens),
        ] {
            if count > 0 {
                tokens.push((labels(Some(token_type)), count as f64));
            }
        }
        if series.latency.count() > 0 {
            latency.push((labels(None), series.latency.clone()));
        }
    }
    families.push(Family {
        name: "kong_ai_llm_requests",
        help: "AI requests total per ai_provider in Kong",
        kind: Kind::Counter(requests),
    });
    families.push(Family {
        name: "kong_ai_llm_cost",
        help: "AI requests cost per ai_provider/cache in Kong",
        kind: Kind::Counter(cost),
    });
    families.push(Family {
        name: "kong_ai_llm_tokens",
        // Kong's help text, as Kong has it (the same as the cost family's).
        help: "AI requests cost per ai_provider/cache in Kong",
        kind: Kind::Counter(tokens),
    });
    families.push(Family {
        name: "kong_ai_llm_provider_latency_ms",
        help: "LLM response Latency for each AI plugins per ai_provider in Kong",
        kind: Kind::Histogram(latency),
    });
}

fn node_families(metrics: &Metrics, reachable: Option<bool>, families: &mut Vec<Family>) {
    use std::sync::atomic::Ordering;
    families.push(Family {
        name: "kong_node_info",
        help: "Kong Node metadata information",
        kind: Kind::Gauge(vec![(
            vec![
                ("node_id", metrics.node_id.clone()),
                ("version", metrics.version.clone()),
            ],
            1,
        )]),
    });
    if let Some(reachable) = reachable {
        families.push(Family {
            name: "kong_datastore_reachable",
            help: "Datastore reachable from Kong, 0 is unreachable",
            kind: Kind::Gauge(vec![(Vec::new(), i64::from(reachable))]),
        });
    }
    let connected = metrics.control_plane_connected.load(Ordering::Relaxed);
    if connected >= 0 {
        families.push(Family {
            name: "kong_control_plane_connected",
            help: "Kong connected to control plane, 0 is unconnected",
            kind: Kind::Gauge(vec![(Vec::new(), connected)]),
        });
    }
    families.push(Family {
        name: "sluice_config_version",
        help: "The config version this node serves",
        kind: Kind::Gauge(vec![(
            Vec::new(),
            metrics.config_version.load(Ordering::Relaxed) as i64,
        )]),
    });
    let reloads = crate::lock(&metrics.reloads).clone();
    if reloads.count() > 0 {
        families.push(Family {
            name: "sluice_config_reload_duration_ms",
            help: "Time to compile and swap in a new config version",
            kind: Kind::Histogram(vec![(Vec::new(), reloads)]),
        });
    }
    let dropped: Vec<(Labels, f64)> = crate::lock(&metrics.dropped_logs)
        .iter()
        .map(|(plugin, count)| (vec![("plugin", (*plugin).to_owned())], *count as f64))
        .collect();
    families.push(Family {
        name: "sluice_log_entries_dropped",
        help: "Log entries a log plugin dropped (queue full, or retries exhausted)",
        kind: Kind::Counter(dropped),
    });
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            match &family.kind {
                Kind::Counter(samples) => {
                    let mut metric = encoder.encode_descriptor(
                        family.name,
                        family.help,
                        None,
                        MetricType::Counter,
                    )?;
                    for (labels, value) in samples {
                        let counter =
                            prometheus_client::metrics::counter::ConstCounter::new(*value);
                        if labels.is_empty() {
                            counter.encode(metric)?;
                            break; // an unlabelled family has one sample
                        }
                        counter.encode(metric.encode_family(labels)?)?;
                    }
                }
                Kind::Gauge(samples) => {
                    let mut metric = encoder.encode_descriptor(
                        family.name,
                        family.help,
                        None,
                        MetricType::Gauge,
                    )?;
                    for (labels, value) in samples {
                        if labels.is_empty() {
                            ConstGauge::new(*value).encode(metric)?;
                            break; // an unlabelled family has one sample
                        }
                        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
                    }
                }
                Kind::Histogram(samples) => {
                    let mut metric = encoder.encode_descriptor(
                        family.name,
                        family.help,
                        None,
                        MetricType::Histogram,
                    )?;
                    for (labels, histogram) in samples {
                        let no_exemplars: Option<&HashMap<usize, Exemplar<Labels, f64>>> = None;
                        if labels.is_empty() {
                            metric.encode_histogram(
                                histogram.sum(),
                                histogram.count(),
                                &histogram.buckets(),
                                no_exemplars,
                            )?;
                            break; // an unlabelled family has one sample
                        }
                        metric.encode_family(labels)?.encode_histogram(
                            histogram.sum(),
                            histogram.count(),
                            &histogram.buckets(),
                            no_exemplars,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
