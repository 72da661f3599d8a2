//! Snapshot → [`Compiled`]: every fallible step of a config change happens here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_model::{
    CompileCheck, EntityKind, Plugin, Protocol, Route, SchemaViolation, Service, Snapshot,
};
use sluice_plugin::identity::Identities;
use sluice_plugin::{scope, PluginHandler, Registry};
use sluice_router::{BuildError, PathHandling, RouteSpec, Router};
use uuid::Uuid;

/// A config that failed to compile as a whole; the previous one keeps serving. A fault in one
/// entity never fails the whole config: see [`EntityFault`].
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("router: {0}")]
    Router(#[from] sluice_router::BuildError),
}

/// One entity of a snapshot that did not compile. The rest of the config is served without
/// it: a route that does not compile is left out of the router (as Kong's router skips it),
/// and the routes of a plugin that does not build answer 503 naming it (fail closed: a route
/// never runs without a plugin it is configured with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityFault {
    pub entity: EntityKind,
    pub id: Uuid,
    pub message: String,
}

/// Everything a request needs, built once per config version.
pub struct Compiled {
    pub version: u64,
    pub router: Router<Arc<RouteTarget>>,
    /// Entities left out or failed closed in this version; empty for a clean config.
    pub faults: Vec<EntityFault>,
    /// Consumers and credentials, for the auth plugins.
    pub identities: Arc<Identities>,
    /// Plugins scoped to a consumer, by consumer: once a request is authenticated, those that
    /// apply to its route replace less specific instances for the rest of the chain.
    pub consumer_plugins: HashMap<Uuid, Vec<ConsumerPlugin>>,
}

/// The plugins of a route in run order (priority, highest first), with the scope rank each
/// was selected at ([`scope::rank`]).
pub struct Chain {
    pub handlers: Vec<Arc<dyn PluginHandler>>,
    pub ranks: Vec<u8>,
    pub has_body_filter: bool,
}

/// A plugin scoped to a consumer (and maybe a route or service).
pub struct ConsumerPlugin {
    pub plugin: Plugin,
    /// The handler, or why it cannot run (the consumer's requests then get 503).
    pub handler: Result<Arc<dyn PluginHandler>, String>,
}

/// What a matched route leads to.
pub struct RouteTarget {
    pub route_id: Uuid,
    /// The route's and service's names for logs and metrics.
    pub labels: Arc<sluice_plugin::RouteLabels>,
    pub strip_path: bool,
    pub path_handling: PathHandling,
    pub preserve_host: bool,
    /// The route only accepts https; this listener is plain http, so it answers 426 (or the
    /// route's redirect code) as Kong does.
    pub https_only: bool,
    /// `ws`/`wss` routes take only WebSocket handshakes.
    pub websocket_only: bool,
    pub https_redirect_status_code: u16,
    /// Shared by every route of the service.
    pub service: Option<Arc<ServiceTarget>>,
    /// Plugins of this route for a request with no consumer, in run order.
    pub chain: Arc<Chain>,
    /// The gateway's own errors on this route use OpenAI's shape (an AI route).
    pub openai_errors: bool,
    /// Set when a plugin on this route is configured but cannot run here (this data plane
    /// lacks it, or its config did not build). The route then fails closed (503) rather than
    /// running without, say, its auth plugin.
    pub unavailable: Option<String>,
}

/// The upstream of a route's service.
pub struct ServiceTarget {
    pub id: Uuid,
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub retries: u16,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    /// Connector settings: the worker's client for them is picked per request.
    pub connect_timeout_ms: u32,
    pub tls_verify: bool,
}

/// The compile checks, for [`Schemas::with_compile_check`](sluice_model::Schemas): each
/// write runs the same route and plugin builds that [`compile`] runs.
pub struct WriteCheck {
    registry: Arc<Registry>,
}

// === impl Compiled ===

impl Compiled {
    pub fn empty() -> Self {
        Self {
            version: 0,
            router: Router::build(Vec::new()).expect("an empty router always builds"),
            faults: Vec::new(),
            identities: Arc::default(),
            consumer_plugins: HashMap::new(),
        }
    }
}

/// Builds the router and, per route, its service target and plugin chain.
pub fn compile(snapshot: &Snapshot, registry: &Registry) -> Result<Compiled, CompileError> {
    let services: HashMap<Uuid, &Service> = snapshot
        .entities
        .services
        .iter()
        .map(|s| (s.id, s))
        .collect();

    // Index plugins by scope so each route only looks at candidates that can apply.
    let mut by_route: HashMap<Uuid, Vec<&Plugin>> = HashMap::new();
    let mut by_service: HashMap<Uuid, Vec<&Plugin>> = HashMap::new();
    let mut global: Vec<&Plugin> = Vec::new();
    let mut scoped_to_consumers: Vec<&Plugin> = Vec::new();
    for plugin in snapshot.entities.plugins.iter().filter(|p| p.enabled) {
        if plugin.consumer.is_some() {
            scoped_to_consumers.push(plugin);
            continue;
        }
        match (plugin.route, plugin.service) {
            (Some(route), _) => by_route.entry(route.id).or_default().push(plugin),
            (None, Some(service)) => by_service.entry(service.id).or_default().push(plugin),
            (None, None) => global.push(plugin),
        }
    }

    // Handlers are built once per plugin instance, however many routes share it; a plugin
    // that fails to build is remembered as the reason its routes are unavailable.
    let mut handlers: HashMap<Uuid, Result<Arc<dyn PluginHandler>, String>> = HashMap::new();
    let mut faults = Vec::new();
    let mut targets: HashMap<Uuid, Arc<ServiceTarget>> = HashMap::new();
    let mut specs = Vec::with_capacity(snapshot.entities.routes.len());
    for route in &snapshot.entities.routes {
        if !served_here(route) {
            continue; // stream and gRPC routes are not served by this proxy
        }
        let service = route.service.and_then(|s| services.get(&s.id).copied());
        if service.is_some_and(|s| !s.enabled) {
            continue; // Kong leaves the routes of a disabled service out of the router
        }
        let service_id = service.map(|s| s.id);
        let candidates = by_route
            .get(&route.id)
            .into_iter()
            .flatten()
            .chain(
                service_id
                    .and_then(|id| by_service.get(&id))
                    .into_iter()
                    .flatten(),
            )
            .chain(global.iter())
            .copied();
        let selected = scope::select(candidates, Some(route.id), service_id, None);
        let mut chain = Vec::with_capacity(selected.len());
        let mut unavailable = None;
        for (rank, plugin) in selected {
            let handler = handlers
                .entry(plugin.id)
                .or_insert_with(|| build_plugin(registry, plugin, &mut faults));
            match handler {
                Ok(handler) => chain.push((handler.clone(), rank)),
                Err(reason) => unavailable = Some(reason.clone()),
            }
        }
        let chain = Chain::new(chain);
        let openai_errors = chain.handlers.iter().any(|h| h.openai_errors());
        let service_target = service.map(|s| {
            targets
                .entry(s.id)
                .or_insert_with(|| Arc::new(ServiceTarget::new(s)))
                .clone()
        });
        let labels = Arc::new(sluice_plugin::RouteLabels {
            route: route.name.clone().unwrap_or_else(|| route.id.to_string()),
            service: service
                .map(|s| s.name.clone().unwrap_or_else(|| s.host.clone()))
                .unwrap_or_default(),
        });
        let target = Arc::new(RouteTarget {
            route_id: route.id,
            labels,
            strip_path: route.strip_path,
            path_handling: match route.path_handling {
                sluice_model::PathHandling::V0 => PathHandling::V0,
                sluice_model::PathHandling::V1 => PathHandling::V1,
            },
            preserve_host: route.preserve_host,
            https_only: !route
                .protocols
                .iter()
                .any(|p| matches!(p, Protocol::Http | Protocol::Ws)),
            websocket_only: route
                .protocols
                .iter()
                .all(|p| matches!(p, Protocol::Ws | Protocol::Wss)),
            https_redirect_status_code: route.https_redirect_status_code,
            service: service_target,
            chain: Arc::new(chain),
            openai_errors,
            unavailable,
        });
        specs.push(spec(route, target));
    }
    let mut consumer_plugins: HashMap<Uuid, Vec<ConsumerPlugin>> = HashMap::new();
    for plugin in scoped_to_consumers {
        let Some(consumer) = plugin.consumer else {
            continue;
        };
        let handler = build_plugin(registry, plugin, &mut faults);
        consumer_plugins
            .entry(consumer.id)
            .or_default()
            .push(ConsumerPlugin {
                plugin: plugin.clone(),
                handler,
            });
    }
    let (router, skipped) = Router::build_skipping(specs)?;
    for error in skipped {
        let id = match &error {
            BuildError::InvalidRegex { route_id, .. }
            | BuildError::InvalidHeaderName { route_id, .. } => *route_id,
            BuildError::TooManyMatchers { .. } => return Err(error.into()),
        };
        faults.push(EntityFault {
            entity: EntityKind::Route,
            id,
            message: error.to_string(),
        });
    }
    for fault in &faults {
        tracing::error!(
            entity = fault.entity.singular(),
            id = %fault.id,
            message = %fault.message,
            version = snapshot.version,
            "an entity of the config does not compile; it is not served, the rest of the config is"
        );
    }
    Ok(Compiled {
        version: snapshot.version,
        router,
        faults,
        identities: Arc::new(Identities::new(&snapshot.entities)),
        consumer_plugins,
    })
}

// === impl Chain ===

impl Chain {
    /// Orders handlers by priority, highest first (a stable sort: equal priorities keep the
    /// order they were selected in, by name).
    pub fn new(mut selected: Vec<(Arc<dyn PluginHandler>, u8)>) -> Self {
        selected.sort_by_key(|(h, _)| std::cmp::Reverse(h.priority()));
        let has_body_filter = selected.iter().any(|(h, _)| h.has_body_filter());
        let (handlers, ranks) = selected.into_iter().unzip();
        Self {
            handlers,
            ranks,
            has_body_filter,
        }
    }
}

/// Routes this proxy serves (stream and gRPC routes are stored but not proxied here).
fn served_here(route: &Route) -> bool {
    route.protocols.iter().any(|p| {
        matches!(
            p,
            Protocol::Http | Protocol::Https | Protocol::Ws | Protocol::Wss
        )
    })
}

/// Builds one plugin instance; on failure, the 503 reason its routes give (and a fault).
/// `{vault://...}` references in its config are resolved first, from this process's
/// environment; one that cannot be resolved fails the plugin closed, and the message names
/// the reference, never a value.
fn build_plugin(
    registry: &Registry,
    plugin: &Plugin,
    faults: &mut Vec<EntityFault>,
) -> Result<Arc<dyn PluginHandler>, String> {
    let Some(factory) = registry.get(&plugin.name) else {
        return Err(format!(
            "plugin '{}' is configured on this route but not available in this data plane",
            plugin.name
        ));
    };
    let env = |name: &str| std::env::var(name).ok();
    let resolved = match sluice_model::vault::resolve_config(&plugin.config, &env) {
        Ok(resolved) => resolved,
        Err((path, message)) => {
            let message = format!("config.{path}: {message}");
            faults.push(EntityFault {
                entity: EntityKind::Plugin,
                id: plugin.id,
                message: message.clone(),
            });
            return Err(format!(
                "plugin '{}' ({}) on this route cannot run: {message}",
                plugin.name, plugin.id
            ));
        }
    };
    let resolved = resolved.map(|config| Plugin {
        config,
        ..plugin.clone()
    });
    let plugin = resolved.as_ref().unwrap_or(plugin);
    factory.build(plugin).map_err(|error| {
        faults.push(EntityFault {
            entity: EntityKind::Plugin,
            id: plugin.id,
            message: error.to_string(),
        });
        format!(
            "plugin '{}' ({}) on this route has a config this data plane cannot run",
            plugin.name, plugin.id
        )
    })
}

fn spec<P>(route: &Route, payload: P) -> RouteSpec<P> {
    RouteSpec {
        id: route.id,
        created_at: route.created_at,
        protocols: route
            .protocols
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        methods: route.methods.clone().unwrap_or_default(),
        hosts: route.hosts.clone().unwrap_or_default(),
        paths: route.paths.clone().unwrap_or_default(),
        headers: route
            .headers
            .iter()
            .flatten()
            .map(|(name, values)| (name.to_ascii_lowercase(), values.clone()))
            .collect(),
        snis: route.snis.clone().unwrap_or_default(),
        regex_priority: route.regex_priority,
        payload,
    }
}

// === impl ServiceTarget ===

impl ServiceTarget {
    fn new(service: &Service) -> Self {
        Self {
            id: service.id,
            https: matches!(service.protocol, Protocol::Https | Protocol::Wss),
            host: service.host.clone(),
            port: service.port,
            path: service.path.clone(),
            retries: service.retries,
            connect_timeout: Duration::from_millis(u64::from(service.connect_timeout)),
            write_timeout: Duration::from_millis(u64::from(service.write_timeout)),
            read_timeout: Duration::from_millis(u64::from(service.read_timeout)),
            connect_timeout_ms: service.connect_timeout,
            tls_verify: service.tls_verify != Some(false),
        }
    }
}

// === impl WriteCheck ===

impl WriteCheck {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

impl CompileCheck for WriteCheck {
    fn route(&self, route: &Route, violation: &mut SchemaViolation) {
        if !served_here(route) {
            return;
        }
        match sluice_router::check(&spec(route, ())) {
            Ok(()) => {}
            Err(BuildError::InvalidHeaderName { name, .. }) => {
                violation.field_at(
                    vec!["headers".to_owned(), name.clone()],
                    format!("invalid header name {name:?}"),
                );
            }
            Err(BuildError::InvalidRegex {
                pattern, source, ..
            }) => {
                let field = if route.paths.iter().flatten().any(|p| *p == pattern) {
                    "paths"
                } else {
                    "headers"
                };
                violation.field(field, format!("invalid regex {pattern:?}: {source}"));
            }
            Err(error @ BuildError::TooManyMatchers { .. }) => violation.entity(error.to_string()),
        }
    }

    fn plugin(&self, plugin: &Plugin, violation: &mut SchemaViolation) {
        // A plugin with a schema but no handler here is accepted: its routes fail closed
        // (503) until a data plane that has it serves them.
        let Some(factory) = self.registry.get(&plugin.name) else {
            return;
        };
        if let Err(error) = factory.check(plugin) {
            match &error.field {
                Some(field) => violation.field(field, error.reason()),
                None => violation.entity(error.reason()),
            }
        }
    }
}
