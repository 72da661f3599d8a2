//! Cross-field checks of plugin configs that JSON Schema cannot express. Each message is
//! Kong's own text (see each schema's `x-entity-checks`).

use serde_json::Value;

use crate::violation::SchemaViolation;

/// Runs the checks of plugin `name` against its defaults-filled `config`.
pub fn check(name: &str, config: &Value, violation: &mut SchemaViolation) {
    if name == "ai-proxy" {
        check_ai_proxy(config, violation);
    }
}

/// The route types each provider Sluice drives serves, from the provider docs
/// (`shared/seeds/`). `preserve` passes the request path through and works with any.
pub fn ai_route_types(provider: &str) -> Option<&'static [&'static str]> {
    match provider {
        "openai" => Some(&[
            "llm/v1/chat",
            "llm/v1/completions",
            "llm/v1/embeddings",
            "llm/v1/files",
            "llm/v1/batches",
            "llm/v1/assistants",
            "llm/v1/responses",
            "audio/v1/audio/speech",
            "audio/v1/audio/transcriptions",
            "audio/v1/audio/translations",
            "image/v1/images/generations",
            "image/v1/images/edits",
            "video/v1/videos/generations",
            "preserve",
        ]),
        "xai" => Some(&[
            "llm/v1/chat",
            "llm/v1/completions",
            "llm/v1/responses",
            "image/v1/images/generations",
            "preserve",
        ]),
        _ => None,
    }
}

fn check_ai_proxy(config: &Value, violation: &mut SchemaViolation) {
    let auth = &config["auth"];
    let set = |v: &Value| !v.is_null();
    if set(&auth["header_name"]) != set(&auth["header_value"]) {
        violation.entity(
            "all or none of these fields must be set: 'auth.header_name', 'auth.header_value'",
        );
    }
    let params = ["param_name", "param_value", "param_location"];
    let n_params = params.iter().filter(|p| set(&auth[**p])).count();
    if n_params != 0 && n_params != params.len() {
        violation.entity("all or none of these fields must be set: 'auth.param_name', 'auth.param_value', 'auth.param_location'");
    }
    let provider = config["model"]["provider"].as_str().unwrap_or_default();
    let route_type = config["route_type"].as_str().unwrap_or_default();
    match ai_route_types(provider) {
        None => violation.field(
            "model.provider",
            format!(
                "provider '{provider}' is not supported by Sluice yet (supported: openai, xai)"
            ),
        ),
        Some(types) if !types.contains(&route_type) => violation.field(
            "route_type",
            format!("route_type '{route_type}' is not supported by provider '{provider}'"),
        ),
        Some(_) => {}
    }
}
