//! Hybrid mode: `--role control_plane` (Admin API + cluster listener, no proxy) and
//! `--role data_plane` (proxy only, config pushed by the control plane, cached locally).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sluice_cluster::{DataPlaneOptions, Registry, TlsFiles};
use sluice_metrics::Metrics;
use sluice_model::Snapshot;
use sluice_proxy::Live;
use sluice_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::start::StartArgs;

/// The cluster TLS files, or None with `--cluster-insecure`; refuses to guess.
pub fn tls_files(args: &StartArgs) -> anyhow::Result<Option<TlsFiles>> {
    match (
        &args.cluster_cert,
        &args.cluster_cert_key,
        args.cluster_insecure,
    ) {
        (Some(cert), Some(key), _) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })),
        (None, None, true) => Ok(None),
        _ => bail!(
            "hybrid mode needs --cluster-cert and --cluster-cert-key (make them with \
             `sluice cluster gen-cert`), or --cluster-insecure for plain TCP"
        ),
    }
}

/// Feeds the cluster listener: the newest snapshot, read after every config change.
pub async fn feed_snapshots(store: Store, tx: watch::Sender<Arc<Snapshot>>) {
    let mut versions = store.subscribe();
    loop {
        match store.snapshot().await {
            Ok(snapshot) => {
                let _ = tx.send(Arc::new(snapshot));
            }
            Err(error) => tracing::error!(%error, "reading the config for data planes failed"),
        }
        if versions.changed().await.is_err() {
            return;
        }
        versions.borrow_and_update();
    }
}

/// `GET /clustering/data-planes` rows, with whether each serves the current config.
pub fn data_planes_fn(
    registry: Registry,
    snapshots: watch::Receiver<Arc<Snapshot>>,
) -> sluice_admin::DataPlanesFn {
    Arc::new(move || {
        let current = sluice_cluster::config_hash(&snapshots.borrow());
        let rows: Vec<serde_json::Value> = registry
            .list()
            .into_iter()
            .map(|dp| {
                let in_sync = dp.config_hash == current;
                let mut row = serde_json::to_value(&dp).unwrap_or_default();
                row["in_sync"] = json!(in_sync);
                row
            })
            .collect();
        json!(rows)
    })
}

/// What a data plane's status listener shows besides `/status`.
pub struct Observed {
    pub metrics: Arc<Metrics>,
    pub ai_targets: sluice_admin::AiTargetsFn,
}

/// A data plane: proxy, status endpoint, and the cluster client.
pub async fn run_data_plane(
    args: StartArgs,
    live: Live,
    observed: Observed,
    node_id: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    stopped: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let Some(control_plane) = args.cluster_control_plane.clone() else {
        bail!("--role data_plane needs --cluster-control-plane HOST:PORT");
    };
    let tls = tls_files(&args)?;
    std::fs::create_dir_all(&args.prefix)
        .with_context(|| format!("creating --prefix {}", args.prefix.display()))?;
    let Observed {
        metrics,
        ai_targets,
    } = observed;
    let connected: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let options = DataPlaneOptions {
        control_plane,
        tls,
        cache_path: args.prefix.join("config.cache"),
        node_id,
        ping_interval: Duration::from_secs(args.cluster_ping_interval.max(1)),
        connected: connected.clone(),
    };
    let applier = live.clone();
    let reload_metrics = metrics.clone();
    // The last config this node refused, and why, for its /status.
    let refused: Arc<std::sync::Mutex<Option<Value>>> = Arc::default();
    let refusals = refused.clone();
    let apply = move |snapshot: &Snapshot| -> Result<(), sluice_cluster::ApplyError> {
        let started = std::time::Instant::now();
        let outcome = applier.apply(snapshot);
        reload_metrics.observe_reload(started.elapsed());
        reload_metrics.set_config_version(applier.version());
        let mut last_refused = refusals.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(faults) => {
                *last_refused = None;
                tracing::info!(
                    version = snapshot.version,
                    faults = faults.len(),
                    "data plane applied a config from the control plane"
                );
                Ok(())
            }
            Err(error) => {
                *last_refused =
                    Some(json!({"version": snapshot.version, "reason": error.to_string()}));
                Err(error.into())
            }
        }
    };
    let cluster = tokio::spawn(sluice_cluster::run_data_plane(options, apply, shutdown));

    let proxy = TcpListener::bind(args.proxy_listen)
        .await
        .with_context(|| format!("binding the proxy on {}", args.proxy_listen))?;
    let status = TcpListener::bind(args.status_listen)
        .await
        .with_context(|| format!("binding the status listener on {}", args.status_listen))?;
    tracing::info!(
        proxy = %proxy.local_addr()?,
        status = %status.local_addr()?,
        "sluice data plane started"
    );
    let status_live = live.clone();
    let status_app = axum::Router::new().route(
        "/status",
        axum::routing::get(move || {
            let live = status_live.clone();
            let refused = refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
            async move {
                axum::Json(json!({
                    "role": "data_plane",
                    "configuration_version": live.version(),
                    "routes": live.routes(),
                    "configuration_faults": crate::start::faults_json(&live.faults()),
                    "refused_configuration": refused,
                }))
            }
        }),
    );
    let render = crate::start::metrics_fn(metrics.clone());
    let status_app = status_app.route(
        "/metrics",
        axum::routing::get(move || {
            metrics
                .set_control_plane_connected(connected.load(std::sync::atomic::Ordering::Relaxed));
            let (content_type, body) = render(None);
            std::future::ready(([(axum::http::header::CONTENT_TYPE, content_type)], body))
        }),
    );
    let status_app = status_app.route(
        "/ai/targets",
        axum::routing::get(move || std::future::ready(axum::Json(ai_targets()))),
    );
    let status_server = axum::serve(status, status_app).with_graceful_shutdown(stopped());
    let proxy_server =
        sluice_proxy::serve(proxy, live, crate::start::proxy_config(&args)?, stopped());
    let (status_result, proxy_result) = tokio::join!(status_server, proxy_server);
    status_result.context("serving the status endpoint")?;
    proxy_result.context("serving the proxy")?;
    match cluster.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error).context("the cluster connection failed"),
        Err(error) => Err(error).context("the cluster task failed"),
    }
}
