//! Sluice's Admin API: Kong's REST interface to services, routes, consumers and plugins.
//!
//! [`router`] returns a plain `axum::Router`, so the binary serves it on a socket and tests can
//! drive it without one. Every response, errors included, is in Kong's JSON shape.

pub mod body;
pub mod dbless;
mod entities;
mod error;
mod guard;
mod info;
mod sync;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sluice_model::{Acl, BasicAuth, Consumer, KeyAuth, Plugin, Route, Schemas, Service};
use sluice_store::Store;

pub use error::ApiError;
pub use guard::AdminGuard;

/// Largest request body the Admin API reads. A bigger one is refused with 413 before it is
/// buffered whole. Large enough for a declarative config of tens of thousands of entities.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Largest sync plan or declarative config accepted: 100,000 entities fit.
pub const MAX_SYNC_BODY_BYTES: usize = 256 * 1024 * 1024;

/// What `GET /` reports about this node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: String,
    pub hostname: String,
    pub role: String,
    pub database: String,
    pub admin_listen: String,
    pub proxy_listen: String,
}

/// Shared state of all Admin API handlers. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    schemas: Arc<Schemas>,
    node: NodeInfo,
    counters: Counters,
    dbless: bool,
    data_planes: Option<DataPlanesFn>,
    proxy_status: Option<ProxyStatusFn>,
    metrics: Option<MetricsFn>,
    ai_targets: Option<AiTargetsFn>,
    guard: AdminGuard,
}

/// Lists the connected data planes for `GET /clustering/data-planes` (set on a control plane).
/// A function rather than the cluster registry itself, so this crate does not depend on the
/// cluster protocol.
pub type DataPlanesFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What this node's proxy serves, for `GET /status` (set on a node that proxies): the config
/// version it serves and the entities of it that did not compile. A function, so this crate
/// does not depend on the proxy.
pub type ProxyStatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// ai-proxy-advanced's targets as this node sees them, for `GET /ai/targets`.
pub type AiTargetsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Renders the node's metrics for `GET /metrics`, given whether the database answers:
/// `(content type, exposition)`.
pub type MetricsFn = Arc<dyn Fn(Option<bool>) -> (&'static str, String) + Send + Sync>;

/// Request counters for `GET /status`.
#[derive(Default)]
pub struct Counters {
    total: AtomicU64,
    active: AtomicU64,
}

// === impl AdminState ===

impl AdminState {
    /// `dbless`: entity writes are refused and `POST /config` replaces the whole config.
    pub fn new(store: Store, schemas: Arc<Schemas>, node: NodeInfo, dbless: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                schemas,
                node,
                counters: Counters::default(),
                dbless,
                data_planes: None,
                proxy_status: None,
                metrics: None,
                ai_targets: None,
                guard: AdminGuard::default(),
            }),
        }
    }

    /// Makes this node answer `GET /clustering/data-planes` (a control plane).
    pub fn with_data_planes(self, data_planes: DataPlanesFn) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            unreachable!("with_data_planes is called right after new, before any clone")
        });
        inner.data_planes = Some(data_planes);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Makes `GET /status` report what the proxy serves beside what is stored.
    pub fn with_proxy_status(self, proxy_status: ProxyStatusFn) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            unreachable!("with_proxy_status is called right after new, before any clone")
        });
        inner.proxy_status = Some(proxy_status);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Serves `GET /metrics` (the prometheus plugin's exposition, as Kong's Admin API does).
    pub fn with_metrics(self, metrics: MetricsFn) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            unreachable!("with_metrics is called right after new, before any clone")
        });
        inner.metrics = Some(metrics);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Serves `GET /ai/targets` (ai-proxy-advanced's balancer state).
    pub fn with_ai_targets(self, ai_targets: AiTargetsFn) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            unreachable!("with_ai_targets is called right after new, before any clone")
        });
        inner.ai_targets = Some(ai_targets);
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn ai_targets(&self) -> Option<serde_json::Value> {
        self.inner.ai_targets.as_ref().map(|f| f())
    }

    pub fn metrics(&self) -> Option<&MetricsFn> {
        self.inner.metrics.as_ref()
    }

    /// Sets the browser-facing rules (allowed origins and hosts); the default refuses every
    /// cross-origin request and checks no host.
    pub fn with_guard(self, guard: AdminGuard) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            unreachable!("with_guard is called right after new, before any clone")
        });
        inner.guard = guard;
        Self {
            inner: Arc::new(inner),
        }
    }

    fn guard(&self) -> &AdminGuard {
        &self.inner.guard
    }

    pub fn proxy_status(&self) -> Option<serde_json::Value> {
        self.inner.proxy_status.as_ref().map(|f| f())
    }

    pub fn dbless(&self) -> bool {
        self.inner.dbless
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn schemas(&self) -> &Schemas {
        &self.inner.schemas
    }

    pub fn node(&self) -> &NodeInfo {
        &self.inner.node
    }

    fn counters(&self) -> &Counters {
        &self.inner.counters
    }
}

// === impl Counters ===

impl Counters {
    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// The Admin API.
pub fn router(state: AdminState) -> Router {
    let app = Router::new()
        .route("/", get(info::root))
        .route("/status", get(info::status))
        .route("/metrics", get(info::metrics))
        .route("/ai/targets", get(info::ai_targets))
        .route("/endpoints", get(info::endpoints))
        .route("/tags", get(info::tags))
        .route("/tags/{tag}", get(info::tag))
        .route("/plugins/schema/{name}", get(info::legacy_plugin_schema))
        .route("/clustering/status", get(clustering_status))
        .route("/schemas/plugins/{name}", get(info::plugin_schema))
        .route("/schemas/plugins/validate", post(info::validate_plugin))
        .route("/schemas/{entity}", get(info::entity_schema))
        .route("/schemas/{entity}/validate", post(info::validate_entity))
        // services
        .route(
            "/services",
            get(entities::list::<Service>).post(entities::create::<Service>),
        )
        .route(
            "/services/{key}",
            get(entities::get::<Service>)
                .put(entities::put::<Service>)
                .patch(entities::patch::<Service>)
                .delete(entities::delete::<Service>),
        )
        .route(
            "/services/{key}/routes",
            get(entities::list_nested::<Service, Route>)
                .post(entities::create_nested::<Service, Route>),
        )
        .route(
            "/services/{key}/routes/{item}",
            get(entities::get_nested::<Service, Route>)
                .put(entities::put_nested::<Service, Route>)
                .patch(entities::patch_nested::<Service, Route>)
                .delete(entities::delete_nested::<Service, Route>),
        )
        .route(
            "/services/{key}/plugins",
            get(entities::list_nested::<Service, Plugin>)
                .post(entities::create_nested::<Service, Plugin>),
        )
        .route(
            "/services/{key}/plugins/{item}",
            get(entities::get_nested::<Service, Plugin>)
                .put(entities::put_nested::<Service, Plugin>)
                .patch(entities::patch_nested::<Service, Plugin>)
                .delete(entities::delete_nested::<Service, Plugin>),
        )
        // routes
        .route(
            "/routes",
            get(entities::list::<Route>).post(entities::create::<Route>),
        )
        .route(
            "/routes/{key}",
            get(entities::get::<Route>)
                .put(entities::put::<Route>)
                .patch(entities::patch::<Route>)
                .delete(entities::delete::<Route>),
        )
        .route(
            "/routes/{key}/service",
            get(entities::route_service)
                .patch(entities::patch_route_service)
                .put(entities::put_route_service),
        )
        .route(
            "/routes/{key}/plugins",
            get(entities::list_nested::<Route, Plugin>)
                .post(entities::create_nested::<Route, Plugin>),
        )
        .route(
            "/routes/{key}/plugins/{item}",
            get(entities::get_nested::<Route, Plugin>)
                .put(entities::put_nested::<Route, Plugin>)
                .patch(entities::patch_nested::<Route, Plugin>)
                .delete(entities::delete_nested::<Route, Plugin>),
        )
        // consumers
        .route(
            "/consumers",
            get(entities::list_consumers).post(entities::create::<Consumer>),
        )
        .route(
            "/consumers/{key}",
            get(entities::get::<Consumer>)
                .put(entities::put::<Consumer>)
                .patch(entities::patch::<Consumer>)
                .delete(entities::delete::<Consumer>),
        )
        .route(
            "/consumers/{key}/plugins",
            get(entities::list_nested::<Consumer, Plugin>)
                .post(entities::create_nested::<Consumer, Plugin>),
        )
        .route(
            "/consumers/{key}/plugins/{item}",
            get(entities::get_nested::<Consumer, Plugin>)
                .put(entities::put_nested::<Consumer, Plugin>)
                .patch(entities::patch_nested::<Consumer, Plugin>)
                .delete(entities::delete_nested::<Consumer, Plugin>),
        )
        .merge(credential_routes::<KeyAuth>())
        .merge(credential_routes::<BasicAuth>())
        .merge(credential_routes::<Acl>())
        // plugins
        .route(
            "/plugins",
            get(entities::list::<Plugin>).post(entities::create::<Plugin>),
        )
        .route("/plugins/enabled", get(entities::enabled_plugins))
        .route(
            "/plugins/{key}",
            get(entities::get::<Plugin>)
                .put(entities::put::<Plugin>)
                .patch(entities::patch::<Plugin>)
                .delete(entities::delete::<Plugin>),
        )
        .route(
            "/config",
            get(dbless::get_config)
                .post(dbless::post_config)
                .layer(DefaultBodyLimit::max(MAX_SYNC_BODY_BYTES)),
        )
        .route("/clustering/data-planes", get(data_planes))
        .route("/sluice/snapshot", get(sync::snapshot))
        .route(
            "/sluice/sync",
            post(sync::apply).layer(DefaultBodyLimit::max(MAX_SYNC_BODY_BYTES)),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            dbless::refuse_writes,
        ))
        .layer(middleware::from_fn(too_large_as_kong))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard));
    // Kong's Admin API takes `/services/` as `/services`: one trailing slash is dropped
    // before routing (axum's routes match exactly).
    let app = app.with_state(state);
    Router::new().fallback_service(tower::service_fn(move |mut request: Request| {
        let app = app.clone();
        async move {
            if let Some(stripped) = without_trailing_slash(request.uri()) {
                *request.uri_mut() = stripped;
            }
            let origin = request.headers().get(header::ORIGIN).cloned();
            let mut response = if request.method() == axum::http::Method::OPTIONS {
                preflight(&request)
            } else {
                tower::ServiceExt::oneshot(app, request).await?
            };
            // Kong's Admin API CORS headers, on every answer: browser-based admin tools
            // (Kong Manager, Konga) read the API from another origin.
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                origin.unwrap_or(HeaderValue::from_static("*")),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
}

/// Kong's answer to `OPTIONS`: 204, with the methods the endpoint has, sorted, in `Allow` and
/// `Access-Control-Allow-Methods`, and the request's `Access-Control-Request-Headers` (or
/// `Content-Type`) allowed.
fn preflight(request: &Request) -> Response {
    let allow = HeaderValue::from_static(allowed_methods(request.uri().path()));
    let headers_allowed = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("Content-Type"));
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, allow.clone());
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, headers_allowed);
    response
}

/// The methods of the endpoint at `path`, as Kong lists them: the root and the read-only
/// endpoints `GET, HEAD, OPTIONS`; a collection adds `POST`; an entity (`/services/{s}`,
/// `/services/{s}/routes/{r}`) has `DELETE, GET, HEAD, OPTIONS, PATCH, PUT`.
fn allowed_methods(path: &str) -> &'static str {
    const READ: &str = "GET, HEAD, OPTIONS";
    const COLLECTION: &str = "GET, HEAD, OPTIONS, POST";
    const ENTITY: &str = "DELETE, GET, HEAD, OPTIONS, PATCH, PUT";
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] | ["status" | "metrics" | "endpoints" | "tags" | "clustering", ..] => READ,
        ["schemas", rest @ ..] => match rest.last() {
            Some(&"validate") => "OPTIONS, POST",
            _ => READ,
        },
        ["ai", ..] | ["plugins", "enabled"] => READ,
        ["config"] => COLLECTION,
        ["routes", _, "service"] => "GET, HEAD, OPTIONS, PATCH, PUT",
        s if s.len() % 2 == 1 => COLLECTION,
        _ => ENTITY,
    }
}

/// `uri` without one trailing slash on its path (not the root's).
fn without_trailing_slash(uri: &axum::http::Uri) -> Option<axum::http::Uri> {
    let path = uri.path();
    if path.len() < 2 || !path.ends_with('/') {
        return None;
    }
    let mut text = path[..path.len() - 1].to_owned();
    if let Some(query) = uri.query() {
        text.push('?');
        text.push_str(query);
    }
    text.parse().ok()
}

/// A credential's endpoints, as Kong names them: `/consumers/{c}/key-auth[/{k}]` and
/// `/key-auths[/{k}]`.
fn credential_routes<C: sluice_store::Stored>() -> Router<AdminState> {
    let kind = <C as sluice_model::Entity>::KIND;
    let nested = format!("/consumers/{{key}}/{}", kind.nested_endpoint());
    let top = format!("/{}", kind.endpoint());
    Router::new()
        .route(
            &nested,
            get(entities::list_nested::<Consumer, C>).post(entities::create_nested::<Consumer, C>),
        )
        .route(
            &format!("{nested}/{{item}}"),
            get(entities::get_nested::<Consumer, C>)
                .put(entities::put_nested::<Consumer, C>)
                .patch(entities::patch_nested::<Consumer, C>)
                .delete(entities::delete_nested::<Consumer, C>),
        )
        .route(&top, get(entities::list::<C>).post(entities::create::<C>))
        .route(
            &format!("{top}/{{key}}"),
            get(entities::get::<C>)
                .put(entities::put::<C>)
                .patch(entities::patch::<C>)
                .delete(entities::delete::<C>),
        )
}

/// Kong's answer on a node that is not a control plane, for the `/clustering` endpoints.
const NOT_A_CONTROL_PLANE: &str =
    "this endpoint is only available when Kong is configured to run as Control Plane for the cluster";

/// `GET /clustering/data-planes`: Kong's list shape.
async fn data_planes(
    State(state): State<AdminState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let list = state
        .inner
        .data_planes
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest(NOT_A_CONTROL_PLANE.to_owned()))?;
    Ok(axum::Json(
        serde_json::json!({ "data": list(), "next": null }),
    ))
}

/// `GET /clustering/status` (deprecated in Kong, still answered): the data planes keyed by
/// id, each with `config_hash`, `hostname`, `ip` and `last_seen`.
async fn clustering_status(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let list = state
        .inner
        .data_planes
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest(NOT_A_CONTROL_PLANE.to_owned()))?;
    let mut by_id = serde_json::Map::new();
    for plane in list().as_array().into_iter().flatten() {
        let Some(id) = plane.get("id").and_then(serde_json::Value::as_str) else {
            continue;
        };
        let field = |name: &str| plane.get(name).cloned().unwrap_or(serde_json::Value::Null);
        by_id.insert(
            id.to_owned(),
            serde_json::json!({
                "config_hash": field("config_hash"),
                "hostname": field("hostname"),
                "ip": field("ip"),
                "last_seen": field("last_seen"),
            }),
        );
    }
    let mut response = axum::Json(serde_json::Value::Object(by_id)).into_response();
    response
        .headers_mut()
        .insert("deprecation", HeaderValue::from_static("true"));
    Ok(response)
}

/// Counts requests for `GET /status`.
async fn count(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    /// Decrements on drop, so a request whose client went away mid-handler (its future is
    /// dropped) does not leave the active count one too high forever.
    struct Active<'a>(&'a AtomicU64);
    impl Drop for Active<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let counters = state.counters();
    counters.total.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    let _active = Active(&counters.active);
    next.run(request).await
}

/// axum answers an over-limit body with a plain-text 413; rewrite it into Kong's JSON shape.
async fn too_large_as_kong(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE
        && !response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        return ApiError::TooLarge(MAX_BODY_BYTES).into_response();
    }
    response
}
