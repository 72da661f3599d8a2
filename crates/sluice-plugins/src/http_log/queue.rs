//! Kong's log queue (kong/tools/queue.lua), for http-log: entries wait in a bounded queue;
//! one sender thread takes up to `max_batch_size` of them (waiting at most
//! `max_coalescing_delay` for a batch to fill), sends, and retries a failed batch with
//! exponential backoff until `max_retry_time`, after which the batch is dropped. A full queue
//! drops its oldest entry for each new one. Every drop is counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_metrics::Metrics;
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub max_batch_size: usize,
    pub max_coalescing_delay: Duration,
    pub max_entries: usize,
    pub max_bytes: Option<usize>,
    pub max_retry_time: Duration,
    pub initial_retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Kong's `concurrency_limit: -1`: batches are sent without waiting for the previous one.
    pub concurrent: bool,
}

/// Where and how a batch is sent.
#[derive(Debug, Clone)]
pub struct Sender {
    pub url: reqwest::Url,
    pub method: http::Method,
    pub content_type: String,
    pub headers: http::HeaderMap,
    pub timeout: Duration,
    pub keepalive: Duration,
}

pub struct Queue {
    config: QueueConfig,
    entries: Mutex<Entries>,
    ready: Notify,
    metrics: Arc<Metrics>,
    /// Until the first record: a queue built to check a config starts no thread.
    sender: Mutex<Option<Sender>>,
}

#[derive(Default)]
struct Entries {
    queued: VecDeque<Vec<u8>>,
    bytes: usize,
}

// === impl Queue ===

impl Queue {
    /// The queue; its sender thread starts with the first record.
    pub fn new(config: QueueConfig, sender: Sender, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            config,
            entries: Mutex::default(),
            ready: Notify::new(),
            metrics,
            sender: Mutex::new(Some(sender)),
        })
    }

    fn start_sender(self: &Arc<Self>) {
        let Some(sender) = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let runner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-http-log".to_owned())
            .spawn(move || {
                let client = reqwest::Client::builder()
                    .timeout(sender.timeout)
                    .pool_idle_timeout(sender.keepalive)
                    .build();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match (client, runtime) {
                    (Ok(client), Ok(runtime)) => {
                        runtime.block_on(runner.run(client, Arc::new(sender)));
                    }
                    _ => tracing::error!("http-log: cannot start the sender"),
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "http-log: cannot start the sender thread");
        }
    }

    /// Appends one record (from the log phase: never waits).
    pub fn push(self: &Arc<Self>, entry: Vec<u8>) {
        self.start_sender();
        let mut dropped = 0;
        {
            let mut entries = self.lock();
            if let Some(limit) = self.config.max_bytes {
                if entry.len() > limit {
                    drop(entries);
                    tracing::error!(
                        size = entry.len(),
                        max_bytes = limit,
                        "http-log: an entry is longer than the queue's max_bytes; dropped"
                    );
                    self.metrics.count_dropped_logs("http-log", 1);
                    return;
                }
                while entries.bytes + entry.len() > limit {
                    let Some(old) = entries.queued.pop_front() else {
                        break;
                    };
                    entries.bytes -= old.len();
                    dropped += 1;
                }
            }
            while entries.queued.len() >= self.config.max_entries {
                let Some(old) = entries.queued.pop_front() else {
                    break;
                };
                entries.bytes -= old.len();
                dropped += 1;
            }
            entries.bytes += entry.len();
            entries.queued.push_back(entry);
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "http-log: queue full, dropping old entries until processing is successful again"
            );
            self.metrics.count_dropped_logs("http-log", dropped);
        }
        self.ready.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, at_most: usize) -> Vec<Vec<u8>> {
        let mut entries = self.lock();
        let count = at_most.min(entries.queued.len());
        let batch: Vec<Vec<u8>> = entries.queued.drain(..count).collect();
        entries.bytes -= batch.iter().map(Vec::len).sum::<usize>();
        batch
    }

    fn len(&self) -> usize {
        self.lock().queued.len()
    }

    /// The sender: forever take a batch, send it (with retries).
    async fn run(self: Arc<Self>, client: reqwest::Client, sender: Arc<Sender>) {
        loop {
            if self.len() == 0 {
                self.ready.notified().await;
                continue;
            }
            // Coalesce: wait for the batch to fill, at most max_coalescing_delay.
            let deadline = Instant::now() + self.config.max_coalescing_delay;
            while self.len() < self.config.max_batch_size && Instant::now() < deadline {
                let wait = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(wait, self.ready.notified()).await;
            }
            let batch = self.take(self.config.max_batch_size);
            if batch.is_empty() {
                continue;
            }
            if self.config.concurrent {
                let (queue, client, sender) = (self.clone(), client.clone(), sender.clone());
                tokio::spawn(async move { queue.deliver(&client, &sender, batch).await });
            } else {
                self.deliver(&client, &sender, batch).await;
            }
        }
    }

    /// Sends one batch, retrying until it succeeds or `max_retry_time` has passed.
    async fn deliver(&self, client: &reqwest::Client, sender: &Sender, batch: Vec<Vec<u8>>) {
        let body = Bytes::from(encode(&batch, self.config.max_batch_size));
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let result = client
                .request(sender.method.clone(), sender.url.clone())
                .headers(sender.headers.clone())
                .header(http::header::CONTENT_TYPE, &sender.content_type)
                .body(body.clone())
                .send()
                .await;
            let error = match result {
                Ok(response) if response.status().as_u16() < 300 => return,
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    format!("returned status code {} and body {text}", status.as_u16())
                }
                Err(error) => format!("failed: {error}"),
            };
            tracing::warn!(
                endpoint = %sender.url,
                "http-log: handler could not process entries: request {error}"
            );
            if started.elapsed() > self.config.max_retry_time {
                tracing::error!(
                    endpoint = %sender.url,
                    "http-log: could not send entries due to max_retry_time exceeded. {} queue \
                     entries were lost",
                    batch.len()
                );
                self.metrics
                    .count_dropped_logs("http-log", batch.len() as u64);
                return;
            }
            let delay = self
                .config
                .initial_retry_delay
                .saturating_mul(2u32.saturating_pow(attempt))
                .min(self.config.max_retry_delay);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    }
}

/// Kong's body: the entry itself with `max_batch_size` 1, a JSON array otherwise.
fn encode(batch: &[Vec<u8>], max_batch_size: usize) -> Vec<u8> {
    if max_batch_size == 1 && batch.len() == 1 {
        return batch[0].clone();
    }
    let mut body = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum::<usize>() + 1);
    body.push(b'[');
    for (index, entry) in batch.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(entry);
    }
    body.push(b']');
    body
}
