//! Feeding the data plane: follow the store's config version and compile each new snapshot
//! off the request path; in DB-less mode, also watch the declarative file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sluice_metrics::Metrics;
use sluice_model::Schemas;
use sluice_proxy::Live;
use sluice_store::Store;
use tokio::sync::mpsc;

/// Compiles the store's snapshot every time its config version changes. Changes that arrive
/// while a compile runs are coalesced into one (the watch channel keeps only the newest).
pub async fn follow_store(store: Store, live: Live, metrics: Arc<Metrics>) {
    let mut versions = store.subscribe();
    loop {
        let wanted = *versions.borrow_and_update();
        if wanted != live.version() || live.version() == 0 {
            let started = std::time::Instant::now();
            apply_latest(&store, &live).await;
            metrics.observe_reload(started.elapsed());
            metrics.set_config_version(live.version());
        }
        if versions.changed().await.is_err() {
            return; // the store closed: the process is shutting down
        }
    }
}

async fn apply_latest(store: &Store, live: &Live) {
    let started = std::time::Instant::now();
    let snapshot = match store.snapshot().await {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::error!(%error, "reading the config snapshot failed; keeping the current config");
            return;
        }
    };
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let live = live.clone();
    let version = snapshot.version;
    let routes = snapshot.entities.routes.len();
    // Compiling 100k routes is CPU work; keep it off the async workers serving requests.
    let result = tokio::task::spawn_blocking(move || live.apply(&snapshot)).await;
    match result {
        Ok(Ok(faults)) => tracing::debug!(
            version,
            routes,
            faults = faults.len(),
            read_ms,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "data plane config swapped"
        ),
        Ok(Err(error)) => tracing::error!(
            version,
            %error,
            "config rejected by the data plane; the previous config keeps serving"
        ),
        Err(error) => tracing::error!(%error, "config compile task failed"),
    }
}

/// Loads `file` into the store now, then again whenever it changes. Editors that save by
/// writing a new file and renaming it over the old one are handled by watching the directory.
/// A broken file is logged with its location and the previous config keeps serving.
pub async fn follow_file(
    file: PathBuf,
    store: Store,
    schemas: Arc<Schemas>,
    max_bytes: u64,
) -> anyhow::Result<()> {
    load_file(&file, &store, &schemas, max_bytes).await?;
    let directory = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let file_name = file.file_name().map(ToOwned::to_owned);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            // Only changes count: notify also reports opens and reads of the file (our own
            // reload reads it), which would make every reload trigger the next one.
            let changed = matches!(
                event.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Remove(_)
            );
            if changed
                && event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(ToOwned::to_owned) == file_name)
            {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let _watcher = watcher; // dropped (and unwatched) when this task ends
        let mut last = read_config(&file, max_bytes).await.ok();
        while rx.recv().await.is_some() {
            // Debounce: an editor's save is several events (truncate, write, rename).
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            let current = read_config(&file, max_bytes).await.ok();
            if current.is_some() && current == last {
                continue; // touched but not changed: nothing to reload
            }
            last = current;
            if let Err(error) = load_file(&file, &store, &schemas, max_bytes).await {
                tracing::error!("{error:#}");
            }
        }
    });
    Ok(())
}

async fn load_file(
    file: &Path,
    store: &Store,
    schemas: &Schemas,
    max_bytes: u64,
) -> anyhow::Result<()> {
    let text = match read_config(file, max_bytes).await {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => anyhow::bail!(
                "declarative config {} is not UTF-8 text; keeping the previous config",
                file.display()
            ),
        },
        Err(error) => anyhow::bail!(
            "reading declarative config {}: {error}; keeping the previous config",
            file.display()
        ),
    };
    let name = file.display().to_string();
    match sluice_admin::dbless::load(store, schemas, &name, &text).await {
        Ok(version) => {
            tracing::info!(file = %name, version, "declarative config loaded");
            Ok(())
        }
        Err(error) => anyhow::bail!("{error}; keeping the previous config"),
    }
}

/// Why a declarative config file was not read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// A device, FIFO, socket or directory (a symlink to `/dev/zero` would never end; opening a
    /// FIFO blocks until a writer comes, which would hold reloads and shutdown hostage).
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than the {max} byte limit (--declarative-config-max-size)")]
    TooLarge { max: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads a declarative config: a regular file only, at most `max_bytes` (also if it grows
/// while being read). The metadata check follows symlinks, so a link to a device is refused
/// before it is opened.
async fn read_config(file: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    use tokio::io::AsyncReadExt;
    let metadata = tokio::fs::metadata(file).await?;
    if !metadata.is_file() {
        return Err(ReadError::NotRegular);
    }
    if metadata.len() > max_bytes {
        return Err(ReadError::TooLarge { max: max_bytes });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    tokio::fs::File::open(file)
        .await?
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge { max: max_bytes });
    }
    Ok(bytes)
}
