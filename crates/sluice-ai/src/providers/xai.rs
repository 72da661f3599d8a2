//! xAI (Grok): OpenAI-compatible, with the differences of its docs (seed
//! `001_362dd673d0b225e1.txt`): some OpenAI fields are refused, `reasoning_effort` only works
//! on models that reason, images take no quality/size/style, and errors come flat.

use serde_json::{json, Map, Value};

use super::Driver;
use crate::route_type::RouteType;

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

    fn serves(&self, route_type: RouteType) -> bool {
        matches!(
            route_type,
            RouteType::Chat
                | RouteType::Completions
                | RouteType::Responses
                | RouteType::ImageGenerations
                | RouteType::Preserve
        )
    }

    fn transform_request(&self, route_type: RouteType, object: &mut Map<String, Value>) {
        for field in DROPPED {
            object.remove(field);
        }
        let model = object.get("model").and_then(Value::as_str).unwrap_or("");
        if !reasons(model) {
            object.remove("reasoning_effort");
        }
        if route_type == RouteType::ImageGenerations {
            for field in DROPPED_IMAGE {
                object.remove(field);
            }
        }
    }

    fn translates_errors(&self) -> bool {
        true // xAI answers errors flat: {"code": ..., "error": "message"}
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

    fn transform(route_type: RouteType, body: &mut Value) {
        Xai.transform_request(route_type, body.as_object_mut().expect("an object"));
    }

    #[test]
    fn serves_what_its_docs_list() {
        let served: Vec<RouteType> = RouteType::ALL
            .into_iter()
            .filter(|r| Xai.serves(*r))
            .collect();
        assert_eq!(
            served,
            [
                RouteType::Chat,
                RouteType::Completions,
                RouteType::Responses,
                RouteType::ImageGenerations,
                RouteType::Preserve
            ]
        );
        assert_eq!(Xai.path(RouteType::Chat), Some("/v1/chat/completions"));
        assert_eq!(Xai.path(RouteType::Embeddings), None);
        assert_eq!(
            Xai.path(RouteType::Preserve),
            None,
            "preserve keeps the client's path"
        );
    }

    #[test]
    fn drops_what_xai_refuses() {
        let mut body = json!({"model": "grok-4", "messages": [], "store": true, "service_tier": "x",
            "prompt_cache_key": "k", "verbosity": "low", "reasoning_effort": "high", "temperature": 1});
        transform(RouteType::Chat, &mut body);
        assert_eq!(
            body,
            json!({"model": "grok-4", "messages": [], "temperature": 1})
        );
        let mut body = json!({"model": "grok-3-mini", "reasoning_effort": "high"});
        transform(RouteType::Chat, &mut body);
        assert_eq!(
            body["reasoning_effort"], "high",
            "kept where the model reasons"
        );
        let mut body = json!({"model": "grok-2-image", "prompt": "p", "quality": "hd", "size": "1024x1024", "style": "vivid", "n": 1});
        transform(RouteType::ImageGenerations, &mut body);
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
