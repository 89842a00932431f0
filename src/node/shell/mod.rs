//! The node's async shell: sockets, timers and tasks around the synchronous [`Node`] core.
//!
//! ```text
//!            accept loop ──(handshake)──> member reader tasks ─┐
//!                                                            ├─> node loop ──> link tasks ──> members
//!                          timer (every TICK) ───────────────┘      │
//!                                                                   └─> status (watch) ──> HTTP API
//! ```
//!
//! - One **node loop** task owns the core. It feeds it every inbound message and a tick every
//!   [`TICK`], routes the core's outputs to the links, prints the events an operator
//!   should see, and publishes a [`NodeStatus`] for the HTTP API. It handles what is queued in
//!   bursts and flushes the core's batched claims after each burst.
//! - A finished encryption is **kept**, not sent: the core claims the request from the members
//!   and says [`Output::Reply`] once a majority names this node as the winner (then the reply
//!   goes to the client, or to the node an HTTP request came through), or [`Output::Drop`]
//!   (another node won; nothing is sent). The core bounds how many results wait. Replies wait
//!   for a **barrier** through every link: the commit flushed with them is written to the
//!   members' sockets before any reply is written, so a member that sees this process's connection
//!   close without its commit knows it never replied (and releases its votes). Only the links
//!   to members heard from are waited for, at most [`BARRIER_WAIT`]: a blocked link (a
//!   partition) must not hold the majority's replies.
//! - While the node is not Active (it lost its majority, or is in a simulated failure), the
//!   HTTP requests that came through it are answered 503 at once: it cannot finish them.
//! - One **link** task per member owns the outgoing connection to it
//!   ([`crate::node::link`]): it connects, authenticates ([`crate::wire::handshake::MemberAuth`]), writes, and
//!   reconnects with back-off. Envelopes that the protocol can lose are dropped when its queue
//!   is full or it is down; claim batches (with the commits) are merged and never dropped.
//!   Each time a link that was up comes up again it counts one re-connection
//!   (`link_reconnects` in [`NodeStatus`]); a link's first connection does not count.
//! - The **accept loop** authenticates each inbound connection; a member's connection gets a
//!   reader task that decodes envelopes and hands them to the node loop, and reports its close
//!   (the failure detector's strongest evidence). A bad frame closes only that connection.
//!
//! Implementation caveats: links are one-way (each node dials every member), so a pair of nodes
//! uses two TCP connections; that keeps reconnection free of races.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use std::collections::{BTreeMap, HashMap};

use tokio::sync::oneshot;

use crate::cluster::message::{Envelope, Message, NodeState};
use crate::cluster::node::{Arrival, Node, Output, Via};
use crate::ids::{Millis, NodeId, RequestId};
use crate::node::budget::{Budget, Share};
use crate::node::link::LinkHandle;
use crate::node::pool::Pool;
use crate::wire::request::{EncryptReply, EncryptRequest, Outcome, Refusal};
use crate::Result;

use super::events::report;
use super::TICK;
use crate::watch::NodeStatus;

mod requests;

/// Inputs handled in one burst before the core's batched claims are flushed.
const MAX_BURST: usize = 256;

/// Longest wait for the links to write the commits that go before a batch of replies.
/// A link that cannot write for this long is blocked (a partition: the member sees no close,
/// so it releases no vote) and is not waited for any further.
const BARRIER_WAIT: Duration = Duration::from_millis(200);

/// Longest wait for room in a full client or member queue for a reply that has been committed.
const COMMITTED_REPLY_WAIT: Duration = Duration::from_secs(5);

/// What the node loop receives.
pub(crate) enum Input {
    /// An envelope from an authenticated member connection (with its connection number).
    Envelope(Envelope, u64),
    /// A member connection opened (with its connection number).
    LinkOpened(NodeId, u64),
    /// A member connection closed.
    LinkClosed(NodeId, u64),
    /// A request from a client connection (the client sent it to every node), with its
    /// payload's share of the node's budget.
    ClientRequest(EncryptRequest, mpsc::Sender<EncryptReply>, Share),
    /// A request that reached this node alone (plain HTTP): forwarded to the members.
    HttpRequest(EncryptRequest, oneshot::Sender<EncryptReply>),
    /// An encryption job finished.
    Done(EncryptReply),
}

/// Where a released reply goes.
enum Delivery {
    Client(mpsc::Sender<EncryptReply>),
    Http(oneshot::Sender<EncryptReply>),
    Member(LinkHandle),
}

/// Where the answer to a held request goes.
enum ReplyTo {
    /// This node's connection to the client.
    Client(mpsc::Sender<EncryptReply>),
    /// The node the request reached over HTTP (possibly this one).
    Origin(NodeId),
}

/// A request this node holds: its payload (until a job takes it) and where its answer goes.
struct Held {
    request: Option<EncryptRequest>,
    reply_to: ReplyTo,
    /// The payload's share of the node's budget, for a copy forwarded by another node (an
    /// upload's share is held by its HTTP handler until it is answered).
    _share: Option<Share>,
}

/// A finished job's result, kept until the core says reply or drop.
struct Finished {
    reply: EncryptReply,
    reply_to: ReplyTo,
}

/// The node loop: owns the core and the held payloads.
pub(super) struct Shell {
    core: Node,
    /// The byte budget for held payloads (see [`crate::node::budget`]).
    budget: Budget,
    started: Instant,
    links: BTreeMap<NodeId, LinkHandle>,
    /// The data links: request payloads (`Forward`) and replies, so that no image waits
    /// ahead of a heartbeat, claim or commit on `links`.
    data_links: BTreeMap<NodeId, LinkHandle>,
    pool: Arc<Pool>,
    inputs: mpsc::Sender<Input>,
    held: HashMap<RequestId, Held>,
    /// Finished results waiting for the core's verdict (bounded by the core).
    results: HashMap<RequestId, Finished>,
    /// Results the core said to reply with, waiting for the commit's barrier.
    ready: Vec<Finished>,
    /// Requests whose reply was lost with their server's run or connection, sent again by
    /// their client (see [`Node::answers_again`]): served once more and answered without a
    /// claim.
    again: HashMap<RequestId, mpsc::Sender<EncryptReply>>,
    http_waiters: HashMap<RequestId, oneshot::Sender<EncryptReply>>,
    latest_conn: BTreeMap<NodeId, u64>,
    status: watch::Sender<NodeStatus>,
    /// Re-connections of the links, counted by their tasks.
    reconnects: Arc<AtomicU64>,
}

/// What the node loop is given to run with.
pub(super) struct Wiring {
    pub core: Node,
    pub budget: Budget,
    pub links: BTreeMap<NodeId, LinkHandle>,
    pub data_links: BTreeMap<NodeId, LinkHandle>,
    pub pool: Arc<Pool>,
    pub inputs: mpsc::Sender<Input>,
    pub status: watch::Sender<NodeStatus>,
    pub reconnects: Arc<AtomicU64>,
}

impl Shell {
    pub(super) fn new(wiring: Wiring) -> Shell {
        let Wiring {
            core,
            budget,
            links,
            data_links,
            pool,
            inputs,
            status,
            reconnects,
        } = wiring;
        Shell {
            core,
            budget,
            started: Instant::now(),
            links,
            data_links,
            pool,
            inputs,
            held: HashMap::new(),
            results: HashMap::new(),
            ready: Vec::new(),
            again: HashMap::new(),
            http_waiters: HashMap::new(),
            latest_conn: BTreeMap::new(),
            status,
            reconnects,
        }
    }

    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn id(&self) -> NodeId {
        self.core.id()
    }

    pub(super) async fn run(mut self, mut inputs: mpsc::Receiver<Input>) -> Result<()> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    None => return Ok(()),
                    Some(input) => {
                        self.handle(input);
                        // What else is queued joins the burst; then the claims, answers and
                        // commits gathered go out as one message per member.
                        for _ in 1..MAX_BURST {
                            match inputs.try_recv() {
                                Ok(input) => self.handle(input),
                                Err(_) => break,
                            }
                        }
                        let outputs = self.core.flush();
                        self.apply(outputs);
                        self.release_ready();
                    }
                },
                _ = ticker.tick() => self.tick(),
            }
        }
    }

    fn tick(&mut self) {
        let now = self.now();
        self.core.set_load(self.pool.load(), self.pool.cost());
        let outputs = self.core.tick(now);
        self.apply(outputs);
        self.release_ready();
        self.http_waiters.retain(|_, w| !w.is_closed());
        if self.core.state() != NodeState::Active && !self.http_waiters.is_empty() {
            // It cannot finish them: its claims cannot reach a majority, nor can the winner's
            // reply reach it. Say so now instead of at the HTTP deadline.
            let me = self.id();
            let why = if self.core.state() == NodeState::Failed {
                "this node is in a (simulated) failure; the request may or may not be served"
            } else {
                "this node lost contact with the majority; the request may or may not be served"
            };
            for (id, waiter) in self.http_waiters.drain() {
                let _ = waiter.send(refusal(&id, me, Refusal::Unavailable, why));
            }
        }
        let core = self.core.status(now);
        let status = NodeStatus {
            encryptions: core.counters.served,
            lb_decisions: core.counters.lb_decisions,
            takeovers: core.counters.takeovers,
            payload_bytes: self.budget.in_use() as u64,
            payload_budget_bytes: self.budget.capacity() as u64,
            payloads_refused: self.budget.refused(),
            in_flight: self.pool.in_flight(),
            queued: self.pool.queued(),
            workers: self.pool.workers(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            link_reconnects: self.reconnects.load(Ordering::Relaxed),
            core,
        };
        self.status.send_replace(status);
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        let outputs = match input {
            Input::Envelope(envelope, conn) => match envelope.message {
                Message::Forward(request) => {
                    let origin = envelope.from;
                    match self
                        .core
                        .arrival(&request.id, &request.resent_after, Via::Member)
                    {
                        Arrival::Hold => self.hold_forwarded(*request, origin),
                        _ => Vec::new(),
                    }
                }
                Message::Reply(reply) => {
                    if !self.core.silent() {
                        if let Some(waiter) = self.http_waiters.remove(&reply.id) {
                            let _ = waiter.send(*reply);
                        }
                    }
                    Vec::new()
                }
                _ => self.core.step_on_link(now, envelope, conn),
            },
            Input::LinkOpened(member, conn) => {
                self.latest_conn.insert(member, conn);
                Vec::new()
            }
            Input::LinkClosed(member, conn) => {
                if self.latest_conn.get(&member) == Some(&conn) {
                    self.core.member_disconnected(now, member);
                } else {
                    // An older connection of the member (a restarted process): the votes given
                    // over it go, those given over the newer one stay.
                    self.core.release_votes(now, member, conn);
                }
                Vec::new()
            }
            Input::ClientRequest(request, reply, share) => {
                match self
                    .core
                    .arrival(&request.id, &request.resent_after, Via::Client)
                {
                    Arrival::Hold => self.hold(request, ReplyTo::Client(reply), Some(share)),
                    Arrival::ServeShare => {
                        if !self.again.contains_key(&request.id) {
                            self.serve_directly(request, reply);
                        }
                        Vec::new()
                    }
                    Arrival::ServeAgain(why) => {
                        self.serve_again(request, reply, &why);
                        Vec::new()
                    }
                    Arrival::Ignore | Arrival::Refuse(_) => Vec::new(),
                }
            }
            Input::HttpRequest(request, waiter) => {
                match self
                    .core
                    .arrival(&request.id, &request.resent_after, Via::Http)
                {
                    Arrival::Hold => {
                        let me = self.id();
                        self.http_waiters.insert(request.id.clone(), waiter);
                        let forward = Message::Forward(Box::new(request.clone()));
                        let envelope = Envelope::new(me, self.core.epoch(), forward);
                        for to in self.links.keys().copied().collect::<Vec<_>>() {
                            self.send(to, envelope.clone());
                        }
                        self.hold(request, ReplyTo::Origin(me), None)
                    }
                    Arrival::Refuse(why) => {
                        let _ =
                            waiter.send(refusal(&request.id, self.id(), Refusal::Unavailable, why));
                        Vec::new()
                    }
                    Arrival::ServeShare | Arrival::ServeAgain(_) | Arrival::Ignore => Vec::new(),
                }
            }
            Input::Done(reply) => self.finish(now, reply),
        };
        self.apply(outputs);
    }

    fn send(&self, to: NodeId, envelope: Envelope) {
        let links = match envelope.message {
            Message::Forward(_) | Message::Reply(_) => &self.data_links,
            _ => &self.links,
        };
        if let Some(link) = links.get(&to) {
            if !link.send(envelope) {
                debug!(
                    node = self.id(),
                    member = to,
                    "link queue full; message dropped"
                );
            }
        }
    }

    fn apply(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, envelope } => self.send(to, envelope),
                Output::Serve(id) => self.serve(id),
                Output::Reply(id) => self.reply(&id),
                Output::Drop(id) => {
                    if self.results.remove(&id).is_some() {
                        debug!(node = self.id(), request = %id, "another node won the request; result dropped");
                    }
                }
                Output::Forget(id) => {
                    // A client's re-send arrived before the commit it needed: the log names this
                    // node for a request a previous run of it won and never answered (and this
                    // run caught up later), or a node whose connection to the client closed
                    // before its reply. Answer it now (the log was all it waited for).
                    if let Some(Held {
                        request: Some(request),
                        reply_to: ReplyTo::Client(client),
                        ..
                    }) = self.held.remove(&id)
                    {
                        let arrival = self.core.arrival(&id, &request.resent_after, Via::Client);
                        if let Arrival::ServeAgain(why) = arrival {
                            self.serve_again(request, client, &why);
                        }
                    }
                }
                Output::Event(event) => report(self.id(), &event),
            }
        }
    }
}

/// Queues a reply whose commit the members hold: it is the only reply the request gets, so a full
/// queue (a client or member reading slowly) is waited for, up to [`COMMITTED_REPLY_WAIT`], in a
/// task of its own so that the other replies of the batch do not wait with it.
fn send_committed<T: Send + 'static>(queue: mpsc::Sender<T>, item: T) {
    if let Err(mpsc::error::TrySendError::Full(item)) = queue.try_send(item) {
        tokio::spawn(async move {
            if timeout(COMMITTED_REPLY_WAIT, queue.send(item))
                .await
                .is_err()
            {
                warn!("a committed reply was dropped: its reader took more than {COMMITTED_REPLY_WAIT:?}");
            }
        });
    }
}

/// A refusal reply.
pub(crate) fn refusal(id: &str, node: NodeId, kind: Refusal, message: &str) -> EncryptReply {
    EncryptReply {
        id: id.to_string(),
        served_by: node,
        outcome: Outcome::Refused {
            kind,
            message: message.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::node::NodeConfig;
    use crate::codec::seal::SealKey;
    use crate::config::FailureSim;

    /// A one-node shell around the real core and pool, with no links: what it is given and
    /// what comes out.
    fn single_node() -> (
        mpsc::Sender<Input>,
        tokio::task::JoinHandle<Result<()>>,
        Budget,
    ) {
        let core = Node::new(
            NodeConfig {
                id: 1,
                members: vec![1],
                timing: Default::default(),
                failures: FailureSim {
                    enabled: false,
                    ..FailureSim::default()
                },
                seed: 1,
                static_split: false,
            },
            0,
        );
        let pool = Pool::new(SealKey::from_secret(b"k"), 1, Duration::ZERO).unwrap();
        let (inputs, queue) = mpsc::channel(64);
        let budget = Budget::new(1 << 20);
        let (status, _) = watch::channel(super::super::status::initial_status(1, 1));
        let shell = Shell::new(Wiring {
            core,
            budget: budget.clone(),
            links: BTreeMap::new(),
            data_links: BTreeMap::new(),
            pool,
            inputs: inputs.clone(),
            status,
            reconnects: Arc::default(),
        });
        (inputs, tokio::spawn(shell.run(queue)), budget)
    }

    fn request(id: &str) -> EncryptRequest {
        EncryptRequest {
            id: id.into(),
            secret: crate::SAMPLE_IMAGE.to_vec(),
            cover: None,
            owner: "alice".into(),
            viewers: Vec::new(),
            resent_after: Vec::new(),
        }
    }

    /// The shell carries a client's request through the core (hold, assign, serve, claim,
    /// commit) to one reply on the client's connection, and gives its budget share back.
    #[tokio::test]
    async fn a_client_request_is_served_and_answered_once_and_its_share_given_back() {
        let (inputs, shell, budget) = single_node();
        let (reply_tx, mut replies) = mpsc::channel(4);
        let share = budget.try_take(1000).unwrap();
        let sent = inputs.send(Input::ClientRequest(request("r1"), reply_tx, share));
        sent.await.unwrap();
        let reply = timeout(Duration::from_secs(20), replies.recv()).await;
        let reply = reply.expect("a reply in time").expect("a reply");
        assert_eq!((reply.id.as_str(), reply.served_by), ("r1", 1));
        assert!(
            matches!(reply.outcome, Outcome::Encrypted(_)),
            "{:?}",
            reply.outcome
        );
        let again = timeout(Duration::from_millis(300), replies.recv()).await;
        assert!(!matches!(again, Ok(Some(_))), "one reply only");
        assert_eq!(budget.in_use(), 0, "the share is given back once answered");
        shell.abort();
    }

    /// A failed node's refusal over HTTP says why, in the words the core chose.
    #[test]
    fn a_refusal_names_the_node_and_the_reason() {
        let reply = refusal(
            "r2",
            3,
            Refusal::Unavailable,
            "no coordinator with a majority",
        );
        assert_eq!((reply.id.as_str(), reply.served_by), ("r2", 3));
        assert!(matches!(
            reply.outcome,
            Outcome::Refused { kind: Refusal::Unavailable, ref message } if message.contains("majority")
        ));
    }
}
