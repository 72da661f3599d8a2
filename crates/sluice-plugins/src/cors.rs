//! `cors` (Kong 3.10 `kong/plugins/cors`): answers CORS preflight requests at the gateway and
//! adds the CORS headers to every other response. Runs first (priority 2000) so that even an
//! auth plugin's 401 carries them, which is what a browser needs to show the error.
//!
//! Origins are matched as Kong does: an entry made only of `[A-Za-z0-9.:/-]` is a literal
//! origin (compared after dropping default ports), anything else is a regex anchored at both
//! ends, matched against the request origin's host when the entry has no `:` and against
//! `scheme://host[:port]` when it has. Regexes are Rust `regex` syntax (PCRE without
//! look-around and back-references); one that does not compile is refused when written.

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;
use serde::Deserialize;
use sluice_plugin::{
    erase, typed_config, Flow, Plugin, PluginBuildError, PluginFactory, PluginHandler,
    ProxyRequest, RequestCtx,
};

const PRIORITY: i64 = 2000;

/// Kong's value when `methods` is null.
const ALL_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT";

static ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
static REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");

#[derive(Debug, Deserialize)]
struct Config {
    origins: Option<Vec<String>>,
    headers: Option<Vec<String>>,
    exposed_headers: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    max_age: Option<f64>,
    credentials: bool,
    private_network: bool,
    preflight_continue: bool,
    allow_origin_absent: bool,
}

pub struct Factory;

/// How `origins` decides Access-Control-Allow-Origin.
enum Origins {
    /// None configured, or only `*`.
    Any,
    /// One literal origin, sent as written whatever the request's origin.
    Single(HeaderValue),
    /// Checked against the request's origin in order.
    List(Vec<Entry>),
}

enum Entry {
    Star,
    Regex { regex: Regex, by_host: bool },
    Literal { domain: String },
}

/// A request or configured origin, normalized as Kong's `normalize_origin`.
struct Normalized {
    /// `scheme://host[:port]` with the scheme's default port dropped.
    domain: String,
    host: String,
}

struct Handler {
    origins: Origins,
    credentials: bool,
    preflight_continue: bool,
    allow_origin_absent: bool,
    allow_headers: Option<HeaderValue>,
    allow_methods: HeaderValue,
    max_age: Option<HeaderValue>,
    private_network: bool,
    exposed_headers: Option<HeaderValue>,
}

/// Whether this request's response gets the CORS headers in `header_filter`: not when the
/// preflight was answered here (they are already on it) or passed upstream on purpose.
#[derive(Default)]
pub struct State {
    preflight: bool,
    /// The request's Origin, kept for the header phase (which sees only the response).
    origin: Option<String>,
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<std::sync::Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        let origins = compile_origins(config.origins.as_deref().unwrap_or_default())
            .map_err(|message| PluginBuildError::at(plugin, "origins", message))?;
        let joined = |list: &Option<Vec<String>>, field: &str| -> Result<_, PluginBuildError> {
            match list {
                Some(list) if !list.is_empty() => HeaderValue::from_str(&list.join(","))
                    .map(Some)
                    .map_err(|_| PluginBuildError::at(plugin, field, "not a valid header value")),
                _ => Ok(None),
            }
        };
        let allow_headers = joined(&config.headers, "headers")?;
        let exposed_headers = joined(&config.exposed_headers, "exposed_headers")?;
        let allow_methods = match &config.methods {
            Some(methods) => HeaderValue::from_str(&methods.join(","))
                .map_err(|_| PluginBuildError::at(plugin, "methods", "not a valid header value"))?,
            None => HeaderValue::from_static(ALL_METHODS),
        };
        // Lua's tostring: 3600 is "3600", 1.5 is "1.5".
        let max_age = config.max_age.map(|age| {
            let text = if age.fract() == 0.0 && age.abs() < 1e15 {
                format!("{}", age as i64)
            } else {
                age.to_string()
            };
            HeaderValue::from_str(&text).expect("a number is a valid header value")
        });
        Ok(erase(Handler {
            origins,
            credentials: config.credentials,
            preflight_continue: config.preflight_continue,
            allow_origin_absent: config.allow_origin_absent,
            allow_headers,
            allow_methods,
            max_age,
            private_network: config.private_network,
            exposed_headers,
        }))
    }
}

/// `origins` as rules. Every entry but `*` must be a regex (a literal origin is one), as
/// Kong's schema checks.
fn compile_origins(origins: &[String]) -> Result<Origins, String> {
    let mut entries = Vec::with_capacity(origins.len());
    for entry in origins {
        if entry == "*" {
            entries.push(Entry::Star);
            continue;
        }
        if is_literal(entry) {
            // Its characters make no regex syntax, so it is valid as one (Kong's check).
            entries.push(Entry::Literal {
                domain: normalize(entry).domain,
            });
        } else {
            let invalid = || format!("'{entry}' is not a valid regex");
            // Checked as written first: wrapped, `a)(b` would compile.
            Regex::new(entry).map_err(|_| invalid())?;
            let by_host = !entry.contains(':');
            // Kong anchors regexes at both ends; one already anchored by its author keeps
            // working.
            let body = entry.strip_prefix('^').unwrap_or(entry);
            let anchored = if body.ends_with('$') {
                format!("^(?:{body})")
            } else {
                format!("^(?:{body})$")
            };
            let regex = Regex::new(&anchored).map_err(|_| invalid())?;
            entries.push(Entry::Regex { regex, by_host });
        }
    }
    Ok(match origins {
        [] => Origins::Any,
        [only] if only == "*" => Origins::Any,
        [only] if is_literal(only) => Origins::Single(
            HeaderValue::from_str(only).map_err(|_| format!("'{only}' is not a valid origin"))?,
        ),
        _ => Origins::List(entries),
    })
}

/// Kong's test for an entry that is not a regex: only `[A-Za-z0-9.:/-]`.
fn is_literal(entry: &str) -> bool {
    !entry.is_empty()
        && entry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'-'))
}

/// `scheme://host[:port]` of an origin, the default port dropped; an origin without a scheme
/// (`null`, `example.com`) is kept as it is, as Kong's URL parser finds no host in it.
fn normalize(origin: &str) -> Normalized {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Normalized {
            domain: origin.to_owned(),
            host: origin.to_owned(),
        };
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match authority.rfind(':') {
        // `[::1]` has colons of its own; only one after the bracket starts a port.
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], Some(&authority[colon + 1..]))
        }
        _ => (authority, None),
    };
    let port = port.filter(|port| {
        !port.is_empty() && !matches!((scheme, *port), ("http", "80") | ("https", "443"))
    });
    let domain = match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    Normalized {
        domain,
        host: host.to_owned(),
    }
}

/// The request's Origin, when it has a non-empty one.
fn request_origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

// === impl Handler ===

impl Handler {
    /// Sets Access-Control-Allow-Origin (and `Vary: Origin` when the answer depends on the
    /// request). Returns whether every origin is allowed (`*`).
    fn allow_origin(&self, headers: &mut HeaderMap, origin: Option<&str>, append: bool) -> bool {
        let entries = match &self.origins {
            Origins::Any => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                return true;
            }
            Origins::Single(value) => {
                vary(headers, append);
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value.clone());
                return false;
            }
            Origins::List(entries) => entries,
        };
        vary(headers, append);
        if let Some(origin) = origin {
            let normalized = normalize(origin);
            for entry in entries {
                let found = match entry {
                    Entry::Star => {
                        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                        return true;
                    }
                    Entry::Regex { regex, by_host } => regex.is_match(if *by_host {
                        &normalized.host
                    } else {
                        &normalized.domain
                    }),
                    Entry::Literal { domain } => *domain == normalized.domain,
                };
                if found {
                    if let Ok(value) = HeaderValue::from_str(&normalized.domain) {
                        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
                        return false;
                    }
                }
            }
        }
        headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
        false
    }

    /// Access-Control-Allow-Credentials. It cannot go with `Allow-Origin: *`, so then the
    /// request's own origin is allowed instead.
    fn allow_credentials(
        &self,
        headers: &mut HeaderMap,
        allow_all: bool,
        origin: Option<&str>,
        append: bool,
    ) {
        if !self.credentials {
            return;
        }
        if !allow_all {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            return;
        }
        if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
            vary(headers, append);
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The gateway's answer to a preflight: 200, no body.
    fn preflight(&self, request: &ProxyRequest, origin: &str) -> Box<http::Response<Bytes>> {
        let mut response = http::Response::new(Bytes::new());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        let allow_all = self.allow_origin(headers, Some(origin), false);
        self.allow_credentials(headers, allow_all, Some(origin), false);
        let requested_headers = request.parts.headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(value) = self.allow_headers.as_ref().or(requested_headers) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, value.clone());
        }
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if let Some(max_age) = &self.max_age {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        let asks_private_network = request
            .parts
            .headers
            .get(&REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v == "true");
        if self.private_network && asks_private_network {
            headers.insert(
                ALLOW_PRIVATE_NETWORK.clone(),
                HeaderValue::from_static("true"),
            );
        }
        Box::new(response)
    }
}

/// `Vary: Origin`: added to the upstream's own Vary in the header phase, set on the
/// gateway's preflight answer.
fn vary(headers: &mut HeaderMap, append: bool) {
    let origin = HeaderValue::from_static("Origin");
    if append {
        headers.append(VARY, origin);
    } else {
        headers.insert(VARY, origin);
    }
}

#[async_trait]
impl Plugin for Handler {
    type State = State;

    fn name(&self) -> &'static str {
        "cors"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(
        &self,
        request: &mut ProxyRequest,
        _ctx: &mut RequestCtx,
        state: &mut State,
    ) -> Flow {
        let headers = &request.parts.headers;
        let origin = request_origin(headers);
        state.origin = origin.map(str::to_owned);
        let origin = match origin {
            Some(origin) if request.parts.method == Method::OPTIONS => origin,
            _ => return Flow::Continue,
        };
        if !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return Flow::Continue;
        }
        state.preflight = true;
        if self.preflight_continue {
            return Flow::Continue;
        }
        Flow::Respond(self.preflight(request, origin))
    }

    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        _ctx: &mut RequestCtx,
        state: &mut State,
    ) {
        if state.preflight {
            return;
        }
        let origin = state.origin.as_deref();
        if origin.is_none() && !self.allow_origin_absent {
            return;
        }
        let headers = &mut response.headers;
        let allow_all = self.allow_origin(headers, origin, true);
        self.allow_credentials(headers, allow_all, origin, true);
        if let Some(exposed) = &self.exposed_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalize_as_kong_does() {
        let n = normalize("https://example.com:443");
        assert_eq!(
            (n.domain.as_str(), n.host.as_str()),
            ("https://example.com", "example.com")
        );
        assert_eq!(normalize("http://a.b:8080/x").domain, "http://a.b:8080");
        assert_eq!(normalize("http://[::1]:80").domain, "http://[::1]");
        assert_eq!(normalize("null").domain, "null");
    }

    #[test]
    fn entries_with_other_characters_are_anchored_regexes() {
        let Origins::List(entries) =
            compile_origins(&["(.*[.])?example\\.com".into(), "http://x.org".into()]).unwrap()
        else {
            panic!("two entries make a list");
        };
        let Entry::Regex { regex, by_host } = &entries[0] else {
            panic!("a regex entry");
        };
        assert!(*by_host);
        assert!(regex.is_match("api.example.com"));
        assert!(!regex.is_match("example.com.evil.net"));
        assert!(matches!(&entries[1], Entry::Literal { domain } if domain == "http://x.org"));
        assert_eq!(
            compile_origins(&["(".into()]).err().unwrap(),
            "'(' is not a valid regex"
        );
    }
}
