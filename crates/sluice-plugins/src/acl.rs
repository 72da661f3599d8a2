//! `acl` (Kong 3.x `kong/plugins/acl`): lets an authenticated consumer through by its groups.
//! Runs after the auth plugins (priority 950), so it sees who they authenticated.

use async_trait::async_trait;
use http::{HeaderName, StatusCode};
use serde::Deserialize;
use sluice_plugin::{
    erase, typed_config, Flow, Plugin, PluginBuildError, PluginFactory, PluginHandler,
    ProxyRequest, RequestCtx,
};

use crate::auth;

const PRIORITY: i64 = 950;

/// Kong's messages (`handler.lua`, and the schema's entity checks).
const FORBIDDEN: &str = "You cannot consume this service";
const ONLY_ONE: &str =
    "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'";
const AT_LEAST_ONE: &str =
    "at least one of these fields must be non-empty: 'config.allow', 'config.deny'";

static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

#[derive(Debug, Deserialize)]
struct Config {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    hide_groups_header: bool,
}

pub struct Factory;

enum Rule {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

struct Handler {
    rule: Rule,
    hide_groups_header: bool,
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<std::sync::Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        let set = |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| !l.is_empty());
        let rule = match (set(&config.allow), set(&config.deny)) {
            (true, true) => return Err(PluginBuildError::new(plugin, ONLY_ONE)),
            (false, false) => return Err(PluginBuildError::new(plugin, AT_LEAST_ONE)),
            (true, false) => Rule::Allow(config.allow.unwrap_or_default()),
            (false, true) => Rule::Deny(config.deny.unwrap_or_default()),
        };
        Ok(erase(Handler {
            rule,
            hide_groups_header: config.hide_groups_header,
        }))
    }
}

// === impl Handler ===

#[async_trait]
impl Plugin for Handler {
    type State = ();

    fn name(&self) -> &'static str {
        "acl"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(&self, request: &mut ProxyRequest, ctx: &mut RequestCtx, _: &mut ()) -> Flow {
        let Some(authenticated) = ctx.consumer.as_ref() else {
            // No auth plugin identified anyone.
            return auth::error(ctx, StatusCode::UNAUTHORIZED, "Unauthorized", None);
        };
        let has_credential = authenticated.credential;
        let consumer = &authenticated.consumer;
        let groups = &consumer.groups;
        let blocked = match &self.rule {
            Rule::Deny(deny) => groups.iter().any(|g| deny.contains(g)),
            Rule::Allow(allow) => !groups.iter().any(|g| allow.contains(g)),
        };
        if blocked {
            // Kong: an anonymous consumer with no groups is told to authenticate.
            return if has_credential || !groups.is_empty() {
                auth::error(ctx, StatusCode::FORBIDDEN, FORBIDDEN, None)
            } else {
                auth::error(ctx, StatusCode::UNAUTHORIZED, "Unauthorized", None)
            };
        }
        match (&consumer.groups_header, self.hide_groups_header) {
            (Some(value), false) => {
                request
                    .parts
                    .headers
                    .insert(X_CONSUMER_GROUPS.clone(), value.clone());
            }
            _ => {
                request.parts.headers.remove(&X_CONSUMER_GROUPS);
            }
        }
        Flow::Continue
    }
}
