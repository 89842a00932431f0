//! The cluster's replicated record of its work, and its digest.
//!
//! The state is a join-semilattice (a CRDT): every part only grows, and [`ReplicatedState::merge`]
//! is commutative, associative and idempotent. Nodes add records where they happen (the winner
//! of an election, the coordinator that picks a victim), send them along with the protocol
//! message that caused them, and repair any gap by anti-entropy: heartbeats carry a digest, and
//! a member whose digest differs for long enough is asked for its whole state, which is merged.
//! A recovering node merges the states of a majority before it serves again.
//!
//! - elections: one record per epoch (at most one coordinator per epoch, so records never clash);
//! - failures: one record per simulated failure, keyed by the epoch and sequence number of the
//!   coordinator that elected the victim;
//! - counters: each node's own counters, written only by that node, merged by maximum;
//! - the request log: which node served each request, for a bounded window
//!   ([`crate::cluster::log`]). Only **commits** enter it: a server records itself once a
//!   majority of the cluster held it as the request's winner (see [`crate::cluster::dispatch`]),
//!   and tells the others. Since every node votes for one winner per request, two majorities
//!   for two servers cannot exist, so two different entries for one id never arise and the log
//!   names exactly the node that replied.
//!
//! The digest that heartbeats carry covers the elections, the failures and the log's sealed
//! generations, not the counters: they change with every request, and travel in every
//! heartbeat anyway (each node's own), so a busy cluster whose logs agree compares equal.
//!
//! Implementation caveats: the digest is a hash over XORs of entry hashes (fine against
//! accidents, not against an adversary, who is kept out by member authentication); elections and
//! failures are kept for the cluster's life (one record each, a few hundred an hour).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cluster::log::{GenSummary, LogKey, RequestLog};
use crate::ids::{Epoch, NodeId};

/// A node's own counters; only that node increments them, everyone merges them by maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Elections this node won (epochs it coordinated).
    pub elections_won: u64,
    /// Simulated failures this node went through.
    pub failures: u64,
    /// Recoveries this node completed (after a failure, a restart or a lost majority).
    pub recoveries: u64,
    /// Encryption jobs this node completed (a job whose claim another node won counts here,
    /// not in the request log).
    pub served: u64,
    /// Load-balancing decisions this node made as coordinator.
    pub lb_decisions: u64,
    /// Requests this node took over while no live coordinator assigned them (a majority held
    /// it as their winner before it served them).
    pub takeovers: u64,
}

impl Counters {
    /// Field-wise maximum; returns whether anything grew.
    pub fn merge(&mut self, other: &Counters) -> bool {
        let before = *self;
        self.elections_won = self.elections_won.max(other.elections_won);
        self.failures = self.failures.max(other.failures);
        self.recoveries = self.recoveries.max(other.recoveries);
        self.served = self.served.max(other.served);
        self.lb_decisions = self.lb_decisions.max(other.lb_decisions);
        self.takeovers = self.takeovers.max(other.takeovers);
        *self != before
    }
}

/// The result of one election.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ElectionRecord {
    /// The elected coordinator.
    pub coordinator: NodeId,
    /// The node that ran the election.
    pub initiator: NodeId,
    /// The loads the decision was based on.
    pub loads: Vec<(NodeId, f64)>,
}

/// One simulated failure, decided by a coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The epoch of the coordinator that decided it.
    pub epoch: Epoch,
    /// Its sequence number within that epoch.
    pub seq: u32,
    /// The node that fails.
    pub victim: NodeId,
    /// How long the victim stays silent.
    pub duration_ms: u64,
}

/// The replicated record of the cluster's work.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedState {
    /// Election results by epoch.
    pub elections: BTreeMap<Epoch, ElectionRecord>,
    /// Simulated failures by (epoch, seq).
    pub failures: BTreeMap<(Epoch, u32), FailureRecord>,
    /// Every node's counters.
    pub counters: BTreeMap<NodeId, Counters>,
    /// The request log: which node served (won the claim of, and replied to) each request.
    pub log: RequestLog,
}

impl ReplicatedState {
    /// Adds an election result; returns whether it was new.
    pub fn record_election(&mut self, epoch: Epoch, record: ElectionRecord) -> bool {
        if self.elections.contains_key(&epoch) {
            return false;
        }
        self.elections.insert(epoch, record);
        true
    }

    /// Adds a failure record; returns whether it was new.
    pub fn record_failure(&mut self, record: FailureRecord) -> bool {
        self.failures
            .insert((record.epoch, record.seq), record)
            .is_none()
    }

    /// Merges a node's counters; returns whether anything grew.
    pub fn merge_counters(&mut self, node: NodeId, counters: &Counters) -> bool {
        self.counters.entry(node).or_default().merge(counters)
    }

    /// The counters of `node` (zero if unknown).
    pub fn counters(&self, node: NodeId) -> Counters {
        self.counters.get(&node).copied().unwrap_or_default()
    }

    /// Merges another state into this one; returns whether anything was added.
    pub fn merge(&mut self, other: &ReplicatedState) -> bool {
        self.merge_with(other, |_, _| {})
    }

    /// [`ReplicatedState::merge`], calling `added` with every request-log entry it records.
    pub fn merge_with(
        &mut self,
        other: &ReplicatedState,
        added: impl FnMut(LogKey, NodeId),
    ) -> bool {
        let mut changed = false;
        for (epoch, record) in &other.elections {
            changed |= self.record_election(*epoch, record.clone());
        }
        for record in other.failures.values() {
            changed |= self.record_failure(*record);
        }
        changed |= self.log.merge_with(&other.log, added);
        for (node, counters) in &other.counters {
            changed |= self.merge_counters(*node, counters);
        }
        changed
    }

    /// A short hash of what anti-entropy repairs: equal digests mean equal elections,
    /// failures and sealed log generations (see the module's notes).
    pub fn digest(&self) -> String {
        let small = (&self.elections, &self.failures);
        let bytes = postcard::to_stdvec(&small).expect("the replicated state always serializes");
        let mut h = Sha256::new();
        h.update(&bytes);
        for s in self.log.sealed() {
            h.update(s.gen.to_be_bytes());
            h.update(s.len.to_be_bytes());
            h.update(s.hash.to_be_bytes());
        }
        hex::encode(&h.finalize()[..8])
    }

    /// This state with only the log generations that differ from `theirs` (a sync's answer).
    pub fn differing(&self, theirs: &[GenSummary]) -> ReplicatedState {
        ReplicatedState {
            elections: self.elections.clone(),
            failures: self.failures.clone(),
            counters: self.counters.clone(),
            log: self.log.differing(theirs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: NodeId, epoch: Epoch) -> ReplicatedState {
        let mut s = ReplicatedState::default();
        s.record_election(
            epoch,
            ElectionRecord {
                coordinator: node,
                initiator: node,
                loads: vec![(node, 0.5)],
            },
        );
        s.record_failure(FailureRecord {
            epoch,
            seq: 1,
            victim: node,
            duration_ms: 1000,
        });
        s.merge_counters(
            node,
            &Counters {
                elections_won: epoch,
                failures: 1,
                recoveries: 1,
                ..Default::default()
            },
        );
        s.log.record(&format!("r{node}"), node, 0);
        s
    }

    #[test]
    fn merge_is_commutative_and_idempotent() {
        let (a, b) = (sample(1, 3), sample(2, 4));
        let mut ab = a.clone();
        assert!(ab.merge(&b));
        let mut ba = b.clone();
        assert!(ba.merge(&a));
        assert_eq!(ab, ba);
        assert_eq!(ab.digest(), ba.digest());
        assert!(!ab.merge(&b), "merging twice adds nothing");
    }

    #[test]
    fn the_digest_covers_sealed_log_generations_and_not_the_counters() {
        let (mut a, mut b) = (ReplicatedState::default(), ReplicatedState::default());
        for (id, n) in [("x", 3), ("y", 1), ("x", 2)] {
            a.log.record(id, n, 0);
        }
        for (id, n) in [("x", 2), ("y", 1)] {
            b.log.record(id, n, 0);
        }
        a.log.advance(2);
        b.log.advance(2);
        assert_eq!(a.digest(), b.digest());
        b.merge_counters(
            1,
            &Counters {
                served: 7,
                ..Default::default()
            },
        );
        assert_eq!(
            a.digest(),
            b.digest(),
            "counters travel in heartbeats, not in the digest"
        );
        b.log.record("fresh", 1, 2);
        assert_eq!(
            a.digest(),
            b.digest(),
            "the current generation is still filling"
        );
        b.log.record("z", 1, 0);
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn digest_changes_with_content() {
        let mut s = sample(1, 3);
        let before = s.digest();
        s.record_election(
            9,
            ElectionRecord {
                coordinator: 2,
                initiator: 2,
                loads: Vec::new(),
            },
        );
        assert_ne!(before, s.digest());
    }

    #[test]
    fn counters_merge_by_maximum() {
        let mut c = Counters {
            elections_won: 5,
            failures: 1,
            ..Default::default()
        };
        assert!(c.merge(&Counters {
            elections_won: 2,
            failures: 3,
            ..Default::default()
        }));
        assert_eq!(
            c,
            Counters {
                elections_won: 5,
                failures: 3,
                ..Default::default()
            }
        );
    }
}
