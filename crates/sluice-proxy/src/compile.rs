//! Snapshot → [`Compiled`]: every fallible step of a config change happens here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_model::{Plugin, Route, Service, Snapshot};
use sluice_plugin::{scope, PluginBuildError, PluginHandler, Registry};
use sluice_router::{PathHandling, RouteSpec, Router};
use uuid::Uuid;

/// A config that failed to compile; the previous one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("router: {0}")]
    Router(#[from] sluice_router::BuildError),
    #[error(transparent)]
    Plugin(#[from] PluginBuildError),
}

/// Everything a request needs, built once per config version.
pub struct Compiled {
    pub version: u64,
    pub router: Router<Arc<RouteTarget>>,
}

/// What a matched route leads to.
pub struct RouteTarget {
    pub route_id: Uuid,
    pub strip_path: bool,
    pub path_handling: PathHandling,
    pub preserve_host: bool,
    /// The route only accepts https; this listener is plain http, so it answers 426 (or the
    /// route's redirect code) as Kong does.
    pub https_only: bool,
    pub https_redirect_status_code: u16,
    pub service: Option<ServiceTarget>,
    /// Plugins of this route in run order (priority, highest first).
    pub chain: Vec<Arc<dyn PluginHandler>>,
    pub has_body_filter: bool,
    /// Set when a plugin on this route is configured but this data plane cannot run it. The
    /// route then fails closed (503) rather than running without, say, its auth plugin.
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

// === impl Compiled ===

impl Compiled {
    pub fn empty() -> Self {
        Self {
            version: 0,
            router: Router::build(Vec::new()).expect("an empty router always builds"),
        }
    }
}

/// Builds the router and, per route, its service target and plugin chain.
pub fn compile(snapshot: &Snapshot, registry: &Registry) -> Result<Compiled, CompileError> {
    let services: HashMap<Uuid, &Service> = snapshot.services.iter().map(|s| (s.id, s)).collect();

    // Index plugins by scope so each route only looks at candidates that can apply.
    let mut by_route: HashMap<Uuid, Vec<&Plugin>> = HashMap::new();
    let mut by_service: HashMap<Uuid, Vec<&Plugin>> = HashMap::new();
    let mut global: Vec<&Plugin> = Vec::new();
    for plugin in snapshot.plugins.iter().filter(|p| p.enabled) {
        match (plugin.route, plugin.service) {
            (Some(route), _) => by_route.entry(route.id).or_default().push(plugin),
            (None, Some(service)) => by_service.entry(service.id).or_default().push(plugin),
            (None, None) => global.push(plugin),
        }
    }

    // Handlers are built once per plugin instance, however many routes share it.
    let mut handlers: HashMap<Uuid, Arc<dyn PluginHandler>> = HashMap::new();
    let mut targets: HashMap<Uuid, Arc<ServiceTargetShared>> = HashMap::new();
    let mut specs = Vec::with_capacity(snapshot.routes.len());
    for route in &snapshot.routes {
        if !route.protocols.iter().any(|p| p == "http" || p == "https") {
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
        for plugin in selected {
            if let Some(handler) = handlers.get(&plugin.id) {
                chain.push(handler.clone());
                continue;
            }
            match registry.get(&plugin.name) {
                Some(factory) => {
                    let handler = factory.build(plugin)?;
                    handlers.insert(plugin.id, handler.clone());
                    chain.push(handler);
                }
                None => {
                    unavailable = Some(format!(
                        "plugin '{}' is configured on this route but not available in this data plane",
                        plugin.name
                    ));
                }
            }
        }
        chain.sort_by_key(|h| std::cmp::Reverse(h.priority()));
        let has_body_filter = chain.iter().any(|h| h.has_body_filter());
        let service_target = service.map(|s| {
            targets
                .entry(s.id)
                .or_insert_with(|| Arc::new(ServiceTargetShared::new(s)))
                .target()
        });
        let target = Arc::new(RouteTarget {
            route_id: route.id,
            strip_path: route.strip_path,
            path_handling: if route.path_handling == "v1" {
                PathHandling::V1
            } else {
                PathHandling::V0
            },
            preserve_host: route.preserve_host,
            https_only: !route.protocols.iter().any(|p| p == "http"),
            https_redirect_status_code: route.https_redirect_status_code,
            service: service_target,
            chain,
            has_body_filter,
            unavailable,
        });
        specs.push(spec(route, target));
    }
    Ok(Compiled {
        version: snapshot.version,
        router: Router::build(specs)?,
    })
}

fn spec(route: &Route, target: Arc<RouteTarget>) -> RouteSpec<Arc<RouteTarget>> {
    RouteSpec {
        id: route.id,
        created_at: route.created_at,
        protocols: route.protocols.clone(),
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
        payload: target,
    }
}

/// A service's target, built once per compile and cloned into each of its routes.
struct ServiceTargetShared {
    id: Uuid,
    https: bool,
    host: String,
    port: u16,
    path: Option<String>,
    retries: u16,
    connect_timeout: Duration,
    write_timeout: Duration,
    read_timeout: Duration,
    connect_timeout_ms: u32,
    tls_verify: bool,
}

impl ServiceTargetShared {
    fn new(service: &Service) -> Self {
        let https = service.protocol == "https";
        Self {
            id: service.id,
            https,
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

    fn target(&self) -> ServiceTarget {
        ServiceTarget {
            id: self.id,
            https: self.https,
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            retries: self.retries,
            connect_timeout: self.connect_timeout,
            write_timeout: self.write_timeout,
            read_timeout: self.read_timeout,
            connect_timeout_ms: self.connect_timeout_ms,
            tls_verify: self.tls_verify,
        }
    }
}
