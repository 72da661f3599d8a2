//! Keeping secrets out of what the CLI prints. decK masks, in its diff output, the values a
//! file took from the environment; Sluice does that and more: every value of a field the
//! plugin schemas mark `x-encrypted` (`auth.header_value`, Redis passwords, ...) is masked
//! too, old and new, whatever its source.

use serde_json::Value;
use sluice_model::diff::Plan;
use sluice_model::{AnyEntity, Schemas};

/// What a masked value is shown as (decK's word).
pub const MASK: &str = "[masked]";

/// Values from the environment shorter than this are masked only where a whole secret field
/// holds them: masking every occurrence of, say, `1` would garble the output.
const MIN_ENV_SECRET: usize = 4;

/// The secret values `plan` carries: its plugins' `x-encrypted` fields, and `from_env`.
pub fn of_plan(plan: &Plan, schemas: &Schemas, from_env: Vec<String>) -> Vec<String> {
    let mut secrets: Vec<String> = from_env
        .into_iter()
        .filter(|v| v.len() >= MIN_ENV_SECRET)
        .collect();
    for change in &plan.changes {
        for entity in [&change.old, &change.new].into_iter().flatten() {
            let AnyEntity::Plugin(plugin) = entity else {
                continue;
            };
            if let Some(schema) = schemas.plugin(&plugin.name) {
                encrypted_values(&schema.schema.raw, &plugin.config, &mut secrets);
            }
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

/// The string values at `x-encrypted` properties of `schema` within `value`.
fn encrypted_values(schema: &Value, value: &Value, out: &mut Vec<String>) {
    let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object())
    else {
        return;
    };
    for (name, sub) in properties {
        let Some(child) = object.get(name) else {
            continue;
        };
        match child {
            Value::String(secret) if sub["x-encrypted"] == true && !secret.is_empty() => {
                out.push(secret.clone());
            }
            Value::Object(_) => encrypted_values(sub, child, out),
            _ => {}
        }
    }
}

/// `rendered` with every secret replaced by [`MASK`]. A secret field's value is JSON-quoted
/// in the diff; a value from the environment may be part of a longer one (`Bearer <key>`).
pub fn mask(rendered: String, secrets: &[String]) -> String {
    let mut out = rendered;
    for secret in secrets {
        let quoted = Value::from(secret.as_str()).to_string();
        let inner = &quoted[1..quoted.len() - 1]; // as it appears inside a JSON string
        if out.contains(inner) {
            out = out.replace(inner, MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_whole_and_inside_longer_values() {
        let rendered = r#"  - "header_value": "Bearer sk-old-key-123"
  + "header_value": "Bearer sk-new-key-456"
    "minute": 1"#
            .to_owned();
        let secrets = vec![
            "Bearer sk-old-key-123".to_owned(),
            "sk-new-key-456".to_owned(),
        ];
        let masked = mask(rendered, &secrets);
        assert!(
            !masked.contains("sk-old") && !masked.contains("sk-new"),
            "{masked}"
        );
        assert!(masked.contains(r#""[masked]""#) && masked.contains("Bearer [masked]"));
        assert!(masked.contains(r#""minute": 1"#), "the rest is untouched");
    }
}
