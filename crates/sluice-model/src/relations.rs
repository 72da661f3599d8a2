//! Checks that need two entities: a route with its service, a plugin with the route or
//! service it is scoped to. Each entity passed its own schema first; these rules are about
//! how they fit together, and every write path (the Admin API with the stored neighbour, the
//! declarative resolver with the file's) runs the same functions.
//!
//! Kong Enterprise's rules for WebSocket (`ws`/`wss`, Kong 3.0+ EE DAO checks): a WebSocket
//! route must have a service, and the route's and the service's protocols must both be
//! WebSocket or both not. Sluice adds, as Kong's docs require in words: an ai-proxy-advanced
//! `realtime/v1/realtime` target only on a WebSocket route or service.

use crate::entity::{Plugin, Protocol, Route, Service};
use crate::violation::SchemaViolation;

/// The realtime route type, which only a WebSocket handshake can use.
pub const REALTIME_ROUTE_TYPE: &str = "realtime/v1/realtime";

fn is_websocket(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Ws | Protocol::Wss)
}

/// A route whose protocols are all `ws`/`wss` (the route schema keeps them from mixing).
pub fn websocket_route(route: &Route) -> bool {
    !route.protocols.is_empty() && route.protocols.iter().copied().all(is_websocket)
}

/// Kong EE's route/service rule. `service` is the route's service, `None` when it has none.
pub fn route_service(route: &Route, service: Option<&Service>, violation: &mut SchemaViolation) {
    let websocket = websocket_route(route);
    match service {
        None if websocket => {
            violation.field("service", "WebSocket routes must be attached to a service")
        }
        None => {}
        Some(service) if is_websocket(service.protocol) != websocket => {
            violation.field("protocols", "route/service protocol mismatch");
        }
        Some(_) => {}
    }
}

/// The indexes of an ai-proxy-advanced plugin's realtime targets.
fn realtime_targets(plugin: &Plugin) -> Vec<usize> {
    if plugin.name != "ai-proxy-advanced" {
        return Vec::new();
    }
    plugin.config["targets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t["route_type"].as_str() == Some(REALTIME_ROUTE_TYPE))
                .map(|(index, _)| index)
                .collect()
        })
        .unwrap_or_default()
}

/// A plugin with its scope: a realtime target needs a WebSocket route (or, on a service
/// plugin without a route, a WebSocket service). A global plugin is not checked: it applies
/// to whatever route a handshake takes, and a plain request on it is refused at request time.
pub fn plugin_scope(
    plugin: &Plugin,
    route: Option<&Route>,
    service: Option<&Service>,
    violation: &mut SchemaViolation,
) {
    let websocket = match (route, service) {
        (Some(route), _) => websocket_route(route),
        (None, Some(service)) => is_websocket(service.protocol),
        (None, None) => return,
    };
    if websocket {
        return;
    }
    let scope = if route.is_some() { "route" } else { "service" };
    for index in realtime_targets(plugin) {
        violation.field(
            &format!("config.targets.{index}.route_type"),
            format!(
                "'{REALTIME_ROUTE_TYPE}' needs a WebSocket {scope}: set its protocols to 'ws' and/or 'wss'"
            ),
        );
    }
}

/// Whether a plugin config has anything [`plugin_scope`] checks (so a caller can skip the
/// lookups for every other plugin).
pub fn plugin_needs_scope(plugin: &Plugin) -> bool {
    !realtime_targets(plugin).is_empty()
}
