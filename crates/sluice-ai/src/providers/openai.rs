use super::Driver;
use crate::route_type::RouteType;

/// OpenAI: every route type of its seed page (realtime only through ai-proxy-advanced, as
/// Kong has it; the handler's factory checks that).
pub struct OpenAi;

impl Driver for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn base(&self) -> (bool, &'static str, u16) {
        (true, "api.openai.com", 443)
    }

    fn serves(&self, _route_type: RouteType) -> bool {
        true
    }
}
