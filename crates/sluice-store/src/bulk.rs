//! The fast path for large writes (a sync plan, a DB-less load): rows go in multi-row
//! statements, a few hundred at a time, and the database's own UNIQUE and FOREIGN KEY
//! constraints do the checking.
//!
//! Why: sqlx runs SQLite on a worker thread, so every statement is a cross-thread round trip.
//! Checking each row with its own SELECTs costs three round trips per entity, which is most
//! of the time of a 30,000-entity sync. If a batch fails, the caller rolls back and replays
//! the same plan through the row-by-row path, whose explicit checks name the exact entity
//! and field; so the error a user sees is the same either way.

use sluice_model::diff::{Change, Op, Plan};
use sluice_model::{AnyEntity, EntityKind};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use crate::rows::Stored;
use crate::StoreError;

/// Rows per statement: 9 columns × 400 rows stays far below SQLite's variable limit.
const ROWS_PER_STATEMENT: usize = 400;

/// One entity as table columns.
pub(crate) struct Row {
    pub names: Vec<&'static str>,
    pub values: Vec<Option<String>>,
}

pub(crate) fn row<E: Stored>(entity: &E) -> Result<Row, StoreError> {
    let body = serde_json::to_string(entity).map_err(|e| StoreError::Corrupt {
        kind: E::KIND,
        id: entity.id().to_string(),
        reason: e.to_string(),
    })?;
    let tags = entity
        .tags()
        .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".to_owned()));
    let mut names = vec!["id"];
    let mut values = vec![Some(entity.id().to_string())];
    for (column, value) in entity.columns() {
        names.push(column);
        values.push(value);
    }
    for fk in entity.foreign() {
        names.push(fk.column);
        values.push(fk.value.map(|u| u.to_string()));
    }
    names.extend(["tags", "body"]);
    values.extend([tags, Some(body)]);
    Ok(Row { names, values })
}

/// Inserts or updates `rows` (all of one table) in multi-row statements.
pub(crate) async fn upsert(
    tx: &mut Transaction<'_, Sqlite>,
    table: &'static str,
    rows: &[Row],
) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let names = first.names.clone();
    let updates: Vec<String> = names[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("INSERT INTO {table} ({}) ", names.join(", ")));
        sql.push_values(chunk, |mut b, row| {
            for value in &row.values {
                b.push_bind(value.clone());
            }
        });
        sql.push(" ON CONFLICT (id) DO UPDATE SET ");
        sql.push(updates.join(", "));
        sql.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Refuses to delete services that routes still reference (Kong's foreign key from routes to
/// services is RESTRICT). The one place this rule lives: single deletes, plan deletes and
/// batched deletes all call it.
pub(crate) async fn refuse_if_referenced(
    tx: &mut Transaction<'_, Sqlite>,
    kind: EntityKind,
    ids: &[String],
) -> Result<(), StoreError> {
    if kind != EntityKind::Service {
        return Ok(());
    }
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut check: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT 1 FROM routes WHERE service_id IN (");
        let mut list = check.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        check.push(") LIMIT 1");
        let referenced: Option<i64> = check.build_query_scalar().fetch_optional(&mut **tx).await?;
        if referenced.is_some() {
            return Err(StoreError::Referenced {
                referenced_by: "routes",
                target: "services",
            });
        }
    }
    Ok(())
}

/// Deletes by id (a service still referenced by a route is refused); returns how many rows
/// went.
pub(crate) async fn delete(
    tx: &mut Transaction<'_, Sqlite>,
    kind: EntityKind,
    ids: &[String],
) -> Result<u64, StoreError> {
    refuse_if_referenced(tx, kind, ids).await?;
    let mut deleted = 0;
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("DELETE FROM {} WHERE id IN (", kind.collection()));
        let mut list = sql.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        sql.push(")");
        deleted += sql.build().execute(&mut **tx).await?.rows_affected();
    }
    Ok(deleted)
}

/// Frees the unique keys (names, keys, cache keys) of every row the plan deletes, before any
/// other change: a sync that keeps a name under a new id (decK's "same names, altered ids")
/// creates the new row before it deletes the old one, and must not collide with it. Each key
/// becomes a value no entity can have (it embeds the row's id); the rows go later in the
/// plan, in one transaction, so nothing else ever sees them renamed.
pub(crate) async fn release_unique_keys(
    tx: &mut Transaction<'_, Sqlite>,
    plan: &Plan,
) -> Result<(), StoreError> {
    for change in plan.changes.iter().filter(|c| c.op == Op::Delete) {
        let columns = crate::rows::unique_columns(change.kind);
        if columns.is_empty() {
            continue;
        }
        let sets: Vec<String> = columns
            .iter()
            .map(|c| format!("\"{c}\" = 'sluice-deleting:' || id"))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE id = ?",
            change.kind.collection(),
            sets.join(", ")
        );
        sqlx::query(&sql)
            .bind(change.id.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Applies a plan in batches of consecutive changes with the same operation and kind, so the
/// plan's order (creates top-down, deletes bottom-up) is kept.
pub(crate) async fn apply_plan(
    tx: &mut Transaction<'_, Sqlite>,
    plan: &Plan,
) -> Result<(), StoreError> {
    let mut start = 0;
    while start < plan.changes.len() {
        let first = &plan.changes[start];
        let deleting = first.op == Op::Delete;
        let end = plan.changes[start..]
            .iter()
            .position(|c| c.kind != first.kind || (c.op == Op::Delete) != deleting)
            .map_or(plan.changes.len(), |n| start + n);
        let batch = &plan.changes[start..end];
        if deleting {
            let ids: Vec<String> = batch.iter().map(|c| c.id.to_string()).collect();
            delete(tx, first.kind, &ids).await?;
        } else {
            let rows = batch
                .iter()
                .map(change_row)
                .collect::<Result<Vec<Row>, StoreError>>()?;
            upsert(tx, first.kind.collection(), &rows).await?;
        }
        start = end;
    }
    Ok(())
}

fn change_row(change: &Change) -> Result<Row, StoreError> {
    match &change.new {
        Some(AnyEntity::Service(e)) => row(e),
        Some(AnyEntity::Route(e)) => row(e),
        Some(AnyEntity::Consumer(e)) => row(e),
        Some(AnyEntity::Plugin(e)) => row(e),
        Some(AnyEntity::KeyAuth(e)) => row(e),
        Some(AnyEntity::BasicAuth(e)) => row(e),
        Some(AnyEntity::Acl(e)) => row(e),
        None => Err(missing_entity(change)),
    }
}

/// A create or update without its entity: a plan built wrong, never user input (the Admin
/// API refuses such a change before it reaches the store).
pub(crate) fn missing_entity(change: &Change) -> StoreError {
    StoreError::Corrupt {
        kind: change.kind,
        id: change.id.to_string(),
        reason: "a create or update change carries no entity".to_owned(),
    }
}
