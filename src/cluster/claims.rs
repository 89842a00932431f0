//! The claim quorum: at most one node replies to each request.
//!
//! Reassignment means two nodes may finish the same request (a
//! slow server that was suspected, an isolated coordinator that went on serving). [`Claims`]
//! keeps, on every node, one vote per request: the first claimant it hears of (itself
//! included) is the winner it holds, and it never changes its mind. A server replies only when
//! a majority (itself included) names it; it drops its result when another's commit arrives
//! (the request log names the winner). Two servers cannot both collect a majority,
//! since the majorities would share a node, which votes once. Committed requests are in the
//! request log, which then answers for the vote (and the vote is forgotten).
//!
//! **Takeovers.** A node may also claim a request *before* serving it ([`ClaimKind::Takeover`]):
//! when no live coordinator has assigned a request it holds (see
//! [`crate::cluster::dispatch::TAKEOVER_HOLD_MS`]). The members vote exactly as for a finished
//! job's claim; the node serves only once a majority holds it as the winner, and gives the
//! takeover up at the first answer that names another node (it withdraws, so that nobody keeps
//! a vote for it). After the job it claims the result as usual: a server replies only on the
//! votes it holds at that moment, so a takeover changes nothing about "at most one reply".
//!
//! **A freed vote is given again, and said so.** A vote goes when its winner withdraws (it
//! gave its claim up) or its winner's connection closes. The voter then votes for the first
//! node it refused meanwhile and sends every node it refused its new answer, which replaces the
//! old one ([`Claims::answer`]). A result whose claim could not win keeps waiting (its result
//! kept) until the winner's commit arrives or such a new answer lets it win: a split between a
//! takeover and an assigned server, with the third voter silent, resolves at once.
//!
//! Implementation caveats: votes live in memory, so a node that restarts forgets them (it
//! votes again only once it has merged a majority's log, which holds every commit that
//! majority heard of); a server that wins and dies before replying leaves its request
//! unanswered (the others hold another winner); if every node claims the same request at once
//! (each votes for itself), nobody wins and the request is lost.

use std::collections::{BTreeMap, VecDeque};

use crate::cluster::dispatch::PENDING_TTL_MS;
use crate::ids::{Millis, NodeId, RequestId};

/// A claim that has no majority yet is sent again to the members that have not answered after
/// this long (the first copy may have been lost with a link).
pub const CLAIM_RETRY_MS: u64 = 500;
/// A claim still undecided after this long is given up (its result dropped, logged).
pub const CLAIM_TTL_MS: u64 = PENDING_TTL_MS;
/// At most this many finished results wait for a majority; beyond, the oldest is dropped.
pub const MAX_OPEN_CLAIMS: usize = 1_000;
/// A takeover still undecided after this long is given up: the request waits for the
/// coordinator's assignment (a majority of voters is silent, and a new coordinator will need
/// them too).
pub const TAKEOVER_TTL_MS: u64 = 2 * CLAIM_RETRY_MS;

/// What a claim asks the members to hold this node as the winner of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    /// A finished job's result: reply once a majority holds this node.
    Result,
    /// A request that no live coordinator assigned: serve it once a majority holds this node.
    Takeover,
}

/// What a claim's answers decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A majority holds this node as the winner: reply.
    Won,
    /// So many nodes hold another winner that this node cannot reach a majority now. A
    /// finished result waits for the winner's commit (then it is dropped) or for a withdrawal
    /// that voids those answers; a takeover is given up.
    Lost,
}

/// What [`Claims::due`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueClaims {
    /// Claims to send again to the members that have not answered.
    pub resend: Vec<RequestId>,
    /// Claims undecided for [`CLAIM_TTL_MS`]: given up.
    pub expired: Vec<RequestId>,
    /// The oldest claims beyond [`MAX_OPEN_CLAIMS`]: given up.
    pub evicted: Vec<RequestId>,
    /// Takeovers undecided for [`TAKEOVER_TTL_MS`] (or evicted): given up, the request waits
    /// for its assignment.
    pub abandoned: Vec<RequestId>,
}

/// One of this node's claims, waiting for a majority.
#[derive(Clone, Debug)]
struct Open {
    kind: ClaimKind,
    /// This node (the claimant).
    me: NodeId,
    /// When the claim was opened (the job finished, or the takeover began).
    since: Millis,
    /// When the claim was last sent (its key in the retry queue).
    sent: Millis,
    /// Every node that answered (this one included), and the winner it named.
    answers: Vec<(NodeId, NodeId)>,
}

impl Open {
    fn answered(&self, node: NodeId) -> bool {
        self.answers.iter().any(|&(n, _)| n == node)
    }
}

/// The winner a node holds for one uncommitted request.
#[derive(Clone, Debug)]
struct Vote {
    winner: NodeId,
    /// When the vote was given (votes expire after [`CLAIM_TTL_MS`]).
    at: Millis,
    /// The connection the claim came over (the driver's number for it; 0 for this node's own
    /// vote): a connection's close releases the votes given over it, not those given over a
    /// newer connection of the same node (a restarted process).
    link: u64,
    /// The claimants told another winner, with the connection each asked over: if this vote
    /// goes, the first of them gets it, and each is told.
    refused: Vec<(NodeId, u64)>,
}

/// A vote given again after its winner withdrew or its connection closed: `to` (the claimants
/// refused before) must be told that this node now holds `winner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reanswer {
    /// The request.
    pub id: RequestId,
    /// The winner held now (none: nobody was refused, the vote is free).
    pub winner: Option<NodeId>,
    /// The claimants to tell.
    pub to: Vec<NodeId>,
}

/// Votes (first writer wins, one per request) and this node's own claims awaiting a majority.
///
/// Costs: a vote or an answer is a map operation; the retry queue is ordered by sending time,
/// so each tick looks only at the claims that are due; votes are swept for expiry once per
/// [`CLAIM_TTL_MS`] / 10 (they are removed at commit, so the sweep finds only leftovers).
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// The winner this node holds for each uncommitted request, and since when.
    votes: BTreeMap<RequestId, Vote>,
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
        self.votes.get(id).map(|v| v.winner)
    }

    /// Records `claimant` as the winner of `id` unless another is held; returns the winner held.
    /// `link` is the connection the claim came over (see [`Claims::release`]).
    pub fn vote(&mut self, now: Millis, id: &str, claimant: NodeId, link: u64) -> NodeId {
        if let Some(v) = self.votes.get_mut(id) {
            if v.winner != claimant && !v.refused.iter().any(|&(n, _)| n == claimant) {
                v.refused.push((claimant, link));
            }
            return v.winner;
        }
        let vote = Vote {
            winner: claimant,
            at: now,
            link,
            refused: Vec::new(),
        };
        self.votes.insert(id.to_string(), vote);
        claimant
    }

    /// The request log now records `id`: the vote is no longer needed.
    pub fn forget_vote(&mut self, id: &str) {
        self.votes.remove(id);
    }

    /// Forgets the votes of the requests `committed` says the log holds.
    pub fn forget_votes_where(&mut self, committed: impl Fn(&str) -> bool) {
        self.votes.retain(|id, _| !committed(id));
    }

    /// Forgets every vote for `node` given over its connection `link` or an older one: that
    /// connection closed, so the process behind it is gone. Safe because a server writes its
    /// commit to every link before it writes a reply, and a member reads everything a
    /// connection carried before it sees the connection close: a member that has no commit from
    /// `node` when `node`'s connection closes knows `node` never replied over it. Votes given
    /// over a newer connection (the same node, restarted) stay. Each vote goes to the first
    /// claimant it refused, if any (see [`Reanswer`]).
    pub fn release(&mut self, now: Millis, node: NodeId, link: u64) -> Vec<Reanswer> {
        let released: Vec<RequestId> = self
            .votes
            .iter()
            .filter(|(_, v)| v.winner == node && v.link <= link)
            .map(|(id, _)| id.clone())
            .collect();
        released
            .into_iter()
            .map(|id| self.give_again(now, &id))
            .collect()
    }

    /// `node` withdrew its claim of `id`: the vote goes if it is held for `node` (to the first
    /// claimant it refused, if any), else `node` is no longer among those it refused.
    pub fn withdraw(&mut self, now: Millis, id: &str, node: NodeId) -> Option<Reanswer> {
        let vote = self.votes.get_mut(id)?;
        if vote.winner == node {
            return Some(self.give_again(now, id));
        }
        vote.refused.retain(|&(n, _)| n != node);
        None
    }

    /// Removes the vote for `id` and gives it to the first claimant it refused.
    fn give_again(&mut self, now: Millis, id: &str) -> Reanswer {
        let refused = self.votes.remove(id).map(|v| v.refused).unwrap_or_default();
        let Some(&(first, link)) = refused.first() else {
            return Reanswer {
                id: id.to_string(),
                winner: None,
                to: Vec::new(),
            };
        };
        let vote = Vote {
            winner: first,
            at: now,
            link,
            refused: refused[1..].to_vec(),
        };
        self.votes.insert(id.to_string(), vote);
        Reanswer {
            id: id.to_string(),
            winner: Some(first),
            to: refused.into_iter().map(|(n, _)| n).collect(),
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

    /// Opens a claim of `me` for `id`: a finished job's result or a takeover (see
    /// [`ClaimKind`]); `own` is this node's own vote, if it may vote. Returns whether the claim
    /// is new (false: it was already open, and stays as it was) and the verdict if this node's
    /// answer alone decides (a one-node cluster).
    pub fn claim(
        &mut self,
        now: Millis,
        id: &str,
        me: NodeId,
        own: Option<NodeId>,
        members: usize,
        kind: ClaimKind,
    ) -> (bool, Option<Verdict>) {
        if self.open.contains_key(id) {
            return (false, None);
        }
        let answers = own.map(|w| vec![(me, w)]).unwrap_or_default();
        self.open.insert(
            id.to_string(),
            Open {
                kind,
                me,
                since: now,
                sent: now,
                answers,
            },
        );
        self.retry.push_back((now, id.to_string()));
        (true, self.verdict(id, members))
    }

    /// Records `from`'s answer to this node's claim of `id`: the winner it holds (a new answer
    /// from the same node replaces its old one: its vote was given again). Returns the verdict
    /// once there is one.
    pub fn answer(
        &mut self,
        id: &str,
        from: NodeId,
        winner: NodeId,
        members: usize,
    ) -> Option<Verdict> {
        let open = self.open.get_mut(id)?;
        match open.answers.iter_mut().find(|(n, _)| *n == from) {
            Some(answer) => answer.1 = winner,
            None => open.answers.push((from, winner)),
        }
        self.verdict(id, members)
    }

    fn verdict(&self, id: &str, members: usize) -> Option<Verdict> {
        let open = self.open.get(id)?;
        let majority = members / 2 + 1;
        let yes = open.answers.iter().filter(|&&(_, w)| w == open.me).count();
        let no = open.answers.len() - yes;
        if yes >= majority {
            Some(Verdict::Won)
        } else if no > members - majority || (open.kind == ClaimKind::Takeover && no > 0) {
            Some(Verdict::Lost)
        } else {
            None
        }
    }

    /// Closes the claim of `id` (decided); returns its kind if it was open.
    pub fn close(&mut self, id: &str) -> Option<ClaimKind> {
        self.open.remove(id).map(|o| o.kind)
    }

    /// The kind of this node's open claim of `id`, if any.
    pub fn kind_of(&self, id: &str) -> Option<ClaimKind> {
        self.open.get(id).map(|o| o.kind)
    }

    /// The members among `members` that have not answered the claim of `id`.
    pub fn unanswered(&self, id: &str, members: &[NodeId]) -> Vec<NodeId> {
        let Some(open) = self.open.get(id) else {
            return Vec::new();
        };
        members
            .iter()
            .copied()
            .filter(|&p| !open.answered(p))
            .collect()
    }

    /// The claims to send again now (each is rescheduled), and those given up (closed here):
    /// older than [`CLAIM_TTL_MS`], or the oldest beyond [`MAX_OPEN_CLAIMS`].
    pub fn due(&mut self, now: Millis) -> DueClaims {
        let mut due = DueClaims::default();
        while let Some((sent, id)) = self.retry.front().cloned() {
            let current = self.open.get(&id).map(|o| (o.sent, o.since, o.kind));
            match current {
                // Decided, or queued again since: a stale entry.
                None => {}
                Some((s, _, _)) if s != sent => {}
                Some((_, since, kind)) => {
                    let ttl = match kind {
                        ClaimKind::Result => CLAIM_TTL_MS,
                        ClaimKind::Takeover => TAKEOVER_TTL_MS,
                    };
                    let evict = self.open.len() > MAX_OPEN_CLAIMS;
                    if evict || now.saturating_sub(since) >= ttl {
                        self.open.remove(&id);
                        match (kind, evict) {
                            (ClaimKind::Takeover, _) => due.abandoned.push(id),
                            (ClaimKind::Result, true) => due.evicted.push(id),
                            (ClaimKind::Result, false) => due.expired.push(id),
                        }
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
            .retain(|_, v| now.saturating_sub(v.at) < CLAIM_TTL_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claimant_keeps_the_vote_until_released() {
        let mut c = Claims::default();
        assert_eq!(c.vote(0, "a", 2, 7), 2);
        assert_eq!(c.vote(1, "a", 3, 8), 2, "first writer wins");
        assert_eq!(c.vote_of("a"), Some(2));
        assert!(c.release(2, 3, 8).is_empty());
        let released = c.release(2, 2, 7);
        assert_eq!(released.len(), 1, "node 2's connection closed");
        assert_eq!(
            released[0],
            Reanswer {
                id: "a".into(),
                winner: Some(3),
                to: vec![3]
            },
            "node 3, refused before, holds the vote now and is told"
        );
        c.forget_vote("a");
        assert_eq!(c.vote(2, "a", 3, 8), 3);
        c.forget_vote("a");
        assert_eq!(c.votes(), 0);
    }

    /// Issue 27: the close of a restarted node's old connection released the votes its new
    /// process had been given over the new one.
    #[test]
    fn an_old_connections_close_keeps_the_votes_given_over_a_newer_one() {
        let mut c = Claims::default();
        c.vote(0, "old", 2, 5);
        c.vote(1, "new", 2, 9);
        let ids = |r: Vec<Reanswer>| r.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(c.release(2, 2, 5)), vec!["old".to_string()]);
        assert_eq!(c.vote_of("new"), Some(2));
        assert_eq!(ids(c.release(3, 2, 9)), vec!["new".to_string()]);
    }

    #[test]
    fn a_claim_wins_with_a_majority_and_loses_once_it_cannot_reach_one() {
        // Three nodes: own vote plus one answer wins; two answers for others lose.
        let mut c = Claims::default();
        assert_eq!(
            c.claim(0, "a", 1, Some(1), 3, ClaimKind::Result),
            (true, None)
        );
        assert_eq!(c.answer("a", 2, 1, 3), Some(Verdict::Won));
        assert_eq!(c.close("a"), Some(ClaimKind::Result));
        c.claim(0, "b", 1, Some(1), 3, ClaimKind::Result);
        assert_eq!(
            c.answer("b", 2, 9, 3),
            None,
            "one answer against is not enough"
        );
        assert_eq!(
            c.answer("b", 2, 9, 3),
            None,
            "a repeated answer counts once"
        );
        assert_eq!(c.answer("b", 3, 9, 3), Some(Verdict::Lost));
        // Own vote already for another node: two answers against, nothing can save it.
        c.claim(0, "c", 1, Some(2), 3, ClaimKind::Result);
        assert_eq!(c.answer("c", 2, 9, 3), Some(Verdict::Lost));
        // Five nodes: one answer against does not decide; three for win.
        c.claim(0, "d", 1, Some(1), 5, ClaimKind::Result);
        assert_eq!(c.answer("d", 2, 9, 5), None);
        assert_eq!(c.answer("d", 3, 1, 5), None);
        assert_eq!(c.answer("d", 4, 1, 5), Some(Verdict::Won));
        // One node: its own vote decides at once.
        assert_eq!(
            c.claim(0, "e", 1, Some(1), 1, ClaimKind::Result),
            (true, Some(Verdict::Won))
        );
    }

    #[test]
    fn a_takeover_wins_with_a_majority_and_is_given_up_at_the_first_answer_against() {
        let mut c = Claims::default();
        assert_eq!(
            c.claim(0, "a", 1, Some(1), 3, ClaimKind::Takeover),
            (true, None)
        );
        assert_eq!(c.answer("a", 2, 1, 3), Some(Verdict::Won));
        assert_eq!(c.close("a"), Some(ClaimKind::Takeover));
        c.claim(0, "b", 1, Some(1), 5, ClaimKind::Takeover);
        assert_eq!(
            c.answer("b", 2, 3, 5),
            Some(Verdict::Lost),
            "node 2 holds node 3: someone else may be serving it"
        );
        c.close("b");
        // Undecided takeovers are given up sooner than results.
        c.claim(0, "c", 1, Some(1), 3, ClaimKind::Takeover);
        c.claim(0, "d", 1, Some(1), 3, ClaimKind::Result);
        let due = c.due(TAKEOVER_TTL_MS);
        assert_eq!(due.abandoned, vec!["c".to_string()]);
        assert!(due.expired.is_empty());
        assert_eq!(c.kind_of("d"), Some(ClaimKind::Result));
    }

    /// Issue 30: a takeover and an assigned server each held themselves, the third voter
    /// silent; the takeover withdrew, and the server's claim kept the answer that named it.
    #[test]
    fn a_withdrawn_vote_goes_to_the_first_refused_claimant_whose_answer_is_replaced() {
        let mut c = Claims::default();
        assert_eq!(c.vote(0, "a", 2, 0), 2, "node 2's own takeover");
        assert_eq!(c.vote(1, "a", 1, 5), 2, "node 1 is refused");
        assert_eq!(c.vote(2, "a", 1, 5), 2, "refused once");
        assert_eq!(c.withdraw(3, "a", 3), None, "node 3 holds no vote here");
        let again = c.withdraw(4, "a", 2).expect("node 2 withdrew");
        assert_eq!((again.winner, again.to), (Some(1), vec![1]));
        assert_eq!(c.vote_of("a"), Some(1));
        assert_eq!(c.withdraw(5, "b", 2), None);
        // The claimant's side: the new answer replaces the old one.
        c.claim(0, "r", 1, Some(1), 3, ClaimKind::Result);
        assert_eq!(c.answer("r", 2, 2, 3), None);
        assert_eq!(c.answer("r", 2, 1, 3), Some(Verdict::Won));
    }

    #[test]
    fn undecided_claims_are_sent_again_then_given_up_oldest_first() {
        let mut c = Claims::default();
        c.claim(0, "a", 1, Some(1), 3, ClaimKind::Result);
        c.claim(10, "b", 1, Some(1), 3, ClaimKind::Result);
        assert_eq!(c.due(CLAIM_RETRY_MS - 1), DueClaims::default());
        let due = c.due(CLAIM_RETRY_MS);
        assert_eq!(due.resend, vec!["a".to_string()]);
        assert_eq!(c.unanswered("a", &[2, 3]), vec![2, 3]);
        c.answer("a", 2, 9, 3);
        assert_eq!(c.unanswered("a", &[2, 3]), vec![3]);
        assert_eq!(c.due(CLAIM_RETRY_MS + 10).resend, vec!["b".to_string()]);
        c.close("b");
        let due = c.due(CLAIM_TTL_MS);
        assert_eq!(due.expired, vec!["a".to_string()]);
        assert_eq!(c.open(), 0);
        // Over the limit, the oldest go first.
        for i in 0..MAX_OPEN_CLAIMS + 2 {
            c.claim(
                CLAIM_TTL_MS + i as u64,
                &format!("r{i}"),
                1,
                Some(1),
                3,
                ClaimKind::Result,
            );
        }
        let due = c.due(CLAIM_TTL_MS + 1);
        assert_eq!(due.evicted, vec!["r0".to_string(), "r1".to_string()]);
        assert_eq!(c.open(), MAX_OPEN_CLAIMS);
    }

    #[test]
    fn old_votes_are_swept() {
        let mut c = Claims::default();
        c.vote(0, "a", 2, 1);
        c.sweep(1);
        c.vote(CLAIM_TTL_MS, "b", 2, 1);
        c.sweep(CLAIM_TTL_MS + 1);
        assert_eq!((c.vote_of("a"), c.vote_of("b")), (None, Some(2)));
    }
}
