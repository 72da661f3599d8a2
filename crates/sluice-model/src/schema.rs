//! The JSON Schemas of `schemas/`, compiled once, and what is derived from them: defaults,
//! form-input coercion, Kong-shaped error messages and Kong's `/schemas` format.
//!
//! The schema files are embedded at compile time so the binary is self-contained; the files in
//! the repository stay the single source of truth for fields, types and defaults.

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::{Map, Value};

use crate::compile_check::CompileCheck;
use crate::entity::EntityKind;
use crate::violation::SchemaViolation;

/// Entity schemas, embedded from `schemas/`.
const ENTITY_SCHEMAS: [(EntityKind, &str); 7] = [
    (
        EntityKind::Service,
        include_str!("../../../schemas/service.json"),
    ),
    (
        EntityKind::Route,
        include_str!("../../../schemas/route.json"),
    ),
    (
        EntityKind::Consumer,
        include_str!("../../../schemas/consumer.json"),
    ),
    (
        EntityKind::Plugin,
        include_str!("../../../schemas/plugin.json"),
    ),
    (
        EntityKind::KeyAuth,
        include_str!("../../../schemas/keyauth_credential.json"),
    ),
    (
        EntityKind::BasicAuth,
        include_str!("../../../schemas/basicauth_credential.json"),
    ),
    (EntityKind::Acl, include_str!("../../../schemas/acl.json")),
];

/// Every plugin Sluice knows, embedded from `schemas/plugins/`. A plugin name not listed here
/// is refused by the Admin API and by `sluice validate`.
const PLUGIN_SCHEMAS: [(&str, &str); 12] = [
    ("acl", include_str!("../../../schemas/plugins/acl.json")),
    (
        "ai-proxy",
        include_str!("../../../schemas/plugins/ai-proxy.json"),
    ),
    (
        "ai-proxy-advanced",
        include_str!("../../../schemas/plugins/ai-proxy-advanced.json"),
    ),
    (
        "ai-rate-limiting-advanced",
        include_str!("../../../schemas/plugins/ai-rate-limiting-advanced.json"),
    ),
    (
        "basic-auth",
        include_str!("../../../schemas/plugins/basic-auth.json"),
    ),
    ("cors", include_str!("../../../schemas/plugins/cors.json")),
    (
        "file-log",
        include_str!("../../../schemas/plugins/file-log.json"),
    ),
    (
        "http-log",
        include_str!("../../../schemas/plugins/http-log.json"),
    ),
    (
        "key-auth",
        include_str!("../../../schemas/plugins/key-auth.json"),
    ),
    (
        "prometheus",
        include_str!("../../../schemas/plugins/prometheus.json"),
    ),
    (
        "rate-limiting",
        include_str!("../../../schemas/plugins/rate-limiting.json"),
    ),
    (
        "request-transformer",
        include_str!("../../../schemas/plugins/request-transformer.json"),
    ),
];

/// A schema file failed to load. This is a build defect, never user input.
#[derive(Debug, thiserror::Error)]
#[error("schema {name} is invalid: {reason}")]
pub struct SchemaLoadError {
    pub name: String,
    pub reason: String,
}

/// One compiled JSON Schema plus its source (for defaults and messages).
pub struct CompiledSchema {
    pub raw: Value,
    validator: Validator,
}

/// A plugin's schema and the metadata Kong publishes for it.
pub struct PluginSchema {
    pub name: String,
    pub priority: i64,
    pub version: String,
    pub schema: CompiledSchema,
}

/// All schemas Sluice validates against.
pub struct Schemas {
    entities: BTreeMap<EntityKind, CompiledSchema>,
    plugins: BTreeMap<String, PluginSchema>,
    /// The data plane's checks, when the binary installed them.
    compile_check: Option<Arc<dyn CompileCheck>>,
}

// === impl Schemas ===

impl Schemas {
    /// Loads the schemas embedded from `schemas/`.
    pub fn embedded() -> Result<Self, SchemaLoadError> {
        let mut entities = BTreeMap::new();
        for (kind, text) in ENTITY_SCHEMAS {
            entities.insert(kind, CompiledSchema::parse(kind.collection(), text)?);
        }
        let mut plugins = BTreeMap::new();
        for (name, text) in PLUGIN_SCHEMAS {
            let schema = CompiledSchema::parse(name, text)?;
            let priority = schema.raw["x-priority"].as_i64().unwrap_or(0);
            let version = schema.raw["x-version"].as_str().unwrap_or("").to_owned();
            plugins.insert(
                name.to_owned(),
                PluginSchema {
                    name: name.to_owned(),
                    priority,
                    version,
                    schema,
                },
            );
        }
        Ok(Self {
            entities,
            plugins,
            compile_check: None,
        })
    }

    /// Runs `check` on every route and plugin that passes validation, so a write the data
    /// plane could not compile is refused like any other invalid input.
    pub fn with_compile_check(mut self, check: Arc<dyn CompileCheck>) -> Self {
        self.compile_check = Some(check);
        self
    }

    pub(crate) fn compile_check(&self) -> Option<&dyn CompileCheck> {
        self.compile_check.as_deref()
    }

    pub fn entity(&self, kind: EntityKind) -> &CompiledSchema {
        &self.entities[&kind]
    }

    pub fn plugin(&self, name: &str) -> Option<&PluginSchema> {
        self.plugins.get(name)
    }

    pub fn plugins(&self) -> impl Iterator<Item = &PluginSchema> {
        self.plugins.values()
    }
}

// === impl CompiledSchema ===

impl CompiledSchema {
    fn parse(name: &str, text: &str) -> Result<Self, SchemaLoadError> {
        let err = |reason: String| SchemaLoadError {
            name: name.to_owned(),
            reason,
        };
        let raw: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&raw)
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { raw, validator })
    }

    /// Inserts the schema's defaults for absent fields, descending into records. Kong fills
    /// defaults before it validates, so a default never causes a violation.
    pub fn fill_defaults(&self, value: &mut Value) {
        fill_defaults(&self.raw, value);
    }

    /// Turns form-encoded input (all leaves strings) into typed JSON, guided by the schema:
    /// `"80"` becomes `80` for an integer field, a lone value becomes a one-element array for
    /// an array field. Values that do not convert are left alone for validation to report.
    pub fn coerce_form(&self, value: &mut Value) {
        coerce(&self.raw, value);
    }

    /// Validates and returns Kong-shaped errors keyed by field path.
    pub fn validate(&self, value: &Value) -> SchemaViolation {
        let mut violation = SchemaViolation::default();
        for error in self.validator.iter_errors(value) {
            record_error(&self.raw, &error, &mut violation);
        }
        violation
    }

    /// The schema in the format of Kong's `GET /schemas/{entity}`:
    /// `{"fields": [{"<name>": {"type": ..., "default": ..., ...}}, ...]}`.
    pub fn to_kong(&self) -> Value {
        let mut out = Map::new();
        out.insert("fields".to_owned(), kong_fields(&self.raw));
        Value::Object(out)
    }
}

// === defaults and coercion ===

fn fill_defaults(schema: &Value, value: &mut Value) {
    let (Some(properties), Some(object)) =
        (schema["properties"].as_object(), value.as_object_mut())
    else {
        return;
    };
    for (name, sub) in properties {
        if !object.contains_key(name) {
            if let Some(default) = sub.get("default") {
                object.insert(name.clone(), default.clone());
            } else if schema_types(sub).contains(&"null") {
                // Kong renders every field, unset ones as null; so do we, so that a
                // stored config and a freshly filled one compare equal.
                object.insert(name.clone(), Value::Null);
            }
        }
        if let Some(child) = object.get_mut(name) {
            if child.is_object() {
                fill_defaults(sub, child);
            }
        }
    }
}

fn coerce(schema: &Value, value: &mut Value) {
    let types = schema_types(schema);
    match value {
        Value::String(text) => {
            let replacement = if types.contains(&"null") && text.is_empty() {
                // `--data hosts=` clears a field, as in Kong (before an array would wrap
                // the empty text).
                Some(Value::Null)
            } else if types.contains(&"integer") {
                text.parse::<i64>().ok().map(Value::from)
            } else if types.contains(&"number") {
                // Keep whole numbers integral so `5` renders as `5`, not `5.0`.
                text.parse::<i64>()
                    .ok()
                    .map(Value::from)
                    .or_else(|| text.parse::<f64>().ok().map(Value::from))
            } else if types.contains(&"boolean") {
                match text.as_str() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                }
            } else if types.contains(&"array") {
                // Kong treats `paths=/a` like `paths[]=/a`.
                let mut item = Value::String(std::mem::take(text));
                coerce(&schema["items"], &mut item);
                Some(Value::Array(vec![item]))
            } else {
                None
            };
            if let Some(replacement) = replacement {
                *value = replacement;
            }
        }
        Value::Array(items) => {
            for item in items {
                coerce(&schema["items"], item);
            }
        }
        Value::Object(object) => {
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (name, child) in object.iter_mut() {
                if let Some(sub) = properties.and_then(|p| p.get(name)).or(additional) {
                    coerce(sub, child);
                }
            }
        }
        _ => {}
    }
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

// === error messages ===

fn record_error(root: &Value, error: &ValidationError<'_>, violation: &mut SchemaViolation) {
    let mut path: Vec<String> = error
        .instance_path
        .as_str()
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    // The keyword's own schema (the parent of the failing keyword).
    let keyword_path = error.schema_path.as_str();
    let parent = keyword_path
        .rsplit_once('/')
        .map(|(p, _)| p)
        .unwrap_or_default();
    let sub = root.pointer(parent).unwrap_or(&Value::Null);
    let message = match &error.kind {
        ValidationErrorKind::Required { property } => {
            path.push(property.as_str().unwrap_or_default().to_owned());
            "required field missing".to_owned()
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                let mut p = path.clone();
                p.push(name.clone());
                violation.field_at(p, "unknown field");
            }
            return;
        }
        ValidationErrorKind::Type { .. } => expected_type(sub),
        ValidationErrorKind::Enum { options } => {
            let names: Vec<String> = options
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter(|v| !v.is_null())
                        .map(render_plain)
                        .collect()
                })
                .unwrap_or_default();
            format!("expected one of: {}", names.join(", "))
        }
        ValidationErrorKind::Minimum { .. } | ValidationErrorKind::Maximum { .. } => {
            match (sub.get("minimum"), sub.get("maximum")) {
                (Some(min), Some(max)) => format!("value should be between {min} and {max}"),
                (Some(min), None) => format!("value must be greater than or equal to {min}"),
                (None, Some(max)) => format!("value must be less than or equal to {max}"),
                (None, None) => error.to_string(),
            }
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("value must be greater than {limit}")
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("value must be less than {limit}")
        }
        ValidationErrorKind::Pattern { .. } => {
            let text = error.instance.as_str().unwrap_or_default();
            match sub["x-error"].as_str() {
                Some(template) => template.replace("%s", text),
                None => format!("invalid value: {text}"),
            }
        }
        ValidationErrorKind::MinLength { limit } | ValidationErrorKind::MinItems { limit } => {
            if *limit == 1 && error.instance.as_str() == Some("") {
                "length must be at least 1".to_owned()
            } else {
                format!("length must be at least {limit}")
            }
        }
        ValidationErrorKind::MaxLength { limit } | ValidationErrorKind::MaxItems { limit } => {
            format!("length must be at most {limit}")
        }
        ValidationErrorKind::Format { format } if format == "uuid" => {
            "expected a valid UUID".to_owned()
        }
        ValidationErrorKind::UniqueItems => "values must be unique".to_owned(),
        _ => error.to_string(),
    };
    violation.field_at(path, message);
}

/// Kong's wording for a type mismatch, from the schema's declared type.
fn expected_type(schema: &Value) -> String {
    let kong_type = schema["x-kong-type"].as_str();
    let declared = schema_types(schema)
        .into_iter()
        .find(|t| *t != "null")
        .unwrap_or("value");
    let noun = match (kong_type, declared) {
        (Some("set"), _) => "a set",
        (Some("map"), _) => "a map",
        (Some("foreign"), _) | (_, "object") => "a record",
        (_, "integer") => "an integer",
        (_, "number") => "a number",
        (_, "boolean") => "a boolean",
        (_, "string") => "a string",
        (_, "array") => "an array",
        _ => "a valid value",
    };
    format!("expected {noun}")
}

fn render_plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// === Kong /schemas format ===

fn kong_fields(schema: &Value) -> Value {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            let mut field = kong_field(sub);
            if required.contains(&name.as_str()) {
                field.insert("required".to_owned(), Value::Bool(true));
            }
            let mut entry = Map::new();
            entry.insert(name.clone(), Value::Object(field));
            fields.push(Value::Object(entry));
        }
    }
    Value::Array(fields)
}

fn kong_field(sub: &Value) -> Map<String, Value> {
    let mut field = Map::new();
    let declared = schema_types(sub)
        .into_iter()
        .find(|t| *t != "null")
        .unwrap_or("string");
    let kong_type = match (sub["x-kong-type"].as_str(), declared) {
        (Some(t), _) => t,
        (None, "object") => "record",
        (None, t) => t,
    };
    field.insert("type".to_owned(), Value::from(kong_type));
    if kong_type == "foreign" {
        if let Some(reference) = sub["x-reference"].as_str() {
            field.insert("reference".to_owned(), Value::from(reference));
        }
    }
    if sub["x-auto"].as_bool() == Some(true) {
        field.insert("auto".to_owned(), Value::Bool(true));
    }
    if sub["x-unique"].as_bool() == Some(true) {
        field.insert("unique".to_owned(), Value::Bool(true));
    }
    if sub["x-encrypted"].as_bool() == Some(true) {
        field.insert("encrypted".to_owned(), Value::Bool(true));
    }
    if sub["x-referenceable"].as_bool() == Some(true) {
        field.insert("referenceable".to_owned(), Value::Bool(true));
    }
    if let Some(default) = sub.get("default") {
        field.insert("default".to_owned(), default.clone());
    }
    if let Some(options) = sub.get("enum") {
        field.insert("one_of".to_owned(), options.clone());
    }
    if let (Some(min), Some(max)) = (sub.get("minimum"), sub.get("maximum")) {
        field.insert(
            "between".to_owned(),
            Value::Array(vec![min.clone(), max.clone()]),
        );
    }
    if let Some(gt) = sub.get("exclusiveMinimum") {
        field.insert("gt".to_owned(), gt.clone());
    }
    match kong_type {
        "record" if sub.get("properties").is_some() => {
            field.insert("fields".to_owned(), kong_fields(sub));
        }
        "array" | "set" => {
            field.insert(
                "elements".to_owned(),
                Value::Object(kong_field(&sub["items"])),
            );
        }
        "map" => {
            field.insert("keys".to_owned(), serde_json::json!({"type": "string"}));
            if let Some(values) = sub.get("additionalProperties").filter(|v| v.is_object()) {
                field.insert("values".to_owned(), Value::Object(kong_field(values)));
            }
        }
        _ => {}
    }
    field
}
