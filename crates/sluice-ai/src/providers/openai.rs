use super::Driver;
use crate::route_type::RouteType;

/// OpenAI: every route type of its seed page.
pub struct OpenAi;

impl Driver for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn base(&self) -> (bool, &'static str, u16) {
        (true, "api.openai.com", 443)
    }

    fn serves(&self, route_type: RouteType) -> bool {
        // Realtime is a WebSocket; this gateway does not proxy it yet.
        route_type != RouteType::Realtime
    }
}
