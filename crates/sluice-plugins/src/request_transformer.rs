//! `request-transformer` (Kong 3.10 `kong/plugins/request-transformer`): rewrites the request
//! before it goes upstream. Kong's order: the URI (`replace.uri`), the method, the headers, the
//! body, the query string; within each, remove, rename, replace, add, append, each list in the
//! order written.
//!
//! Entries are `name:value`. Values may be templates (see [`template`]); added values are
//! strings, also in a JSON body. Bodies transformed: JSON objects and
//! `application/x-www-form-urlencoded`; a multipart body is passed on untouched (Kong rewrites
//! it too; Sluice does not yet). Query arguments not touched keep their exact encoding.

mod template;

use async_trait::async_trait;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_plugin::{
    erase, typed_config, BodyError, Flow, Plugin, PluginBuildError, PluginFactory, PluginHandler,
    ProxyRequest, RequestCtx,
};

use template::{Env, Source, Template};

const PRIORITY: i64 = 801;

/// Largest body read to transform it.
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Lists {
    body: Vec<String>,
    headers: Vec<String>,
    querystring: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplaceLists {
    #[serde(flatten)]
    lists: Lists,
    uri: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Config {
    http_method: Option<String>,
    #[serde(default)]
    remove: Lists,
    #[serde(default)]
    rename: Lists,
    #[serde(default)]
    replace: ReplaceLists,
    #[serde(default)]
    add: Lists,
    #[serde(default)]
    append: Lists,
}

pub struct Factory;

/// One kind of operation on one part of the request.
struct Ops<N> {
    remove: Vec<N>,
    rename: Vec<(N, N)>,
    replace: Vec<(N, Template)>,
    add: Vec<(N, Template)>,
    append: Vec<(N, Template)>,
}

struct Handler {
    uri: Option<Template>,
    method: Option<Method>,
    headers: Ops<HeaderName>,
    body: Ops<String>,
    query: Ops<String>,
    /// Whether any value reads the request (then its headers are kept for rendering).
    templated: bool,
}

/// What a template reads: the request as it arrived at this plugin.
#[derive(Default)]
struct RequestEnv {
    headers: HeaderMap,
    query: Vec<(String, String)>,
    captures: Vec<(String, String)>,
}

/// A form or query argument: decoded name and value, and the exact text it came as (kept
/// when it is sent on unchanged).
struct Arg {
    name: String,
    value: String,
    raw: Option<String>,
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "request-transformer"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<std::sync::Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        let at = |field: &str, message: String| PluginBuildError::at(plugin, field, message);
        let method = config
            .http_method
            .as_deref()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| at("http_method", e.to_string())))
            .transpose()?;
        let uri = config
            .replace
            .uri
            .as_deref()
            .map(|uri| Template::parse(uri).map_err(|e| at("replace.uri", e)))
            .transpose()?;
        let headers = Ops {
            remove: header_names(&config.remove.headers, false)
                .map_err(|e| at("remove.headers", e))?
                .into_iter()
                .map(|(name, _)| name)
                .collect(),
            rename: header_names(&config.rename.headers, true)
                .map_err(|e| at("rename.headers", e))?
                .into_iter()
                .map(|(old, new)| (old, new.expect("checked with values")))
                .collect(),
            replace: header_values(&config.replace.lists.headers)
                .map_err(|e| at("replace.headers", e))?,
            add: header_values(&config.add.headers).map_err(|e| at("add.headers", e))?,
            append: header_values(&config.append.headers).map_err(|e| at("append.headers", e))?,
        };
        let args = |part: &str, pick: fn(&Lists) -> &Vec<String>| {
            let list = |lists: &Lists, op: &str| {
                pairs(pick(lists)).map_err(|e| at(&format!("{op}.{part}"), e))
            };
            Ok::<_, PluginBuildError>(Ops {
                remove: pick(&config.remove).clone(),
                rename: list(&config.rename, "rename")?
                    .into_iter()
                    .map(|(old, new)| (old, new.literal().unwrap_or_default().to_owned()))
                    .collect(),
                replace: list(&config.replace.lists, "replace")?,
                add: list(&config.add, "add")?,
                append: list(&config.append, "append")?,
            })
        };
        let body = args("body", |l| &l.body)?;
        let query = args("querystring", |l| &l.querystring)?;
        let templated = uri.iter().any(|t| t.literal().is_none())
            || headers.templates().any(|t| t.literal().is_none())
            || body.templates().any(|t| t.literal().is_none())
            || query.templates().any(|t| t.literal().is_none());
        Ok(erase(Handler {
            uri,
            method,
            headers,
            body,
            query,
            templated,
        }))
    }
}

/// `name:value` as Kong's `^([^:]+):*(.-)$` splits it: the name up to the first colon, the
/// value after all the colons that follow.
fn split(entry: &str) -> (&str, &str) {
    match entry.split_once(':') {
        Some((name, value)) => (name, value.trim_start_matches(':')),
        None => (entry, ""),
    }
}

/// Kong's header name check (`kong.tools.http.validate_header_name`).
fn header_name(name: &str) -> Result<HeaderName, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid
        .then(|| HeaderName::from_bytes(name.as_bytes()).ok())
        .flatten()
        .ok_or_else(|| format!("'{name}' is not a valid header"))
}

/// Header names (`remove`), or renames whose target must be a header name too.
fn header_names(
    entries: &[String],
    with_value: bool,
) -> Result<Vec<(HeaderName, Option<HeaderName>)>, String> {
    entries
        .iter()
        .map(|entry| {
            let (name, value) = if with_value {
                split(entry)
            } else {
                (entry.as_str(), "")
            };
            let name = header_name(name)?;
            let value = with_value.then(|| header_name(value)).transpose()?;
            Ok((name, value))
        })
        .collect()
}

fn header_values(entries: &[String]) -> Result<Vec<(HeaderName, Template)>, String> {
    entries
        .iter()
        .map(|entry| {
            if !entry.contains(':') {
                return Err(format!("'{entry}' has no value: expected 'name:value'"));
            }
            let (name, value) = split(entry);
            Ok((header_name(name)?, Template::parse(value)?))
        })
        .collect()
}

/// Body and query string entries: `name:value` with a non-empty value (Kong's
/// `check_for_value`).
fn pairs(entries: &[String]) -> Result<Vec<(String, Template)>, String> {
    entries
        .iter()
        .map(|entry| {
            let (name, value) = split(entry);
            if name.is_empty() || value.is_empty() {
                return Err(format!("key '{name}' has no value"));
            }
            Ok((name.to_owned(), Template::parse(value)?))
        })
        .collect()
}

/// The args of a query string or form body, in order.
fn parse_args(text: &str) -> Vec<Arg> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            Arg {
                name,
                value,
                raw: Some(pair.to_owned()),
            }
        })
        .collect()
}

fn encode_args(args: &[Arg]) -> String {
    let encoded: Vec<String> = args
        .iter()
        .map(|arg| match &arg.raw {
            Some(raw) => raw.clone(),
            None => form_urlencoded::Serializer::new(String::new())
                .append_pair(&arg.name, &arg.value)
                .finish(),
        })
        .collect();
    encoded.join("&")
}

fn content_is(headers: &HeaderMap, kind: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains(kind))
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

// === impl Ops ===

impl<N> Ops<N> {
    fn templates(&self) -> impl Iterator<Item = &Template> {
        [&self.replace, &self.add, &self.append]
            .into_iter()
            .flatten()
            .map(|(_, template)| template)
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

impl Ops<String> {
    /// Applies the operations to query or form args. `has_content` is false for an empty
    /// body, where Kong only adds and appends. Returns whether anything changed.
    fn apply_args(&self, args: &mut Vec<Arg>, has_content: bool, env: &dyn Env) -> bool {
        let before = args.len();
        let mut changed = false;
        if has_content {
            for name in &self.remove {
                args.retain(|a| a.name != *name);
            }
            changed |= args.len() != before;
            for (old, new) in &self.rename {
                if old != new && args.iter().any(|a| a.name == *old) {
                    args.retain(|a| a.name != *new);
                    for arg in args.iter_mut().filter(|a| a.name == *old) {
                        arg.name = new.clone();
                        arg.raw = None;
                    }
                    changed = true;
                }
            }
            for (name, value) in &self.replace {
                if let Some(first) = args.iter().position(|a| a.name == *name) {
                    args[first].value = value.render(env);
                    args[first].raw = None;
                    let mut index = 0;
                    args.retain(|a| {
                        index += 1;
                        index - 1 == first || a.name != *name
                    });
                    changed = true;
                }
            }
        }
        for (name, value) in &self.add {
            if !args.iter().any(|a| a.name == *name) {
                args.push(Arg {
                    name: name.clone(),
                    value: value.render(env),
                    raw: None,
                });
                changed = true;
            }
        }
        for (name, value) in &self.append {
            args.push(Arg {
                name: name.clone(),
                value: value.render(env),
                raw: None,
            });
            changed = true;
        }
        changed
    }

    /// Applies the operations to a JSON object body. Returns whether anything changed.
    fn apply_json(
        &self,
        object: &mut Map<String, Value>,
        has_content: bool,
        env: &dyn Env,
    ) -> bool {
        let mut changed = false;
        if has_content {
            for name in &self.remove {
                changed |= object.remove(name).is_some();
            }
            for (old, new) in &self.rename {
                if old != new {
                    if let Some(value) = object.remove(old) {
                        object.insert(new.clone(), value);
                        changed = true;
                    }
                }
            }
            for (name, value) in &self.replace {
                if let Some(slot) = object.get_mut(name) {
                    *slot = Value::String(value.render(env));
                    changed = true;
                }
            }
        }
        for (name, value) in &self.add {
            if !object.contains_key(name) {
                object.insert(name.clone(), Value::String(value.render(env)));
                changed = true;
            }
        }
        for (name, value) in &self.append {
            let value = Value::String(value.render(env));
            // Kong: a string becomes [old, new], an array grows, anything else is replaced.
            let slot = object.entry(name.clone()).or_insert(Value::Null);
            *slot = match std::mem::take(slot) {
                Value::String(old) => json!([old, value]),
                Value::Array(mut items) => {
                    items.push(value);
                    Value::Array(items)
                }
                _ => json!([value]),
            };
            changed = true;
        }
        changed
    }
}

// === impl Handler ===

impl Handler {
    fn transform_headers(&self, request: &mut ProxyRequest, ctx: &mut RequestCtx, env: &dyn Env) {
        let headers = &mut request.parts.headers;
        let ops = &self.headers;
        let host = http::header::HOST;
        for name in &ops.remove {
            if *name != host {
                headers.remove(name);
            }
        }
        for (old, new) in &ops.rename {
            if old == new || *old == host || *new == host {
                continue;
            }
            let values: Vec<HeaderValue> = match headers.entry(old) {
                http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
                http::header::Entry::Vacant(_) => continue,
            };
            headers.remove(new);
            for value in values {
                headers.append(new.clone(), value);
            }
        }
        for (name, value) in &ops.replace {
            let Ok(value) = HeaderValue::from_str(&value.render(env)) else {
                continue;
            };
            if *name == host {
                // The Host sent upstream is the upstream's.
                if let (Some(upstream), Ok(text)) = (ctx.upstream.as_mut(), value.to_str()) {
                    upstream.host_header = text.to_owned();
                }
            } else if headers.contains_key(name) {
                headers.insert(name.clone(), value);
            }
        }
        for (name, value) in &ops.add {
            if *name != host && !headers.contains_key(name) {
                if let Ok(value) = HeaderValue::from_str(&value.render(env)) {
                    headers.insert(name.clone(), value);
                }
            }
        }
        for (name, value) in &ops.append {
            if *name != host {
                if let Ok(value) = HeaderValue::from_str(&value.render(env)) {
                    headers.append(name.clone(), value);
                }
            }
        }
    }

    /// The body, when it is JSON or a form and there is something to do to it. `Err` is the
    /// answer for a body that could not be read.
    async fn transform_body(
        &self,
        request: &mut ProxyRequest,
        ctx: &RequestCtx,
        env: &dyn Env,
    ) -> Result<(), Flow> {
        let headers = &request.parts.headers;
        let (json, form) = (content_is(headers, JSON), content_is(headers, FORM));
        if self.body.is_empty() || !(json || form) {
            return Ok(());
        }
        let bytes = read_body(request, ctx).await?;
        let has_content = !bytes.is_empty();
        let rewritten = if json {
            let mut value = if has_content {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(value) => value,
                    // Not JSON after all: sent on as it came, as Kong does.
                    Err(_) => return Ok(()),
                }
            } else {
                Value::Object(Map::new())
            };
            let Value::Object(object) = &mut value else {
                return Ok(());
            };
            self.body
                .apply_json(object, has_content, env)
                .then(|| value.to_string())
        } else {
            let mut args = parse_args(&String::from_utf8_lossy(&bytes));
            self.body
                .apply_args(&mut args, has_content, env)
                .then(|| encode_args(&args))
        };
        if let Some(body) = rewritten {
            request.set_body(body.into());
        }
        Ok(())
    }

    /// Kong: turning a form POST into a GET (HEAD, TRACE) moves its fields to the query.
    async fn form_to_query(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
    ) -> Result<(), Flow> {
        if !content_is(&request.parts.headers, FORM) {
            return Ok(());
        }
        let bytes = read_body(request, ctx).await?;
        let Some(upstream) = ctx.upstream.as_mut() else {
            return Ok(());
        };
        let fields = String::from_utf8_lossy(&bytes);
        let fields = fields.trim_matches('&');
        if fields.is_empty() {
            return Ok(());
        }
        let separator = if upstream.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        upstream.path_and_query = format!("{}{separator}{fields}", upstream.path_and_query);
        Ok(())
    }

    fn transform_query(&self, ctx: &mut RequestCtx, env: &dyn Env) {
        if self.query.is_empty() {
            return;
        }
        let Some(upstream) = ctx.upstream.as_mut() else {
            return;
        };
        let (path, query) = match upstream.path_and_query.split_once('?') {
            Some((path, query)) => (path.to_owned(), query.to_owned()),
            None => (upstream.path_and_query.clone(), String::new()),
        };
        let mut args = parse_args(&query);
        if self.query.apply_args(&mut args, true, env) {
            upstream.path_and_query = if args.is_empty() {
                path
            } else {
                format!("{path}?{}", encode_args(&args))
            };
        }
    }
}

/// The whole body, or Kong's error answer for one that could not be read.
async fn read_body(request: &mut ProxyRequest, ctx: &RequestCtx) -> Result<bytes::Bytes, Flow> {
    request.buffer(MAX_BODY).await.map_err(|error| {
        let (status, message) = match error {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
            BodyError::Timeout => (StatusCode::REQUEST_TIMEOUT, "Request timeout"),
            BodyError::Read(_) => (StatusCode::BAD_REQUEST, "Bad request"),
        };
        crate::auth::error(ctx, status, message, None)
    })
}

#[async_trait]
impl Plugin for Handler {
    type State = ();

    fn name(&self) -> &'static str {
        "request-transformer"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(&self, request: &mut ProxyRequest, ctx: &mut RequestCtx, _: &mut ()) -> Flow {
        // What templates read is copied only when a value has one; most configs have none.
        let env = if self.templated {
            RequestEnv {
                headers: request.parts.headers.clone(),
                query: request
                    .parts
                    .uri
                    .query()
                    .map(|query| {
                        form_urlencoded::parse(query.as_bytes())
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                captures: ctx.uri_captures.clone(),
            }
        } else {
            RequestEnv::default()
        };
        self.transform(request, ctx, &env).await
    }
}

impl Handler {
    async fn transform(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
        env: &RequestEnv,
    ) -> Flow {
        if let (Some(uri), Some(upstream)) = (&self.uri, ctx.upstream.as_mut()) {
            let path = uri.render(env);
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            upstream.path_and_query = match upstream.path_and_query.split_once('?') {
                Some((_, query)) => format!("{path}?{query}"),
                None => path,
            };
        }
        if let Some(method) = &self.method {
            request.parts.method = method.clone();
            if matches!(method.as_str(), "GET" | "HEAD" | "TRACE") {
                if let Err(answer) = self.form_to_query(request, ctx).await {
                    return answer;
                }
            }
        }
        self.transform_headers(request, ctx, env);
        if let Err(answer) = self.transform_body(request, ctx, env).await {
            return answer;
        }
        self.transform_query(ctx, env);
        Flow::Continue
    }
}

// === impl RequestEnv ===

impl Env for RequestEnv {
    fn lookup(&self, source: Source, key: &str) -> Option<String> {
        match source {
            // Kong's header table reads `x_user` as `x-user`, case-insensitively.
            Source::Headers => self
                .headers
                .get(key.replace('_', "-").to_ascii_lowercase())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            Source::QueryParams => self
                .query
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.clone()),
            Source::UriCaptures => self
                .captures
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    impl Env for Nothing {
        fn lookup(&self, _: Source, _: &str) -> Option<String> {
            None
        }
    }

    fn ops(entries: &[(&str, &[&str])]) -> Ops<String> {
        let list = |key: &str| -> Vec<String> {
            entries
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        };
        Ops {
            remove: list("remove"),
            rename: pairs(&list("rename"))
                .unwrap()
                .into_iter()
                .map(|(a, b)| (a, b.literal().unwrap().to_owned()))
                .collect(),
            replace: pairs(&list("replace")).unwrap(),
            add: pairs(&list("add")).unwrap(),
            append: pairs(&list("append")).unwrap(),
        }
    }

    #[test]
    fn args_change_in_kongs_order_and_untouched_ones_keep_their_encoding() {
        let ops = ops(&[
            ("remove", &["drop"]),
            ("rename", &["old:new"]),
            ("replace", &["v:2"]),
            ("add", &["v:9", "extra:a b"]),
            ("append", &["list:z"]),
        ]);
        let mut args = parse_args("keep=%7E&drop=1&old=x&v=1&v=0&list=y");
        assert!(ops.apply_args(&mut args, true, &Nothing));
        assert_eq!(
            encode_args(&args),
            "keep=%7E&new=x&v=2&list=y&extra=a+b&list=z"
        );
    }

    #[test]
    fn json_append_follows_kong() {
        let ops = ops(&[("append", &["s:b", "a:2", "n:x"])]);
        let mut object = json!({"s": "a", "a": ["1"], "n": 5});
        let Value::Object(map) = &mut object else {
            unreachable!()
        };
        assert!(ops.apply_json(map, true, &Nothing));
        assert_eq!(
            object,
            json!({"s": ["a", "b"], "a": ["1", "2"], "n": ["x"]})
        );
    }

    #[test]
    fn entries_split_as_kongs_pattern_does() {
        assert_eq!(split("a::b:c"), ("a", "b:c"));
        assert_eq!(split("a"), ("a", ""));
        assert_eq!(pairs(&["a:".into()]).err().unwrap(), "key 'a' has no value");
        assert_eq!(
            header_name("x y").err().unwrap(),
            "'x y' is not a valid header"
        );
    }
}
