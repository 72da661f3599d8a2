//! Building a validated entity from input: defaults, JSON Schema, then the entity checks that
//! a JSON Schema cannot express (Kong's `entity_checks` and custom validators).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::entity::{AnyEntity, BasicAuth, Entity, EntityKind, Plugin, Route};
use crate::schema::Schemas;
use crate::violation::SchemaViolation;

/// Most tags one entity may carry. Kong's schema sets no number; Sluice bounds it so one
/// write cannot carry an unbounded set through validation, storage and every tag filter.
pub const MAX_TAGS: usize = 1_000;

const NAME_CHARS: &str = "the only accepted ascii characters are alphanumerics or ., -, _, and ~";

// === impl Schemas ===

impl Schemas {
    /// Validates `input` (a JSON object carrying `id`, `created_at` and `updated_at` minted by
    /// the caller) and builds the typed entity. Every problem is reported, not only the first.
    pub fn build<E: Entity>(&self, input: Map<String, Value>) -> Result<E, SchemaViolation> {
        let written_password = match E::KIND {
            EntityKind::BasicAuth => input
                .get("password")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        let value = self.validated(E::KIND, input)?;
        let mut entity: E = serde_json::from_value(value).map_err(|error| {
            let mut violation = SchemaViolation::default();
            violation.entity(error.to_string());
            violation
        })?;
        if let Some(credential) =
            (&mut entity as &mut dyn std::any::Any).downcast_mut::<BasicAuth>()
        {
            credential.password_as_written = written_password;
        }
        // The compile checks take the typed entity: check it once it exists rather than
        // deserializing the JSON a second time.
        let mut violation = SchemaViolation::default();
        if let Some(check) = self.compile_check() {
            let any: &dyn std::any::Any = &entity;
            if let Some(route) = any.downcast_ref::<Route>() {
                check.route(route, &mut violation);
            } else if let Some(plugin) = any.downcast_ref::<Plugin>() {
                check.plugin(plugin, &mut violation);
            }
        }
        if violation.is_empty() {
            Ok(entity)
        } else {
            Err(violation)
        }
    }

    /// [`Schemas::build`] for a kind known only at run time (a sync plan's change).
    pub fn build_any(
        &self,
        kind: EntityKind,
        input: Map<String, Value>,
    ) -> Result<AnyEntity, SchemaViolation> {
        Ok(match kind {
            EntityKind::Service => AnyEntity::Service(self.build(input)?),
            EntityKind::Route => AnyEntity::Route(self.build(input)?),
            EntityKind::Consumer => AnyEntity::Consumer(self.build(input)?),
            EntityKind::Plugin => AnyEntity::Plugin(self.build(input)?),
            EntityKind::KeyAuth => AnyEntity::KeyAuth(self.build(input)?),
            EntityKind::BasicAuth => AnyEntity::BasicAuth(self.build(input)?),
            EntityKind::Acl => AnyEntity::Acl(self.build(input)?),
        })
    }

    /// Like [`Schemas::build`], but stops at the validated JSON with defaults filled.
    pub fn check(
        &self,
        kind: EntityKind,
        input: Map<String, Value>,
    ) -> Result<Value, SchemaViolation> {
        let value = self.validated(kind, input)?;
        let mut violation = SchemaViolation::default();
        self.run_compile_check(kind, &value, &mut violation);
        if violation.is_empty() {
            Ok(value)
        } else {
            Err(violation)
        }
    }

    /// Everything but the compile checks: url shorthand, defaults, sets, JSON Schema, Kong's
    /// entity checks and the plugin cross-field checks.
    fn validated(
        &self,
        kind: EntityKind,
        mut input: Map<String, Value>,
    ) -> Result<Value, SchemaViolation> {
        let mut violation = SchemaViolation::default();
        if kind == EntityKind::Service {
            expand_service_url(&mut input, &mut violation);
        }
        if kind == EntityKind::KeyAuth && input.get("key").is_none_or(Value::is_null) {
            // Kong generates a key when none is given.
            input.insert(
                "key".to_owned(),
                Value::String(crate::credentials::generate_key()),
            );
        }
        if kind == EntityKind::Route && input.get("strip_path").is_none_or(Value::is_null) {
            // Kong's grpc/grpcs route subschema defaults strip_path to false (the
            // entity's default, true, is for http).
            let protocols = input.get("protocols").and_then(Value::as_array);
            let grpc = protocols.is_some_and(|protocols| {
                protocols
                    .iter()
                    .any(|p| matches!(p.as_str(), Some("grpc" | "grpcs")))
            });
            if grpc {
                input.insert("strip_path".to_owned(), Value::Bool(false));
            }
        }
        let mut value = Value::Object(input);
        let schema = self.entity(kind);
        schema.fill_defaults(&mut value);
        dedupe_sets(&schema.raw, &mut value);
        let url_failed = violation.fields.contains_key(&vec!["url".to_owned()]);
        for (path, message) in schema.validate(&value).fields {
            // A bad `url` leaves host unset; reporting that too would only be noise.
            if url_failed && path == ["host"] {
                continue;
            }
            violation.field_at(path, message);
        }
        if value["tags"]
            .as_array()
            .is_some_and(|tags| tags.len() > MAX_TAGS)
        {
            violation.field("tags", format!("at most {MAX_TAGS} tags are allowed"));
        }
        match kind {
            EntityKind::Service => check_service(&value, &mut violation),
            EntityKind::Route => check_route(&value, &mut violation),
            EntityKind::Consumer => check_consumer(&value, &mut violation),
            EntityKind::Plugin => self.check_plugin(&mut value, &mut violation),
            EntityKind::BasicAuth => hash_basic_auth(&mut value, &violation),
            EntityKind::KeyAuth | EntityKind::Acl => {}
        }
        if violation.is_empty() {
            Ok(value)
        } else {
            Err(violation)
        }
    }

    /// The data plane's own checks (see [`crate::compile_check`]) on the typed entity.
    fn run_compile_check(&self, kind: EntityKind, value: &Value, violation: &mut SchemaViolation) {
        let Some(check) = self.compile_check() else {
            return;
        };
        let typed = match kind {
            EntityKind::Route => {
                Route::deserialize(value).map(|route| check.route(&route, violation))
            }
            EntityKind::Plugin => {
                Plugin::deserialize(value).map(|plugin| check.plugin(&plugin, violation))
            }
            _ => Ok(()),
        };
        if let Err(error) = typed {
            violation.entity(error.to_string());
        }
    }

    /// Validates a plugin's `config` against `schemas/plugins/<name>.json`, filling defaults.
    fn check_plugin(&self, value: &mut Value, violation: &mut SchemaViolation) {
        let Some(name) = value["name"].as_str().map(str::to_owned) else {
            return;
        };
        let Some(plugin) = self.plugin(&name) else {
            // Kong's words up to the semicolon (tools match on them); then what is true for
            // Sluice, which has no `plugins` setting to add it to.
            let known: Vec<&str> = self.plugins().map(|p| p.name.as_str()).collect();
            violation.field(
                "name",
                format!(
                    "plugin '{name}' not enabled; Sluice has: {}",
                    known.join(", ")
                ),
            );
            return;
        };
        if plugin.schema.raw["x-no-consumer"] == true && !value["consumer"].is_null() {
            // Kong's `typedefs.no_consumer`: an auth plugin identifies the consumer, so it
            // cannot be scoped to one.
            violation.field("consumer", "value must be null");
        }
        let config = &mut value["config"];
        if !config.is_object() {
            return; // the entity schema already reported it
        }
        let mut shorthand_violation = SchemaViolation::default();
        crate::shorthands::translate(&name, config, &mut shorthand_violation);
        plugin.schema.fill_defaults(config);
        dedupe_sets(&plugin.schema.raw, config);
        let mut config_violation = plugin.schema.validate(config);
        for message in shorthand_violation.entity {
            config_violation.entity(message);
        }
        if config_violation.is_empty() {
            crate::plugins::check(&name, config, &mut config_violation);
        }
        for (path, whole) in crate::vault::references(config) {
            let checked = match crate::vault::parse(&whole) {
                Some(Ok(reference)) => reference.check(&whole),
                Some(Err(message)) => Err(message),
                None => Ok(()),
            };
            if let Err(message) = checked {
                config_violation.field(&path, message);
            }
        }
        violation.nest("config", config_violation);
    }
}

// === service ===

/// Kong's `url` shorthand: sets protocol, host, port and path, and is never stored.
fn expand_service_url(input: &mut Map<String, Value>, violation: &mut SchemaViolation) {
    let Some(url) = input.remove("url") else {
        return;
    };
    if url.is_null() {
        return;
    }
    let Some(url) = url.as_str() else {
        violation.field("url", "expected a string");
        return;
    };
    if !url.contains("://") {
        // Kong's url parser takes text without a scheme for a path: the answer names what
        // is then missing or wrong (`host: required field missing; path: should start with:
        // /`), not the url.
        input.remove("host");
        input.insert("path".into(), Value::from(url));
        return;
    }
    match parse_url(url) {
        Ok(parts) => {
            input.insert("protocol".into(), Value::from(parts.scheme));
            input.insert("host".into(), Value::from(parts.host));
            input.insert("port".into(), Value::from(parts.port));
            input.insert("path".into(), parts.path.map_or(Value::Null, Value::from));
        }
        Err(message) => violation.field("url", message),
    }
}

struct UrlParts {
    scheme: String,
    host: String,
    port: u16,
    path: Option<String>,
}

fn parse_url(url: &str) -> Result<UrlParts, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("missing scheme in url '{url}'"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], Some(&rest[at..])),
        None => (rest, None),
    };
    if authority.is_empty() {
        return Err(format!("missing host in url '{url}'"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("invalid host in url '{url}'"))?;
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("invalid port in url '{url}'"))?,
        None => match scheme.as_str() {
            "https" | "grpcs" | "tls" | "wss" => 443,
            _ => 80,
        },
    };
    Ok(UrlParts {
        scheme,
        host,
        port,
        path: path.filter(|p| !p.is_empty()).map(str::to_owned),
    })
}

fn check_service(value: &Value, violation: &mut SchemaViolation) {
    if let Some(host) = value["host"].as_str() {
        if let Some(message) = host_error(host, false) {
            violation.field("host", message);
        }
    }
    let protocol = value["protocol"].as_str().unwrap_or("http");
    if let Some(path) = value["path"].as_str() {
        if !matches!(protocol, "http" | "https" | "ws" | "wss") {
            violation.field(
                "path",
                format!("value must be null when 'protocol' is '{protocol}'"),
            );
        } else if let Some(message) = path_error(path) {
            violation.field("path", message);
        }
    }
    if !matches!(protocol, "https" | "tls" | "grpcs" | "wss") {
        for field in [
            "tls_verify",
            "tls_verify_depth",
            "ca_certificates",
            "client_certificate",
        ] {
            if !value[field].is_null() {
                violation.field(
                    field,
                    format!("value must be null when 'protocol' is '{protocol}'"),
                );
            }
        }
    }
}

/// Kong's hostname rules; `wildcard` allows one `*` as the leftmost or rightmost label.
fn host_error(host: &str, wildcard: bool) -> Option<String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !host.starts_with('[') => (name, Some(port)),
        _ => (host, None),
    };
    if port.is_some() && !wildcard {
        return Some("must not have a port".to_owned());
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Some(format!("invalid port number: {port}"));
        }
    }
    if host.starts_with('[') {
        return None; // IPv6 literal
    }
    let stars = name.matches('*').count();
    if stars > 0 {
        if !wildcard {
            return Some(format!("invalid hostname: {host}"));
        }
        if stars > 1 {
            return Some("invalid wildcard: must have at most one wildcard".to_owned());
        }
        if !(name.starts_with("*.") || name.ends_with(".*")) {
            return Some(
                "invalid wildcard: must be placed at leftmost or rightmost label".to_owned(),
            );
        }
    }
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && (label == "*"
                    || label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        });
    if valid {
        None
    } else {
        Some(format!("invalid hostname: {host}"))
    }
}

/// A prefix path must already be normalized (Kong refuses `//`, `/./`, `/../`).
fn path_error(path: &str) -> Option<String> {
    if path.contains("//") {
        return Some("must not have empty segments".to_owned());
    }
    let normalized = normalize_path(path);
    if normalized != path {
        return Some(format!(
            "non-normalized path, consider use '{normalized}' instead"
        ));
    }
    None
}

fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') && path.len() > 1;
    for segment in path.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    out
}

// === route ===

fn check_route(value: &Value, violation: &mut SchemaViolation) {
    let protocols: Vec<&str> = value["protocols"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let has = |p: &str| protocols.contains(&p);
    let set = |field: &str| match &value[field] {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };

    let groups: [&[&str]; 5] = [
        &["http", "https"],
        &["tcp", "tls", "udp"],
        &["tls_passthrough"],
        &["grpc", "grpcs"],
        &["ws", "wss"],
    ];
    let used: Vec<_> = groups.iter().filter(|g| g.iter().any(|p| has(p))).collect();
    if used.len() > 1 {
        violation.field(
            "protocols",
            "these sets are mutually exclusive: ('grpc', 'grpcs'), ('http', 'https'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('ws', 'wss')",
        );
        return;
    }

    if has("http") || has("https") {
        let proto = if has("https") { "https" } else { "http" };
        let mut needed = vec!["methods", "hosts", "headers", "paths"];
        if proto == "https" {
            needed.push("snis");
        }
        if !needed.iter().any(|f| set(f)) {
            let names: Vec<String> = needed.iter().map(|f| format!("'{f}'")).collect();
            violation.entity(format!(
                "must set one of {} when 'protocols' is '{proto}'",
                names.join(", ")
            ));
        }
        for field in ["sources", "destinations"] {
            if set(field) {
                violation.entity(format!(
                    "cannot set '{field}' when 'protocols' is 'http' or 'https'"
                ));
            }
        }
        if set("snis") && !has("https") {
            violation.field(
                "snis",
                "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
            );
        }
    } else if has("ws") || has("wss") {
        check_ws_route(value, has("wss"), violation);
    } else if has("grpc") || has("grpcs") {
        if value["strip_path"].as_bool() == Some(true) {
            violation.field(
                "strip_path",
                "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
            );
        }
        if !["hosts", "headers", "paths"].iter().any(|f| set(f)) {
            violation.entity(
                "must set one of 'hosts', 'headers', 'paths' when 'protocols' is 'grpc' or 'grpcs'",
            );
        }
    } else if !protocols.is_empty() && !["sources", "destinations", "snis"].iter().any(|f| set(f)) {
        violation.entity(format!(
            "must set one of 'sources', 'destinations', 'snis' when 'protocols' is '{}'",
            protocols[0]
        ));
    }

    if let Some(hosts) = value["hosts"].as_array() {
        for (index, host) in hosts.iter().enumerate() {
            if let Some(message) = host.as_str().and_then(|h| host_error(h, true)) {
                violation.field(&format!("hosts.{index}"), message);
            }
        }
    }
    if let Some(paths) = value["paths"].as_array() {
        for (index, path) in paths.iter().enumerate() {
            let Some(path) = path.as_str() else { continue };
            let message = if let Some(pattern) = path.strip_prefix('~') {
                regex::Regex::new(pattern)
                    .err()
                    .map(|e| format!("invalid regex: '{pattern}' ({e})"))
            } else if path.starts_with('/') {
                path_error(path)
            } else {
                None
            };
            if let Some(message) = message {
                violation.field(&format!("paths.{index}"), message);
            }
        }
    }
    if let Some(headers) = value["headers"].as_object() {
        for (name, values) in headers {
            if name.eq_ignore_ascii_case("host") {
                violation.field(
                    "headers",
                    "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
                );
            }
            for (index, v) in values.as_array().into_iter().flatten().enumerate() {
                if let Some(pattern) = v.as_str().and_then(|v| v.strip_prefix("~*")) {
                    if let Err(e) = regex::Regex::new(pattern) {
                        violation.field(
                            &format!("headers.{name}.{index}"),
                            format!("invalid regex: '{pattern}' ({e})"),
                        );
                    }
                }
            }
        }
    }
}

/// A WebSocket route: a handshake is always a GET, so `methods` has no say; otherwise the
/// http rules (one of hosts, headers, paths; `snis` only with wss).
fn check_ws_route(value: &Value, secure: bool, violation: &mut SchemaViolation) {
    let set = |field: &str| match &value[field] {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    if set("methods") {
        violation.field(
            "methods",
            "cannot set 'methods' when 'protocols' is 'ws' or 'wss'",
        );
    }
    let proto = if secure { "wss" } else { "ws" };
    let mut needed = vec!["hosts", "headers", "paths"];
    if secure {
        needed.push("snis");
    }
    if !needed.iter().any(|f| set(f)) {
        let names: Vec<String> = needed.iter().map(|f| format!("'{f}'")).collect();
        violation.entity(format!(
            "must set one of {} when 'protocols' is '{proto}'",
            names.join(", ")
        ));
    }
    for field in ["sources", "destinations"] {
        if set(field) {
            violation.entity(format!(
                "cannot set '{field}' when 'protocols' is 'ws' or 'wss'"
            ));
        }
    }
    if set("snis") && !secure {
        violation.field(
            "snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls', 'tls_passthrough' or 'wss'",
        );
    }
}

// === consumer ===

fn check_consumer(value: &Value, violation: &mut SchemaViolation) {
    let present = |f: &str| value[f].as_str().is_some_and(|s| !s.is_empty());
    if !present("username") && !present("custom_id") {
        violation.entity("at least one of these fields must be non-empty: 'custom_id', 'username'");
    }
}

// === credentials ===

/// Replaces a valid basic-auth input's password with the hash Kong stores.
fn hash_basic_auth(value: &mut Value, violation: &SchemaViolation) {
    if !violation.is_empty() {
        return;
    }
    let consumer = value["consumer"]["id"]
        .as_str()
        .and_then(|id| id.parse::<uuid::Uuid>().ok());
    if let (Some(password), Some(consumer)) = (value["password"].as_str(), consumer) {
        let hashed = crate::credentials::hash_password(password, consumer);
        value["password"] = Value::String(hashed);
    }
}

// === shared ===

/// Kong's `set` type drops duplicates silently instead of failing.
fn dedupe_sets(schema: &Value, value: &mut Value) {
    let (Some(properties), Some(object)) =
        (schema["properties"].as_object(), value.as_object_mut())
    else {
        return;
    };
    for (name, sub) in properties {
        let Some(child) = object.get_mut(name) else {
            continue;
        };
        if sub["x-kong-type"] == "set" {
            if let Some(items) = child.as_array_mut() {
                // Linear: a hash of each item's JSON text (Value itself is not Hash).
                let mut seen = std::collections::HashSet::with_capacity(items.len());
                items.retain(|item| seen.insert(item.to_string()));
            }
        } else if child.is_object() {
            dedupe_sets(sub, child);
        }
    }
}

/// The name rule shared by services, routes and plugin instance names, for callers that check
/// names outside a schema (URL keys).
pub fn name_error(name: &str) -> Option<String> {
    let ok = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '~') || !c.is_ascii());
    (!ok).then(|| format!("invalid value '{name}': {NAME_CHARS}"))
}

#[cfg(test)]
mod tests;
