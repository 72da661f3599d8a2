//! Who may talk to the Admin API from a browser.
//!
//! The Admin API has no authentication of its own (as Kong's): it is reachable by whoever can
//! reach its address, which by default is loopback only. A web page the operator opens could
//! still reach that address through the operator's browser: a cross-site form POST (no CORS
//! preflight is needed for one), or DNS rebinding (a hostile name that resolves to 127.0.0.1,
//! so the browser treats the Admin API as that site). So:
//! - a request a browser marks as cross-site (`Sec-Fetch-Site: cross-site`), or one carrying an
//!   `Origin` that is not allowed, is refused with 403, and CORS headers go to allowed origins
//!   only (preflights answered with 204);
//! - a request whose `Host` is not one of the Admin API's own names is refused with 403 (on a
//!   loopback listener: `localhost`, `127.0.0.1`, `[::1]` with its port; on a specific address:
//!   that address; on an unspecified address such as `0.0.0.0` the names are unknown, so only
//!   the configured ones are checked).
//!
//! Command-line clients (curl, decK, `sluice`) send no `Origin` and a `Host` naming the
//! address they dialled, so they are unaffected.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The browser-facing rules of one Admin API listener.
#[derive(Debug, Clone, Default)]
pub struct AdminGuard {
    /// Origins allowed to call the API from a browser (`https://gui.example`); `*` allows any.
    pub allowed_origins: Vec<String>,
    /// `Host` values accepted (with their port); `None` accepts any.
    pub allowed_hosts: Option<Vec<String>>,
}

const ALLOWED_METHODS: &str = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT";

// === impl AdminGuard ===

impl AdminGuard {
    /// The rules for a listener bound to `listen`: its own names as hosts (plus `extra_hosts`),
    /// and `origins` as the allowed browser origins.
    pub fn for_listener(
        listen: SocketAddr,
        origins: Vec<String>,
        extra_hosts: Vec<String>,
    ) -> Self {
        let port = listen.port();
        let own: Option<Vec<String>> = match listen.ip() {
            ip if ip.is_unspecified() => None,
            ip if ip.is_loopback() => Some(vec![
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]),
            IpAddr::V4(ip) => Some(vec![format!("{ip}:{port}")]),
            IpAddr::V6(ip) => Some(vec![format!("[{ip}]:{port}")]),
        };
        let allowed_hosts = match own {
            None if extra_hosts.is_empty() => None,
            own => Some(
                own.unwrap_or_default()
                    .into_iter()
                    .chain(extra_hosts)
                    .collect(),
            ),
        };
        Self {
            allowed_origins: origins,
            allowed_hosts,
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }

    fn host_allowed(&self, host: &str) -> bool {
        match &self.allowed_hosts {
            None => true,
            Some(hosts) => hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
        }
    }
}

fn refuse(message: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "message": message })),
    )
        .into_response()
}

/// The middleware: refuses what a hostile page could send, answers CORS for allowed origins.
pub(crate) async fn guard(
    State(state): State<crate::AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let guard = state.guard();
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        if !guard.host_allowed(host) {
            return refuse(format!(
                "Host '{host}' is not an address of this Admin API (see --admin-allow-host)"
            ));
        }
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let allowed_origin = origin.as_deref().filter(|o| guard.origin_allowed(o));
    match (&origin, allowed_origin) {
        (Some(origin), None) => {
            return refuse(format!(
                "cross-origin request refused: Origin '{origin}' is not allowed \
                 (see --admin-allow-origin)"
            ))
        }
        (None, None) if cross_site => {
            return refuse("cross-site request refused (Sec-Fetch-Site: cross-site)".to_owned())
        }
        _ => {}
    }
    let Some(origin) = allowed_origin.map(str::to_owned) else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("3600"),
        );
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_accepts_its_own_names() {
        let loopback = AdminGuard::for_listener("127.0.0.1:8001".parse().unwrap(), vec![], vec![]);
        for host in [
            "localhost:8001",
            "127.0.0.1:8001",
            "[::1]:8001",
            "LOCALHOST:8001",
        ] {
            assert!(loopback.host_allowed(host), "{host}");
        }
        for host in ["attacker.example:8001", "127.0.0.1:9999", "localhost"] {
            assert!(!loopback.host_allowed(host), "{host}");
        }
        let any = AdminGuard::for_listener("0.0.0.0:8001".parse().unwrap(), vec![], vec![]);
        assert!(
            any.host_allowed("whatever:8001"),
            "unknown names: not checked"
        );
        let named = AdminGuard::for_listener(
            "0.0.0.0:8001".parse().unwrap(),
            vec![],
            vec!["admin.internal:8001".into()],
        );
        assert!(named.host_allowed("admin.internal:8001"));
        assert!(!named.host_allowed("attacker.example:8001"));
        let origins = AdminGuard::for_listener(
            "127.0.0.1:8001".parse().unwrap(),
            vec!["https://gui.example".into()],
            vec![],
        );
        assert!(origins.origin_allowed("https://gui.example"));
        assert!(!origins.origin_allowed("https://attacker.example"));
    }
}
