//! The client library: sends each request to every node at once and returns the one reply.
//!
//! A [`Client`] keeps one connection per node, each owned by a task that (re)connects with
//! back-off, writes requests and reads replies. A request is encoded once and written to every
//! connected node; the first answer wins: a PNG, or a refusal about the request itself (bad
//! input, too large), which the serving node gives once for the cluster. "Unavailable"
//! refusals only end the wait when every node has said so. Any later reply for a finished
//! request is counted as a duplicate and dropped, so the caller sees exactly one reply.
//!
//! Request ids are `c<client>-<random>-<n>`: unique across runs, because the cluster remembers
//! every id it served and serves an id only once.
//!
//! A connection that comes back is given every request still waiting, so a request survives
//! even the restart of every node that held it (nodes serve an id once, whatever its copies).
//!
//! Implementation caveats: the cluster answers each request at most once (a server replies
//! only after a majority has recorded it as the request's one winner: DESIGN.md, "At most one
//! reply"), so the duplicate count is a check that should stay 0, not an expected event; a
//! reply that arrives after the caller's deadline is counted as a duplicate too, the request
//! as lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::config::{NodeAddr, NodeId};
use crate::connection::{encode, split};
use crate::dispatch::RequestId;
use crate::handshake::{Hello, HelloReply};
use crate::message::PROTOCOL_VERSION;
use crate::metadata::Viewer;
use crate::request::{EncryptReply, EncryptRequest, Outcome, Refusal};
use crate::{Error, Result};

/// How long a request waits for its reply by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`Client::connect`] waits for the first node.
pub const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// Longest wait between two connection attempts to a node.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A successful reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Encrypted {
    /// The request id.
    pub id: RequestId,
    /// The node that served it.
    pub served_by: NodeId,
    /// The PNG with the hidden image.
    pub png: Vec<u8>,
}

struct Waiter {
    done: Option<oneshot::Sender<Result<Encrypted>>>,
    unavailable: usize,
    /// The encoded request, re-sent to a node whose connection comes back.
    bytes: Bytes,
}

#[derive(Default)]
struct Book {
    waiting: HashMap<RequestId, Waiter>,
    finished: HashSet<RequestId>,
    duplicates: u64,
}

/// A connection to every node of a cluster.
pub struct Client {
    prefix: String,
    seq: AtomicU64,
    deadline: Duration,
    links: BTreeMap<NodeId, mpsc::Sender<Bytes>>,
    connected: watch::Receiver<usize>,
    book: Arc<Mutex<Book>>,
    _tasks: JoinSet<()>,
}

impl Client {
    /// Connects to every node (in the background) and waits until at least one answers.
    pub async fn connect(client_id: u64, nodes: &[NodeAddr]) -> Result<Client> {
        let book = Arc::new(Mutex::new(Book::default()));
        let (connected_tx, connected) = watch::channel(0usize);
        let connected_tx = Arc::new(connected_tx);
        let mut tasks = JoinSet::new();
        let mut links = BTreeMap::new();
        for node in nodes {
            let (tx, rx) = mpsc::channel::<Bytes>(1024);
            links.insert(node.id, tx);
            tasks.spawn(link(
                node.clone(),
                rx,
                Arc::clone(&book),
                Arc::clone(&connected_tx),
                nodes.len(),
            ));
        }
        let client = Client {
            prefix: format!("c{client_id}-{:06x}", rand::random::<u32>() & 0xff_ffff),
            seq: AtomicU64::new(0),
            deadline: DEFAULT_DEADLINE,
            links,
            connected,
            book,
            _tasks: tasks,
        };
        let mut watch = client.connected.clone();
        let first = timeout(CONNECT_WAIT, watch.wait_for(|&n| n > 0)).await;
        if !matches!(first, Ok(Ok(_))) {
            let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
            return Err(Error::Unavailable(format!(
                "no node answered within {} s (tried {})",
                CONNECT_WAIT.as_secs(),
                addrs.join(", ")
            )));
        }
        Ok(client)
    }

    /// Sets how long a request waits for its reply.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Nodes connected right now.
    pub fn connected(&self) -> usize {
        *self.connected.borrow()
    }

    /// Replies that arrived for requests already answered (and were dropped).
    pub fn duplicates(&self) -> u64 {
        self.book.lock().map_or(0, |b| b.duplicates)
    }

    /// A fresh request id.
    pub fn next_id(&self) -> RequestId {
        format!(
            "{}-{}",
            self.prefix,
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Encrypts `secret` for `owner` and `viewers` in `cover` (None: the default cover).
    pub async fn encrypt(
        &self,
        secret: Vec<u8>,
        cover: Option<Vec<u8>>,
        owner: &str,
        viewers: Vec<Viewer>,
    ) -> Result<Encrypted> {
        let request = EncryptRequest {
            id: self.next_id(),
            secret,
            cover,
            owner: owner.to_string(),
            viewers,
        };
        self.send(request).await
    }

    /// Sends a request to every node and waits for its one reply.
    pub async fn send(&self, request: EncryptRequest) -> Result<Encrypted> {
        let id = request.id.clone();
        let bytes = encode(&request)?;
        let (done, answer) = oneshot::channel();
        if let Ok(mut book) = self.book.lock() {
            book.waiting.insert(
                id.clone(),
                Waiter {
                    done: Some(done),
                    unavailable: 0,
                    bytes: bytes.clone(),
                },
            );
        }
        let mut sent = 0;
        for link in self.links.values() {
            if link.try_send(bytes.clone()).is_ok() {
                sent += 1;
            }
        }
        let result = if sent == 0 {
            Err(Error::Unavailable("no node is connected".into()))
        } else {
            match timeout(self.deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(Error::Unavailable("the client shut down".into())),
                Err(_) => Err(Error::Timeout(format!(
                    "no reply to {id} within {:.1} s",
                    self.deadline.as_secs_f64()
                ))),
            }
        };
        if let Ok(mut book) = self.book.lock() {
            book.waiting.remove(&id);
            book.finished.insert(id);
        }
        result
    }
}

/// Records a reply: the first decisive one answers the waiter, later ones are duplicates.
fn deliver(book: &Mutex<Book>, reply: EncryptReply, nodes: usize) {
    let Ok(mut book) = book.lock() else { return };
    let id = reply.id.clone();
    let decisive = !matches!(
        reply.outcome,
        Outcome::Refused {
            kind: Refusal::Unavailable,
            ..
        }
    );
    let Some(waiter) = book.waiting.get_mut(&id) else {
        if decisive && book.finished.contains(&id) {
            book.duplicates += 1;
        }
        return;
    };
    let Some(done) = waiter.done.take() else {
        if decisive {
            book.duplicates += 1;
        }
        return;
    };
    let result = match reply.outcome {
        Outcome::Encrypted(png) => Ok(Encrypted {
            id,
            served_by: reply.served_by,
            png,
        }),
        Outcome::Refused {
            kind: Refusal::Unavailable,
            message,
        } => {
            waiter.unavailable += 1;
            if waiter.unavailable < nodes {
                waiter.done = Some(done);
                return;
            }
            Err(Error::Unavailable(message))
        }
        Outcome::Refused {
            kind: Refusal::Internal,
            message,
        } => Err(Error::Protocol(message)),
        Outcome::Refused { message, .. } => Err(Error::InvalidInput(message)),
    };
    let _ = done.send(result);
}

/// Owns the connection to one node: connect, write requests, read replies, reconnect.
async fn link(
    node: NodeAddr,
    mut requests: mpsc::Receiver<Bytes>,
    book: Arc<Mutex<Book>>,
    connected: Arc<watch::Sender<usize>>,
    nodes: usize,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // Requests queued while this node was unreachable went to the others.
        while requests.try_recv().is_ok() {}
        let attempt = async {
            let stream = TcpStream::connect(node.addr).await?;
            let (mut reader, mut writer) = split(stream);
            writer
                .write(&Hello::Client {
                    version: PROTOCOL_VERSION,
                })
                .await?;
            match reader.expect::<HelloReply>().await? {
                HelloReply::Welcome { .. } => Ok((reader, writer)),
                HelloReply::Refused(reason) => Err(Error::Protocol(format!(
                    "node {} refused: {reason}",
                    node.id
                ))),
                HelloReply::Challenge { .. } => Err(Error::Protocol(format!(
                    "node {} asked for a peer handshake",
                    node.id
                ))),
            }
        };
        if let Ok(Ok((mut reader, mut writer))) = timeout(Duration::from_secs(2), attempt).await {
            backoff = Duration::from_millis(50);
            // Requests still waiting may have reached no node that is alive now (every holder
            // restarted): give them to this one too. Nodes serve an id once, whatever its copies.
            let waiting: Vec<Bytes> = book
                .lock()
                .map(|b| {
                    b.waiting
                        .values()
                        .filter(|w| w.done.is_some())
                        .map(|w| w.bytes.clone())
                        .collect()
                })
                .unwrap_or_default();
            let mut resent = Ok(());
            for bytes in waiting {
                resent = resent.and(writer.feed_bytes(bytes).await);
            }
            if resent.and(writer.flush().await).is_err() {
                tokio::time::sleep(backoff).await;
                continue;
            }
            connected.send_modify(|n| *n += 1);
            let started = Instant::now();
            let book_r = Arc::clone(&book);
            let mut read = tokio::spawn(async move {
                while let Ok(Some(reply)) = reader.read::<EncryptReply>().await {
                    deliver(&book_r, reply, nodes);
                }
            });
            loop {
                tokio::select! {
                    _ = &mut read => break,
                    next = requests.recv() => match next {
                        None => {
                            read.abort();
                            connected.send_modify(|n| *n -= 1);
                            return;
                        }
                        Some(bytes) => {
                            let mut ok = writer.feed_bytes(bytes).await.is_ok();
                            while ok {
                                match requests.try_recv() {
                                    Ok(more) => ok = writer.feed_bytes(more).await.is_ok(),
                                    Err(_) => break,
                                }
                            }
                            if !ok || writer.flush().await.is_err() {
                                read.abort();
                                break;
                            }
                        }
                    }
                }
            }
            connected.send_modify(|n| *n -= 1);
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(50);
            }
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Every node's `/status` (or why it could not be read), in node order.
pub async fn cluster_status(
    nodes: &[NodeAddr],
) -> Vec<(NodeAddr, Result<crate::server::NodeStatus>)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_default();
    let mut out = Vec::new();
    let queries = nodes.iter().map(|node| {
        let http = http.clone();
        async move {
            let url = format!("http://{}/status", node.http);
            let response = http
                .get(&url)
                .send()
                .await
                .map_err(|e| Error::Unavailable(format!("{url}: {e}")))?;
            response
                .json()
                .await
                .map_err(|e| Error::Protocol(format!("{url}: {e}")))
        }
    });
    let results = futures::future::join_all(queries).await;
    for (node, result) in nodes.iter().zip(results) {
        out.push((node.clone(), result));
    }
    out
}

/// One table of every node's status, as `client status` prints it.
pub fn status_table(rows: &[(NodeAddr, Result<crate::server::NodeStatus>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<11} {:>5} {:>11} {:>7} {:>8} {:>8} {:>9}  {:<24} DIGEST",
        "NODE", "STATE", "EPOCH", "COORDINATOR", "LOAD", "SERVED", "IN-FLT", "REQ-LOG", "PEERS"
    );
    for (node, result) in rows {
        match result {
            Ok(s) => {
                let c = &s.core;
                let peers: Vec<String> = c
                    .peers
                    .iter()
                    .map(|p| format!("{}:{}", p.id, p.state))
                    .collect();
                let coordinator = c.coordinator.map_or("-".to_string(), |id| id.to_string());
                let _ = writeln!(
                    out,
                    "{:<5} {:<11} {:>5} {:>11} {:>7.2} {:>8} {:>8} {:>9}  {:<24} {}",
                    node.id,
                    c.state.to_string(),
                    c.epoch,
                    coordinator,
                    c.load,
                    c.served,
                    s.in_flight,
                    c.request_log,
                    peers.join(" "),
                    c.digest
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{:<5} {:<11} {e}", node.id, "unreachable");
            }
        }
    }
    out
}
