//! The two endpoints `sluice diff`/`sync`/`dump` use beyond Kong's API: the whole config at
//! one version (so a diff is computed against a consistent view), and the atomic apply of a
//! plan guarded by that version. decK applies entity by entity and can leave half a config
//! behind; this applies all of it in one transaction or nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_model::diff::{Op, Plan};
use sluice_model::SchemaViolation;

use crate::{body, AdminState, ApiError};

#[derive(Deserialize)]
struct SyncRequest {
    expected_version: u64,
    plan: Plan,
}

/// `GET /sluice/snapshot`: every entity and the config version, read in one transaction.
pub async fn snapshot(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let snapshot = state.store().snapshot().await?;
    Ok(Json(json!({
        "version": snapshot.version,
        "services": snapshot.services,
        "routes": snapshot.routes,
        "consumers": snapshot.consumers,
        "plugins": snapshot.plugins,
    })))
}

/// `POST /sluice/sync`: `{"expected_version": N, "plan": {"changes": [...]}}`. Every entity
/// is validated again here (the control plane never trusts a client's validation), then the
/// plan is applied in one transaction.
pub async fn apply(
    State(state): State<AdminState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    if state.dbless() {
        return Err(ApiError::OperationUnsupported(
            "cannot sync when not using a database; use POST /config".to_owned(),
        ));
    }
    let input = body::parse(&headers, &bytes)?;
    let mut request: SyncRequest = serde_json::from_value(Value::Object(input.object))
        .map_err(|e| ApiError::BadRequest(format!("invalid sync request: {e}")))?;
    for change in &mut request.plan.changes {
        if change.op == Op::Delete {
            continue;
        }
        let Some(Value::Object(new)) = change.new.take() else {
            return Err(ApiError::BadRequest(format!(
                "change for {} {} has no entity",
                change.kind.singular(),
                change.label
            )));
        };
        match state.schemas().check(change.kind, new) {
            Ok(valid) => change.new = Some(valid),
            Err(violation) => {
                let mut named = SchemaViolation::default();
                named.entity(format!(
                    "{} {}: {}",
                    change.kind.singular(),
                    change.label,
                    violation.message()
                ));
                return Err(named.into());
            }
        }
    }
    let summary = request.plan.summary();
    let version = state
        .store()
        .apply_plan(&request.plan, request.expected_version)
        .await?;
    Ok(Json(json!({
        "version": version,
        "created": summary.created,
        "updated": summary.updated,
        "deleted": summary.deleted,
    })))
}
