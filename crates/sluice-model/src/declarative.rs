//! decK's declarative file format: its boundary types and their conversion into validated
//! domain entities, and back (`sluice dump`).
//!
//! Loading is two steps, so each can report every problem it finds:
//! 1. [`parse`] reads one or more files into a [`Content`]: `${{ env "DECK_X" }}`
//!    substitution, YAML, the meta keys (`_format_version`, `_info`, ...) and the nesting of
//!    routes and plugins. Entities stay raw JSON maps ([`FService`], ...), each remembering
//!    where in which file it was written.
//! 2. [`resolve`] turns a [`Content`] into [`Entities`]: ids, references by name or id,
//!    uniqueness, then [`Schemas::build`] on every entity. A schema violation is reported per
//!    field at the field's own line, with the same message the Admin API gives.
//!
//! The rules are decK's (Kong/go-database-reconciler `pkg/file`), with three deliberate
//! differences: entities Sluice does not have (upstreams, certificates, JWT secrets, ...) are
//! refused by name rather than ignored; a reference must point at an entity in the files, as
//! there is no gateway state to look it up in; and an entity without an `id` gets a UUIDv5
//! derived from its name (decK asks the gateway, or picks a random one), so loading an
//! unchanged file twice gives the same ids.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::schema::Schemas;

mod position;
mod reader;
mod resolver;
mod template;
mod writer;

use position::{PosNode, Seg};

/// The namespace of the UUIDv5 ids given to entities written without an `id`. Never change
/// it: every id Sluice ever generated for a file depends on it.
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x9b2d54c3b6e04f8fa1c7d0e5f3a86b21);

/// One file to read: its name (used in error locations) and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// One problem, located: `file`, 1-based `line`/`column` when known, entity `path` like
/// `services[2].routes[0].paths[1]` (0-based, decK-style, counted within `file`), and the
/// message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarativeError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub path: String,
    pub message: String,
}

/// Everything the files declare, merged: entity lists are concatenated in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Content {
    pub format_version: String,
    /// `_info.select_tags`: added to the tags of every entity.
    pub select_tags: Vec<String>,
    pub services: Vec<FService>,
    /// Top-level routes only; routes nested in a service are in [`FService::routes`].
    pub routes: Vec<FRoute>,
    pub consumers: Vec<FConsumer>,
    /// Top-level plugins only; nested plugins stay with their service, route or consumer.
    pub plugins: Vec<FPlugin>,
}

/// A service as written: its own fields (without `routes` and `plugins`), its children, and
/// where it was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FService {
    pub fields: Map<String, Value>,
    pub routes: Vec<FRoute>,
    pub plugins: Vec<FPlugin>,
    pub source: Source,
}

/// A route as written, nested in a service or top-level (then `service` in `fields` may
/// reference one by name or id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FRoute {
    pub fields: Map<String, Value>,
    pub plugins: Vec<FPlugin>,
    pub source: Source,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FConsumer {
    pub fields: Map<String, Value>,
    pub plugins: Vec<FPlugin>,
    /// `keyauth_credentials`, `basicauth_credentials` and `acls`, in that order.
    pub credentials: Vec<FCredential>,
    pub source: Source,
}

/// A credential as written under its consumer (`keyauth_credentials[0]`); `kind` says which.
#[derive(Debug, Clone, PartialEq)]
pub struct FCredential {
    pub kind: crate::entity::EntityKind,
    pub fields: Map<String, Value>,
    pub source: Source,
}

/// A plugin as written. `service`, `route` and `consumer` in `fields`, when present, are
/// references by name or id; nesting supplies the parent's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FPlugin {
    pub fields: Map<String, Value>,
    pub source: Source,
}

/// Where an entity was written. It also keeps the file's position tree, so errors about the
/// entity's fields found later can point at the field's own line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Source {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The decK-style path of the entity in its file: `services[0].routes[1]`.
    pub path: String,
    positions: Option<Arc<PosNode>>,
    /// The same path as segments, from the document root.
    node: Vec<Seg>,
}

pub use crate::entity::Entities;

/// Parses and merges several files. `env` resolves `${{ env "DECK_NAME" }}` (decK's syntax;
/// only names starting with `DECK_` may be read, and a missing variable is an error naming
/// it). `_format_version` must be `"3.0"` in some file, and no file may set another one.
pub fn parse(
    files: &[SourceFile],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Content, Vec<DeclarativeError>> {
    reader::read(files, template::EnvSource::Vars(env))
}

/// [`parse`] with decK's mocked environment (`deck file render` by default): a variable
/// reads as its own name, `toBool` as `false`, `toInt` and `toFloat` as `42`.
pub fn parse_mocked(files: &[SourceFile]) -> Result<Content, Vec<DeclarativeError>> {
    reader::read(files, template::EnvSource::Mock)
}

/// Validates every entity with [`Schemas::build`] and resolves references. An entity without
/// an explicit `id` gets a deterministic UUIDv5 in [`ID_NAMESPACE`], named `services:<name>`,
/// `routes:<name>` (unnamed: `routes:<service name or id>:<n>`, the n-th unnamed route of that
/// service), `consumers:<username>` (or `consumers:custom_id:<custom_id>`), and
/// `plugins:<name>:<service id>:<route id>:<consumer id>` (empty when unscoped). `now` is the
/// `created_at` and `updated_at` of every entity.
pub fn resolve(
    content: &Content,
    schemas: &Schemas,
    now: i64,
) -> Result<Entities, Vec<DeclarativeError>> {
    resolver::resolve(content, schemas, now)
}

/// The reverse, for `sluice dump`: entities as decK YAML. Services carry their routes, and a
/// plugin scoped to exactly one service or one route is nested there; consumers and every
/// other plugin are top-level, referring to their scope by name (or id when unnamed). Ids are
/// kept, so a re-sync matches the same entities; `created_at`, `updated_at` and null fields are
/// left out, as are the `select_tags` (written once under `_info`). Entities are sorted by
/// name, then id.
pub fn render(entities: &Entities, select_tags: &[String]) -> String {
    writer::render(entities, select_tags)
}

// === impl DeclarativeError ===

impl fmt::Display for DeclarativeError {
    /// `kong.yaml:12:7: services[0].routes[1].paths[0]: should start with: / ...`, leaving out
    /// the parts that are unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut located = false;
        if !self.file.is_empty() {
            f.write_str(&self.file)?;
            located = true;
        }
        if let Some(line) = self.line {
            if located {
                f.write_str(":")?;
            }
            write!(f, "{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
            located = true;
        }
        if located {
            f.write_str(": ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeclarativeError {}

// === impl Source ===

impl Source {
    /// An error about the entity as a whole.
    fn error(&self, message: impl Into<String>) -> DeclarativeError {
        self.error_at(&[], message)
    }

    /// An error about something below the entity (`["paths", 1]`), located at its own line
    /// when the file has it, else at the entity's.
    fn error_at(&self, below: &[Seg], message: impl Into<String>) -> DeclarativeError {
        let (line, column) = match &self.positions {
            Some(root) => {
                let mut path = self.node.clone();
                path.extend_from_slice(below);
                let pos = root.locate(&path);
                (Some(pos.line), Some(pos.column))
            }
            None => (self.line, self.column),
        };
        DeclarativeError {
            file: self.file.clone(),
            line,
            column,
            path: position::render_path(&self.path, below),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;
