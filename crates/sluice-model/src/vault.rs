//! Secrets by reference: `{vault://env/openai-key}` in a plugin's config stands for the value
//! of the environment variable `OPENAI_KEY` on the data plane that runs the plugin (Kong 3.x's
//! `env` vault, `kong/vaults/env`). The stored config keeps the reference; only the compiled
//! handler holds the value, so it is never written back, dumped or logged.
//!
//! Kong's rules, carried over: the resource is prefixed (`?prefix=`), upper-cased, and `-`
//! becomes `_`; `{vault://env/name/key}` reads the JSON object in `NAME` and takes `key`;
//! `#2` reads `NAME_PREVIOUS`. Sluice has the `env` vault only; a reference to any other is
//! refused when written. Unlike Kong, which resolves only the fields its schemas mark
//! referenceable, Sluice resolves a reference in any string field of a plugin config.

use serde_json::Value;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub vault: String,
    pub resource: String,
    /// A field of the JSON value (`{vault://env/creds/key}`).
    pub key: Option<String>,
    pub prefix: Option<String>,
    pub version: Option<u32>,
}

/// Whether `value` is written as a reference (`{vault://...}`), whatever its validity.
pub fn is_reference(value: &str) -> bool {
    value.starts_with("{vault://") && value.ends_with('}')
}

/// Parses a reference; `None` when `value` is not one, an error (Kong's words) when it is one
/// but malformed.
pub fn parse(value: &str) -> Option<Result<Reference, String>> {
    if !is_reference(value) {
        return None;
    }
    let inner = &value["{vault://".len()..value.len() - 1];
    Some(parse_inner(inner, value))
}

fn parse_inner(inner: &str, whole: &str) -> Result<Reference, String> {
    let (rest, version) = match inner.split_once('#') {
        Some((rest, version)) => {
            let version = version
                .parse::<u32>()
                .map_err(|_| format!("invalid version in reference {whole}"))?;
            (rest, Some(version))
        }
        None => (inner, None),
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (vault, resource) = path
        .split_once('/')
        .ok_or_else(|| format!("reference url has empty path [{whole}]"))?;
    if vault.is_empty() {
        return Err(format!("reference url is missing host [{whole}]"));
    }
    let (resource, key) = match resource.split_once('/') {
        Some((resource, key)) if !key.is_empty() => (resource, Some(key.to_owned())),
        Some((resource, _)) => (resource, None),
        None => (resource, None),
    };
    if resource.is_empty() {
        return Err(format!("reference url has empty path [{whole}]"));
    }
    let prefix = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("prefix="))
        .map(str::to_owned);
    Ok(Reference {
        vault: vault.to_owned(),
        resource: resource.to_owned(),
        key,
        prefix,
        version,
    })
}

impl Reference {
    /// Refuses what this build cannot resolve anywhere: a vault other than `env`.
    pub fn check(&self, whole: &str) -> Result<(), String> {
        if self.vault == "env" {
            Ok(())
        } else {
            Err(format!(
                "could not find vault ({}) for reference {whole}: Sluice has the 'env' vault only",
                self.vault
            ))
        }
    }

    /// The environment variable the reference reads (Kong's env vault naming).
    pub fn variable(&self) -> String {
        let mut name = format!("{}{}", self.prefix.as_deref().unwrap_or(""), self.resource)
            .replace('-', "_")
            .to_uppercase();
        if self.version == Some(2) {
            name.push_str("_PREVIOUS");
        }
        name
    }

    /// The value, read with `env`. The error names the reference and the variable, never a
    /// value.
    pub fn resolve(
        &self,
        whole: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        self.check(whole)?;
        let variable = self.variable();
        let value = env(&variable).ok_or_else(|| {
            format!("could not retrieve value for reference {whole} (environment variable {variable} is not set)")
        })?;
        match &self.key {
            None => Ok(value),
            Some(key) => serde_json::from_str::<Value>(&value)
                .ok()
                .and_then(|json| json.get(key).and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| {
                    format!("could not retrieve value for reference {whole} ({variable} has no string field '{key}')")
                }),
        }
    }
}

/// Every reference in `config` with its dotted path (`auth.header_value`).
pub fn references(config: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    walk(config, String::new(), &mut found);
    found
}

fn walk(value: &Value, path: String, found: &mut Vec<(String, String)>) {
    match value {
        Value::String(text) if is_reference(text) => found.push((path, text.clone())),
        Value::Object(fields) => {
            for (name, child) in fields {
                let path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                walk(child, path, found);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                walk(child, format!("{path}.{index}"), found);
            }
        }
        _ => {}
    }
}

/// `config` with every reference replaced by its value: `None` when it holds no reference
/// (nothing to copy); the first that cannot be resolved is the error, as `(path, message)`.
pub fn resolve_config(
    config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Value>, (String, String)> {
    if references(config).is_empty() {
        return Ok(None);
    }
    let mut resolved = config.clone();
    resolve_in(&mut resolved, String::new(), env)?;
    Ok(Some(resolved))
}

fn resolve_in(
    value: &mut Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    let child = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    match value {
        Value::String(text) => {
            if let Some(reference) = parse(text) {
                let whole = text.as_str();
                let resolved = reference.and_then(|r| r.resolve(whole, env));
                *text = resolved.map_err(|message| (path, message))?;
            }
        }
        Value::Object(fields) => {
            for (name, field) in fields {
                resolve_in(field, child(name), env)?;
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve_in(item, child(&index.to_string()), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_KEY" => Some("sk-1".to_owned()),
            "OPENAI_KEY_PREVIOUS" => Some("sk-0".to_owned()),
            "SSL_CERT" => Some(r#"{"key": "k"}"#.to_owned()),
            _ => None,
        }
    }

    #[test]
    fn kong_env_vault_naming() {
        let r = |s: &str| parse(s).unwrap().unwrap();
        assert_eq!(r("{vault://env/openai-key}").variable(), "OPENAI_KEY");
        assert_eq!(
            r("{vault://env/key?prefix=openai-}").variable(),
            "OPENAI_KEY"
        );
        assert_eq!(
            r("{vault://env/openai-key#2}").variable(),
            "OPENAI_KEY_PREVIOUS"
        );
        let whole = "{vault://env/ssl-cert/key}";
        assert_eq!(r(whole).resolve(whole, &env), Ok("k".to_owned()));
        assert_eq!(parse("Bearer sk"), None);
        assert!(parse("{vault://}").unwrap().is_err());
        let other = r("{vault://aws/x}");
        assert!(other
            .check("{vault://aws/x}")
            .unwrap_err()
            .contains("could not find vault (aws)"));
    }

    #[test]
    fn configs_resolve_and_errors_name_the_reference_not_a_value() {
        let config = serde_json::json!({"auth": {"header_value": "{vault://env/openai-key}"}, "list": ["{vault://env/openai-key#2}"]});
        let resolved = resolve_config(&config, &env).unwrap().unwrap();
        assert_eq!(resolved["auth"]["header_value"], "sk-1");
        assert_eq!(resolved["list"][0], "sk-0");
        let missing = serde_json::json!({"auth": {"header_value": "{vault://env/nope}"}});
        assert_eq!(
            resolve_config(&serde_json::json!({"a": "b"}), &env),
            Ok(None)
        );
        let (path, message) = resolve_config(&missing, &env).unwrap_err();
        assert_eq!(path, "auth.header_value");
        assert!(
            message.contains("{vault://env/nope}") && message.contains("NOPE"),
            "{message}"
        );
    }
}
