//! `file-log` (Kong 3.10, priority 9): Kong's log record of each request, one JSON line,
//! appended to `path`.
//!
//! Kong writes in the log phase on the worker. Here the worker only hands the line to one
//! writer thread per file (shared by every instance with the same path and surviving
//! reloads), so a slow disk never holds a proxy worker; when the writer is behind, lines are
//! dropped and counted (`sluice_log_entries_dropped_total{plugin="file-log"}`). With
//! `reopen: true` the file is opened again for every batch it writes (Kong: every line),
//! which is what log rotation needs. A path whose directory does not exist is refused when
//! the config is written (Kong only logs an error at request time).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sluice_metrics::Metrics;
use sluice_plugin::{erase, typed_config, PluginBuildError, PluginFactory, PluginHandler};

use crate::log_capture::{refuse_lua, LogPlugin, Sink};

const PRIORITY: i64 = 9;
/// Lines waiting for a file's writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
struct Config {
    path: String,
    reopen: Option<bool>,
    custom_fields_by_lua: Option<serde_json::Map<String, serde_json::Value>>,
}

pub struct Factory {
    metrics: Arc<Metrics>,
    writers: Mutex<HashMap<(PathBuf, bool), Arc<FileWriter>>>,
}

struct Handler {
    writer: Arc<FileWriter>,
    metrics: Arc<Metrics>,
}

/// The writer thread of one file, started with the first line (a handler built to check a
/// config starts nothing).
struct FileWriter {
    lines: SyncSender<Vec<u8>>,
    pending: Mutex<Option<Unstarted>>,
}

/// What the writer thread needs: the file, `reopen`, and the receiving end of the lines.
type Unstarted = (PathBuf, bool, Receiver<Vec<u8>>);

// === impl Factory ===

impl Factory {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            writers: Mutex::default(),
        }
    }
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "file-log"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        refuse_lua(plugin, &config.custom_fields_by_lua)?;
        let path = PathBuf::from(&config.path);
        let directory = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !directory.is_dir() {
            return Err(PluginBuildError::at(
                plugin,
                "path",
                format!("directory '{}' does not exist", directory.display()),
            ));
        }
        if path.is_dir() {
            return Err(PluginBuildError::at(
                plugin,
                "path",
                format!("'{}' is a directory", path.display()),
            ));
        }
        let reopen = config.reopen.unwrap_or(false);
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let writer = match writers.get(&(path.clone(), reopen)) {
            Some(writer) => writer.clone(),
            None => {
                let writer = Arc::new(FileWriter::new(path.clone(), reopen));
                writers.insert((path, reopen), writer.clone());
                writer
            }
        };
        Ok(erase(LogPlugin(Handler {
            writer,
            metrics: self.metrics.clone(),
        })))
    }
}

// === impl Handler ===

impl Sink for Handler {
    const NAME: &'static str = "file-log";
    const PRIORITY: i64 = PRIORITY;

    fn ship(&self, record: Vec<u8>) {
        let mut line = record;
        line.push(b'\n');
        self.writer.start();
        match self.writer.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.count_dropped_logs("file-log", 1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

// === impl FileWriter ===

impl FileWriter {
    fn new(path: PathBuf, reopen: bool) -> Self {
        let (lines, receiver) = sync_channel(QUEUE);
        Self {
            lines,
            pending: Mutex::new(Some((path, reopen, receiver))),
        }
    }

    fn start(&self) {
        let Some((path, reopen, receiver)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("sluice-file-log".to_owned())
            .spawn(move || write_lines(&path, reopen, receiver));
        if let Err(error) = spawned {
            tracing::error!(%error, "file-log: cannot start the writer thread");
        }
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // 0600 where Kong uses 0644: a record has the request's headers, which can carry
    // credentials. A file created beforehand keeps its own mode.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn write_lines(path: &Path, reopen: bool, receiver: Receiver<Vec<u8>>) {
    let mut file: Option<std::fs::File> = None;
    let mut failing = false;
    while let Ok(first) = receiver.recv() {
        let mut batch = first;
        while let Ok(line) = receiver.try_recv() {
            batch.extend_from_slice(&line);
        }
        if reopen || file.is_none() {
            file = match open(path) {
                Ok(opened) => Some(opened),
                Err(error) => {
                    if !failing {
                        tracing_error(path, &error);
                    }
                    failing = true;
                    None
                }
            };
        }
        if let Some(out) = file.as_mut() {
            match out.write_all(&batch) {
                Ok(()) => failing = false,
                Err(error) => {
                    if !failing {
                        tracing_error(path, &error);
                    }
                    failing = true;
                    file = None;
                }
            }
        }
    }
}

/// Kong's message, once when writing starts failing (not once per line).
fn tracing_error(path: &Path, error: &std::io::Error) {
    tracing::error!(path = %path.display(), "[file-log] failed to open the file: {error}");
}
