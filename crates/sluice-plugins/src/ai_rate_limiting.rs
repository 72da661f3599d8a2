//! `ai-rate-limiting-advanced` (Kong 3.10 config, priority 905): token budgets per LLM
//! provider and window, counted from the usage the AI plugin reports (`RequestCtx::ai`,
//! streams included) once the answer is done.
//!
//! As Kong: the access phase compares each budget's usage so far with its limit and refuses
//! only when usage is already *over* it, so the request that crosses a budget completes and
//! the next one is refused before any upstream call. Headers are Kong's
//! (`X-AI-RateLimit-Limit-<window>-<provider>`, `-Remaining-`, and on refusal `-Reset-`,
//! `-Retry-After-`, `X-AI-RateLimit-Reset`, `X-AI-RateLimit-Retry-After`), plus a plain
//! `Retry-After`, which the OpenAI SDKs read. The refusal body carries Kong's `message` and,
//! for the OpenAI SDKs on an AI route, OpenAI's `error` object.
//!
//! Counters: `local` (this node; they survive reloads in the factory) or `redis` (shared by
//! every node with the same `namespace`, or plugin id): `sync_rate: 0` reads Redis on the
//! request path and adds after the answer, off it; `sync_rate > 0` counts locally and syncs
//! every that many seconds. A Redis that fails is logged once and the node counts locally
//! until it answers again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use sluice_plugin::{
    erase, json_response, typed_config, Flow, Plugin, PluginBuildError, PluginFactory,
    PluginHandler, ProxyRequest, RequestCtx,
};

use crate::redis_counters::{Batched, RedisConfig, RedisHub, RedisTarget};

const PRIORITY: i64 = 905;

#[derive(Debug, Deserialize)]
struct Config {
    llm_providers: Vec<ProviderConfig>,
    strategy: Option<String>,
    sync_rate: Option<f64>,
    window_type: Option<String>,
    identifier: Option<String>,
    header_name: Option<String>,
    path: Option<String>,
    namespace: Option<String>,
    hide_client_headers: Option<bool>,
    retry_after_jitter_max: Option<f64>,
    tokens_count_strategy: Option<String>,
    error_code: Option<f64>,
    error_message: Option<String>,
    error_hide_providers: Option<bool>,
    redis: Option<RedisConfig>,
}

#[derive(Debug, Deserialize)]
struct ProviderConfig {
    name: String,
    limit: Vec<f64>,
    window_size: Vec<f64>,
}

/// Long-lived: local counters, Redis connections and batched counters survive reloads.
#[derive(Default)]
pub struct Factory {
    local: Arc<Mutex<HashMap<String, f64>>>,
    redis: RedisHub,
    batched: Mutex<HashMap<String, Arc<Batched>>>,
}

struct Handler {
    namespace: String,
    budgets: Vec<Budget>,
    sliding: bool,
    identifier: Identifier,
    hide_client_headers: bool,
    jitter_max: u64,
    strategy: TokenStrategy,
    error_code: u16,
    error_message: String,
    hide_providers: bool,
    local: Arc<Mutex<HashMap<String, f64>>>,
    store: Store,
}

/// One provider's limit over one window.
struct Budget {
    provider: String,
    limit: f64,
    window: u64,
    /// `<window name>-<provider>`, the headers' suffix.
    suffix: String,
}

enum Identifier {
    Consumer,
    Credential,
    Ip,
    Header(String),
    Path(String),
    Service,
}

#[derive(Clone, Copy)]
enum TokenStrategy {
    Total,
    Prompt,
    Completion,
    Cost,
}

enum Store {
    Local,
    /// Read on the request path, add after it (`sync_rate: 0`).
    Redis(Arc<RedisTarget>),
    Batched(Arc<Batched>),
}

/// What access found, for the response headers and the count after the answer.
pub struct Seen {
    identifier: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    now: u64,
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ai-rate-limiting-advanced"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        let budgets = budgets(plugin, &config)?;
        let identifier = identifier(plugin, &config)?;
        let store = self.store(plugin, &config)?;
        let jitter = config.retry_after_jitter_max.unwrap_or(0.0);
        if jitter < 0.0 {
            return Err(PluginBuildError::at(
                plugin,
                "retry_after_jitter_max",
                "Non-negative retry_after_jitter_max value is expected",
            ));
        }
        Ok(erase(Handler {
            namespace: config
                .namespace
                .clone()
                .unwrap_or_else(|| plugin.id.to_string()),
            budgets,
            sliding: config.window_type.as_deref() != Some("fixed"),
            identifier,
            hide_client_headers: config.hide_client_headers.unwrap_or(false),
            jitter_max: jitter as u64,
            strategy: match config.tokens_count_strategy.as_deref() {
                Some("prompt_tokens") => TokenStrategy::Prompt,
                Some("completion_tokens") => TokenStrategy::Completion,
                Some("cost") => TokenStrategy::Cost,
                _ => TokenStrategy::Total,
            },
            error_code: config.error_code.map_or(429, |c| c as u16),
            error_message: config
                .error_message
                .clone()
                .unwrap_or_else(|| "AI token rate limit exceeded for provider(s): ".to_owned()),
            hide_providers: config.error_hide_providers.unwrap_or(false),
            local: self.local.clone(),
            store,
        }))
    }
}

impl Factory {
    fn store(
        &self,
        plugin: &sluice_model::Plugin,
        config: &Config,
    ) -> Result<Store, PluginBuildError> {
        match (
            config.strategy.as_deref().unwrap_or("local"),
            config.sync_rate,
        ) {
            ("local", None) => Ok(Store::Local),
            ("local", Some(rate)) if rate <= -1.0 => Ok(Store::Local),
            ("local", Some(_)) => Err(PluginBuildError::at(
                plugin,
                "sync_rate",
                "sync_rate cannot be configured when using a local strategy",
            )),
            ("redis", rate) => {
                let target = self.redis.target(
                    plugin,
                    "redis",
                    &config.redis.clone().unwrap_or_default(),
                )?;
                match rate {
                    None => Err(PluginBuildError::at(
                        plugin,
                        "sync_rate",
                        "sync_rate is required if not using a local strategy",
                    )),
                    Some(rate) if rate > 0.0 && rate < 0.02 => Err(PluginBuildError::at(
                        plugin,
                        "sync_rate",
                        "Config option 'sync_rate' must not be a decimal between 0 and 0.02",
                    )),
                    Some(rate) if rate <= 0.0 => Ok(Store::Redis(target)),
                    Some(rate) => {
                        let key = format!("{}@{rate}", target.name);
                        let mut batched = self.batched.lock().unwrap_or_else(|e| e.into_inner());
                        let counters = batched
                            .entry(key)
                            .or_insert_with(|| {
                                Batched::start(target, std::time::Duration::from_secs_f64(rate))
                            })
                            .clone();
                        Ok(Store::Batched(counters))
                    }
                }
            }
            (other, _) => Err(PluginBuildError::at(
                plugin,
                "strategy",
                format!(
                    "strategy '{other}' is not supported by Sluice (it needs Kong's database); \
                     use 'local' or 'redis'"
                ),
            )),
        }
    }
}

/// Every (provider, limit, window), with Kong's checks on them.
fn budgets(
    plugin: &sluice_model::Plugin,
    config: &Config,
) -> Result<Vec<Budget>, PluginBuildError> {
    let mut budgets = Vec::new();
    for (index, provider) in config.llm_providers.iter().enumerate() {
        let at = |field: &str| format!("llm_providers.{index}.{field}");
        if config.llm_providers[..index]
            .iter()
            .any(|p| p.name == provider.name)
        {
            return Err(PluginBuildError::at(
                plugin,
                &at("name"),
                format!("Provider '{}' is not unique", provider.name),
            ));
        }
        if provider.name == "requestPrompt" {
            return Err(PluginBuildError::at(
                plugin,
                &at("name"),
                "requestPrompt counts with request_prompt_count_function, which is Lua; Sluice \
                 runs no Lua",
            ));
        }
        if provider.limit.len() != provider.window_size.len() {
            return Err(PluginBuildError::at(
                plugin,
                &at("window_size"),
                "You must provide the same number of windows and limits",
            ));
        }
        for (limit, window) in provider.limit.iter().zip(&provider.window_size) {
            let window = window.round() as u64;
            if window == 0 {
                return Err(PluginBuildError::at(
                    plugin,
                    &at("window_size"),
                    "value must be greater than 0",
                ));
            }
            budgets.push(Budget {
                provider: provider.name.clone(),
                limit: *limit,
                window,
                suffix: format!("{}-{}", window_name(window), provider.name),
            });
        }
    }
    Ok(budgets)
}

fn identifier(
    plugin: &sluice_model::Plugin,
    config: &Config,
) -> Result<Identifier, PluginBuildError> {
    Ok(match config.identifier.as_deref().unwrap_or("consumer") {
        "ip" => Identifier::Ip,
        "credential" => Identifier::Credential,
        "service" => Identifier::Service,
        "header" => match config.header_name.as_deref().filter(|h| !h.is_empty()) {
            Some(name) => Identifier::Header(name.to_ascii_lowercase()),
            None => {
                return Err(PluginBuildError::at(
                    plugin,
                    "header_name",
                    "No header name provided",
                ))
            }
        },
        "path" => match config.path.clone() {
            Some(path) => Identifier::Path(path),
            None => return Err(PluginBuildError::at(plugin, "path", "No path provided")),
        },
        // consumer-group: Sluice has no consumer groups; the consumer is the closest.
        _ => Identifier::Consumer,
    })
}

/// Kong's window names: `minute` for 60 s, the number of seconds otherwise.
fn window_name(seconds: u64) -> String {
    match seconds {
        1 => "second".to_owned(),
        60 => "minute".to_owned(),
        3_600 => "hour".to_owned(),
        86_400 => "day".to_owned(),
        2_592_000 => "month".to_owned(),
        31_536_000 => "year".to_owned(),
        other => other.to_string(),
    }
}

// === impl Handler ===

impl Handler {
    fn who(&self, request: &ProxyRequest, ctx: &RequestCtx) -> String {
        let ip = || ctx.client_addr.ip().to_string();
        match &self.identifier {
            // Kong: the consumer, else the credential; the client IP when neither.
            Identifier::Consumer | Identifier::Credential => {
                ctx.consumer_id.map_or_else(ip, |c| c.to_string())
            }
            Identifier::Ip => ip(),
            Identifier::Header(name) => request
                .parts
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map_or_else(ip, str::to_owned),
            Identifier::Path(path) if request.parts.uri.path() == path => path.clone(),
            Identifier::Path(_) => ip(),
            Identifier::Service => ctx.service_id.map_or_else(ip, |s| s.to_string()),
        }
    }

    /// The counter of one budget's window starting at `start`.
    fn key(&self, budget: &Budget, who: &str, start: u64) -> String {
        format!(
            "ai-ratelimit:{}:{}:{who}:{start}:{}",
            self.namespace, budget.provider, budget.window
        )
    }

    /// The current and previous window's counter keys of every budget.
    fn keys(&self, who: &str, now: u64) -> Vec<(String, String)> {
        self.budgets
            .iter()
            .map(|b| {
                let start = now - now % b.window;
                (
                    self.key(b, who, start),
                    self.key(b, who, start.saturating_sub(b.window)),
                )
            })
            .collect()
    }

    /// Each budget's (current, previous) window counts.
    async fn counts(&self, keys: &[(String, String)]) -> Vec<(f64, f64)> {
        let local = |keys: &[(String, String)]| {
            let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .map(|(cur, prev)| {
                    (
                        local.get(cur).copied().unwrap_or(0.0),
                        local.get(prev).copied().unwrap_or(0.0),
                    )
                })
                .collect()
        };
        match &self.store {
            Store::Local => local(keys),
            Store::Batched(counters) => keys
                .iter()
                .zip(&self.budgets)
                .map(|((cur, prev), budget)| {
                    counters.watch(cur, budget.window * 2);
                    counters.watch(prev, budget.window);
                    (counters.get(cur), counters.get(prev))
                })
                .collect(),
            Store::Redis(target) => {
                let flat: Vec<String> = keys
                    .iter()
                    .flat_map(|(cur, prev)| [cur.clone(), prev.clone()])
                    .collect();
                match target.get(flat).await {
                    Ok(values) => values.chunks(2).map(|p| (p[0], p[1])).collect(),
                    // The target logged the failure (once); count here until it answers.
                    Err(_) => local(keys),
                }
            }
        }
    }

    /// Adds what the answer cost to every budget of its provider.
    fn add(&self, seen: &Seen, provider: &str, amount: f64) {
        let ops: Vec<(String, f64, u64)> = self
            .budgets
            .iter()
            .filter(|b| b.provider == provider)
            .map(|b| {
                let start = seen.now - seen.now % b.window;
                // Two windows: the sliding count still reads it as the previous one.
                (self.key(b, &seen.identifier, start), amount, b.window * 2)
            })
            .collect();
        if ops.is_empty() {
            return;
        }
        let add_locally = |ops: &[(String, f64, u64)]| {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            for (key, amount, _) in ops {
                *local.entry(key.clone()).or_insert(0.0) += amount;
            }
            // Old windows go once the map grows: it stays bounded by active callers.
            if local.len() > 100_000 {
                let oldest = seen.now.saturating_sub(2 * 31_536_000);
                local.retain(|key, _| {
                    key.rsplit(':')
                        .nth(1)
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_none_or(|start| start > oldest)
                });
            }
        };
        match &self.store {
            Store::Local => add_locally(&ops),
            Store::Batched(counters) => {
                for (key, amount, ttl) in &ops {
                    counters.add(key, *amount, *ttl);
                }
            }
            Store::Redis(target) => {
                if target.failing() {
                    add_locally(&ops);
                }
                // After the answer, off the response path.
                let target = target.clone();
                crate::redis_counters::spawn(async move {
                    let _ = target.add_and_get(ops).await;
                });
            }
        }
    }

    /// One budget against its (current, previous) window counts: its headers, and
    /// `Some((reset, retry_after))` when it is already over its limit (Kong refuses only
    /// then, so the request that crosses a budget completes).
    fn judge(
        &self,
        budget: &Budget,
        (current, previous): (f64, f64),
        now: u64,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
    ) -> Option<(u64, u64)> {
        let elapsed = now % budget.window;
        // Sliding: the previous window weighs as much as it overlaps the last `window` s.
        let weight = if self.sliding {
            (budget.window - elapsed) as f64 / budget.window as f64
        } else {
            0.0
        };
        let rate = current + previous * weight;
        let remaining = (budget.limit - rate).max(0.0);
        let remaining = match self.strategy {
            TokenStrategy::Cost => remaining,
            _ => remaining.floor(),
        };
        let value = |v: f64| HeaderValue::from_str(&format_number(v)).ok();
        if !self.hide_client_headers {
            push(
                headers,
                "x-ai-ratelimit-limit-",
                &budget.suffix,
                value(budget.limit),
            );
            push(
                headers,
                "x-ai-ratelimit-remaining-",
                &budget.suffix,
                value(remaining),
            );
        }
        if rate <= budget.limit {
            return None;
        }
        let mut reset = (budget.window - elapsed).max(1) as f64;
        if self.sliding {
            let over = (rate - budget.limit) / (rate + budget.limit);
            reset = (reset + over.max(0.0) * budget.window as f64).ceil();
        }
        let reset = reset as u64;
        let jitter = if self.jitter_max > 0 {
            (uuid::Uuid::new_v4().as_u128() % u128::from(self.jitter_max + 1)) as u64
        } else {
            0
        };
        let retry = reset + jitter;
        if !self.hide_client_headers {
            push(
                headers,
                "x-ai-ratelimit-reset-",
                &budget.suffix,
                Some(reset.into()),
            );
            push(
                headers,
                "x-ai-ratelimit-retry-after-",
                &budget.suffix,
                Some(retry.into()),
            );
        }
        Some((reset, retry))
    }

    fn refusal(&self, denied: &[&str], headers: Vec<(HeaderName, HeaderValue)>) -> Flow {
        let message = if self.hide_providers {
            self.error_message.clone()
        } else {
            format!("{}{}", self.error_message, denied.join(", "))
        };
        // Kong's `message`, and OpenAI's `error` for the SDKs on an AI route.
        let mut response = json_response(
            self.error_code,
            &serde_json::json!({
                "message": message,
                "error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"},
            }),
        );
        for (name, value) in headers {
            response.headers_mut().insert(name, value);
        }
        Flow::Respond(response)
    }
}

#[async_trait]
impl Plugin for Handler {
    type State = Option<Seen>;

    fn name(&self) -> &'static str {
        "ai-rate-limiting-advanced"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(
        &self,
        request: &mut ProxyRequest,
        ctx: &mut RequestCtx,
        state: &mut Option<Seen>,
    ) -> Flow {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let who = self.who(request, ctx);
        let keys = self.keys(&who, now);
        let counts = self.counts(&keys).await;
        let mut headers = Vec::new();
        let mut denied: Vec<&str> = Vec::new();
        let (mut reset_max, mut retry_max) = (0u64, 0u64);
        for (budget, counts) in self.budgets.iter().zip(counts) {
            if let Some((reset, retry)) = self.judge(budget, counts, now, &mut headers) {
                reset_max = reset_max.max(reset);
                retry_max = retry_max.max(retry);
                if !denied.contains(&budget.provider.as_str()) {
                    denied.push(&budget.provider);
                }
            }
        }
        if !denied.is_empty() {
            // Kong sends these two even with hide_client_headers.
            headers.push((
                HeaderName::from_static("x-ai-ratelimit-reset"),
                reset_max.into(),
            ));
            headers.push((
                HeaderName::from_static("x-ai-ratelimit-retry-after"),
                retry_max.into(),
            ));
            headers.push((http::header::RETRY_AFTER, retry_max.into()));
            return self.refusal(&denied, headers);
        }
        *state = Some(Seen {
            identifier: who,
            headers,
            now,
        });
        Flow::Continue
    }

    fn header_filter(
        &self,
        response: &mut http::response::Parts,
        _ctx: &mut RequestCtx,
        state: &mut Option<Seen>,
    ) {
        if let Some(seen) = state.as_ref() {
            for (name, value) in &seen.headers {
                response.headers.insert(name.clone(), value.clone());
            }
        }
    }

    fn log(&self, ctx: &mut RequestCtx, state: &mut Option<Seen>) {
        let (Some(seen), Some(ai)) = (state.as_ref(), ctx.ai.as_deref()) else {
            return;
        };
        let amount = match self.strategy {
            TokenStrategy::Total => ai.total_tokens as f64,
            TokenStrategy::Prompt => ai.prompt_tokens as f64,
            TokenStrategy::Completion => ai.completion_tokens as f64,
            TokenStrategy::Cost => ai.cost,
        };
        if amount > 0.0 {
            self.add(seen, ai.provider, amount);
        }
    }
}

fn push(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    prefix: &str,
    suffix: &str,
    value: Option<HeaderValue>,
) {
    let (Ok(name), Some(value)) = (
        HeaderName::from_bytes(format!("{prefix}{suffix}").to_ascii_lowercase().as_bytes()),
        value,
    ) else {
        return;
    };
    headers.push((name, value));
}

/// `1000` for whole numbers, `0.25` otherwise (costs).
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}
