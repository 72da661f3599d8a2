//! ai-proxy-advanced's balancing: which target a request goes to, what counts as a failure
//! worth another target, and each target's state (connections, latency, usage, circuit).

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_plugin::Outcome;

/// Kong's `balancer.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    Priority,
    LowestLatency,
    LowestUsage,
    LeastConnections,
    ConsistentHashing,
}

impl Algorithm {
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "round-robin" => Algorithm::RoundRobin,
            "priority" => Algorithm::Priority,
            "lowest-latency" => Algorithm::LowestLatency,
            "lowest-usage" => Algorithm::LowestUsage,
            "least-connections" => Algorithm::LeastConnections,
            "consistent-hashing" => Algorithm::ConsistentHashing,
            "semantic" => {
                return Err(
                    "'semantic' needs a vector database and an embeddings model, \
                            which Sluice does not have yet; use another algorithm"
                        .to_owned(),
                )
            }
            other => {
                return Err(format!(
                    "expected one of: round-robin, priority, lowest-latency, lowest-usage, \
                     least-connections, consistent-hashing, semantic (got '{other}')"
                ))
            }
        })
    }
}

/// Kong's `failover_criteria` (nginx's `proxy_next_upstream` words).
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    error: bool,
    timeout: bool,
    invalid_header: bool,
    statuses: Vec<u16>,
    non_idempotent: bool,
}

impl Criteria {
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut criteria = Criteria::default();
        for name in names {
            match name.as_str() {
                "error" => criteria.error = true,
                "timeout" => criteria.timeout = true,
                "invalid_header" => criteria.invalid_header = true,
                "non_idempotent" => criteria.non_idempotent = true,
                other => match other
                    .strip_prefix("http_")
                    .and_then(|s| s.parse::<u16>().ok())
                {
                    Some(code @ (403 | 404 | 429 | 500 | 502 | 503 | 504)) => {
                        criteria.statuses.push(code)
                    }
                    _ => {
                        return Err(format!(
                            "expected one of: error, timeout, invalid_header, http_403, \
                             http_404, http_429, http_500, http_502, http_503, http_504, \
                             non_idempotent (got '{other}')"
                        ))
                    }
                },
            }
        }
        Ok(criteria)
    }

    /// Whether `outcome` sends the request to another target. As nginx (and so Kong): a
    /// request that was sent with a non-idempotent method (POST, PATCH) is passed on only
    /// with `non_idempotent`; one that never left (connect failure) always may be.
    pub fn names(&self, outcome: Outcome, method: &http::Method) -> bool {
        let idempotent =
            !matches!(*method, http::Method::POST | http::Method::PATCH) || self.non_idempotent;
        match outcome {
            Outcome::ConnectFailed => self.error,
            Outcome::Failed => (self.error || self.invalid_header) && idempotent,
            Outcome::Timeout => self.timeout && idempotent,
            Outcome::Status(status) => self.statuses.contains(&status) && idempotent,
            // Nothing reached the client: as a connection error, whatever the method.
            Outcome::StreamFailed => self.error,
        }
    }
}

/// One target's state, shared by every request (and kept across reloads).
#[derive(Debug)]
pub struct TargetState {
    pub name: String,
    in_flight: AtomicU64,
    /// Latency EWMA in microseconds (0 until the first answer).
    ewma_us: AtomicU64,
    tokens: AtomicU64,
    max_fails: AtomicU32,
    fail_timeout_ms: AtomicU64,
    failures: Mutex<VecDeque<Instant>>,
    open_until: Mutex<Option<Instant>>,
    requests: AtomicU64,
    failed: AtomicU64,
}

impl TargetState {
    pub fn new(name: String) -> Self {
        Self {
            name,
            in_flight: AtomicU64::new(0),
            ewma_us: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            max_fails: AtomicU32::new(0),
            fail_timeout_ms: AtomicU64::new(10_000),
            failures: Mutex::default(),
            open_until: Mutex::new(None),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub fn set_breaker(&self, max_fails: u32, fail_timeout: Duration) {
        self.max_fails.store(max_fails, Ordering::Relaxed);
        self.fail_timeout_ms
            .store(fail_timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Not taken out of rotation by the circuit breaker (or its time is over: tried again).
    pub fn available(&self, now: Instant) -> bool {
        let open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        open.is_none_or(|until| now >= until)
    }

    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt ended: `failed` counts toward the circuit breaker, a success feeds the
    /// latency EWMA.
    pub fn finished(&self, took: Duration, failed: bool, now: Instant) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.fail(now);
        } else {
            // Peak-EWMA-like: a slower answer moves it at once, a faster one decays it.
            let sample = took.as_micros() as u64;
            let _ = self
                .ewma_us
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some(if old == 0 || sample > old {
                        sample
                    } else {
                        (old * 7 + sample) / 8
                    })
                });
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The attempt that answered the client: as [`finished`](Self::finished), plus its tokens.
    pub fn answered(&self, took: Duration, failed: bool, tokens: u64, now: Instant) {
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
        self.finished(took, failed, now);
    }

    fn fail(&self, now: Instant) {
        let max_fails = self.max_fails.load(Ordering::Relaxed);
        if max_fails == 0 {
            return;
        }
        let window = Duration::from_millis(self.fail_timeout_ms.load(Ordering::Relaxed));
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            failures.pop_front();
        }
        // Kong: max_fails failures within fail_timeout, not consecutive ones.
        if failures.len() as u32 >= max_fails {
            failures.clear();
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(now + window);
            tracing::warn!(target = %self.name, open_for = ?window, "ai-proxy-advanced: circuit opened");
        }
    }

    /// For the status endpoint.
    pub fn status(&self, now: Instant) -> serde_json::Value {
        let open = *self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "target": self.name,
            "circuit": if open.is_some_and(|u| now < u) { "open" } else { "closed" },
            "open_for_ms": open.map_or(0, |u| u.saturating_duration_since(now).as_millis() as u64),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "latency_ewma_ms": self.ewma_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "tokens": self.tokens.load(Ordering::Relaxed),
            "requests": self.requests.load(Ordering::Relaxed),
            "failures": self.failed.load(Ordering::Relaxed),
        })
    }
}

/// The per-plugin part of balancing: round-robin positions, weights.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    weights: Vec<u32>,
    /// Smooth weighted round-robin's current weights (nginx's algorithm).
    current: Mutex<Vec<i64>>,
}

impl Balancer {
    /// `lowest-latency` compares each target's answer-time EWMA (whether `latency_strategy`
    /// is `tpot` or `e2e`), `lowest-usage` its total tokens: one measure each, for now.
    pub fn new(algorithm: Algorithm, weights: Vec<u32>) -> Self {
        let current = Mutex::new(vec![0; weights.len()]);
        Self {
            algorithm,
            weights,
            current,
        }
    }

    /// The target for a request among `available` (indexes), or `None` when none is.
    pub fn pick(
        &self,
        available: &[usize],
        states: &[&TargetState],
        hash_key: Option<&str>,
    ) -> Option<usize> {
        if available.is_empty() {
            return None;
        }
        let weight = |i: usize| f64::from(self.weights.get(i).copied().unwrap_or(100).max(1));
        match self.algorithm {
            Algorithm::RoundRobin => Some(self.smooth(available)),
            Algorithm::Priority => {
                // The highest weight group that has an available target; round-robin in it.
                let top = available.iter().map(|i| self.weights[*i]).max()?;
                let group: Vec<usize> = available
                    .iter()
                    .copied()
                    .filter(|i| self.weights[*i] == top)
                    .collect();
                Some(self.smooth(&group))
            }
            Algorithm::LeastConnections => available.iter().copied().min_by(|a, b| {
                let load =
                    |i: usize| states[i].in_flight.load(Ordering::Relaxed) as f64 / weight(i);
                load(*a).total_cmp(&load(*b))
            }),
            Algorithm::LowestUsage => available.iter().copied().min_by(|a, b| {
                let usage = |i: usize| states[i].tokens.load(Ordering::Relaxed) as f64 / weight(i);
                usage(*a).total_cmp(&usage(*b))
            }),
            Algorithm::LowestLatency => {
                // A target not measured yet is tried first, so every target gets a figure.
                available
                    .iter()
                    .copied()
                    .min_by_key(|i| states[*i].ewma_us.load(Ordering::Relaxed))
            }
            Algorithm::ConsistentHashing => match hash_key {
                // Rendezvous hashing: adding a target moves only the keys it wins.
                Some(key) => available.iter().copied().max_by_key(|i| {
                    let mut hasher = DefaultHasher::new();
                    key.hash(&mut hasher);
                    states[*i].name.hash(&mut hasher);
                    hasher.finish()
                }),
                None => Some(self.smooth(available)),
            },
        }
    }

    /// nginx's smooth weighted round-robin over `among`.
    fn smooth(&self, among: &[usize]) -> usize {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let total: i64 = among.iter().map(|i| i64::from(self.weights[*i])).sum();
        let mut best = among[0];
        for &i in among {
            current[i] += i64::from(self.weights[i]);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(n: usize) -> Vec<TargetState> {
        (0..n).map(|i| TargetState::new(format!("t{i}"))).collect()
    }

    #[test]
    fn smooth_round_robin_follows_the_weights_evenly() {
        let balancer = Balancer::new(Algorithm::RoundRobin, vec![5, 1, 1]);
        let states = states(3);
        let refs: Vec<&TargetState> = states.iter().collect();
        let picks: Vec<usize> = (0..7)
            .map(|_| balancer.pick(&[0, 1, 2], &refs, None).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0], "nginx's sequence for 5:1:1");
    }

    #[test]
    fn priority_uses_the_highest_group_until_it_is_unavailable() {
        let balancer = Balancer::new(Algorithm::Priority, vec![10, 10, 1]);
        let states = states(3);
        let refs: Vec<&TargetState> = states.iter().collect();
        let picks: Vec<usize> = (0..4)
            .map(|_| balancer.pick(&[0, 1, 2], &refs, None).unwrap())
            .collect();
        assert!(picks.iter().all(|p| *p < 2) && picks.contains(&0) && picks.contains(&1));
        assert_eq!(balancer.pick(&[2], &refs, None), Some(2));
    }

    #[test]
    fn consistent_hashing_keeps_keys_when_a_target_is_added() {
        let balancer = Balancer::new(Algorithm::ConsistentHashing, vec![100; 4]);
        let states = states(4);
        let refs: Vec<&TargetState> = states.iter().collect();
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| balancer.pick(&[0, 1, 2], &refs, Some(k)).unwrap())
            .collect();
        let after: Vec<usize> = keys
            .iter()
            .map(|k| balancer.pick(&[0, 1, 2, 3], &refs, Some(k)).unwrap())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(a == b || *a == 3, "a key only moves to the new target");
        }
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(moved > 20 && moved < 90, "about a quarter moves: {moved}");
    }

    #[test]
    fn max_fails_within_fail_timeout_opens_the_circuit_then_it_is_tried_again() {
        let state = TargetState::new("t".to_owned());
        state.set_breaker(2, Duration::from_millis(100));
        let t0 = Instant::now();
        state.started();
        state.finished(Duration::ZERO, true, t0);
        assert!(state.available(t0));
        state.started();
        state.finished(Duration::ZERO, true, t0);
        assert!(
            !state.available(t0),
            "two failures within the window open it"
        );
        assert!(
            state.available(t0 + Duration::from_millis(150)),
            "then it is tried again"
        );
    }

    #[test]
    fn post_requests_fail_over_after_being_sent_only_with_non_idempotent() {
        let names = |list: &[&str]| {
            Criteria::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
        };
        let post = http::Method::POST;
        let default = names(&["error", "timeout"]);
        assert!(
            default.names(Outcome::ConnectFailed, &post),
            "never sent: always"
        );
        assert!(!default.names(Outcome::Timeout, &post));
        assert!(default.names(Outcome::Timeout, &http::Method::GET));
        let with = names(&["error", "timeout", "http_500", "http_429", "non_idempotent"]);
        assert!(with.names(Outcome::Timeout, &post));
        assert!(with.names(Outcome::Status(500), &post));
        assert!(with.names(Outcome::Status(429), &post));
        assert!(
            !with.names(Outcome::Status(400), &post),
            "a 400 is never retried"
        );
        assert!(Criteria::parse(&["http_418".to_owned()]).is_err());
    }
}
