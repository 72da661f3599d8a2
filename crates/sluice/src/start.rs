//! `sluice start`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use sluice_admin::{AdminGuard, AdminState, NodeInfo};
use sluice_metrics::Metrics;
use sluice_proxy::{AccessLog, AccessLogTarget, EntityFault, Live, ProxyConfig};
use sluice_store::Store;
use tokio::net::TcpListener;

pub const DEFAULT_DATABASE: &str = "sqlite://sluice.db";

#[derive(Args)]
pub struct StartArgs {
    /// Where entities live: sqlite://PATH (default), postgres://URL, or `off` (DB-less).
    #[arg(long, env = "SLUICE_DATABASE", default_value = DEFAULT_DATABASE)]
    pub database: String,
    /// With `--database off`: the declarative config file to serve.
    #[arg(long, env = "SLUICE_DECLARATIVE_CONFIG")]
    pub declarative_config: Option<std::path::PathBuf>,
    /// Largest declarative config file read (bytes); a bigger one is refused and logged.
    #[arg(long, env = "SLUICE_DECLARATIVE_CONFIG_MAX_SIZE", default_value_t = 256 * 1024 * 1024)]
    pub declarative_config_max_size: u64,
    /// traditional: Admin API and proxy in one process.
    #[arg(long, env = "SLUICE_ROLE", default_value = "traditional")]
    pub role: Role,
    #[arg(long, env = "SLUICE_PROXY_LISTEN", default_value = "0.0.0.0:8000")]
    pub proxy_listen: SocketAddr,
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
    pub admin_listen: SocketAddr,
    /// A browser origin allowed to call the Admin API (`https://gui.example`, or `*`);
    /// repeatable. Without one, every cross-origin browser request is refused.
    #[arg(long, env = "SLUICE_ADMIN_ALLOW_ORIGIN", value_delimiter = ',')]
    pub admin_allow_origin: Vec<String>,
    /// A `Host` (name:port) the Admin API also answers to, besides its own address;
    /// repeatable. Requests naming any other host are refused (DNS rebinding).
    #[arg(long, env = "SLUICE_ADMIN_ALLOW_HOST", value_delimiter = ',')]
    pub admin_allow_host: Vec<String>,
    #[arg(long, env = "SLUICE_CLUSTER_LISTEN", default_value = "0.0.0.0:8005")]
    pub cluster_listen: SocketAddr,
    #[arg(long, env = "SLUICE_CLUSTER_CONTROL_PLANE")]
    pub cluster_control_plane: Option<String>,
    #[arg(long, env = "SLUICE_CLUSTER_CERT")]
    pub cluster_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "SLUICE_CLUSTER_CERT_KEY")]
    pub cluster_cert_key: Option<std::path::PathBuf>,
    /// Where the node keeps runtime files.
    #[arg(long, env = "SLUICE_PREFIX", default_value = ".")]
    pub prefix: std::path::PathBuf,
    #[arg(long, env = "SLUICE_STATUS_LISTEN", default_value = "127.0.0.1:8007")]
    pub status_listen: SocketAddr,
    /// Hybrid mode without TLS (plain TCP between control and data planes). Configs carry
    /// credentials: use only on a trusted network.
    #[arg(long, env = "SLUICE_CLUSTER_INSECURE")]
    pub cluster_insecure: bool,
    /// Seconds a client may pause while sending a request body before it gets 408 (nginx's
    /// `client_body_timeout`).
    #[arg(long, env = "SLUICE_CLIENT_BODY_TIMEOUT", default_value_t = 60)]
    pub client_body_timeout: u64,
    /// Seconds a client has to send a whole request head before it gets 408 (nginx's
    /// `client_header_timeout`).
    #[arg(long, env = "SLUICE_CLIENT_HEADER_TIMEOUT", default_value_t = 60)]
    pub client_header_timeout: u64,
    /// Seconds between a data plane's pings (Kong: 30).
    #[arg(long, env = "SLUICE_CLUSTER_PING_INTERVAL", default_value_t = 30)]
    pub cluster_ping_interval: u64,
    /// Kong's `proxy_access_log`: a file to append one JSON line per proxied request to
    /// (Kong's log serializer fields, with the consumer), `stdout`, or `off` (default).
    #[arg(long, env = "SLUICE_PROXY_ACCESS_LOG", default_value = "off")]
    pub proxy_access_log: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Traditional,
    #[value(name = "control_plane")]
    ControlPlane,
    #[value(name = "data_plane")]
    DataPlane,
}

/// Normalizes `--database` into a sqlx URL (`sluice.db` → `sqlite://sluice.db`); `None` for
/// DB-less mode.
pub fn database_url(database: &str) -> anyhow::Result<Option<String>> {
    if database.starts_with("sqlite:") {
        Ok(Some(database.to_owned()))
    } else if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        bail!("PostgreSQL is not supported yet; use --database sqlite://PATH")
    } else if database == "off" {
        Ok(None)
    } else if database.ends_with(".db") || database.contains('/') {
        Ok(Some(format!("sqlite://{database}")))
    } else {
        bail!("unsupported --database '{database}': use sqlite://PATH or off")
    }
}

pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let mut rx = stop_rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let node_id = uuid::Uuid::new_v4().to_string();
    // Outside every config: a reload never resets a counter.
    let metrics = Arc::new(Metrics::new(node_id.clone(), env!("CARGO_PKG_VERSION")));
    let balancers: Arc<sluice_ai::advanced::Factory> = Arc::default();
    let registry = Arc::new(crate::plugins::registry(metrics.clone(), balancers.clone()));
    let live = Live::new(registry.clone());
    let ai_targets: sluice_admin::AiTargetsFn = Arc::new(move || balancers.status());
    if args.role == Role::DataPlane {
        let shutdown = stopped();
        let observed = crate::hybrid::Observed {
            metrics,
            ai_targets,
        };
        return crate::hybrid::run_data_plane(args, live, observed, node_id, shutdown, stopped)
            .await;
    }
    let schemas =
        Arc::new(crate::plugins::schemas(registry).context("loading the embedded schemas")?);
    let (store, dbless) = match database_url(&args.database)? {
        Some(url) => {
            if args.declarative_config.is_some() {
                bail!("--declarative-config needs --database off (DB-less mode)");
            }
            let store = Store::open(&url)
                .await
                .with_context(|| format!("opening the store at {url}"))?;
            (store, false)
        }
        None => {
            // DB-less: the config lives in a private SQLite file under --prefix, rebuilt from
            // the declarative file at every start (Kong keeps it in LMDB).
            std::fs::create_dir_all(&args.prefix)
                .with_context(|| format!("creating --prefix {}", args.prefix.display()))?;
            let path = args.prefix.join("dbless.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            let store = Store::open(&format!("sqlite://{}", path.display()))
                .await
                .context("creating the DB-less config store")?;
            (store, true)
        }
    };

    if dbless {
        match &args.declarative_config {
            Some(file) => crate::dataplane::follow_file(
                file.clone(),
                store.clone(),
                schemas.clone(),
                args.declarative_config_max_size,
            )
                .await
                .context("loading --declarative-config")?,
            None => tracing::info!("DB-less mode without --declarative-config: serving an empty config until POST /config"),
        }
    }
    let control_plane = args.role == Role::ControlPlane;
    if !control_plane {
        tokio::spawn(crate::dataplane::follow_store(
            store.clone(),
            live.clone(),
            metrics.clone(),
        ));
    }

    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the Admin API on {}", args.admin_listen))?;
    let admin_addr = admin.local_addr()?;
    let node = NodeInfo {
        node_id,
        hostname: hostname(),
        role: if control_plane {
            "control_plane"
        } else {
            "traditional"
        }
        .to_owned(),
        database: if dbless { "off" } else { "sqlite" }.to_owned(),
        admin_listen: admin_addr.to_string(),
        proxy_listen: args.proxy_listen.to_string(),
    };
    let mut state =
        AdminState::new(store.clone(), schemas, node, dbless).with_guard(AdminGuard::for_listener(
            admin_addr,
            args.admin_allow_origin.clone(),
            args.admin_allow_host.clone(),
        ));
    state = state
        .with_metrics(metrics_fn(metrics.clone()))
        .with_ai_targets(ai_targets);
    if !control_plane {
        let live = live.clone();
        state = state.with_proxy_status(Arc::new(move || {
            json!({
                "configuration_version": live.version(),
                "configuration_faults": faults_json(&live.faults()),
            })
        }));
    }

    // A control plane serves data planes instead of proxying.
    let mut cluster_task = None;
    if control_plane {
        let tls = crate::hybrid::tls_files(&args)?;
        let cluster = TcpListener::bind(args.cluster_listen)
            .await
            .with_context(|| format!("binding the cluster listener on {}", args.cluster_listen))?;
        let initial = Arc::new(store.snapshot().await?);
        let (snapshot_tx, snapshot_rx) = tokio::sync::watch::channel(initial);
        tokio::spawn(crate::hybrid::feed_snapshots(store.clone(), snapshot_tx));
        let registry = sluice_cluster::Registry::default();
        state = state.with_data_planes(crate::hybrid::data_planes_fn(
            registry.clone(),
            snapshot_rx.clone(),
        ));
        tracing::info!(cluster = %cluster.local_addr()?, tls = tls.is_some(), "cluster listener started");
        cluster_task = Some(tokio::spawn(sluice_cluster::serve_control_plane(
            cluster,
            tls,
            snapshot_rx,
            registry,
            stopped(),
        )));
    }
    let app = sluice_admin::router(state);
    let admin_server = axum::serve(admin, app).with_graceful_shutdown(stopped());
    if control_plane {
        tracing::info!(admin = %admin_addr, database = %args.database, "sluice control plane started");
        admin_server.await.context("serving the Admin API")?;
        if let Some(task) = cluster_task {
            let _ = task.await;
        }
    } else {
        let proxy = TcpListener::bind(args.proxy_listen)
            .await
            .with_context(|| format!("binding the proxy on {}", args.proxy_listen))?;
        tracing::info!(
            admin = %admin_addr,
            proxy = %proxy.local_addr()?,
            database = %args.database,
            version = store.version(),
            "sluice started"
        );
        let proxy_server = sluice_proxy::serve(proxy, live, proxy_config(&args)?, stopped());
        let (admin_result, proxy_result) = tokio::join!(admin_server, proxy_server);
        admin_result.context("serving the Admin API")?;
        proxy_result.context("serving the proxy")?;
    }
    store.close().await;
    tracing::info!("sluice stopped");
    Ok(())
}

/// `GET /metrics` for the Admin API and the status listener.
pub fn metrics_fn(metrics: Arc<Metrics>) -> sluice_admin::MetricsFn {
    Arc::new(move |reachable| (sluice_metrics::CONTENT_TYPE, metrics.render(reachable)))
}

/// The proxy listener's settings from the command line.
pub fn proxy_config(args: &StartArgs) -> anyhow::Result<ProxyConfig> {
    let access_log = match args.proxy_access_log.as_str() {
        "off" | "" => None,
        "stdout" => Some(AccessLogTarget::Stdout),
        path => Some(AccessLogTarget::File(path.into())),
    };
    let access_log = access_log
        .map(|target| {
            AccessLog::open(&target)
                .with_context(|| format!("opening --proxy-access-log {}", args.proxy_access_log))
        })
        .transpose()?;
    Ok(ProxyConfig {
        client_body_timeout: std::time::Duration::from_secs(args.client_body_timeout.max(1)),
        client_header_timeout: std::time::Duration::from_secs(args.client_header_timeout.max(1)),
        access_log,
        ..ProxyConfig::default()
    })
}

/// The entities of a served config that did not compile, for `/status`.
pub fn faults_json(faults: &[EntityFault]) -> Value {
    Value::Array(
        faults
            .iter()
            .map(|f| json!({"entity": f.entity.singular(), "id": f.id, "message": f.message}))
            .collect(),
    )
}

/// Resolves on SIGINT or SIGTERM; in-flight requests then finish before the process exits.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
