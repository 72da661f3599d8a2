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
    #[error("'{0}' is not a valid offset: bad encoding")]
    InvalidOffset(String),
    #[error("stored {kind:?} {id} is unreadable: {reason}")]
    Corrupt {
        kind: EntityKind,
        id: String,
        reason: String,
    },
}
