//! Recovery: a node that was silent catches up with a majority before it acts, and
//! anti-entropy repairs any gap later.
//!
//! A Recovering node asks every member for its `Snapshot` (every [`SYNC_RETRY_MS`]) and becomes
//! Active once it has merged the state of a majority, itself included. An Active node whose
//! digest has differed from a member's for [`ANTI_ENTROPY_MS`] asks that member for its state.

use super::*;
use crate::cluster::log::GenSummary;

/// How often a recovering node asks its members for their state.
pub const SYNC_RETRY_MS: u64 = 200;
/// Digests must differ this long before a node asks a member for its state.
pub const ANTI_ENTROPY_MS: u64 = 1_000;

impl Node {
    pub(super) fn enter_recovering(&mut self, now: Millis, reason: &str) {
        self.lose_coordinator(reason.to_string());
        self.role = Role::recovering(now);
        self.election.stop();
        self.emit(Event::StateChanged {
            to: NodeState::Recovering,
            reason: reason.to_string(),
        });
    }

    pub(super) fn enter_active(&mut self, now: Millis) {
        let (since, heard) = match &self.role {
            Role::Recovering(r) => (r.since, r.heard.len()),
            _ => (now, 0),
        };
        self.role = Role::Active;
        self.synced = true;
        self.last_recovery_ms = Some(now.saturating_sub(since));
        self.bump_counters(|c| c.recoveries += 1);
        let reason = format!(
            "state merged from {} of {} nodes",
            heard + 1,
            self.members.len()
        );
        self.emit(Event::StateChanged {
            to: NodeState::Active,
            reason,
        });
        for p in self.others.values_mut() {
            p.return_seen = true;
        }
        self.election.last_at = now;
    }

    /// What this node knows, its request log reduced to the generations that differ from the
    /// summaries `theirs`.
    pub(super) fn snapshot(&self, now: Millis, theirs: &[GenSummary]) -> Snapshot {
        let mut members = vec![(self.id, self.state())];
        for (&id, p) in &self.others {
            members.push((
                id,
                if p.detector.is_alive(now) {
                    p.state
                } else {
                    NodeState::Failed
                },
            ));
        }
        Snapshot {
            state: self.state(),
            coordinator: self.coordinator,
            members,
            replicated: self.replicated.differing(theirs),
        }
    }

    pub(super) fn on_sync_request(&mut self, from: NodeId, theirs: &[GenSummary]) {
        // The snapshot's member view does not depend on timing precision; use the last tick.
        let now = self
            .others
            .get(&from)
            .and_then(|p| p.detector.last_heard())
            .unwrap_or(0);
        let snapshot = self.snapshot(now, theirs);
        self.send(from, Message::SyncResponse(Box::new(snapshot)));
    }

    pub(super) fn on_sync_response(
        &mut self,
        now: Millis,
        from: NodeId,
        epoch: Epoch,
        snapshot: Snapshot,
    ) {
        let me = self.id;
        let mut mine = Vec::new();
        let merged = self
            .replicated
            .merge_with(&snapshot.replicated, |key, server| {
                if server == me {
                    mine.push(key);
                }
            });
        for key in mine {
            self.inherit(now, key);
        }
        if merged {
            self.changed();
            self.settle_merged();
        }
        if let Some(p) = self.others.get_mut(&from) {
            p.digest_differs_since = None;
            p.state = snapshot.state;
        }
        if let Some(c) = snapshot.coordinator {
            if snapshot.state == NodeState::Active
                && (epoch > self.epoch || (epoch == self.epoch && self.coordinator.is_none()))
            {
                self.adopt(now, epoch, c);
            }
        }
        let majority = self.majority();
        if let Role::Recovering(r) = &mut self.role {
            r.heard.insert(from);
            if r.heard.len() + 1 >= majority {
                self.enter_active(now);
            }
        }
    }

    pub(super) fn drive_recovery(&mut self, now: Millis) {
        if self.majority() == 1 {
            self.enter_active(now);
            return;
        }
        let Role::Recovering(r) = &mut self.role else {
            return;
        };
        if now >= r.next_ask {
            r.next_ask = now + SYNC_RETRY_MS;
            let heard = &r.heard;
            let missing: Vec<NodeId> = self
                .others
                .keys()
                .copied()
                .filter(|p| !heard.contains(p))
                .collect();
            let summaries = self.replicated.log.summaries();
            for p in missing {
                self.send(p, Message::SyncRequest(summaries.clone()));
            }
        }
    }

    pub(super) fn anti_entropy(&mut self, now: Millis) {
        let due: Vec<NodeId> = self
            .others
            .iter()
            .filter(|(_, p)| {
                p.digest_differs_since
                    .is_some_and(|t| now >= t + ANTI_ENTROPY_MS)
                    && p.last_sync_request
                        .is_none_or(|t| now >= t + ANTI_ENTROPY_MS)
            })
            .map(|(&id, _)| id)
            .collect();
        if due.is_empty() {
            return;
        }
        let summaries = self.replicated.log.summaries();
        for id in due {
            if let Some(p) = self.others.get_mut(&id) {
                p.last_sync_request = Some(now);
            }
            self.send(id, Message::SyncRequest(summaries.clone()));
        }
    }
}
