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
    // Which providers and route types this build drives is the ai-proxy plugin's own check,
    // run at write time through the compile check (`crate::compile_check`).
}
