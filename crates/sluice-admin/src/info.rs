//! `GET /`, `GET /status` and the schema endpoints decK reads defaults from.

use axum::body::Bytes;
use axum::extract::{Path, State};
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
pub async fn status(State(state): State<AdminState>) -> Json<Value> {
    let reachable = state.store().ping().await;
    let counters = state.counters();
    Json(json!({
        "memory": {
            "workers_lua_vms": [],
            "lua_shared_dicts": {},
            "resident_set_size_bytes": resident_set_size(),
        },
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
    }))
}

/// `GET /schemas/{entity}`.
pub async fn entity_schema(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kind = entity_kind(&name)?;
    Ok(Json(state.schemas().entity(kind).to_kong()))
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
