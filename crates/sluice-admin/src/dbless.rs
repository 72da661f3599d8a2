//! DB-less mode: the config comes whole from a declarative file (or `POST /config`), entity
//! writes are refused as in Kong, and every load replaces the config in one transaction.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sluice_model::declarative::{self, DeclarativeError, SourceFile};
use sluice_model::Schemas;
use sluice_store::Store;

use crate::{AdminState, ApiError};

/// Why a declarative config was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("declarative config is invalid: {}", render(.0))]
    Invalid(Vec<DeclarativeError>),
    #[error(transparent)]
    Store(#[from] sluice_store::StoreError),
}

fn render(errors: &[DeclarativeError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses, validates and applies a declarative config. Nothing is applied unless all of it is
/// valid. Returns the new config version.
pub async fn load(
    store: &Store,
    schemas: &Schemas,
    name: &str,
    text: &str,
) -> Result<u64, LoadError> {
    let files = [SourceFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }];
    let env = |key: &str| std::env::var(key).ok();
    let content = declarative::parse(&files, &env).map_err(LoadError::Invalid)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let entities = declarative::resolve(&content, schemas, now).map_err(LoadError::Invalid)?;
    let version = store.replace_all(&entities).await?;
    Ok(version)
}

/// Refuses entity writes in DB-less mode with Kong's message.
pub async fn refuse_writes(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    if !state.dbless() {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let verb = match *request.method() {
        Method::POST => "create",
        Method::PUT => "create",
        Method::PATCH => "update",
        Method::DELETE => "delete",
        _ => return next.run(request).await,
    };
    if path == "/config" || path.starts_with("/schemas/") || path.starts_with("/sluice/") {
        return next.run(request).await;
    }
    let collection = path
        .trim_start_matches('/')
        .split('/')
        .find(|s| matches!(*s, "services" | "routes" | "consumers" | "plugins"))
        .map(str::to_owned);
    let collection = match path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
        [_, _, child] => child.to_owned(),
        _ => collection.unwrap_or_else(|| "entities".to_owned()),
    };
    ApiError::OperationUnsupported(format!(
        "cannot {verb} '{collection}' entities when not using a database"
    ))
    .into_response()
}

/// `POST /config`: replace the config from a YAML or JSON body (or a `config` form field).
pub async fn post_config(
    State(state): State<AdminState>,
    Query(params): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    if !state.dbless() {
        return Err(ApiError::BadRequest(
            "POST /config is only available in DB-less mode (--database off)".to_owned(),
        ));
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = if content_type.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "config")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| ApiError::BadRequest("missing 'config' form field".to_owned()))?
    } else {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::BadRequest("the config must be UTF-8".to_owned()))?
    };
    let _ = params; // check_hash and flatten_errors are accepted; errors are always flat here
    match load(state.store(), state.schemas(), "POST /config", &text).await {
        Ok(version) => {
            let snapshot = state.store().snapshot().await?;
            Ok((
                StatusCode::CREATED,
                Json(json!({
                    "configuration_version": version,
                    "services": snapshot.entities.services,
                    "routes": snapshot.entities.routes,
                    "consumers": snapshot.entities.consumers,
                    "plugins": snapshot.entities.plugins,
                })),
            )
                .into_response())
        }
        Err(LoadError::Invalid(errors)) => {
            let flattened: Vec<Value> = errors
                .iter()
                .map(|e| {
                    json!({
                        "file": e.file, "line": e.line, "column": e.column,
                        "path": e.path, "message": e.message,
                    })
                })
                .collect();
            Ok((
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "code": 14,
                    "name": "invalid declarative configuration",
                    "message": format!("declarative config is invalid: {}", render(&errors)),
                    "flattened_errors": flattened,
                })),
            )
                .into_response())
        }
        Err(LoadError::Store(error)) => Err(error.into()),
    }
}

/// `GET /config`: the current config as a declarative file.
pub async fn get_config(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let snapshot = state.store().snapshot().await?;
    Ok(Json(
        json!({ "config": declarative::render(&snapshot.entities, &[]) }),
    ))
}
