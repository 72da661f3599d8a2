//! Data-driven tests. Expected values come from Kong's rules (kong-core.md §2,
//! kong/router/transform.lua, kong/router/utils.lua, kong/tools/uri.lua), not from this
//! implementation.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};
use uuid::Uuid;

use super::*;
use crate::matcher::regex_literal_prefix;

/// A table of routes and the route each request must select (`None`: no route).
struct Case {
    name: &'static str,
    routes: Vec<RouteSpec<&'static str>>,
    expect: Vec<(Req, Option<&'static str>)>,
}

/// An owned request, so tables and generators can build it; [`Req::with`] lends it out as
/// a [`Request`].
#[derive(Debug, Clone)]
struct Req {
    scheme: String,
    method: String,
    host: String,
    port: u16,
    path: String,
    headers: Vec<(String, String)>,
    sni: Option<String>,
}

/// Builder methods for route specs in tables.
trait Spec: Sized {
    fn hosts(self, hosts: &[&str]) -> Self;
    fn paths(self, paths: &[&str]) -> Self;
    fn methods(self, methods: &[&str]) -> Self;
    fn header(self, name: &str, values: &[&str]) -> Self;
    fn snis(self, snis: &[&str]) -> Self;
    fn protocols(self, protocols: &[&str]) -> Self;
    fn created(self, created_at: i64) -> Self;
    fn regex_priority(self, regex_priority: i64) -> Self;
    fn id(self, id: u128) -> Self;
}

/// splitmix64: deterministic, so a failure reproduces.
struct Rng(u64);

/// (handling, strip_path, service.path, matched path, request path, query, expected).
type PathCase<'a> = (
    PathHandling,
    bool,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    &'a str,
);

/// (request, expected matched_path, expected captures).
type CaptureCase = (Req, Option<&'static str>, Vec<(&'static str, &'static str)>);

// === impl Req ===

impl Req {
    fn host(mut self, host: &str) -> Self {
        self.host = host.to_owned();
        self
    }

    fn method(mut self, method: &str) -> Self {
        self.method = method.to_owned();
        self
    }

    fn scheme(mut self, scheme: &str) -> Self {
        self.scheme = scheme.to_owned();
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn sni(mut self, sni: &str) -> Self {
        self.sni = Some(sni.to_owned());
        self
    }

    fn with<R>(&self, f: impl FnOnce(&Request<'_>) -> R) -> R {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        let request = Request {
            scheme: &self.scheme,
            method: &self.method,
            host: &self.host,
            port: self.port,
            path: &self.path,
            headers: &headers,
            sni: self.sni.as_deref(),
        };
        f(&request)
    }
}

/// `GET <path>` over http on port 8000, no Host, no headers, no SNI.
fn get(path: &str) -> Req {
    Req {
        scheme: "http".to_owned(),
        method: "GET".to_owned(),
        host: String::new(),
        port: 8000,
        path: path.to_owned(),
        headers: Vec::new(),
        sni: None,
    }
}

// === impl Spec ===

impl<P> Spec for RouteSpec<P> {
    fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = strings(hosts);
        self
    }

    fn paths(mut self, paths: &[&str]) -> Self {
        self.paths = strings(paths);
        self
    }

    fn methods(mut self, methods: &[&str]) -> Self {
        self.methods = strings(methods);
        self
    }

    fn header(mut self, name: &str, values: &[&str]) -> Self {
        self.headers.push((name.to_owned(), strings(values)));
        self
    }

    fn snis(mut self, snis: &[&str]) -> Self {
        self.snis = strings(snis);
        self
    }

    fn protocols(mut self, protocols: &[&str]) -> Self {
        self.protocols = strings(protocols);
        self
    }

    fn created(mut self, created_at: i64) -> Self {
        self.created_at = created_at;
        self
    }

    fn regex_priority(mut self, regex_priority: i64) -> Self {
        self.regex_priority = regex_priority;
        self
    }

    fn id(mut self, id: u128) -> Self {
        self.id = Uuid::from_u128(id);
        self
    }
}

/// A route named `name` (its payload), protocols http and https, created at 0, nothing
/// else set.
fn route(name: &'static str) -> RouteSpec<&'static str> {
    RouteSpec {
        id: Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()),
        created_at: 0,
        protocols: strings(&["http", "https"]),
        methods: Vec::new(),
        hosts: Vec::new(),
        paths: Vec::new(),
        headers: Vec::new(),
        snis: Vec::new(),
        regex_priority: 0,
        payload: name,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn check_cases(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let router = match Router::build(case.routes) {
            Ok(router) => router,
            Err(error) => {
                failures.push(format!("{}: build failed: {error}", case.name));
                continue;
            }
        };
        for (req, want) in &case.expect {
            let got = req.with(|request| router.find(request).map(|found| *found.payload));
            if got != *want {
                failures.push(format!(
                    "{}: {req:?}\n    expected {want:?}, got {got:?}",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// === precedence and field semantics ===

#[test]
fn precedence() {
    check_cases(vec![
        Case {
            name: "more non-empty fields win",
            routes: vec![
                route("path-only").paths(&["/"]),
                route("method+path").methods(&["GET"]).paths(&["/"]),
            ],
            expect: vec![
                (get("/x"), Some("method+path")),
                (get("/x").method("POST"), Some("path-only")),
            ],
        },
        Case {
            name: "more fields beat plain hosts",
            routes: vec![
                route("wildcard+method")
                    .hosts(&["*.example.com"])
                    .methods(&["GET"]),
                route("plain-host").hosts(&["api.example.com"]),
            ],
            expect: vec![
                (get("/").host("api.example.com"), Some("wildcard+method")),
                (
                    get("/").host("api.example.com").method("POST"),
                    Some("plain-host"),
                ),
            ],
        },
        Case {
            name: "the plain-host bit outranks any prefix length",
            routes: vec![
                route("host-only").hosts(&["example.com"]),
                route("long-path").paths(&["/a/very/long/prefix"]),
            ],
            expect: vec![
                (
                    get("/a/very/long/prefix/x").host("example.com"),
                    Some("host-only"),
                ),
                (
                    get("/a/very/long/prefix/x").host("other.com"),
                    Some("long-path"),
                ),
                (get("/").host("example.com"), Some("host-only")),
            ],
        },
        Case {
            name: "plain host beats wildcard; wildcards need a whole label",
            routes: vec![
                route("plain").hosts(&["api.example.com"]).paths(&["/"]),
                route("suffix-wildcard")
                    .hosts(&["*.example.com"])
                    .paths(&["/"]),
                route("prefix-wildcard").hosts(&["api.*"]).paths(&["/"]),
            ],
            expect: vec![
                (get("/").host("api.example.com"), Some("plain")),
                (get("/").host("www.example.com"), Some("suffix-wildcard")),
                (get("/").host("a.b.example.com"), Some("suffix-wildcard")),
                (get("/").host("api.example.org"), Some("prefix-wildcard")),
                (get("/").host("api.co.uk"), Some("prefix-wildcard")),
                (get("/").host("example.com"), None),
                (get("/").host("api"), None),
            ],
        },
        Case {
            name: "one wildcard in the list drops the plain-host bit",
            routes: vec![
                route("mixed")
                    .hosts(&["a.test", "*.test"])
                    .paths(&["/"])
                    .created(0),
                route("all-plain")
                    .hosts(&["a.test"])
                    .paths(&["/"])
                    .created(10),
            ],
            expect: vec![
                (get("/").host("a.test"), Some("all-plain")),
                (get("/").host("b.test"), Some("mixed")),
            ],
        },
        Case {
            name: "the plain-host bit outranks the header count",
            routes: vec![
                route("plain+1-header")
                    .hosts(&["a.test"])
                    .header("x-a", &["1"]),
                route("wildcard+2-headers")
                    .hosts(&["*.test"])
                    .header("x-a", &["1"])
                    .header("x-b", &["2"]),
            ],
            expect: vec![
                (
                    get("/")
                        .host("a.test")
                        .header("x-a", "1")
                        .header("x-b", "2"),
                    Some("plain+1-header"),
                ),
                (
                    get("/")
                        .host("b.test")
                        .header("x-a", "1")
                        .header("x-b", "2"),
                    Some("wildcard+2-headers"),
                ),
            ],
        },
        Case {
            name: "more headers win",
            routes: vec![
                route("one-header").paths(&["/"]).header("x-a", &["1"]),
                route("two-headers")
                    .paths(&["/"])
                    .header("x-a", &["1"])
                    .header("x-b", &["2"]),
            ],
            expect: vec![
                (
                    get("/").header("x-a", "1").header("x-b", "2"),
                    Some("two-headers"),
                ),
                (get("/").header("x-a", "1"), Some("one-header")),
                (get("/").header("x-b", "2"), None),
                (get("/"), None),
            ],
        },
        Case {
            name: "the header count outranks the regex bit",
            routes: vec![
                route("two-headers-prefix")
                    .paths(&["/p"])
                    .header("x-a", &["1"])
                    .header("x-b", &["2"]),
                route("one-header-regex")
                    .paths(&["~/p"])
                    .header("x-a", &["1"]),
            ],
            expect: vec![
                (
                    get("/p/x").header("x-a", "1").header("x-b", "2"),
                    Some("two-headers-prefix"),
                ),
                (get("/p/x").header("x-a", "1"), Some("one-header-regex")),
            ],
        },
        Case {
            name: "a regex path beats any prefix path",
            routes: vec![
                route("prefix").paths(&["/users"]),
                route("long-prefix").paths(&["/users/42/profile/settings"]),
                route("regex").paths(&["~/users/.+"]),
            ],
            expect: vec![
                (get("/users/42"), Some("regex")),
                (get("/users/42/profile/settings"), Some("regex")),
                (get("/users/"), Some("prefix")),
                (get("/users"), Some("prefix")),
            ],
        },
        Case {
            name: "regex_priority orders regex paths",
            routes: vec![
                route("regex-0").paths(&["~/a/.*"]),
                route("regex-10").paths(&["~/a/b"]).regex_priority(10),
                route("regex-minus-5").paths(&["~/a"]).regex_priority(-5),
            ],
            expect: vec![
                (get("/a/b"), Some("regex-10")),
                (get("/a/c"), Some("regex-0")),
                (get("/a"), Some("regex-minus-5")),
                (get("/ax"), Some("regex-minus-5")),
            ],
        },
        Case {
            name: "regex_priority outranks regex length; regex length does not count",
            routes: vec![
                route("short-regex-priority-1")
                    .paths(&["~/a"])
                    .regex_priority(1),
                route("long-regex").paths(&["~/a/b/c"]),
                route("short-regex-older").paths(&["~/q"]).created(1),
                route("long-regex-newer").paths(&["~/q/r/s"]).created(2),
            ],
            expect: vec![
                (get("/a/b/c"), Some("short-regex-priority-1")),
                (get("/q/r/s"), Some("short-regex-older")),
            ],
        },
        Case {
            name: "regex_priority is ignored for prefix paths",
            routes: vec![
                route("short-prefix-priority-100")
                    .paths(&["/a"])
                    .regex_priority(100),
                route("long-prefix").paths(&["/a/b"]),
            ],
            expect: vec![
                (get("/a/b/c"), Some("long-prefix")),
                (get("/a/c"), Some("short-prefix-priority-100")),
            ],
        },
        Case {
            name: "longest prefix wins; prefixes are plain string prefixes",
            routes: vec![
                route("slash").paths(&["/"]),
                route("foo").paths(&["/foo"]),
                route("foo-bar").paths(&["/foo/bar"]),
            ],
            expect: vec![
                (get("/foo/bar/baz"), Some("foo-bar")),
                (get("/foo/baz"), Some("foo")),
                (get("/foobar"), Some("foo")),
                (get("/fo"), Some("slash")),
                (get("/"), Some("slash")),
            ],
        },
        Case {
            name: "a route is split by prefix length",
            routes: vec![
                route("split").paths(&["/a", "/abc"]),
                route("middle").paths(&["/ab"]),
            ],
            expect: vec![
                (get("/abcd"), Some("split")),
                (get("/abx"), Some("middle")),
                (get("/ax"), Some("split")),
            ],
        },
        Case {
            name: "a route is split by path type",
            routes: vec![
                route("mixed-types").paths(&["/static", "~/api/\\d+"]),
                route("api-prefix").paths(&["/api"]),
                route("static-long").paths(&["/static/img"]),
            ],
            expect: vec![
                (get("/api/42"), Some("mixed-types")),
                (get("/api/x"), Some("api-prefix")),
                (get("/static/css"), Some("mixed-types")),
                (get("/static/img/1.png"), Some("static-long")),
            ],
        },
        Case {
            name: "methods are exact and case-sensitive",
            routes: vec![
                route("get").methods(&["GET"]).paths(&["/r"]),
                route("post-put").methods(&["POST", "PUT"]).paths(&["/r"]),
            ],
            expect: vec![
                (get("/r"), Some("get")),
                (get("/r").method("PUT"), Some("post-put")),
                (get("/r").method("DELETE"), None),
                (get("/r").method("get"), None),
            ],
        },
        Case {
            name: "header values: case-insensitive, ~* regex, any value",
            routes: vec![
                route("exact").header("x-env", &["Prod"]),
                route("anchored-regex").header("x-version", &["~*^v[0-9]+$"]),
                route("unanchored-regex").header("x-agent", &["~*bot"]),
                route("either").header("x-tier", &["gold", "silver"]),
            ],
            expect: vec![
                (get("/").header("x-env", "prod"), Some("exact")),
                (get("/").header("x-env", "PROD"), Some("exact")),
                (get("/").header("x-env", "production"), None),
                (get("/").header("x-version", "V2"), Some("anchored-regex")),
                (get("/").header("x-version", "v12"), Some("anchored-regex")),
                (get("/").header("x-version", "beta"), None),
                (
                    get("/").header("x-agent", "GoogleBot/2.1"),
                    Some("unanchored-regex"),
                ),
                (get("/").header("x-tier", "silver"), Some("either")),
                (get("/").header("x-tier", "bronze"), None),
                (
                    get("/").header("x-tier", "bronze").header("x-tier", "gold"),
                    Some("either"),
                ),
            ],
        },
        Case {
            name: "SNI constrains https only",
            routes: vec![
                route("sni").snis(&["a.example.com"]).paths(&["/"]),
                route("no-sni").paths(&["/"]),
            ],
            expect: vec![
                (get("/").scheme("https").sni("a.example.com"), Some("sni")),
                (get("/").scheme("https").sni("A.EXAMPLE.COM."), Some("sni")),
                (
                    get("/").scheme("https").sni("b.example.com"),
                    Some("no-sni"),
                ),
                (get("/").scheme("https"), Some("no-sni")),
                (get("/"), Some("sni")),
                (get("/").sni("b.example.com"), Some("sni")),
            ],
        },
        Case {
            name: "a host with a port also requires the local port",
            routes: vec![
                route("port-8443").hosts(&["example.com:8443"]).created(1),
                route("any-port").hosts(&["example.com"]).created(2),
                route("wildcard-port").hosts(&["*.example.org:8000"]),
            ],
            expect: vec![
                (get("/").host("example.com").port(8443), Some("port-8443")),
                (get("/").host("example.com").port(8000), Some("any-port")),
                (
                    get("/").host("example.com:9999").port(8443),
                    Some("port-8443"),
                ),
                (get("/").host("EXAMPLE.com").port(8000), Some("any-port")),
                (
                    get("/").host("a.example.org").port(8000),
                    Some("wildcard-port"),
                ),
                (get("/").host("a.example.org").port(8001), None),
            ],
        },
        Case {
            name: "equal priority: older created_at wins",
            routes: vec![
                route("newer").paths(&["/same"]).created(200),
                route("older").paths(&["/same"]).created(100),
            ],
            expect: vec![(get("/same"), Some("older"))],
        },
        Case {
            name: "equal priority and created_at: lower id wins",
            routes: vec![
                route("id-2").paths(&["/t"]).id(2),
                route("id-1").paths(&["/t"]).id(1),
            ],
            expect: vec![(get("/t"), Some("id-1"))],
        },
        Case {
            name: "protocols restrict the scheme; empty means http and https",
            routes: vec![
                route("https-only")
                    .protocols(&["https"])
                    .paths(&["/secure"]),
                route("default-protocols").protocols(&[]).paths(&["/d"]),
                route("http-fallback").paths(&["/"]),
            ],
            expect: vec![
                (get("/secure"), Some("http-fallback")),
                (get("/secure").scheme("https"), Some("https-only")),
                (get("/d"), Some("default-protocols")),
                (get("/d").scheme("https"), Some("default-protocols")),
                (get("/d").scheme("grpc"), None),
            ],
        },
        Case {
            name: "the request path is normalized before matching",
            routes: vec![route("a-b").paths(&["/a/b"])],
            expect: vec![
                (get("/a/./b"), Some("a-b")),
                (get("/x/../a/b"), Some("a-b")),
                (get("//a//b"), Some("a-b")),
                (get("/%61/b"), Some("a-b")),
                (get("/a/c/../b/"), Some("a-b")),
                (get("/a%2Fb"), None),
            ],
        },
        Case {
            name: "an empty router matches nothing",
            routes: vec![],
            expect: vec![(get("/"), None)],
        },
    ]);
}

#[test]
fn find_any_protocol_ignores_protocols() {
    let router = Router::build(vec![route("https-only")
        .protocols(&["https"])
        .paths(&["/"])])
    .expect("build");
    get("/x").with(|request| {
        assert!(router.find(request).is_none());
        let found = router
            .find_any_protocol(request)
            .map(|found| *found.payload);
        assert_eq!(found, Some("https-only"));
    });
}

#[test]
fn matched_path_and_captures() {
    let router = Router::build(vec![
        route("users").paths(&["~/users/(?<id>\\d+)/(\\w+)"]),
        route("split").paths(&["/a", "/abc"]),
        route("no-paths").hosts(&["no-paths.test"]),
    ])
    .expect("build");
    let cases: [CaptureCase; 5] = [
        (
            get("/users/42/posts/x"),
            Some("/users/42/posts"),
            vec![
                ("0", "/users/42/posts"),
                ("1", "42"),
                ("2", "posts"),
                ("id", "42"),
            ],
        ),
        (get("/abcd"), Some("/abc"), vec![]),
        (get("/ax"), Some("/a"), vec![]),
        (get("/%61bc"), Some("/abc"), vec![]),
        (get("/q").host("no-paths.test"), None, vec![]),
    ];
    for (req, matched, captures) in cases {
        req.with(|request| {
            let found = router.find(request).expect("a route matches");
            assert_eq!(found.matched_path.as_deref(), matched, "{req:?}");
            let captures: Vec<(String, String)> = captures
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect();
            assert_eq!(found.captures, captures, "{req:?}");
        });
    }
    assert_eq!(router.len(), 3, "a split route counts once");
    assert!(!router.is_empty());
}

#[test]
fn build_errors() {
    let cases: [(RouteSpec<&str>, &str); 3] = [
        (route("bad-path").paths(&["~/a("]), "InvalidRegex ~/a("),
        (
            route("bad-header-regex").header("x-a", &["~*("]),
            "InvalidRegex ~*(",
        ),
        (
            route("bad-header-name").header("bad name", &["1"]),
            "InvalidHeaderName bad name",
        ),
    ];
    for (spec, want) in cases {
        let got = match Router::build(vec![spec]) {
            Ok(_) => "built".to_owned(),
            Err(BuildError::InvalidRegex { pattern, .. }) => format!("InvalidRegex {pattern}"),
            Err(BuildError::InvalidHeaderName { name, .. }) => format!("InvalidHeaderName {name}"),
            Err(other) => format!("{other:?}"),
        };
        assert_eq!(got, want);
    }
}

// === path normalization and upstream paths ===

#[test]
fn normalize_path_table() {
    // (input, expected, borrowed: returned without allocating)
    let cases: &[(&str, &str, bool)] = &[
        ("", "", true),
        ("/", "/", true),
        ("/a/b", "/a/b", true),
        ("/users.json", "/users.json", true),
        ("/a/.hidden", "/a/.hidden", true),
        ("/a/..b", "/a/..b", true),
        ("/a/./b", "/a/b", false),
        ("/a/../b", "/b", false),
        ("/../a", "/a", false),
        ("/a/b/..", "/a/", false),
        ("/a/b/.", "/a/b/", false),
        ("/..", "/", false),
        ("//a///b", "/a/b", false),
        ("/a//", "/a/", false),
        ("/a%2Fb", "/a%2Fb", true),
        ("/a%2fb", "/a%2Fb", false),
        ("/%3f%23", "/%3F%23", false),
        ("/%61%62c", "/abc", false),
        ("/%7Euser", "/~user", false),
        ("/%20x", "/ x", false),
        ("/%2e%2e/a", "/a", false),
        ("/a/%2E/b", "/a/b", false),
        ("/%2561", "/%2561", true),
        ("/caf%C3%A9", "/café", false),
        ("/bad%FF", "/bad%FF", true),
        ("/bad%ff", "/bad%FF", false),
        ("/50%", "/50%", true),
        ("/%zz", "/%zz", true),
        ("/%6", "/%6", true),
    ];
    let mut failures = Vec::new();
    for &(input, expected, borrowed) in cases {
        let got = normalize_path(input);
        let got_borrowed = matches!(got, Cow::Borrowed(_));
        if got != expected || got_borrowed != borrowed {
            failures.push(format!(
                "{input:?}: expected {expected:?} (borrowed {borrowed}), \
                 got {got:?} (borrowed {got_borrowed})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn upstream_path_table() {
    use PathHandling::{V0, V1};
    // The route's path is "/v1" unless the matched path says otherwise.
    #[rustfmt::skip]
    let cases: &[PathCase<'_>] = &[
        // v0, strip on, no service path (= "/").
        (V0, true, None, Some("/v1"), "/v1", None, "/"),
        (V0, true, None, Some("/v1"), "/v1/", None, "/"),
        (V0, true, None, Some("/v1"), "/v1/users", None, "/users"),
        (V0, true, None, Some("/v1"), "/v1/users/", None, "/users/"),
        (V0, true, None, Some("/v1"), "/v1users", None, "/users"),
        // v0, strip on, service path "/".
        (V0, true, Some("/"), Some("/v1"), "/v1", None, "/"),
        (V0, true, Some("/"), Some("/v1"), "/v1/users", None, "/users"),
        // v0, strip on, service path "/api" (Kong's example: /api + /v1 + /v1/users).
        (V0, true, Some("/api"), Some("/v1"), "/v1", None, "/api"),
        (V0, true, Some("/api"), Some("/v1"), "/v1/", None, "/api/"),
        (V0, true, Some("/api"), Some("/v1"), "/v1/users", None, "/api/users"),
        (V0, true, Some("/api"), Some("/v1"), "/v1/users/", None, "/api/users/"),
        (V0, true, Some("/api"), Some("/v1"), "/v1users", None, "/api/users"),
        // v0, strip on, service path "/api/".
        (V0, true, Some("/api/"), Some("/v1"), "/v1", None, "/api"),
        (V0, true, Some("/api/"), Some("/v1"), "/v1/", None, "/api/"),
        (V0, true, Some("/api/"), Some("/v1"), "/v1/users", None, "/api/users"),
        (V0, true, Some("/api/"), Some("/v1"), "/v1/users/", None, "/api/users/"),
        (V0, true, Some("/api/"), Some("/v1"), "/v1users", None, "/api/users"),
        // v0, strip on, route path with a trailing slash: nothing is left after the prefix.
        (V0, true, Some("/api"), Some("/v1/"), "/v1/", None, "/api/"),
        (V0, true, Some("/api/"), Some("/v1/"), "/v1/", None, "/api/"),
        (V0, true, None, Some("/v1/"), "/v1/", None, "/"),
        (V0, true, Some("/api"), Some("/v1/"), "/v1/users", None, "/api/users"),
        (V0, true, Some("/api/"), Some("/v1/"), "/v1/users", None, "/api/users"),
        // v0, strip on, route path "/".
        (V0, true, Some("/api"), Some("/"), "/", None, "/api"),
        (V0, true, Some("/api/"), Some("/"), "/", None, "/api/"),
        (V0, true, Some("/api"), Some("/"), "/users", None, "/api/users"),
        // v0, strip on: a leftover that starts with a dot segment is sanitized.
        (V0, true, Some("/api"), Some("/v1"), "/v1../x", None, "/api/x"),
        (V0, true, Some("/api"), Some("/v1"), "/v1.", None, "/api"),
        // v0, strip on, route without paths: only the leading '/' is removed.
        (V0, true, Some("/api"), None, "/users", None, "/api/users"),
        (V0, true, Some("/api"), None, "/", None, "/api"),
        (V0, true, None, None, "/users/", None, "/users/"),
        // v0, strip on, regex match text as the prefix.
        (V0, true, Some("/api"), Some("/v1/users"), "/v1/users/42", None, "/api/42"),
        // v0, strip off.
        (V0, false, None, Some("/v1"), "/v1/users", None, "/v1/users"),
        (V0, false, None, None, "/", None, "/"),
        (V0, false, Some("/"), Some("/v1"), "/v1/", None, "/v1/"),
        (V0, false, Some("/api"), None, "/", None, "/api"),
        (V0, false, Some("/api"), Some("/v1"), "/v1", None, "/api/v1"),
        (V0, false, Some("/api"), Some("/v1"), "/v1/", None, "/api/v1/"),
        (V0, false, Some("/api"), Some("/v1"), "/v1/users", None, "/api/v1/users"),
        (V0, false, Some("/api/"), None, "/", None, "/api/"),
        (V0, false, Some("/api/"), Some("/v1"), "/v1", None, "/api/v1"),
        (V0, false, Some("/api/"), Some("/v1"), "/v1/users/", None, "/api/v1/users/"),
        // The query string is kept; a bare '?' too.
        (V0, true, Some("/api"), Some("/v1"), "/v1/users", Some("a=1&b=2"), "/api/users?a=1&b=2"),
        (V0, false, Some("/api"), None, "/", Some("q"), "/api?q"),
        (V0, true, None, Some("/v1"), "/v1", Some(""), "/?"),
        // An empty service path (which Kong's schema rejects) is treated as "/".
        (V0, true, Some(""), Some("/v1"), "/v1/users", None, "/users"),
        // v1: strip on is base + postfix, with one '/' dropped where two meet.
        (V1, true, Some("/api"), Some("/v1"), "/v1/users", None, "/api/users"),
        (V1, true, Some("/api/"), Some("/v1"), "/v1/users", None, "/api/users"),
        (V1, true, Some("/api"), Some("/v1"), "/v1", None, "/api"),
        (V1, true, Some("/api/"), Some("/v1"), "/v1", None, "/api/"),
        (V1, true, Some("/api"), Some("/v1"), "/v1users", None, "/apiusers"),
        (V1, true, None, Some("/v1"), "/v1/users", None, "/users"),
        // v1: strip off is base + the path without its leading '/'.
        (V1, false, Some("/api"), Some("/v1"), "/v1/users", None, "/apiv1/users"),
        (V1, false, None, Some("/v1"), "/v1/users", None, "/v1/users"),
    ];
    let mut failures = Vec::new();
    for &(handling, strip, service, matched, request, query, expected) in cases {
        let got = upstream_path(service, request, query, matched, strip, handling);
        if got != expected {
            failures.push(format!(
                "{handling:?} strip={strip} service={service:?} matched={matched:?} \
                 request={request:?} query={query:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn regex_literal_prefix_table() {
    // The index files a regex under this prefix, so it must never be longer than the text
    // every match starts with.
    let cases: &[(&str, &str)] = &[
        ("/users/\\d+", "/users/"),
        ("/users?/v1", "/user"),
        ("/x+y", "/x"),
        ("/ab{2}", "/a"),
        ("/a.*", "/a"),
        ("/a\\.json", "/a"),
        ("/a/b$", "/a/b"),
        ("/api/v1", "/api/v1"),
        ("/é/x", "/é/x"),
        ("/é?", "/"),
        ("(?i)/A", ""),
        ("[/]a", ""),
        ("/a|/b", ""),
        ("/(a|b)/x", "/"),
        ("/a|[b]", ""),
        ("/x\\(|/y", ""),
    ];
    for &(pattern, expected) in cases {
        assert_eq!(regex_literal_prefix(pattern), expected, "{pattern:?}");
    }
}

// === the index agrees with a linear scan ===

const ROUTE_HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "example.com",
    "api.test",
    "API.TEST",
    "example.org",
    "*.example.com",
    "example.*",
    "*.test",
    "a.example.com:8443",
    "*.example.com:8000",
    "*",
    "*example.com",
    "[::1]",
];

const REQUEST_HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "example.com",
    "api.test",
    "api.test.",
    "example.org",
    "x.a.example.com",
    "example.co.uk",
    "EXAMPLE.COM:8000",
    "",
    "test",
    "a.example.com:9999",
    "[::1]:8000",
];

const SEGMENTS: &[&str] = &["a", "b", "users", "user", "v1", "x", "42", "posts"];

const PATH_PARTS: &[&str] = &[
    "a", "b", "users", "user", "v1", "x", "42", "posts", "xxy", ".", "..", "", "%61", "A",
    "users42",
];

/// Regex paths with a path each is sure to match.
const REGEXES: &[(&str, &str)] = &[
    ("~/users/(?<id>\\d+)", "/users/42"),
    ("~/v1/.*", "/v1/x"),
    ("~/a|/b", "/a"),
    ("~/(a|b)/x", "/b/x"),
    ("~/users?/v1", "/user/v1"),
    ("~[/]a", "/a"),
    ("~/a/b$", "/a/b"),
    ("~/x+y", "/xxy"),
    ("~(?i)/A", "/a"),
    ("~/users/\\d+/(\\w+)", "/users/7/posts"),
    ("~/v1/users", "/v1/users"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT"];
const HEADER_NAMES: &[&str] = &["x-a", "x-b"];
const ROUTE_HEADER_VALUES: &[&str] = &["1", "2", "~*^v[0-9]$", "Prod"];
const REQUEST_HEADER_VALUES: &[&str] = &["1", "2", "v3", "V4", "prod", "PROD", "x"];
const ROUTE_SNIS: &[&str] = &["a.example.com", "b.example.com", "A.EXAMPLE.COM."];
const REQUEST_SNIS: &[&str] = &["a.example.com", "b.example.com", "a.example.com."];
const PROTOCOL_SETS: &[&[&str]] = &[&["http", "https"], &["https"], &["http"]];
const PORTS: &[u16] = &[8000, 8443];

// === impl Rng ===

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn random_route(rng: &mut Rng, payload: usize) -> RouteSpec<usize> {
    let protocols = *rng.pick(PROTOCOL_SETS);
    let mut spec = RouteSpec {
        id: Uuid::from_u128((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())),
        // A small range, so that created_at ties (and the id tie-break) happen.
        created_at: rng.below(4) as i64,
        protocols: strings(protocols),
        methods: Vec::new(),
        hosts: Vec::new(),
        paths: Vec::new(),
        headers: Vec::new(),
        snis: Vec::new(),
        regex_priority: 0,
        payload,
    };
    if rng.chance(40) {
        for _ in 0..1 + rng.below(2) {
            spec.methods.push((*rng.pick(METHODS)).to_owned());
        }
    }
    if rng.chance(60) {
        for _ in 0..1 + rng.below(2) {
            spec.hosts.push((*rng.pick(ROUTE_HOSTS)).to_owned());
        }
    }
    if rng.chance(75) {
        for _ in 0..1 + rng.below(3) {
            let path = if rng.chance(30) {
                rng.pick(REGEXES).0.to_owned()
            } else {
                random_prefix(rng)
            };
            spec.paths.push(path);
        }
    }
    if rng.chance(25) {
        for name in &HEADER_NAMES[..1 + rng.below(HEADER_NAMES.len())] {
            let values = (0..1 + rng.below(2))
                .map(|_| (*rng.pick(ROUTE_HEADER_VALUES)).to_owned())
                .collect();
            spec.headers.push(((*name).to_owned(), values));
        }
    }
    if protocols.contains(&"https") && rng.chance(15) {
        spec.snis.push((*rng.pick(ROUTE_SNIS)).to_owned());
    }
    if rng.chance(30) {
        spec.regex_priority = rng.below(5) as i64 - 2;
    }
    spec
}

fn random_prefix(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "/".to_owned(),
        1 => {
            // A partial segment: "/us" must match "/users" too.
            let segment = rng.pick(SEGMENTS);
            format!("/{}", &segment[..segment.len().div_ceil(2)])
        }
        _ => {
            let mut path = String::new();
            for _ in 0..1 + rng.below(3) {
                path.push('/');
                path.push_str(rng.pick::<&str>(SEGMENTS));
            }
            if rng.chance(20) {
                path.push('/');
            }
            path
        }
    }
}

fn random_path(rng: &mut Rng) -> String {
    let mut path = String::new();
    for _ in 0..rng.below(5) {
        path.push('/');
        path.push_str(rng.pick::<&str>(PATH_PARTS));
    }
    if path.is_empty() || rng.chance(15) {
        path.push('/');
    }
    path
}

fn random_request(rng: &mut Rng) -> Req {
    let scheme = *rng.pick(&["http", "https"]);
    let mut req = get(&random_path(rng))
        .scheme(scheme)
        .method(rng.pick::<&str>(&["GET", "POST", "PUT", "DELETE"]))
        .host(rng.pick::<&str>(REQUEST_HOSTS))
        .port(*rng.pick(PORTS));
    for _ in 0..rng.below(3) {
        req = req.header(
            rng.pick::<&str>(HEADER_NAMES),
            rng.pick::<&str>(REQUEST_HEADER_VALUES),
        );
    }
    if scheme == "https" && rng.chance(70) {
        req = req.sni(rng.pick::<&str>(REQUEST_SNIS));
    }
    req
}

/// A request built to match `spec`, sometimes with one field changed so that it likely
/// misses, to exercise near-misses.
fn derived_request(rng: &mut Rng, spec: &RouteSpec<usize>) -> Req {
    let scheme = rng.pick(&spec.protocols).clone();
    let method = if spec.methods.is_empty() {
        (*rng.pick(METHODS)).to_owned()
    } else {
        rng.pick(&spec.methods).clone()
    };
    let mut req = get("/")
        .scheme(&scheme)
        .method(&method)
        .port(*rng.pick(PORTS));

    if spec.hosts.is_empty() {
        req = req.host(rng.pick::<&str>(REQUEST_HOSTS));
    } else {
        let pattern = rng.pick(&spec.hosts).clone();
        let (name, port) = match pattern.split_once(':') {
            Some((name, port)) => match port.parse::<u16>() {
                Ok(port) => (name.to_owned(), Some(port)),
                Err(_) => (pattern.clone(), None),
            },
            None => (pattern.clone(), None),
        };
        let mut host = match (name.strip_prefix('*'), name.strip_suffix('*')) {
            (Some(rest), _) => format!("q{rest}"),
            (None, Some(rest)) => format!("{rest}net"),
            (None, None) => name.clone(),
        };
        if rng.chance(30) {
            // The Host header's port must not matter.
            host.push_str(":1234");
        }
        req = req.host(&host);
        if let Some(port) = port {
            req = req.port(port);
        }
    }

    req.path = if spec.paths.is_empty() {
        random_path(rng)
    } else {
        let path = rng.pick(&spec.paths).clone();
        match REGEXES.iter().find(|(pattern, _)| *pattern == path) {
            Some((_, sample)) => (*sample).to_owned(),
            None => format!("{path}{}", rng.pick(&["", "x", "/y"])),
        }
    };

    for (name, values) in &spec.headers {
        let value = rng.pick(values);
        let value = if value.starts_with("~*") {
            "V7".to_owned()
        } else if rng.chance(50) {
            value.to_uppercase()
        } else {
            value.clone()
        };
        req = req.header(name, &value);
    }

    if scheme == "https" {
        if !spec.snis.is_empty() {
            req = req.sni(rng.pick(&spec.snis).as_str());
        } else if rng.chance(50) {
            req = req.sni(rng.pick::<&str>(REQUEST_SNIS));
        }
    }

    if rng.chance(30) {
        match rng.below(5) {
            0 => req = req.method("DELETE"),
            1 => req = req.host(rng.pick::<&str>(REQUEST_HOSTS)),
            2 => req = req.port(*rng.pick(PORTS)),
            3 => {
                req.headers.pop();
            }
            _ => req.path = random_path(rng),
        }
    }
    req
}

fn check_against_linear_scan(seed: u64, n_routes: usize, n_requests: usize) {
    let mut rng = Rng(seed);
    let routes: Vec<RouteSpec<usize>> = (0..n_routes).map(|i| random_route(&mut rng, i)).collect();
    let requests: Vec<Req> = (0..n_requests)
        .map(|_| {
            if rng.chance(50) {
                let spec = rng.pick(&routes);
                derived_request(&mut rng, spec)
            } else {
                random_request(&mut rng)
            }
        })
        .collect();
    let router = Router::build(routes).expect("generated routes are valid");

    let mut matched = 0;
    for (number, req) in requests.iter().enumerate() {
        req.with(|request| {
            let indexed = router.find(request);
            let linear = router.find_linear(request, true);
            assert_eq!(indexed, linear, "seed {seed}, request {number}: {req:?}");
            if indexed.is_some() {
                matched += 1;
            }
            let indexed = router.find_any_protocol(request);
            let linear = router.find_linear(request, false);
            assert_eq!(
                indexed, linear,
                "seed {seed}, any protocol, request {number}: {req:?}"
            );
        });
    }
    // Half of the requests are built to match; make sure the comparison was not vacuous.
    assert!(
        matched * 4 >= n_requests,
        "seed {seed}: only {matched} of {n_requests} requests matched"
    );
}

#[test]
fn index_agrees_with_linear_scan_on_a_large_table() {
    check_against_linear_scan(0x5EED_0001, 2_000, 2_000);
}

#[test]
fn index_agrees_with_linear_scan_on_a_dense_table() {
    // Few routes, many requests: most requests see several candidates.
    check_against_linear_scan(0x5EED_0002, 60, 2_000);
}
