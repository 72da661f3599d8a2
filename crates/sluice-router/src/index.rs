//! The candidate index: given a request's host and path, find the lowest-ranked matcher that
//! matches without checking matchers that cannot.
//!
//! Matchers are identified by their *rank*: their position in the precedence order, 0 is
//! tried first. Every list in the index holds ranks in increasing order. A search keeps the
//! best rank found so far and stops reading a list at the first rank that is not better. So
//! the result is the lowest-ranked matching matcher among all candidates, which is exactly
//! what a linear scan in precedence order returns, provided every matcher that can match is
//! a candidate. The host and path keys below guarantee that:
//!
//! * Host: an exact host is found by equality. `*.example.com` is found by trying every
//!   suffix of the request host that starts at a `.`. `example.*` is found by trying every
//!   prefix that ends at a `.`. Host patterns of any other shape (`*`, `*example.com`) and
//!   matchers without hosts go in the host-less bucket, which is searched for every
//!   request.
//! * Path: inside a host bucket, a matcher is keyed by the literal prefixes its paths
//!   require (the prefix itself, or the literal start of a regex). A request path is looked
//!   up at each distinct key length present in that bucket. A matcher with no literal
//!   prefix (no paths, or a regex such as `~(?i)/a`) goes in the bucket's `always` list.
//!
//! The candidate check ([`Index::find`]'s `check`) re-checks every field, so a key only
//! narrows the search and never decides a match.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::matcher::{Conditions, HostKind, Matcher};

/// A fast non-cryptographic hash (the Fx hash used in rustc). Keys come from the config, so
/// requests cannot fill a bucket chain: a request only looks keys up and never inserts.
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

/// The buckets a matcher is filed under, one per distinct host key.
#[derive(Debug, Default)]
pub(crate) struct Index {
    exact: FxMap<Box<str>, PathIndex>,
    /// Keyed by the suffix with its leading dot: `.example.com`.
    suffix: FxMap<Box<str>, PathIndex>,
    /// Keyed by the prefix with its trailing dot: `example.`.
    prefix: FxMap<Box<str>, PathIndex>,
    any_host: PathIndex,
}

/// The matchers of one host bucket, by the literal path prefix they require.
#[derive(Debug, Default)]
struct PathIndex {
    /// Matchers with no literal path prefix: checked for every request in the bucket.
    always: Vec<u32>,
    by_prefix: FxMap<Box<str>, Vec<u32>>,
    /// The distinct key lengths of `by_prefix`, ascending.
    lengths: Vec<usize>,
    /// The lowest rank anywhere in this bucket, so a search that already has a better
    /// match skips the bucket without hashing. Set by [`PathIndex::finish`].
    min_rank: u32,
}

/// The state of one search: the best rank found so far and what it matched.
struct Search<H> {
    best: u32,
    hit: Option<H>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bucket {
    Exact,
    Suffix,
    Prefix,
    AnyHost,
}

// === impl FxHasher ===

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

// === impl Index ===

impl Index {
    /// Files every matcher (given in precedence order, so its position is its rank) under
    /// its host and path keys. `conditions[m.route]` holds each matcher's hosts.
    pub(crate) fn build(matchers: &[Matcher], conditions: &[Conditions]) -> Self {
        let mut index = Index::default();
        let mut path_keys: Vec<&str> = Vec::new();
        let mut host_keys: Vec<(Bucket, &str)> = Vec::new();
        for (rank, matcher) in matchers.iter().enumerate() {
            // The caller guarantees fewer than u32::MAX matchers.
            let rank = rank as u32;
            let Some(conditions) = conditions.get(matcher.route as usize) else {
                continue;
            };

            path_keys.clear();
            let always = matcher.paths.index_keys(&mut path_keys);
            path_keys.sort_unstable();
            path_keys.dedup();

            host_keys.clear();
            if conditions.hosts.is_empty() {
                host_keys.push((Bucket::AnyHost, ""));
            }
            for host in conditions.hosts.iter() {
                host_keys.push(match &host.kind {
                    HostKind::Exact(exact) => (Bucket::Exact, &**exact),
                    HostKind::Suffix(suffix) if suffix.starts_with('.') => {
                        (Bucket::Suffix, &**suffix)
                    }
                    HostKind::Prefix(prefix) if prefix.ends_with('.') => {
                        (Bucket::Prefix, &**prefix)
                    }
                    // Not findable by dot positions: searched for every request instead.
                    HostKind::Suffix(_) | HostKind::Prefix(_) => (Bucket::AnyHost, ""),
                });
            }
            host_keys.sort_unstable();
            host_keys.dedup();

            for &(bucket, key) in &host_keys {
                let map = match bucket {
                    Bucket::Exact => &mut index.exact,
                    Bucket::Suffix => &mut index.suffix,
                    Bucket::Prefix => &mut index.prefix,
                    Bucket::AnyHost => {
                        index.any_host.insert(rank, always, &path_keys);
                        continue;
                    }
                };
                match map.get_mut(key) {
                    Some(paths) => paths.insert(rank, always, &path_keys),
                    None => {
                        let mut paths = PathIndex::default();
                        paths.insert(rank, always, &path_keys);
                        map.insert(Box::from(key), paths);
                    }
                }
            }
        }

        for paths in index
            .exact
            .values_mut()
            .chain(index.suffix.values_mut())
            .chain(index.prefix.values_mut())
        {
            paths.finish();
        }
        index.any_host.finish();
        index
    }

    /// The lowest rank whose `check` returns a hit, among the candidates for `host`
    /// (lowercase, without port) and `path` (normalized). Exact-host buckets go first
    /// because their matchers tend to rank best, which lets the other buckets stop early.
    pub(crate) fn find<H, F>(&self, host: &str, path: &str, mut check: F) -> Option<(u32, H)>
    where
        F: FnMut(u32) -> Option<H>,
    {
        let mut search = Search {
            best: u32::MAX,
            hit: None,
        };
        if let Some(paths) = self.exact.get(host) {
            paths.scan(path, &mut search, &mut check);
        }
        // Wildcard keys start or end at a dot, so only dot positions can hit. A lookup in
        // an empty map returns before hashing.
        for (i, byte) in host.bytes().enumerate() {
            if byte != b'.' {
                continue;
            }
            // '.' is ASCII, so both split points are char boundaries.
            if let Some(paths) = self.suffix.get(&host[i..]) {
                paths.scan(path, &mut search, &mut check);
            }
            if let Some(paths) = self.prefix.get(&host[..=i]) {
                paths.scan(path, &mut search, &mut check);
            }
        }
        self.any_host.scan(path, &mut search, &mut check);
        let hit = search.hit?;
        Some((search.best, hit))
    }
}

// === impl PathIndex ===

impl PathIndex {
    /// Files `rank` in `always`, or under each of `keys`. Ranks arrive in increasing order,
    /// so the lists stay sorted; the `last` check drops a repeat of the same matcher.
    fn insert(&mut self, rank: u32, always: bool, keys: &[&str]) {
        if always {
            push_rank(&mut self.always, rank);
            return;
        }
        for &key in keys {
            match self.by_prefix.get_mut(key) {
                Some(ranks) => push_rank(ranks, rank),
                None => {
                    self.by_prefix.insert(Box::from(key), vec![rank]);
                }
            }
        }
    }

    fn finish(&mut self) {
        let mut lengths: Vec<usize> = self.by_prefix.keys().map(|key| key.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        self.lengths = lengths;
        self.min_rank = self
            .always
            .first()
            .copied()
            .into_iter()
            .chain(
                self.by_prefix
                    .values()
                    .filter_map(|ranks| ranks.first().copied()),
            )
            .min()
            .unwrap_or(u32::MAX);
    }

    fn scan<H, F>(&self, path: &str, search: &mut Search<H>, check: &mut F)
    where
        F: FnMut(u32) -> Option<H>,
    {
        if self.min_rank >= search.best {
            return;
        }
        search.scan(&self.always, check);
        for &length in &self.lengths {
            if length > path.len() || self.min_rank >= search.best {
                break;
            }
            // `get` returns None when `length` splits a multi-byte character: no key of
            // that length can then be a prefix of `path`.
            let Some(key) = path.get(..length) else {
                continue;
            };
            if let Some(ranks) = self.by_prefix.get(key) {
                search.scan(ranks, check);
            }
        }
    }
}

// === impl Search ===

impl<H> Search<H> {
    /// Checks `ranks` (ascending) until one matches or none can beat the best so far.
    fn scan<F>(&mut self, ranks: &[u32], check: &mut F)
    where
        F: FnMut(u32) -> Option<H>,
    {
        for &rank in ranks {
            if rank >= self.best {
                return;
            }
            if let Some(hit) = check(rank) {
                self.best = rank;
                self.hit = Some(hit);
                return;
            }
        }
    }
}

fn push_rank(ranks: &mut Vec<u32>, rank: u32) {
    if ranks.last() != Some(&rank) {
        ranks.push(rank);
    }
}
