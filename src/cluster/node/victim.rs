//! The failure simulation: the coordinator elects a victim, which fails for a while. The
//! cluster's first victim may be chosen by role ([`FirstVictim`]): the coordinator itself, so
//! that its failure can be seen on purpose, or a worker.
//!
//! The coordinator elects a victim every period, when every node has been up for a while, and
//! announces it with `Fail`; the record joins the replicated state. Only the coordinator picks,
//! and only when all are up, so never two victims at once.

use super::*;
use crate::config::FirstVictim;

/// Every node must have been up this long before a victim is elected.
pub const VICTIM_SETTLE_MS: u64 = 2_000;
/// The shortest simulated failure.
pub const MIN_FAILURE_MS: u64 = 1_000;

/// The coordinator's schedule of simulated failures: when it picks the next victim, and how
/// many it has picked (each pick has its own number).
#[derive(Clone, Debug)]
pub(super) struct VictimSchedule {
    pub(super) next_at: Millis,
    pub(super) seq: u32,
}

impl Default for VictimSchedule {
    /// Nothing scheduled until this node is coordinator.
    fn default() -> Self {
        VictimSchedule {
            next_at: Millis::MAX,
            seq: 0,
        }
    }
}

impl Node {
    pub(super) fn enter_failed(&mut self, now: Millis, duration_ms: u64) {
        self.coordinator = None;
        self.election.stop();
        self.role = Role::Failed {
            until: now.saturating_add(duration_ms),
        };
        // Requests it took over and serves: the votes for it go with the results.
        let taken_over = self.dispatcher.taken_over(self.id);
        for id in self.dispatcher.clear() {
            self.out.push(Output::Forget(id));
        }
        // It goes silent after one last batch: the commits of claims it has won (their replies
        // may already be on their way) and the withdrawal of its undecided claims, whose
        // results it drops, so that the members' votes for it go and a survivor can win them
        // (otherwise those requests would wait for its return).
        let mut withdrawn = self.claims.open_ids();
        for id in &withdrawn {
            if self.claims.close(id) == Some(ClaimKind::Result) {
                self.out.push(Output::Drop(id.clone()));
            }
        }
        withdrawn.extend(taken_over);
        self.add_for_every_member(|batch| {
            batch.claims.clear();
            batch.acks.clear();
            batch.withdrawn.extend(withdrawn.iter().cloned());
        });
        self.bump_counters(|c| c.failures += 1);
        let reason = format!("for {:.1} s", duration_ms as f64 / 1000.0);
        self.emit(Event::StateChanged {
            to: NodeState::Failed,
            reason,
        });
    }

    pub(super) fn on_fail(
        &mut self,
        now: Millis,
        from: NodeId,
        epoch: Epoch,
        record: FailureRecord,
    ) {
        if epoch < self.epoch {
            self.emit(Event::StaleIgnored {
                from,
                epoch,
                kind: "Fail",
            });
            return;
        }
        if self.replicated.record_failure(record) {
            self.changed();
        }
        if record.victim == self.id {
            self.enter_failed(now, record.duration_ms);
        } else {
            self.victim_down(now, record);
        }
    }

    /// Another node was elected to fail: it is down from now on for the record's duration (no
    /// request is assigned to it, and what it held is assigned again at once; if it was the
    /// coordinator, the survivors elect another at once).
    fn victim_down(&mut self, now: Millis, record: FailureRecord) {
        if let Some(p) = self.others.get_mut(&record.victim) {
            p.down_until = now.saturating_add(record.duration_ms);
        }
    }

    pub(super) fn maybe_elect_victim(&mut self, now: Millis) {
        if !self.failures.enabled || now < self.victims.next_at {
            return;
        }
        let settled = self.others.values().all(|p| {
            p.state == NodeState::Active && p.up_since.is_some_and(|t| now >= t + VICTIM_SETTLE_MS)
        });
        if !settled {
            return;
        }
        let first = self.replicated.failures.is_empty();
        let victim = match (first, self.failures.first) {
            (true, FirstVictim::Coordinator) => self.id,
            (true, FirstVictim::Worker) if !self.others.is_empty() => {
                let workers = self.member_ids();
                workers[self.rng.gen_range(0..workers.len())]
            }
            _ => self.members[self.rng.gen_range(0..self.members.len())],
        };
        let max_ms = (self.failures.max().as_millis() as u64).max(MIN_FAILURE_MS);
        let duration_ms = self.rng.gen_range(MIN_FAILURE_MS..=max_ms);
        self.victims.seq += 1;
        let record = FailureRecord {
            epoch: self.epoch,
            seq: self.victims.seq,
            victim,
            duration_ms,
        };
        self.replicated.record_failure(record);
        self.changed();
        self.victims.next_at = now + self.failures.period().as_millis() as u64;
        self.emit(Event::VictimElected(record));
        self.broadcast_at(self.epoch, Message::Fail(record));
        if victim == self.id {
            self.enter_failed(now, duration_ms);
        } else {
            self.victim_down(now, record);
        }
    }
}
