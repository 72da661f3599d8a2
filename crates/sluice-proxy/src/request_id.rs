//! Request ids: `X-Sluice-Request-Id` and the `request_id` of error bodies.
//!
//! Each proxy worker has its own generator: 64 random bits drawn when the worker starts,
//! then a counter, printed as 32 hex characters (the length of Kong's ids). Ids are unique
//! across the workers of a process, across restarts and across nodes because the random
//! part differs (a collision needs two of 2^64 draws to meet), and a worker never takes a
//! lock or touches a shared cache line to make one.

use std::sync::atomic::{AtomicU64, Ordering};

/// One worker's ids. The counter is atomic only because hyper's connection futures must be
/// `Send`; it is never contended (one worker, one thread).
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

// === impl RequestIds ===

impl RequestIds {
    pub(crate) fn new() -> Self {
        Self {
            prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            next: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:016x}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::RequestIds;

    #[test]
    fn two_workers_never_hand_out_the_same_id() {
        // Two generators are what two workers (or two restarts) have; the bug was that both
        // started from the same prefix and counter.
        let (a, b) = (RequestIds::new(), RequestIds::new());
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            for id in [a.next(), b.next()] {
                assert_eq!(id.len(), 32, "{id}");
                assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
                assert!(seen.insert(id.clone()), "repeated id {id}");
            }
        }
    }
}
