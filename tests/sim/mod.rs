//! A deterministic simulator for the protocol core: N [`Node`]s, a virtual clock in
//! milliseconds, a network with seeded random latency, directed link cuts (partitions),
//! crashes (the members see the connection close, like SIGKILL), stops (silence without a close,
//! like SIGSTOP) and restarts. After every step it checks the safety invariants:
//! at most one coordinator per epoch, and never two nodes acting as coordinator at once.
//!
//! The shell's part of a request is modelled too: a node's job finishes after its service
//! time and the node keeps the result ([`Node::job_finished`]); a client reply is counted when
//! the core says [`Output::Reply`], a discarded result when it says [`Output::Drop`]. Every
//! node's batched claims are flushed at the end of each simulated millisecond.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use imgcloud::cluster::log::{GenSummary, GEN_MS};
use imgcloud::cluster::message::{Envelope, Message, NodeState, PROTOCOL_VERSION};
use imgcloud::cluster::node::{Arrival, Event, Node, NodeConfig, Output, Via, ANTI_ENTROPY_MS};
use imgcloud::config::{FailureSim, Timing};
use imgcloud::ids::{Epoch, Millis, NodeId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How often the simulator ticks each node.
pub const TICK_MS: Millis = 10;
/// Default service time of one encryption.
pub const SERVICE_MS: Millis = 20;

/// Something scheduled on the simulated network or in a node's shell.
enum Due {
    /// A member message reaches a node.
    Deliver(NodeId, Envelope),
    /// A client's request reaches a node.
    Arrive(NodeId, String),
    /// A node's encryption job finishes.
    Finish(NodeId, String),
    /// A node sees the connection from a member close.
    Closed(NodeId, NodeId),
}

/// The longest one-way message latency.
const MAX_LATENCY_MS: Millis = 3;

pub struct Sim {
    pub now: Millis,
    pub members: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, Node>,
    /// Nodes that are stopped: they neither tick nor receive, but their links stay "open".
    pub stopped: BTreeSet<NodeId>,
    pub loads: BTreeMap<NodeId, f64>,
    /// Directed links that drop every message.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    queue: BTreeMap<(Millis, u64), Due>,
    /// Service time of an encryption on each node (default [`SERVICE_MS`]).
    pub service_ms: BTreeMap<NodeId, Millis>,
    /// Every reply a client received (an [`Output::Reply`]): (time, request, server).
    pub replies: Vec<(Millis, String, NodeId)>,
    /// Every finished result a node discarded (an [`Output::Drop`]): (time, request, node).
    pub drops: Vec<(Millis, String, NodeId)>,
    /// Every job that finished on a running node: (time, request, node).
    pub finished: Vec<(Millis, String, NodeId)>,
    /// Every encryption started: (request, node).
    pub serves: Vec<(String, NodeId)>,
    jobs: BTreeMap<NodeId, usize>,
    seq: u64,
    rng: StdRng,
    failures: FailureSim,
    seed: u64,
    /// Every event, with its time and node.
    pub events: Vec<(Millis, NodeId, Event)>,
    /// Every coordinator seen acting, per epoch.
    pub coordinators: BTreeMap<Epoch, BTreeSet<NodeId>>,
    /// Messages sent, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    checked_events: usize,
}

impl Sim {
    /// A cluster of `n` nodes, none started yet.
    pub fn new(n: u32, seed: u64) -> Self {
        Sim {
            now: 0,
            members: (1..=n).collect(),
            nodes: BTreeMap::new(),
            stopped: BTreeSet::new(),
            loads: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: BTreeMap::new(),
            service_ms: BTreeMap::new(),
            replies: Vec::new(),
            drops: Vec::new(),
            finished: Vec::new(),
            serves: Vec::new(),
            jobs: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            failures: FailureSim {
                enabled: false,
                ..FailureSim::default()
            },
            seed,
            events: Vec::new(),
            coordinators: BTreeMap::new(),
            sent: BTreeMap::new(),
            checked_events: 0,
        }
    }

    /// A started three-node cluster that agrees on a coordinator.
    pub fn settled(seed: u64) -> Self {
        let mut sim = Sim::new(3, seed);
        sim.start_all();
        sim.run_until(2_000, |s| s.all_agree())
            .expect("the cluster agrees on a coordinator");
        sim
    }

    /// Turns the elected-victim failure simulation on.
    pub fn with_failures(mut self, period_s: f64, max_s: f64) -> Self {
        self.failures = FailureSim {
            enabled: true,
            period_s,
            max_s,
            ..FailureSim::default()
        };
        self
    }

    /// Chooses who the first elected victim is.
    pub fn first_victim(mut self, first: imgcloud::config::FirstVictim) -> Self {
        self.failures.first = first;
        self
    }

    /// Turns the failure simulation off for nodes started from now on, and on running ones.
    pub fn failures_off(&mut self) {
        self.failures.enabled = false;
        for node in self.nodes.values_mut() {
            node.set_failures_enabled(false);
        }
    }

    /// Starts (or restarts, with empty memory) node `id` now.
    pub fn start(&mut self, id: NodeId) {
        let config = NodeConfig {
            id,
            members: self.members.clone(),
            timing: Timing::default(),
            failures: self.failures,
            seed: self.seed,
            static_split: false,
        };
        self.stopped.remove(&id);
        self.jobs.remove(&id);
        self.nodes.insert(id, Node::new(config, self.now));
    }

    /// Starts every node at once.
    pub fn start_all(&mut self) {
        for id in self.members.clone() {
            self.start(id);
        }
    }

    /// Kills a node: its members see the connection close.
    pub fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.jobs.remove(&id);
        self.stopped.remove(&id);
        // As over TCP, what the dead node sent still arrives, and its close comes after that.
        for other in self.members.clone() {
            if other != id {
                self.schedule(MAX_LATENCY_MS + 1, Due::Closed(other, id));
            }
        }
    }

    /// Stops a node (SIGSTOP): silent, connections stay open.
    pub fn stop(&mut self, id: NodeId) {
        self.stopped.insert(id);
    }

    /// Resumes a stopped node (SIGCONT).
    pub fn resume(&mut self, id: NodeId) {
        self.stopped.remove(&id);
    }

    /// Cuts `a` off from every other node, both ways.
    pub fn isolate(&mut self, a: NodeId) {
        for &b in &self.members {
            if a != b {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Delivers a hand-made envelope to `to` now (for stale-message tests).
    pub fn inject(&mut self, to: NodeId, from: NodeId, epoch: Epoch, message: Message) {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            from,
            epoch,
            message,
        };
        self.schedule(0, Due::Deliver(to, envelope));
    }

    fn schedule(&mut self, after: Millis, due: Due) {
        let seq = self.next_seq();
        self.queue.insert((self.now + after, seq), due);
    }

    /// A client sends request `id` to every node (each copy with its own latency).
    pub fn client_request(&mut self, id: &str) {
        for to in self.members.clone() {
            let latency = self.rng.gen_range(1..=MAX_LATENCY_MS);
            self.schedule(latency, Due::Arrive(to, id.to_string()));
        }
    }

    /// Makes node `on` finish a job for `id` now, as if it had served it (e.g. a server that
    /// lost a reassignment race): its core claims the request.
    pub fn force_finish(&mut self, on: NodeId, id: &str) {
        self.schedule(0, Due::Finish(on, id.to_string()));
    }

    /// Encryptions started for `id`, by node.
    pub fn serves_for(&self, id: &str) -> Vec<NodeId> {
        self.serves
            .iter()
            .filter(|(r, _)| r == id)
            .map(|(_, n)| *n)
            .collect()
    }

    /// Replies received for `id`.
    pub fn replies_for(&self, id: &str) -> Vec<NodeId> {
        self.replies
            .iter()
            .filter(|(_, r, _)| r == id)
            .map(|(_, _, n)| *n)
            .collect()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn route(&mut self, from: NodeId, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, envelope } => {
                    *self.sent.entry(envelope.message.kind()).or_default() += 1;
                    if self.cut.contains(&(from, to)) {
                        continue;
                    }
                    let latency = self.rng.gen_range(1..=MAX_LATENCY_MS);
                    self.schedule(latency, Due::Deliver(to, envelope));
                }
                Output::Event(event) => self.events.push((self.now, from, event)),
                Output::Serve(id) => {
                    self.serves.push((id.clone(), from));
                    *self.jobs.entry(from).or_default() += 1;
                    let took = self.service_ms.get(&from).copied().unwrap_or(SERVICE_MS);
                    self.schedule(took, Due::Finish(from, id));
                }
                Output::Reply(id) => self.replies.push((self.now, id, from)),
                Output::Drop(id) => self.drops.push((self.now, id, from)),
                Output::Forget(_) => {}
            }
        }
    }

    fn runnable(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id) && !self.stopped.contains(&id)
    }

    /// Runs the cluster for `ms` milliseconds of virtual time, checking invariants.
    pub fn run(&mut self, ms: Millis) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 1;
            while let Some((&(at, seq), _)) = self.queue.first_key_value() {
                if at > self.now {
                    break;
                }
                let due = self.queue.remove(&(at, seq)).expect("present");
                let now = self.now;
                match due {
                    Due::Deliver(to, envelope) => {
                        if !self.runnable(to) || self.cut.contains(&(envelope.from, to)) {
                            continue;
                        }
                        let out = self
                            .nodes
                            .get_mut(&to)
                            .expect("runnable")
                            .step(now, envelope);
                        self.route(to, out);
                    }
                    Due::Arrive(to, id) => {
                        if !self.runnable(to) {
                            continue;
                        }
                        // The node decides whether it takes the request in, as in a process.
                        let node = self.nodes.get_mut(&to).expect("runnable");
                        if node.arrival(&id, &[], Via::Client) != Arrival::Hold {
                            continue;
                        }
                        let out = node.request_arrived(now, &id);
                        self.route(to, out);
                    }
                    Due::Closed(on, member) => {
                        if let Some(node) = self.nodes.get_mut(&on) {
                            node.member_disconnected(now, member);
                        }
                    }
                    Due::Finish(on, id) => {
                        if let Some(n) = self.jobs.get_mut(&on) {
                            *n = n.saturating_sub(1);
                        }
                        // A crashed node's jobs die with it; a failed node stays silent.
                        if !self.runnable(on) || self.nodes[&on].silent() {
                            continue;
                        }
                        self.finished.push((now, id.clone(), on));
                        let out = self
                            .nodes
                            .get_mut(&on)
                            .expect("runnable")
                            .job_finished(now, &id);
                        self.route(on, out);
                    }
                }
            }
            // The shell flushes the batched claims after each burst of inputs.
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if self.runnable(id) {
                    let out = self.nodes.get_mut(&id).expect("present").flush();
                    self.route(id, out);
                }
            }
            if self.now.is_multiple_of(TICK_MS) {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for id in ids {
                    if !self.runnable(id) {
                        continue;
                    }
                    // Loads set by a test win; otherwise the shell's formula over the jobs.
                    let cost =
                        self.service_ms.get(&id).copied().unwrap_or(SERVICE_MS) as f64 / 1000.0;
                    let jobs = self.jobs.get(&id).copied().unwrap_or(0);
                    let load = self
                        .loads
                        .get(&id)
                        .copied()
                        .unwrap_or((jobs + 1) as f64 * cost);
                    let now = self.now;
                    let node = self.nodes.get_mut(&id).expect("present");
                    node.set_load(load, cost);
                    let out = node.tick(now);
                    self.route(id, out);
                }
                self.check_invariants();
            }
        }
    }

    /// Runs until `pred` holds (checked every tick) or `limit` ms pass; returns the time taken.
    pub fn run_until(
        &mut self,
        limit: Millis,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Option<Millis> {
        let start = self.now;
        while self.now < start + limit {
            if pred(self) {
                return Some(self.now - start);
            }
            self.run(TICK_MS);
        }
        pred(self).then(|| self.now - start)
    }

    fn check_invariants(&mut self) {
        let acting: Vec<(NodeId, Epoch)> = self
            .nodes
            .iter()
            .filter(|(id, n)| !self.stopped.contains(id) && n.is_coordinator())
            .map(|(&id, n)| (id, n.epoch()))
            .collect();
        for &(id, epoch) in &acting {
            self.coordinators.entry(epoch).or_default().insert(id);
        }
        for (_, _, event) in &self.events[self.checked_events..] {
            if let Event::Elected {
                epoch, coordinator, ..
            } = event
            {
                self.coordinators
                    .entry(*epoch)
                    .or_default()
                    .insert(*coordinator);
            }
        }
        self.checked_events = self.events.len();
        for (epoch, set) in &self.coordinators {
            assert!(
                set.len() <= 1,
                "t={} epoch {epoch} has coordinators {set:?}",
                self.now
            );
        }
        assert!(
            acting.len() <= 1,
            "t={} several nodes act as coordinator: {acting:?}",
            self.now
        );
    }

    /// The coordinator every running, active node agrees on, if they all agree.
    pub fn agreed(&self) -> Option<NodeId> {
        let views: BTreeSet<Option<NodeId>> = self
            .nodes
            .iter()
            .filter(|(id, _)| !self.stopped.contains(id))
            .map(|(_, n)| {
                if n.state() == NodeState::Active {
                    n.coordinator()
                } else {
                    None
                }
            })
            .collect();
        match views.iter().next() {
            Some(&Some(c)) if views.len() == 1 => Some(c),
            _ => None,
        }
    }

    /// Whether all running nodes agree on a coordinator.
    pub fn all_agree(&self) -> bool {
        self.agreed().is_some() && self.nodes.len() == self.members.len()
    }

    /// The highest epoch of any node.
    pub fn max_epoch(&self) -> Epoch {
        self.nodes.values().map(|n| n.epoch()).max().unwrap_or(0)
    }

    /// Whether every running node has the same digest.
    pub fn converged(&mut self) -> bool {
        let stopped = self.stopped.clone();
        let states: BTreeSet<(String, Vec<GenSummary>)> = self
            .nodes
            .iter_mut()
            .filter(|(id, _)| !stopped.contains(id))
            .map(|(_, n)| (n.digest(), n.replicated().log.summaries()))
            .collect();
        states.len() == 1
    }

    /// Runs until every generation of the request log that holds a commit made so far is
    /// sealed and anti-entropy has had time to repair it (commits lost with a cut link are
    /// repaired only then; see `imgcloud::cluster::log`).
    pub fn seal_logs(&mut self) {
        self.run(2 * GEN_MS + 2 * ANTI_ENTROPY_MS + 500);
    }

    /// How many elections were decided (distinct epochs with a result).
    pub fn elections(&self) -> usize {
        self.events
            .iter()
            .filter_map(|(_, _, e)| match e {
                Event::Elected { epoch, .. } => Some(*epoch),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The state changes of one node, in order.
    pub fn transitions(&self, id: NodeId) -> Vec<NodeState> {
        self.events
            .iter()
            .filter(|(_, n, _)| *n == id)
            .filter_map(|(_, _, e)| match e {
                Event::StateChanged { to, .. } => Some(*to),
                _ => None,
            })
            .collect()
    }
}
