//! `GET /`, `GET /status` and the schema endpoints decK reads defaults from.

use axum::body::Bytes;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Map, Value};
use sluice_model::{EntityKind, SchemaViolation, KONG_COMPAT_VERSION};
use uuid::Uuid;

use crate::error::ApiError;
use crate::{body, AdminState};

/// `GET /`: Kong's node information. decK reads `version` to pick its file format.
pub async fn root(State(state): State<AdminState>) -> Json<Value> {
    let node = state.node();
    let mut available = Map::new();
    for plugin in state.schemas().plugins() {
        available.insert(
            plugin.name.clone(),
            json!({"version": plugin.version, "priority": plugin.priority}),
        );
    }
    // Kong lists the plugins configured somewhere, not every plugin it has.
    let enabled = state.store().plugin_names().await.unwrap_or_default();
    Json(json!({
        "tagline": "Welcome to kong",
        "version": KONG_COMPAT_VERSION,
        "edition": "community",
        "sluice_version": env!("CARGO_PKG_VERSION"),
        "hostname": node.hostname,
        "node_id": node.node_id,
        "lua_version": null,
        "timers": {"running": 0, "pending": 0},
        "plugins": {
            "available_on_server": available,
            "enabled_in_cluster": enabled,
        },
        "configuration": {
            "database": node.database,
            "role": node.role,
            "admin_listen": [node.admin_listen],
            "proxy_listen": [node.proxy_listen],
            "plugins": ["bundled"],
        },
        "pids": {"master": std::process::id()},
    }))
}

/// `GET /metrics`: the node's metrics in Prometheus' format (Kong's prometheus plugin
/// serves the same path on its Admin API), with whether the database answers.
pub async fn metrics(State(state): State<AdminState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(render) = state.metrics().cloned() else {
        return crate::error::ApiError::NotFound.into_response();
    };
    let reachable = if state.dbless() {
        None
    } else {
        Some(state.store().ping().await)
    };
    let (content_type, body) = render(reachable);
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `GET /ai/targets`: ai-proxy-advanced's targets on this node (circuit, load, latency).
pub async fn ai_targets(State(state): State<AdminState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.ai_targets() {
        Some(value) => Json(value).into_response(),
        None => crate::error::ApiError::NotFound.into_response(),
    }
}

/// `GET /status`: Kong's shape, with the store's reachability and config version.
pub async fn status(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let unit = memory_unit(&params)?;
    let reachable = state.store().ping().await;
    let counters = state.counters();
    let rss = resident_set_size();
    let mut memory = json!({
        "workers_lua_vms": [],
        "lua_shared_dicts": {},
        "resident_set_size_bytes": rss,
    });
    if let Some((unit, scale)) = unit {
        memory["resident_set_size"] = bytes_to_text(rss, unit, scale);
    }
    Ok(Json(json!({
        "memory": memory,
        "server": {
            "total_requests": counters.total(),
            "connections_active": counters.active(),
            "connections_accepted": counters.total(),
            "connections_handled": counters.total(),
            "connections_reading": 0,
            "connections_writing": counters.active(),
            "connections_waiting": 0,
        },
        "database": {"reachable": reachable},
        // What is stored; `proxy.configuration_version` is what the proxy serves. They differ
        // for the moment a change takes to compile, or for good when the proxy refused it.
        "configuration_version": state.store().version(),
        "proxy": state.proxy_status(),
    })))
}

/// `GET /schemas/{entity}`.
pub async fn entity_schema(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kind = entity_kind(&name)?;
    let mut schema = state.schemas().entity(kind).to_kong();
    schema["entity_checks"] = entity_checks(kind);
    Ok(Json(schema))
}

/// Kong 3.x's `entity_checks` of each entity as `GET /schemas/{entity}` lists them (functions
/// left out, as Kong leaves them out): tools such as Kong Manager read the conditionals.
fn entity_checks(kind: EntityKind) -> Value {
    let null_unless = |protocols: &[&str], field: &str| {
        json!({"conditional": {
            "if_field": "protocol",
            "if_match": {"not_one_of": protocols},
            "then_field": field,
            "then_match": {"eq": null},
        }})
    };
    match kind {
        // kong/db/schema/entities/services.lua
        EntityKind::Service => json!([
            {"conditional": {
                "if_field": "protocol",
                "if_match": {"one_of": ["tcp", "tls", "udp", "grpc", "grpcs"]},
                "then_field": "path",
                "then_match": {"eq": null},
            }},
            null_unless(&["https", "tls"], "client_certificate"),
            null_unless(&["https", "tls"], "tls_verify"),
            null_unless(&["https", "tls"], "tls_verify_depth"),
            null_unless(&["https", "tls"], "ca_certificates"),
        ]),
        // kong/db/schema/entities/routes.lua (router_flavor traditional_compatible)
        EntityKind::Route => json!([
            {"conditional": {
                "if_field": "protocols",
                "if_match": {"elements": {"type": "string",
                             "not_one_of": ["grpcs", "https", "tls", "tls_passthrough"]}},
                "then_field": "snis",
                "then_match": {"len_eq": 0},
                "then_err": "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
            }},
            {"custom_entity_check": {"field_sources": ["path_handling"]}},
            {"custom_entity_check": {
                "field_sources": ["id", "protocols", "snis", "sources", "destinations",
                                  "methods", "hosts", "paths", "headers", "expression",
                                  "regex_priority", "priority"],
                "run_with_missing_fields": true,
            }},
        ]),
        // kong/db/schema/entities/consumers.lua
        EntityKind::Consumer => json!([{"at_least_one_of": ["custom_id", "username"]}]),
        _ => json!([]),
    }
}

/// `GET /schemas/plugins/{name}`: the plugin entity's fields with `config` expanded.
pub async fn plugin_schema(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let plugin = state
        .schemas()
        .plugin(&name)
        .ok_or_else(|| ApiError::NotFoundMessage(format!("No plugin named '{name}'")))?;
    let mut entity = state.schemas().entity(EntityKind::Plugin).to_kong();
    if let Some(fields) = entity["fields"].as_array_mut() {
        for field in fields.iter_mut() {
            if let Some(config) = field.get_mut("config") {
                let mut record = plugin.schema.to_kong();
                record["type"] = json!("record");
                record["required"] = json!(true);
                *config = record;
            }
        }
    }
    Ok(Json(entity))
}

/// `POST /schemas/{entity}/validate`: validation without writing (what `deck validate`
/// calls online).
pub async fn validate_entity(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let kind = entity_kind(&name)?;
    let mut input = body::parse(&headers, &bytes)?;
    if input.from_form {
        let mut value = Value::Object(std::mem::take(&mut input.object));
        state.schemas().entity(kind).coerce_form(&mut value);
        if let Value::Object(object) = value {
            input.object = object;
        }
    }
    let mut object = input.object;
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
        .unwrap_or_else(Uuid::new_v4);
    if object.get("id").is_some_and(|v| !v.is_null())
        && object
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .is_none()
    {
        let mut violation = SchemaViolation::default();
        violation.field("id", "expected a valid UUID");
        return Err(violation.into());
    }
    object.insert("id".to_owned(), json!(id));
    object.entry("created_at").or_insert(json!(0));
    object.entry("updated_at").or_insert(json!(0));
    state.schemas().check(kind, object)?;
    Ok(Json(json!({"message": "schema validation successful"})))
}

/// `POST /schemas/plugins/validate`: a plugin entity checked against its plugin's schema,
/// nothing written.
pub async fn validate_plugin(
    state: State<AdminState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    validate_entity(state, Path("plugins".to_owned()), headers, bytes).await
}

fn entity_kind(name: &str) -> Result<EntityKind, ApiError> {
    EntityKind::from_collection(name)
        .or_else(|| EntityKind::ALL.into_iter().find(|k| k.singular() == name))
        .ok_or_else(|| ApiError::NotFoundMessage(format!("No entity named '{name}'")))
}

/// Resident memory from /proc (Linux); 0 elsewhere.
fn resident_set_size() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// `GET /tags` and `GET /tags/{tag}`: every tag on every entity, a row per (entity, tag),
/// paged like any collection (Kong's `tags` entity).
pub async fn tags(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    tag_page(&state, None, &params).await
}

pub async fn tag(
    State(state): State<AdminState>,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    // Kong validates the tag as it validates one on an entity (code 10, "invalid unique").
    let bad = if tag.is_empty() {
        Some("length must be at least 1".to_owned())
    } else if tag.contains([',', '/']) || tag.chars().any(|c| c.is_control() || c == '\u{FFFD}') {
        Some(format!(
            "invalid tag '{tag}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
        ))
    } else {
        None
    };
    if let Some(message) = bad {
        return Err(ApiError::InvalidUnique {
            field: "tag",
            message,
        });
    }
    tag_page(&state, Some(&tag), &params).await
}

async fn tag_page(
    state: &AdminState,
    tag: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    let size = crate::entities::page_size(params)?;
    let page = state
        .store()
        .tags(tag, size, params.get("offset").map(String::as_str))
        .await?;
    let mut out = Map::new();
    out.insert("data".to_owned(), json!(page.data));
    match page.offset {
        Some(offset) => {
            let base = match tag {
                Some(tag) => format!(
                    "/tags/{}",
                    percent_encoding::utf8_percent_encode(tag, PATH_SEGMENT)
                ),
                None => "/tags".to_owned(),
            };
            let mut next = format!("{base}?offset={offset}");
            if params.contains_key("size") {
                next.push_str(&format!("&size={size}"));
            }
            out.insert("offset".to_owned(), json!(offset));
            out.insert("next".to_owned(), json!(next));
        }
        None => {
            out.insert("next".to_owned(), Value::Null);
        }
    }
    Ok(Json(Value::Object(out)))
}

/// What a path segment escapes in `next` links.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>');

/// `GET /endpoints`: the Admin API's paths, as Kong lists them (`{collection}` for a key,
/// sorted segment by segment).
pub async fn endpoints() -> Json<Value> {
    let mut paths: Vec<String> = [
        "/",
        "/status",
        "/metrics",
        "/endpoints",
        "/tags",
        "/tags/{tags}",
        "/config",
        "/clustering/status",
        "/clustering/data-planes",
        "/schemas/{db_entity_name}",
        "/schemas/{db_entity_name}/validate",
        "/schemas/plugins/{name}",
        "/schemas/plugins/validate",
        "/plugins/enabled",
        "/plugins/schema/{name}",
        "/routes/{routes}/service",
        "/ai/targets",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for kind in EntityKind::ALL {
        let collection = kind.endpoint();
        let key = kind.collection();
        paths.push(format!("/{collection}"));
        paths.push(format!("/{collection}/{{{key}}}"));
    }
    for (parent, children) in [
        ("services", &["routes", "plugins"][..]),
        ("routes", &["plugins"][..]),
        ("consumers", &["plugins"][..]),
    ] {
        for child in children {
            paths.push(format!("/{parent}/{{{parent}}}/{child}"));
            paths.push(format!("/{parent}/{{{parent}}}/{child}/{{{child}}}"));
        }
    }
    for kind in [EntityKind::KeyAuth, EntityKind::BasicAuth, EntityKind::Acl] {
        let nested = kind.nested_endpoint();
        let key = kind.collection();
        paths.push(format!("/consumers/{{consumers}}/{nested}"));
        paths.push(format!("/consumers/{{consumers}}/{nested}/{{{key}}}"));
    }
    // Kong compares with `/` as the lowest byte: `/a/z` before `/ab`.
    paths.sort_by_key(|a| a.replace('/', "\0"));
    paths.dedup();
    Json(json!({ "data": paths }))
}

/// `GET /plugins/schema/{name}`: the legacy form (deprecated in Kong since 1.2): the plugin's
/// `config` record alone, `{"fields": [...]}`.
pub async fn legacy_plugin_schema(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let plugin = state
        .schemas()
        .plugin(&name)
        .ok_or_else(|| ApiError::NotFoundMessage(format!("No plugin named '{name}'")))?;
    let mut record = plugin.schema.to_kong();
    record
        .as_object_mut()
        .map(|o| o.entry("entity_checks").or_insert(json!([])));
    Ok(Json(record))
}

/// `?unit=` and `?scale=` of `GET /status`, as Kong reads them: memory figures as text in
/// `b`, `k`, `m` (the default) or `g`, with `scale` decimals.
fn memory_unit(params: &HashMap<String, String>) -> Result<Option<(char, usize)>, ApiError> {
    if !params.contains_key("unit") && !params.contains_key("scale") {
        return Ok(None);
    }
    let unit = match params.get("unit").map(|u| u.to_ascii_lowercase()) {
        None => 'm',
        Some(u) if u.is_empty() || u == "b" => 'b',
        Some(u) if u == "k" || u == "m" || u == "g" => u.chars().next().unwrap_or('m'),
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "invalid unit '{}' (expected 'k/K', 'm/M', or 'g/G')",
                params["unit"]
            )))
        }
    };
    let scale = match params.get("scale").map(|s| s.trim().parse::<f64>()) {
        None | Some(Err(_)) => 2,
        Some(Ok(scale)) if scale < 0.0 => {
            return Err(ApiError::BadRequest(
                "scale must be equal or greater than 0".to_owned(),
            ))
        }
        Some(Ok(scale)) => scale.min(16.0) as usize,
    };
    Ok(Some((unit, scale)))
}

fn bytes_to_text(bytes: u64, unit: char, scale: usize) -> Value {
    let (divisor, suffix) = match unit {
        'k' => (1024.0, "KiB"),
        'm' => (1024.0 * 1024.0, "MiB"),
        'g' => (1024.0 * 1024.0 * 1024.0, "GiB"),
        _ => return Value::String(bytes.to_string()),
    };
    Value::String(format!("{:.*} {suffix}", scale, bytes as f64 / divisor))
}
