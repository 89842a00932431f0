//! The node's protocol core: a synchronous state machine driven by [`Node::step`] (a message
//! arrived) and [`Node::tick`] (time passed). It never touches a socket or a clock: the caller
//! passes the time in and sends the [`Output`]s it returns. The async shell
//! ([`crate::node::server`]) and the deterministic simulator of the scenario tests both drive it.
//!
//! ## Lifecycle
//! A node starts **Recovering**: it asks every peer for its [`Snapshot`] and becomes **Active**
//! once it has merged the state of a majority (itself included). An Active node that loses
//! contact with the majority goes back to Recovering, so a node cut off from the majority never
//! acts, and catches up before it serves again. A node elected as the victim of the failure
//! simulation is **Failed**: it drops every message and sends nothing until its time is up,
//! then recovers.
//!
//! ## Election: a modified Bully by load, with epochs and votes
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
//!
//! ## Requests: assignment, claim, reply
//! See [`crate::cluster::dispatch`]. The coordinator assigns each request to one server
//! ([`Output::Serve`]). When the job is done the driver keeps the result and calls
//! [`Node::job_finished`]; the core claims the request from every peer and answers with
//! [`Output::Reply`] once a majority (this node included) holds it as the winner, or
//! [`Output::Drop`] once it cannot win (or the request log names another server). Claims,
//! answers and commits are gathered per peer and leave on [`Node::flush`] (and every tick).
//!
//! ## Failure simulation
//! The coordinator elects a victim every period, when every node has been up for a while, and
//! announces it with `Fail`; the record joins the replicated state. Only the coordinator picks,
//! and only when all are up, so never two victims at once.
//!
//! Implementation caveats: votes are kept in memory only (the start-up quarantine stands in
//! for persisting them); loads are compared rounded to two decimals, as printed; the victim
//! schedule restarts when the coordinator changes.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use crate::cluster::dispatch::{Claims, Verdict};
use crate::ids::{Epoch, Millis, NodeId, RequestId};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::detector::Detector;
use crate::cluster::dispatch::{Assignment, Candidate, Dispatcher, Serve};
use crate::cluster::state::{Counters, ElectionRecord, FailureRecord, ReplicatedState};
use crate::config::{FailureSim, Timing};
use crate::wire::message::{
    ClaimBatch, Envelope, Heartbeat, Message, NodeState, Snapshot, PROTOCOL_VERSION,
};

/// Delay per rank before a node without a coordinator starts an election.
pub const ELECTION_STAGGER_MS: u64 = 150;
/// Once a candidate has a majority, how long it waits for the remaining live voters.
pub const COLLECT_WINDOW_MS: u64 = 30;
/// How often a recovering node asks its peers for their state.
pub const SYNC_RETRY_MS: u64 = 200;
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
/// Digests must differ this long before a node asks a peer for its state.
pub const ANTI_ENTROPY_MS: u64 = 1_000;
/// Every node must have been up this long before a victim is elected.
pub const VICTIM_SETTLE_MS: u64 = 2_000;
/// The shortest simulated failure.
pub const MIN_FAILURE_MS: u64 = 1_000;
/// How long a restarted node remembers the commits of its previous run (see
/// [`Node::take_unanswered_commit`]); longer than clients wait for a reply.
pub const RESEND_WINDOW_MS: u64 = 60_000;

/// What the core asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send an envelope to a peer (best effort: the protocol tolerates loss).
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        envelope: Envelope,
    },
    /// Serve this request now: encrypt, keep the result (do not reply yet), then call
    /// [`Node::job_finished`].
    Serve(RequestId),
    /// Send the kept result of this request to its client: a majority holds this node as its
    /// winner. Given at most once per request in the cluster. The driver must first write the
    /// commit that goes with it (the `Send`s of the same flush) to the peer connections, then
    /// the reply: a peer releases its votes for a node whose connection closed, which is safe
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
    /// This node adopted a coordinator it did not see elected (from a peer's heartbeat or state).
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

/// What the core needs to know about its cluster.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Every node of the cluster, this one included.
    pub members: Vec<NodeId>,
    /// Protocol timing.
    pub timing: Timing,
    /// Failure simulation.
    pub failures: FailureSim,
    /// Seed of the node's random choices (victims, durations, back-off).
    pub seed: u64,
}

/// One peer as this node sees it.
#[derive(Clone, Debug)]
struct Peer {
    detector: Detector,
    state: NodeState,
    load: f64,
    cost: f64,
    epoch: Epoch,
    coordinator: Option<NodeId>,
    digest: String,
    /// Since when this peer has been up without a break (None: not up).
    up_since: Option<Millis>,
    /// Whether the coordinator already counted this peer's current up period.
    return_seen: bool,
    digest_differs_since: Option<Millis>,
    last_sync_request: Option<Millis>,
}

/// An election this node runs as candidate.
#[derive(Clone, Debug)]
struct Round {
    epoch: Epoch,
    started: Millis,
    votes: BTreeMap<NodeId, (bool, f64)>,
    majority_at: Option<Millis>,
}

/// Status of one peer, as shown in `/status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// The peer.
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
    /// The peers.
    pub peers: Vec<PeerStatus>,
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
    /// Entries in the replicated request log.
    pub request_log: usize,
    /// Entries of the request log that name this node as the server.
    pub served: u64,
    /// How long the last recovery took, from Recovering to Active, in milliseconds.
    pub last_recovery_ms: Option<u64>,
    /// Finished results this node keeps until a majority names it (or another) as the winner.
    #[serde(default)]
    pub awaiting_majority: usize,
}

/// The protocol core of one node.
pub struct Node {
    id: NodeId,
    members: Vec<NodeId>,
    timing: Timing,
    failures: FailureSim,
    rng: StdRng,
    started_at: Millis,
    state: NodeState,
    failed_until: Millis,
    epoch: Epoch,
    coordinator: Option<NodeId>,
    /// Highest epoch this node voted in (it votes at most once per epoch).
    voted: Epoch,
    /// Highest epoch seen in any message.
    max_epoch_seen: Epoch,
    round: Option<Round>,
    election_due: Option<Millis>,
    failed_rounds: u32,
    peers: BTreeMap<NodeId, Peer>,
    load: f64,
    cost: f64,
    dispatcher: Dispatcher,
    claims: Claims,
    /// Claims, answers and commits per peer, until the next flush.
    outbox: BTreeMap<NodeId, ClaimBatch>,
    /// Whether this process has been Active (merged a majority's state) since it started: only
    /// then does it vote on claims (votes given before a restart are lost).
    synced: bool,
    /// Requests the log says this node won, learned from others: commits of a previous run of
    /// this node (this process makes its own commits itself), with when they were learned.
    inherited: HashSet<RequestId>,
    inherited_order: VecDeque<(Millis, RequestId)>,
    replicated: ReplicatedState,
    digest: Option<String>,
    recovery_heard: BTreeSet<NodeId>,
    recovering_since: Millis,
    last_recovery_ms: Option<u64>,
    next_sync_request: Millis,
    next_heartbeat: Millis,
    next_victim_at: Millis,
    victim_seq: u32,
    last_election_at: Millis,
    last_return_reelection: Option<Millis>,
    imbalance_since: Option<Millis>,
    out: Vec<Output>,
}

/// Loads are compared as printed: rounded to two decimals.
fn rounded(load: f64) -> f64 {
    (load * 100.0).round() / 100.0
}

impl Node {
    /// A node that starts Recovering at `now`.
    pub fn new(config: NodeConfig, now: Millis) -> Self {
        let mut members = config.members.clone();
        if !members.contains(&config.id) {
            members.push(config.id);
        }
        members.sort_unstable();
        members.dedup();
        let t = config.timing;
        let peers = members
            .iter()
            .filter(|&&m| m != config.id)
            .map(|&m| {
                let peer = Peer {
                    detector: Detector::new(t.suspect_ms, t.suspect_max_ms),
                    state: NodeState::Recovering,
                    load: 0.0,
                    cost: 0.0,
                    epoch: 0,
                    coordinator: None,
                    digest: String::new(),
                    up_since: None,
                    return_seen: false,
                    digest_differs_since: None,
                    last_sync_request: None,
                };
                (m, peer)
            })
            .collect();
        let mut node = Node {
            id: config.id,
            members,
            timing: t,
            failures: config.failures,
            rng: StdRng::seed_from_u64(
                config.seed ^ u64::from(config.id).wrapping_mul(0x9E37_79B9),
            ),
            started_at: now,
            state: NodeState::Recovering,
            failed_until: 0,
            epoch: 0,
            coordinator: None,
            voted: 0,
            max_epoch_seen: 0,
            round: None,
            election_due: None,
            failed_rounds: 0,
            peers,
            load: 0.0,
            cost: 0.0,
            dispatcher: Dispatcher::default(),
            claims: Claims::default(),
            outbox: BTreeMap::new(),
            synced: false,
            inherited: HashSet::new(),
            inherited_order: VecDeque::new(),
            replicated: ReplicatedState::default(),
            digest: None,
            recovery_heard: BTreeSet::new(),
            recovering_since: now,
            last_recovery_ms: None,
            next_sync_request: now,
            next_heartbeat: now,
            next_victim_at: u64::MAX,
            victim_seq: 0,
            last_election_at: now,
            last_return_reelection: None,
            imbalance_since: None,
            out: Vec::new(),
        };
        node.replicated
            .counters
            .insert(node.id, Counters::default());
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's state.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// This node's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The coordinator this node follows.
    pub fn coordinator(&self) -> Option<NodeId> {
        self.coordinator
    }

    /// Whether this node is the coordinator.
    pub fn is_coordinator(&self) -> bool {
        self.coordinator == Some(self.id) && self.state == NodeState::Active
    }

    /// The replicated state.
    pub fn replicated(&self) -> &ReplicatedState {
        &self.replicated
    }

    /// Sets the load this node reports and its cost per request per worker, in seconds (both
    /// measured by the driver; see [`crate::cluster::dispatch`]).
    pub fn set_load(&mut self, load: f64, cost: f64) {
        let sane = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        self.load = sane(load);
        self.cost = sane(cost);
    }

    /// Switches the failure simulation on or off.
    pub fn set_failures_enabled(&mut self, enabled: bool) {
        self.failures.enabled = enabled;
    }

    /// The digest of the replicated state.
    pub fn digest(&mut self) -> String {
        if self.digest.is_none() {
            self.digest = Some(self.replicated.digest());
        }
        self.digest.clone().unwrap_or_default()
    }

    fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    fn peer_alive(&self, id: NodeId, now: Millis) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| p.detector.is_alive(now))
    }

    /// A peer is up when it is alive and says it is Active.
    fn peer_up(&self, id: NodeId, now: Millis) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| p.detector.is_alive(now) && p.state == NodeState::Active)
    }

    /// The peers this node hears from (its failure detector's view).
    pub fn live_peers(&self, now: Millis) -> Vec<NodeId> {
        self.peers
            .keys()
            .copied()
            .filter(|&p| self.peer_alive(p, now))
            .collect()
    }

    fn up_or_self(&self, id: NodeId, now: Millis) -> bool {
        id == self.id || self.peer_up(id, now)
    }

    /// Peers heard from within `window` milliseconds.
    fn heard_within(&self, now: Millis, window: u64) -> usize {
        self.peers
            .values()
            .filter(|p| {
                p.detector
                    .last_heard()
                    .is_some_and(|t| now.saturating_sub(t) <= window)
            })
            .count()
    }

    fn has_quorum(&self, now: Millis) -> bool {
        1 + self
            .peers
            .keys()
            .filter(|&&p| self.peer_alive(p, now))
            .count()
            >= self.majority()
    }

    /// The status shown by `/status`.
    pub fn status(&mut self, now: Millis) -> CoreStatus {
        let peers = self
            .peers
            .iter()
            .map(|(&id, p)| PeerStatus {
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
            state: self.state,
            epoch: self.epoch,
            coordinator: if self.state == NodeState::Failed {
                None
            } else {
                self.coordinator
            },
            load: rounded(self.load),
            quorum: self.state != NodeState::Failed && self.has_quorum(now),
            peers,
            digest: self.digest(),
            elections: self.replicated.elections.len(),
            failures: self.replicated.failures.len(),
            counters: self.replicated.counters(self.id),
            held: self.dispatcher.len(),
            request_log: self.replicated.served.len(),
            served: self.replicated.served_by(self.id),
            last_recovery_ms: self.last_recovery_ms,
            awaiting_majority: self.claims.open(),
        }
    }

    // ----- sending -------------------------------------------------------------------------

    fn send_at(&mut self, to: NodeId, epoch: Epoch, message: Message) {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            from: self.id,
            epoch,
            message,
        };
        self.out.push(Output::Send { to, envelope });
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.send_at(to, self.epoch, message);
    }

    fn broadcast_at(&mut self, epoch: Epoch, message: Message) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for to in peers {
            self.send_at(to, epoch, message.clone());
        }
    }

    fn emit(&mut self, event: Event) {
        self.out.push(Output::Event(event));
    }

    fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn changed(&mut self) {
        self.digest = None;
    }

    fn bump_counters(&mut self, f: impl FnOnce(&mut Counters)) {
        let entry = self.replicated.counters.entry(self.id).or_default();
        f(entry);
        self.changed();
    }

    // ----- state transitions ---------------------------------------------------------------

    fn lose_coordinator(&mut self, reason: String) {
        if self.coordinator.take().is_some() {
            self.emit(Event::CoordinatorLost { reason });
        }
    }

    fn enter_recovering(&mut self, now: Millis, reason: &str) {
        self.lose_coordinator(reason.to_string());
        self.state = NodeState::Recovering;
        self.round = None;
        self.election_due = None;
        self.recovery_heard.clear();
        self.recovering_since = now;
        self.next_sync_request = now;
        self.emit(Event::StateChanged {
            to: NodeState::Recovering,
            reason: reason.to_string(),
        });
    }

    fn enter_failed(&mut self, now: Millis, duration_ms: u64) {
        self.coordinator = None;
        self.round = None;
        self.election_due = None;
        self.state = NodeState::Failed;
        self.failed_until = now.saturating_add(duration_ms);
        for id in self.dispatcher.clear() {
            self.out.push(Output::Forget(id));
        }
        // It goes silent after one last batch: the commits of claims it has won (their replies
        // may already be on their way) and the withdrawal of its undecided claims, whose
        // results it drops, so that the peers' votes for it go and a survivor can win them
        // (otherwise those requests would wait for its return).
        let withdrawn = self.claims.open_ids();
        for id in &withdrawn {
            self.claims.close(id);
            self.out.push(Output::Drop(id.clone()));
        }
        for p in self.peer_ids() {
            let batch = self.outbox.entry(p).or_default();
            batch.claims.clear();
            batch.acks.clear();
            batch.withdrawn.extend(withdrawn.iter().cloned());
        }
        self.bump_counters(|c| c.failures += 1);
        let reason = format!("for {:.1} s", duration_ms as f64 / 1000.0);
        self.emit(Event::StateChanged {
            to: NodeState::Failed,
            reason,
        });
    }

    fn enter_active(&mut self, now: Millis) {
        self.state = NodeState::Active;
        self.synced = true;
        self.last_recovery_ms = Some(now.saturating_sub(self.recovering_since));
        self.bump_counters(|c| c.recoveries += 1);
        let reason = format!(
            "state merged from {} of {} nodes",
            self.recovery_heard.len() + 1,
            self.members.len()
        );
        self.emit(Event::StateChanged {
            to: NodeState::Active,
            reason,
        });
        for p in self.peers.values_mut() {
            p.return_seen = true;
        }
        self.last_election_at = now;
    }

    /// Accepts `coordinator` as the coordinator of `epoch` (newer than or equal to ours).
    fn follow(&mut self, now: Millis, epoch: Epoch, coordinator: NodeId) {
        self.epoch = epoch;
        self.max_epoch_seen = self.max_epoch_seen.max(epoch);
        self.coordinator = Some(coordinator);
        if self.round.as_ref().is_some_and(|r| r.epoch <= epoch) {
            self.round = None;
        }
        self.election_due = None;
        self.failed_rounds = 0;
        self.last_election_at = now;
        self.imbalance_since = None;
        if coordinator == self.id {
            self.dispatcher.recount();
            self.bump_counters(|c| c.elections_won += 1);
            self.next_victim_at = now + self.failures.period().as_millis() as u64;
            for p in self.peers.values_mut() {
                p.return_seen = true;
            }
        }
    }

    // ----- input ---------------------------------------------------------------------------

    /// Tells the core that the (latest) connection from `peer` closed: the peer is suspected
    /// at once, and the votes for its claims are released ([`Node::release_votes`]).
    pub fn peer_disconnected(&mut self, now: Millis, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.detector.disconnected();
        }
        self.release_votes(now, peer);
    }

    /// Tells the core that a connection from `peer` closed (any, not only the latest): every
    /// uncommitted vote for `peer` is forgotten, so that a request it claimed and did not
    /// commit can be won by another server. The driver must have handed the core everything
    /// that connection carried first (it did: one reader per connection, in order), and must
    /// write a commit to every peer before the reply it allows (see [`Output::Reply`]).
    ///
    /// A coordinator then assigns those requests again unless they are assigned to `peer`
    /// (which `assign_waiting` does): their server may have lost its claim to these votes,
    /// dropped its result, and be waiting for nothing.
    pub fn release_votes(&mut self, now: Millis, peer: NodeId) {
        if peer == self.id {
            return;
        }
        let released = self.claims.release(peer);
        if !self.is_coordinator() {
            return;
        }
        for id in released {
            let stranded = self
                .dispatcher
                .assignment(&id)
                .is_some_and(|a| a.server != peer);
            if stranded && !self.already_served(&id) {
                self.assign(now, &id, None);
            }
        }
    }

    /// Handles one message from a peer.
    pub fn step(&mut self, now: Millis, envelope: Envelope) -> Vec<Output> {
        let from = envelope.from;
        if self.state == NodeState::Failed || from == self.id || !self.peers.contains_key(&from) {
            return Vec::new();
        }
        let epoch = envelope.epoch;
        self.max_epoch_seen = self.max_epoch_seen.max(epoch);
        if let Some(p) = self.peers.get_mut(&from) {
            p.detector.heard(now);
        }
        match envelope.message {
            Message::Heartbeat(hb) => self.on_heartbeat(now, from, epoch, hb),
            Message::Election => self.on_election(now, from, epoch),
            Message::ElectionOk {
                round,
                granted,
                load,
            } => self.on_election_ok(now, from, round, granted, load),
            Message::Coordinator { coordinator, loads } => {
                self.on_coordinator(now, from, epoch, coordinator, loads)
            }
            Message::Fail(record) => self.on_fail(now, from, epoch, record),
            Message::Assign(a) => self.on_assign(now, from, epoch, a),
            Message::Claims(batch) => self.on_claims(now, from, batch),
            Message::Decline { id } => self.on_decline(now, &id, from),
            Message::Unassigned { ids } => self.on_unassigned(now, ids, from),
            // Payload-carrying messages are the shell's business (it holds the payloads).
            Message::Forward(_) | Message::Reply(_) => {}
            Message::SyncRequest => self.on_sync_request(from),
            Message::SyncResponse(snapshot) => self.on_sync_response(now, from, epoch, *snapshot),
        }
        self.take_output()
    }

    fn on_heartbeat(&mut self, now: Millis, from: NodeId, epoch: Epoch, hb: Heartbeat) {
        if self.replicated.merge_counters(from, &hb.counters) {
            self.changed();
        }
        let my_digest = self.digest();
        if let Some(p) = self.peers.get_mut(&from) {
            p.state = hb.state;
            p.load = hb.load;
            p.cost = hb.cost;
            p.epoch = epoch;
            p.coordinator = hb.coordinator;
            if hb.digest != my_digest && hb.state == NodeState::Active {
                p.digest_differs_since.get_or_insert(now);
            } else {
                p.digest_differs_since = None;
            }
            p.digest = hb.digest;
        }
        if hb.state != NodeState::Active {
            return;
        }
        if let Some(c) = hb.coordinator {
            let newer = epoch > self.epoch;
            let same_and_lost = epoch == self.epoch && self.coordinator.is_none();
            if (newer || same_and_lost) && self.up_or_self(c, now) {
                self.adopt(now, epoch, c);
            }
        }
    }

    fn adopt(&mut self, now: Millis, epoch: Epoch, coordinator: NodeId) {
        if self.state == NodeState::Failed {
            return;
        }
        let known = self.epoch == epoch && self.coordinator == Some(coordinator);
        self.follow(now, epoch, coordinator);
        if !known {
            self.emit(Event::Adopted { epoch, coordinator });
        }
    }

    fn on_election(&mut self, now: Millis, candidate: NodeId, epoch: Epoch) {
        let quarantined = now.saturating_sub(self.started_at) < self.timing.election_timeout_ms;
        let has_other_live_coordinator = match self.coordinator {
            Some(c) if c == candidate => false,
            Some(c) => self.up_or_self(c, now),
            None => false,
        };
        let granted = self.state == NodeState::Active
            && !quarantined
            && epoch > self.voted
            && epoch > self.epoch
            && !has_other_live_coordinator;
        if granted {
            self.voted = epoch;
            if self.round.as_ref().is_some_and(|r| r.epoch < epoch) {
                self.round = None;
            }
            // Give the candidate time to finish before starting one of our own.
            self.election_due = None;
            self.last_election_at = now;
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

    fn on_election_ok(
        &mut self,
        now: Millis,
        from: NodeId,
        round: Epoch,
        granted: bool,
        load: f64,
    ) {
        let majority = self.majority();
        let Some(r) = self.round.as_mut() else { return };
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

    fn on_coordinator(
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

    fn full_loads(&self, loads: &[(NodeId, f64)]) -> Vec<(NodeId, Option<f64>)> {
        self.members
            .iter()
            .map(|&m| (m, loads.iter().find(|(id, _)| *id == m).map(|(_, l)| *l)))
            .collect()
    }

    fn on_fail(&mut self, now: Millis, from: NodeId, epoch: Epoch, record: FailureRecord) {
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
        }
    }

    fn snapshot(&self, now: Millis) -> Snapshot {
        let mut members = vec![(self.id, self.state)];
        for (&id, p) in &self.peers {
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
            state: self.state,
            coordinator: self.coordinator,
            members,
            replicated: self.replicated.clone(),
        }
    }

    fn on_sync_request(&mut self, from: NodeId) {
        // The snapshot's member view does not depend on timing precision; use the last tick.
        let now = self
            .peers
            .get(&from)
            .and_then(|p| p.detector.last_heard())
            .unwrap_or(0);
        let snapshot = self.snapshot(now);
        self.send(from, Message::SyncResponse(Box::new(snapshot)));
    }

    fn on_sync_response(&mut self, now: Millis, from: NodeId, epoch: Epoch, snapshot: Snapshot) {
        let me = self.id;
        let mut mine = Vec::new();
        let merged = self
            .replicated
            .merge_with(&snapshot.replicated, |id, server| {
                if server == me {
                    mine.push(id.to_string());
                }
            });
        for id in mine {
            self.inherit(now, id);
        }
        if merged {
            self.changed();
            self.settle_open_claims();
        }
        if let Some(p) = self.peers.get_mut(&from) {
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
        if self.state == NodeState::Recovering {
            self.recovery_heard.insert(from);
            if self.recovery_heard.len() + 1 >= self.majority() {
                self.enter_active(now);
            }
        }
    }

    // ----- requests ------------------------------------------------------------------------

    /// Whether the request log says `id` was served.
    pub fn already_served(&self, id: &str) -> bool {
        self.replicated.served.contains_key(id)
    }

    /// Whether this node can take part in serving requests now: Active, with a coordinator.
    pub fn accepting(&self) -> bool {
        self.state == NodeState::Active && self.coordinator.is_some()
    }

    /// A client's request reached this node; the driver holds its payload until it is told
    /// to serve ([`Output::Serve`]) or to forget it ([`Output::Forget`]).
    pub fn request_arrived(&mut self, now: Millis, id: &str) -> Vec<Output> {
        if self.state == NodeState::Failed || self.already_served(id) {
            return vec![Output::Forget(id.to_string())];
        }
        if !self.dispatcher.arrived(now, id) {
            return Vec::new();
        }
        if let Some(a) = self.dispatcher.assignment(id) {
            // The assignment came before the payload did.
            self.on_assign(now, a.server, self.epoch, a);
        } else if self.is_coordinator() {
            self.assign(now, id, None);
        }
        self.take_output()
    }

    /// The driver's job for request `id` finished and it keeps the result: the core claims
    /// the request, and later says [`Output::Reply`] or [`Output::Drop`] for it (exactly one of
    /// them, unless the driver is told the same in this call's output).
    pub fn job_finished(&mut self, now: Millis, id: &str) -> Vec<Output> {
        if self.state == NodeState::Failed {
            return vec![Output::Drop(id.to_string())];
        }
        self.bump_counters(|c| c.served += 1);
        if self.replicated.served.contains_key(id) {
            // Committed already (by another node, or by this one for an earlier job).
            self.out.push(Output::Drop(id.to_string()));
            return self.take_output();
        }
        let own = self.synced.then(|| self.claims.vote(now, id, self.id));
        let members = self.members.len();
        let (new, verdict) = self.claims.open_claim(now, id, self.id, own, members);
        if new {
            for p in self.peer_ids() {
                self.outbox
                    .entry(p)
                    .or_default()
                    .claims
                    .push(id.to_string());
            }
        }
        if let Some(verdict) = verdict {
            self.decide_claim(id, verdict);
        }
        self.take_output()
    }

    /// The nodes that may serve: this one and every up peer, with their costs.
    fn candidates(&self, now: Millis) -> Vec<Candidate> {
        let mut candidates = vec![Candidate {
            id: self.id,
            cost: self.cost,
        }];
        for (&id, p) in &self.peers {
            if self.peer_up(id, now) {
                candidates.push(Candidate { id, cost: p.cost });
            }
        }
        candidates
    }

    /// The coordinator's load-balancing decision for one request.
    fn assign(&mut self, now: Millis, id: &str, exclude: Option<NodeId>) {
        let candidates = self.candidates(now);
        let loads: Vec<(NodeId, f64)> = candidates
            .iter()
            .map(|c| (c.id, self.dispatcher.score(c)))
            .collect();
        let Some(assignment) = self.dispatcher.assign(now, id, &candidates, exclude) else {
            return;
        };
        self.bump_counters(|c| c.lb_decisions += 1);
        self.emit(Event::Dispatched {
            assignment: assignment.clone(),
            loads,
        });
        self.broadcast_at(self.epoch, Message::Assign(assignment.clone()));
        if assignment.server == self.id
            && self.dispatcher.assigned(now, self.id, &assignment) == Serve::Yes
        {
            self.out.push(Output::Serve(id.to_string()));
        }
    }

    /// Assigns what nobody serves: new requests, and those of servers that are gone.
    fn assign_waiting(&mut self, now: Millis) {
        let live: BTreeSet<NodeId> = self.candidates(now).iter().map(|c| c.id).collect();
        for id in self.dispatcher.needing_assignment(&live) {
            if self.already_served(&id) {
                self.dispatcher.served(&id);
                self.out.push(Output::Forget(id));
            } else {
                self.assign(now, &id, None);
            }
        }
    }

    fn on_assign(&mut self, now: Millis, from: NodeId, epoch: Epoch, a: Assignment) {
        if epoch < self.epoch {
            self.emit(Event::StaleIgnored {
                from,
                epoch,
                kind: "Assign",
            });
            return;
        }
        if self.already_served(&a.id) {
            return;
        }
        // Cannot (the payload has not come yet) waits; `due_declines` gives up on it later.
        if self.dispatcher.assigned(now, self.id, &a) == Serve::Yes {
            self.out.push(Output::Serve(a.id));
        }
    }

    /// A commit: `server` won `id` (a majority held it) and replied.
    fn on_served(&mut self, now: Millis, id: &str, server: NodeId) {
        if self.replicated.record_served(id, server) {
            self.changed();
            if server == self.id {
                self.inherit(now, id.to_string());
            }
        }
        self.claims.forget_vote(id);
        if self.dispatcher.served(id) {
            self.out.push(Output::Forget(id.to_string()));
        }
        if self.claims.close(id) {
            // Someone else's commit decided this node's open claim.
            self.out.push(Output::Drop(id.to_string()));
        }
    }

    fn on_claims(&mut self, now: Millis, from: NodeId, batch: ClaimBatch) {
        for (id, server) in batch.served {
            self.on_served(now, &id, server);
        }
        for id in batch.withdrawn {
            self.claims.withdraw(&id, from);
        }
        for id in batch.claims {
            let winner = match self.replicated.served.get(&id) {
                Some(&server) => server,
                None if self.synced => self.claims.vote(now, &id, from),
                // Restarted and not caught up: votes given before are lost, so give none yet
                // (the claimant asks again).
                None => continue,
            };
            self.outbox.entry(from).or_default().acks.push((id, winner));
        }
        let members = self.members.len();
        for (id, winner) in batch.acks {
            if let Some(verdict) = self.claims.answer(&id, from, winner == self.id, members) {
                self.decide_claim(&id, verdict);
            }
        }
    }

    /// Applies the verdict on this node's claim of `id`.
    fn decide_claim(&mut self, id: &str, verdict: Verdict) {
        if !self.claims.close(id) {
            return;
        }
        match verdict {
            Verdict::Won => {
                if self.replicated.record_served(id, self.id) {
                    self.changed();
                }
                self.claims.forget_vote(id);
                self.dispatcher.served(id);
                self.out.push(Output::Reply(id.to_string()));
                let me = self.id;
                for p in self.peer_ids() {
                    self.outbox
                        .entry(p)
                        .or_default()
                        .served
                        .push((id.to_string(), me));
                }
            }
            Verdict::Lost => {
                self.dispatcher.lost(id);
                self.out.push(Output::Drop(id.to_string()));
            }
        }
    }

    /// Remembers a commit of a previous run of this node.
    fn inherit(&mut self, now: Millis, id: RequestId) {
        if self.inherited.insert(id.clone()) {
            self.inherited_order.push_back((now, id));
        }
    }

    /// Whether this node should answer request `id`, which a client sent it **again** over a
    /// new connection, by serving it once more without a claim: true (once) when the request
    /// log says this node won it but the commit was made by a previous run of this node, which
    /// died between its commit and its reply. Sound because a client re-sends only the
    /// requests it still waits for, and the winner's reply travels only on the winner's own
    /// connection to that client, which the client has read to its end before reconnecting:
    /// the dead run's reply never arrived, and no other node may reply. The log already names
    /// this node, so it stays true.
    pub fn take_unanswered_commit(&mut self, id: &str) -> bool {
        self.inherited.remove(id) && self.replicated.served.get(id) == Some(&self.id)
    }

    /// Drops the open claims that the request log (just merged) decided for another node.
    fn settle_open_claims(&mut self) {
        if self.claims.open() == 0 {
            return;
        }
        for id in self.claims.open_ids() {
            if self.replicated.served.contains_key(&id) {
                self.claims.close(&id);
                self.claims.forget_vote(&id);
                self.out.push(Output::Drop(id));
            }
        }
    }

    /// Sends claims that have waited too long again, and gives up those beyond the limits.
    fn maintain_claims(&mut self, now: Millis) {
        let due = self.claims.due(now);
        if !due.resend.is_empty() {
            let peers = self.peer_ids();
            for id in due.resend {
                for p in self.claims.unanswered(&id, &peers) {
                    self.outbox.entry(p).or_default().claims.push(id.clone());
                }
            }
        }
        let given_up = due
            .expired
            .into_iter()
            .map(|id| (id, "no majority answered its claim in time"))
            .chain(due.evicted.into_iter().map(|id| {
                (
                    id,
                    "too many results wait for a majority; dropped the oldest",
                )
            }));
        for (id, reason) in given_up.collect::<Vec<_>>() {
            self.out.push(Output::Drop(id.clone()));
            self.emit(Event::ResultDropped {
                id,
                reason: reason.to_string(),
            });
        }
        self.claims.sweep(now);
    }

    fn peer_ids(&self) -> Vec<NodeId> {
        self.peers.keys().copied().collect()
    }

    /// Sends what the core gathered per peer (claims, answers, commits) as one message each,
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

    fn on_decline(&mut self, now: Millis, id: &str, from: NodeId) {
        if self.is_coordinator() && !self.already_served(id) {
            self.assign(now, id, Some(from));
        }
    }

    fn on_unassigned(&mut self, now: Millis, ids: Vec<RequestId>, from: NodeId) {
        if !self.is_coordinator() {
            return;
        }
        let live: BTreeSet<NodeId> = self.candidates(now).iter().map(|c| c.id).collect();
        for id in ids {
            if let Some(&server) = self.replicated.served.get(&id) {
                self.outbox
                    .entry(from)
                    .or_default()
                    .served
                    .push((id, server));
                continue;
            }
            match self.dispatcher.assignment(&id) {
                // The reporter missed the assignment: tell it again.
                Some(a) if live.contains(&a.server) => self.send(from, Message::Assign(a)),
                _ => self.assign(now, &id, None),
            }
        }
    }

    // ----- time ----------------------------------------------------------------------------

    /// Advances the core to `now`.
    pub fn tick(&mut self, now: Millis) -> Vec<Output> {
        if self.state == NodeState::Failed {
            if now < self.failed_until {
                return Vec::new();
            }
            for p in self.peers.values_mut() {
                p.detector.reset();
                p.up_since = None;
            }
            self.enter_recovering(now, "simulated failure over");
        }
        self.track_peers(now);
        self.maintain_claims(now);
        while let Some((at, _)) = self.inherited_order.front() {
            if now.saturating_sub(*at) < RESEND_WINDOW_MS {
                break;
            }
            if let Some((_, id)) = self.inherited_order.pop_front() {
                self.inherited.remove(&id);
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.timing.heartbeat_ms;
            let hb = Heartbeat {
                state: self.state,
                load: self.load,
                cost: self.cost,
                coordinator: self.coordinator,
                digest: self.digest(),
                counters: self.replicated.counters(self.id),
            };
            self.broadcast_at(self.epoch, Message::Heartbeat(hb));
        }
        match self.state {
            NodeState::Recovering => self.drive_recovery(now),
            NodeState::Active => self.drive_active(now),
            NodeState::Failed => {}
        }
        self.flush()
    }

    fn track_peers(&mut self, now: Millis) {
        for p in self.peers.values_mut() {
            let up = p.detector.is_alive(now) && p.state == NodeState::Active;
            match (up, p.up_since) {
                (true, None) => {
                    p.up_since = Some(now);
                    p.return_seen = false;
                }
                (false, Some(_)) => p.up_since = None,
                _ => {}
            }
        }
    }

    fn drive_recovery(&mut self, now: Millis) {
        if self.majority() == 1 {
            self.enter_active(now);
            return;
        }
        if now >= self.next_sync_request {
            self.next_sync_request = now + SYNC_RETRY_MS;
            let missing: Vec<NodeId> = self
                .peers
                .keys()
                .copied()
                .filter(|p| !self.recovery_heard.contains(p))
                .collect();
            for p in missing {
                self.send(p, Message::SyncRequest);
            }
        }
    }

    fn drive_active(&mut self, now: Millis) {
        if !self.has_quorum(now) {
            self.enter_recovering(now, "lost contact with the majority");
            return;
        }
        match self.coordinator {
            Some(c) if c == self.id => {
                let lease = (self.timing.suspect_ms as f64 * LEASE_FRACTION) as u64;
                if 1 + self.heard_within(now, lease) < self.majority() {
                    self.lose_coordinator(
                        "stepping down: no majority heard within the lease".into(),
                    );
                }
            }
            Some(c) if !self.peer_up(c, now) => {
                self.lose_coordinator(format!("coordinator {c} suspected"));
            }
            _ => {}
        }
        if self.round.is_some() {
            self.drive_round(now);
        } else if self.coordinator.is_none() {
            self.maybe_start_election(now);
        }
        if self.is_coordinator() {
            self.assign_waiting(now);
            if self.round.is_none() {
                self.coordinator_duties(now);
            }
        } else if let Some(c) = self.coordinator.filter(|&c| self.peer_up(c, now)) {
            let ids = self.dispatcher.due_reports(now);
            if !ids.is_empty() {
                self.send(c, Message::Unassigned { ids });
            }
        }
        for id in self.dispatcher.due_declines(now) {
            if self.is_coordinator() {
                self.assign(now, &id, Some(self.id));
            } else if let Some(c) = self.coordinator {
                self.send(c, Message::Decline { id });
            }
        }
        for id in self.dispatcher.expire(now) {
            self.out.push(Output::Forget(id));
        }
        self.anti_entropy(now);
    }

    fn maybe_start_election(&mut self, now: Millis) {
        // Peers started with us refuse votes for a while; asking them now would be wasted.
        if now < self.started_at + self.timing.election_timeout_ms {
            return;
        }
        let due = match self.election_due {
            Some(due) => due,
            None => {
                let live: Vec<NodeId> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| self.up_or_self(m, now))
                    .collect();
                let rank = live.iter().position(|&m| m == self.id).unwrap_or(0) as u64;
                let backoff = if self.failed_rounds == 0 {
                    0
                } else {
                    self.rng
                        .gen_range(0..ELECTION_STAGGER_MS * u64::from(self.failed_rounds.min(4)))
                };
                // Wait at least until an election we voted in could have finished.
                let after_vote = self.last_election_at + self.timing.election_timeout_ms;
                let due = (now + rank * ELECTION_STAGGER_MS + backoff).max(if rank == 0 {
                    now
                } else {
                    after_vote
                });
                self.election_due = Some(due);
                due
            }
        };
        if now >= due {
            self.start_election(now, "no coordinator".into());
        }
    }

    fn start_election(&mut self, now: Millis, reason: String) {
        let epoch = self.max_epoch_seen.max(self.epoch).max(self.voted) + 1;
        self.voted = epoch;
        self.max_epoch_seen = epoch;
        self.election_due = None;
        self.last_election_at = now;
        let mut votes = BTreeMap::new();
        votes.insert(self.id, (true, self.load));
        let majority_at = (self.majority() == 1).then_some(now);
        self.round = Some(Round {
            epoch,
            started: now,
            votes,
            majority_at,
        });
        self.emit(Event::ElectionStarted { epoch, reason });
        self.broadcast_at(epoch, Message::Election);
        self.drive_round(now);
    }

    fn drive_round(&mut self, now: Millis) {
        let Some(r) = self.round.as_ref() else { return };
        let live_peers: Vec<NodeId> = self
            .peers
            .keys()
            .copied()
            .filter(|&p| self.peer_alive(p, now))
            .collect();
        let all_answered = live_peers.iter().all(|p| r.votes.contains_key(p));
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
            self.round = None;
            self.failed_rounds += 1;
            self.election_due = None;
        }
    }

    fn decide(&mut self, now: Millis) {
        let Some(round) = self.round.take() else {
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

    fn coordinator_duties(&mut self, now: Millis) {
        // A node that came back, once it has settled.
        let returned: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.return_seen && p.up_since.is_some_and(|t| now >= t + RETURN_SETTLE_MS)
            })
            .map(|(&id, _)| id)
            .collect();
        if let Some(&back) = returned.first() {
            let allowed = self
                .last_return_reelection
                .is_none_or(|t| now >= t + RETURN_REELECTION_MS);
            if allowed {
                for id in &returned {
                    if let Some(p) = self.peers.get_mut(id) {
                        p.return_seen = true;
                    }
                }
                self.last_return_reelection = Some(now);
                self.start_election(now, format!("node {back} returned"));
                return;
            }
        }
        // A node with clearly lower load, for long enough.
        let best = self
            .peers
            .iter()
            .filter(|(&id, _)| self.peer_up(id, now))
            .map(|(_, p)| rounded(p.load))
            .fold(f64::INFINITY, f64::min);
        if best + LOAD_MARGIN < rounded(self.load) {
            let since = *self.imbalance_since.get_or_insert(now);
            if now >= since + LOAD_HOLD_MS && now >= self.last_election_at + LOAD_REELECTION_MS {
                self.imbalance_since = None;
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
            self.imbalance_since = None;
        }
        self.maybe_elect_victim(now);
    }

    fn maybe_elect_victim(&mut self, now: Millis) {
        if !self.failures.enabled || now < self.next_victim_at {
            return;
        }
        let settled = self.peers.values().all(|p| {
            p.state == NodeState::Active && p.up_since.is_some_and(|t| now >= t + VICTIM_SETTLE_MS)
        });
        if !settled {
            return;
        }
        let victim = self.members[self.rng.gen_range(0..self.members.len())];
        let max_ms = (self.failures.max().as_millis() as u64).max(MIN_FAILURE_MS);
        let duration_ms = self.rng.gen_range(MIN_FAILURE_MS..=max_ms);
        self.victim_seq += 1;
        let record = FailureRecord {
            epoch: self.epoch,
            seq: self.victim_seq,
            victim,
            duration_ms,
        };
        self.replicated.record_failure(record);
        self.changed();
        self.next_victim_at = now + self.failures.period().as_millis() as u64;
        self.emit(Event::VictimElected(record));
        self.broadcast_at(self.epoch, Message::Fail(record));
        if victim == self.id {
            self.enter_failed(now, duration_ms);
        }
    }

    fn anti_entropy(&mut self, now: Millis) {
        let due: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.digest_differs_since
                    .is_some_and(|t| now >= t + ANTI_ENTROPY_MS)
                    && p.last_sync_request
                        .is_none_or(|t| now >= t + ANTI_ENTROPY_MS)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some(p) = self.peers.get_mut(&id) {
                p.last_sync_request = Some(now);
            }
            self.send(id, Message::SyncRequest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: NodeId) -> NodeConfig {
        NodeConfig {
            id,
            members: vec![1, 2, 3],
            timing: Timing::default(),
            failures: FailureSim {
                enabled: false,
                ..FailureSim::default()
            },
            seed: 7,
        }
    }

    #[test]
    fn a_new_node_recovers_before_it_acts() {
        let mut n = Node::new(config(1), 0);
        let out = n.tick(0);
        assert_eq!(n.state(), NodeState::Recovering);
        let asks = out
            .iter()
            .filter(|o| matches!(o, Output::Send { envelope, .. } if envelope.message == Message::SyncRequest))
            .count();
        assert_eq!(asks, 2, "asks both peers for their state");
    }

    #[test]
    fn a_single_node_cluster_elects_itself() {
        let mut n = Node::new(
            NodeConfig {
                members: vec![1],
                ..config(1)
            },
            0,
        );
        for t in 0..100 {
            n.tick(t * 10);
        }
        assert_eq!(n.state(), NodeState::Active);
        assert_eq!(n.coordinator(), Some(1));
    }

    fn from(peer: NodeId, message: Message) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            from: peer,
            epoch: 0,
            message,
        }
    }

    /// Node 2's answer to a sync request: an Active node with this request log.
    fn synced_from_2(replicated: ReplicatedState) -> Envelope {
        let snapshot = Snapshot {
            state: NodeState::Active,
            coordinator: None,
            members: vec![],
            replicated,
        };
        from(2, Message::SyncResponse(Box::new(snapshot)))
    }

    /// A claim of request `a` from `peer`; returns the answers sent back.
    fn claim_a(n: &mut Node, now: Millis, peer: NodeId) -> Vec<(RequestId, NodeId)> {
        let batch = ClaimBatch {
            claims: vec!["a".into()],
            ..ClaimBatch::default()
        };
        n.step(now, from(peer, Message::Claims(batch)));
        n.flush()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, envelope } if to == peer => match envelope.message {
                    Message::Claims(b) => Some(b.acks),
                    _ => None,
                },
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn votes_go_to_the_first_claimant_once_caught_up_and_are_released_when_it_dies() {
        let mut n = Node::new(config(1), 0);
        n.tick(0);
        assert!(
            claim_a(&mut n, 10, 2).is_empty(),
            "a new process does not vote before it has merged a majority's state"
        );
        n.step(20, synced_from_2(ReplicatedState::default()));
        assert_eq!(n.state(), NodeState::Active);
        assert_eq!(claim_a(&mut n, 30, 2), vec![("a".to_string(), 2)]);
        assert_eq!(
            claim_a(&mut n, 40, 3),
            vec![("a".to_string(), 2)],
            "the second claimant is told the first one's name"
        );
        n.peer_disconnected(50, 2);
        assert_eq!(
            claim_a(&mut n, 60, 3),
            vec![("a".to_string(), 3)],
            "node 2's connection closed without a commit: its vote is released"
        );
        // A commit answers for the vote from then on.
        let commit = ClaimBatch {
            served: vec![("a".into(), 3)],
            ..ClaimBatch::default()
        };
        n.step(70, from(3, Message::Claims(commit)));
        assert_eq!(n.replicated().served.get("a"), Some(&3));
        assert_eq!(claim_a(&mut n, 80, 2), vec![("a".to_string(), 3)]);
    }

    #[test]
    fn a_finished_job_is_replied_only_with_a_majority_and_dropped_when_another_wins() {
        let mut n = Node::new(
            NodeConfig {
                members: vec![1],
                ..config(1)
            },
            0,
        );
        n.tick(0);
        assert_eq!(n.state(), NodeState::Active);
        assert_eq!(n.job_finished(10, "x"), vec![Output::Reply("x".into())]);
        assert_eq!(
            n.job_finished(20, "x"),
            vec![Output::Drop("x".into())],
            "a second job for a committed request is never replied"
        );
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(ReplicatedState::default()));
        assert!(n.job_finished(10, "y").is_empty(), "waits for a majority");
        let claims: Vec<NodeId> = n
            .flush()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, envelope } => match envelope.message {
                    Message::Claims(b) if b.claims == vec!["y".to_string()] => Some(to),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(claims, vec![2, 3], "claimed from every peer");
        let answer = |winner| ClaimBatch {
            acks: vec![("y".into(), winner)],
            ..ClaimBatch::default()
        };
        assert!(n.step(20, from(2, Message::Claims(answer(3)))).is_empty());
        assert_eq!(
            n.step(21, from(3, Message::Claims(answer(3)))),
            vec![Output::Drop("y".into())],
            "two of three name node 3"
        );
        assert!(n.job_finished(30, "z").is_empty());
        assert_eq!(
            n.step(31, from(3, Message::Claims(answer_z(1)))),
            vec![Output::Reply("z".into())]
        );
        assert_eq!(n.replicated().served.get("z"), Some(&1));
    }

    #[test]
    fn a_node_entering_a_simulated_failure_withdraws_its_open_claims() {
        let caught_up = || synced_from_2(ReplicatedState::default());
        // The victim drops its undecided result and says so in its last batch.
        let mut victim = Node::new(config(1), 0);
        victim.step(5, caught_up());
        assert!(
            victim.job_finished(10, "y").is_empty(),
            "waits for a majority"
        );
        victim.flush();
        let record = FailureRecord {
            epoch: 0,
            seq: 1,
            victim: 1,
            duration_ms: 5_000,
        };
        let out = victim.step(20, from(2, Message::Fail(record)));
        assert_eq!(victim.state(), NodeState::Failed);
        assert!(out.contains(&Output::Drop("y".into())), "{out:?}");
        let last: Vec<(NodeId, Vec<RequestId>)> = victim
            .flush()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, envelope } => match envelope.message {
                    Message::Claims(b) => Some((to, b.withdrawn)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(last, vec![(2, vec!["y".into()]), (3, vec!["y".into()])]);

        // A peer forgets its vote for the claimant that withdrew, and only for that one.
        let mut peer = Node::new(config(1), 0);
        peer.step(5, caught_up());
        assert_eq!(claim_a(&mut peer, 10, 2), vec![("a".to_string(), 2)]);
        let withdraw = || {
            Message::Claims(ClaimBatch {
                withdrawn: vec!["a".into()],
                ..ClaimBatch::default()
            })
        };
        peer.step(20, from(3, withdraw()));
        assert_eq!(
            claim_a(&mut peer, 30, 3),
            vec![("a".to_string(), 2)],
            "node 3 cannot withdraw node 2's claim"
        );
        peer.step(40, from(2, withdraw()));
        assert_eq!(claim_a(&mut peer, 50, 3), vec![("a".to_string(), 3)]);
    }

    #[test]
    fn a_restarted_node_answers_a_resent_request_its_previous_run_won_once() {
        let mut previous = ReplicatedState::default();
        previous.record_served("a", 1);
        previous.record_served("b", 2);
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(previous));
        assert!(!n.take_unanswered_commit("b"), "another node's commit");
        assert!(n.take_unanswered_commit("a"));
        assert!(!n.take_unanswered_commit("a"), "once");
        // Its own commits in this run are never served again.
        let mut single = Node::new(
            NodeConfig {
                members: vec![1],
                ..config(1)
            },
            0,
        );
        single.tick(0);
        assert_eq!(
            single.job_finished(10, "c"),
            vec![Output::Reply("c".into())]
        );
        assert!(!single.take_unanswered_commit("c"));
        // And what it learned is forgotten after the window.
        let mut m = Node::new(config(1), 0);
        let mut log = ReplicatedState::default();
        log.record_served("d", 1);
        m.step(5, synced_from_2(log));
        m.tick(5 + RESEND_WINDOW_MS);
        assert!(!m.take_unanswered_commit("d"));
    }

    fn answer_z(winner: NodeId) -> ClaimBatch {
        ClaimBatch {
            acks: vec![("z".into(), winner)],
            ..ClaimBatch::default()
        }
    }

    #[test]
    fn loads_are_compared_as_printed() {
        assert_eq!(rounded(0.504), 0.5);
        assert_eq!(rounded(0.506), 0.51);
    }
}
