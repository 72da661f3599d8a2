//! Sluice's control-plane store on sqlx.
//!
//! Entities are stored whole (the validated JSON body) plus the columns needed to index,
//! constrain and reference them. Every write runs in one transaction that also bumps the
//! config version, and the new version is published on a `watch` channel after commit, so a
//! data plane in the same process learns of it without polling.
//!
//! Uniqueness and foreign keys are checked explicitly inside the write transaction (the
//! database constraints stay as a safety net) so that errors name the field the way Kong does.

mod bulk;
mod error;
mod rows;
mod sqlite;

pub use error::StoreError;
pub use rows::Stored;
pub use sqlite::Store;

pub use sluice_model::Snapshot;
use uuid::Uuid;

/// Default and maximum page sizes of Kong's Admin API.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Tag filter of a list request: Kong's `tags=a,b` (all) and `tags=a/b` (any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TagFilter {
    #[default]
    None,
    All(Vec<String>),
    Any(Vec<String>),
}

/// One list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub size: u32,
    /// The opaque offset returned by the previous page.
    pub offset: Option<String>,
    pub tags: TagFilter,
    /// Restricts to entities referencing `(column, id)`, e.g. the routes of one service.
    pub scope: Option<(&'static str, Uuid)>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<E> {
    pub data: Vec<E>,
    /// Present when there is a next page.
    pub offset: Option<String>,
}

/// One tag on one entity, as Kong's `/tags` lists them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TagRow {
    pub entity_id: String,
    pub entity_name: &'static str,
    pub tag: String,
}

#[cfg(test)]
mod tests;
