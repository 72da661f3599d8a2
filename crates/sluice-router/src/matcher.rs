//! Compiling a [`RouteSpec`] into matchers, Kong's priority, and checking one matcher
//! against one request.
//!
//! A route becomes one [`Conditions`] (methods, hosts, headers, SNIs, protocols: the fields
//! that do not depend on the path). It also becomes one [`Matcher`] per path group: all regex
//! paths form one group, and prefix paths are grouped by length, as Kong's
//! `split_routes_and_services_by_path` does. Each group gets its own priority, so in
//! `["/a", "/abc"]` the `/abc` half outranks a route with `/ab` and the `/a` half does not.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName};
use regex::{Regex, RegexBuilder};
use uuid::Uuid;

use crate::{BuildError, RouteSpec};

/// Protocols a route gets when its spec lists none: Kong's schema default.
const DEFAULT_PROTOCOLS: [&str; 2] = ["http", "https"];

/// Kong caps the header count in the priority at 255 (8 bits).
const MAX_HEADER_COUNT: usize = 255;

/// The priority layout of kong/router/transform.lua `get_priority` (kong-core.md §2).
const FIELDS_SHIFT: u32 = 61;
const PLAIN_HOSTS_BIT: u64 = 1 << 60;
const HEADER_COUNT_SHIFT: u32 = 52;
const REGEX_BIT: u64 = 1 << 51;
const REGEX_PRIORITY_SHIFT: u32 = 19;
const PREFIX_LENGTH_MASK: u64 = 0x7FFFF;

/// Regexes compiled so far in one build, keyed by the final pattern. Configs often repeat
/// a pattern across routes; `Regex` clones share the compiled program.
pub(crate) type RegexCache = HashMap<String, Regex>;

/// The path-independent fields of one route, shared by all of its matchers.
#[derive(Debug)]
pub(crate) struct Conditions {
    protocols: Box<[Box<str>]>,
    methods: Box<[Box<str>]>,
    pub(crate) hosts: Box<[HostPattern]>,
    /// Lowercase, without a trailing dot.
    snis: Box<[Box<str>]>,
    headers: Box<[HeaderRule]>,
}

/// One entry of a route's `hosts`, lowercased, with its optional port split off.
#[derive(Debug)]
pub(crate) struct HostPattern {
    pub(crate) kind: HostKind,
    /// When set, the request must have arrived on this local port (`net.dst.port`).
    port: Option<u16>,
}

#[derive(Debug)]
pub(crate) enum HostKind {
    /// `example.com`: equal to the request host.
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`: the request host ends with it.
    Suffix(Box<str>),
    /// `example.*` stored as `example.`: the request host starts with it.
    Prefix(Box<str>),
}

/// One `headers` entry: the request must carry `name` with at least one value matching one
/// of `values`.
#[derive(Debug)]
struct HeaderRule {
    name: HeaderName,
    values: Box<[HeaderValueRule]>,
}

#[derive(Debug)]
enum HeaderValueRule {
    /// Compared ASCII case-insensitively, as Kong lowercases both sides.
    Exact(Box<str>),
    /// `~*re`: compiled case-insensitive and searched unanchored, like Kong's `~` on the
    /// lowercased header value.
    Regex(Regex),
}

/// One split of a route: a path group with its priority and tie-break keys.
#[derive(Debug)]
pub(crate) struct Matcher {
    /// Index of the route in the build input (and of its [`Conditions`]).
    pub(crate) route: u32,
    /// Index of the path group within the route, for a deterministic total order.
    pub(crate) group: u32,
    pub(crate) priority: u64,
    pub(crate) created_at: i64,
    pub(crate) id: Uuid,
    pub(crate) paths: PathRule,
}

#[derive(Debug)]
pub(crate) enum PathRule {
    /// The route has no paths.
    Any,
    /// Plain string prefixes, all of one length.
    Prefixes(Box<[Box<str>]>),
    /// Regexes with `^` prepended, in the route's order.
    Regexes(Box<[Regex]>),
}

/// Which path of a matcher's group matched. Captures are extracted only for the winner.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PathHit {
    Any,
    Prefix(usize),
    Regex(usize),
}

/// A request as the matchers see it: host and path already normalized.
#[derive(Debug)]
pub(crate) struct RequestCtx<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) method: &'a str,
    /// Lowercase, without port.
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// After [`crate::normalize_path`].
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
    /// Without a trailing dot.
    pub(crate) sni: Option<&'a str>,
    pub(crate) check_protocols: bool,
}

/// The shape of a path group, for the priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    None,
    Regex,
    Prefix(usize),
}

// === impl Conditions ===

impl Conditions {
    /// All path-independent fields match (Kong ANDs fields and ORs values within a field).
    pub(crate) fn matches(&self, req: &RequestCtx<'_>) -> bool {
        if req.check_protocols && !self.protocols.iter().any(|p| &**p == req.scheme) {
            return false;
        }
        if !empty_or_any(&self.methods, |m| &**m == req.method) {
            return false;
        }
        if !empty_or_any(&self.hosts, |h| h.matches(req.host, req.port)) {
            return false;
        }
        // Kong: `net.protocol != "https" || tls.sni == ...`. SNIs only constrain https.
        if !self.snis.is_empty() && req.scheme == "https" {
            match req.sni {
                Some(sni) if self.snis.iter().any(|s| s.eq_ignore_ascii_case(sni)) => {}
                _ => return false,
            }
        }
        self.headers.iter().all(|rule| rule.matches(req.headers))
    }
}

// === impl HostPattern ===

impl HostPattern {
    fn parse(raw: &str) -> Self {
        let (host, port) = split_host_port(raw);
        let host = host.to_ascii_lowercase();
        let kind = if let Some(suffix) = host.strip_prefix('*') {
            HostKind::Suffix(Box::from(suffix))
        } else if let Some(prefix) = host.strip_suffix('*') {
            HostKind::Prefix(Box::from(prefix))
        } else {
            HostKind::Exact(host.into_boxed_str())
        };
        HostPattern { kind, port }
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|wanted| wanted != port) {
            return false;
        }
        match &self.kind {
            HostKind::Exact(exact) => host == &**exact,
            HostKind::Suffix(suffix) => host.ends_with(&**suffix),
            HostKind::Prefix(prefix) => host.starts_with(&**prefix),
        }
    }
}

// === impl HeaderRule ===

impl HeaderRule {
    fn matches(&self, headers: &HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|value| {
            // A value that is not UTF-8 cannot equal a configured string, nor match a regex
            // over `str`.
            std::str::from_utf8(value.as_bytes())
                .is_ok_and(|value| self.values.iter().any(|rule| rule.matches(value)))
        })
    }
}

// === impl HeaderValueRule ===

impl HeaderValueRule {
    fn matches(&self, value: &str) -> bool {
        match self {
            HeaderValueRule::Exact(expected) => value.eq_ignore_ascii_case(expected),
            HeaderValueRule::Regex(regex) => regex.is_match(value),
        }
    }
}

// === impl PathRule ===

impl PathRule {
    /// The first path of the group (in the route's order) that matches `path`.
    pub(crate) fn check(&self, path: &str) -> Option<PathHit> {
        match self {
            PathRule::Any => Some(PathHit::Any),
            PathRule::Prefixes(prefixes) => prefixes
                .iter()
                .position(|prefix| path.starts_with(&**prefix))
                .map(PathHit::Prefix),
            PathRule::Regexes(regexes) => regexes
                .iter()
                .position(|regex| regex.is_match(path))
                .map(PathHit::Regex),
        }
    }

    /// The matched text and the captures for a hit found by [`PathRule::check`] on the same
    /// `path`. Numbered groups come first (`"0"` is the whole match; groups that did not
    /// participate are left out), then named groups, as atc-router reports them.
    pub(crate) fn materialize(
        &self,
        hit: PathHit,
        path: &str,
    ) -> (Option<String>, Vec<(String, String)>) {
        match (self, hit) {
            (PathRule::Prefixes(prefixes), PathHit::Prefix(i)) => {
                (prefixes.get(i).map(|prefix| prefix.to_string()), Vec::new())
            }
            (PathRule::Regexes(regexes), PathHit::Regex(i)) => {
                let Some(regex) = regexes.get(i) else {
                    return (None, Vec::new());
                };
                let Some(found) = regex.captures(path) else {
                    return (None, Vec::new());
                };
                let mut captures = Vec::new();
                for (number, group) in found.iter().enumerate() {
                    if let Some(group) = group {
                        captures.push((number.to_string(), group.as_str().to_owned()));
                    }
                }
                for name in regex.capture_names().flatten() {
                    if let Some(group) = found.name(name) {
                        captures.push((name.to_owned(), group.as_str().to_owned()));
                    }
                }
                let matched = found.get(0).map(|whole| whole.as_str().to_owned());
                (matched, captures)
            }
            _ => (None, Vec::new()),
        }
    }

    /// The literal prefixes a request path must start with for this rule to match, pushed
    /// onto `keys`. Returns true when no such prefix is known (no paths, or a regex without
    /// a literal start); the index must then always check the matcher.
    pub(crate) fn index_keys<'a>(&'a self, keys: &mut Vec<&'a str>) -> bool {
        match self {
            PathRule::Any => true,
            PathRule::Prefixes(prefixes) => {
                for prefix in prefixes.iter() {
                    if prefix.is_empty() {
                        return true;
                    }
                    keys.push(prefix);
                }
                false
            }
            PathRule::Regexes(regexes) => {
                for regex in regexes.iter() {
                    let pattern = regex.as_str();
                    let literal =
                        regex_literal_prefix(pattern.strip_prefix('^').unwrap_or(pattern));
                    if literal.is_empty() {
                        return true;
                    }
                    keys.push(literal);
                }
                false
            }
        }
    }
}

// === compile ===

/// Compiles `spec` (route number `route`) into its [`Conditions`] and pushes its matchers
/// onto `matchers`.
pub(crate) fn compile_route<P>(
    route: u32,
    spec: &RouteSpec<P>,
    cache: &mut RegexCache,
    matchers: &mut Vec<Matcher>,
) -> Result<Conditions, BuildError> {
    let protocols: Box<[Box<str>]> = if spec.protocols.is_empty() {
        DEFAULT_PROTOCOLS.iter().map(|p| Box::from(*p)).collect()
    } else {
        spec.protocols
            .iter()
            .map(|p| Box::from(p.as_str()))
            .collect()
    };
    let conditions = Conditions {
        protocols,
        methods: spec.methods.iter().map(|m| Box::from(m.as_str())).collect(),
        hosts: spec.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
        snis: spec.snis.iter().map(|s| normalize_sni(s)).collect(),
        headers: compile_headers(spec)?,
    };

    // Fields counted by Kong's match weight, except paths, which depend on the group.
    let non_path_fields = [
        !spec.methods.is_empty(),
        !spec.hosts.is_empty(),
        !spec.headers.is_empty(),
        !spec.snis.is_empty(),
    ]
    .iter()
    .filter(|present| **present)
    .count() as u64;
    let plain_hosts = !spec.hosts.is_empty() && spec.hosts.iter().all(|h| !h.contains('*'));
    let base = Priority {
        fields: non_path_fields,
        plain_hosts,
        header_count: spec.headers.len(),
        regex_priority: spec.regex_priority,
    };

    if spec.paths.is_empty() {
        matchers.push(Matcher {
            route,
            group: 0,
            priority: base.value(GroupKind::None),
            created_at: spec.created_at,
            id: spec.id,
            paths: PathRule::Any,
        });
        return Ok(conditions);
    }

    // Group in order of first appearance: one group for all regexes, one per prefix length.
    let mut groups: Vec<(GroupKind, Vec<&str>)> = Vec::new();
    for path in &spec.paths {
        let kind = if path.starts_with('~') {
            GroupKind::Regex
        } else {
            GroupKind::Prefix(path.len())
        };
        match groups.iter_mut().find(|(existing, _)| *existing == kind) {
            Some((_, paths)) => paths.push(path.as_str()),
            None => groups.push((kind, vec![path.as_str()])),
        }
    }

    let with_paths = Priority {
        fields: base.fields + 1,
        ..base
    };
    for (group, (kind, paths)) in groups.into_iter().enumerate() {
        let rule = match kind {
            GroupKind::Regex => {
                let mut regexes = Vec::with_capacity(paths.len());
                for path in paths {
                    regexes.push(compile_path_regex(spec.id, path, cache)?);
                }
                PathRule::Regexes(regexes.into())
            }
            _ => PathRule::Prefixes(paths.into_iter().map(Box::from).collect()),
        };
        matchers.push(Matcher {
            route,
            group: group as u32,
            priority: with_paths.value(kind),
            created_at: spec.created_at,
            id: spec.id,
            paths: rule,
        });
    }
    Ok(conditions)
}

/// The inputs of Kong's priority that are the same for every group of a route.
#[derive(Debug, Clone, Copy)]
struct Priority {
    fields: u64,
    plain_hosts: bool,
    header_count: usize,
    regex_priority: i64,
}

impl Priority {
    /// Kong's u64 layout: bits 61-63 field count, 60 all hosts plain, 52-59 header count,
    /// 51 regex path, 19-50 regex_priority (regex groups only), 0-18 prefix length.
    fn value(&self, kind: GroupKind) -> u64 {
        let mut priority = (self.fields & 0x7) << FIELDS_SHIFT;
        if self.plain_hosts {
            priority |= PLAIN_HOSTS_BIT;
        }
        priority |= (self.header_count.min(MAX_HEADER_COUNT) as u64) << HEADER_COUNT_SHIFT;
        match kind {
            GroupKind::None => {}
            GroupKind::Regex => {
                priority |= REGEX_BIT;
                priority |= regex_priority_bits(self.regex_priority) << REGEX_PRIORITY_SHIFT;
            }
            GroupKind::Prefix(length) => priority |= length as u64 & PREFIX_LENGTH_MASK,
        }
        priority
    }
}

/// Maps `regex_priority` into the 32 bits Kong reserves for it, keeping its order.
///
/// Kong shifts the raw value, so a negative `regex_priority` spills into the higher bits
/// there. Here the value is clamped to `i32` and offset by 2^31, so negative values rank
/// below zero, as they do in the traditional router. The offset is the same for every regex
/// group, and the regex bit already separates regex groups from prefix groups, so the order
/// among non-negative values is exactly Kong's.
fn regex_priority_bits(regex_priority: i64) -> u64 {
    let clamped = regex_priority.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
    (clamped - i64::from(i32::MIN)) as u64
}

fn compile_headers<P>(spec: &RouteSpec<P>) -> Result<Box<[HeaderRule]>, BuildError> {
    let mut rules = Vec::with_capacity(spec.headers.len());
    for (name, values) in &spec.headers {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| BuildError::InvalidHeaderName {
                route_id: spec.id,
                name: name.clone(),
            })?;
        let mut value_rules = Vec::with_capacity(values.len());
        for value in values {
            let rule = match value.strip_prefix("~*") {
                Some(pattern) => HeaderValueRule::Regex(
                    RegexBuilder::new(pattern)
                        .case_insensitive(true)
                        .build()
                        .map_err(|source| BuildError::InvalidRegex {
                            route_id: spec.id,
                            pattern: value.clone(),
                            source,
                        })?,
                ),
                None => HeaderValueRule::Exact(value.to_ascii_lowercase().into_boxed_str()),
            };
            value_rules.push(rule);
        }
        rules.push(HeaderRule {
            name: header_name,
            values: value_rules.into(),
        });
    }
    Ok(rules.into())
}

/// Compiles a `~regex` path as Kong does: the `~` dropped and `^` prepended (anchored at
/// the start only). Kong also rewrites `(?<` to `(?P<` for older Rust regex; the `regex`
/// crate accepts both spellings since 1.9, so no rewrite is needed.
fn compile_path_regex(
    route_id: Uuid,
    path: &str,
    cache: &mut RegexCache,
) -> Result<Regex, BuildError> {
    // Paths in a regex group start with '~', which is one byte.
    let pattern = format!("^{}", &path[1..]);
    if let Some(regex) = cache.get(&pattern) {
        return Ok(regex.clone());
    }
    let regex = Regex::new(&pattern).map_err(|source| BuildError::InvalidRegex {
        route_id,
        pattern: path.to_owned(),
        source,
    })?;
    cache.insert(pattern, regex.clone());
    Ok(regex)
}

/// An empty field places no constraint; otherwise one of its values must match.
fn empty_or_any<T>(items: &[T], predicate: impl FnMut(&T) -> bool) -> bool {
    items.is_empty() || items.iter().any(predicate)
}

/// Kong's `split_host_port`: the text after the first ':' is a port only if it is a number.
/// Otherwise the whole entry is the host (an IPv6 literal, or a port that cannot exist).
fn split_host_port(raw: &str) -> (&str, Option<u16>) {
    match raw.split_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) => (host, Some(port)),
            Err(_) => (raw, None),
        },
        None => (raw, None),
    }
}

/// Kong drops the trailing dot of a fully qualified SNI before routing.
fn normalize_sni(sni: &str) -> Box<str> {
    let trimmed = if sni.len() > 1 {
        sni.strip_suffix('.').unwrap_or(sni)
    } else {
        sni
    };
    trimmed.to_ascii_lowercase().into_boxed_str()
}

/// The literal text every match of the anchored regex `pattern` (without its `^`) must
/// start with. Empty when none can be proven. The index relies on this, so it errs
/// towards shorter prefixes:
/// * A `|` at the top level makes Kong's `^a|b` unanchored on the right branch, so there
///   is no prefix. A `|` next to a character class or a `#` (which can start a comment in
///   `(?x)` mode) is not parsed further and also gives no prefix.
/// * The literal run stops at the first metacharacter. If that is `?`, `*` or `{`, the
///   character before it is optional, so it is dropped too.
pub(crate) fn regex_literal_prefix(pattern: &str) -> &str {
    if pattern.contains('|')
        && (pattern.contains('[') || pattern.contains('#') || has_top_level_alternation(pattern))
    {
        return "";
    }
    let mut last_char_start = 0;
    for (i, c) in pattern.char_indices() {
        match c {
            '?' | '*' | '{' => return &pattern[..last_char_start],
            '\\' | '.' | '+' | '(' | ')' | '[' | ']' | '}' | '|' | '^' | '$' => {
                return &pattern[..i];
            }
            _ => last_char_start = i,
        }
    }
    pattern
}

/// Whether `pattern` (with no character class) has a `|` outside every group.
fn has_top_level_alternation(pattern: &str) -> bool {
    let mut depth = 0usize;
    let mut escaped = false;
    for byte in pattern.bytes() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' => escaped = true,
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b'|' if depth == 0 => return true,
            _ => {}
        }
    }
    false
}
