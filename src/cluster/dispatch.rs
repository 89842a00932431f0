//! Request dispatch: which node serves each client request, so that exactly one does.
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
//! **Taking over what no coordinator assigns.** When the coordinator goes silent, requests
//! would wait for the failure detector and an election (about a second). Instead, a node that
//! holds a request unassigned (or assigned to the coordinator) for [`TAKEOVER_HOLD_MS`] and
//! has not heard the coordinator for as long enters *takeover mode* until it hears it again.
//! In that mode every request it holds unassigned is taken over by the nodes it hears (the
//! coordinator left out) in turn: the request's fallback server ([`static_owner`] over them)
//! at once, the next one [`TAKEOVER_STEP_MS`] later (in case the first lacks the payload or
//! is gone too), and so on. A node claims the request *before* serving it
//! and serves only once a majority holds it as the winner
//! ([`crate::cluster::claims::ClaimKind::Takeover`]). A slow coordinator, an assignment that
//! reached one node and not another, two nodes that disagree on who hears whom: each ends in at
//! most one server winning the votes, never in two replies.
//!
//! **Claims: at most one reply.** Reassignment means two nodes may finish the same request;
//! the claim quorum in [`crate::cluster::claims`] makes sure only one of them replies.
//!
//! Implementation caveats: held requests expire after [`PENDING_TTL_MS`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, Millis, NodeId, RequestId};

/// A node holding an unassigned request this long reports it to the coordinator.
pub const REPORT_AFTER_MS: u64 = 300;
/// A node chosen to serve a request whose payload has not reached it yet (the assignment
/// overtook the client's copy) waits this long for it before declining.
pub const DECLINE_AFTER_MS: u64 = 200;
/// A held request is forgotten after this long, served or not: longer than a node stays
/// silent (a simulated failure lasts at most 20 s) and than a client waits (at most
/// [`crate::cluster::node::RESEND_WINDOW_MS`]). The request log remembers commits a little
/// longer ([`crate::cluster::log::LOG_RETENTION_MS`]), so a held request never outlives its
/// commit's entry.
pub const PENDING_TTL_MS: u64 = 60_000;
/// A node that holds a request unassigned this long, without hearing from the coordinator
/// for as long, takes over what the coordinator does not assign (see the module). A live
/// coordinator assigns within a few milliseconds, and under load its assignments arrive every
/// millisecond or so.
pub const TAKEOVER_HOLD_MS: u64 = 30;
/// How much longer each next node in a request's takeover order waits (see the module).
pub const TAKEOVER_STEP_MS: u64 = 100;
/// The attempt number of a takeover: above any assignment of the same epoch, so that a late
/// assignment from the silent coordinator does not start a second job for it.
pub const TAKEOVER_ATTEMPT: u32 = u32::MAX;
/// The smallest per-request cost assumed for a node (seconds), so idle nodes still compare.
pub const MIN_COST_S: f64 = 0.000_1;

/// One decision of the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The request.
    pub id: RequestId,
    /// The node that serves it.
    pub server: NodeId,
    /// 1 for the first assignment, +1 for every reassignment.
    pub attempt: u32,
    /// The epoch of the coordinator that decided it: a newer coordinator's decision wins over
    /// an older one's, whatever their attempt numbers (it may not know the older attempts).
    pub epoch: Epoch,
}

/// A request this node holds.
#[derive(Clone, Debug)]
struct Pending {
    arrived: Millis,
    /// Whether this node has the request's payload.
    local: bool,
    assigned: Option<(NodeId, u32)>,
    /// The epoch of the coordinator that made the assignment.
    assigned_epoch: Epoch,
    /// Whether this node already started serving it.
    serving: bool,
    reported_at: Option<Millis>,
    /// Since when this node was chosen without having the payload.
    awaiting_payload: Option<Millis>,
    /// Whether this node already tried to take it over (it tries once).
    takeover_tried: bool,
}

impl Pending {
    fn new(arrived: Millis, local: bool) -> Self {
        Pending {
            arrived,
            local,
            assigned: None,
            assigned_epoch: 0,
            serving: false,
            reported_at: None,
            awaiting_payload: None,
            takeover_tried: false,
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
        let held = p.assigned.map(|(_, attempt)| (p.assigned_epoch, attempt));
        if held.is_some_and(|held| held > (a.epoch, a.attempt)) {
            return Serve::No;
        }
        p.assigned = Some((a.server, a.attempt));
        p.assigned_epoch = a.epoch;
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

    /// Drops requests held longer than the TTL (and their count against their server);
    /// returns them.
    pub fn expire(&mut self, now: Millis) -> Vec<RequestId> {
        let old: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.arrived) > PENDING_TTL_MS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            self.served(id);
        }
        old
    }

    /// The ids of the held requests.
    pub fn held_ids(&self) -> Vec<RequestId> {
        self.pending.keys().cloned().collect()
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
        let p = self.pending.get(id)?;
        let (server, attempt) = p.assigned?;
        Some(Assignment {
            id: id.to_string(),
            server,
            attempt,
            epoch: p.assigned_epoch,
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

    /// Requests this node may take over (see [`Node`'s takeovers](crate::cluster::node)),
    /// with how long each has been held: it has the payload, does not serve them and has not
    /// tried to take them over yet, and they are unassigned or assigned to `silent` (the
    /// coordinator that is not heard).
    pub fn stalled(&self, now: Millis, silent: Option<NodeId>) -> Vec<(RequestId, Millis)> {
        self.pending
            .iter()
            .filter(|(_, p)| {
                p.assigned.is_none_or(|(s, _)| Some(s) == silent)
                    && p.local
                    && !p.serving
                    && !p.takeover_tried
            })
            .map(|(id, p)| (id.clone(), now.saturating_sub(p.arrived)))
            .collect()
    }

    /// Records that this node tried to take `id` over (it tries once).
    pub fn tried_takeover(&mut self, id: &str) {
        if let Some(p) = self.pending.get_mut(id) {
            p.takeover_tried = true;
        }
    }

    /// A majority holds `me` as the winner of `id` before anyone serves it (a takeover):
    /// records `me` as its server in `epoch` and returns whether `me` must serve it now (it has
    /// the payload and does not serve it yet).
    pub fn take_over(&mut self, id: &str, me: NodeId, epoch: Epoch) -> bool {
        let Some(p) = self.pending.get_mut(id) else {
            return false;
        };
        p.assigned = Some((me, TAKEOVER_ATTEMPT));
        p.assigned_epoch = p.assigned_epoch.max(epoch);
        let serve = p.local && !p.serving;
        p.serving |= serve;
        serve
    }

    /// Whether this node is serving `id` (its job started and has not been dropped).
    pub fn is_serving(&self, id: &str) -> bool {
        self.pending.get(id).is_some_and(|p| p.serving)
    }

    /// The requests `me` took over and is serving (their votes must be withdrawn if it stops).
    pub fn taken_over(&self, me: NodeId) -> Vec<RequestId> {
        self.pending
            .iter()
            .filter(|(_, p)| p.serving && p.assigned == Some((me, TAKEOVER_ATTEMPT)))
            .map(|(id, _)| id.clone())
            .collect()
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
        epoch: Epoch,
        id: &str,
        candidates: &[Candidate],
        exclude: Option<NodeId>,
    ) -> Option<Assignment> {
        let server = self.choose(candidates, exclude)?;
        let p = self
            .pending
            .entry(id.to_string())
            .or_insert_with(|| Pending::new(now, false));
        let attempt = p.assigned.map_or(1, |(_, a)| a.saturating_add(1));
        if let Some((old, _)) = p.assigned {
            if let Some(count) = self.outstanding.get_mut(&old) {
                *count = count.saturating_sub(1);
            }
        }
        p.assigned = Some((server, attempt));
        p.assigned_epoch = epoch;
        *self.outstanding.entry(server).or_default() += 1;
        Some(Assignment {
            id: id.to_string(),
            server,
            attempt,
            epoch,
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

/// The node among `members` (sorted, never empty) that serves request `id` in the static
/// split ([`crate::config::Dispatch::StaticSplit`]): the same on every node and client, spread
/// evenly by the id's hash (FNV-1a: stable across processes and builds).
pub fn static_owner(id: &str, members: &[NodeId]) -> Option<NodeId> {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let at = (hash % members.len().max(1) as u64) as usize;
    members.get(at).copied()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_owner_is_a_function_of_the_id_and_spreads_evenly() {
        let members = [1, 2, 3];
        let mut count = BTreeMap::<NodeId, u32>::new();
        for i in 0..3000 {
            let id = format!("c{}-{i}", i % 7);
            let owner = static_owner(&id, &members).unwrap();
            assert_eq!(Some(owner), static_owner(&id, &members.clone()));
            *count.entry(owner).or_default() += 1;
        }
        assert!(count.values().all(|&n| n > 900), "{count:?}");
        assert_eq!(static_owner("x", &[]), None);
    }

    fn assignment(id: &str, server: NodeId, attempt: u32, epoch: Epoch) -> Assignment {
        Assignment {
            id: id.into(),
            server,
            attempt,
            epoch,
        }
    }

    fn equal(n: u32) -> Vec<Candidate> {
        (1..=n).map(|id| Candidate { id, cost: 0.002 }).collect()
    }

    /// Issue 27: an expired request kept counting against its server, so a coordinator that
    /// held requests past the TTL steered new work away from that server for good.
    #[test]
    fn an_expired_request_no_longer_counts_against_its_server() {
        let mut d = Dispatcher::default();
        let a = d.assign(0, 1, "a", &equal(1), None).expect("a server");
        assert_eq!(d.outstanding(a.server), 1);
        assert_eq!(d.expire(PENDING_TTL_MS + 1), vec!["a".to_string()]);
        assert_eq!(d.outstanding(a.server), 0);
        assert!(d.is_empty());
    }

    #[test]
    fn equal_nodes_take_turns() {
        let mut d = Dispatcher::default();
        let mut counts = BTreeMap::new();
        for i in 0..300 {
            let a = d.assign(0, 1, &format!("r{i}"), &equal(3), None).unwrap();
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
            let a = d.assign(0, 1, &format!("r{i}"), &candidates, None).unwrap();
            *counts.entry(a.server).or_insert(0) += 1;
        }
        assert_eq!((counts[&1], counts[&2], counts[&3]), (50, 50, 10));
    }

    #[test]
    fn served_requests_free_their_server() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        let a = d.assign(0, 1, "a", &equal(2), None).unwrap();
        assert_eq!(d.outstanding(a.server), 1);
        assert!(d.served("a"));
        assert_eq!(d.outstanding(a.server), 0);
        assert!(!d.holds("a"));
    }

    #[test]
    fn reassignment_moves_work_and_counts_attempts() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        let first = d.assign(0, 1, "a", &equal(3), None).unwrap();
        let live: BTreeSet<NodeId> = [1, 2, 3]
            .into_iter()
            .filter(|&n| n != first.server)
            .collect();
        assert_eq!(d.needing_assignment(&live), vec!["a".to_string()]);
        let second = d.assign(0, 1, "a", &equal(3), Some(first.server)).unwrap();
        assert_ne!(second.server, first.server);
        assert_eq!(second.attempt, 2);
        assert_eq!(d.outstanding(first.server), 0);
    }

    /// Issue 27: a new coordinator's first assignment (attempt 1) lost to an older
    /// coordinator's reassignment (attempt 2), so its chosen server never served.
    #[test]
    fn a_newer_coordinators_assignment_wins_over_a_higher_attempt_of_an_older_one() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        let old = assignment("a", 3, 2, 4);
        assert_eq!(d.assigned(0, 2, &old), Serve::No);
        let new = assignment("a", 2, 1, 5);
        assert_eq!(d.assigned(0, 2, &new), Serve::Yes);
        assert_eq!(d.assignment("a"), Some(new));
        assert_eq!(
            d.assigned(0, 2, &old),
            Serve::No,
            "the older epoch's decision is stale"
        );
    }

    #[test]
    fn only_the_chosen_holder_serves_once() {
        let mut d = Dispatcher::default();
        d.arrived(0, "a");
        let a = assignment("a", 2, 1, 1);
        assert_eq!(d.assigned(0, 2, &a), Serve::Yes);
        assert_eq!(
            d.assigned(0, 2, &a),
            Serve::No,
            "a repeated assignment does not serve twice"
        );
        let b = assignment("b", 1, 1, 1);
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
}
