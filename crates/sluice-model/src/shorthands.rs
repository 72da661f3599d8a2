//! Kong's deprecated shorthand fields (`shorthand_fields` in a plugin's schema): old flat
//! names that Kong 3.6+ still accepts, translates into their new place, and shows again in
//! every response beside the new field (Kong's own dumps contain both).

use serde_json::{Map, Value};

use crate::violation::SchemaViolation;

/// `(shorthand, path of the field it stands for)`, per plugin. Kong 3.x
/// `kong/plugins/rate-limiting/schema.lua`: each `redis_<x>` is `redis.<x>`.
const RATE_LIMITING: &[(&str, [&str; 2])] = &[
    ("redis_host", ["redis", "host"]),
    ("redis_port", ["redis", "port"]),
    ("redis_password", ["redis", "password"]),
    ("redis_username", ["redis", "username"]),
    ("redis_ssl", ["redis", "ssl"]),
    ("redis_ssl_verify", ["redis", "ssl_verify"]),
    ("redis_server_name", ["redis", "server_name"]),
    ("redis_timeout", ["redis", "timeout"]),
    ("redis_database", ["redis", "database"]),
];

fn of(plugin: &str) -> &'static [(&'static str, [&'static str; 2])] {
    match plugin {
        "rate-limiting" => RATE_LIMITING,
        _ => &[],
    }
}

/// Moves each shorthand in `config` to its field. A null shorthand is dropped; one that
/// disagrees with a new field also given is refused, as Kong 3.8+ refuses it.
pub fn translate(plugin: &str, config: &mut Value, violation: &mut SchemaViolation) {
    let Some(object) = config.as_object_mut() else {
        return;
    };
    for (shorthand, [record, field]) in of(plugin) {
        let Some(value) = object.remove(*shorthand) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let target = object
            .entry(record.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if target.is_null() {
            *target = Value::Object(Map::new());
        }
        let Some(target) = target.as_object_mut() else {
            continue; // the schema reports the record's own type
        };
        match target.get(*field) {
            Some(current) if !current.is_null() && *current != value => {
                violation.entity(format!(
                    "both deprecated and new field are used but their values mismatch: \
                     {shorthand} = {} vs {record}.{field} = {}",
                    plain(&value),
                    plain(current)
                ));
            }
            _ => {
                target.insert(field.to_string(), value);
            }
        }
    }
}

/// Adds each shorthand back beside its field, for a response (Kong 3.6+ shows both).
pub fn show(plugin: &str, config: &mut Value) {
    let Some(object) = config.as_object_mut() else {
        return;
    };
    for (shorthand, [record, field]) in of(plugin) {
        let value = object
            .get(*record)
            .and_then(|r| r.get(*field))
            .cloned()
            .unwrap_or(Value::Null);
        object.insert(shorthand.to_string(), value);
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shorthands_move_to_their_record_and_come_back_in_responses() {
        let mut config = json!({"minute": 5, "redis_host": "r.internal", "redis_port": 6380,
                                "redis_password": null});
        let mut violation = SchemaViolation::default();
        translate("rate-limiting", &mut config, &mut violation);
        assert!(violation.is_empty());
        assert_eq!(
            config,
            json!({"minute": 5, "redis": {"host": "r.internal", "port": 6380}})
        );
        show("rate-limiting", &mut config);
        assert_eq!(config["redis_host"], "r.internal");
        assert_eq!(config["redis_timeout"], Value::Null);
    }

    #[test]
    fn a_shorthand_that_disagrees_with_its_field_is_refused() {
        let mut config = json!({"redis_host": "a", "redis": {"host": "b"}});
        let mut violation = SchemaViolation::default();
        translate("rate-limiting", &mut config, &mut violation);
        assert_eq!(
            violation.entity,
            ["both deprecated and new field are used but their values mismatch: redis_host = a vs redis.host = b"]
        );
        let mut same = json!({"redis_host": "a", "redis": {"host": "a"}});
        let mut violation = SchemaViolation::default();
        translate("rate-limiting", &mut same, &mut violation);
        assert!(violation.is_empty());
    }
}
