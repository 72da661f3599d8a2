//! Sluice's domain model: the Kong entities, their schemas (`schemas/`), defaults and
//! validation. No IO: schemas are embedded at compile time.
//!
//! # Layout
//! - [`compile_check`]: the seam through which the data plane's compile checks run at write
//!   time.
//! - [`credentials`]: Kong's basic-auth password hash and API key generation.
//! - [`declarative`]: decK files (YAML) in and out: parsing, references, validation.
//! - [`diff`]: the sync plan: matching file entities to stored ones, the changes, decK's output.
//! - [`entity`]: the typed, validated entities.
//! - [`schema`]: compiled JSON Schemas, defaults, form coercion, Kong's `/schemas` format.
//! - [`validate`]: input → entity (schema + Kong's entity checks).
//! - [`vault`]: secrets by reference (`{vault://env/NAME}`).
//! - [`violation`]: errors in Kong's `schema violation` shape.
//! - [`wire`]: the bodies of Sluice's own sync and snapshot endpoints (server and CLI).

pub mod compile_check;
pub mod credentials;
pub mod declarative;
pub mod diff;
pub mod entity;
pub mod plugins;
pub mod relations;
pub mod schema;
pub mod shorthands;
pub mod validate;
pub mod vault;
pub mod violation;
pub mod wire;

pub use compile_check::CompileCheck;
pub use entity::{
    Acl, AnyEntity, BasicAuth, CidrPort, Consumer, Entities, Entity, EntityKind, ForeignKey,
    KeyAuth, PathHandling, Plugin, Protocol, Route, Service, Snapshot,
};
pub use schema::{CompiledSchema, PluginSchema, SchemaLoadError, Schemas};
pub use violation::SchemaViolation;

/// The Kong version Sluice speaks for (decK reads it from `GET /`).
pub const KONG_COMPAT_VERSION: &str = "3.13.0";
