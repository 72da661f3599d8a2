//! Provider drivers: where each route type goes and what each provider needs changed.

mod openai;
mod xai;

use serde_json::Value;

pub use openai::OpenAi;
pub use xai::Xai;

/// One LLM provider.
pub trait Driver: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Base `(https, host, port)`.
    fn base(&self) -> (bool, &'static str, u16);
    /// The upstream path of a route type (None: not served by this provider).
    fn path(&self, route_type: &str) -> Option<&'static str>;
    /// Provider-specific request changes (drop fields the provider refuses).
    fn transform_request(&self, _route_type: &str, _body: &mut Value) {}
    /// Turns a provider error body into OpenAI's `{"error": {...}}` shape when it is not
    /// already in it, so OpenAI SDK clients can read it.
    fn translate_error(&self, _status: u16, _body: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

pub fn driver(provider: &str) -> Option<Box<dyn Driver>> {
    match provider {
        "openai" => Some(Box::new(OpenAi)),
        "xai" => Some(Box::new(Xai)),
        _ => None,
    }
}

/// The path of each route type on OpenAI's API (shared by OpenAI-compatible providers).
pub(crate) fn openai_path(route_type: &str) -> Option<&'static str> {
    Some(match route_type {
        "llm/v1/chat" => "/v1/chat/completions",
        "llm/v1/completions" => "/v1/completions",
        "llm/v1/embeddings" => "/v1/embeddings",
        "llm/v1/files" => "/v1/files",
        "llm/v1/batches" => "/v1/batches",
        "llm/v1/assistants" => "/v1/assistants",
        "llm/v1/responses" => "/v1/responses",
        "audio/v1/audio/speech" => "/v1/audio/speech",
        "audio/v1/audio/transcriptions" => "/v1/audio/transcriptions",
        "audio/v1/audio/translations" => "/v1/audio/translations",
        "image/v1/images/generations" => "/v1/images/generations",
        "image/v1/images/edits" => "/v1/images/edits",
        "video/v1/videos/generations" => "/v1/videos",
        _ => return None,
    })
}
