//! The proxy access log (Kong's `proxy_access_log`): one JSON line per request, in the shape
//! of Kong's log serializer (see [`sluice_plugin::log_serializer`]), with the authenticated
//! consumer.
//!
//! Workers never write to the file, and do not hand over lines one by one either (a first
//! version did: waking the writer thread and a `write` per request cost half again the
//! proxy's CPU per request). Each worker appends to its own buffer ([`WorkerLog`]), handed to
//! the one writer thread when it reaches [`BATCH`] bytes or every [`FLUSH_EVERY`], like nginx's
//! `access_log ... buffer= flush=`. When the writer falls behind (a slow disk), batches are
//! dropped and counted rather than letting the proxy wait on I/O.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use sluice_plugin::log_serializer::{self, Record};
use sluice_plugin::RequestCtx;

/// Batches waiting for the writer before new ones are dropped.
const QUEUE: usize = 256;
/// A worker's buffer is handed over once it holds this much.
const BATCH: usize = 64 * 1024;
/// ... or at the latest this long after its first line.
pub(crate) const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(std::path::PathBuf),
}

/// A handle on the access log writer. Cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    lines: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// Opens the target (a file is created 0600 and appended to) and starts the writer.
    pub fn open(target: &AccessLogTarget) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(open_file(path)?),
        };
        let (lines, receiver) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sluice-access-log".to_owned())
            .spawn(move || write_lines(receiver, std::io::BufWriter::new(out)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                lines,
                dropped: AtomicU64::new(0),
            }),
        })
    }

    /// A buffer for one worker.
    pub(crate) fn for_worker(&self) -> WorkerLog {
        WorkerLog {
            log: self.clone(),
            buffer: Mutex::new(Vec::new()),
        }
    }

    fn send(&self, batch: Vec<u8>) {
        match self.inner.lines.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Once per power of two: visible without flooding the log.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped,
                        "access log writer is behind; batches of lines dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// One worker's access log buffer. Only its own worker thread touches it, so the lock is
/// never contended (it is there because hyper's tasks must be `Send`).
pub(crate) struct WorkerLog {
    log: AccessLog,
    buffer: Mutex<Vec<u8>>,
}

// === impl WorkerLog ===

impl WorkerLog {
    /// Logs a request that ran the pipeline.
    pub(crate) fn request(&self, ctx: &RequestCtx) {
        self.append(&log_serializer::serialize(ctx));
    }

    /// Logs a request answered before any route took it (404, 400, a redirect).
    pub(crate) fn unrouted(&self, record: &Record<'_>) {
        self.append(record);
    }

    fn append(&self, record: &Record<'_>) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.capacity() == 0 {
            buffer.reserve(BATCH + 1024);
        }
        let start = buffer.len();
        if serde_json::to_writer(&mut *buffer, record).is_err() {
            buffer.truncate(start);
            return;
        }
        buffer.push(b'\n');
        if buffer.len() >= BATCH {
            let batch = std::mem::take(&mut *buffer);
            drop(buffer);
            self.log.send(batch);
        }
    }

    /// Hands what is buffered to the writer (the worker's timer, and at shutdown).
    pub(crate) fn flush(&self) {
        let batch = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            if buffer.is_empty() {
                return;
            }
            std::mem::take(&mut *buffer)
        };
        self.log.send(batch);
    }
}

fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // 0600: a log names consumers and paths; it is not for every local user to read.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn write_lines(receiver: Receiver<Vec<u8>>, mut out: impl Write) {
    let mut failing = false;
    while let Ok(line) = receiver.recv() {
        let mut result = out.write_all(&line);
        while let Ok(line) = receiver.try_recv() {
            result = result.and_then(|()| out.write_all(&line));
        }
        let result = result.and_then(|()| out.flush());
        // Said once when writing starts failing (a full disk), not once per line.
        match result {
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "access log write failed");
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
    }
    let _ = out.flush();
}
