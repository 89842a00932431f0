//! The election: a modified Bully by load, with epochs and votes.
//!
//! The coordinator is the Active node with the lowest load, ties broken by the lower id.
//! - A node with no live coordinator schedules an election after a delay that grows with its
//!   rank among the live nodes (lowest id first), so usually exactly one node starts one: the
//!   Bully's "highest priority takes over", with the priority being the id.
//! - The candidate asks for votes and loads for a new epoch (`Election`). Each node grants at
//!   most one vote per epoch, and only if it has no live coordinator of its own (or the
//!   candidate is that coordinator, re-electing). A new process waits one election timeout
//!   before it votes, so a vote it gave before a crash cannot be given twice.
//! - With a majority of votes, the candidate picks the winner among the voters by load and
//!   announces it (`Coordinator`). Since only one candidate can gather a majority in an epoch,
//!   there is at most one coordinator per epoch. A message from an older epoch is ignored.
//! - The coordinator holds a new election when a node returns (once it has been up for
//!   [`RETURN_SETTLE_MS`], at most once per [`RETURN_REELECTION_MS`]: a flapping node causes
//!   none), and when some node's load is lower than its own by [`LOAD_MARGIN`] for
//!   [`LOAD_HOLD_MS`] (at most once per [`LOAD_REELECTION_MS`]).
//! - A coordinator that has not heard from a majority for [`LEASE_FRACTION`] of the suspicion
//!   timeout steps down, before the majority can suspect it and elect another.

use super::*;

/// Delay per rank before a node without a coordinator starts an election.
pub const ELECTION_STAGGER_MS: u64 = 150;
/// Once a candidate has a majority, how long it waits for the remaining live voters.
pub const COLLECT_WINDOW_MS: u64 = 30;
/// A returned node must be up this long before the coordinator re-elects for it.
pub const RETURN_SETTLE_MS: u64 = 1_000;
/// At most one return-triggered re-election per this interval.
pub const RETURN_REELECTION_MS: u64 = 5_000;
/// Load difference that makes the coordinator consider handing over.
pub const LOAD_MARGIN: f64 = 0.25;
/// How long the load difference must last.
pub const LOAD_HOLD_MS: u64 = 3_000;
/// At most one load-triggered re-election per this interval.
pub const LOAD_REELECTION_MS: u64 = 10_000;
/// A coordinator steps down after this fraction of the suspicion timeout without a majority.
pub const LEASE_FRACTION: f64 = 0.75;

/// What a node keeps about elections: the round it runs as candidate (if any), when the next
/// one is due, how many rounds in a row failed, and what paces re-elections.
#[derive(Clone, Debug)]
pub(super) struct Election {
    /// The round this node runs as candidate.
    pub(super) round: Option<Round>,
    /// When this node starts a round (a coordinator went silent, a node came back).
    pub(super) due: Option<Millis>,
    /// Rounds in a row that reached no majority (their back-off grows with it).
    pub(super) failed_rounds: u32,
    /// When the last election ended.
    pub(super) last_at: Millis,
    /// When this node last called a re-election for a returning member.
    pub(super) last_return: Option<Millis>,
    /// Since when the loads have been out of balance (a re-election by load is due after a while).
    pub(super) imbalance_since: Option<Millis>,
}

impl Election {
    pub(super) fn new(now: Millis) -> Self {
        Election {
            round: None,
            due: None,
            failed_rounds: 0,
            last_at: now,
            last_return: None,
            imbalance_since: None,
        }
    }

    /// Drops the round in flight and the one due (the node leaves Active).
    pub(super) fn stop(&mut self) {
        self.round = None;
        self.due = None;
    }
}

/// An election this node runs as candidate.
#[derive(Clone, Debug)]
pub(super) struct Round {
    pub(super) epoch: Epoch,
    pub(super) started: Millis,
    pub(super) votes: BTreeMap<NodeId, (bool, f64)>,
    pub(super) majority_at: Option<Millis>,
}

impl Node {
    pub(super) fn lose_coordinator(&mut self, reason: String) {
        if self.coordinator.take().is_some() {
            self.emit(Event::CoordinatorLost { reason });
        }
    }

    /// Accepts `coordinator` as the coordinator of `epoch` (newer than or equal to ours).
    pub(super) fn follow(&mut self, now: Millis, epoch: Epoch, coordinator: NodeId) {
        self.epoch = epoch;
        self.max_epoch_seen = self.max_epoch_seen.max(epoch);
        self.coordinator = Some(coordinator);
        if self
            .election
            .round
            .as_ref()
            .is_some_and(|r| r.epoch <= epoch)
        {
            self.election.round = None;
        }
        self.election.due = None;
        self.election.failed_rounds = 0;
        self.election.last_at = now;
        self.election.imbalance_since = None;
        if coordinator == self.id {
            self.dispatcher.recount();
            self.bump_counters(|c| c.elections_won += 1);
            self.victims.next_at = now + self.failures.period().as_millis() as u64;
            for p in self.others.values_mut() {
                p.return_seen = true;
            }
        }
    }

    pub(super) fn adopt(&mut self, now: Millis, epoch: Epoch, coordinator: NodeId) {
        if self.state() == NodeState::Failed {
            return;
        }
        let known = self.epoch == epoch && self.coordinator == Some(coordinator);
        self.follow(now, epoch, coordinator);
        if !known {
            self.emit(Event::Adopted { epoch, coordinator });
        }
    }

    pub(super) fn on_election(&mut self, now: Millis, candidate: NodeId, epoch: Epoch) {
        let quarantined = now.saturating_sub(self.started_at) < self.timing.election_timeout_ms;
        let has_other_live_coordinator = match self.coordinator {
            Some(c) if c == candidate => false,
            Some(c) => self.up_or_self(c, now),
            None => false,
        };
        let granted = self.state() == NodeState::Active
            && !quarantined
            && epoch > self.voted
            && epoch > self.epoch
            && !has_other_live_coordinator;
        if granted {
            self.voted = epoch;
            if self
                .election
                .round
                .as_ref()
                .is_some_and(|r| r.epoch < epoch)
            {
                self.election.round = None;
            }
            // Give the candidate time to finish before starting one of our own.
            self.election.due = None;
            self.election.last_at = now;
        }
        let known = self.epoch.max(self.voted);
        let load = self.load;
        self.send_at(
            candidate,
            known,
            Message::ElectionOk {
                round: epoch,
                granted,
                load,
            },
        );
    }

    pub(super) fn on_election_ok(
        &mut self,
        now: Millis,
        from: NodeId,
        round: Epoch,
        granted: bool,
        load: f64,
    ) {
        let majority = self.majority();
        let Some(r) = self.election.round.as_mut() else {
            return;
        };
        if r.epoch != round {
            return;
        }
        r.votes.insert(from, (granted, load));
        let yes = r.votes.values().filter(|(g, _)| *g).count();
        if yes >= majority && r.majority_at.is_none() {
            r.majority_at = Some(now);
        }
        self.drive_round(now);
    }

    pub(super) fn on_coordinator(
        &mut self,
        now: Millis,
        from: NodeId,
        epoch: Epoch,
        coordinator: NodeId,
        loads: Vec<(NodeId, f64)>,
    ) {
        if epoch < self.epoch
            || (epoch == self.epoch && self.coordinator.is_some_and(|c| c != coordinator))
        {
            self.emit(Event::StaleIgnored {
                from,
                epoch,
                kind: "Coordinator",
            });
            return;
        }
        if epoch == self.epoch && self.coordinator == Some(coordinator) {
            return;
        }
        let record = ElectionRecord {
            coordinator,
            initiator: from,
            loads: loads.clone(),
        };
        if self.replicated.record_election(epoch, record) {
            self.changed();
        }
        self.follow(now, epoch, coordinator);
        let loads = self.full_loads(&loads);
        self.emit(Event::Elected {
            epoch,
            coordinator,
            loads,
        });
    }

    pub(super) fn full_loads(&self, loads: &[(NodeId, f64)]) -> Vec<(NodeId, Option<f64>)> {
        self.members
            .iter()
            .map(|&m| (m, loads.iter().find(|(id, _)| *id == m).map(|(_, l)| *l)))
            .collect()
    }

    pub(super) fn maybe_start_election(&mut self, now: Millis) {
        // Members started with us refuse votes for a while; asking them now would be wasted.
        if now < self.started_at + self.timing.election_timeout_ms {
            return;
        }
        let due = match self.election.due {
            Some(due) => due,
            None => {
                let live: Vec<NodeId> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| self.up_or_self(m, now))
                    .collect();
                let rank = live.iter().position(|&m| m == self.id).unwrap_or(0) as u64;
                let backoff = if self.election.failed_rounds == 0 {
                    0
                } else {
                    self.rng.gen_range(
                        0..ELECTION_STAGGER_MS * u64::from(self.election.failed_rounds.min(4)),
                    )
                };
                // Wait at least until an election we voted in could have finished.
                let after_vote = self.election.last_at + self.timing.election_timeout_ms;
                let due = (now + rank * ELECTION_STAGGER_MS + backoff).max(if rank == 0 {
                    now
                } else {
                    after_vote
                });
                self.election.due = Some(due);
                due
            }
        };
        if now >= due {
            self.start_election(now, "no coordinator".into());
        }
    }

    pub(super) fn start_election(&mut self, now: Millis, reason: String) {
        // Epochs come from members too: saturate rather than overflow on an absurd one.
        let epoch = self
            .max_epoch_seen
            .max(self.epoch)
            .max(self.voted)
            .saturating_add(1);
        self.voted = epoch;
        self.max_epoch_seen = epoch;
        self.election.due = None;
        self.election.last_at = now;
        let mut votes = BTreeMap::new();
        votes.insert(self.id, (true, self.load));
        let majority_at = (self.majority() == 1).then_some(now);
        self.election.round = Some(Round {
            epoch,
            started: now,
            votes,
            majority_at,
        });
        self.emit(Event::ElectionStarted { epoch, reason });
        self.broadcast_at(epoch, Message::Election);
        self.drive_round(now);
    }

    pub(super) fn drive_round(&mut self, now: Millis) {
        let Some(r) = self.election.round.as_ref() else {
            return;
        };
        let live_members: Vec<NodeId> = self
            .others
            .keys()
            .copied()
            .filter(|&p| self.member_alive(p, now))
            .collect();
        let all_answered = live_members.iter().all(|p| r.votes.contains_key(p));
        let decide = match r.majority_at {
            Some(at) => all_answered || now >= at + COLLECT_WINDOW_MS,
            None => false,
        };
        if decide {
            self.decide(now);
        } else if r.majority_at.is_none()
            && (all_answered || now >= r.started + self.timing.election_timeout_ms)
        {
            // No majority is coming for this epoch: back off and try again.
            self.election.round = None;
            self.election.failed_rounds += 1;
            self.election.due = None;
        }
    }

    pub(super) fn decide(&mut self, now: Millis) {
        let Some(round) = self.election.round.take() else {
            return;
        };
        let winner = round
            .votes
            .iter()
            .filter(|(_, (granted, _))| *granted)
            .min_by(|a, b| {
                rounded(a.1 .1)
                    .total_cmp(&rounded(b.1 .1))
                    .then(a.0.cmp(b.0))
            })
            .map(|(&id, _)| id)
            .unwrap_or(self.id);
        let loads: Vec<(NodeId, f64)> = round.votes.iter().map(|(&id, &(_, l))| (id, l)).collect();
        let record = ElectionRecord {
            coordinator: winner,
            initiator: self.id,
            loads: loads.clone(),
        };
        if self.replicated.record_election(round.epoch, record) {
            self.changed();
        }
        self.follow(now, round.epoch, winner);
        self.broadcast_at(
            round.epoch,
            Message::Coordinator {
                coordinator: winner,
                loads: loads.clone(),
            },
        );
        let loads = self.full_loads(&loads);
        self.emit(Event::Elected {
            epoch: round.epoch,
            coordinator: winner,
            loads,
        });
    }

    pub(super) fn coordinator_duties(&mut self, now: Millis) {
        // A node that came back, once it has settled.
        let returned: Vec<NodeId> = self
            .others
            .iter()
            .filter(|(_, p)| {
                !p.return_seen && p.up_since.is_some_and(|t| now >= t + RETURN_SETTLE_MS)
            })
            .map(|(&id, _)| id)
            .collect();
        if let Some(&back) = returned.first() {
            let allowed = self
                .election
                .last_return
                .is_none_or(|t| now >= t + RETURN_REELECTION_MS);
            if allowed {
                for id in &returned {
                    if let Some(p) = self.others.get_mut(id) {
                        p.return_seen = true;
                    }
                }
                self.election.last_return = Some(now);
                self.start_election(now, format!("node {back} returned"));
                return;
            }
        }
        // A node with clearly lower load, for long enough.
        let best = self
            .others
            .iter()
            .filter(|(&id, _)| self.member_up(id, now))
            .map(|(_, p)| rounded(p.load))
            .fold(f64::INFINITY, f64::min);
        if best + LOAD_MARGIN < rounded(self.load) {
            let since = *self.election.imbalance_since.get_or_insert(now);
            if now >= since + LOAD_HOLD_MS && now >= self.election.last_at + LOAD_REELECTION_MS {
                self.election.imbalance_since = None;
                let reason = format!(
                    "load {:.2} vs {:.2} for {} s",
                    self.load,
                    best,
                    LOAD_HOLD_MS / 1000
                );
                self.start_election(now, reason);
                return;
            }
        } else {
            self.election.imbalance_since = None;
        }
        self.maybe_elect_victim(now);
    }
}
