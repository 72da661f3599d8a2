//! Why ai-proxy answers a request itself instead of forwarding it: each variant's text is
//! Kong's (kong-ai.md §2), and each knows its status. One type, so a message is written once.

use serde_json::json;
use sluice_plugin::{json_response, Flow};

use crate::route_type::RouteType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("content-type header does not match request body, or bad JSON formatting")]
    BadJson,
    /// A method the route type's API does not define (`DELETE` on a chat route): refused
    /// before the provider key is injected or anything goes upstream.
    #[error("method {method} is not allowed on a {route_type} route")]
    MethodNotAllowed {
        method: http::Method,
        route_type: RouteType,
    },
    #[error("the request body could not be read")]
    Unreadable,
    /// The client stopped sending its body (the proxy's `client_body_timeout`).
    #[error("the client stopped sending the request body")]
    BodyTimeout,
    #[error("request body is larger than the {limit}-byte limit (config.max_request_body_size)")]
    TooLarge { limit: usize },
    /// A body in another route type's format (chat messages on a completions route, ...).
    #[error("[{body}] message format is not compatible with [{route_type}] route type")]
    Incompatible {
        body: RouteType,
        route_type: RouteType,
    },
    #[error("request body doesn't contain valid prompts")]
    NoPrompts,
    /// A field the gateway reads has the wrong type (OpenAI's wording): refused before
    /// anything goes upstream, instead of failing later in the transform.
    #[error("Invalid type for '{field}': expected {expected}")]
    InvalidType {
        field: String,
        expected: &'static str,
    },
    #[error("cannot use own model - must be: {configured}")]
    OwnModel { configured: String },
    #[error("model parameter not found in request, nor in gateway configuration")]
    NoModel,
    #[error("response streaming is not enabled for this LLM")]
    StreamingDenied,
    /// A plain request on a realtime route, which only a WebSocket handshake may use.
    #[error("the realtime/v1/realtime route type is served over WebSocket: send a GET with 'Upgrade: websocket'")]
    NotWebSocket,
    #[error("route_type '{route_type}' is not supported by provider '{provider}'")]
    UnsupportedRouteType {
        route_type: RouteType,
        provider: &'static str,
    },
}

// === impl RequestError ===

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::TooLarge { .. } => 413,
            RequestError::BodyTimeout => 408,
            RequestError::MethodNotAllowed { .. } => 405,
            RequestError::NotWebSocket => 426,
            _ => 400,
        }
    }

    /// The answer, in the `{"error": {...}}` shape OpenAI SDKs read.
    pub fn into_flow(self) -> Flow {
        let body = match &self {
            RequestError::TooLarge { .. } => json!({"error": {
                "message": self.to_string(),
                "type": "invalid_request_error",
                "code": "request_too_large",
            }}),
            RequestError::MethodNotAllowed { .. } => json!({"error": {
                "message": self.to_string(),
                "type": "invalid_request_error",
                "code": "method_not_allowed",
            }}),
            _ => json!({"error": {"message": self.to_string()}}),
        };
        let mut response = json_response(self.status(), &body);
        if self == RequestError::NotWebSocket {
            let headers = response.headers_mut();
            headers.insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("websocket"),
            );
            headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("Upgrade"),
            );
        }
        if let RequestError::MethodNotAllowed { route_type, .. } = &self {
            let allow: Vec<&str> = route_type
                .methods()
                .unwrap_or(&[])
                .iter()
                .map(http::Method::as_str)
                .collect();
            if let Ok(value) = http::HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(http::header::ALLOW, value);
            }
        }
        Flow::Respond(response)
    }
}

impl From<RequestError> for Flow {
    fn from(error: RequestError) -> Self {
        error.into_flow()
    }
}

/// An answer in OpenAI's error shape, for checks outside [`RequestError`].
pub fn openai_error_response(status: u16, message: &str) -> Box<http::Response<bytes::Bytes>> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error"}}),
    )
}
