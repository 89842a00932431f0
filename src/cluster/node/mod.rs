//! The node's protocol core: a synchronous state machine driven by [`Node::step`] (a message
//! arrived) and [`Node::tick`] (time passed). It never touches a socket or a clock: the caller
//! passes the time in and sends the [`Output`]s it returns. The async shell
//! ([`crate::node`]) and the deterministic simulator of the scenario tests both drive it.
//!
//! ## Lifecycle
//! A node starts **Recovering**: it asks every member for its [`Snapshot`] and becomes **Active**
//! once it has merged the state of a majority (itself included). An Active node that loses
//! contact with the majority goes back to Recovering, so a node cut off from the majority never
//! acts, and catches up before it serves again. A node elected as the victim of the failure
//! simulation is **Failed**: it drops every message and sends nothing until its time is up,
//! then recovers.
//!
//! ## Parts
//! This file holds the node's state and the two entry points, [`Node::step`] and [`Node::tick`],
//! which route to the parts:
//! - `election`: the modified Bully by load (votes, rounds, the coordinator's re-elections);
//! - `serving`: requests, assignment, the claim quorum and its replies;
//! - `recovery`: catching up with a majority, anti-entropy;
//! - `victim`: the failure simulation;
//! - `outputs`: what the core asks its driver to do ([`Output`], [`Event`]) and its status.
//!
//! Implementation caveats: votes are kept in memory only (the start-up quarantine stands in
//! for persisting them); loads are compared rounded to two decimals, as printed; the victim
//! schedule restarts when the coordinator changes.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use crate::cluster::claims::{ClaimKind, Claims, Reanswer, Verdict};
use crate::ids::{Epoch, Millis, NodeId, RequestId};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::detector::Detector;
use crate::cluster::dispatch::{static_owner, Assignment, Candidate, Dispatcher, Serve};
use crate::cluster::log::{gen_at, log_key, Gen, LogKey};
use crate::cluster::message::{ClaimBatch, Envelope, Heartbeat, Message, NodeState, Snapshot};
use crate::cluster::state::{Counters, ElectionRecord, FailureRecord, ReplicatedState};
use crate::config::{FailureSim, Timing};

mod election;
mod outputs;
mod recovery;
mod serving;
mod victim;

use election::Election;
pub use election::{
    COLLECT_WINDOW_MS, ELECTION_STAGGER_MS, LEASE_FRACTION, LOAD_HOLD_MS, LOAD_MARGIN,
    LOAD_REELECTION_MS, RETURN_REELECTION_MS, RETURN_SETTLE_MS,
};
pub use outputs::{CoreStatus, Event, MemberStatus, Output};
pub use recovery::{ANTI_ENTROPY_MS, SYNC_RETRY_MS};
pub use serving::{Arrival, Via, RESEND_WINDOW_MS};
use victim::VictimSchedule;
pub use victim::{MIN_FAILURE_MS, VICTIM_SETTLE_MS};

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
    /// The static split (the baseline): each client request is served by the member its id
    /// hashes to, with no coordinator, claim or commit; HTTP requests are refused.
    pub static_split: bool,
}

/// One member as this node sees it.
#[derive(Clone, Debug)]
struct Member {
    detector: Detector,
    state: NodeState,
    load: f64,
    cost: f64,
    epoch: Epoch,
    coordinator: Option<NodeId>,
    digest: String,
    /// Since when this member has been up without a break (None: not up).
    up_since: Option<Millis>,
    /// Whether the coordinator already counted this member's current up period.
    return_seen: bool,
    digest_differs_since: Option<Millis>,
    last_sync_request: Option<Millis>,
    /// Until when this member is an elected victim of the failure simulation: down, whatever
    /// its detector says (it was told to go silent; nobody needs to detect it).
    down_until: Millis,
}

/// The protocol core of one node.
pub struct Node {
    id: NodeId,
    members: Vec<NodeId>,
    static_split: bool,
    timing: Timing,
    failures: FailureSim,
    rng: StdRng,
    started_at: Millis,
    /// Active, Failed or Recovering, with what only that role keeps.
    role: Role,
    epoch: Epoch,
    coordinator: Option<NodeId>,
    /// Highest epoch this node voted in (it votes at most once per epoch).
    voted: Epoch,
    /// Highest epoch seen in any message.
    max_epoch_seen: Epoch,
    /// The election bookkeeping: the round this node runs as candidate, when the next is due.
    election: Election,
    others: BTreeMap<NodeId, Member>,
    load: f64,
    cost: f64,
    dispatcher: Dispatcher,
    /// Whether this node takes over the requests no coordinator assigns (see
    /// [`Node::take_over_stalled`]); updated every tick.
    takeover_mode: bool,
    claims: Claims,
    /// Claims, answers and commits per member, until the next flush.
    outbox: BTreeMap<NodeId, ClaimBatch>,
    /// The connection the message being handled came over (see [`Node::step_on_link`]).
    link: u64,
    /// Whether this process has been Active (merged a majority's state) since it started: only
    /// then does it vote on claims (votes given before a restart are lost).
    synced: bool,
    /// Requests the log says this node won, learned from others: commits of a previous run of
    /// this node (this process makes its own commits itself), with when they were learned.
    inherited: HashSet<LogKey>,
    inherited_order: VecDeque<(Millis, LogKey)>,
    replicated: ReplicatedState,
    digest: Option<String>,
    last_recovery_ms: Option<u64>,
    next_heartbeat: Millis,
    /// When this node, as coordinator, picks the next victim of the failure simulation.
    victims: VictimSchedule,
    out: Vec<Output>,
}

/// What a node is doing, with what only that role keeps (toydb's `Node::{Follower, Candidate,
/// Leader}` is the model): a Failed node only waits for its end; a Recovering node tracks whose
/// state it has merged and when it asks the others again.
#[derive(Clone, Debug)]
enum Role {
    /// Serving: takes part in elections and serves requests.
    Active,
    /// Simulated failure: silent to members and clients until `until`.
    Failed { until: Millis },
    /// Catching up with a majority before it serves again.
    Recovering(Recovery),
}

/// A Recovering node's progress.
#[derive(Clone, Debug)]
struct Recovery {
    /// When it began to recover.
    since: Millis,
    /// The members whose state it has merged.
    heard: BTreeSet<NodeId>,
    /// When it asks the members that have not answered again.
    next_ask: Millis,
}

impl Role {
    /// A node that begins to recover at `now`.
    fn recovering(now: Millis) -> Role {
        Role::Recovering(Recovery {
            since: now,
            heard: BTreeSet::new(),
            next_ask: now,
        })
    }

    /// The state members and status pages see.
    fn state(&self) -> NodeState {
        match self {
            Role::Active => NodeState::Active,
            Role::Failed { .. } => NodeState::Failed,
            Role::Recovering(_) => NodeState::Recovering,
        }
    }
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
        let others = members
            .iter()
            .filter(|&&m| m != config.id)
            .map(|&m| {
                let member = Member {
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
                    down_until: 0,
                };
                (m, member)
            })
            .collect();
        let mut node = Node {
            id: config.id,
            members,
            static_split: config.static_split,
            timing: t,
            failures: config.failures,
            rng: StdRng::seed_from_u64(
                config.seed ^ u64::from(config.id).wrapping_mul(0x9E37_79B9),
            ),
            started_at: now,
            role: Role::recovering(now),
            epoch: 0,
            coordinator: None,
            voted: 0,
            max_epoch_seen: 0,
            election: Election::new(now),
            others,
            load: 0.0,
            cost: 0.0,
            dispatcher: Dispatcher::default(),
            takeover_mode: false,
            claims: Claims::default(),
            outbox: BTreeMap::new(),
            link: 0,
            synced: false,
            inherited: HashSet::new(),
            inherited_order: VecDeque::new(),
            replicated: ReplicatedState::default(),
            digest: None,
            last_recovery_ms: None,
            next_heartbeat: now,
            victims: VictimSchedule::default(),
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
        self.role.state()
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
        self.coordinator == Some(self.id) && self.state() == NodeState::Active
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

    fn member_alive(&self, id: NodeId, now: Millis) -> bool {
        self.others
            .get(&id)
            .is_some_and(|p| p.detector.is_alive(now))
    }

    /// A member is up when it is alive, says it is Active and is not an elected victim.
    fn member_up(&self, id: NodeId, now: Millis) -> bool {
        self.others.get(&id).is_some_and(|p| {
            p.detector.is_alive(now) && p.state == NodeState::Active && now >= p.down_until
        })
    }

    /// The members this node hears from (its failure detector's view).
    pub fn live_members(&self, now: Millis) -> Vec<NodeId> {
        self.others
            .keys()
            .copied()
            .filter(|&p| self.member_alive(p, now))
            .collect()
    }

    fn up_or_self(&self, id: NodeId, now: Millis) -> bool {
        id == self.id || self.member_up(id, now)
    }

    /// Members heard from within `window` milliseconds.
    fn heard_within(&self, now: Millis, window: u64) -> usize {
        self.others
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
            .others
            .keys()
            .filter(|&&p| self.member_alive(p, now))
            .count()
            >= self.majority()
    }

    fn changed(&mut self) {
        self.digest = None;
    }

    fn bump_counters(&mut self, f: impl FnOnce(&mut Counters)) {
        let entry = self.replicated.counters.entry(self.id).or_default();
        f(entry);
        self.changed();
    }

    // ----- input ---------------------------------------------------------------------------

    /// Tells the core that the (latest) connection from `member` closed: the member is suspected
    /// at once, and the votes for its claims are released ([`Node::release_votes`]).
    pub fn member_disconnected(&mut self, now: Millis, member: NodeId) {
        if let Some(p) = self.others.get_mut(&member) {
            p.detector.disconnected();
        }
        // The latest connection: every older one is gone too.
        self.release_votes(now, member, u64::MAX);
    }

    /// Handles one message from a member that came over the driver's connection number `link`
    /// (the votes it causes are released when that connection closes; see
    /// [`Node::release_votes`]).
    pub fn step_on_link(&mut self, now: Millis, envelope: Envelope, link: u64) -> Vec<Output> {
        self.link = link;
        let out = self.step(now, envelope);
        self.link = 0;
        out
    }

    /// Handles one message from a member (over connection 0: a driver that does not number its
    /// connections, such as the simulator, releases votes only with [`Node::member_disconnected`]).
    pub fn step(&mut self, now: Millis, envelope: Envelope) -> Vec<Output> {
        let from = envelope.from;
        if self.state() == NodeState::Failed || from == self.id || !self.others.contains_key(&from)
        {
            return Vec::new();
        }
        let epoch = envelope.epoch;
        self.max_epoch_seen = self.max_epoch_seen.max(epoch);
        if let Some(p) = self.others.get_mut(&from) {
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
            Message::SyncRequest(summaries) => self.on_sync_request(from, &summaries),
            Message::SyncResponse(snapshot) => self.on_sync_response(now, from, epoch, *snapshot),
        }
        self.take_output()
    }

    fn on_heartbeat(&mut self, now: Millis, from: NodeId, epoch: Epoch, hb: Heartbeat) {
        if self.replicated.merge_counters(from, &hb.counters) {
            self.changed();
        }
        if self.replicated.log.advance(hb.log_gen) {
            self.changed();
        }
        let my_digest = self.digest();
        if let Some(p) = self.others.get_mut(&from) {
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

    // ----- time ----------------------------------------------------------------------------

    /// Advances the core to `now`.
    pub fn tick(&mut self, now: Millis) -> Vec<Output> {
        if let Role::Failed { until } = self.role {
            if now < until {
                return Vec::new();
            }
            for p in self.others.values_mut() {
                p.detector.reset();
                p.up_since = None;
            }
            self.enter_recovering(now, "simulated failure over");
        }
        self.track_members(now);
        if self.replicated.log.advance(gen_at(now)) {
            self.changed();
        }
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
                state: self.state(),
                load: self.load,
                cost: self.cost,
                coordinator: self.coordinator,
                digest: self.digest(),
                counters: self.replicated.counters(self.id),
                log_gen: self.replicated.log.current(),
            };
            self.broadcast_at(self.epoch, Message::Heartbeat(hb));
        }
        match self.state() {
            NodeState::Recovering => self.drive_recovery(now),
            NodeState::Active => self.drive_active(now),
            NodeState::Failed => {}
        }
        self.flush()
    }

    fn track_members(&mut self, now: Millis) {
        for p in self.others.values_mut() {
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
            Some(c) if !self.member_up(c, now) => {
                self.lose_coordinator(format!("coordinator {c} suspected"));
            }
            _ => {}
        }
        if self.election.round.is_some() {
            self.drive_round(now);
        } else if self.coordinator.is_none() {
            self.maybe_start_election(now);
        }
        if self.is_coordinator() {
            self.assign_waiting(now);
            if self.election.round.is_none() {
                self.coordinator_duties(now);
            }
        } else if let Some(c) = self.coordinator.filter(|&c| self.member_up(c, now)) {
            let ids = self.dispatcher.due_reports(now);
            if !ids.is_empty() {
                self.send(c, Message::Unassigned { ids });
            }
        }
        if !self.is_coordinator() {
            self.take_over_stalled(now);
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
            static_split: false,
        }
    }

    #[test]
    fn a_new_node_recovers_before_it_acts() {
        let mut n = Node::new(config(1), 0);
        let out = n.tick(0);
        assert_eq!(n.state(), NodeState::Recovering);
        let asks = out
            .iter()
            .filter(|o| matches!(o, Output::Send { envelope, .. } if matches!(envelope.message, Message::SyncRequest(_))))
            .count();
        assert_eq!(asks, 2, "asks both members for their state");
    }

    /// A one-node cluster, ticked for a second: it has elected itself.
    fn single_node_elected() -> Node {
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
        n
    }

    #[test]
    fn a_single_node_cluster_elects_itself() {
        let n = single_node_elected();
        assert_eq!(n.state(), NodeState::Active);
        assert_eq!(n.coordinator(), Some(1));
    }

    fn from(member: NodeId, message: Message) -> Envelope {
        Envelope::new(member, 0, message)
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

    /// A claim of request `a` from `member`; returns the answers sent back.
    fn claim_a(n: &mut Node, now: Millis, member: NodeId) -> Vec<(RequestId, NodeId)> {
        let batch = ClaimBatch {
            claims: vec!["a".into()],
            ..ClaimBatch::default()
        };
        n.step(now, from(member, Message::Claims(batch)));
        n.flush()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, envelope } if to == member => match envelope.message {
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
        n.member_disconnected(50, 2);
        assert_eq!(
            claim_a(&mut n, 60, 3),
            vec![("a".to_string(), 3), ("a".to_string(), 3)],
            "node 2's connection closed without a commit: its vote goes to node 3, refused \
             before, which is told at once (and answered again)"
        );
        // A commit answers for the vote from then on.
        let commit = ClaimBatch {
            served: vec![("a".into(), 3, 0)],
            ..ClaimBatch::default()
        };
        n.step(70, from(3, Message::Claims(commit)));
        assert_eq!(n.replicated().log.server_of("a"), Some(3));
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
        assert_eq!(claims, vec![2, 3], "claimed from every member");
        let answer = |winner| ClaimBatch {
            acks: vec![("y".into(), winner)],
            ..ClaimBatch::default()
        };
        assert!(n.step(20, from(2, Message::Claims(answer(3)))).is_empty());
        assert!(
            n.step(21, from(3, Message::Claims(answer(3)))).is_empty(),
            "two of three name node 3: the result waits for its commit"
        );
        let commit = ClaimBatch {
            served: vec![("y".into(), 3, 0)],
            ..ClaimBatch::default()
        };
        assert_eq!(
            n.step(22, from(3, Message::Claims(commit))),
            vec![Output::Drop("y".into())]
        );
        assert!(n.job_finished(30, "z").is_empty());
        assert_eq!(
            n.step(31, from(3, Message::Claims(answer_z(1)))),
            vec![Output::Reply("z".into())]
        );
        assert_eq!(n.replicated().log.server_of("z"), Some(1));
    }

    /// Issue 32: who takes a request in was decided in the shell (and copied in the
    /// simulator); now the core decides, in one place.
    #[test]
    fn the_core_decides_who_takes_a_request_in() {
        let mut active = single_node_elected();
        assert_eq!(active.arrival("a", &[], Via::Http), Arrival::Hold);
        assert_eq!(active.arrival("a", &[], Via::Client), Arrival::Hold);
        assert_eq!(active.arrival("a", &[], Via::Member), Arrival::Hold);
        let mut starting = Node::new(config(1), 0);
        assert_eq!(
            starting.arrival("a", &[], Via::Http),
            Arrival::Refuse("no coordinator with a majority")
        );
        assert_eq!(starting.arrival("a", &[], Via::Client), Arrival::Hold);

        // The static split: a member's own share is served at once, the others' ignored.
        let mut split = Node::new(
            NodeConfig {
                static_split: true,
                ..config(1)
            },
            0,
        );
        let members = [1, 2, 3];
        let id_of = |owner| {
            (0..)
                .map(|i| format!("r{i}"))
                .find(|id| crate::cluster::dispatch::static_owner(id, &members) == Some(owner))
                .unwrap()
        };
        assert_eq!(
            split.arrival(&id_of(1), &[], Via::Client),
            Arrival::ServeShare
        );
        assert_eq!(split.arrival(&id_of(2), &[], Via::Client), Arrival::Ignore);
        assert!(matches!(
            split.arrival("x", &[], Via::Http),
            Arrival::Refuse(_)
        ));

        // A node in a simulated failure takes nothing in and refuses over HTTP.
        let mut victim = Node::new(config(1), 0);
        victim.step(5, synced_from_2(ReplicatedState::default()));
        let record = FailureRecord {
            epoch: 0,
            seq: 1,
            victim: 1,
            duration_ms: 5_000,
        };
        victim.step(20, from(2, Message::Fail(record)));
        assert!(victim.silent());
        assert_eq!(victim.arrival("a", &[], Via::Client), Arrival::Ignore);
        assert_eq!(victim.arrival("a", &[], Via::Member), Arrival::Ignore);
        assert_eq!(
            victim.arrival("a", &[], Via::Http),
            Arrival::Refuse("this node is in a (simulated) failure")
        );
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

        // A member forgets its vote for the claimant that withdrew, and only for that one.
        let mut member = Node::new(config(1), 0);
        member.step(5, caught_up());
        assert_eq!(claim_a(&mut member, 10, 2), vec![("a".to_string(), 2)]);
        let withdraw = || {
            Message::Claims(ClaimBatch {
                withdrawn: vec!["a".into()],
                ..ClaimBatch::default()
            })
        };
        member.step(20, from(3, withdraw()));
        assert_eq!(
            claim_a(&mut member, 30, 3),
            vec![("a".to_string(), 2)],
            "node 3 cannot withdraw node 2's claim"
        );
        member.step(40, from(2, withdraw()));
        assert_eq!(
            claim_a(&mut member, 50, 3),
            vec![("a".to_string(), 3), ("a".to_string(), 3)],
            "the vote goes to node 3, refused before: told at once, and answered again"
        );
    }

    /// Issue 30: a result whose claim both members answered with a takeover's node was dropped;
    /// the takeover then withdrew, and the request waited 8 s for a later failure to free it.
    /// Now the result waits, and wins when a voter gives its vote again.
    #[test]
    fn a_result_that_cannot_win_yet_waits_and_wins_when_a_vote_is_given_again() {
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(ReplicatedState::default()));
        assert!(n.job_finished(10, "r").is_empty());
        n.flush();
        let answer = |winner| {
            Message::Claims(ClaimBatch {
                acks: vec![("r".into(), winner)],
                ..ClaimBatch::default()
            })
        };
        assert!(n.step(11, from(3, answer(2))).is_empty());
        assert!(
            n.step(12, from(2, answer(2))).is_empty(),
            "both name node 2's takeover: the result is kept"
        );
        assert_eq!(
            n.step(13, from(3, answer(1))),
            vec![Output::Reply("r".into())],
            "node 3's vote, given again after node 2 withdrew"
        );
    }

    /// Issue 27: a claim given up at its TTL kept the members' votes for it, so no other node
    /// could ever win the request.
    #[test]
    fn a_claim_given_up_is_withdrawn_from_every_member() {
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(ReplicatedState::default()));
        assert!(n.job_finished(10, "y").is_empty(), "waits for a majority");
        n.flush();
        let out = n.tick(10 + crate::cluster::claims::CLAIM_TTL_MS);
        assert!(out.contains(&Output::Drop("y".into())), "{out:?}");
        let withdrawn: Vec<(NodeId, Vec<RequestId>)> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, envelope } => match envelope.message {
                    Message::Claims(b) if !b.withdrawn.is_empty() => Some((to, b.withdrawn)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(
            withdrawn,
            vec![(2, vec!["y".into()]), (3, vec!["y".into()])]
        );
    }

    /// Issue 27: commits learned from a sync left their held requests and votes behind.
    #[test]
    fn commits_merged_from_a_sync_forget_held_requests_and_votes() {
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(ReplicatedState::default()));
        assert!(n.request_arrived(10, "q").is_empty());
        assert_eq!(claim_a(&mut n, 20, 2), vec![("a".to_string(), 2)]);
        let mut log = ReplicatedState::default();
        log.log.record("q", 3, 0);
        log.log.record("a", 2, 0);
        let out = n.step(30, synced_from_2(log));
        assert!(out.contains(&Output::Forget("q".into())), "{out:?}");
        assert_eq!(n.status(30).held, 0);
        assert_eq!(
            n.claims.votes(),
            0,
            "the vote for a is answered by the log now"
        );
    }

    /// Issue 27: epochs come from members; the next election's epoch overflowed on the largest.
    #[test]
    fn an_absurd_epoch_from_a_member_does_not_overflow_the_next_election() {
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(ReplicatedState::default()));
        let mut hostile = from(3, Message::Election);
        hostile.epoch = Epoch::MAX;
        n.step(6, hostile);
        n.start_election(7, "test".into());
        assert_eq!(n.voted, Epoch::MAX);
    }

    #[test]
    fn a_restarted_node_answers_a_resent_request_its_previous_run_won_once() {
        let mut previous = ReplicatedState::default();
        previous.log.record("a", 1, 0);
        previous.log.record("b", 2, 0);
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(previous));
        assert!(!n.answers_again("b", &[]), "another node's commit");
        assert!(n.answers_again("a", &[]));
        assert!(!n.answers_again("a", &[]), "once");
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
        assert!(!single.answers_again("c", &[]));
        // And what it learned is forgotten after the window.
        let mut m = Node::new(config(1), 0);
        let mut log = ReplicatedState::default();
        log.log.record("d", 1, 0);
        m.step(5, synced_from_2(log));
        m.tick(5 + RESEND_WINDOW_MS);
        assert!(!m.answers_again("d", &[]));
    }

    /// Issue 27: a winner that died (or whose client connection broke) between its commit and
    /// its reply left the request unanswered: the survivors had forgotten it.
    #[test]
    fn a_survivor_answers_a_request_resent_after_the_connection_to_its_winner_closed() {
        let mut state = ReplicatedState::default();
        state.log.record("w2", 2, 0);
        state.log.record("w3", 3, 0);
        let mut n = Node::new(config(1), 0);
        n.step(5, synced_from_2(state));
        assert!(!n.answers_again("w2", &[]), "no connection closed");
        assert!(!n.answers_again("w2", &[3]), "node 3 did not win w2");
        assert!(
            !n.answers_again("new", &[2]),
            "not committed: served as usual"
        );
        assert!(n.answers_again("w2", &[2]));
        assert!(
            n.answers_again("w3", &[2, 3]),
            "the winner's and another's closed"
        );
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
