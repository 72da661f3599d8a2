use sluice_model::EntityKind;
use uuid::Uuid;

/// Why a store operation failed. The conflict variants carry what the Admin API needs to
/// answer in Kong's words; `Database` is an internal failure never shown to clients in detail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url '{0}': use sqlite://PATH")]
    UnsupportedDatabase(String),
    /// An entity with this primary key exists already (a POST with an explicit id).
    #[error("primary key violation on id {id}")]
    PrimaryKey { id: Uuid },
    /// A unique field collides with another entity. `rendered` is Kong's `{name="x"}` form.
    #[error("UNIQUE violation detected on '{rendered}'")]
    Unique {
        rendered: String,
        fields: serde_json::Value,
    },
    /// A foreign key points at nothing.
    #[error("the foreign key '{{id=\"{id}\"}}' does not reference an existing '{target}' entity.")]
    ForeignKey {
        field: &'static str,
        target: &'static str,
        id: Uuid,
    },
    /// A delete would orphan entities that reference this one.
    #[error("an existing '{referenced_by}' entity references this '{target}' entity")]
    Referenced {
        referenced_by: &'static str,
        target: &'static str,
    },
    /// A sync plan was computed against another config version (someone changed the config
    /// in between). Nothing was applied.
    #[error("the config changed since the plan was computed (plan for version {expected}, store at version {actual}); run the diff again")]
    VersionConflict { expected: u64, actual: u64 },
    /// One change of a plan failed; the whole plan was rolled back.
    #[error("while applying change {index} ({op} {kind} {label}): {source}")]
    PlanFailed {
        index: usize,
        op: String,
        kind: String,
        label: String,
        #[source]
        source: Box<StoreError>,
    },
    /// The database file could not be created or made private (mode 0600).
    #[error("cannot make the database file {path} private: {source}")]
    Permissions {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("'{0}' is not a valid offset: bad base64 encoding")]
    InvalidOffset(String),
    #[error("stored {kind:?} {id} is unreadable: {reason}")]
    Corrupt {
        kind: EntityKind,
        id: String,
        reason: String,
    },
}
