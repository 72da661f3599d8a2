//! Counters shared through Redis, for rate-limiting's `redis` policy and
//! ai-rate-limiting-advanced's `redis` strategy.
//!
//! Every Redis call runs on one dedicated thread with its own runtime (`sluice-redis`), which
//! owns the connections: a proxy worker only awaits the answer, with the block's `timeout`,
//! and a Redis that hangs costs it that timeout at most, never a stuck worker. One
//! connection per Redis target (`redis::aio::ConnectionManager`: multiplexed, so the commands
//! of every worker share it and pipelines from several requests interleave, and reconnecting
//! by itself), shared by every plugin instance that names the same target and kept across
//! config reloads. A pool of connections would add nothing for pipelined, multiplexed
//! commands; the "pool" is this shared, reconnecting handle.
//!
//! Two ways to count, as Kong's `sync_rate` chooses:
//! - [`RedisTarget::add_and_get`]: one pipelined round trip that adds to every window's key
//!   and reads the totals back (`sync_rate: -1`, Kong's default: exact across nodes).
//! - [`Batched`]: counts locally and pushes the deltas every `sync_rate` seconds in one
//!   pipeline, reading the other nodes' totals back (no round trip on the request path).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sluice_plugin::PluginBuildError;

/// Kong's `redis` record (kong/tools/redis/schema.lua, Kong 3.10), with the fields of the
/// enterprise block that ai-rate-limiting-advanced adds (`connect_timeout`, `read_timeout`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RedisConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: Option<i64>,
    pub timeout: Option<u64>,
    pub connect_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub ssl: Option<bool>,
    pub ssl_verify: Option<bool>,
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the redis thread is gone")]
    Gone,
    #[error("redis failed less than {0:?} ago; not retried yet")]
    Resting(Duration),
}

/// After a failure, calls fail at once for this long before Redis is tried again: during an
/// outage a request costs no timeout, only the first one after each pause does.
const REST: Duration = Duration::from_secs(1);

/// One Redis server (and database) as the plugins reach it.
pub struct RedisTarget {
    /// `host:port/db`, for logs: never the password.
    pub name: String,
    client: redis::Client,
    timeout: Duration,
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    /// Set when a call failed: until then, calls fail without trying.
    resting_until: Mutex<Option<Instant>>,
    /// The last call failed: the plugins count locally, and the change is logged once here,
    /// for every plugin that shares the target.
    failing: std::sync::atomic::AtomicBool,
}

/// The process's Redis targets, by connection settings.
#[derive(Default)]
pub struct RedisHub {
    targets: Mutex<HashMap<String, Arc<RedisTarget>>>,
}

// === impl RedisHub ===

impl RedisHub {
    /// The target for `config` (`field` names the block in errors, e.g. `redis`), created on
    /// first use and shared after.
    pub fn target(
        &self,
        plugin: &sluice_model::Plugin,
        field: &str,
        config: &RedisConfig,
    ) -> Result<Arc<RedisTarget>, PluginBuildError> {
        let Some(host) = config.host.as_deref().filter(|h| !h.is_empty()) else {
            return Err(PluginBuildError::at(
                plugin,
                &format!("{field}.host"),
                "required field missing",
            ));
        };
        let port = config.port.unwrap_or(6379);
        let database = config.database.unwrap_or(0);
        let tls = config.ssl.unwrap_or(false);
        // The TLS name is the host's (the client has no separate SNI setting, so
        // `server_name` is accepted and not used).
        let info = redis::ConnectionInfo {
            addr: if tls {
                redis::ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: !config.ssl_verify.unwrap_or(false),
                    tls_params: None,
                }
            } else {
                redis::ConnectionAddr::Tcp(host.to_owned(), port)
            },
            redis: redis::RedisConnectionInfo {
                db: database,
                username: config.username.clone().filter(|u| !u.is_empty()),
                password: config.password.clone().filter(|p| !p.is_empty()),
                ..Default::default()
            },
        };
        let timeout = Duration::from_millis(
            config
                .read_timeout
                .or(config.timeout)
                .unwrap_or(2000)
                .max(1),
        );
        let key = format!(
            "{host}:{port}/{database} tls={tls} user={:?} pass={} timeout={timeout:?}",
            config.username,
            config.password.as_deref().map_or(0, str::len),
        );
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = targets.get(&key) {
            if target.client.get_connection_info().redis.password == info.redis.password {
                return Ok(target.clone());
            }
        }
        let client = redis::Client::open(info).map_err(|e| {
            PluginBuildError::at(plugin, field, format!("invalid redis settings: {e}"))
        })?;
        let target = Arc::new(RedisTarget {
            name: format!("{host}:{port}/{database}"),
            client,
            timeout,
            connection: tokio::sync::OnceCell::new(),
            resting_until: Mutex::new(None),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        targets.insert(key, target.clone());
        Ok(target)
    }
}

// === impl RedisTarget ===

impl RedisTarget {
    /// Adds each `(key, amount, ttl seconds)` and returns the new totals, in one pipeline
    /// (`INCRBYFLOAT` then `EXPIRE ... NX`, so a key lives one ttl from its first write).
    pub async fn add_and_get(&self, ops: Vec<(String, f64, u64)>) -> Result<Vec<f64>, RedisError> {
        let mut pipe = redis::pipe();
        for (key, amount, ttl) in &ops {
            pipe.cmd("INCRBYFLOAT").arg(key).arg(*amount);
            pipe.cmd("EXPIRE").arg(key).arg(*ttl).arg("NX").ignore();
        }
        let totals: Vec<String> = self.run(pipe).await?;
        Ok(totals.iter().map(|t| t.parse().unwrap_or(0.0)).collect())
    }

    /// The current totals of `keys` (0 for a key that does not exist).
    pub async fn get(&self, keys: Vec<String>) -> Result<Vec<f64>, RedisError> {
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("GET").arg(key);
        }
        let values: Vec<Option<String>> = self.run(pipe).await?;
        Ok(values
            .iter()
            .map(|v| v.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0.0))
            .collect())
    }

    /// Runs `pipe` on the Redis thread, waiting at most the target's timeout; right after a
    /// failure, fails at once (see [`REST`]).
    async fn run<T: redis::FromRedisValue + Send + 'static>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, RedisError> {
        if let Some(until) = *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) {
            if Instant::now() < until {
                return Err(RedisError::Resting(REST));
            }
        }
        let result = self.try_run(pipe).await;
        *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) =
            result.is_err().then(|| Instant::now() + REST);
        let was_failing = self
            .failing
            .swap(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        match (&result, was_failing) {
            (Err(error), false) => tracing::error!(
                redis = %self.name,
                %error,
                "failed to get usage from redis; counting locally until it answers \
                 (rate-limiting without fault_tolerant refuses instead)"
            ),
            (Ok(_), true) => tracing::info!(redis = %self.name, "redis answers again"),
            _ => {}
        }
        result
    }

    /// Whether the last call failed (the plugins then count locally).
    pub fn failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn try_run<T: redis::FromRedisValue + Send + 'static>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, RedisError> {
        let connection = tokio::time::timeout(self.timeout, self.connection())
            .await
            .map_err(|_| RedisError::Timeout(self.timeout))??;
        let task = runtime().spawn(async move {
            let mut connection = connection;
            pipe.query_async::<T>(&mut connection).await
        });
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(RedisError::Timeout(self.timeout)),
            Ok(Err(_)) => Err(RedisError::Gone),
            Ok(Ok(result)) => Ok(result?),
        }
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, RedisError> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let client = self.client.clone();
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1);
                runtime()
                    .spawn(async move { client.get_connection_manager_with_config(config).await })
                    .await
                    .map_err(|_| RedisError::Gone)?
                    .map_err(RedisError::Redis)
            })
            .await?;
        Ok(connection.clone())
    }
}

/// Runs `task` on the Redis thread without waiting for it (writes after the answer).
pub fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    runtime().spawn(task);
}

/// The runtime of the Redis thread, started on first use.
fn runtime() -> &'static tokio::runtime::Handle {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sluice-redis".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the redis runtime starts");
                let _ = tx.send(runtime.handle().clone());
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the redis thread starts");
        rx.recv().expect("the redis runtime handle")
    })
}

/// Counters kept locally and pushed to Redis every `sync_rate`: what a request adds is
/// local until the next sync, which adds every delta in one pipeline and reads back the
/// totals all nodes made. A failed sync keeps the deltas for the next one (Kong drops them).
pub struct Batched {
    target: Arc<RedisTarget>,
    entries: Mutex<HashMap<String, Entry>>,
    every: Duration,
    /// The sync task starts with the first count (a handler built to check a config
    /// starts nothing).
    started: std::sync::Once,
}

struct Entry {
    /// The total Redis had at the last sync.
    synced: f64,
    /// Added here since.
    delta: f64,
    ttl: u64,
    /// When the key's window is over and the entry can go.
    expires: Instant,
}

// === impl Batched ===

impl Batched {
    /// Counters synced every `every`, once something is counted.
    pub fn start(target: Arc<RedisTarget>, every: Duration) -> Arc<Self> {
        Arc::new(Self {
            target,
            entries: Mutex::default(),
            every,
            started: std::sync::Once::new(),
        })
    }

    fn ensure_syncing(self: &Arc<Self>) {
        self.started.call_once(|| self.spawn_sync());
    }

    fn spawn_sync(self: &Arc<Self>) {
        let every = self.every;
        let weak = Arc::downgrade(self);
        runtime().spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(20)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(batched) = weak.upgrade() else {
                    return;
                };
                // A failure keeps the deltas for the next sync; the target logs it.
                let _ = batched.sync().await;
            }
        });
    }

    /// The total of `key`: Redis's at the last sync plus what this node added since.
    pub fn get(&self, key: &str) -> f64 {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).map_or(0.0, |e| e.synced + e.delta)
    }

    /// Adds `amount` to `key` (a window of `ttl` seconds), locally.
    pub fn add(self: &Arc<Self>, key: &str, amount: f64, ttl: u64) {
        self.ensure_syncing();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(key) {
            Some(entry) => entry.delta += amount,
            None => {
                entries.insert(
                    key.to_owned(),
                    Entry {
                        synced: 0.0,
                        delta: amount,
                        ttl,
                        expires: Instant::now() + Duration::from_secs(ttl),
                    },
                );
            }
        }
    }

    /// Makes `key` known so the next sync reads its total (a window this node has not
    /// written to yet).
    pub fn watch(self: &Arc<Self>, key: &str, ttl: u64) {
        self.add(key, 0.0, ttl);
    }

    async fn sync(&self) -> Result<(), RedisError> {
        let ops: Vec<(String, f64, u64)> = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            entries.retain(|_, e| e.expires > now || e.delta != 0.0);
            entries
                .iter()
                .map(|(key, e)| (key.clone(), e.delta, e.ttl))
                .collect()
        };
        if ops.is_empty() {
            return Ok(());
        }
        let totals = self.target.add_and_get(ops.clone()).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for ((key, sent, _), total) in ops.iter().zip(totals) {
            if let Some(entry) = entries.get_mut(key) {
                entry.synced = total;
                entry.delta -= sent;
            }
        }
        Ok(())
    }
}
