use super::*;

use openmetrics_parser::openmetrics::parse_openmetrics;

fn sample<'a>(route: &'a str, code: u16, consumer: &'a str) -> HttpSample<'a> {
    HttpSample {
        service: "orders",
        route,
        consumer,
        code,
        from_service: code != 401,
        kong_ms: 3.0,
        upstream_ms: (code != 401).then_some(30.0),
        request_ms: 33.0,
        ingress_bytes: 100,
        egress_bytes: 250,
    }
}

const ALL: Flags = Flags {
    status_code: true,
    latency: true,
    bandwidth: true,
    ai: true,
};

/// The value of the sample named `sample_name` (as exposed: `..._total`, `..._count`) whose
/// labels include all of `labels`, read with a real OpenMetrics parser.
fn value(text: &str, sample_name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let exposition = parse_openmetrics(text).expect("the exposition parses as OpenMetrics");
    let family = ["", "_total", "_count", "_sum"].iter().find_map(|suffix| {
        let name = sample_name.strip_suffix(suffix)?;
        exposition.families.get(name)
    })?;
    let found = family.iter_samples().find_map(|sample| {
        let set = sample.get_labelset().ok()?;
        let all = labels
            .iter()
            .all(|(k, v)| set.get_label_value(k) == Some(*v));
        if !all {
            return None;
        }
        sample_value(sample, sample_name, &family.family_name)
    });
    found
}

fn sample_value(
    sample: &openmetrics_parser::Sample<openmetrics_parser::OpenMetricsValue>,
    sample_name: &str,
    family: &str,
) -> Option<f64> {
    use openmetrics_parser::OpenMetricsValue as V;
    match &sample.value {
        V::Counter(c) => Some(c.value.as_f64()),
        V::Gauge(g) => Some(g.as_f64()),
        V::Histogram(h) => match sample_name.strip_prefix(family) {
            Some("_count") => Some(h.count? as f64),
            Some("_sum") => Some(h.sum?.as_f64()),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn two_workers_add_up_in_one_exposition() {
    let metrics = Arc::new(Metrics::new("node-1", "0.1.0"));
    let worker = |metrics: Arc<Metrics>| {
        std::thread::spawn(move || {
            for _ in 0..3 {
                metrics.record_http(ALL, &sample("list", 200, "alice"));
            }
            metrics.record_http(ALL, &sample("list", 401, ""));
        })
    };
    let (a, b) = (worker(metrics.clone()), worker(metrics.clone()));
    a.join().unwrap();
    b.join().unwrap();
    let text = metrics.render(Some(true));
    let ok = [("route", "list"), ("code", "200"), ("consumer", "alice")];
    assert_eq!(
        value(&text, "kong_http_requests_total", &ok),
        Some(6.0),
        "{text}"
    );
    let refused = [("code", "401"), ("source", "kong"), ("consumer", "")];
    assert_eq!(
        value(&text, "kong_http_requests_total", &refused),
        Some(2.0)
    );
    let service = [
        ("code", "200"),
        ("source", "service"),
        ("workspace", "default"),
    ];
    assert_eq!(
        value(&text, "kong_http_requests_total", &service),
        Some(6.0)
    );
    let egress = [("direction", "egress"), ("consumer", "alice")];
    assert_eq!(
        value(&text, "kong_bandwidth_bytes_total", &egress),
        Some(1500.0)
    );
    // The upstream histogram has only the six requests that went upstream.
    let route = [("route", "list")];
    assert_eq!(
        value(&text, "kong_upstream_latency_ms_count", &route),
        Some(6.0)
    );
    assert_eq!(
        value(&text, "kong_request_latency_ms_count", &route),
        Some(8.0)
    );
    assert_eq!(value(&text, "kong_kong_latency_ms_sum", &route), Some(24.0));
    assert_eq!(value(&text, "kong_datastore_reachable", &[]), Some(1.0));
    assert!(text.contains("kong_kong_latency_ms_bucket{le=\"5.0\",service=\"orders\",route=\"list\",workspace=\"default\"} 8"), "{text}");
}

#[test]
fn flags_off_record_nothing_and_empty_families_are_left_out() {
    let metrics = Metrics::new("n", "v");
    metrics.record_http(Flags::default(), &sample("r", 200, ""));
    let text = metrics.render(None);
    assert!(!text.contains("kong_http_requests"), "{text}");
    assert!(
        !text.contains("kong_datastore_reachable"),
        "no database, no gauge: {text}"
    );
    assert!(
        text.contains("kong_node_info{node_id=\"n\",version=\"v\"} 1"),
        "{text}"
    );
    parse_openmetrics(&text).expect("parses");
}

#[test]
fn ai_tokens_cost_and_latency_by_provider_and_model() {
    let metrics = Metrics::new("n", "v");
    for (prompt, completion) in [(10, 5), (7, 3)] {
        metrics.record_ai(&AiSample {
            provider: "openai",
            model: "gpt-4o",
            consumer: "alice",
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cost: 0.5,
            latency_ms: 1200.0,
        });
    }
    let text = metrics.render(None);
    let model = [("ai_provider", "openai"), ("ai_model", "gpt-4o")];
    assert_eq!(
        value(&text, "kong_ai_llm_requests_total", &model),
        Some(2.0)
    );
    assert_eq!(value(&text, "kong_ai_llm_cost_total", &model), Some(1.0));
    let prompt = [("ai_model", "gpt-4o"), ("token_type", "prompt_tokens")];
    assert_eq!(
        value(&text, "kong_ai_llm_tokens_total", &prompt),
        Some(17.0)
    );
    let total = [("token_type", "total_tokens")];
    assert_eq!(value(&text, "kong_ai_llm_tokens_total", &total), Some(25.0));
    assert_eq!(
        value(&text, "kong_ai_llm_provider_latency_ms_count", &model),
        Some(2.0)
    );
}

#[test]
fn a_histogram_counts_a_value_in_the_first_bucket_at_least_it() {
    let mut histogram = Histogram::new(&[1.0, 5.0]);
    for value in [0.5, 1.0, 1.5, 5.0, 9.0] {
        histogram.observe(value);
    }
    assert_eq!(histogram.buckets(), vec![(1.0, 2), (5.0, 2), (f64::MAX, 1)]);
    assert_eq!(histogram.count(), 5);
}
