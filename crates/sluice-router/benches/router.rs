//! Router benchmarks: match time and build time at 100, 10,000 and 100,000 routes.
//!
//! The routes look like a real config: mostly one host and one prefix per service, some
//! methods, regex paths with captures, `*.tenant` and `internal.*` wildcard hosts, and
//! host-less routes with two paths (which split into two matchers). Every host and path is
//! distinct. The match requests hit routes in the middle of the table.
//!
//! Run: `cargo bench -p sluice-router --bench router`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use sluice_router::{Request, RouteSpec, Router};
use uuid::Uuid;

const SIZES: [usize; 3] = [100, 10_000, 100_000];

/// How many consecutive routes around the middle the match benchmark cycles through, so
/// that one lucky cache line or branch does not decide the figure.
const TARGETS: usize = 16;

/// An owned request; [`BenchRequest::as_request`] lends it as the router's view.
struct BenchRequest {
    scheme: &'static str,
    method: &'static str,
    host: String,
    path: String,
    headers: HeaderMap,
}

impl BenchRequest {
    fn as_request(&self) -> Request<'_> {
        Request {
            scheme: self.scheme,
            method: self.method,
            host: &self.host,
            port: 8000,
            path: &self.path,
            headers: &self.headers,
            sni: None,
        }
    }
}

/// Route `i` of the generated table. The shape depends on `i % 20`:
/// 0-11 host + prefix (every fourth also `GET` only), 12 host + prefix + header,
/// 13-14 suffix wildcard host, 15 prefix wildcard host, 16 host + regex with methods,
/// 17-19 no host and two prefixes of different lengths.
fn route(i: usize) -> RouteSpec<usize> {
    let mut spec = RouteSpec {
        id: Uuid::from_u128(i as u128 + 1),
        created_at: 1_700_000_000 + i as i64,
        protocols: vec!["http".to_owned(), "https".to_owned()],
        methods: Vec::new(),
        hosts: Vec::new(),
        paths: Vec::new(),
        headers: Vec::new(),
        snis: Vec::new(),
        regex_priority: 0,
        payload: i,
    };
    match i % 20 {
        0..=11 => {
            spec.hosts = vec![format!("svc{i}.example.com")];
            spec.paths = vec![format!("/api/v{}/svc{i}", i % 3)];
            if i.is_multiple_of(4) {
                spec.methods = vec!["GET".to_owned()];
            }
        }
        12 => {
            spec.hosts = vec![format!("svc{i}.example.com")];
            spec.paths = vec![format!("/api/v{}/svc{i}", i % 3)];
            spec.headers = vec![("x-tenant".to_owned(), vec![format!("t{i}")])];
        }
        13 | 14 => {
            spec.hosts = vec![format!("*.tenant{i}.example.net")];
            spec.paths = vec![format!("/t/{i}")];
        }
        15 => {
            spec.hosts = vec![format!("internal{i}.*")];
            spec.paths = vec![format!("/int/{i}")];
        }
        16 => {
            spec.hosts = vec![format!("svc{i}.example.com")];
            spec.paths = vec![format!("~/api/svc{i}/items/(?<id>\\d+)$")];
            spec.methods = vec!["GET".to_owned(), "PUT".to_owned()];
        }
        _ => {
            spec.paths = vec![format!("/public/svc{i}"), format!("/p/{i}/")];
        }
    }
    spec
}

fn routes(n: usize) -> Vec<RouteSpec<usize>> {
    (0..n).map(route).collect()
}

/// A request that route `i` matches.
fn request_for(i: usize) -> BenchRequest {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let (method, host, path) = match i % 20 {
        0..=11 => (
            "GET",
            format!("svc{i}.example.com"),
            format!("/api/v{}/svc{i}/orders", i % 3),
        ),
        12 => {
            headers.insert(
                "x-tenant",
                HeaderValue::from_str(&format!("t{i}")).expect("header"),
            );
            (
                "POST",
                format!("svc{i}.example.com"),
                format!("/api/v{}/svc{i}/orders", i % 3),
            )
        }
        13 | 14 => (
            "GET",
            format!("eu.tenant{i}.example.net"),
            format!("/t/{i}/reports"),
        ),
        15 => (
            "GET",
            format!("internal{i}.corp"),
            format!("/int/{i}/health"),
        ),
        16 => (
            "PUT",
            format!("svc{i}.example.com"),
            format!("/api/svc{i}/items/42"),
        ),
        _ => (
            "GET",
            "www.example.org".to_owned(),
            format!("/public/svc{i}/index.html"),
        ),
    };
    BenchRequest {
        scheme: "https",
        method,
        host: format!("{host}:8000"),
        path,
        headers,
    }
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    for n in SIZES {
        let router = Router::build(routes(n)).expect("generated routes are valid");
        let first = n / 2 - TARGETS.min(n) / 2;
        let requests: Vec<BenchRequest> =
            (first..first + TARGETS.min(n)).map(request_for).collect();
        for (offset, request) in requests.iter().enumerate() {
            let found = router
                .find(&request.as_request())
                .map(|found| *found.payload);
            assert_eq!(
                found,
                Some(first + offset),
                "request for route {}",
                first + offset
            );
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut next = 0usize;
            b.iter(|| {
                let request = &requests[next % requests.len()];
                next = next.wrapping_add(1);
                black_box(router.find(black_box(&request.as_request())))
            });
        });
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    // A 100,000-route build takes a sizeable fraction of a second; ten samples are enough.
    group.sample_size(10);
    for n in SIZES {
        let input = routes(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || input.clone(),
                |routes| Router::build(routes).expect("generated routes are valid"),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_match, bench_build
}
criterion_main!(benches);
