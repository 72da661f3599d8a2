//! Schema violations in the shape Kong reports them.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// Everything wrong with one entity, collected rather than stopping at the first error, so a
/// user fixes their input in one round trip (Kong does the same).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaViolation {
    /// Field errors keyed by their path (`["config", "model", "provider"]`), sorted.
    pub fields: BTreeMap<Vec<String>, String>,
    /// Errors about the entity as a whole (Kong's `@entity`), in the order found.
    pub entity: Vec<String>,
}

// === impl SchemaViolation ===

impl SchemaViolation {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.entity.is_empty()
    }

    /// Records an error on a dotted field path. The first error on a field wins: later ones
    /// are usually consequences of it.
    pub fn field(&mut self, path: &str, message: impl Into<String>) {
        let key = path.split('.').map(str::to_owned).collect();
        self.fields.entry(key).or_insert_with(|| message.into());
    }

    pub fn field_at(&mut self, path: Vec<String>, message: impl Into<String>) {
        self.fields.entry(path).or_insert_with(|| message.into());
    }

    pub fn entity(&mut self, message: impl Into<String>) {
        let message = message.into();
        if !self.entity.contains(&message) {
            self.entity.push(message);
        }
    }

    /// Folds another violation in under a prefix (`config`).
    pub fn nest(&mut self, prefix: &str, other: SchemaViolation) {
        for (mut path, message) in other.fields {
            path.insert(0, prefix.to_owned());
            self.field_at(path, message);
        }
        for message in other.entity {
            self.field_at(vec![prefix.to_owned(), "@entity".to_owned()], message);
        }
    }

    /// Kong's message: `schema violation (f: e)` or `N schema violations (e1; e2)`, entity
    /// errors first, then fields in sorted order.
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = self.entity.clone();
        parts.extend(
            self.fields
                .iter()
                .map(|(path, message)| format!("{}: {}", path.join("."), message)),
        );
        match parts.len() {
            1 => format!("schema violation ({})", parts[0]),
            n => format!("{n} schema violations ({})", parts.join("; ")),
        }
    }

    /// Kong's `fields` object: nested by path, entity errors under `@entity`.
    pub fn fields_json(&self) -> Value {
        let mut root = Map::new();
        if !self.entity.is_empty() {
            root.insert(
                "@entity".to_owned(),
                Value::Array(self.entity.iter().cloned().map(Value::String).collect()),
            );
        }
        for (path, message) in &self.fields {
            insert_nested(&mut root, path, message);
        }
        Value::Object(root)
    }
}

/// Puts `message` at `path` inside `node`, creating records on the way. If a parent already
/// carries its own error, that one is kept.
fn insert_nested(node: &mut Map<String, Value>, path: &[String], message: &str) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = node;
    for segment in parents {
        let entry = node
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        match entry {
            Value::Object(child) => node = child,
            _ => return,
        }
    }
    node.entry(last.clone())
        .or_insert_with(|| Value::String(message.to_owned()));
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for SchemaViolation {}
