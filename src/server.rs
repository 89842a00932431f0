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
//!   should see, and publishes a [`NodeStatus`] for the HTTP API.
//! - One **peer link** task per peer owns the outgoing connection to it: it connects,
//!   authenticates ([`PeerAuth`]), writes queued envelopes, and reconnects with back-off.
//!   While it is down, messages for that peer are dropped: the protocol tolerates loss.
//! - The **accept loop** authenticates each inbound connection; a peer's connection gets a
//!   reader task that decodes envelopes and hands them to the node loop, and reports its close
//!   (the failure detector's strongest evidence). A bad frame closes only that connection.
//!
//! Implementation caveats: links are one-way (each node dials every peer), so a pair of nodes
//! uses two TCP connections; that keeps reconnection free of races.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::config::{ClusterConfig, NodeId};
use crate::connection::{decode_envelope, encode, split, FrameReader};
use crate::handshake::{Accepted, PeerAuth};
use crate::http;
use crate::message::{Envelope, NodeState};
use crate::node::{CoreStatus, Event, Millis, Node, NodeConfig, Output};
use crate::{Error, Result};

/// How often the node loop ticks the core.
pub const TICK: Duration = Duration::from_millis(10);
/// A connection must finish its handshake within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to reach a peer.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Envelopes queued for one peer before new ones are dropped.
const LINK_QUEUE: usize = 1024;

/// What the node loop receives.
enum Input {
    /// An envelope from an authenticated peer connection.
    Envelope(Envelope),
    /// A peer connection opened (with its connection number).
    PeerOpened(NodeId, u64),
    /// A peer connection closed.
    PeerClosed(NodeId, u64),
}

/// Everything `/status` and `/metrics` show.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The core's view.
    #[serde(flatten)]
    pub core: CoreStatus,
    /// Seconds since the process started.
    pub uptime_s: f64,
}

/// Runs node `id` of `config` until `shutdown` completes.
pub async fn run(config: ClusterConfig, id: NodeId, seed: u64, shutdown: impl Future<Output = ()>) -> Result<()> {
    let me = config.node(id)?.clone();
    let listener = TcpListener::bind(me.addr)
        .await
        .map_err(|e| Error::Config(format!("node {id} cannot listen on {}: {e}", me.addr)))?;
    let http_listener = TcpListener::bind(me.http)
        .await
        .map_err(|e| Error::Config(format!("node {id} cannot serve HTTP on {}: {e}", me.http)))?;
    info!(node = id, addr = %me.addr, http = %me.http, "[Node {id}] listening");

    let auth = PeerAuth::new(&config.secret);
    let started = Instant::now();
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
    let (status_tx, status_rx) = watch::channel(NodeStatus { core: initial_status(id), uptime_s: 0.0 });
    let (input_tx, input_rx) = mpsc::channel::<Input>(4096);

    let mut tasks = JoinSet::new();
    let mut links = std::collections::BTreeMap::new();
    for peer in config.nodes.iter().filter(|n| n.id != id) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        links.insert(peer.id, tx);
        tasks.spawn(peer_link(id, peer.id, peer.addr, auth.clone(), rx));
    }
    let members = Arc::new(config.ids());
    tasks.spawn(accept_loop(listener, id, members, auth, input_tx));
    tasks.spawn(node_loop(core, started, input_rx, links, status_tx));
    tasks.spawn(http::serve(http_listener, status_rx));

    tokio::select! {
        _ = shutdown => info!(node = id, "[Node {id}] shutting down"),
        Some(done) = tasks.join_next() => {
            if let Ok(Err(e)) = done {
                return Err(e);
            }
        }
    }
    tasks.shutdown().await;
    Ok(())
}

fn initial_status(id: NodeId) -> CoreStatus {
    CoreStatus {
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
    }
}

async fn node_loop(
    mut core: Node,
    started: Instant,
    mut inputs: mpsc::Receiver<Input>,
    links: std::collections::BTreeMap<NodeId, mpsc::Sender<Envelope>>,
    status: watch::Sender<NodeStatus>,
) -> Result<()> {
    let id = core.id();
    let now = || started.elapsed().as_millis() as Millis;
    let mut latest_conn = std::collections::BTreeMap::<NodeId, u64>::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let outputs = tokio::select! {
            input = inputs.recv() => match input {
                None => return Ok(()),
                Some(Input::Envelope(envelope)) => core.step(now(), envelope),
                Some(Input::PeerOpened(peer, conn)) => {
                    latest_conn.insert(peer, conn);
                    Vec::new()
                }
                Some(Input::PeerClosed(peer, conn)) => {
                    if latest_conn.get(&peer) == Some(&conn) {
                        core.peer_disconnected(now(), peer);
                    }
                    Vec::new()
                }
            },
            _ = ticker.tick() => {
                let outputs = core.tick(now());
                let core_status = core.status(now());
                status.send_replace(NodeStatus { core: core_status, uptime_s: started.elapsed().as_secs_f64() });
                outputs
            }
        };
        for output in outputs {
            match output {
                Output::Send { to, envelope } => {
                    if let Some(link) = links.get(&to) {
                        if link.try_send(envelope).is_err() {
                            debug!(node = id, peer = to, "link queue full; message dropped");
                        }
                    }
                }
                Output::Event(event) => report(id, &event),
            }
        }
    }
}

/// Prints an event the way an operator reads it.
pub fn report(id: NodeId, event: &Event) {
    match event {
        Event::Elected { epoch, coordinator, loads } => {
            println!("{}", election_block(*epoch, *coordinator, loads));
            info!(node = id, epoch, coordinator, "[Node {id}] coordinator is node {coordinator} (epoch {epoch})");
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
        Event::CoordinatorLost { reason } => info!(node = id, "[Node {id}] no coordinator: {reason}"),
        Event::ElectionStarted { epoch, reason } => {
            info!(node = id, epoch, "[Node {id}] starting election for epoch {epoch}: {reason}")
        }
        Event::VictimElected(r) => println!(
            "[Node {id}] elected node {} to fail for {:.1} s (failure {}.{})",
            r.victim,
            r.duration_ms as f64 / 1000.0,
            r.epoch,
            r.seq
        ),
        Event::StaleIgnored { from, epoch, kind } => {
            warn!(node = id, from, epoch, "[Node {id}] ignored a stale {kind} from node {from} (epoch {epoch})")
        }
    }
}

/// The election result block of the specification.
pub fn election_block(epoch: u64, coordinator: NodeId, loads: &[(NodeId, Option<f64>)]) -> String {
    let mut rows: Vec<(NodeId, Option<f64>)> = loads.to_vec();
    rows.sort_by(|a, b| {
        let key = |r: &(NodeId, Option<f64>)| (r.0 != coordinator, r.1.unwrap_or(f64::INFINITY));
        key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0))
    });
    let fmt = |l: Option<f64>| l.map_or("unreachable".to_string(), |l| format!("{l:.2}"));
    let winner_load = loads.iter().find(|r| r.0 == coordinator).and_then(|r| r.1);
    let mut out = format!(
        "=== ELECTION RESULT (epoch {epoch}) ===\nCoordinator: Node {coordinator} (load: {})",
        fmt(winner_load)
    );
    for (node, load) in rows {
        let tag = if node == coordinator { " [COORDINATOR]" } else { "" };
        out.push_str(&format!("\n  Node {node}: {}{tag}", fmt(load)));
    }
    out
}

async fn peer_link(me: NodeId, peer: NodeId, addr: std::net::SocketAddr, auth: PeerAuth, mut queue: mpsc::Receiver<Envelope>) -> Result<()> {
    let mut backoff = Duration::from_millis(20);
    let mut reported = false;
    loop {
        // Whatever was queued while the link was down is stale now.
        while queue.try_recv().is_ok() {}
        let attempt = async {
            let stream = TcpStream::connect(addr).await?;
            let (mut reader, mut writer) = split(stream);
            auth.connect(&mut reader, &mut writer, me, peer).await?;
            Ok::<_, Error>((reader, writer))
        };
        match timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(Ok((reader, mut writer))) => {
                info!(node = me, peer, "[Node {me}] link to node {peer} up");
                backoff = Duration::from_millis(20);
                reported = false;
                // Keep the read half alive so the connection stays open; peers never write on it.
                let _reader: FrameReader = reader;
                while let Some(envelope) = queue.recv().await {
                    let bytes = encode(&envelope)?;
                    if let Err(e) = writer.write_bytes(bytes).await {
                        debug!(node = me, peer, error = %e, "[Node {me}] link to node {peer} lost");
                        break;
                    }
                }
                if queue.is_closed() {
                    return Ok(());
                }
            }
            Ok(Err(e)) => {
                if !reported {
                    debug!(node = me, peer, error = %e, "[Node {me}] cannot reach node {peer}");
                    reported = true;
                }
            }
            Err(_) => {
                if !reported {
                    debug!(node = me, peer, "[Node {me}] handshake with node {peer} timed out");
                    reported = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn accept_loop(
    listener: TcpListener,
    me: NodeId,
    members: Arc<Vec<NodeId>>,
    auth: PeerAuth,
    inputs: mpsc::Sender<Input>,
) -> Result<()> {
    let mut next_conn = 0u64;
    loop {
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
        tokio::spawn(async move {
            let (mut reader, mut writer) = split(stream);
            let accepted = timeout(HANDSHAKE_TIMEOUT, auth.accept(&mut reader, &mut writer, me, &members)).await;
            match accepted {
                Ok(Ok(Accepted::Peer(peer))) => {
                    let _ = inputs.send(Input::PeerOpened(peer, conn)).await;
                    let reason = read_peer(&mut reader, peer, &inputs).await;
                    match reason {
                        Ok(()) => debug!(node = me, peer, "[Node {me}] connection from node {peer} closed"),
                        Err(e) => warn!(node = me, peer, %remote, "[Node {me}] closed connection from node {peer}: {e}"),
                    }
                    let _ = inputs.send(Input::PeerClosed(peer, conn)).await;
                }
                Ok(Ok(Accepted::Client)) => {
                    debug!(node = me, %remote, "client connected; the request path is not built yet");
                }
                Ok(Err(e)) => warn!(node = me, %remote, "[Node {me}] refused a connection: {e}"),
                Err(_) => warn!(node = me, %remote, "[Node {me}] refused a connection: no handshake within {HANDSHAKE_TIMEOUT:?}"),
            }
        });
    }
}

/// Forwards a peer's envelopes to the node loop until the connection ends.
async fn read_peer(reader: &mut FrameReader, peer: NodeId, inputs: &mpsc::Sender<Input>) -> Result<()> {
    while let Some(frame) = reader.next_frame().await? {
        let envelope = decode_envelope(&frame)?;
        if envelope.from != peer {
            return Err(Error::Protocol(format!("node {peer} sent a message signed as node {}", envelope.from)));
        }
        if inputs.send(Input::Envelope(envelope)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
