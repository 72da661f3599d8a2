//! xAI (Grok): OpenAI-compatible, with the differences of its docs (seed
//! `001_362dd673d0b225e1.txt`): some OpenAI fields are refused, `reasoning_effort` only works
//! on models that reason, images take no quality/size/style, and errors come flat.

use serde_json::{json, Value};

use super::{openai_path, Driver};

pub struct Xai;

/// OpenAI request fields xAI does not accept.
const DROPPED: [&str; 4] = ["prompt_cache_key", "verbosity", "store", "service_tier"];
/// Image generation options xAI does not accept.
const DROPPED_IMAGE: [&str; 3] = ["quality", "size", "style"];

impl Driver for Xai {
    fn name(&self) -> &'static str {
        "xai"
    }

    fn base(&self) -> (bool, &'static str, u16) {
        (true, "api.x.ai", 443)
    }

    fn path(&self, route_type: &str) -> Option<&'static str> {
        match route_type {
            "llm/v1/chat"
            | "llm/v1/completions"
            | "llm/v1/responses"
            | "image/v1/images/generations" => openai_path(route_type),
            _ => None,
        }
    }

    fn transform_request(&self, route_type: &str, body: &mut Value) {
        let Some(object) = body.as_object_mut() else {
            return;
        };
        for field in DROPPED {
            object.remove(field);
        }
        let model = object.get("model").and_then(Value::as_str).unwrap_or("");
        if !reasons(model) {
            object.remove("reasoning_effort");
        }
        if route_type == "image/v1/images/generations" {
            for field in DROPPED_IMAGE {
                object.remove(field);
            }
        }
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> Option<Vec<u8>> {
        let parsed: Value = serde_json::from_slice(body).ok()?;
        if parsed.get("error").is_some_and(Value::is_object) {
            return None; // already OpenAI-shaped
        }
        let message = parsed.get("error").and_then(Value::as_str)?;
        let code = parsed.get("code").cloned().unwrap_or(Value::Null);
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        };
        let translated = json!({"error": {"message": message, "type": kind, "code": code}});
        Some(translated.to_string().into_bytes())
    }
}

/// Models that accept `reasoning_effort` (xAI: grok-3-mini and its variants).
fn reasons(model: &str) -> bool {
    model.starts_with("grok-3-mini")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_what_xai_refuses() {
        let mut body = json!({"model": "grok-4", "messages": [], "store": true, "service_tier": "x",
            "prompt_cache_key": "k", "verbosity": "low", "reasoning_effort": "high", "temperature": 1});
        Xai.transform_request("llm/v1/chat", &mut body);
        assert_eq!(
            body,
            json!({"model": "grok-4", "messages": [], "temperature": 1})
        );
        let mut body = json!({"model": "grok-3-mini", "reasoning_effort": "high"});
        Xai.transform_request("llm/v1/chat", &mut body);
        assert_eq!(
            body["reasoning_effort"], "high",
            "kept where the model reasons"
        );
        let mut body = json!({"model": "grok-2-image", "prompt": "p", "quality": "hd", "size": "1024x1024", "style": "vivid", "n": 1});
        Xai.transform_request("image/v1/images/generations", &mut body);
        assert_eq!(
            body,
            json!({"model": "grok-2-image", "prompt": "p", "n": 1})
        );
    }

    #[test]
    fn flat_errors_become_openai_shaped() {
        let out = Xai
            .translate_error(
                400,
                br#"{"code":"Client specified an invalid argument","error":"bad model"}"#,
            )
            .expect("translated");
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            json!({"error": {"message": "bad model", "type": "invalid_request_error", "code": "Client specified an invalid argument"}})
        );
        assert!(Xai
            .translate_error(400, br#"{"error":{"message":"m"}}"#)
            .is_none());
    }
}
