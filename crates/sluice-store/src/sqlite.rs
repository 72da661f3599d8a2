//! The SQLite store (the embedded default: one file, WAL mode).

use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sluice_model::diff::{Change, Op, Plan};
use sluice_model::{AnyEntity, Entities, Entity, EntityKind};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use crate::rows::Stored;
use crate::{ListQuery, Page, Snapshot, StoreError, TagFilter, TagRow};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The control-plane store. Cheap to clone (pools and channel are shared).
#[derive(Clone)]
pub struct Store {
    /// One connection: SQLite allows one writer, and a single-connection pool turns
    /// concurrent writers into a queue instead of `SQLITE_BUSY` errors mid-transaction.
    writer: SqlitePool,
    reader: SqlitePool,
    version: watch::Sender<u64>,
}

// === impl Store ===

impl Store {
    /// Opens (creating if missing) the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedDatabase(url.to_owned()));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        private_file(options.get_filename())?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let current: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&reader)
            .await?;
        let (version, _) = watch::channel(current as u64);
        Ok(Self {
            writer,
            reader,
            version,
        })
    }

    /// Every migration this build knows, with its description and whether the database has
    /// it applied (for `sluice migrations status`; [`Store::open`] already applied them).
    pub async fn migration_status(&self) -> Result<Vec<(i64, String, bool)>, StoreError> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&self.reader)
                .await?;
        Ok(MIGRATOR
            .iter()
            .map(|m| {
                (
                    m.version,
                    m.description.to_string(),
                    applied.contains(&m.version),
                )
            })
            .collect())
    }

    /// The current config version. Every successful write increases it.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A receiver that sees every new config version after its write committed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.reader).await.is_ok()
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    // --- reads ---

    /// Looks up by id when `key` is a UUID, else by the endpoint key (name, username, ...).
    pub async fn get<E: Stored>(&self, key: &str) -> Result<Option<E>, StoreError> {
        self.find(key, None).await
    }

    /// [`Store::get`] within one parent: the entity whose `column` (`consumer_id`) is
    /// `parent` (`/consumers/{c}/acls/{group}`: a group name is only unique within its
    /// consumer).
    pub async fn get_within<E: Stored>(
        &self,
        key: &str,
        column: &str,
        parent: Uuid,
    ) -> Result<Option<E>, StoreError> {
        self.find(key, Some((column, parent))).await
    }

    async fn find<E: Stored>(
        &self,
        key: &str,
        within: Option<(&str, Uuid)>,
    ) -> Result<Option<E>, StoreError> {
        // The endpoint key is quoted: `group` is an SQL keyword.
        let (by, value) = match Uuid::parse_str(key) {
            Ok(id) => ("id".to_owned(), id.to_string()),
            Err(_) => (format!("\"{}\"", E::KIND.endpoint_key()), key.to_owned()),
        };
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT id, body FROM {} WHERE {by} = ",
            E::KIND.collection()
        ));
        sql.push_bind(value);
        if let Some((column, parent)) = within {
            sql.push(format_args!(" AND {column} = "))
                .push_bind(parent.to_string());
        }
        let row = sql.build().fetch_optional(&self.reader).await?;
        row.map(|r| decode::<E>(&r)).transpose()
    }

    /// The entity whose unique `column` (one of [`Stored::UNIQUE`]) is `value`
    /// (`/consumers?custom_id=`); `None` for a column that is not one of them.
    pub async fn get_by_unique<E: Stored>(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<E>, StoreError> {
        // Only a listed column name goes into the SQL text; the value is bound.
        let Some(column) = E::UNIQUE.iter().find(|c| **c == column) else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT id, body FROM {} WHERE \"{column}\" = ?",
            E::KIND.collection()
        );
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| decode::<E>(&r)).transpose()
    }

    pub async fn get_by_id<E: Stored>(&self, id: Uuid) -> Result<Option<E>, StoreError> {
        let sql = format!("SELECT id, body FROM {} WHERE id = ?", E::KIND.collection());
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| decode::<E>(&r)).transpose()
    }

    /// One page, ordered by primary key as Kong on PostgreSQL orders.
    pub async fn list<E: Stored>(&self, query: &ListQuery) -> Result<Page<E>, StoreError> {
        let after = match &query.offset {
            Some(offset) => Some(decode_offset(offset)?),
            None => None,
        };
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT id, body FROM ");
        sql.push(E::KIND.collection()).push(" t WHERE 1 = 1");
        if let Some(after) = after {
            sql.push(" AND t.id > ").push_bind(after);
        }
        if let Some((column, id)) = query.scope {
            sql.push(format_args!(" AND t.{column} = "))
                .push_bind(id.to_string());
        }
        push_tag_filter(&mut sql, &query.tags);
        sql.push(" ORDER BY t.id LIMIT ")
            .push_bind(i64::from(query.size) + 1);
        let rows = sql.build().fetch_all(&self.reader).await?;
        let mut data = rows
            .iter()
            .map(decode::<E>)
            .collect::<Result<Vec<E>, _>>()?;
        let offset = if data.len() > query.size as usize {
            data.truncate(query.size as usize);
            data.last().map(|e| encode_offset(&e.id().to_string()))
        } else {
            None
        };
        Ok(Page { data, offset })
    }

    /// One page of every tag on every entity (or of one tag), ordered as Kong on PostgreSQL
    /// orders `/tags`: by entity id, then by the tag's position on the entity.
    pub async fn tags(
        &self,
        tag: Option<&str>,
        size: u32,
        offset: Option<&str>,
    ) -> Result<Page<TagRow>, StoreError> {
        const TABLES: [(&str, &str); 7] = [
            ("services", "services"),
            ("routes", "routes"),
            ("consumers", "consumers"),
            ("plugins", "plugins"),
            ("keyauth_credentials", "keyauth_credentials"),
            ("basicauth_credentials", "basicauth_credentials"),
            ("acls", "acls"),
        ];
        let after = match offset {
            Some(offset) => Some(decode_tag_offset(offset)?),
            None => None,
        };
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT entity_id, entity_name, tag, ord FROM (");
        for (index, (table, name)) in TABLES.iter().enumerate() {
            if index > 0 {
                sql.push(" UNION ALL ");
            }
            sql.push(format_args!(
                "SELECT t.id AS entity_id, '{name}' AS entity_name, j.value AS tag, \
                 j.key AS ord FROM {table} t, json_each(t.tags) j"
            ));
        }
        sql.push(") WHERE 1 = 1");
        if let Some(tag) = tag {
            sql.push(" AND tag = ").push_bind(tag.to_owned());
        }
        if let Some((id, ord)) = after {
            sql.push(" AND (entity_id > ")
                .push_bind(id.clone())
                .push(" OR (entity_id = ")
                .push_bind(id)
                .push(" AND ord > ")
                .push_bind(ord)
                .push("))");
        }
        sql.push(" ORDER BY entity_id, ord LIMIT ")
            .push_bind(i64::from(size) + 1);
        let rows = sql.build().fetch_all(&self.reader).await?;
        let mut data = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows.iter().take(size as usize) {
            let entity_id: String = row.try_get("entity_id")?;
            let name: String = row.try_get("entity_name")?;
            let ord: i64 = row.try_get("ord")?;
            let entity_name = TABLES
                .iter()
                .find(|(_, n)| *n == name)
                .map_or("unknown", |(_, n)| n);
            last = Some((entity_id.clone(), ord));
            data.push(TagRow {
                entity_id,
                entity_name,
                tag: row.try_get("tag")?,
            });
        }
        let offset = match last {
            Some((id, ord)) if rows.len() > size as usize => {
                Some(URL_SAFE_NO_PAD.encode(format!("{id}|{ord}")))
            }
            _ => None,
        };
        Ok(Page { data, offset })
    }

    /// The names of the plugins configured, sorted (Kong's `enabled_in_cluster`).
    pub async fn plugin_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT name FROM plugins ORDER BY name")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// Every entity at one version, read in one transaction (a consistent view).
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.reader.begin().await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let snapshot = Snapshot {
            version: version as u64,
            entities: Entities {
                services: all(&mut tx).await?,
                routes: all(&mut tx).await?,
                consumers: all(&mut tx).await?,
                plugins: all(&mut tx).await?,
                keyauth_credentials: all(&mut tx).await?,
                basicauth_credentials: all(&mut tx).await?,
                acls: all(&mut tx).await?,
            },
        };
        tx.commit().await?;
        Ok(snapshot)
    }

    // --- writes ---

    /// Creates an entity; fails if its id exists.
    pub async fn insert<E: Stored>(&self, entity: &E) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        if exists(&mut tx, E::KIND, entity.id()).await? {
            return Err(StoreError::PrimaryKey { id: entity.id() });
        }
        write(&mut tx, entity).await?;
        self.commit(tx).await
    }

    /// Creates or replaces an entity by id (PUT, PATCH).
    pub async fn upsert<E: Stored>(&self, entity: &E) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        write(&mut tx, entity).await?;
        self.commit(tx).await
    }

    /// Deletes by id. Plugins scoped to the entity go with it; a service that routes still
    /// reference is refused. Returns whether anything was deleted.
    pub async fn delete<E: Stored>(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let deleted = crate::bulk::delete(&mut tx, E::KIND, &[id.to_string()]).await?;
        if deleted == 0 {
            return Ok(false);
        }
        self.commit(tx).await?;
        Ok(true)
    }

    /// Replaces the whole config with `entities` in one transaction (DB-less loads,
    /// `POST /config`). Either all of it is applied or none.
    pub async fn replace_all(&self, entities: &Entities) -> Result<u64, StoreError> {
        // Fast path: batched inserts; on any failure, the row-by-row path names the culprit.
        let mut tx = self.writer.begin().await?;
        clear(&mut tx).await?;
        let fast = async {
            let e = entities;
            crate::bulk::upsert(&mut tx, "consumers", &collect_rows(&e.consumers)?).await?;
            crate::bulk::upsert(&mut tx, "services", &collect_rows(&e.services)?).await?;
            crate::bulk::upsert(&mut tx, "routes", &collect_rows(&e.routes)?).await?;
            crate::bulk::upsert(&mut tx, "plugins", &collect_rows(&e.plugins)?).await?;
            let keys = collect_rows(&e.keyauth_credentials)?;
            crate::bulk::upsert(&mut tx, "keyauth_credentials", &keys).await?;
            let passwords = collect_rows(&e.basicauth_credentials)?;
            crate::bulk::upsert(&mut tx, "basicauth_credentials", &passwords).await?;
            crate::bulk::upsert(&mut tx, "acls", &collect_rows(&e.acls)?).await?;
            Ok::<(), StoreError>(())
        }
        .await;
        if fast.is_ok() {
            return self.commit(tx).await;
        }
        drop(tx);
        let mut tx = self.writer.begin().await?;
        clear(&mut tx).await?;
        write_all(&mut tx, &entities.consumers).await?;
        write_all(&mut tx, &entities.services).await?;
        write_all(&mut tx, &entities.routes).await?;
        write_all(&mut tx, &entities.plugins).await?;
        write_all(&mut tx, &entities.keyauth_credentials).await?;
        write_all(&mut tx, &entities.basicauth_credentials).await?;
        write_all(&mut tx, &entities.acls).await?;
        self.commit(tx).await
    }

    /// Applies a sync plan in one transaction, guarded by the config version it was computed
    /// against: a concurrent change makes it fail with nothing applied, and so does any change
    /// of the plan that fails. Returns the new version.
    pub async fn apply_plan(&self, plan: &Plan, expected_version: u64) -> Result<u64, StoreError> {
        if plan.changes.is_empty() {
            let actual = self.current_version().await?;
            if actual != expected_version {
                return Err(StoreError::VersionConflict {
                    expected: expected_version,
                    actual,
                });
            }
            return Ok(actual);
        }
        // Fast path: batched statements, constraints checked by the database.
        let mut tx = self.writer.begin().await?;
        check_version(&mut tx, expected_version).await?;
        crate::bulk::release_unique_keys(&mut tx, plan).await?;
        if crate::bulk::apply_plan(&mut tx, plan).await.is_ok() {
            return self.commit(tx).await;
        }
        drop(tx); // rolled back
                  // Slow path: row by row with explicit checks, to name the change that fails.
        let mut tx = self.writer.begin().await?;
        check_version(&mut tx, expected_version).await?;
        crate::bulk::release_unique_keys(&mut tx, plan).await?;
        for (index, change) in plan.changes.iter().enumerate() {
            let result = apply_change(&mut tx, change).await;
            if let Err(source) = result {
                return Err(StoreError::PlanFailed {
                    index,
                    op: format!("{:?}", change.op).to_lowercase(),
                    kind: change.kind.singular().to_owned(),
                    label: change.label.clone(),
                    source: Box::new(source),
                });
            }
        }
        self.commit(tx).await
    }

    async fn current_version(&self) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&self.writer)
            .await?;
        Ok(version as u64)
    }

    /// Bumps the version, commits, then tells subscribers.
    async fn commit(&self, mut tx: Transaction<'_, Sqlite>) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query_scalar(
            "UPDATE config_version SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let version = version as u64;
        self.version.send_if_modified(|current| {
            // Writes are serialized by the single writer connection, but be monotonic anyway.
            if version > *current {
                *current = version;
                true
            } else {
                false
            }
        });
        Ok(version)
    }
}

// === helpers ===

async fn write_all<E: Stored>(
    tx: &mut Transaction<'_, Sqlite>,
    entities: &[E],
) -> Result<(), StoreError> {
    for entity in entities {
        write(tx, entity).await?;
    }
    Ok(())
}

async fn clear(tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    for table in [
        "acls",
        "basicauth_credentials",
        "keyauth_credentials",
        "plugins",
        "routes",
        "services",
        "consumers",
    ] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The database holds provider keys: it is created readable by its owner only (0600), and an
/// existing one is tightened to that. SQLite gives its `-wal` and `-shm` files the mode of the
/// database file; existing ones are tightened too.
fn private_file(path: &std::path::Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") {
            return Ok(());
        }
        let private = |error: std::io::Error| StoreError::Permissions {
            path: path.display().to_string(),
            source: error,
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(private)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(private)?;
            }
        }
    }
    Ok(())
}

fn collect_rows<E: Stored>(entities: &[E]) -> Result<Vec<crate::bulk::Row>, StoreError> {
    entities.iter().map(crate::bulk::row).collect()
}

async fn check_version(tx: &mut Transaction<'_, Sqlite>, expected: u64) -> Result<(), StoreError> {
    let actual: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
        .fetch_one(&mut **tx)
        .await?;
    if actual as u64 != expected {
        return Err(StoreError::VersionConflict {
            expected,
            actual: actual as u64,
        });
    }
    Ok(())
}

async fn apply_change(tx: &mut Transaction<'_, Sqlite>, change: &Change) -> Result<(), StoreError> {
    match (change.op, &change.new) {
        (Op::Delete, _) => {
            crate::bulk::delete(tx, change.kind, &[change.id.to_string()]).await?;
            Ok(())
        }
        (_, Some(AnyEntity::Service(e))) => write(tx, e).await,
        (_, Some(AnyEntity::Route(e))) => write(tx, e).await,
        (_, Some(AnyEntity::Consumer(e))) => write(tx, e).await,
        (_, Some(AnyEntity::Plugin(e))) => write(tx, e).await,
        (_, Some(AnyEntity::KeyAuth(e))) => write(tx, e).await,
        (_, Some(AnyEntity::BasicAuth(e))) => write(tx, e).await,
        (_, Some(AnyEntity::Acl(e))) => write(tx, e).await,
        (_, None) => Err(crate::bulk::missing_entity(change)),
    }
}

async fn exists(
    tx: &mut Transaction<'_, Sqlite>,
    kind: EntityKind,
    id: Uuid,
) -> Result<bool, StoreError> {
    let sql = format!("SELECT 1 FROM {} WHERE id = ?", kind.collection());
    let found: Option<i64> = sqlx::query_scalar(&sql)
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(found.is_some())
}

/// Checks unique columns and foreign keys, then inserts or updates the row.
async fn write<E: Stored>(tx: &mut Transaction<'_, Sqlite>, entity: &E) -> Result<(), StoreError> {
    let table = E::KIND.collection();
    let id = entity.id().to_string();
    let columns = entity.columns();
    for (column, value) in &columns {
        let Some(value) = value else { continue };
        if !E::UNIQUE.contains(column) {
            continue;
        }
        let sql = format!("SELECT 1 FROM {table} WHERE {column} = ? AND id <> ? LIMIT 1");
        let clash: Option<i64> = sqlx::query_scalar(&sql)
            .bind(value)
            .bind(&id)
            .fetch_optional(&mut **tx)
            .await?;
        if clash.is_some() {
            let (rendered, fields) = entity.unique_violation(column);
            return Err(StoreError::Unique { rendered, fields });
        }
    }
    let foreign = entity.foreign();
    for fk in &foreign {
        let Some(target_id) = fk.value else { continue };
        if !exists(tx, fk.target, target_id).await? {
            return Err(StoreError::ForeignKey {
                field: fk.field,
                target: fk.target.collection(),
                id: target_id,
            });
        }
    }

    let body = serde_json::to_string(entity).map_err(|e| StoreError::Corrupt {
        kind: E::KIND,
        id: id.clone(),
        reason: e.to_string(),
    })?;
    let tags = entity
        .tags()
        .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".to_owned()));

    let mut names: Vec<&str> = vec!["id"];
    names.extend(columns.iter().map(|(c, _)| *c));
    names.extend(foreign.iter().map(|f| f.column));
    names.extend(["tags", "body"]);
    let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "INSERT INTO {table} ({}) VALUES (",
        names.join(", ")
    ));
    {
        let mut values = sql.separated(", ");
        values.push_bind(id);
        for (_, value) in columns {
            values.push_bind(value);
        }
        for fk in foreign {
            values.push_bind(fk.value.map(|u| u.to_string()));
        }
        values.push_bind(tags);
        values.push_bind(body);
    }
    sql.push(") ON CONFLICT (id) DO UPDATE SET ");
    let updates: Vec<String> = names[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sql.push(updates.join(", "));
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

/// Every entity of a table, in id order. The rows come back as one JSON array built inside
/// SQLite: sqlx hands SQLite rows across threads one at a time, which made a 30,000-entity
/// snapshot spend most of its time in thread hand-offs.
async fn all<E: Stored>(tx: &mut Transaction<'_, Sqlite>) -> Result<Vec<E>, StoreError> {
    let sql = format!(
        // Bodies are JSON we wrote ourselves, so plain concatenation builds the array without
        // SQLite re-parsing each one.
        "SELECT '[' || coalesce(group_concat(body, ','), '') || ']' FROM (SELECT body FROM {} ORDER BY id)",
        E::KIND.collection()
    );
    let array: String = sqlx::query_scalar(&sql).fetch_one(&mut **tx).await?;
    serde_json::from_str(&array).map_err(|e| StoreError::Corrupt {
        kind: E::KIND,
        id: "(snapshot)".to_owned(),
        reason: e.to_string(),
    })
}

fn decode<E: Entity>(row: &sqlx::sqlite::SqliteRow) -> Result<E, StoreError> {
    let body: &str = row.try_get("body")?;
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        kind: E::KIND,
        id: row.try_get::<String, _>("id").unwrap_or_default(),
        reason: e.to_string(),
    })
}

fn push_tag_filter(sql: &mut QueryBuilder<Sqlite>, tags: &TagFilter) {
    match tags {
        TagFilter::None => {}
        TagFilter::All(tags) => {
            // One subquery counting the distinct wanted tags the entity has, not one EXISTS
            // per tag: a thousand ANDed subqueries pass SQLite's expression depth limit.
            let wanted: std::collections::BTreeSet<&String> = tags.iter().collect();
            sql.push(
                " AND (SELECT COUNT(DISTINCT j.value) FROM json_each(t.tags) j WHERE j.value IN (",
            );
            let mut values = sql.separated(", ");
            for tag in &wanted {
                values.push_bind((*tag).clone());
            }
            sql.push(")) = ").push_bind(wanted.len() as i64);
        }
        TagFilter::Any(tags) => {
            sql.push(" AND EXISTS (SELECT 1 FROM json_each(t.tags) j WHERE j.value IN (");
            let mut values = sql.separated(", ");
            for tag in tags {
                values.push_bind(tag.clone());
            }
            sql.push("))");
        }
    }
}

fn encode_offset(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// A `/tags` offset: the last row's entity id and tag position.
fn decode_tag_offset(offset: &str) -> Result<(String, i64), StoreError> {
    URL_SAFE_NO_PAD
        .decode(offset)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (id, ord) = text.split_once('|')?;
            Uuid::parse_str(id).ok()?;
            Some((id.to_owned(), ord.parse().ok()?))
        })
        .ok_or_else(|| StoreError::InvalidOffset(offset.to_owned()))
}

fn decode_offset(offset: &str) -> Result<String, StoreError> {
    URL_SAFE_NO_PAD
        .decode(offset)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| Uuid::parse_str(id).is_ok())
        .ok_or_else(|| StoreError::InvalidOffset(offset.to_owned()))
}
