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

/// Kong's `balancer.latency_strategy`: what `lowest-latency` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencyStrategy {
    /// Time per output token: the answer's time over its completion tokens (Kong's default).
    #[default]
    Tpot,
    /// End to end: the whole answer's time.
    E2e,
}

/// Kong's `balancer.tokens_count_strategy`: what `lowest-usage` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokensStrategy {
    #[default]
    Total,
    Prompt,
    Completion,
    Cost,
}

impl LatencyStrategy {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "tpot" => Ok(LatencyStrategy::Tpot),
            "e2e" => Ok(LatencyStrategy::E2e),
            other => Err(format!("expected one of: tpot, e2e (got '{other}')")),
        }
    }
}

impl TokensStrategy {
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "total-tokens" => TokensStrategy::Total,
            "prompt-tokens" => TokensStrategy::Prompt,
            "completion-tokens" => TokensStrategy::Completion,
            "cost" => TokensStrategy::Cost,
            "llm-accuracy" => {
                return Err(
                    "'llm-accuracy' needs the ai-llm-as-judge plugin, which Sluice does \
                            not have; use total-tokens, prompt-tokens, completion-tokens or cost"
                        .to_owned(),
                )
            }
            other => {
                return Err(format!(
                    "expected one of: total-tokens, prompt-tokens, completion-tokens, cost, \
                     llm-accuracy (got '{other}')"
                ))
            }
        })
    }
}

/// What one answered request used, for `lowest-usage` and `tpot`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Used {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// In the model's cost unit (`input_cost`/`output_cost` per million tokens).
    pub cost: f64,
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
    /// Latency EWMA in microseconds (0 until the first answer): end to end, and per output
    /// token (nanoseconds).
    ewma_us: AtomicU64,
    tpot_ewma_ns: AtomicU64,
    tokens: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Cost in billionths of the cost unit, so it adds up atomically.
    cost_nano: AtomicU64,
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
            tpot_ewma_ns: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            cost_nano: AtomicU64::new(0),
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
            peak_ewma(&self.ewma_us, took.as_micros() as u64);
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The attempt that answered the client: as [`finished`](Self::finished), plus what it
    /// used and its time per output token.
    pub fn answered(&self, took: Duration, failed: bool, used: Used, now: Instant) {
        self.tokens.fetch_add(used.total_tokens, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(used.prompt_tokens, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(used.completion_tokens, Ordering::Relaxed);
        self.cost_nano
            .fetch_add((used.cost * 1e9).round() as u64, Ordering::Relaxed);
        if !failed && used.completion_tokens > 0 {
            let per_token = took.as_nanos() as u64 / used.completion_tokens;
            peak_ewma(&self.tpot_ewma_ns, per_token.max(1));
        }
        self.finished(took, failed, now);
    }

    fn usage(&self, strategy: TokensStrategy) -> f64 {
        match strategy {
            TokensStrategy::Total => self.tokens.load(Ordering::Relaxed) as f64,
            TokensStrategy::Prompt => self.prompt_tokens.load(Ordering::Relaxed) as f64,
            TokensStrategy::Completion => self.completion_tokens.load(Ordering::Relaxed) as f64,
            TokensStrategy::Cost => self.cost_nano.load(Ordering::Relaxed) as f64,
        }
    }

    /// 0 until measured. `tpot` falls back to end to end while no answer had output tokens
    /// (embeddings, a first request), so a target is not preferred for never being measured
    /// that way.
    fn latency(&self, strategy: LatencyStrategy) -> u64 {
        let e2e = self.ewma_us.load(Ordering::Relaxed);
        match strategy {
            LatencyStrategy::E2e => e2e,
            LatencyStrategy::Tpot => match self.tpot_ewma_ns.load(Ordering::Relaxed) {
                0 => e2e.saturating_mul(1000),
                tpot => tpot,
            },
        }
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
            "tpot_ewma_ms": self.tpot_ewma_ns.load(Ordering::Relaxed) as f64 / 1e6,
            "tokens": self.tokens.load(Ordering::Relaxed),
            "prompt_tokens": self.prompt_tokens.load(Ordering::Relaxed),
            "completion_tokens": self.completion_tokens.load(Ordering::Relaxed),
            "cost": self.cost_nano.load(Ordering::Relaxed) as f64 / 1e9,
            "requests": self.requests.load(Ordering::Relaxed),
            "failures": self.failed.load(Ordering::Relaxed),
        })
    }
}

/// Peak-EWMA-like: a slower sample moves it at once, a faster one decays it.
fn peak_ewma(cell: &AtomicU64, sample: u64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 || sample > old {
            sample
        } else {
            (old * 7 + sample) / 8
        })
    });
}

/// The per-plugin part of balancing: round-robin positions, weights.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    latency: LatencyStrategy,
    tokens: TokensStrategy,
    weights: Vec<u32>,
    /// Smooth weighted round-robin's current weights (nginx's algorithm).
    current: Mutex<Vec<i64>>,
}

impl Balancer {
    /// Round-robin and the others that do not measure, with Kong's default strategies.
    pub fn new(algorithm: Algorithm, weights: Vec<u32>) -> Self {
        Self::measuring(
            algorithm,
            weights,
            LatencyStrategy::Tpot,
            TokensStrategy::Total,
        )
    }

    /// `lowest-latency` compares each target's EWMA of `latency`, `lowest-usage` what
    /// `tokens` counts, per unit of weight.
    pub fn measuring(
        algorithm: Algorithm,
        weights: Vec<u32>,
        latency: LatencyStrategy,
        tokens: TokensStrategy,
    ) -> Self {
        let current = Mutex::new(vec![0; weights.len()]);
        Self {
            algorithm,
            latency,
            tokens,
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
                let usage = |i: usize| states[i].usage(self.tokens) / weight(i);
                usage(*a).total_cmp(&usage(*b))
            }),
            Algorithm::LowestLatency => {
                // A target not measured yet is tried first, so every target gets a figure.
                available
                    .iter()
                    .copied()
                    .min_by_key(|i| states[*i].latency(self.latency))
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
    fn lowest_latency_compares_time_per_token_or_end_to_end_as_configured() {
        // Target 0 answers in 100 ms with 10 tokens (10 ms/token); target 1 in 60 ms with 2
        // (30 ms/token): faster end to end, slower per token.
        let states = states(2);
        let used = |completion| Used {
            completion_tokens: completion,
            ..Used::default()
        };
        let now = Instant::now();
        states[0].answered(Duration::from_millis(100), false, used(10), now);
        states[1].answered(Duration::from_millis(60), false, used(2), now);
        let refs: Vec<&TargetState> = states.iter().collect();
        let pick = |latency| {
            Balancer::measuring(
                Algorithm::LowestLatency,
                vec![100; 2],
                latency,
                TokensStrategy::Total,
            )
            .pick(&[0, 1], &refs, None)
        };
        assert_eq!(pick(LatencyStrategy::Tpot), Some(0));
        assert_eq!(pick(LatencyStrategy::E2e), Some(1));
    }

    #[test]
    fn lowest_usage_counts_what_tokens_count_strategy_names() {
        let states = states(2);
        let now = Instant::now();
        // Target 0: many prompt tokens, cheap; target 1: many completion tokens, dear.
        states[0].answered(
            Duration::from_millis(1),
            false,
            Used {
                prompt_tokens: 90,
                completion_tokens: 10,
                total_tokens: 100,
                cost: 0.001,
            },
            now,
        );
        states[1].answered(
            Duration::from_millis(1),
            false,
            Used {
                prompt_tokens: 10,
                completion_tokens: 50,
                total_tokens: 60,
                cost: 0.01,
            },
            now,
        );
        let refs: Vec<&TargetState> = states.iter().collect();
        let pick = |tokens| {
            Balancer::measuring(
                Algorithm::LowestUsage,
                vec![100; 2],
                LatencyStrategy::Tpot,
                tokens,
            )
            .pick(&[0, 1], &refs, None)
        };
        assert_eq!(pick(TokensStrategy::Total), Some(1));
        assert_eq!(pick(TokensStrategy::Prompt), Some(1));
        assert_eq!(pick(TokensStrategy::Completion), Some(0));
        assert_eq!(pick(TokensStrategy::Cost), Some(0));
        assert!(TokensStrategy::parse("llm-accuracy").is_err());
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
