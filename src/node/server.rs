//! The node's async shell: sockets, timers and tasks around the synchronous [`Node`] core.
//!
//! ```text
//!            accept loop ──(handshake)──> peer reader tasks ─┐
//!                                                            ├─> node loop ──> peer link tasks ──> peers
//!                          timer (every TICK) ───────────────┘      │
//!                                                                   └─> status (watch) ──> HTTP API
//! ```
//!
//! - One **node loop** task owns the core. It feeds it every inbound message and a tick every
//!   [`TICK`], routes the core's outputs to the peer links, prints the events an operator
//!   should see, and publishes a [`NodeStatus`] for the HTTP API. It handles what is queued in
//!   bursts and flushes the core's batched claims after each burst.
//! - A finished encryption is **kept**, not sent: the core claims the request from the peers
//!   and says [`Output::Reply`] once a majority names this node as the winner (then the reply
//!   goes to the client, or to the node an HTTP request came through), or [`Output::Drop`]
//!   (another node won; nothing is sent). The core bounds how many results wait. Replies wait
//!   for a **barrier** through every peer link: the commit flushed with them is written to the
//!   peers' sockets before any reply is written, so a peer that sees this process's connection
//!   close without its commit knows it never replied (and releases its votes). Only the links
//!   to peers heard from are waited for, at most [`BARRIER_WAIT`]: a blocked link (a
//!   partition) must not hold the majority's replies.
//! - While the node is not Active (it lost its majority, or is in a simulated failure), the
//!   HTTP requests that came through it are answered 503 at once: it cannot finish them.
//! - One **peer link** task per peer owns the outgoing connection to it
//!   ([`crate::node::link`]): it connects, authenticates ([`PeerAuth`]), writes, and
//!   reconnects with back-off. Envelopes that the protocol can lose are dropped when its queue
//!   is full or it is down; claim batches (with the commits) are merged and never dropped.
//!   Each time a link that was up comes up again it counts one re-connection
//!   (`peer_link_reconnects` in [`NodeStatus`]); a link's first connection does not count.
//! - The **accept loop** authenticates each inbound connection; a peer's connection gets a
//!   reader task that decodes envelopes and hands them to the node loop, and reports its close
//!   (the failure detector's strongest evidence). A bad frame closes only that connection.
//!
//! Implementation caveats: links are one-way (each node dials every peer), so a pair of nodes
//! uses two TCP connections; that keeps reconnection free of races.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use std::collections::{BTreeMap, HashMap};

use tokio::sync::oneshot;

use crate::cluster::dispatch::static_owner;
use crate::cluster::node::{CoreStatus, Event, Node, NodeConfig, Output};
use crate::codec::seal::SealKey;
use crate::config::{ClusterConfig, Dispatch};
use crate::ids::{Millis, NodeId, RequestId};
use crate::node::budget::{Budget, Share};
use crate::node::http;
use crate::node::link::{link, LinkHandle};
use crate::node::pool::Pool;
use crate::node::slots::{
    Bounded, Slots, MAX_CLIENT_CONNECTIONS, MAX_HANDSHAKES, MAX_HTTP_CONNECTIONS,
};
use crate::store::{Silence, Store};
use crate::wire::framing::{
    decode, decode_envelope, split, Admitted, FrameReader, FrameWriter, MAX_DATA_FRAME_BYTES,
};
use crate::wire::handshake::{Accepted, LinkKind, PeerAuth};
use crate::wire::message::{Envelope, Message, NodeState, PROTOCOL_VERSION};
use crate::wire::request::{EncryptReply, EncryptRequest, Outcome, Refusal, MAX_ID_LEN};
use crate::{Error, Result};

/// How often the node loop ticks the core.
pub const TICK: Duration = Duration::from_millis(10);
pub use crate::node::link::HANDSHAKE_TIMEOUT;

/// The longest a node waits, once told to stop, for its consensus engine to stop: the node's
/// whole exit is bounded by it (its tasks are aborted, blocking threads are not waited for).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Inputs queued for the node loop.
const INPUT_QUEUE: usize = 8192;
/// Replies queued for one client connection.
const CLIENT_QUEUE: usize = 4096;
/// Inputs handled in one burst before the core's batched claims are flushed.
const MAX_BURST: usize = 256;
/// Longest wait for the peer links to write the commits that go before a batch of replies.
/// A link that cannot write for this long is blocked (a partition: the peer sees no close,
/// so it releases no vote) and is not waited for any further.
const BARRIER_WAIT: Duration = Duration::from_millis(200);
/// Longest wait for room in a full client or peer queue for a reply that has been committed.
const COMMITTED_REPLY_WAIT: Duration = Duration::from_secs(5);

/// Why the node stops when one of its tasks ended before shutdown: every task runs for the
/// node's life, so one that ends (returns, fails or panics) took the node's purpose with it,
/// and the node ends with an error (exit code 1), never as a clean stop.
fn task_ended(id: NodeId, done: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match done {
        Ok(Err(e)) => e,
        Ok(Ok(())) => Error::Internal(format!("node {id}: a task ended before shutdown")),
        Err(e) => Error::Internal(format!("node {id}: a task failed: {e}")),
    }
}

/// What the node loop receives.
pub(crate) enum Input {
    /// An envelope from an authenticated peer connection (with its connection number).
    Envelope(Envelope, u64),
    /// A peer connection opened (with its connection number).
    PeerOpened(NodeId, u64),
    /// A peer connection closed.
    PeerClosed(NodeId, u64),
    /// A request from a client connection (the client sent it to every node), with its
    /// payload's share of the node's budget.
    ClientRequest(EncryptRequest, mpsc::Sender<EncryptReply>, Share),
    /// A request that reached this node alone (plain HTTP): forwarded to the peers.
    HttpRequest(EncryptRequest, oneshot::Sender<EncryptReply>),
    /// An encryption job finished.
    Done(EncryptReply),
}

/// Where a released reply goes.
enum Delivery {
    Client(mpsc::Sender<EncryptReply>),
    Http(oneshot::Sender<EncryptReply>),
    Peer(LinkHandle),
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

/// Everything `/status` and `/metrics` show.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The core's view.
    #[serde(flatten)]
    pub core: CoreStatus,
    /// Encryption jobs this node completed (`served` counts the request log's entries).
    pub encryptions: u64,
    /// Load-balancing decisions this node made as coordinator.
    pub lb_decisions: u64,
    /// Requests this node took over while no live coordinator assigned them.
    pub takeovers: u64,
    /// Bytes of request payloads held now (see [`crate::node::budget`]).
    pub payload_bytes: u64,
    /// The payload budget, in bytes.
    pub payload_budget_bytes: u64,
    /// Payloads refused so far for want of budget (HTTP uploads answered 503, forwarded
    /// copies not held).
    pub payloads_refused: u64,
    /// Encryptions running now.
    pub in_flight: usize,
    /// Encryptions waiting for a worker.
    pub queued: usize,
    /// Encryption workers.
    pub workers: usize,
    /// Seconds since the process started.
    pub uptime_s: f64,
    /// Times one of this node's links to a peer came up again after it had been up and broke
    /// (0 if no link ever broke); absent (0) in the status of older nodes.
    #[serde(default)]
    pub peer_link_reconnects: u64,
}

/// Runs node `id` of `config` until `shutdown` completes.
pub async fn run(
    config: ClusterConfig,
    id: NodeId,
    seed: u64,
    data_dir: std::path::PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let me = config.node(id)?.clone();
    let listener = TcpListener::bind(me.addr)
        .await
        .map_err(|e| Error::Config(format!("node {id} cannot listen on {}: {e}", me.addr)))?;
    let http_listener = TcpListener::bind(me.http)
        .await
        .map_err(|e| Error::Config(format!("node {id} cannot serve HTTP on {}: {e}", me.http)))?;
    info!(node = id, addr = %me.addr, http = %me.http, "[Node {id}] listening");

    let auth = PeerAuth::new(&config.secret);
    let pool = Pool::new(
        SealKey::from_secret(config.secret.as_bytes()),
        config.workers,
        Duration::from_millis(config.delay_ms),
    )?;
    let core = Node::new(
        NodeConfig {
            id,
            members: config.ids(),
            timing: config.timing,
            failures: config.failures,
            seed,
        },
        0,
    );
    let budget = Budget::new((config.payload_budget_mb as usize).saturating_mul(1 << 20));
    let (status_tx, status_rx) = watch::channel(initial_status(id, pool.workers()));
    let (input_tx, input_rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let silent_rx = status_rx.clone();
    let silent: Silence = Arc::new(move || silent_rx.borrow().core.state == NodeState::Failed);
    let store = Store::open(&config, id, &data_dir, silent).await?;
    info!(node = id, dir = %data_dir.display(), "[Node {id}] store open");

    let mut tasks = JoinSet::new();
    let mut links = BTreeMap::new();
    let mut data_links = BTreeMap::new();
    let reconnects = Arc::new(AtomicU64::new(0));
    // The data links' re-connections are not reported: they follow the protocol links'.
    let data_reconnects = Arc::new(AtomicU64::new(0));
    for peer in config.nodes.iter().filter(|n| n.id != id) {
        for (kind, links, counter) in [
            (LinkKind::Node, &mut links, &reconnects),
            (LinkKind::Data, &mut data_links, &data_reconnects),
        ] {
            let (handle, task) = link(
                kind,
                id,
                peer.id,
                peer.addr,
                auth.clone(),
                Arc::clone(counter),
            );
            links.insert(peer.id, handle);
            tasks.spawn(task);
        }
    }
    let members = Arc::new(config.ids());
    tasks.spawn(accept_loop(
        listener,
        id,
        members,
        auth,
        input_tx.clone(),
        store.clone(),
        budget.clone(),
    ));
    tasks.spawn(give_back_memory(budget.clone()));
    let (silence_store, silence_changes) = (store.clone(), status_rx.clone());
    tasks.spawn(async move {
        silence_store.follow_silence(silence_changes).await;
        Ok(())
    });
    let shell = Shell {
        core,
        budget: budget.clone(),
        started: Instant::now(),
        links,
        data_links,
        pool,
        inputs: input_tx.clone(),
        held: HashMap::new(),
        results: HashMap::new(),
        ready: Vec::new(),
        again: HashMap::new(),
        http_waiters: HashMap::new(),
        latest_conn: BTreeMap::new(),
        status: status_tx,
        static_split: (config.dispatch == Dispatch::StaticSplit).then(|| config.ids()),
        reconnects,
    };
    tasks.spawn(shell.run(input_rx));
    tasks.spawn(http::serve(
        Bounded::new(http_listener, MAX_HTTP_CONNECTIONS),
        http::Api {
            node: id,
            budget,
            status: status_rx,
            inputs: input_tx,
            store: store.clone(),
            desk: crate::desk::Desk::new(
                store.clone(),
                SealKey::from_secret(config.secret.as_bytes()),
            ),
            nodes: config.nodes.clone(),
            client: reqwest::Client::new(),
        },
    ));

    tokio::select! {
        _ = shutdown => info!(node = id, "[Node {id}] shutting down"),
        Some(done) = tasks.join_next() => return Err(task_ended(id, done)),
    }
    tasks.shutdown().await;
    if timeout(SHUTDOWN_GRACE, store.shutdown()).await.is_err() {
        // Every acknowledged write is on disk already (durable commits): nothing is lost.
        warn!(
            node = id,
            "[Node {id}] the consensus engine did not stop within {SHUTDOWN_GRACE:?}; exiting anyway"
        );
    }
    Ok(())
}

fn initial_status(id: NodeId, workers: usize) -> NodeStatus {
    let core = CoreStatus {
        id,
        state: NodeState::Recovering,
        epoch: 0,
        coordinator: None,
        load: 0.0,
        quorum: false,
        peers: Vec::new(),
        digest: String::new(),
        elections: 0,
        failures: 0,
        counters: Default::default(),
        held: 0,
        request_log: 0,
        served: 0,
        last_recovery_ms: None,
        awaiting_majority: 0,
    };
    NodeStatus {
        core,
        encryptions: 0,
        lb_decisions: 0,
        takeovers: 0,
        payload_bytes: 0,
        payload_budget_bytes: 0,
        payloads_refused: 0,
        in_flight: 0,
        queued: 0,
        workers,
        uptime_s: 0.0,
        peer_link_reconnects: 0,
    }
}

/// The node loop: owns the core and the held payloads.
struct Shell {
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
    /// With the static split (the baseline), every member in id order: a request is served
    /// by the one its id hashes to, and answered without claim or commit.
    static_split: Option<Vec<NodeId>>,
    /// Re-connections of the peer links, counted by their tasks.
    reconnects: Arc<AtomicU64>,
}

impl Shell {
    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn id(&self) -> NodeId {
        self.core.id()
    }

    async fn run(mut self, mut inputs: mpsc::Receiver<Input>) -> Result<()> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    None => return Ok(()),
                    Some(input) => {
                        self.handle(input);
                        // What else is queued joins the burst; then the claims, answers and
                        // commits gathered go out as one message per peer.
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
            peer_link_reconnects: self.reconnects.load(Ordering::Relaxed),
            core,
        };
        self.status.send_replace(status);
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        let failed = self.core.state() == NodeState::Failed;
        let outputs = match input {
            Input::Envelope(envelope, conn) => match envelope.message {
                Message::Forward(request) if !failed => {
                    let origin = envelope.from;
                    if self.held.contains_key(&request.id) {
                        self.hold(*request, ReplyTo::Origin(origin), None)
                    } else if let Some(share) = self.budget.try_take(request.payload_len()) {
                        self.hold(*request, ReplyTo::Origin(origin), Some(share))
                    } else {
                        // Not held: if this node is chosen it declines, and another serves it.
                        debug!(node = self.id(), request = %request.id, "over the payload budget: a forwarded copy is not held");
                        Vec::new()
                    }
                }
                Message::Reply(reply) if !failed => {
                    if let Some(waiter) = self.http_waiters.remove(&reply.id) {
                        let _ = waiter.send(*reply);
                    }
                    Vec::new()
                }
                _ => self.core.step_on_link(now, envelope, conn),
            },
            Input::PeerOpened(peer, conn) => {
                self.latest_conn.insert(peer, conn);
                Vec::new()
            }
            Input::PeerClosed(peer, conn) => {
                if self.latest_conn.get(&peer) == Some(&conn) {
                    self.core.peer_disconnected(now, peer);
                } else {
                    // An older connection of the peer (a restarted process): the votes given
                    // over it go, those given over the newer one stay.
                    self.core.release_votes(now, peer, conn);
                }
                Vec::new()
            }
            // A failed node ignores its clients: the other nodes have the same request.
            Input::ClientRequest(..) if failed => Vec::new(),
            Input::ClientRequest(request, reply, _) if self.static_split.is_some() => {
                self.serve_static(request, reply);
                Vec::new()
            }
            Input::ClientRequest(request, reply, share) => {
                if self.core.answers_again(&request.id, &request.resent_after) {
                    self.answer_again(request, reply);
                    Vec::new()
                } else {
                    self.hold(request, ReplyTo::Client(reply), Some(share))
                }
            }
            Input::HttpRequest(request, waiter) => {
                if failed || !self.core.accepting() || self.static_split.is_some() {
                    let why = if self.static_split.is_some() {
                        "a static-split baseline node serves the client protocol only"
                    } else if failed {
                        "this node is in a (simulated) failure"
                    } else {
                        "no coordinator with a majority"
                    };
                    let _ = waiter.send(refusal(&request.id, self.id(), Refusal::Unavailable, why));
                    Vec::new()
                } else {
                    let me = self.id();
                    self.http_waiters.insert(request.id.clone(), waiter);
                    let forward = Message::Forward(Box::new(request.clone()));
                    let envelope = Envelope {
                        version: PROTOCOL_VERSION,
                        from: me,
                        epoch: self.core.epoch(),
                        message: forward,
                    };
                    for to in self.links.keys().copied().collect::<Vec<_>>() {
                        self.send(to, envelope.clone());
                    }
                    self.hold(request, ReplyTo::Origin(me), None)
                }
            }
            Input::Done(reply) => self.finish(now, reply),
        };
        self.apply(outputs);
    }

    /// Keeps a request's payload and tells the core it arrived.
    fn hold(
        &mut self,
        request: EncryptRequest,
        reply_to: ReplyTo,
        share: Option<Share>,
    ) -> Vec<Output> {
        if let Some(held) = self.held.get_mut(&request.id) {
            // A client that reconnected sent it again: answer on the connection that is open.
            if let (ReplyTo::Client(old), ReplyTo::Client(_)) = (&held.reply_to, &reply_to) {
                if old.is_closed() {
                    held.reply_to = reply_to;
                }
            }
            // Sent again after the connection to another node closed: remembered for the
            // request's commit, which may name that node (see `Output::Forget`).
            if let Some(held) = &mut held.request {
                if !request.resent_after.is_empty() {
                    held.resent_after = request.resent_after;
                }
            }
            return Vec::new();
        }
        let id = request.id.clone();
        self.held.insert(
            id.clone(),
            Held {
                request: Some(request),
                reply_to,
                _share: share,
            },
        );
        self.core.request_arrived(self.now(), &id)
    }

    /// The static split: serves `request` if its id hashes to this node, answering on the
    /// client's connection as soon as the job is done (no claim, no commit); else drops it
    /// (its owner has the same request).
    fn serve_static(&mut self, request: EncryptRequest, client: mpsc::Sender<EncryptReply>) {
        let members = self.static_split.as_deref().unwrap_or_default();
        let id = request.id.clone();
        if static_owner(&id, members) != Some(self.id()) || self.again.contains_key(&id) {
            return;
        }
        self.serve_directly(request, client);
    }

    /// Serves a request whose reply was lost (its client sent it again, see
    /// [`Node::answers_again`]): the log already names its server, so the reply needs no claim.
    fn answer_again(&mut self, request: EncryptRequest, client: mpsc::Sender<EncryptReply>) {
        let id = request.id.clone();
        let why = match self.core.server_of(&id) {
            Some(winner) if winner != self.id() => format!(
                "node {winner} won it and its connection to the client closed before its reply"
            ),
            _ => "this node (or a previous run of it) won it and its connection to the client \
                  closed before its reply"
                .to_string(),
        };
        info!(node = self.id(), request = %id, "[Node {}] serving {id} again: {why}", self.id());
        self.serve_directly(request, client);
    }

    /// Serves `request` and answers `client` as soon as the job is done, with no claim
    /// ([`Shell::finish`] sends the reply of a request in `again` at once).
    fn serve_directly(&mut self, request: EncryptRequest, client: mpsc::Sender<EncryptReply>) {
        let id = request.id.clone();
        self.again.insert(id.clone(), client);
        self.held.insert(
            id.clone(),
            Held {
                request: Some(request),
                reply_to: ReplyTo::Origin(self.id()),
                _share: None,
            },
        );
        self.serve(id);
    }

    /// A job finished: keep the result and tell the core, which claims the request.
    fn finish(&mut self, now: Millis, reply: EncryptReply) -> Vec<Output> {
        if self.core.state() == NodeState::Failed {
            return Vec::new();
        }
        if let Some(client) = self.again.remove(&reply.id) {
            // The only reply this request gets: waited for like any committed reply.
            self.held.remove(&reply.id);
            send_committed(client, reply);
            return Vec::new();
        }
        let Some(held) = self.held.remove(&reply.id) else {
            // Someone else served it meanwhile (after a reassignment): stay silent.
            return Vec::new();
        };
        let id = reply.id.clone();
        self.results.insert(
            id.clone(),
            Finished {
                reply,
                reply_to: held.reply_to,
            },
        );
        self.core.job_finished(now, &id)
    }

    /// A majority holds this node as the winner of `id`: answer once the commit is written.
    fn reply(&mut self, id: &str) {
        match self.results.remove(id) {
            Some(finished) => self.ready.push(finished),
            None => warn!(node = self.id(), request = %id, "told to reply without a result"),
        }
    }

    /// Sends the replies of the last flush once every peer link has written what was queued
    /// before them (the commits): a reply never reaches a client before its commit reaches
    /// the peers' sockets.
    fn release_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let me = self.id();
        let epoch = self.core.epoch();
        // Only the links to peers heard from: a silent peer is dead (its votes died with it)
        // or cut off (its link is blocked, and it releases nothing without a close).
        let barrier_links: Vec<LinkHandle> = self
            .core
            .live_peers(self.now())
            .iter()
            .filter_map(|peer| self.links.get(peer).cloned())
            .collect();
        let mut deliveries = Vec::new();
        for Finished { reply, reply_to } in std::mem::take(&mut self.ready) {
            let to = match reply_to {
                ReplyTo::Client(client) => Delivery::Client(client),
                ReplyTo::Origin(origin) if origin == me => {
                    match self.http_waiters.remove(&reply.id) {
                        Some(waiter) => Delivery::Http(waiter),
                        None => continue,
                    }
                }
                ReplyTo::Origin(origin) => match self.data_links.get(&origin) {
                    Some(link) => Delivery::Peer(link.clone()),
                    None => continue,
                },
            };
            deliveries.push((reply, to));
        }
        tokio::spawn(async move {
            let written = async {
                for link in barrier_links {
                    // A full queue is waited for (within the bound below): a barrier that
                    // could not be queued would let the replies overtake their commits.
                    if let Some(barrier) = link.barrier(BARRIER_WAIT).await {
                        // Err: the link is down, and the peer has seen the connection close.
                        let _ = barrier.await;
                    }
                }
            };
            if timeout(BARRIER_WAIT, written).await.is_err() {
                debug!(
                    node = me,
                    "a peer link did not write within {BARRIER_WAIT:?}; replying anyway"
                );
            }
            for (reply, to) in deliveries {
                match to {
                    Delivery::Client(client) => send_committed(client, reply),
                    Delivery::Http(waiter) => {
                        let _ = waiter.send(reply);
                    }
                    Delivery::Peer(link) => {
                        let envelope = Envelope {
                            version: PROTOCOL_VERSION,
                            from: me,
                            epoch,
                            message: Message::Reply(Box::new(reply)),
                        };
                        tokio::spawn(async move {
                            if timeout(COMMITTED_REPLY_WAIT, link.send_waiting(envelope))
                                .await
                                .is_err()
                            {
                                warn!("a committed reply for a peer was dropped: its link took more than {COMMITTED_REPLY_WAIT:?}");
                            }
                        });
                    }
                }
            }
        });
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
                    peer = to,
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
                        if self.core.answers_again(&id, &request.resent_after) {
                            self.answer_again(request, client);
                        }
                    }
                }
                Output::Event(event) => report(self.id(), &event),
            }
        }
    }

    /// Starts the encryption job of a held request.
    fn serve(&mut self, id: RequestId) {
        let Some(request) = self.held.get_mut(&id).and_then(|h| h.request.take()) else {
            warn!(node = self.id(), request = %id, "asked to serve a request whose payload is gone");
            return;
        };
        let (pool, inputs, me) = (Arc::clone(&self.pool), self.inputs.clone(), self.id());
        tokio::spawn(async move {
            let outcome = pool.encrypt(request).await;
            let _ = inputs
                .send(Input::Done(EncryptReply {
                    id,
                    served_by: me,
                    outcome,
                }))
                .await;
        });
    }
}

/// Queues a reply whose commit the peers hold: it is the only reply the request gets, so a full
/// queue (a client or peer reading slowly) is waited for, up to [`COMMITTED_REPLY_WAIT`], in a
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

/// Completes when standard input reaches its end: a launcher that dies closes the pipe, and
/// its nodes follow it (`--parent-watch`).
pub async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Prints an event the way an operator reads it.
pub fn report(id: NodeId, event: &Event) {
    match event {
        Event::Elected {
            epoch,
            coordinator,
            loads,
        } => {
            println!("{}", election_block(*epoch, *coordinator, loads));
            info!(
                node = id,
                epoch, coordinator, "[Node {id}] coordinator is node {coordinator} (epoch {epoch})"
            );
        }
        Event::StateChanged { to, reason } => {
            let name = match to {
                NodeState::Active => "ACTIVE",
                NodeState::Failed => "FAILED",
                NodeState::Recovering => "RECOVERING",
            };
            println!("[Node {id}] *** Entering {name} state *** ({reason})");
            info!(node = id, state = %to, reason = %reason, "state change");
        }
        Event::Adopted { epoch, coordinator } => {
            info!(node = id, epoch, coordinator, "[Node {id}] following coordinator {coordinator} (epoch {epoch}, learned from a peer)")
        }
        Event::CoordinatorLost { reason } => {
            info!(node = id, "[Node {id}] no coordinator: {reason}")
        }
        Event::ElectionStarted { epoch, reason } => {
            info!(
                node = id,
                epoch, "[Node {id}] starting election for epoch {epoch}: {reason}"
            )
        }
        Event::VictimElected(r) => println!(
            "[Node {id}] elected node {} to fail for {:.1} s (failure {}.{})",
            r.victim,
            r.duration_ms as f64 / 1000.0,
            r.epoch,
            r.seq
        ),
        Event::Dispatched {
            assignment: a,
            loads,
        } => {
            let loads: Vec<String> = loads.iter().map(|(n, l)| format!("{n}={l:.2}")).collect();
            let again = if a.attempt > 1 {
                format!(" (attempt {})", a.attempt)
            } else {
                String::new()
            };
            info!(target: "imgcloud::lb", node = id, "[LB] req {} -> node {}{again} (loads: {})", a.id, a.server, loads.join(" "));
        }
        Event::ResultDropped {
            id: request,
            reason,
        } => {
            warn!(node = id, request = %request, "[Node {id}] dropped the result of {request} unanswered: {reason}")
        }
        Event::StaleIgnored { from, epoch, kind } => {
            warn!(
                node = id,
                from, epoch, "[Node {id}] ignored a stale {kind} from node {from} (epoch {epoch})"
            )
        }
    }
}

/// The election result block of the specification.
pub fn election_block(epoch: u64, coordinator: NodeId, loads: &[(NodeId, Option<f64>)]) -> String {
    let mut rows: Vec<(NodeId, Option<f64>)> = loads.to_vec();
    rows.sort_by(|a, b| {
        let key = |r: &(NodeId, Option<f64>)| (r.0 != coordinator, r.1.unwrap_or(f64::INFINITY));
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    let fmt = |l: Option<f64>| l.map_or("unreachable".to_string(), |l| format!("{l:.2}"));
    let winner_load = loads.iter().find(|r| r.0 == coordinator).and_then(|r| r.1);
    let mut out = format!(
        "=== ELECTION RESULT (epoch {epoch}) ===\nCoordinator: Node {coordinator} (load: {})",
        fmt(winner_load)
    );
    for (node, load) in rows {
        let tag = if node == coordinator {
            " [COORDINATOR]"
        } else {
            ""
        };
        out.push_str(&format!("\n  Node {node}: {}{tag}", fmt(load)));
    }
    out
}

async fn accept_loop(
    listener: TcpListener,
    me: NodeId,
    members: Arc<Vec<NodeId>>,
    auth: PeerAuth,
    inputs: mpsc::Sender<Input>,
    store: Store,
    budget: Budget,
) -> Result<()> {
    let mut next_conn = 0u64;
    let (handshakes, clients) = (
        Slots::new(MAX_HANDSHAKES),
        Slots::new(MAX_CLIENT_CONNECTIONS),
    );
    loop {
        let handshake = handshakes.take().await;
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(node = me, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_conn += 1;
        let conn = next_conn;
        let (auth, members, inputs) = (auth.clone(), members.clone(), inputs.clone());
        let (store, budget) = (store.clone(), budget.clone());
        // Taken for whatever comes, kept only by a client.
        let client_slot = clients.try_take();
        tokio::spawn(async move {
            let (mut reader, mut writer) = split(stream);
            let room = client_slot.is_some();
            let accepted = timeout(
                HANDSHAKE_TIMEOUT,
                auth.accept(&mut reader, &mut writer, me, &members, room),
            )
            .await;
            drop(handshake);
            // Only a client keeps the slot: a member's link never holds one.
            let client_slot = client_slot.filter(|_| matches!(accepted, Ok(Ok(Accepted::Client))));
            match accepted {
                Ok(Ok(Accepted::Peer(peer))) => {
                    let _ = inputs.send(Input::PeerOpened(peer, conn)).await;
                    let reason = read_peer(&mut reader, peer, conn, &inputs, false).await;
                    match reason {
                        Ok(()) => debug!(
                            node = me,
                            peer, "[Node {me}] connection from node {peer} closed"
                        ),
                        Err(e) => {
                            warn!(node = me, peer, %remote, "[Node {me}] closed connection from node {peer}: {e}")
                        }
                    }
                    let _ = inputs.send(Input::PeerClosed(peer, conn)).await;
                }
                Ok(Ok(Accepted::Data(peer))) => {
                    reader.allow_frames(MAX_DATA_FRAME_BYTES);
                    if let Err(e) = read_peer(&mut reader, peer, conn, &inputs, true).await {
                        warn!(node = me, peer, %remote, "[Node {me}] closed the data link from node {peer}: {e}");
                    }
                }
                Ok(Ok(Accepted::Store(peer))) => {
                    if let Err(e) = store.serve(reader, writer, peer).await {
                        warn!(node = me, peer, %remote, "[Node {me}] closed the store link from node {peer}: {e}");
                    }
                }
                Ok(Ok(Accepted::Client)) => {
                    let _client_slot = client_slot;
                    debug!(node = me, %remote, "client connected");
                    if let Err(e) = serve_client(me, reader, writer, inputs, budget).await {
                        debug!(node = me, %remote, "[Node {me}] closed client connection: {e}");
                    }
                }
                Ok(Err(e)) => warn!(node = me, %remote, "[Node {me}] refused a connection: {e}"),
                Err(_) => {
                    warn!(node = me, %remote, "[Node {me}] refused a connection: no handshake within {HANDSHAKE_TIMEOUT:?}")
                }
            }
        });
    }
}

/// Once a second: after a burst of big payloads, once none has been in flight for a second
/// (the last reply written out, its buffers freed), gives the allocator's free memory back to
/// the system, so a node returns near its idle size.
async fn give_back_memory(budget: Budget) -> Result<()> {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut drained = false;
    loop {
        every.tick().await;
        if drained && budget.in_use() == 0 {
            let _ = tokio::task::spawn_blocking(crate::cli::give_back_free_memory).await;
        }
        drained = budget.drained_after_load();
    }
}

/// Forwards a peer's envelopes to the node loop until the connection ends. On its data link
/// (`data`) only payloads and replies may come; its close says nothing of the peer's life.
async fn read_peer(
    reader: &mut FrameReader,
    peer: NodeId,
    conn: u64,
    inputs: &mpsc::Sender<Input>,
    data: bool,
) -> Result<()> {
    while let Some(frame) = reader.next_frame().await? {
        let envelope = decode_envelope(&frame)?;
        if envelope.from != peer {
            return Err(Error::Protocol(format!(
                "node {peer} sent a message signed as node {}",
                envelope.from
            )));
        }
        let payload = matches!(envelope.message, Message::Forward(_) | Message::Reply(_));
        if data && !payload {
            return Err(Error::Protocol(format!(
                "node {peer} sent a {} on its data link",
                envelope.message.kind()
            )));
        }
        if inputs.send(Input::Envelope(envelope, conn)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads a client's requests and writes its replies until either side ends.
/// Each request takes its frame's share of the node's budget when the frame's header comes,
/// before its body is read; without room the body is dropped as it arrives and the request
/// refused at once ("unavailable": the client sends it again after a pause).
async fn serve_client(
    me: NodeId,
    reader: FrameReader,
    mut writer: FrameWriter,
    inputs: mpsc::Sender<Input>,
    budget: Budget,
) -> Result<()> {
    let (reply_tx, mut reply_rx) = mpsc::channel::<EncryptReply>(CLIENT_QUEUE);
    // A reply may be four times its request (an encrypted PNG of a 20 MB image is ~80 MB).
    writer.allow_frames(MAX_DATA_FRAME_BYTES);
    let writer_task = tokio::spawn(async move {
        while let Some(reply) = reply_rx.recv().await {
            writer.feed(&reply).await?;
            while let Ok(more) = reply_rx.try_recv() {
                writer.feed(&more).await?;
            }
            writer.flush().await?;
        }
        Ok::<_, Error>(())
    });
    let mut frames = reader.admitting({
        let budget = budget.clone();
        move |len| budget.try_take(len)
    });
    let result = async {
        while let Some(frame) = frames.next().await? {
            let (request, share) = match frame {
                Admitted::Frame(bytes, share) => (decode::<EncryptRequest>(&bytes)?, share),
                Admitted::Refused { head, len } => {
                    let id = EncryptRequest::id_of(&head)?;
                    check_id(&id)?;
                    let busy = refusal(&id, me, Refusal::Unavailable, &budget.busy(me, len));
                    if reply_tx.send(busy).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            check_id(&request.id)?;
            if inputs
                .send(Input::ClientRequest(request, reply_tx.clone(), share))
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(reply_tx);
    // Replies still owed go out before the connection closes (the writer ends with the last sender).
    let _ = timeout(Duration::from_secs(1), writer_task).await;
    result
}

/// A client's request id must be 1 to [`MAX_ID_LEN`] bytes.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::Protocol(format!(
            "request id must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 27: a panic in one of the node's tasks ended the process with exit code 0.
    #[tokio::test]
    async fn a_task_that_panics_or_ends_stops_the_node_with_an_error() {
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        tasks.spawn(async { panic!("a bug in a task") });
        let done = tasks.join_next().await.expect("the task ends");
        let error = task_ended(2, done);
        assert!(
            matches!(&error, Error::Internal(m) if m.contains("node 2") && m.contains("panicked")),
            "{error}"
        );
        assert!(matches!(task_ended(2, Ok(Ok(()))), Error::Internal(_)));
    }
}
