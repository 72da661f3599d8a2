//! `rate-limiting` (Kong 3.10, priority 910): fixed windows per second/minute/hour/day/
//! month/year, with Kong's `local` and `redis` policies (`cluster` needs Kong's database
//! table and is refused when the config is written, rather than silently counting locally).
//!
//! `redis` with `sync_rate: -1` (Kong's default) costs one pipelined round trip per request,
//! every window at once, as Kong's policy does; a refused request is counted too (Kong's).
//! With `sync_rate > 0` the request path does no Redis call at all: counts are local and
//! synced in one pipeline every `sync_rate` seconds ([`Batched`]). When Redis fails and
//! `fault_tolerant` is on (the default), the request is served and counted locally, and the
//! failure is logged once until Redis answers again; never a 500.

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

use crate::redis_counters::{Batched, RedisConfig, RedisHub, RedisTarget};

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
    fault_tolerant: Option<bool>,
    sync_rate: Option<f64>,
    redis: Option<RedisConfig>,
}

/// Windows are counted per (plugin instance, client identifier, period start).
type Counters = Arc<Mutex<HashMap<(Uuid, String, &'static str, u64), u64>>>;

/// Long-lived: the counters (and Redis connections) survive config swaps.
#[derive(Default)]
pub struct Factory {
    counters: Counters,
    redis: RedisHub,
    /// The batched counters of each (Redis target, sync rate).
    batched: Mutex<HashMap<String, Arc<Batched>>>,
}

struct Handler {
    plugin_id: Uuid,
    limits: Vec<(&'static str, u64, u64)>, // (period name, seconds, limit)
    limit_by: LimitBy,
    hide_client_headers: bool,
    error_code: u16,
    error_message: String,
    counters: Counters,
    policy: Policy,
}

/// Where the windows are counted besides (or instead of) this process.
enum Policy {
    Local,
    /// One round trip per request (`sync_rate: -1`).
    Redis {
        target: Arc<RedisTarget>,
        fault_tolerant: bool,
    },
    /// Local counts synced every `sync_rate`.
    Batched(Arc<Batched>),
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
        let policy = self.policy(plugin, &config)?;
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
            policy,
        }))
    }
}

impl Factory {
    fn policy(
        &self,
        plugin: &sluice_model::Plugin,
        config: &Config,
    ) -> Result<Policy, PluginBuildError> {
        let sync_rate = config.sync_rate.unwrap_or(-1.0);
        match config.policy.as_deref().unwrap_or("local") {
            "local" | "" => {
                if sync_rate != -1.0 {
                    return Err(PluginBuildError::at(
                        plugin,
                        "sync_rate",
                        "sync_rate can only be used with the redis policy",
                    ));
                }
                Ok(Policy::Local)
            }
            "redis" => {
                let redis = config.redis.clone().unwrap_or_default();
                let target = self.redis.target(plugin, "redis", &redis)?;
                if sync_rate == -1.0 {
                    return Ok(Policy::Redis {
                        target,
                        fault_tolerant: config.fault_tolerant.unwrap_or(true),
                    });
                }
                if sync_rate < 0.02 {
                    return Err(PluginBuildError::at(
                        plugin,
                        "sync_rate",
                        "sync_rate must be greater than 0.02, or -1 to disable",
                    ));
                }
                let key = format!("{}@{sync_rate}", target.name);
                let mut batched = self.batched.lock().unwrap_or_else(|e| e.into_inner());
                let counters = batched
                    .entry(key)
                    .or_insert_with(|| {
                        Batched::start(target, std::time::Duration::from_secs_f64(sync_rate))
                    })
                    .clone();
                Ok(Policy::Batched(counters))
            }
            other => Err(PluginBuildError::at(
                plugin,
                "policy",
                format!(
                    "policy '{other}' is not supported by Sluice (it needs Kong's database); \
                     use 'local' or 'redis'"
                ),
            )),
        }
    }
}

// === impl Handler ===

impl Handler {
    /// Each window's count before this request, as the policy keeps it. `Err` only when the
    /// store failed and `fault_tolerant` is off.
    async fn count(&self, identifier: &str, ctx: &RequestCtx, now: u64) -> Result<Vec<u64>, ()> {
        match &self.policy {
            Policy::Local => Ok(self.count_locally(identifier, now)),
            Policy::Redis {
                target,
                fault_tolerant,
            } => {
                let ops = self
                    .limits
                    .iter()
                    .map(|(period, secs, _)| {
                        (
                            self.redis_key(ctx, identifier, now, period, *secs),
                            1.0,
                            *secs,
                        )
                    })
                    .collect();
                match target.add_and_get(ops).await {
                    // The total includes this request: what was used before it is one less.
                    Ok(totals) => Ok(totals
                        .iter()
                        .map(|t| (*t as u64).saturating_sub(1))
                        .collect()),
                    // The target logged the failure (once).
                    Err(_) if *fault_tolerant => Ok(self.count_locally(identifier, now)),
                    Err(_) => Err(()),
                }
            }
            Policy::Batched(counters) => {
                let keys: Vec<String> = self
                    .limits
                    .iter()
                    .map(|(period, secs, _)| self.redis_key(ctx, identifier, now, period, *secs))
                    .collect();
                let used: Vec<u64> = keys.iter().map(|k| counters.get(k) as u64).collect();
                let allowed = self
                    .limits
                    .iter()
                    .zip(&used)
                    .all(|((_, _, limit), used)| used < limit);
                for (key, (_, secs, _)) in keys.iter().zip(&self.limits) {
                    if allowed {
                        counters.add(key, 1.0, *secs);
                    } else {
                        counters.watch(key, *secs);
                    }
                }
                Ok(used)
            }
        }
    }

    /// Kong's key: `ratelimit:<route id>:<service id>:<identifier>:<period start ms>:<period>`,
    /// so nodes that share the route's id share its counts.
    fn redis_key(
        &self,
        ctx: &RequestCtx,
        identifier: &str,
        now: u64,
        period: &str,
        secs: u64,
    ) -> String {
        let window = now - now % secs;
        format!(
            "ratelimit:{}:{}:{identifier}:{}:{period}",
            ctx.route_id,
            ctx.service_id.unwrap_or_default(),
            window * 1000,
        )
    }

    /// This process's counts; a request within every limit is counted, a refused one is not.
    fn count_locally(&self, identifier: &str, now: u64) -> Vec<u64> {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let used: Vec<u64> = self
            .limits
            .iter()
            .map(|(period, secs, _)| {
                let window = now - now % secs;
                counters
                    .get(&(self.plugin_id, identifier.to_owned(), *period, window))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        let allowed = self
            .limits
            .iter()
            .zip(&used)
            .all(|((_, _, limit), used)| used < limit);
        if allowed {
            for (period, secs, _) in &self.limits {
                let window = now - now % secs;
                *counters
                    .entry((self.plugin_id, identifier.to_owned(), *period, window))
                    .or_insert(0) += 1;
            }
            // Forget windows that ended, so memory stays bounded by active clients.
            if counters.len() > 100_000 {
                counters.retain(|(_, _, period, window), _| window + period_seconds(period) > now);
            }
        }
        used
    }

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
        let used = match self.count(&identifier, ctx, now).await {
            Ok(used) => used,
            Err(()) => return Flow::Respond(internal_error()),
        };
        let mut usage = Usage {
            remaining: Vec::with_capacity(self.limits.len()),
        };
        let mut exceeded = false;
        for ((period, secs, limit), used) in self.limits.iter().zip(&used) {
            let window = now - now % secs;
            if *used >= *limit {
                exceeded = true;
            }
            usage.remaining.push((
                period,
                *limit,
                limit.saturating_sub(used + 1),
                window + secs - now,
            ));
        }
        if exceeded {
            let mut response = json_response(
                self.error_code,
                &serde_json::json!({ "message": self.error_message }),
            );
            if !self.hide_client_headers {
                for (period, limit, _, reset) in &usage.remaining {
                    insert_headers(response.headers_mut(), period, *limit, 0, *reset);
                }
                let (_, _, reset) = ratelimit_window(&usage, true);
                insert_ratelimit(response.headers_mut(), &usage, true);
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(reset));
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
        insert_ratelimit(&mut response.headers, usage, false);
    }
}

/// Kong's per-window headers: `X-RateLimit-Limit-Minute`, `X-RateLimit-Remaining-Minute`.
fn insert_headers(
    headers: &mut http::HeaderMap,
    period: &str,
    limit: u64,
    remaining: u64,
    _reset: u64,
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
}

/// The window the draft-standard `RateLimit-*` headers describe, as Kong picks it: the one
/// with the fewest requests left, the longer one on a tie. `(limit, remaining, reset)`.
fn ratelimit_window(usage: &Usage, refused: bool) -> (u64, u64, u64) {
    let mut best: Option<(u64, u64, u64, u64)> = None; // (limit, remaining, reset, secs)
    for (period, limit, remaining, reset) in &usage.remaining {
        let remaining = if refused { 0 } else { *remaining };
        let secs = period_seconds(period);
        let better = match best {
            None => true,
            Some((_, r, _, s)) => remaining < r || (remaining == r && secs > s),
        };
        if better {
            best = Some((*limit, remaining, (*reset).max(1), secs));
        }
    }
    best.map_or((0, 0, 1), |(l, r, reset, _)| (l, r, reset))
}

fn insert_ratelimit(headers: &mut http::HeaderMap, usage: &Usage, refused: bool) {
    if usage.remaining.is_empty() {
        return;
    }
    let (limit, remaining, reset) = ratelimit_window(usage, refused);
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}

fn period_seconds(period: &str) -> u64 {
    match period {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        "month" => 2_592_000,
        _ => 31_536_000,
    }
}

/// Kong's answer when the counter store fails and `fault_tolerant` is off.
fn internal_error() -> Box<http::Response<bytes::Bytes>> {
    json_response(
        500,
        &serde_json::json!({ "message": "An unexpected error occurred" }),
    )
}

#[cfg(test)]
mod tests;
