use super::{openai_path, Driver};

/// OpenAI: every route type of its seed page.
pub struct OpenAi;

impl Driver for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn base(&self) -> (bool, &'static str, u16) {
        (true, "api.openai.com", 443)
    }

    fn path(&self, route_type: &str) -> Option<&'static str> {
        openai_path(route_type)
    }
}
