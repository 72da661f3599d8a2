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
                .map(|(path, message)| format!("{}: {}", kong_path(path), message)),
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

/// A field path as Kong's message writes it: array positions counted from 1 (Lua's), so
/// the second of `paths` is `paths.2`. Paths are stored counted from 0, as JSON counts.
fn kong_path(path: &[String]) -> String {
    let segments: Vec<String> = path
        .iter()
        .map(|segment| match segment.parse::<usize>() {
            Ok(index) => (index + 1).to_string(),
            Err(_) => segment.clone(),
        })
        .collect();
    segments.join(".")
}

/// Puts `message` at `path` inside `node`, creating records on the way. A numeric segment
/// is an array position: Kong answers `"paths": [null, "<error>"]`, null at the good
/// elements. If a parent already carries its own error, that one is kept.
fn insert_nested(node: &mut Map<String, Value>, path: &[String], message: &str) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let entry = node.entry(first.clone()).or_insert(Value::Null);
    insert_at(entry, rest, message);
}

/// Bounds the array built for an element error: an index beyond this (only a hostile input
/// has one) is reported under its number as a record key instead.
const MAX_ERROR_ARRAY: usize = 1_024;

fn insert_at(slot: &mut Value, path: &[String], message: &str) {
    let Some((first, rest)) = path.split_first() else {
        if slot.is_null() {
            *slot = Value::String(message.to_owned());
        }
        return;
    };
    match first.parse::<usize>() {
        Ok(index) if index < MAX_ERROR_ARRAY && (slot.is_null() || slot.is_array()) => {
            if slot.is_null() {
                *slot = Value::Array(Vec::new());
            }
            let Value::Array(items) = slot else { return };
            if items.len() <= index {
                items.resize(index + 1, Value::Null);
            }
            insert_at(&mut items[index], rest, message);
        }
        _ => {
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(child) = slot {
                insert_nested(child, path, message);
            }
        }
    }
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for SchemaViolation {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn array_element_errors_are_kong_shaped() {
        let mut violation = SchemaViolation::default();
        violation.field(
            "paths.1",
            "should start with: / (fixed path) or ~/ (regex path)",
        );
        violation.field("config.targets.0.model.name", "required field missing");
        assert_eq!(
            violation.message(),
            "2 schema violations (config.targets.1.model.name: required field missing; \
             paths.2: should start with: / (fixed path) or ~/ (regex path))"
        );
        assert_eq!(
            violation.fields_json(),
            json!({
                "paths": [null, "should start with: / (fixed path) or ~/ (regex path)"],
                "config": {"targets": [{"model": {"name": "required field missing"}}]}
            })
        );
    }

    #[test]
    fn a_huge_index_is_not_an_array() {
        let mut violation = SchemaViolation::default();
        violation.field("tags.999999", "bad");
        assert_eq!(violation.fields_json(), json!({"tags": {"999999": "bad"}}));
    }
}
