//! The core's outputs ([`Output`], [`Event`]), how they are queued and flushed, and its
//! status for `/status` ([`CoreStatus`]).

use super::*;

/// What the core asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send an envelope to a member (best effort: the protocol tolerates loss).
    Send {
        /// The member.
        to: NodeId,
        /// The message.
        envelope: Envelope,
    },
    /// Serve this request now: encrypt, keep the result (do not reply yet), then call
    /// [`Node::job_finished`].
    Serve(RequestId),
    /// Send the kept result of this request to its client: a majority holds this node as its
    /// winner. Given at most once per request in the cluster. The driver must first write the
    /// commit that goes with it (the `Send`s of the same flush) to the member connections, then
    /// the reply: a member releases its votes for a node whose connection closed, which is safe
    /// only if a reply can never precede its commit on the wire.
    Reply(RequestId),
    /// Discard the kept result of this request without replying: another node won it (or the
    /// claim was given up, see [`Event::ResultDropped`]).
    Drop(RequestId),
    /// Drop this request's payload: another node served it, or this node failed.
    Forget(RequestId),
    /// Something the operator should see.
    Event(Event),
}

/// Notable things that happened, for logs and tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// This node learned an election result (once per epoch per node).
    Elected {
        /// The epoch.
        epoch: Epoch,
        /// The coordinator.
        coordinator: NodeId,
        /// Each node's load as the decision saw it (None: did not answer).
        loads: Vec<(NodeId, Option<f64>)>,
    },
    /// This node adopted a coordinator it did not see elected (from a member's heartbeat or state).
    Adopted {
        /// The epoch.
        epoch: Epoch,
        /// The coordinator.
        coordinator: NodeId,
    },
    /// This node no longer has a coordinator.
    CoordinatorLost {
        /// Why.
        reason: String,
    },
    /// This node started an election.
    ElectionStarted {
        /// The epoch it asks votes for.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// This node changed state.
    StateChanged {
        /// The new state.
        to: NodeState,
        /// Why.
        reason: String,
    },
    /// The coordinator elected a victim.
    VictimElected(FailureRecord),
    /// The coordinator decided who serves a request.
    Dispatched {
        /// The decision.
        assignment: Assignment,
        /// Every candidate's load figure (expected seconds to finish one more request).
        loads: Vec<(NodeId, f64)>,
    },
    /// This node gave up a finished result without a verdict on its claim.
    ResultDropped {
        /// The request.
        id: RequestId,
        /// Why.
        reason: String,
    },
    /// A message from an old epoch was ignored.
    StaleIgnored {
        /// The sender.
        from: NodeId,
        /// Its epoch.
        epoch: Epoch,
        /// The message kind.
        kind: &'static str,
    },
}

/// Status of one member, as shown in `/status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberStatus {
    /// The member.
    pub id: NodeId,
    /// Its state as this node sees it (Failed when it is not heard from).
    pub state: NodeState,
    /// Its last reported load.
    pub load: f64,
}

/// A snapshot of the core for status pages.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CoreStatus {
    /// This node.
    pub id: NodeId,
    /// Its state.
    pub state: NodeState,
    /// Its epoch.
    pub epoch: Epoch,
    /// The coordinator it follows.
    pub coordinator: Option<NodeId>,
    /// Its load.
    pub load: f64,
    /// Whether it hears from a majority.
    pub quorum: bool,
    /// The members.
    pub members: Vec<MemberStatus>,
    /// Digest of the replicated state.
    pub digest: String,
    /// Elections recorded in the replicated state.
    pub elections: usize,
    /// Simulated failures recorded in the replicated state.
    pub failures: usize,
    /// This node's counters.
    pub counters: Counters,
    /// Requests this node holds (not yet known to be served).
    pub held: usize,
    /// Entries in the replicated request log (its window, see [`crate::cluster::log`]).
    pub request_log: usize,
    /// Entries of the request log's window that name this node as the server.
    pub served: u64,
    /// How long the last recovery took, from Recovering to Active, in milliseconds.
    pub last_recovery_ms: Option<u64>,
    /// Finished results this node keeps until a majority names it (or another) as the winner.
    #[serde(default)]
    pub awaiting_majority: usize,
}

impl Node {
    /// The status shown by `/status`.
    pub fn status(&mut self, now: Millis) -> CoreStatus {
        let members = self
            .others
            .iter()
            .map(|(&id, p)| MemberStatus {
                id,
                state: if p.detector.is_alive(now) {
                    p.state
                } else {
                    NodeState::Failed
                },
                load: rounded(p.load),
            })
            .collect();
        CoreStatus {
            id: self.id,
            state: self.state(),
            epoch: self.epoch,
            coordinator: if self.state() == NodeState::Failed {
                None
            } else {
                self.coordinator
            },
            load: rounded(self.load),
            quorum: self.state() != NodeState::Failed && self.has_quorum(now),
            members,
            digest: self.digest(),
            elections: self.replicated.elections.len(),
            failures: self.replicated.failures.len(),
            counters: self.replicated.counters(self.id),
            held: self.dispatcher.len(),
            request_log: self.replicated.log.len(),
            served: self.replicated.log.served_by(self.id),
            last_recovery_ms: self.last_recovery_ms,
            awaiting_majority: self.claims.open(),
        }
    }

    pub(super) fn send_at(&mut self, to: NodeId, epoch: Epoch, message: Message) {
        let envelope = Envelope::new(self.id, epoch, message);
        self.out.push(Output::Send { to, envelope });
    }

    pub(super) fn send(&mut self, to: NodeId, message: Message) {
        self.send_at(to, self.epoch, message);
    }

    pub(super) fn broadcast_at(&mut self, epoch: Epoch, message: Message) {
        let members: Vec<NodeId> = self.others.keys().copied().collect();
        for to in members {
            self.send_at(to, epoch, message.clone());
        }
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.out.push(Output::Event(event));
    }

    pub(super) fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    pub(super) fn member_ids(&self) -> Vec<NodeId> {
        self.others.keys().copied().collect()
    }

    /// Sends what the core gathered per member (claims, answers, commits) as one message each,
    /// and returns it with any other pending output. The driver calls it after a burst of
    /// inputs; [`Node::tick`] calls it too.
    pub fn flush(&mut self) -> Vec<Output> {
        let outbox = std::mem::take(&mut self.outbox);
        for (to, batch) in outbox {
            if !batch.is_empty() {
                self.send(to, Message::Claims(batch));
            }
        }
        self.take_output()
    }
}
