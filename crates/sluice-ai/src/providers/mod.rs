//! Provider drivers: where each route type goes and what each provider needs changed. What
//! differs between providers is a method here; the request flow never asks a driver's name.

mod openai;
mod xai;

use serde_json::{Map, Value};

pub use openai::OpenAi;
pub use xai::Xai;

use crate::route_type::RouteType;

/// The providers Sluice drives, by Kong's `model.provider` name.
pub const SUPPORTED: [&str; 2] = ["openai", "xai"];

/// One LLM provider.
pub trait Driver: Send + Sync + 'static {
    /// Kong's `model.provider` name; also the prefix of `X-Sluice-LLM-Model`.
    fn name(&self) -> &'static str;
    /// Base `(https, host, port)`.
    fn base(&self) -> (bool, &'static str, u16);
    /// Whether this provider serves `route_type` (from its docs, `shared/seeds/`).
    fn serves(&self, route_type: RouteType) -> bool;
    /// The upstream path of a served route type; `None` for `preserve` (the client's path).
    fn path(&self, route_type: RouteType) -> Option<&'static str> {
        route_type.openai_path().filter(|_| self.serves(route_type))
    }
    /// Provider-specific request changes (drop fields the provider refuses).
    fn transform_request(&self, _route_type: RouteType, _body: &mut Map<String, Value>) {}
    /// Whether this provider's error bodies need [`Driver::translate_error`] also on routes
    /// whose answers are streamed or passed through (its errors are not OpenAI-shaped).
    fn translates_errors(&self) -> bool {
        false
    }
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
