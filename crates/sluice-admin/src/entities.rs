//! CRUD on services, routes, consumers and plugins, generic over the entity.
//!
//! Handlers stay thin: parse, mint ids and timestamps, validate through `sluice-model`, write
//! through `sluice-store`. Nothing is written unless validation passed.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use sluice_model::{Entity, EntityKind, Route, Service};
use sluice_store::{ListQuery, Stored, TagFilter, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use uuid::Uuid;

use crate::body::{self, Input};
use crate::error::ApiError;
use crate::AdminState;

/// Most tags one list filter may name: Kong's limit (`kong/db/dao/init.lua`, 3.x), with its
/// answer (400, code 11, `invalid option (tags: cannot query more than 5 tags)`).
pub const MAX_FILTER_TAGS: usize = 5;

type Params = Query<HashMap<String, String>>;

// === collection handlers ===

pub async fn list<E: Stored>(
    State(state): State<AdminState>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    list_scoped::<E>(&state, &params, None, &format!("/{}", E::KIND.endpoint())).await
}

/// `GET /consumers`: Kong's search by `custom_id` (`?custom_id=x` is the one consumer with it,
/// or none), else the list.
pub async fn list_consumers(
    State(state): State<AdminState>,
    Query(params): Params,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    // Kong: a repeated or empty custom_id is refused (its Lua sees a table or "").
    let repeated = uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "custom_id")
                .count()
                > 1
        })
        .unwrap_or(false);
    match params.get("custom_id") {
        Some(custom_id) if custom_id.is_empty() || repeated => Err(ApiError::BadRequest(
            "custom_id must be an unempty string".to_owned(),
        )),
        Some(custom_id) => {
            let found: Option<sluice_model::Consumer> =
                state.store().get_by_unique("custom_id", custom_id).await?;
            let data: Vec<Value> = found.iter().map(render).collect();
            Ok(Json(serde_json::json!({"data": data, "next": null})))
        }
        None => list_scoped::<sluice_model::Consumer>(&state, &params, None, "/consumers").await,
    }
}

pub async fn create<E: Stored>(
    State(state): State<AdminState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let input = body::parse(&headers, &bytes)?;
    create_scoped::<E>(&state, input, None).await
}

// === item handlers ===

pub async fn get<E: Stored>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    get_in::<E>(&state, &key, None).await
}

async fn get_in<E: Stored>(
    state: &AdminState,
    key: &str,
    within: Option<Within>,
) -> Result<Json<Value>, ApiError> {
    let entity: E = find(state, key, within).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(render(&entity)))
}

/// 204 whether or not the entity existed, as in Kong.
async fn delete_in<E: Stored>(
    state: &AdminState,
    key: &str,
    within: Option<Within>,
) -> Result<StatusCode, ApiError> {
    if let Some(entity) = find::<E>(state, key, within).await? {
        state.store().delete::<E>(entity.id()).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Where an item handler looks: everywhere (`/key-auths/{k}`), or under one parent
/// (`/consumers/{c}/key-auth/{k}`), whose reference the entity gets.
#[derive(Clone, Copy)]
struct Within {
    column: &'static str,
    field: &'static str,
    parent: Uuid,
}

async fn find<E: Stored>(
    state: &AdminState,
    key: &str,
    within: Option<Within>,
) -> Result<Option<E>, ApiError> {
    Ok(match within {
        None => state.store().get(key).await?,
        Some(w) => state.store().get_within(key, w.column, w.parent).await?,
    })
}

async fn parent_scope<P: Stored>(state: &AdminState, key: &str) -> Result<Within, ApiError> {
    let parent: P = state.store().get(key).await?.ok_or(ApiError::NotFound)?;
    let (column, field) = scope_of(P::KIND);
    Ok(Within {
        column,
        field,
        parent: parent.id(),
    })
}

// === nested item handlers: /consumers/{c}/key-auth/{k} ===

pub async fn get_nested<P: Stored, C: Stored>(
    State(state): State<AdminState>,
    Path((parent, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let within = parent_scope::<P>(&state, &parent).await?;
    get_in::<C>(&state, &key, Some(within)).await
}

pub async fn put_nested<P: Stored, C: Stored>(
    State(state): State<AdminState>,
    Path((parent, key)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let within = parent_scope::<P>(&state, &parent).await?;
    put_in::<C>(&state, key, Some(within), &headers, &bytes).await
}

pub async fn patch_nested<P: Stored, C: Stored>(
    State(state): State<AdminState>,
    Path((parent, key)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let within = parent_scope::<P>(&state, &parent).await?;
    patch_in::<C>(&state, key, Some(within), &headers, &bytes).await
}

pub async fn delete_nested<P: Stored, C: Stored>(
    State(state): State<AdminState>,
    Path((parent, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let within = parent_scope::<P>(&state, &parent).await?;
    delete_in::<C>(&state, &key, Some(within)).await
}

/// Kong's upsert: the URL key (id or name) identifies the entity, the body replaces it whole.
pub async fn put<E: Stored>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    put_in::<E>(&state, key, None, &headers, &bytes).await
}

async fn put_in<E: Stored>(
    state: &AdminState,
    key: String,
    within: Option<Within>,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<Response, ApiError> {
    let Input {
        mut object,
        from_form,
    } = body::parse(headers, bytes)?;
    if let Some(w) = within {
        object.insert(w.field.to_owned(), json!({ "id": w.parent }));
    }
    let existing: Option<E> = find(state, &key, within).await?;
    let id = match (&existing, Uuid::parse_str(&key)) {
        (Some(e), _) => e.id(),
        (None, Ok(id)) => id,
        (None, Err(_)) => Uuid::new_v4(),
    };
    if Uuid::parse_str(&key).is_err() {
        if let Some(message) = sluice_model::validate::name_error(&key) {
            let mut violation = sluice_model::SchemaViolation::default();
            violation.field(E::KIND.endpoint_key(), message);
            return Err(violation.into());
        }
        object.insert(E::KIND.endpoint_key().to_owned(), Value::from(key));
    }
    let now = now();
    let created_at = existing.as_ref().map_or(now, Entity::created_at);
    let entity: E = build(state, object, from_form, id, created_at, now).await?;
    state.store().upsert(&entity).await?;
    Ok((StatusCode::OK, Json(render(&entity))).into_response())
}

/// Merges the body into the stored entity (records such as a plugin's `config` merge deeply,
/// as in Kong) and validates the result whole.
pub async fn patch<E: Stored>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    patch_in::<E>(&state, key, None, &headers, &bytes).await
}

async fn patch_in<E: Stored>(
    state: &AdminState,
    key: String,
    within: Option<Within>,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<Response, ApiError> {
    let Input { object, from_form } = body::parse(headers, bytes)?;
    let existing: E = find(state, &key, within).await?.ok_or(ApiError::NotFound)?;
    let Value::Object(mut merged) = serde_json::to_value(&existing).unwrap_or_default() else {
        return Err(ApiError::NotFound);
    };
    if object.contains_key("url") {
        // The url shorthand replaces protocol, host, port and path together.
        merged.remove("path");
    }
    let mut object = object;
    if from_form {
        // Type the patch alone first, so merge sees numbers and arrays, not strings.
        let mut typed = Value::Object(std::mem::take(&mut object));
        coerce(state, E::KIND, &mut typed, merged.get("name"));
        if let Value::Object(typed) = typed {
            object = typed;
        }
    }
    let given = object.clone();
    for (name, value) in object {
        // Foreign keys are replaced, not merged: `{"service": {"name": "b"}}` must not be
        // merged into the stored `{"id": ...}`.
        let foreign = matches!(name.as_str(), "service" | "route" | "consumer");
        match (merged.get_mut(&name), value) {
            (Some(Value::Object(current)), Value::Object(update)) if !foreign => {
                merge(current, update)
            }
            (_, value) => {
                merged.insert(name, value);
            }
        }
    }
    let mut entity: E = build(
        state,
        merged,
        false,
        existing.id(),
        existing.created_at(),
        now(),
    )
    .await?;
    entity.keep_secrets_of(&existing, &given);
    state.store().upsert(&entity).await?;
    Ok((StatusCode::OK, Json(render(&entity))).into_response())
}

pub async fn delete<E: Stored>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_in::<E>(&state, &key, None).await
}

// === nested handlers: /services/{s}/routes, /{parent}/{p}/plugins ===

pub async fn list_nested<P: Stored, C: Stored>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let parent: P = state.store().get(&key).await?.ok_or(ApiError::NotFound)?;
    let (column, _) = scope_of(P::KIND);
    let base = format!(
        "/{}/{}/{}",
        P::KIND.endpoint(),
        key,
        C::KIND.nested_endpoint()
    );
    list_scoped::<C>(&state, &params, Some((column, parent.id())), &base).await
}

pub async fn create_nested<P: Stored, C: Stored>(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let parent: P = state.store().get(&key).await?.ok_or(ApiError::NotFound)?;
    let input = body::parse(&headers, &bytes)?;
    let (_, field) = scope_of(P::KIND);
    create_scoped::<C>(&state, input, Some((field, parent.id()))).await
}

/// `GET /routes/{r}/service`.
pub async fn route_service(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let route: Route = state.store().get(&key).await?.ok_or(ApiError::NotFound)?;
    let service_id = route.service.ok_or(ApiError::NotFound)?.id;
    let service: Service = state
        .store()
        .get_by_id(service_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(render(&service)))
}

/// The id of the service route `key` references: 404 for a route that does not exist (not
/// 405, as Kong answers) or has no service.
async fn service_of_route(state: &AdminState, key: &str) -> Result<Uuid, ApiError> {
    let route: Route = state.store().get(key).await?.ok_or(ApiError::NotFound)?;
    Ok(route.service.ok_or(ApiError::NotFound)?.id)
}

/// `PATCH /routes/{r}/service`: Kong updates the service the route references.
pub async fn patch_route_service(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let id = service_of_route(&state, &key).await?;
    patch_in::<Service>(&state, id.to_string(), None, &headers, &bytes).await
}

/// `PUT /routes/{r}/service`: replaces the service the route references, keeping its id.
pub async fn put_route_service(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let id = service_of_route(&state, &key).await?;
    put_in::<Service>(&state, id.to_string(), None, &headers, &bytes).await
}

/// `GET /plugins/enabled`.
pub async fn enabled_plugins(State(state): State<AdminState>) -> Json<Value> {
    let names: Vec<&str> = state.schemas().plugins().map(|p| p.name.as_str()).collect();
    Json(json!({ "enabled_plugins": names }))
}

// === shared ===

fn scope_of(parent: EntityKind) -> (&'static str, &'static str) {
    match parent {
        EntityKind::Service => ("service_id", "service"),
        EntityKind::Route => ("route_id", "route"),
        EntityKind::Consumer => ("consumer_id", "consumer"),
        EntityKind::Plugin | EntityKind::KeyAuth | EntityKind::BasicAuth | EntityKind::Acl => {
            ("id", "id")
        }
    }
}

/// `?size=`, as Kong reads it.
pub(crate) fn page_size(params: &HashMap<String, String>) -> Result<u32, ApiError> {
    Ok(match params.get("size") {
        None => DEFAULT_PAGE_SIZE,
        // Kong reads the size with Lua's tonumber, then checks it is a whole number in range.
        Some(size) => match size.trim().parse::<f64>() {
            Err(_) => return Err(ApiError::InvalidSize("size must be a number")),
            Ok(n) if n.fract() == 0.0 && (1.0..=f64::from(MAX_PAGE_SIZE)).contains(&n) => n as u32,
            Ok(_) => {
                return Err(ApiError::InvalidSize(
                    "size must be an integer between 1 and 1000",
                ))
            }
        },
    })
}

/// `?tags=`, as Kong reads it: `a,b` all of them, `a/b` any of them.
pub(crate) fn tag_filter(params: &HashMap<String, String>) -> Result<TagFilter, ApiError> {
    Ok(match params.get("tags").map(String::as_str) {
        None => TagFilter::None,
        // Kong 3.10 (kong/api/endpoints.lua): an empty filter is an invalid option.
        Some("") => {
            return Err(ApiError::InvalidOption {
                option: "tags",
                reason: "cannot be null",
            })
        }
        // Kong 3.10's words (kong/db/dao/init.lua) for a filter that mixes `,` and `/`.
        Some(tags) if tags.contains(',') && tags.contains('/') => {
            return Err(ApiError::InvalidOption {
                option: "tags",
                reason: "invalid filter syntax",
            })
        }
        // Not UTF-8 (`%FF` decodes to U+FFFD) or control characters.
        Some(tags) if tags.chars().any(|c| c == '\u{FFFD}' || c.is_control()) => {
            return Err(ApiError::InvalidOption {
                option: "tags",
                reason: "must only contain printable ascii (except `,` and `/`) or valid utf-8",
            })
        }
        Some(tags) if tags.split([',', '/']).nth(MAX_FILTER_TAGS).is_some() => {
            return Err(ApiError::InvalidOption {
                option: "tags",
                reason: "cannot query more than 5 tags",
            })
        }
        Some(tags) if tags.contains('/') => {
            TagFilter::Any(tags.split('/').map(str::to_owned).collect())
        }
        Some(tags) => TagFilter::All(tags.split(',').map(str::to_owned).collect()),
    })
}

async fn list_scoped<E: Stored>(
    state: &AdminState,
    params: &HashMap<String, String>,
    scope: Option<(&'static str, Uuid)>,
    base: &str,
) -> Result<Json<Value>, ApiError> {
    let size = page_size(params)?;
    let tags = tag_filter(params)?;
    // Kong ignores a tag filter on a nested collection (`/services/{s}/routes?tags=`,
    // Kong's #6779: the foreign-key query wins), though it still refuses a malformed one.
    let tags = if scope.is_some() {
        TagFilter::None
    } else {
        tags
    };
    let query = ListQuery {
        size,
        offset: params.get("offset").cloned(),
        tags,
        scope,
    };
    let page = state.store().list::<E>(&query).await?;
    let data: Vec<Value> = page.data.iter().map(render).collect();
    let mut out = Map::new();
    out.insert("data".to_owned(), Value::Array(data));
    match page.offset {
        Some(offset) => {
            let mut next = format!("{base}?offset={offset}");
            if params.contains_key("size") {
                next.push_str(&format!("&size={size}"));
            }
            if let Some(tags) = params.get("tags") {
                let encoded: String = form_urlencoded::byte_serialize(tags.as_bytes()).collect();
                next.push_str(&format!("&tags={encoded}"));
            }
            out.insert("offset".to_owned(), Value::String(offset));
            out.insert("next".to_owned(), Value::String(next));
        }
        None => {
            out.insert("next".to_owned(), Value::Null);
        }
    }
    Ok(Json(Value::Object(out)))
}

async fn create_scoped<E: Stored>(
    state: &AdminState,
    input: Input,
    scope: Option<(&'static str, Uuid)>,
) -> Result<Response, ApiError> {
    let Input {
        mut object,
        from_form,
    } = input;
    if let Some((field, id)) = scope {
        object.insert(field.to_owned(), json!({ "id": id }));
    }
    let id = match object.get("id") {
        None | Some(Value::Null) => Uuid::new_v4(),
        Some(Value::String(id)) => match Uuid::parse_str(id) {
            Ok(id) => id,
            Err(_) => {
                let mut violation = sluice_model::SchemaViolation::default();
                violation.field("id", "expected a valid UUID");
                return Err(violation.into());
            }
        },
        Some(_) => {
            let mut violation = sluice_model::SchemaViolation::default();
            violation.field("id", "expected a string");
            return Err(violation.into());
        }
    };
    let now = now();
    let entity: E = build(state, object, from_form, id, now, now).await?;
    state.store().insert(&entity).await?;
    Ok((StatusCode::CREATED, Json(render(&entity))).into_response())
}

/// Fills the server-owned fields, types form input, resolves `{"name": ...}` foreign keys and
/// validates. The returned entity is ready to store.
async fn build<E: Stored>(
    state: &AdminState,
    mut object: Map<String, Value>,
    from_form: bool,
    id: Uuid,
    created_at: i64,
    updated_at: i64,
) -> Result<E, ApiError> {
    object.insert("id".to_owned(), Value::from(id.to_string()));
    object.insert("created_at".to_owned(), Value::from(created_at));
    if E::KIND.has_updated_at() {
        object.insert("updated_at".to_owned(), Value::from(updated_at));
    }
    let mut value = Value::Object(object);
    if from_form {
        let name = value.get("name").cloned();
        coerce(state, E::KIND, &mut value, name.as_ref());
    }
    let Value::Object(mut object) = value else {
        unreachable!("built from an object")
    };
    resolve_foreign_names(state, &mut object).await?;
    let entity = state.schemas().build::<E>(object)?;
    check_relations(state, &entity).await?;
    Ok(entity)
}

/// The rules between two entities ([`sluice_model::relations`]), against the stored
/// neighbour: a route with its service, a plugin with its route or service. A reference that
/// does not resolve is left to the store's foreign-key error.
async fn check_relations<E: Stored>(state: &AdminState, entity: &E) -> Result<(), ApiError> {
    use sluice_model::relations;
    let any: &dyn std::any::Any = entity;
    let mut violation = sluice_model::SchemaViolation::default();
    if let Some(route) = any.downcast_ref::<Route>() {
        let service = match route.service {
            Some(fk) => match state.store().get_by_id::<Service>(fk.id).await? {
                Some(service) => Some(service),
                None => return Ok(()),
            },
            None => None,
        };
        relations::route_service(route, service.as_ref(), &mut violation);
    } else if let Some(plugin) = any.downcast_ref::<sluice_model::Plugin>() {
        if !relations::plugin_needs_scope(plugin) {
            return Ok(());
        }
        let route = match plugin.route {
            Some(fk) => state.store().get_by_id::<Route>(fk.id).await?,
            None => None,
        };
        let service = match plugin.service {
            Some(fk) => state.store().get_by_id::<Service>(fk.id).await?,
            None => None,
        };
        relations::plugin_scope(plugin, route.as_ref(), service.as_ref(), &mut violation);
    }
    if violation.is_empty() {
        Ok(())
    } else {
        Err(violation.into())
    }
}

/// Types form input with the entity's schema, and a plugin's `config` with its plugin schema.
fn coerce(state: &AdminState, kind: EntityKind, value: &mut Value, plugin_name: Option<&Value>) {
    state.schemas().entity(kind).coerce_form(value);
    if kind == EntityKind::Plugin {
        let plugin = plugin_name
            .and_then(Value::as_str)
            .and_then(|name| state.schemas().plugin(name));
        if let (Some(plugin), Some(config)) = (plugin, value.get_mut("config")) {
            plugin.schema.coerce_form(config);
        }
    }
}

/// Lets a foreign key name its target (`"service": {"name": "billing"}`), a convenience for
/// people typing curl commands; stored references are always ids.
async fn resolve_foreign_names(
    state: &AdminState,
    object: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    for (field, kind) in [
        ("service", EntityKind::Service),
        ("route", EntityKind::Route),
        ("consumer", EntityKind::Consumer),
    ] {
        let Some(Value::Object(reference)) = object.get(field) else {
            continue;
        };
        if reference.contains_key("id") {
            continue;
        }
        let key_field = kind.endpoint_key();
        let Some(name) = reference.get(key_field).and_then(Value::as_str) else {
            // Neither an id nor a name: nothing to look the reference up by (Kong's
            // `missing primary key`, on the id).
            let mut violation = sluice_model::SchemaViolation::default();
            violation.field(&format!("{field}.id"), "missing primary key");
            return Err(violation.into());
        };
        let id = match kind {
            EntityKind::Service => state.store().get::<Service>(name).await?.map(|e| e.id),
            EntityKind::Route => state.store().get::<Route>(name).await?.map(|e| e.id),
            EntityKind::Consumer => state
                .store()
                .get::<sluice_model::Consumer>(name)
                .await?
                .map(|e| e.id),
            _ => None,
        };
        let Some(id) = id else {
            return Err(ApiError::ForeignKeyUnresolved {
                field,
                key: key_field,
                value: name.to_owned(),
                collection: kind.collection(),
            });
        };
        object.insert(field.to_owned(), json!({ "id": id }));
    }
    Ok(())
}

fn merge(current: &mut Map<String, Value>, update: Map<String, Value>) {
    for (name, value) in update {
        match (current.get_mut(&name), value) {
            (Some(Value::Object(inner)), Value::Object(update)) => merge(inner, update),
            (_, value) => {
                current.insert(name, value);
            }
        }
    }
}

fn render<E: Entity>(entity: &E) -> Value {
    let mut value = serde_json::to_value(entity).unwrap_or(Value::Null);
    if E::KIND == EntityKind::Plugin {
        // Kong 3.6+ answers with each deprecated shorthand beside its new field.
        if let Some(name) = value["name"].as_str().map(str::to_owned) {
            if let Some(config) = value.get_mut("config") {
                sluice_model::shorthands::show(&name, config);
            }
        }
    }
    value
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
