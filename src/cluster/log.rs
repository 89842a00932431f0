//! The request log: which node served each request, remembered for a bounded window.
//!
//! Every commit (see [`crate::cluster::dispatch`]) enters the log tagged with a **generation**:
//! the committing node's count of [`GEN_MS`] periods. A node's current generation is the
//! highest it has seen (its own clock's, and every member's from their heartbeats), so all nodes
//! advance together, at the pace of the fastest clock. The compaction rule, applied the same
//! way everywhere: a node keeps the generations from `current - RETAIN_GENS + 1` on and drops
//! the older ones whole, and refuses entries older than that. So the log holds at most
//! [`LOG_RETENTION_MS`] of commits, whatever the request count, and every node keeps the same
//! ones.
//!
//! The window is longer than anything that can still ask about a request: a node holds a
//! request at most [`PENDING_TTL_MS`] (60 s), a claim lives as long, and a client waits for its
//! reply at most [`RESEND_WINDOW_MS`] (60 s; which bounds its re-sends). At 10,000 requests a
//! second the window holds 700,000 entries, about 14 MB.
//!
//! Entries are keyed by a 64-bit hash of the request id ([`log_key`]): 16 bytes an entry
//! instead of a string's 50 and more. Two ids of one window collide with probability about
//! n²/2⁶⁵ (1e-9 for 500,000 entries); a collision would make the second request look served.
//!
//! **Anti-entropy by generation.** Each generation keeps its size and an XOR of its entries'
//! hashes, so a node summarises its log in a few bytes per generation ([`GenSummary`]). The
//! heartbeat's digest covers only the **sealed** generations (two behind the current one:
//! commits still travelling belong to the newer ones), so a cluster under steady load compares
//! equal and never syncs; a sync request carries the requester's summaries and the answer
//! holds only the generations that differ ([`RequestLog::differing`]).
//!
//! [`PENDING_TTL_MS`]: crate::cluster::dispatch::PENDING_TTL_MS
//! [`RESEND_WINDOW_MS`]: crate::cluster::node::RESEND_WINDOW_MS

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cluster::dispatch::PENDING_TTL_MS;
use crate::ids::{Millis, NodeId};

/// The length of one generation of the request log.
pub const GEN_MS: u64 = 5_000;
/// How long the log remembers a commit, at least.
pub const LOG_RETENTION_MS: u64 = PENDING_TTL_MS + 2 * GEN_MS;
/// Generations kept: the current one and those before it, [`LOG_RETENTION_MS`] in all.
pub const RETAIN_GENS: u64 = LOG_RETENTION_MS / GEN_MS + 1;

/// A generation number.
pub type Gen = u64;
/// A request id's key in the log.
pub type LogKey = u64;

/// The log's key of a request id: the first 8 bytes of its SHA-256.
pub fn log_key(id: &str) -> LogKey {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The generation a clock reading falls in.
pub fn gen_at(now: Millis) -> Gen {
    now / GEN_MS
}

/// An entry's contribution to its generation's hash (the key is already a hash).
fn entry_hash(key: LogKey, server: NodeId) -> u64 {
    // SplitMix64's finalizer over the pair: spreads a changed server over every bit.
    let mut z = key ^ u64::from(server).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One generation's size and hash: equal summaries mean (but for accidents) equal content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GenSummary {
    /// The generation.
    pub gen: Gen,
    /// Its entries.
    pub len: u32,
    /// XOR of its entries' hashes.
    pub hash: u64,
}

/// The commits of one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(LogKey, NodeId)>", into = "Vec<(LogKey, NodeId)>")]
struct Generation {
    entries: HashMap<LogKey, NodeId>,
    hash: u64,
    /// Entries per server (derived).
    per_server: BTreeMap<NodeId, u32>,
}

impl From<Vec<(LogKey, NodeId)>> for Generation {
    fn from(entries: Vec<(LogKey, NodeId)>) -> Self {
        let mut g = Generation::default();
        for (key, server) in entries {
            g.insert(key, server);
        }
        g
    }
}

impl From<Generation> for Vec<(LogKey, NodeId)> {
    fn from(g: Generation) -> Self {
        g.entries.into_iter().collect()
    }
}

impl Generation {
    fn insert(&mut self, key: LogKey, server: NodeId) {
        if let Some(old) = self.entries.insert(key, server) {
            self.forget(key, old);
        }
        self.hash ^= entry_hash(key, server);
        *self.per_server.entry(server).or_default() += 1;
    }

    fn remove(&mut self, key: LogKey) {
        if let Some(old) = self.entries.remove(&key) {
            self.forget(key, old);
        }
    }

    fn forget(&mut self, key: LogKey, server: NodeId) {
        self.hash ^= entry_hash(key, server);
        if let Some(n) = self.per_server.get_mut(&server) {
            *n -= 1;
        }
    }

    fn summary(&self, gen: Gen) -> GenSummary {
        GenSummary {
            gen,
            len: self.entries.len() as u32,
            hash: self.hash,
        }
    }
}

/// The request log of one node (or the part of it a sync sends).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// The highest generation this log has seen.
    current: Gen,
    /// The kept generations.
    gens: BTreeMap<Gen, Generation>,
}

impl RequestLog {
    /// The current generation.
    pub fn current(&self) -> Gen {
        self.current
    }

    /// The oldest generation kept.
    pub fn floor(&self) -> Gen {
        self.current.saturating_sub(RETAIN_GENS - 1)
    }

    /// Moves the current generation up to `gen` (never down) and drops the generations that
    /// fall out of the window; returns whether it moved (which seals a generation).
    pub fn advance(&mut self, gen: Gen) -> bool {
        if gen <= self.current {
            return false;
        }
        self.current = gen;
        self.gens = self.gens.split_off(&self.floor());
        true
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.gens.values().map(|g| g.entries.len()).sum()
    }

    /// Entries kept that name `server`.
    pub fn served_by(&self, server: NodeId) -> u64 {
        self.gens
            .values()
            .filter_map(|g| g.per_server.get(&server))
            .map(|&n| u64::from(n))
            .sum()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.gens.values().all(|g| g.entries.is_empty())
    }

    /// The server and generation of the entry of `key`, if kept.
    fn find(&self, key: LogKey) -> Option<(Gen, NodeId)> {
        self.gens
            .iter()
            .rev()
            .find_map(|(&gen, g)| g.entries.get(&key).map(|&server| (gen, server)))
    }

    /// The server the log names for request `id`, if it remembers one.
    pub fn server_of(&self, id: &str) -> Option<NodeId> {
        self.find(log_key(id)).map(|(_, server)| server)
    }

    /// The server and generation of request `id`'s entry, as a commit message carries them.
    pub fn entry_of(&self, id: &str) -> Option<(NodeId, Gen)> {
        self.find(log_key(id)).map(|(gen, server)| (server, gen))
    }

    /// Whether the log remembers a commit of request `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.find(log_key(id)).is_some()
    }

    /// Records that `server` committed request `id` in generation `gen`; returns whether the
    /// log changed. See [`RequestLog::record_key`].
    pub fn record(&mut self, id: &str, server: NodeId, gen: Gen) -> bool {
        self.record_key(log_key(id), server, gen)
    }

    /// Records an entry; returns whether the log changed. An entry older than the window is
    /// refused. Commits do not conflict (one winner per request); should two entries for one
    /// key ever meet, the lower `(server, gen)` is kept, so every node keeps the same entry.
    pub fn record_key(&mut self, key: LogKey, server: NodeId, gen: Gen) -> bool {
        // A commit from a node ahead of this one moves this one ahead too.
        self.advance(gen);
        if gen < self.floor() {
            return false;
        }
        if let Some((old_gen, old_server)) = self.find(key) {
            if (old_server, old_gen) <= (server, gen) {
                return false;
            }
            if let Some(g) = self.gens.get_mut(&old_gen) {
                g.remove(key);
                if g.entries.is_empty() {
                    self.gens.remove(&old_gen);
                }
            }
        }
        self.gens.entry(gen).or_default().insert(key, server);
        true
    }

    /// Every kept generation's summary, oldest first.
    pub fn summaries(&self) -> Vec<GenSummary> {
        self.gens.iter().map(|(&gen, g)| g.summary(gen)).collect()
    }

    /// The sealed generations' summaries (two and more behind the current one): commits still
    /// travelling belong to the newer ones, so equal logs of a busy cluster compare equal.
    pub fn sealed(&self) -> impl Iterator<Item = GenSummary> + '_ {
        let below = self.current.saturating_sub(1);
        self.gens
            .range(..below)
            .filter(|(_, g)| !g.entries.is_empty())
            .map(|(&gen, g)| g.summary(gen))
    }

    /// The part of this log that differs from a log summarised by `theirs`: every kept
    /// generation whose summary is not among theirs, whole.
    pub fn differing(&self, theirs: &[GenSummary]) -> RequestLog {
        let theirs: HashMap<Gen, GenSummary> = theirs.iter().map(|s| (s.gen, *s)).collect();
        let gens = self
            .gens
            .iter()
            .filter(|(&gen, g)| !g.entries.is_empty() && theirs.get(&gen) != Some(&g.summary(gen)))
            .map(|(&gen, g)| (gen, g.clone()))
            .collect();
        RequestLog {
            current: self.current,
            gens,
        }
    }

    /// Merges another log (or part of one) into this one, calling `added` with each entry it
    /// records; returns whether anything changed (entries, or the current generation).
    pub fn merge_with(
        &mut self,
        other: &RequestLog,
        mut added: impl FnMut(LogKey, NodeId),
    ) -> bool {
        let mut changed = self.advance(other.current);
        for (&gen, g) in &other.gens {
            for (&key, &server) in &g.entries {
                if self.record_key(key, server, gen) {
                    added(key, server);
                    changed = true;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_drops_old_generations_whole_and_refuses_their_entries() {
        let mut log = RequestLog::default();
        assert!(log.record("a", 1, 0));
        assert!(log.record("b", 2, 3));
        assert_eq!(log.len(), 2);
        assert!(log.advance(RETAIN_GENS - 1));
        assert!(log.contains("a"), "generation 0 is still in the window");
        assert!(log.advance(RETAIN_GENS));
        assert!(!log.contains("a"), "generation 0 fell out");
        assert!(log.contains("b"));
        assert!(
            !log.record("c", 1, 0),
            "an entry older than the window is refused"
        );
        assert_eq!(log.server_of("b"), Some(2));
        assert!(!log.advance(2), "the generation never goes back");
        assert_eq!(log.current(), RETAIN_GENS);
    }

    #[test]
    fn conflicting_entries_keep_the_lower_server_then_the_lower_generation_wherever_they_arrive() {
        let mut a = RequestLog::default();
        let mut b = RequestLog::default();
        for (server, gen) in [(2, 5), (1, 6), (1, 7)] {
            a.record("x", server, gen);
        }
        for (server, gen) in [(1, 7), (1, 6), (2, 5)] {
            b.record("x", server, gen);
        }
        assert_eq!(a, b);
        assert_eq!(a.entry_of("x"), Some((1, 6)));
        assert_eq!(a.len(), 1);
        assert_eq!((a.served_by(1), a.served_by(2)), (1, 0));
        assert_eq!(a.summaries(), b.summaries());
    }

    #[test]
    fn a_sync_sends_only_the_generations_that_differ_and_merging_it_makes_the_logs_equal() {
        let (mut a, mut b) = (RequestLog::default(), RequestLog::default());
        for i in 0..100 {
            let id = format!("r{i}");
            a.record(&id, 1 + i % 3, u64::from(i / 10));
            b.record(&id, 1 + i % 3, u64::from(i / 10));
        }
        b.record("late", 2, 4);
        b.record("new", 3, 9);
        let part = b.differing(&a.summaries());
        assert_eq!(part.gens.keys().copied().collect::<Vec<_>>(), vec![4, 9]);
        let mut added = Vec::new();
        assert!(a.merge_with(&part, |key, server| added.push((key, server))));
        assert_eq!(added.len(), 2);
        assert_eq!(a, b);
        assert!(b.differing(&a.summaries()).gens.is_empty());
        assert!(
            !a.merge_with(&part, |_, _| {}),
            "merging twice adds nothing"
        );
    }

    #[test]
    fn only_sealed_generations_are_compared() {
        let mut log = RequestLog::default();
        log.record("old", 1, 3);
        log.record("recent", 1, 4);
        log.record("now", 1, 5);
        let sealed: Vec<Gen> = log.sealed().map(|s| s.gen).collect();
        assert_eq!(sealed, vec![3]);
    }

    #[test]
    fn a_log_round_trips_through_the_wire_with_its_hashes() {
        let mut log = RequestLog::default();
        for i in 0..50 {
            log.record(&format!("r{i}"), 1 + i % 3, u64::from(i % 4));
        }
        let bytes = postcard::to_stdvec(&log).expect("serializes");
        let back: RequestLog = postcard::from_bytes(&bytes).expect("deserializes");
        assert_eq!(back.summaries(), log.summaries());
        assert_eq!(back, log);
    }

    #[test]
    fn memory_per_entry_is_small() {
        let mut log = RequestLog::default();
        for i in 0..10_000 {
            log.record(&format!("c{}-{}", i % 50, i), 1, 0);
        }
        let bytes = postcard::to_stdvec(&log).expect("serializes");
        assert!(
            bytes.len() < 10_000 * 14,
            "{} bytes on the wire",
            bytes.len()
        );
    }
}
