//! Request dispatch: which node serves each client request, so that exactly one does, and
//! the claim quorum that makes sure at most one node replies.
//!
//! A client sends every request to every node (or one node forwards it to the others), so every
//! node holds every request. The coordinator picks one server per request and broadcasts the
//! assignment; the server encrypts and then **claims** the request; it replies to the client
//! only once a majority of the cluster holds it as the request's winner, and then tells every
//! node (`served`), which forgets the request while the request log (replicated state) records
//! who served it.
//!
//! **Choice by load.** The coordinator sends a request to the node where it is expected to
//! finish first: `(outstanding + 1) * cost`, where `outstanding` counts the requests the
//! coordinator assigned to that node and has not yet seen served (exact, and immediate, unlike
//! a reported figure), and `cost` is the node's measured service time per worker (from its
//! heartbeats). A node's reported load is the same expression over its own queue, so the
//! figure that elections compare is the figure that dispatch uses. Equal nodes get requests in
//! turn; a slow node gets fewer in proportion to its slowness.
//!
//! **Holding and taking over.** Every node holds each request until it learns it was served.
//! When the server of a request is suspected, the coordinator assigns the request again (a new
//! attempt); when the coordinator changes, the new one assigns what was left unassigned or
//! assigned to a node that is gone. A node that holds an unassigned request for
//! [`REPORT_AFTER_MS`] reports it to the coordinator, which may never have received it.
//!
//! **Claims: at most one reply.** Reassignment means two nodes may finish the same request (a
//! slow server that was suspected, an isolated coordinator that went on serving). [`Claims`]
//! keeps, on every node, one vote per request: the first claimant it hears of (itself
//! included) is the winner it holds, and it never changes its mind. A server replies only when
//! a majority (itself included) names it; it drops its result as soon as enough nodes name
//! another that it can no longer reach a majority. Two servers cannot both collect a majority,
//! since the majorities would share a node, which votes once. Committed requests are in the
//! request log, which then answers for the vote (and the vote is forgotten).
//!
//! Implementation caveats: votes live in memory, so a node that restarts forgets them (it
//! votes again only once it has merged a majority's log, which holds every commit that
//! majority heard of); a server that wins and dies before replying leaves its request
//! unanswered (the others hold another winner); if every node claims the same request at once
//! (each votes for itself), nobody wins and the request is lost; held requests expire after
//! [`PENDING_TTL_MS`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::{Millis, NodeId, RequestId};

/// A node holding an unassigned request this long reports it to the coordinator.
pub const REPORT_AFTER_MS: u64 = 300;
/// A node chosen to serve a request whose payload has not reached it yet (the assignment
/// overtook the client's copy) waits this long for it before declining.
pub const DECLINE_AFTER_MS: u64 = 200;
/// A held request is forgotten after this long, served or not.
pub const PENDING_TTL_MS: u64 = 120_000;
/// The smallest per-request cost assumed for a node (seconds), so idle nodes still compare.
pub const MIN_COST_S: f64 = 0.000_1;
/// A claim that has no majority yet is sent again to the peers that have not answered after
/// this long (the first copy may have been lost with a link).
pub const CLAIM_RETRY_MS: u64 = 500;
/// A claim still undecided after this long is given up (its result dropped, logged).
pub const CLAIM_TTL_MS: u64 = PENDING_TTL_MS;
/// At most this many finished results wait for a majority; beyond, the oldest is dropped.
pub const MAX_OPEN_CLAIMS: usize = 1_000;

/// One decision of the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The request.
    pub id: RequestId,
    /// The node that serves it.
    pub server: NodeId,
    /// 1 for the first assignment, +1 for every reassignment.
    pub attempt: u32,
}

/// A request this node holds.
#[derive(Clone, Debug)]
struct Pending {
    arrived: Millis,
    /// Whether this node has the request's payload.
    local: bool,
    assigned: Option<(NodeId, u32)>,
    /// Whether this node already started serving it.
    serving: bool,
    reported_at: Option<Millis>,
    /// Since when this node was chosen without having the payload.
    awaiting_payload: Option<Millis>,
}

impl Pending {
    fn new(arrived: Millis, local: bool) -> Self {
        Pending {
            arrived,
            local,
            assigned: None,
            serving: false,
            reported_at: None,
            awaiting_payload: None,
        }
    }
}

/// The dispatch table of one node.
#[derive(Clone, Debug, Default)]
pub struct Dispatcher {
    pending: BTreeMap<RequestId, Pending>,
    /// Requests assigned by this node (as coordinator) per server, not yet served.
    outstanding: BTreeMap<NodeId, u32>,
}

/// Choice inputs for one candidate server.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// The node.
    pub id: NodeId,
    /// Its measured cost per request per worker, in seconds.
    pub cost: f64,
}

impl Dispatcher {
    /// Requests held.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no request is held.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether `id` is held.
    pub fn holds(&self, id: &str) -> bool {
        self.pending.contains_key(id)
    }

    /// Records a request whose payload this node has; false if it was already held.
    pub fn arrived(&mut self, now: Millis, id: &str) -> bool {
        match self.pending.get_mut(id) {
            Some(p) if p.local => false,
            Some(p) => {
                p.local = true;
                true
            }
            None => {
                let p = Pending::new(now, true);
                self.pending.insert(id.to_string(), p);
                true
            }
        }
    }

    /// Records an assignment seen from the coordinator; returns whether this node (`me`) must
    /// now serve it, and whether it cannot (it lacks the payload).
    pub fn assigned(&mut self, now: Millis, me: NodeId, a: &Assignment) -> Serve {
        let p = self
            .pending
            .entry(a.id.clone())
            .or_insert_with(|| Pending::new(now, false));
        if p.assigned.is_some_and(|(_, attempt)| attempt > a.attempt) {
            return Serve::No;
        }
        p.assigned = Some((a.server, a.attempt));
        if a.server != me || p.serving {
            Serve::No
        } else if p.local {
            p.serving = true;
            p.awaiting_payload = None;
            Serve::Yes
        } else {
            p.awaiting_payload.get_or_insert(now);
            Serve::Cannot
        }
    }

    /// Forgets a served request; returns whether it was held. The request no longer counts
    /// against the server it was assigned to (whoever won it).
    pub fn served(&mut self, id: &str) -> bool {
        let Some(p) = self.pending.remove(id) else {
            return false;
        };
        if let Some((server, _)) = p.assigned {
            if let Some(count) = self.outstanding.get_mut(&server) {
                *count = count.saturating_sub(1);
            }
        }
        true
    }

    /// This node lost its claim of `id` and dropped the result, and the payload with it: it can
    /// no longer serve the request, and declines it if it is chosen again.
    pub fn lost(&mut self, id: &str) {
        if let Some(p) = self.pending.get_mut(id) {
            p.local = false;
            p.serving = false;
        }
    }

    /// Forgets everything (the node failed: its clients' requests go to the others).
    pub fn clear(&mut self) -> Vec<RequestId> {
        self.outstanding.clear();
        std::mem::take(&mut self.pending).into_keys().collect()
    }

    /// Drops requests held longer than the TTL; returns them.
    pub fn expire(&mut self, now: Millis) -> Vec<RequestId> {
        let old: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.arrived) > PENDING_TTL_MS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            self.pending.remove(id);
        }
        old
    }

    /// Unassigned requests held for `REPORT_AFTER_MS` and not reported since; marks them.
    pub fn due_reports(&mut self, now: Millis) -> Vec<RequestId> {
        let mut due = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            let waiting = p.assigned.is_none() && now.saturating_sub(p.arrived) >= REPORT_AFTER_MS;
            if waiting
                && p.reported_at
                    .is_none_or(|t| now.saturating_sub(t) >= REPORT_AFTER_MS)
            {
                p.reported_at = Some(now);
                due.push(id.clone());
            }
        }
        due
    }

    /// The current assignment of `id`, if any.
    pub fn assignment(&self, id: &str) -> Option<Assignment> {
        let (server, attempt) = self.pending.get(id)?.assigned?;
        Some(Assignment {
            id: id.to_string(),
            server,
            attempt,
        })
    }

    /// Requests this node was chosen for and whose payload has not come within
    /// [`DECLINE_AFTER_MS`]: to be declined (each once).
    pub fn due_declines(&mut self, now: Millis) -> Vec<RequestId> {
        let mut due = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.awaiting_payload
                .is_some_and(|t| now.saturating_sub(t) >= DECLINE_AFTER_MS)
            {
                p.awaiting_payload = None;
                due.push(id.clone());
            }
        }
        due
    }

    /// The coordinator's count of requests assigned to `node` and not yet served.
    pub fn outstanding(&self, node: NodeId) -> u32 {
        self.outstanding.get(&node).copied().unwrap_or(0)
    }

    /// Rebuilds the outstanding counts from the held assignments (on becoming coordinator).
    pub fn recount(&mut self) {
        self.outstanding.clear();
        for p in self.pending.values() {
            if let Some((server, _)) = p.assigned {
                *self.outstanding.entry(server).or_default() += 1;
            }
        }
    }

    /// The requests the coordinator must (re)assign: unassigned ones, and those whose server
    /// is not among `live`.
    pub fn needing_assignment(&self, live: &BTreeSet<NodeId>) -> Vec<RequestId> {
        self.pending
            .iter()
            .filter(|(_, p)| p.assigned.is_none_or(|(server, _)| !live.contains(&server)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The coordinator's decision for `id` among `candidates` (never empty), excluding
    /// `exclude`; records it and returns it.
    pub fn assign(
        &mut self,
        now: Millis,
        id: &str,
        candidates: &[Candidate],
        exclude: Option<NodeId>,
    ) -> Option<Assignment> {
        let server = self.choose(candidates, exclude)?;
        let p = self
            .pending
            .entry(id.to_string())
            .or_insert_with(|| Pending::new(now, false));
        let attempt = p.assigned.map_or(1, |(_, a)| a + 1);
        if let Some((old, _)) = p.assigned {
            if let Some(count) = self.outstanding.get_mut(&old) {
                *count = count.saturating_sub(1);
            }
        }
        p.assigned = Some((server, attempt));
        *self.outstanding.entry(server).or_default() += 1;
        Some(Assignment {
            id: id.to_string(),
            server,
            attempt,
        })
    }

    /// The expected completion time of one more request on each candidate.
    pub fn score(&self, c: &Candidate) -> f64 {
        f64::from(self.outstanding(c.id) + 1) * c.cost.max(MIN_COST_S)
    }

    fn choose(&self, candidates: &[Candidate], exclude: Option<NodeId>) -> Option<NodeId> {
        candidates
            .iter()
            .filter(|c| Some(c.id) != exclude)
            .min_by(|a, b| {
                self.score(a)
                    .total_cmp(&self.score(b))
                    .then(self.outstanding(a.id).cmp(&self.outstanding(b.id)))
                    .then(a.id.cmp(&b.id))
            })
            .map(|c| c.id)
    }
}

/// What an assignment means for the node that sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// Someone else serves it (or this node already does).
    No,
    /// This node must serve it now.
    Yes,
    /// This node was chosen but does not have the payload.
    Cannot,
}

/// What a claim's answers decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A majority holds this node as the winner: reply.
    Won,
    /// So many nodes hold another winner that this node cannot reach a majority: drop.
    Lost,
}

/// What [`Claims::due`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueClaims {
    /// Claims to send again to the peers that have not answered.
    pub resend: Vec<RequestId>,
    /// Claims undecided for [`CLAIM_TTL_MS`]: given up.
    pub expired: Vec<RequestId>,
    /// The oldest claims beyond [`MAX_OPEN_CLAIMS`]: given up.
    pub evicted: Vec<RequestId>,
}

/// One of this node's finished requests, waiting for a majority.
#[derive(Clone, Debug)]
struct Open {
    /// When the job finished.
    since: Millis,
    /// When the claim was last sent (its key in the retry queue).
    sent: Millis,
    /// Every node that answered (this one included), and whether it named this node.
    answers: Vec<(NodeId, bool)>,
}

/// Votes (first writer wins, one per request) and this node's own claims awaiting a majority.
///
/// Costs: a vote or an answer is a map operation; the retry queue is ordered by sending time,
/// so each tick looks only at the claims that are due; votes are swept for expiry once per
/// [`CLAIM_TTL_MS`] / 10 (they are removed at commit, so the sweep finds only leftovers).
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// The winner this node holds for each uncommitted request, and since when.
    votes: BTreeMap<RequestId, (NodeId, Millis)>,
    /// This node's own claims without a verdict.
    open: BTreeMap<RequestId, Open>,
    /// `(sent, id)` of the open claims, oldest first; entries whose claim was decided or sent
    /// again since are skipped when they reach the front.
    retry: VecDeque<(Millis, RequestId)>,
    next_sweep: Millis,
}

impl Claims {
    /// The winner this node holds for `id`, if any.
    pub fn vote_of(&self, id: &str) -> Option<NodeId> {
        self.votes.get(id).map(|&(w, _)| w)
    }

    /// Records `claimant` as the winner of `id` unless another is held; returns the winner held.
    pub fn vote(&mut self, now: Millis, id: &str, claimant: NodeId) -> NodeId {
        if let Some(&(winner, _)) = self.votes.get(id) {
            return winner;
        }
        self.votes.insert(id.to_string(), (claimant, now));
        claimant
    }

    /// The request log now records `id`: the vote is no longer needed.
    pub fn forget_vote(&mut self, id: &str) {
        self.votes.remove(id);
    }

    /// Forgets every vote for `node`: its process is gone (its connection closed). Safe because
    /// a server writes its commit to every peer link before it writes a reply, and a peer
    /// reads everything a connection carried before it sees the connection close: a peer that
    /// has no commit from `node` when `node`'s connection closes knows `node` never replied.
    pub fn release(&mut self, node: NodeId) -> Vec<RequestId> {
        let released: Vec<RequestId> = self
            .votes
            .iter()
            .filter(|(_, &(winner, _))| winner == node)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &released {
            self.votes.remove(id);
        }
        released
    }

    /// Forgets the vote for `id` if it is held for `node`, which withdrew its claim.
    pub fn withdraw(&mut self, id: &str, node: NodeId) {
        if self
            .votes
            .get(id)
            .is_some_and(|&(winner, _)| winner == node)
        {
            self.votes.remove(id);
        }
    }

    /// Votes held (uncommitted requests).
    pub fn votes(&self) -> usize {
        self.votes.len()
    }

    /// Own claims waiting for a majority.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// The ids of the undecided claims.
    pub fn open_ids(&self) -> Vec<RequestId> {
        self.open.keys().cloned().collect()
    }

    /// Opens a claim of `me` for `id` (a job finished); `own` is this node's own vote, if it may
    /// vote. Returns the verdict if this node's answer alone decides (a one-node cluster), and
    /// whether the claim is new (false: it was already open, and stays as it was).
    pub fn open_claim(
        &mut self,
        now: Millis,
        id: &str,
        me: NodeId,
        own: Option<NodeId>,
        members: usize,
    ) -> (bool, Option<Verdict>) {
        if self.open.contains_key(id) {
            return (false, None);
        }
        let answers = own.map(|w| vec![(me, w == me)]).unwrap_or_default();
        self.open.insert(
            id.to_string(),
            Open {
                since: now,
                sent: now,
                answers,
            },
        );
        self.retry.push_back((now, id.to_string()));
        (true, self.verdict(id, members))
    }

    /// Records `from`'s answer to this node's claim of `id` (`for_me`: it named this node);
    /// returns the verdict once there is one. Repeated answers count once.
    pub fn answer(
        &mut self,
        id: &str,
        from: NodeId,
        for_me: bool,
        members: usize,
    ) -> Option<Verdict> {
        let open = self.open.get_mut(id)?;
        if open.answers.iter().any(|&(n, _)| n == from) {
            return None;
        }
        open.answers.push((from, for_me));
        self.verdict(id, members)
    }

    fn verdict(&self, id: &str, members: usize) -> Option<Verdict> {
        let open = self.open.get(id)?;
        let majority = members / 2 + 1;
        let yes = open.answers.iter().filter(|(_, y)| *y).count();
        let no = open.answers.len() - yes;
        if yes >= majority {
            Some(Verdict::Won)
        } else if no > members - majority {
            Some(Verdict::Lost)
        } else {
            None
        }
    }

    /// Closes the claim of `id` (decided); returns whether it was open.
    pub fn close(&mut self, id: &str) -> bool {
        self.open.remove(id).is_some()
    }

    /// The peers among `peers` that have not answered the claim of `id`.
    pub fn unanswered(&self, id: &str, peers: &[NodeId]) -> Vec<NodeId> {
        let Some(open) = self.open.get(id) else {
            return Vec::new();
        };
        peers
            .iter()
            .copied()
            .filter(|p| !open.answers.iter().any(|&(n, _)| n == *p))
            .collect()
    }

    /// The claims to send again now (each is rescheduled), and those given up (closed here):
    /// older than [`CLAIM_TTL_MS`], or the oldest beyond [`MAX_OPEN_CLAIMS`].
    pub fn due(&mut self, now: Millis) -> DueClaims {
        let mut due = DueClaims::default();
        while let Some((sent, id)) = self.retry.front().cloned() {
            let current = self.open.get(&id).map(|o| (o.sent, o.since));
            match current {
                // Decided, or queued again since: a stale entry.
                None => {}
                Some((s, _)) if s != sent => {}
                Some((_, since)) => {
                    if self.open.len() > MAX_OPEN_CLAIMS {
                        self.open.remove(&id);
                        due.evicted.push(id);
                    } else if now.saturating_sub(since) >= CLAIM_TTL_MS {
                        self.open.remove(&id);
                        due.expired.push(id);
                    } else if now.saturating_sub(sent) >= CLAIM_RETRY_MS {
                        if let Some(o) = self.open.get_mut(&id) {
                            o.sent = now;
                        }
                        self.retry.push_back((now, id.clone()));
                        due.resend.push(id);
                    } else {
                        break;
                    }
                }
            }
            self.retry.pop_front();
        }
        due
    }

    /// Drops votes older than [`CLAIM_TTL_MS`] (requests nobody committed: nobody serves them
    /// any more); at most once per tenth of it.
    pub fn sweep(&mut self, now: Millis) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + CLAIM_TTL_MS / 10;
        self.votes
            .retain(|_, &mut (_, at)| now.saturating_sub(at) < CLAIM_TTL_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equal(n: u32) -> Vec<Candidate> {
        (1..=n).map(|id| Candidate { id, cost: 0.002 }).collect()
    }

    #[test]
    fn equal_nodes_take_turns() {
        let mut d = Dispatcher::default();
        let mut counts = BTreeMap::new();
        for i in 0..300 {
            let a = d.assign(0, &format!("r{i}"), &equal(3), None).unwrap();
            *counts.entry(a.server).or_insert(0) += 1;
        }
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
    }

    #[test]
    fn a_slow_node_gets_fewer_requests_in_proportion() {
        let mut d = Dispatcher::default();
        let candidates = [
            Candidate { id: 1, cost: 0.01 },
            Candidate { id: 2, cost: 0.01 },
            Candidate { id: 3, cost: 0.05 },
        ];
        let mut counts = BTreeMap::new();
        for i in 0..110 {
            let a = d.assign(0, &format!("r{i}"), &candidates, None).unwrap();
            *counts.entry(a.server).or_insert(0) += 1;
        }
        assert_eq!((counts[&1], counts[&2], counts[&3]), (50, 50, 10));
    }

    #[test]
    fn served_requests_free_their_server() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        let a = d.assign(0, "a", &equal(2), None).unwrap();
        assert_eq!(d.outstanding(a.server), 1);
        assert!(d.served("a"));
        assert_eq!(d.outstanding(a.server), 0);
        assert!(!d.holds("a"));
    }

    #[test]
    fn reassignment_moves_work_and_counts_attempts() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        let first = d.assign(0, "a", &equal(3), None).unwrap();
        let live: BTreeSet<NodeId> = [1, 2, 3]
            .into_iter()
            .filter(|&n| n != first.server)
            .collect();
        assert_eq!(d.needing_assignment(&live), vec!["a".to_string()]);
        let second = d.assign(0, "a", &equal(3), Some(first.server)).unwrap();
        assert_ne!(second.server, first.server);
        assert_eq!(second.attempt, 2);
        assert_eq!(d.outstanding(first.server), 0);
    }

    #[test]
    fn only_the_chosen_holder_serves_once() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        let a = Assignment {
            id: "a".into(),
            server: 2,
            attempt: 1,
        };
        assert_eq!(d.assigned(0, 2, &a), Serve::Yes);
        assert_eq!(
            d.assigned(0, 2, &a),
            Serve::No,
            "a repeated assignment does not serve twice"
        );
        let b = Assignment {
            id: "b".into(),
            server: 1,
            attempt: 1,
        };
        assert_eq!(d.assigned(0, 1, &b), Serve::Cannot);
        assert!(
            d.due_declines(DECLINE_AFTER_MS - 1).is_empty(),
            "waits for the client's copy"
        );
        assert_eq!(d.due_declines(DECLINE_AFTER_MS), vec!["b".to_string()]);
        assert!(
            d.due_declines(2 * DECLINE_AFTER_MS).is_empty(),
            "declines once"
        );
    }

    #[test]
    fn unassigned_requests_are_reported_once_per_interval() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        assert!(d.due_reports(100).is_empty());
        assert_eq!(d.due_reports(REPORT_AFTER_MS), vec!["a".to_string()]);
        assert!(d.due_reports(REPORT_AFTER_MS + 10).is_empty());
        assert_eq!(d.due_reports(2 * REPORT_AFTER_MS).len(), 1);
    }

    #[test]
    fn the_first_claimant_keeps_the_vote_until_released() {
        let mut c = Claims::default();
        assert_eq!(c.vote(0, "a", 2), 2);
        assert_eq!(c.vote(1, "a", 3), 2, "first writer wins");
        assert_eq!(c.vote_of("a"), Some(2));
        assert!(c.release(3).is_empty());
        assert_eq!(
            c.release(2),
            vec!["a".to_string()],
            "node 2's connection closed"
        );
        assert_eq!(c.vote(2, "a", 3), 3);
        c.forget_vote("a");
        assert_eq!(c.votes(), 0);
    }

    #[test]
    fn a_claim_wins_with_a_majority_and_loses_once_it_cannot_reach_one() {
        // Three nodes: own vote plus one answer wins; two answers for others lose.
        let mut c = Claims::default();
        assert_eq!(c.open_claim(0, "a", 1, Some(1), 3), (true, None));
        assert_eq!(c.answer("a", 2, true, 3), Some(Verdict::Won));
        assert!(c.close("a"));
        c.open_claim(0, "b", 1, Some(1), 3);
        assert_eq!(
            c.answer("b", 2, false, 3),
            None,
            "one answer against is not enough"
        );
        assert_eq!(
            c.answer("b", 2, false, 3),
            None,
            "a repeated answer counts once"
        );
        assert_eq!(c.answer("b", 3, false, 3), Some(Verdict::Lost));
        // Own vote already for another node: two answers against, nothing can save it.
        c.open_claim(0, "c", 1, Some(2), 3);
        assert_eq!(c.answer("c", 2, false, 3), Some(Verdict::Lost));
        // Five nodes: one answer against does not decide; three for win.
        c.open_claim(0, "d", 1, Some(1), 5);
        assert_eq!(c.answer("d", 2, false, 5), None);
        assert_eq!(c.answer("d", 3, true, 5), None);
        assert_eq!(c.answer("d", 4, true, 5), Some(Verdict::Won));
        // One node: its own vote decides at once.
        assert_eq!(
            c.open_claim(0, "e", 1, Some(1), 1),
            (true, Some(Verdict::Won))
        );
    }

    #[test]
    fn undecided_claims_are_sent_again_then_given_up_oldest_first() {
        let mut c = Claims::default();
        c.open_claim(0, "a", 1, Some(1), 3);
        c.open_claim(10, "b", 1, Some(1), 3);
        assert_eq!(c.due(CLAIM_RETRY_MS - 1), DueClaims::default());
        let due = c.due(CLAIM_RETRY_MS);
        assert_eq!(due.resend, vec!["a".to_string()]);
        assert_eq!(c.unanswered("a", &[2, 3]), vec![2, 3]);
        c.answer("a", 2, false, 3);
        assert_eq!(c.unanswered("a", &[2, 3]), vec![3]);
        assert_eq!(c.due(CLAIM_RETRY_MS + 10).resend, vec!["b".to_string()]);
        c.close("b");
        let due = c.due(CLAIM_TTL_MS);
        assert_eq!(due.expired, vec!["a".to_string()]);
        assert_eq!(c.open(), 0);
        // Over the limit, the oldest go first.
        for i in 0..MAX_OPEN_CLAIMS + 2 {
            c.open_claim(CLAIM_TTL_MS + i as u64, &format!("r{i}"), 1, Some(1), 3);
        }
        let due = c.due(CLAIM_TTL_MS + 1);
        assert_eq!(due.evicted, vec!["r0".to_string(), "r1".to_string()]);
        assert_eq!(c.open(), MAX_OPEN_CLAIMS);
    }

    #[test]
    fn old_votes_are_swept() {
        let mut c = Claims::default();
        c.vote(0, "a", 2);
        c.sweep(1);
        c.vote(CLAIM_TTL_MS, "b", 2);
        c.sweep(CLAIM_TTL_MS + 1);
        assert_eq!((c.vote_of("a"), c.vote_of("b")), (None, Some(2)));
    }
}
