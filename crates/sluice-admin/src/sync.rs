//! The two endpoints `sluice diff`/`sync`/`dump` use beyond Kong's API: the whole config at
//! one version (so a diff is computed against a consistent view), and the atomic apply of a
//! plan guarded by that version. decK applies entity by entity and can leave half a config
//! behind; this applies all of it in one transaction or nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;
use sluice_model::diff::{Change, Op, Plan};
use sluice_model::wire::{SnapshotBody, SyncInput, SyncResponse};
use sluice_model::{AnyEntity, EntityKind, SchemaViolation};

use crate::{body, AdminState, ApiError};

/// `GET /sluice/snapshot`: every entity and the config version, read in one transaction.
pub async fn snapshot(State(state): State<AdminState>) -> Result<Json<SnapshotBody>, ApiError> {
    let snapshot = state.store().snapshot().await?;
    Ok(Json(SnapshotBody::from(snapshot)))
}

/// `POST /sluice/sync`: `{"expected_version": N, "plan": {"changes": [...]}}`. Every entity
/// is validated again here (the control plane never trusts a client's validation) into its
/// typed form, then the plan is applied in one transaction.
pub async fn apply(
    State(state): State<AdminState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<SyncResponse>, ApiError> {
    if state.dbless() {
        return Err(ApiError::OperationUnsupported(
            "cannot sync when not using a database; use POST /config".to_owned(),
        ));
    }
    let input = body::parse(&headers, &bytes)?;
    let request: SyncInput = serde_json::from_value(Value::Object(input.object))
        .map_err(|e| ApiError::BadRequest(format!("invalid sync request: {e}")))?;
    let mut plan = Plan::default();
    for change in request.plan.changes {
        // A plan carries basic-auth passwords hashed already (the CLI hashed them with the
        // consumer's final id): they are stored as sent, not hashed a second time.
        let hashed_password = match (&change.new, change.kind) {
            (Some(new), EntityKind::BasicAuth) => new
                .get("password")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        let new = match (change.op, change.new) {
            (Op::Delete, _) => None,
            (_, Some(new)) => Some(state.schemas().build_any(change.kind, new).map_err(
                |violation| {
                    let mut named = SchemaViolation::default();
                    named.entity(format!(
                        "{} {}: {}",
                        change.kind.singular(),
                        change.label,
                        violation.message()
                    ));
                    named
                },
            )?),
            (_, None) => {
                return Err(ApiError::BadRequest(format!(
                    "change for {} {} has no entity",
                    change.kind.singular(),
                    change.label
                )))
            }
        };
        let new = match (new, hashed_password) {
            (Some(AnyEntity::BasicAuth(mut credential)), Some(hash)) => {
                credential.password = hash;
                Some(AnyEntity::BasicAuth(credential))
            }
            (new, _) => new,
        };
        plan.changes.push(Change {
            op: change.op,
            kind: change.kind,
            id: change.id,
            label: change.label,
            old: None,
            new,
        });
    }
    let summary = plan.summary();
    let version = state
        .store()
        .apply_plan(&plan, request.expected_version)
        .await?;
    Ok(Json(SyncResponse {
        version,
        created: summary.created,
        updated: summary.updated,
        deleted: summary.deleted,
    }))
}
