//! The ai-proxy config as the handler uses it, deserialized once per snapshot compile from
//! the stored (schema-validated, defaults-filled) JSON.

use serde::Deserialize;

use crate::route_type::RouteType;

#[derive(Debug, Clone, Deserialize)]
pub struct AiProxyConfig {
    pub route_type: RouteType,
    #[serde(default)]
    pub auth: Option<Auth>,
    pub model: Model,
    #[serde(default)]
    pub logging: Option<Logging>,
    #[serde(default)]
    pub response_streaming: Option<String>,
    #[serde(default)]
    pub max_request_body_size: Option<u64>,
    #[serde(default)]
    pub model_name_header: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Auth {
    pub header_name: Option<String>,
    pub header_value: Option<String>,
    pub param_name: Option<String>,
    pub param_value: Option<String>,
    pub param_location: Option<String>,
    #[serde(default)]
    pub allow_override: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Model {
    pub provider: String,
    pub name: Option<String>,
    #[serde(default)]
    pub options: Option<Options>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Options {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub input_cost: Option<f64>,
    pub output_cost: Option<f64>,
    pub upstream_url: Option<String>,
    pub upstream_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Logging {
    #[serde(default)]
    pub log_statistics: Option<bool>,
    #[serde(default)]
    pub log_payloads: Option<bool>,
}

/// A parsed `upstream_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
    /// The URL named no path at all (`http://vllm:8000`): it is a base, and the route type's
    /// path is appended. With a path (even `/`), the URL is used whole, as in Kong.
    pub base_only: bool,
}

// === impl UpstreamUrl ===

impl UpstreamUrl {
    pub fn parse(url: &str) -> Result<Self, UpstreamUrlError> {
        let uri: http::Uri = url.parse().map_err(|source| UpstreamUrlError::Invalid {
            url: url.to_owned(),
            source,
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(UpstreamUrlError::Scheme {
                    url: url.to_owned(),
                })
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| UpstreamUrlError::NoHost {
                url: url.to_owned(),
            })?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // Kong normalizes leading slashes of the path to one.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path_and_query = format!("/{}", path.trim_start_matches('/'));
        let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
        let base_only = !after_scheme.contains(['/', '?']);
        Ok(Self {
            https,
            host,
            port,
            path_and_query,
            base_only,
        })
    }
}

/// Why an `upstream_url` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("invalid url '{url}': {source}")]
    Invalid {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("url '{url}' must be http or https")]
    Scheme { url: String },
    #[error("url '{url}' has no host")]
    NoHost { url: String },
}
