//! Keeping secrets out of what the CLI prints. decK masks, in its diff output, the value of
//! every non-empty `DECK_*` environment variable, matched at word boundaries so that a `5`
//! inside a UUID stays (go-database-reconciler `pkg/diff`, `[masked]`). Sluice does the same,
//! and masks too every value of a field the plugin schemas mark `x-encrypted`
//! (`auth.header_value`, Redis passwords, ...), old and new, whatever its source.

use serde_json::Value;
use sluice_model::diff::Plan;
use sluice_model::{AnyEntity, Schemas};

/// What a masked value is shown as (decK's word).
pub const MASK: &str = "[masked]";

/// The values of the `DECK_*` environment variables, as decK masks them (all of them, used
/// by the files or not; empty ones are skipped).
pub fn deck_env_values() -> Vec<String> {
    std::env::vars()
        .filter(|(name, value)| name.starts_with("DECK_") && !value.is_empty())
        .map(|(_, value)| value)
        .collect()
}

/// The secret values `plan` carries: its plugins' `x-encrypted` fields, and `from_env`.
pub fn of_plan(plan: &Plan, schemas: &Schemas, from_env: Vec<String>) -> Vec<String> {
    let mut secrets: Vec<String> = from_env.into_iter().filter(|v| !v.is_empty()).collect();
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

/// `rendered` with every secret replaced by [`MASK`], where it stands on its own: a secret
/// whose first (last) character is a word character must not follow (precede) one, as a
/// regex `\b` would have it, so `5` is masked in `"retries": 5` but not inside a UUID.
pub fn mask(rendered: String, secrets: &[String]) -> String {
    let mut out = rendered;
    for secret in secrets {
        let quoted = Value::from(secret.as_str()).to_string();
        let inner = &quoted[1..quoted.len() - 1]; // as it appears inside a JSON string
        if !inner.is_empty() && out.contains(inner) {
            out = replace_standalone(&out, inner);
        }
    }
    out
}

fn replace_standalone(text: &str, needle: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let needs_left = word(needle.chars().next());
    let needs_right = word(needle.chars().last());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(needle) {
        let before = rest[..at].chars().last().or_else(|| out.chars().last());
        let after = rest[at + needle.len()..].chars().next();
        let standalone = !(needs_left && word(before) || needs_right && word(after));
        out.push_str(&rest[..at]);
        out.push_str(if standalone { MASK } else { needle });
        rest = &rest[at + needle.len()..];
    }
    out.push_str(rest);
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

    #[test]
    fn short_values_are_masked_only_where_they_stand_alone() {
        // decK's 053-mask-short-values: DECK_REDIS_DB=0, DECK_RETRIES=5.
        let rendered =
            r#""id": "b35b3ec5-0f06-4c5e-9f65-0ab06d8a5b01", "retries": 5, "redis_database": 0"#;
        let masked = mask(rendered.to_owned(), &["0".to_owned(), "5".to_owned()]);
        assert_eq!(
            masked,
            r#""id": "b35b3ec5-0f06-4c5e-9f65-0ab06d8a5b01", "retries": [masked], "redis_database": [masked]"#
        );
    }
}
