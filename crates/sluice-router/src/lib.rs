//! `sluice-router`: Kong's route matcher (`router_flavor = traditional_compatible`) as a pure,
//! generic library.
//!
//! **Architecture invariant:** this crate never does IO or awaits. It turns a list of
//! [`RouteSpec`]s into a [`Router`] (every fallible step, including regex compilation,
//! happens in [`Router::build`]) and answers [`Router::find`] from memory. The proxy builds
//! a router off the request path and swaps it in whole.
//!
//! **API boundary:** [`Router`], [`RouteSpec`], [`Request`], [`Match`], [`BuildError`],
//! [`upstream_path`], [`normalize_path`], [`PathHandling`].
//!
//! # Semantics (kong-core.md §2)
//! A route matches when every non-empty field matches; the values within a field are ORed.
//! * `protocols`: the request scheme must be listed ([`Router::find_any_protocol`] skips this
//!   check, as Kong's router does, for callers that answer 426 themselves). An empty list
//!   means Kong's default, `["http", "https"]`.
//! * `methods`: exact, case-sensitive (Kong's schema only allows uppercase methods).
//! * `hosts`: ASCII case-insensitive. `*.example.com` matches any host ending in
//!   `.example.com` (not `example.com` itself). `example.*` matches any host starting with
//!   `example.`. A `:port` on a route host also requires the request's local port. The
//!   request's Host header has its port stripped before matching.
//! * `paths`: `/prefix` is a plain string prefix (`/foo` matches `/foobar`). `~re` is a
//!   regex anchored at the start only (`^` is prepended, as Kong does). Paths are matched
//!   against [`normalize_path`] of the request path.
//! * `headers`: every listed header must be present with a value equal to one of the
//!   listed values (ASCII case-insensitive). A value `~*re` is a case-insensitive regex,
//!   searched unanchored.
//! * `snis`: only constrain requests whose scheme is `https`; the SNI must then be one of
//!   them (case-insensitive, trailing dot ignored). Other schemes ignore `snis`.
//!
//! # Precedence
//! Each route is split into one matcher per path group: all its regex paths form one group,
//! and its prefix paths are grouped by length. Each matcher gets Kong's u64 priority: the
//! number of non-empty fields among methods/hosts/headers/snis/paths, then "all hosts
//! plain" (no wildcard; routes without hosts do not get it), then the header count, then
//! "regex path", then `regex_priority` (regex groups only), then the prefix length. Higher
//! priority wins. Ties are broken by `created_at` ascending (the traditional flavor's rule,
//! not atc-router's higher-UUID rule), then by `id` ascending, then by input order.
//!
//! # Design
//! The matchers are sorted once by that order; a matcher's position is its rank. An index
//! files each rank under the request hosts and path prefixes that could match it (see
//! `index.rs`), and [`Router::find`] checks only those candidates, lowest rank first. The
//! result is the same as a linear scan in precedence order (`tests.rs` checks this on random
//! tables).
//!
//! # Deliberate differences from Kong
//! * Header regexes are compiled case-insensitive and run on the raw value. Kong lowercases
//!   both the pattern text and the value, which changes escapes such as `\D`.
//! * Header names are matched as HTTP header names. Kong also treats `_` and `-` as equal.
//! * A negative `regex_priority` ranks below zero; Kong's bit shift would corrupt the
//!   higher priority bits (see `matcher.rs`).

use std::borrow::Cow;

use uuid::Uuid;

use crate::index::Index;
use crate::matcher::{compile_route, Conditions, Matcher, PathHit, RegexCache, RequestCtx};

mod index;
mod matcher;
mod path;

pub use path::{normalize_path, upstream_path, PathHandling};

/// A route as the router needs it. `payload` is what [`Router::find`] hands back (for the
/// proxy: the route and its service, plugins and upstream).
#[derive(Debug, Clone)]
pub struct RouteSpec<P> {
    pub id: Uuid,
    /// Epoch seconds; the tie-break between routes of equal priority (older wins).
    pub created_at: i64,
    /// `http`, `https`, `grpc`, `grpcs`. Empty means `["http", "https"]`.
    pub protocols: Vec<String>,
    /// Empty means any method.
    pub methods: Vec<String>,
    /// May hold one leading or trailing `*` label, and a `:port`.
    pub hosts: Vec<String>,
    /// `/prefix` or `~regex`.
    pub paths: Vec<String>,
    /// Header name (lowercase) to accepted values; a value starting `~*` is a
    /// case-insensitive regex.
    pub headers: Vec<(String, Vec<String>)>,
    pub snis: Vec<String>,
    /// Orders regex paths of otherwise equal priority; ignored for prefix paths.
    pub regex_priority: i64,
    pub payload: P,
}

/// The parts of an incoming request the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `http` or `https` (or `grpc`, `grpcs`).
    pub scheme: &'a str,
    pub method: &'a str,
    /// The Host header (or `:authority`). A port in it is stripped before matching.
    pub host: &'a str,
    /// The local listener port: route hosts with `:port` compare against it.
    pub port: u16,
    /// The raw request path, without the query string. [`Router::find`] normalizes it, so
    /// do not pass an already normalized path: normalizing twice decodes twice
    /// (`/%%36%31` becomes `/%61`, then `/a`), which Kong never does.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The TLS server name, when the connection is TLS.
    pub sni: Option<&'a str>,
}

/// The winning route for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'r, P> {
    pub payload: &'r P,
    /// The id of the route, also when the route was split into several matchers.
    pub route_id: Uuid,
    /// What the path matcher consumed, in the *normalized* path: the prefix itself, or the
    /// regex's whole match. `None` when the route has no paths. Feed it, with
    /// `normalize_path(path)`, to [`upstream_path`].
    pub matched_path: Option<String>,
    /// Regex captures: numbered ones as `"0"` (the whole match), `"1"`, ... (groups that
    /// did not take part are left out), then named ones by name.
    pub captures: Vec<(String, String)>,
}

/// Why a set of routes could not be compiled. Nothing is half-built: the caller keeps its
/// previous router.
#[derive(thiserror::Error, Debug)]
pub enum BuildError {
    #[error("route {route_id}: invalid regex {pattern:?}: {source}")]
    InvalidRegex {
        route_id: Uuid,
        /// The path or header value as configured, with its `~` or `~*`.
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("route {route_id}: invalid header name {name:?}")]
    InvalidHeaderName { route_id: Uuid, name: String },
    #[error("too many routes: the router holds at most {max} matchers")]
    TooManyMatchers { max: u32 },
}

/// Checks one route exactly as [`Router::build`] compiles it, without building a table. The
/// write path runs this, so a route that is accepted is a route that compiles.
pub fn check<P>(spec: &RouteSpec<P>) -> Result<(), BuildError> {
    compile_route(0, spec, &mut RegexCache::new(), &mut Vec::new()).map(drop)
}

/// Compiled routes, ready to match. Immutable: a config change builds a new one.
#[derive(Debug)]
pub struct Router<P> {
    routes: Vec<RouteEntry<P>>,
    /// Parallel to `routes`.
    conditions: Vec<Conditions>,
    /// In precedence order: the position is the rank the index refers to.
    matchers: Vec<Matcher>,
    index: Index,
}

#[derive(Debug)]
struct RouteEntry<P> {
    id: Uuid,
    payload: P,
}

// === impl Router ===

impl<P> Router<P> {
    /// Compiles `routes`. Fails on the first invalid regex or header name.
    pub fn build(routes: Vec<RouteSpec<P>>) -> Result<Self, BuildError> {
        let (router, mut skipped) = Self::build_inner(routes, true)?;
        match skipped.pop() {
            Some(error) => Err(error),
            None => Ok(router),
        }
    }

    /// Compiles `routes`, leaving out each route that does not compile (and returning why),
    /// the way Kong's router logs and skips a route it cannot add. Only a table too large
    /// to index fails the whole build.
    pub fn build_skipping(
        routes: Vec<RouteSpec<P>>,
    ) -> Result<(Self, Vec<BuildError>), BuildError> {
        Self::build_inner(routes, false)
    }

    fn build_inner(
        routes: Vec<RouteSpec<P>>,
        stop_at_first: bool,
    ) -> Result<(Self, Vec<BuildError>), BuildError> {
        let mut cache = RegexCache::new();
        let mut entries = Vec::with_capacity(routes.len());
        let mut conditions = Vec::with_capacity(routes.len());
        let mut matchers = Vec::with_capacity(routes.len());
        let mut skipped = Vec::new();
        for spec in routes {
            let route = u32::try_from(entries.len())
                .map_err(|_| BuildError::TooManyMatchers { max: u32::MAX - 1 })?;
            let first_matcher = matchers.len();
            match compile_route(route, &spec, &mut cache, &mut matchers) {
                Ok(compiled) => conditions.push(compiled),
                Err(error) => {
                    matchers.truncate(first_matcher);
                    skipped.push(error);
                    if stop_at_first {
                        break;
                    }
                    continue;
                }
            }
            entries.push(RouteEntry {
                id: spec.id,
                payload: spec.payload,
            });
        }
        // Ranks are u32 and u32::MAX means "none found" in the index.
        if matchers.len() >= u32::MAX as usize {
            return Err(BuildError::TooManyMatchers { max: u32::MAX - 1 });
        }
        // (route, group) is unique, so this order is total and the build deterministic.
        matchers.sort_unstable_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.created_at.cmp(&b.created_at))
                .then(a.id.cmp(&b.id))
                .then(a.route.cmp(&b.route))
                .then(a.group.cmp(&b.group))
        });
        let index = Index::build(&matchers, &conditions);
        let router = Router {
            routes: entries,
            conditions,
            matchers,
            index,
        };
        Ok((router, skipped))
    }

    /// The highest-precedence route matching `req`, whose protocols include `req.scheme`.
    ///
    /// `req.path` is normalized with [`normalize_path`] first; [`Match::matched_path`]
    /// refers to that normalized path, which is what [`upstream_path`] must be given.
    pub fn find(&self, req: &Request<'_>) -> Option<Match<'_, P>> {
        self.find_with(req, true)
    }

    /// Like [`Router::find`] but ignores `protocols`, as Kong's router does. Kong matches
    /// first and then answers 426 (or redirects) when a plain-http request hits an
    /// https-only route. A caller that wants that behaviour uses this and checks the
    /// route's protocols itself.
    pub fn find_any_protocol(&self, req: &Request<'_>) -> Option<Match<'_, P>> {
        self.find_with(req, false)
    }

    /// The number of routes (not matchers: a split route counts once).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn find_with(&self, req: &Request<'_>, check_protocols: bool) -> Option<Match<'_, P>> {
        let path = normalize_path(req.path);
        let host = normalize_host(req.host);
        let ctx = request_ctx(req, &host, &path, check_protocols);
        let (rank, hit) = self
            .index
            .find(&host, &path, |rank| self.check(rank, &ctx))?;
        self.materialize(rank, hit, &path)
    }

    /// The reference the index must agree with: every matcher in precedence order, the
    /// first match wins.
    #[cfg(test)]
    fn find_linear(&self, req: &Request<'_>, check_protocols: bool) -> Option<Match<'_, P>> {
        let path = normalize_path(req.path);
        let host = normalize_host(req.host);
        let ctx = request_ctx(req, &host, &path, check_protocols);
        (0..self.matchers.len() as u32)
            .find_map(|rank| self.check(rank, &ctx).map(|hit| (rank, hit)))
            .and_then(|(rank, hit)| self.materialize(rank, hit, &path))
    }

    fn check(&self, rank: u32, ctx: &RequestCtx<'_>) -> Option<PathHit> {
        let matcher = self.matchers.get(rank as usize)?;
        let conditions = self.conditions.get(matcher.route as usize)?;
        if !conditions.matches(ctx) {
            return None;
        }
        matcher.paths.check(ctx.path)
    }

    fn materialize(&self, rank: u32, hit: PathHit, path: &str) -> Option<Match<'_, P>> {
        let matcher = self.matchers.get(rank as usize)?;
        let route = self.routes.get(matcher.route as usize)?;
        let (matched_path, captures) = matcher.paths.materialize(hit, path);
        Some(Match {
            payload: &route.payload,
            route_id: route.id,
            matched_path,
            captures,
        })
    }
}

/// The matchers' view of `req`, with `host` and `path` already normalized.
fn request_ctx<'c>(
    req: &'c Request<'_>,
    host: &'c str,
    path: &'c str,
    check_protocols: bool,
) -> RequestCtx<'c> {
    RequestCtx {
        scheme: req.scheme,
        method: req.method,
        host,
        port: req.port,
        path,
        headers: req.headers,
        sni: req.sni.map(|sni| sni.strip_suffix('.').unwrap_or(sni)),
        check_protocols,
    }
}

/// The request host as route hosts are stored: port stripped, ASCII lowercase. An IPv6
/// literal keeps its brackets (`[::1]:8000` becomes `[::1]`).
fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
            _ => host,
        }
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_port)
    }
}

#[cfg(test)]
mod tests;
