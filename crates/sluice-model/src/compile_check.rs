//! The data plane's compile checks, run when a config is written.
//!
//! A config that is accepted must be a config the proxy compiles: otherwise the write
//! succeeds, the data plane refuses the snapshot, and every later change is stuck behind it.
//! The checks that only the data plane knows (its router's header and regex rules, what each
//! plugin's handler accepts) live in the crates that compile; the binary hands them to
//! [`Schemas::with_compile_check`](crate::Schemas::with_compile_check) so every write path
//! (Admin API, sync, `POST /config`, DB-less files, `sluice validate`) runs the same code the
//! compile runs. This crate only defines the seam, so it stays free of the proxy and of IO.

use crate::entity::{Plugin, Route};
use crate::violation::SchemaViolation;

/// Checks one entity the way the data plane compiles it. Called only for an entity that
/// passed every schema and entity check, so implementations may rely on the schema's
/// guarantees and defaults. Must be free of side effects.
pub trait CompileCheck: Send + Sync {
    /// A route, compiled alone (its matchers: header names, regexes).
    fn route(&self, route: &Route, violation: &mut SchemaViolation);

    /// A plugin instance, built alone (its handler's config).
    fn plugin(&self, plugin: &Plugin, violation: &mut SchemaViolation);
}
