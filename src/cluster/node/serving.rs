//! Serving: assignment, claim, reply.
//!
//! See [`crate::cluster::dispatch`]. The coordinator assigns each request to one server
//! ([`Output::Serve`]). When the job is done the driver keeps the result and calls
//! [`Node::job_finished`]; the core claims the request from every member and answers with
//! [`Output::Reply`] once a majority (this node included) holds it as the winner, or
//! [`Output::Drop`] once it cannot win (or the request log names another server). Claims,
//! answers and commits are gathered per member and leave on [`Node::flush`] (and every tick).

use super::*;
use crate::cluster::dispatch::{TAKEOVER_HOLD_MS, TAKEOVER_STEP_MS};

/// How long a restarted node remembers the commits of its previous run (see
/// [`Node::answers_again`]); longer than clients wait for a reply.
pub const RESEND_WINDOW_MS: u64 = 60_000;

/// How a request reached this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// From a client of the multicast protocol, which sends it to every node.
    Client,
    /// Over this node's HTTP API, which only this node got: it forwards it to the others.
    Http,
    /// Forwarded by the node whose HTTP API got it.
    Member,
}

/// What the driver does with a request that reached this node ([`Node::arrival`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Hold its payload and call [`Node::request_arrived`]; an HTTP request is first forwarded
    /// to every other node, and its reply comes back through this node.
    Hold,
    /// Serve it now and answer its client when done, with no claim: the static split's own
    /// share (unless this node serves it already).
    ServeShare,
    /// Serve it now and answer its client when done, with no claim: its reply was lost with
    /// its server's run or connection (the sentence says which, for the log).
    ServeAgain(String),
    /// Nothing: the other nodes have it (a node in a simulated failure, or another member's
    /// share of the static split).
    Ignore,
    /// Answer at once that this node cannot finish it, with this sentence.
    Refuse(&'static str),
}

impl Node {
    /// Tells the core that connection `link` from `member` closed (any, not only the latest):
    /// every uncommitted vote for `member` given over it (or an older one) goes to the first
    /// claimant it refused, who is told, so that a request `member` claimed and did not commit
    /// can be won by another server. The driver must have handed the core everything that
    /// connection carried first (it did: one reader per connection, in order), and must write
    /// a commit to every member before the reply it allows (see [`Output::Reply`]).
    pub fn release_votes(&mut self, now: Millis, member: NodeId, link: u64) {
        if member == self.id {
            return;
        }
        for again in self.claims.release(now, member, link) {
            self.tell(now, again);
        }
    }

    /// Sends a vote given again (see [`Reanswer`]) to the claimants it refused before.
    fn tell(&mut self, now: Millis, again: Reanswer) {
        let Some(winner) = again.winner else {
            return;
        };
        let members = self.members.len();
        for to in again.to {
            if to != self.id {
                self.outbox
                    .entry(to)
                    .or_default()
                    .acks
                    .push((again.id.clone(), winner));
            } else if self.claims.kind_of(&again.id).is_some() {
                if let Some(verdict) = self.claims.answer(&again.id, to, winner, members) {
                    self.decide_claim(now, &again.id, verdict);
                }
            } else if winner == self.id {
                // This node no longer claims it: the vote goes on to the next one refused.
                if let Some(next) = self.claims.withdraw(now, &again.id, self.id) {
                    self.tell(now, next);
                }
            }
        }
    }

    /// What to do with request `id`, which reached this node `via` (`resent_after`: the nodes
    /// whose connections to its client closed while it waited). The one place that decides
    /// who takes a request in; the driver only carries it out.
    pub fn arrival(&mut self, id: &str, resent_after: &[NodeId], via: Via) -> Arrival {
        let failed = self.state() == NodeState::Failed;
        match via {
            Via::Http if self.static_split => {
                Arrival::Refuse("a static-split baseline node serves the client protocol only")
            }
            Via::Http if failed => Arrival::Refuse("this node is in a (simulated) failure"),
            Via::Http if !self.accepting() => Arrival::Refuse("no coordinator with a majority"),
            // A failed node ignores its clients: the other nodes have the same request.
            _ if failed => Arrival::Ignore,
            Via::Client if self.static_split => {
                if crate::cluster::dispatch::static_owner(id, &self.members) == Some(self.id) {
                    Arrival::ServeShare
                } else {
                    Arrival::Ignore
                }
            }
            Via::Client if self.answers_again(id, resent_after) => {
                Arrival::ServeAgain(match self.server_of(id) {
                    Some(winner) if winner != self.id => format!(
                        "node {winner} won it and its connection to the client closed before \
                         its reply"
                    ),
                    _ => "this node (or a previous run of it) won it and its connection to the \
                          client closed before its reply"
                        .to_string(),
                })
            }
            _ => Arrival::Hold,
        }
    }

    /// Whether this node neither takes nor answers anything now: it is in a simulated
    /// failure, so its finished jobs and the replies passing through it are dropped.
    pub fn silent(&self) -> bool {
        self.state() == NodeState::Failed
    }

    /// Whether the request log says `id` was served.
    pub fn already_served(&self, id: &str) -> bool {
        self.replicated.log.contains(id)
    }

    /// Whether this node can take part in serving requests now: Active, with a coordinator.
    pub fn accepting(&self) -> bool {
        self.state() == NodeState::Active && self.coordinator.is_some()
    }

    /// A client's request reached this node; the driver holds its payload until it is told
    /// to serve ([`Output::Serve`]) or to forget it ([`Output::Forget`]).
    pub fn request_arrived(&mut self, now: Millis, id: &str) -> Vec<Output> {
        if self.state() == NodeState::Failed || self.already_served(id) {
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
        } else if self.takeover_mode {
            if let Some(order) = self.takeover_order(now) {
                self.try_take_over(now, id, 0, &order);
            }
        }
        self.take_output()
    }

    /// The driver's job for request `id` finished and it keeps the result: the core claims
    /// the request, and later says [`Output::Reply`] or [`Output::Drop`] for it (exactly one of
    /// them, unless the driver is told the same in this call's output).
    pub fn job_finished(&mut self, now: Millis, id: &str) -> Vec<Output> {
        if self.state() == NodeState::Failed {
            return vec![Output::Drop(id.to_string())];
        }
        self.bump_counters(|c| c.served += 1);
        if self.already_served(id) {
            // Committed already (by another node, or by this one for an earlier job).
            self.out.push(Output::Drop(id.to_string()));
            return self.take_output();
        }
        if self.claims.kind_of(id) == Some(ClaimKind::Takeover) {
            // Served on an assignment while its takeover was still being voted on: the result
            // is claimed now (the votes for this node stay).
            self.claims.close(id);
        }
        let own = self.synced.then(|| self.claims.vote(now, id, self.id, 0));
        let members = self.members.len();
        let opened = self
            .claims
            .claim(now, id, self.id, own, members, ClaimKind::Result);
        self.send_claim(now, id, opened);
        self.take_output()
    }

    /// Sends a claim just opened (`new`) to every member, and applies the verdict this node's own
    /// answer gave, if any.
    fn send_claim(&mut self, now: Millis, id: &str, (new, verdict): (bool, Option<Verdict>)) {
        if new {
            self.add_for_every_member(|batch| batch.claims.push(id.to_string()));
        }
        if let Some(verdict) = verdict {
            self.decide_claim(now, id, verdict);
        }
    }

    /// Adds to the batch every member gets at the next flush.
    pub(super) fn add_for_every_member(&mut self, mut add: impl FnMut(&mut ClaimBatch)) {
        for p in self.member_ids() {
            add(self.outbox.entry(p).or_default());
        }
    }

    /// The nodes that may serve: this one and every up member, with their costs.
    pub(super) fn candidates(&self, now: Millis) -> Vec<Candidate> {
        let mut candidates = vec![Candidate {
            id: self.id,
            cost: self.cost,
        }];
        for (&id, p) in &self.others {
            if self.member_up(id, now) {
                candidates.push(Candidate { id, cost: p.cost });
            }
        }
        candidates
    }

    /// The coordinator's load-balancing decision for one request.
    pub(super) fn assign(&mut self, now: Millis, id: &str, exclude: Option<NodeId>) {
        let candidates = self.candidates(now);
        let loads: Vec<(NodeId, f64)> = candidates
            .iter()
            .map(|c| (c.id, self.dispatcher.score(c)))
            .collect();
        let Some(assignment) = self
            .dispatcher
            .assign(now, self.epoch, id, &candidates, exclude)
        else {
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
    pub(super) fn assign_waiting(&mut self, now: Millis) {
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

    pub(super) fn on_assign(&mut self, now: Millis, from: NodeId, epoch: Epoch, a: Assignment) {
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

    /// A commit: `server` won `id` (a majority held it) and replied, in log generation `gen`.
    pub(super) fn on_served(&mut self, now: Millis, id: &str, server: NodeId, gen: Gen) {
        if self.replicated.log.record(id, server, gen) {
            self.changed();
            if server == self.id {
                self.inherit(now, log_key(id));
            }
        }
        self.claims.forget_vote(id);
        if self.dispatcher.served(id) {
            self.out.push(Output::Forget(id.to_string()));
        }
        if self.claims.close(id) == Some(ClaimKind::Result) {
            // Someone else's commit decided this node's open claim.
            self.out.push(Output::Drop(id.to_string()));
        }
    }

    pub(super) fn on_claims(&mut self, now: Millis, from: NodeId, batch: ClaimBatch) {
        for (id, server, gen) in batch.served {
            self.on_served(now, &id, server, gen);
        }
        let members = self.members.len();
        for (id, winner) in batch.acks {
            if let Some(verdict) = self.claims.answer(&id, from, winner, members) {
                self.decide_claim(now, &id, verdict);
            }
        }
        // Withdrawals before claims: a claim in the same batch came after the withdrawal.
        for id in batch.withdrawn {
            if let Some(again) = self.claims.withdraw(now, &id, from) {
                self.tell(now, again);
            }
        }
        for id in batch.claims {
            let winner = match self.replicated.log.server_of(&id) {
                Some(server) => server,
                None if self.synced => self.claims.vote(now, &id, from, self.link),
                // Restarted and not caught up: votes given before are lost, so give none yet
                // (the claimant asks again).
                None => continue,
            };
            self.outbox.entry(from).or_default().acks.push((id, winner));
        }
    }

    /// Applies the verdict on this node's claim of `id`.
    pub(super) fn decide_claim(&mut self, now: Millis, id: &str, verdict: Verdict) {
        let Some(kind) = self.claims.kind_of(id) else {
            return;
        };
        if (kind, verdict) == (ClaimKind::Result, Verdict::Lost) {
            // Kept open, result and all, until a commit decides it (or its time is up): the
            // winner the others hold may withdraw (a takeover gives up at the first answer
            // naming another node, possibly after some voters answered for it), and then their
            // answers are void and asked again.
            return;
        }
        self.claims.close(id);
        match (kind, verdict) {
            (ClaimKind::Result, Verdict::Won) => {
                let gen = self.replicated.log.current();
                if self.replicated.log.record(id, self.id, gen) {
                    self.changed();
                }
                self.claims.forget_vote(id);
                self.dispatcher.served(id);
                self.out.push(Output::Reply(id.to_string()));
                let me = self.id;
                self.add_for_every_member(|batch| batch.served.push((id.to_string(), me, gen)));
            }
            (ClaimKind::Result, Verdict::Lost) => {}
            (ClaimKind::Takeover, Verdict::Won) => {
                if self.dispatcher.take_over(id, self.id, self.epoch) {
                    self.bump_counters(|c| c.takeovers += 1);
                    self.out.push(Output::Serve(id.to_string()));
                } else if !self.dispatcher.is_serving(id) {
                    // The payload went meanwhile (committed elsewhere, or expired).
                    self.withdraw_claim(now, id);
                }
            }
            // Given up before serving: the request's assigned server (or a later one) wins.
            (ClaimKind::Takeover, Verdict::Lost) => self.withdraw_claim(now, id),
        }
    }

    /// Withdraws this node's claim of `id` (a takeover given up, or a result dropped): its own
    /// vote and the members' votes for it go, each to the first claimant it refused.
    pub(super) fn withdraw_claim(&mut self, now: Millis, id: &str) {
        if let Some(again) = self.claims.withdraw(now, id, self.id) {
            self.tell(now, again);
        }
        self.add_for_every_member(|batch| batch.withdrawn.push(id.to_string()));
    }

    /// The order in which the nodes this node hears take over a request, and this node's
    /// place in it; `None` while the coordinator has been heard within [`TAKEOVER_HOLD_MS`]
    /// (or this node is it), or without a majority to vote.
    fn takeover_order(&self, now: Millis) -> Option<(Vec<NodeId>, usize)> {
        if !self.synced || self.is_coordinator() {
            return None;
        }
        let coordinator = self.coordinator;
        let heard_within = |p: &Member, window: u64| {
            p.detector
                .last_heard()
                .is_some_and(|t| now.saturating_sub(t) < window)
        };
        let coordinator_heard = coordinator
            .and_then(|c| self.others.get(&c))
            .is_some_and(|p| heard_within(p, TAKEOVER_HOLD_MS));
        if coordinator_heard {
            return None;
        }
        let mut heard: Vec<NodeId> = self
            .others
            .iter()
            .filter(|&(&id, p)| {
                Some(id) != coordinator
                    && p.state == NodeState::Active
                    && now >= p.down_until
                    && heard_within(p, 2 * self.timing.heartbeat_ms)
            })
            .map(|(&id, _)| id)
            .collect();
        heard.push(self.id);
        heard.sort_unstable();
        let me_at = heard.iter().position(|&n| n == self.id)?;
        (heard.len() >= self.majority()).then_some((heard, me_at))
    }

    /// Takes over the requests that no live coordinator assigns (see
    /// [`crate::cluster::dispatch`]). Once this node holds a request unassigned for
    /// [`TAKEOVER_HOLD_MS`] without hearing the coordinator, it is in *takeover mode* until the
    /// coordinator is heard again: each request it holds unassigned is claimed before it is
    /// served, by the request's fallback server at once and by the next ones in turn.
    pub(super) fn take_over_stalled(&mut self, now: Millis) {
        let Some(order) = self.takeover_order(now) else {
            self.takeover_mode = false;
            return;
        };
        let stalled = self.dispatcher.stalled(now, self.coordinator);
        self.takeover_mode |= stalled.iter().any(|&(_, held)| held >= TAKEOVER_HOLD_MS);
        if !self.takeover_mode {
            return;
        }
        for (id, held) in stalled {
            self.try_take_over(now, &id, held, &order);
        }
    }

    /// Takes over request `id`, held for `held` ms, if it is this node's turn in `order`.
    pub(super) fn try_take_over(
        &mut self,
        now: Millis,
        id: &str,
        held: Millis,
        (heard, me_at): &(Vec<NodeId>, usize),
    ) {
        // This node's turn: its distance after the request's fallback server.
        let first = static_owner(id, heard)
            .and_then(|f| heard.iter().position(|&n| n == f))
            .unwrap_or(0);
        let turn = (me_at + heard.len() - first) % heard.len();
        if held < turn as u64 * TAKEOVER_STEP_MS {
            return;
        }
        self.dispatcher.tried_takeover(id);
        // Only a free vote: a node that holds another winner does not take the request over
        // (nor asks to be that winner's successor).
        if self.already_served(id) || self.claims.vote_of(id).is_some() {
            return;
        }
        self.claims.vote(now, id, self.id, 0);
        let members = self.members.len();
        let opened = self.claims.claim(
            now,
            id,
            self.id,
            Some(self.id),
            members,
            ClaimKind::Takeover,
        );
        self.send_claim(now, id, opened);
    }

    /// Remembers a commit of a previous run of this node.
    pub(super) fn inherit(&mut self, now: Millis, key: LogKey) {
        if self.inherited.insert(key) {
            self.inherited_order.push_back((now, key));
        }
    }

    /// Whether this node should serve request `id` once more, without a claim, for a client
    /// that sent it **again**: the request log names a server whose reply cannot have reached
    /// the client, so without a new one the request would go unanswered.
    ///
    /// - `resent_after` lists the nodes whose connections to the client closed while the
    ///   request waited ([`EncryptRequest::resent_after`]): if the log names one of them, the
    ///   reply, which travels only over the server's own connection to the client, is lost
    ///   with it. The winner died between its commit and its reply, or the client's connection
    ///   to it broke.
    /// - Also true (once) when the log names this node but the commit was made by a previous
    ///   run of it, which died between its commit and its reply; a client re-sends over a new
    ///   connection only the requests it still waits for.
    ///
    /// The client gives such a request to one connected node at a time, so one node answers
    /// it again ([`crate::client`]).
    ///
    /// [`EncryptRequest::resent_after`]: crate::wire::request::EncryptRequest::resent_after
    pub fn answers_again(&mut self, id: &str, resent_after: &[NodeId]) -> bool {
        match self.replicated.log.server_of(id) {
            Some(server) if server == self.id => {
                self.inherited.remove(&log_key(id)) || resent_after.contains(&server)
            }
            Some(server) => resent_after.contains(&server),
            None => false,
        }
    }

    /// The node the request log names as the server of request `id`.
    pub fn server_of(&self, id: &str) -> Option<NodeId> {
        self.replicated.log.server_of(id)
    }

    /// Applies what a merged request log decided: open claims of requests committed by
    /// another node are dropped, and held requests and votes of committed ones forgotten, as a
    /// commit message would have done.
    pub(super) fn settle_merged(&mut self) {
        for id in self.claims.open_ids() {
            if self.already_served(&id) && self.claims.close(&id) == Some(ClaimKind::Result) {
                self.out.push(Output::Drop(id));
            }
        }
        for id in self.dispatcher.held_ids() {
            if self.already_served(&id) && self.dispatcher.served(&id) {
                self.out.push(Output::Forget(id));
            }
        }
        let log = &self.replicated.log;
        self.claims.forget_votes_where(|id| log.contains(id));
    }

    /// Sends claims that have waited too long again, and gives up those beyond the limits.
    pub(super) fn maintain_claims(&mut self, now: Millis) {
        let due = self.claims.due(now);
        if !due.resend.is_empty() {
            let members = self.member_ids();
            for id in due.resend {
                for p in self.claims.unanswered(&id, &members) {
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
        for id in due.abandoned {
            self.withdraw_claim(now, &id);
        }
        for (id, reason) in given_up.collect::<Vec<_>>() {
            self.give_up(now, &id);
            self.emit(Event::ResultDropped {
                id,
                reason: reason.to_string(),
            });
        }
        self.claims.sweep(now);
    }

    /// Gives up this node's undecided claim of `id`: the result goes, the members are told to
    /// forget their votes for it (else nobody could ever win the request), and the coordinator
    /// is asked to choose another server, as when a chosen node lacks the payload.
    pub(super) fn give_up(&mut self, now: Millis, id: &str) {
        self.out.push(Output::Drop(id.to_string()));
        self.withdraw_claim(now, id);
        self.dispatcher.lost(id);
        if self.is_coordinator() {
            self.assign(now, id, Some(self.id));
        } else if let Some(c) = self.coordinator {
            self.send(c, Message::Decline { id: id.to_string() });
        }
    }

    pub(super) fn on_decline(&mut self, now: Millis, id: &str, from: NodeId) {
        if self.is_coordinator() && !self.already_served(id) {
            self.assign(now, id, Some(from));
        }
    }

    pub(super) fn on_unassigned(&mut self, now: Millis, ids: Vec<RequestId>, from: NodeId) {
        if !self.is_coordinator() {
            return;
        }
        let live: BTreeSet<NodeId> = self.candidates(now).iter().map(|c| c.id).collect();
        for id in ids {
            if let Some((server, gen)) = self.replicated.log.entry_of(&id) {
                self.outbox
                    .entry(from)
                    .or_default()
                    .served
                    .push((id, server, gen));
                continue;
            }
            match self.dispatcher.assignment(&id) {
                // The reporter missed the assignment: tell it again.
                Some(a) if live.contains(&a.server) => self.send(from, Message::Assign(a)),
                _ => self.assign(now, &id, None),
            }
        }
    }
}
