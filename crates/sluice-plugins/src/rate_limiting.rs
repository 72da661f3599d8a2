//! `rate-limiting` with Kong's `local` policy: fixed windows per second/minute/hour/day/
//! month/year, counted in this process. `cluster` and `redis` policies are refused at compile
//! time rather than silently counting locally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::HeaderValue;
use serde::Deserialize;
use sluice_plugin::{
    erase, json_response, typed_config, Flow, Plugin, PluginBuildError, PluginFactory,
    PluginHandler, ProxyRequest, RequestCtx,
};
use uuid::Uuid;

const PRIORITY: i64 = 910;

/// Kong's `at_least_one_of` entity check of the rate-limiting schema, in its words.
const AT_LEAST_ONE_LIMIT: &str = "at least one of these fields must be non-empty: \
    'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'";

/// The config fields this implementation reads (the schema has more; they are validated and
/// stored, and ignored here where they only concern other policies).
#[derive(Debug, Deserialize)]
struct Config {
    second: Option<f64>,
    minute: Option<f64>,
    hour: Option<f64>,
    day: Option<f64>,
    month: Option<f64>,
    year: Option<f64>,
    limit_by: Option<String>,
    header_name: Option<String>,
    policy: Option<String>,
    hide_client_headers: Option<bool>,
    error_code: Option<u16>,
    error_message: Option<String>,
}

/// Windows are counted per (plugin instance, client identifier, period start).
type Counters = Arc<Mutex<HashMap<(Uuid, String, &'static str, u64), u64>>>;

/// Long-lived: the counters survive config swaps.
#[derive(Default)]
pub struct Factory {
    counters: Counters,
}

struct Handler {
    plugin_id: Uuid,
    limits: Vec<(&'static str, u64, u64)>, // (period name, seconds, limit)
    limit_by: LimitBy,
    hide_client_headers: bool,
    error_code: u16,
    error_message: String,
    counters: Counters,
}

enum LimitBy {
    /// Kong falls back to the client IP when no consumer was identified.
    ConsumerOrIp,
    Ip,
    Header(String),
    Path,
    Service,
}

/// What `access` learned, for `header_filter`.
pub struct Usage {
    remaining: Vec<(&'static str, u64, u64, u64)>, // (period, limit, remaining, reset secs)
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "rate-limiting"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        let policy = config.policy.as_deref().unwrap_or("local");
        if policy != "local" {
            return Err(PluginBuildError::at(
                plugin,
                "policy",
                format!("policy '{policy}' is not supported by Sluice yet; use 'local'"),
            ));
        }
        let periods = [
            ("second", 1, config.second),
            ("minute", 60, config.minute),
            ("hour", 3_600, config.hour),
            ("day", 86_400, config.day),
            ("month", 2_592_000, config.month),
            ("year", 31_536_000, config.year),
        ];
        let limits: Vec<_> = periods
            .into_iter()
            .filter_map(|(name, secs, limit)| limit.map(|l| (name, secs, l as u64)))
            .collect();
        if limits.is_empty() {
            return Err(PluginBuildError::new(plugin, AT_LEAST_ONE_LIMIT));
        }
        let limit_by = match config.limit_by.as_deref().unwrap_or("consumer") {
            "ip" => LimitBy::Ip,
            // Kong's conditional check: limit_by header needs the header's name.
            "header" => match config.header_name.filter(|h| !h.is_empty()) {
                Some(name) => LimitBy::Header(name.to_ascii_lowercase()),
                None => {
                    return Err(PluginBuildError::at(
                        plugin,
                        "header_name",
                        "required field missing",
                    ))
                }
            },
            "path" => LimitBy::Path,
            "service" => LimitBy::Service,
            _ => LimitBy::ConsumerOrIp,
        };
        Ok(erase(Handler {
            plugin_id: plugin.id,
            limits,
            limit_by,
            hide_client_headers: config.hide_client_headers.unwrap_or(false),
            error_code: config.error_code.unwrap_or(429),
            error_message: config
                .error_message
                .unwrap_or_else(|| "API rate limit exceeded".to_owned()),
            counters: self.counters.clone(),
        }))
    }
}

// === impl Handler ===

impl Handler {
    fn identifier(&self, request: &ProxyRequest, ctx: &RequestCtx) -> String {
        match &self.limit_by {
            LimitBy::ConsumerOrIp => ctx
                .consumer_id
                .map_or_else(|| ctx.client_addr.ip().to_string(), |c| c.to_string()),
            LimitBy::Ip => ctx.client_addr.ip().to_string(),
            LimitBy::Header(name) => request
                .parts
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            LimitBy::Path => request.parts.uri.path().to_owned(),
            LimitBy::Service => ctx.service_id.map(|s| s.to_string()).unwrap_or_default(),
        }
    }
}

#[async_trait]
impl Plugin for Handler {
    /// The windows' usage, from the access phase to the response headers.
    type State = Option<Usage>;

    fn name(&self) -> &'static str {
        "rate-limiting"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
        state: &mut Option<Usage>,
    ) -> Flow {
        let identifier = self.identifier(request, ctx);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut usage = Usage {
            remaining: Vec::with_capacity(self.limits.len()),
        };
        let mut exceeded = false;
        {
            let mut counters = self
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Check every window first: a refused request must not consume quota.
            for (period, secs, limit) in &self.limits {
                let window = now - now % secs;
                let used = counters
                    .get(&(self.plugin_id, identifier.clone(), *period, window))
                    .copied()
                    .unwrap_or(0);
                if used >= *limit {
                    exceeded = true;
                }
                usage.remaining.push((
                    period,
                    *limit,
                    limit.saturating_sub(used + 1),
                    window + secs - now,
                ));
            }
            if !exceeded {
                for (period, secs, _) in &self.limits {
                    let window = now - now % secs;
                    *counters
                        .entry((self.plugin_id, identifier.clone(), *period, window))
                        .or_insert(0) += 1;
                }
                // Forget windows that ended, so memory stays bounded by active clients.
                if counters.len() > 100_000 {
                    counters.retain(|(_, _, period, window), _| {
                        let secs = self
                            .limits
                            .iter()
                            .find(|l| l.0 == *period)
                            .map_or(1, |l| l.1);
                        window + secs > now
                    });
                }
            }
        }
        if exceeded {
            let mut response = json_response(
                self.error_code,
                &serde_json::json!({ "message": self.error_message }),
            );
            if !self.hide_client_headers {
                let retry_after = usage.remaining.iter().map(|r| r.3).max().unwrap_or(1);
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(retry_after));
                for (period, limit, _, reset) in &usage.remaining {
                    insert_headers(response.headers_mut(), period, *limit, 0, *reset);
                }
            }
            return Flow::Respond(response);
        }
        *state = Some(usage);
        Flow::Continue
    }

    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        _ctx: &mut RequestCtx,
        state: &mut Option<Usage>,
    ) {
        if self.hide_client_headers {
            return;
        }
        let Some(usage) = state.as_ref() else {
            return;
        };
        for (period, limit, remaining, reset) in &usage.remaining {
            insert_headers(&mut response.headers, period, *limit, *remaining, *reset);
        }
    }
}

/// Kong's headers: `X-RateLimit-Limit-Minute`, `X-RateLimit-Remaining-Minute`, and the
/// draft-standard `RateLimit-Limit/-Remaining/-Reset` for the first window.
fn insert_headers(
    headers: &mut http::HeaderMap,
    period: &str,
    limit: u64,
    remaining: u64,
    reset: u64,
) {
    let title = format!("{}{}", period[..1].to_ascii_uppercase(), &period[1..]);
    if let Ok(name) = http::HeaderName::from_bytes(format!("x-ratelimit-limit-{title}").as_bytes())
    {
        headers.insert(name, HeaderValue::from(limit));
    }
    if let Ok(name) =
        http::HeaderName::from_bytes(format!("x-ratelimit-remaining-{title}").as_bytes())
    {
        headers.insert(name, HeaderValue::from(remaining));
    }
    if !headers.contains_key("ratelimit-limit") {
        headers.insert("ratelimit-limit", HeaderValue::from(limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(reset));
    }
}

#[cfg(test)]
mod tests;
