//! The Admin API's one error type: every failure becomes Kong's JSON error shape, and internal
//! failures are logged here and never described to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sluice_model::SchemaViolation;
use sluice_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Schema(#[from] SchemaViolation),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Not found")]
    NotFound,
    #[error("{0}")]
    NotFoundMessage(String),
    #[error("{0}")]
    BadRequest(String),
    /// Kong's `INVALID_SIZE` (code 9): "size must be a number" for text, "size must be an
    /// integer between 1 and 1000" for a number out of range.
    #[error("{0}")]
    InvalidSize(&'static str),
    /// Kong's `INVALID_OPTIONS` (code 11) for one option: `invalid option (tags: ...)`.
    #[error("invalid option ({option}: {reason})")]
    InvalidOption {
        option: &'static str,
        reason: &'static str,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    OperationUnsupported(String),
    /// Kong's `INVALID_UNIQUE` (code 10): a unique key in a path that is not a valid one.
    #[error("{message}")]
    InvalidUnique {
        field: &'static str,
        message: String,
    },
    /// Kong's `FOREIGN_KEYS_UNRESOLVED` (code 13): a foreign key given by name (`"service":
    /// {"name": "billing"}`) that names nothing. One violation, on `<field>.<key>`.
    #[error("foreign key unresolved ({field}.{key}: {})", unresolved_reason(.key, .value, .collection))]
    ForeignKeyUnresolved {
        field: &'static str,
        key: &'static str,
        value: String,
        collection: &'static str,
    },
}

fn unresolved_reason(key: &str, value: &str, collection: &str) -> String {
    format!(
        "the foreign key cannot be resolved with '{{{key}=\"{value}\"}}' for an existing '{collection}' entity"
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match self {
            ApiError::Schema(violation) => (
                StatusCode::BAD_REQUEST,
                kong_error(2, "schema violation", &message, violation.fields_json()),
            ),
            ApiError::Store(error) => return store_error(error),
            ApiError::NotFound | ApiError::NotFoundMessage(_) => {
                (StatusCode::NOT_FOUND, json!({ "message": message }))
            }
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, json!({ "message": message })),
            ApiError::InvalidSize(_) => (
                StatusCode::BAD_REQUEST,
                json!({"code": 9, "name": "invalid size", "message": message}),
            ),
            ApiError::InvalidOption { option, reason } => (
                StatusCode::BAD_REQUEST,
                json!({"code": 11, "name": "invalid options", "message": message,
                       "options": {option: reason}}),
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({ "message": message }),
            ),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, json!({ "message": message })),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "message": message }),
            ),
            ApiError::OperationUnsupported(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"code": 12, "name": "operation unsupported", "message": message}),
            ),
            ApiError::InvalidUnique { field, .. } => (
                StatusCode::BAD_REQUEST,
                json!({"code": 10, "name": format!("invalid unique {field}"), "message": message}),
            ),
            ApiError::ForeignKeyUnresolved {
                field,
                key,
                value,
                collection,
            } => (
                StatusCode::BAD_REQUEST,
                kong_error(
                    13,
                    "foreign keys unresolved",
                    &message,
                    json!({ field: { key: unresolved_reason(key, &value, collection) } }),
                ),
            ),
        };
        (status, Json(body)).into_response()
    }
}

fn kong_error(code: u8, name: &str, message: &str, fields: Value) -> Value {
    json!({ "code": code, "name": name, "message": message, "fields": fields })
}

fn store_error(error: StoreError) -> Response {
    let message = error.to_string();
    let (status, body) = match error {
        StoreError::PrimaryKey { id } => (
            StatusCode::CONFLICT,
            kong_error(
                3,
                "primary key violation",
                &format!("primary key violation on key '{{id=\"{id}\"}}'"),
                json!({ "id": format!("already exists with value '{id}'") }),
            ),
        ),
        StoreError::Unique { fields, .. } => (
            StatusCode::CONFLICT,
            kong_error(5, "unique constraint violation", &message, fields),
        ),
        StoreError::ForeignKey { field, id, .. } => (
            StatusCode::BAD_REQUEST,
            kong_error(
                4,
                "foreign key violation",
                &message,
                json!({ field: { "id": id } }),
            ),
        ),
        StoreError::Referenced { referenced_by, .. } => (
            StatusCode::BAD_REQUEST,
            kong_error(
                4,
                "foreign key violation",
                &message,
                json!({ "@referenced_by": referenced_by }),
            ),
        ),
        StoreError::VersionConflict { .. } => (
            StatusCode::CONFLICT,
            json!({"code": 15, "name": "config version conflict", "message": message}),
        ),
        StoreError::PlanFailed { ref source, .. }
            if matches!(**source, StoreError::Database(_)) =>
        {
            tracing::error!(error = %message, "sync plan failed in the store");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "message": "An unexpected error occurred" }),
            )
        }
        StoreError::PlanFailed { .. } => (
            StatusCode::BAD_REQUEST,
            json!({"code": 16, "name": "sync plan failed", "message": message}),
        ),
        StoreError::InvalidOffset(_) => (
            StatusCode::BAD_REQUEST,
            json!({"code": 7, "name": "invalid offset", "message": message}),
        ),
        StoreError::Database(_)
        | StoreError::Migrate(_)
        | StoreError::UnsupportedDatabase(_)
        | StoreError::Corrupt { .. }
        | StoreError::Permissions { .. } => {
            tracing::error!(error = %message, "admin API request failed in the store");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "message": "An unexpected error occurred" }),
            )
        }
    };
    (status, Json(body)).into_response()
}
