//! The client library: sends each request to every node at once and returns the one reply.
//!
//! A [`Client`] keeps one connection per node, each owned by a task that (re)connects with
//! back-off, writes requests and reads replies. A request is encoded once and written to every
//! connected node; the first answer wins: a PNG, or a refusal about the request itself (bad
//! input, too large), which the serving node gives once for the cluster. "Unavailable"
//! refusals (a node busy with other payloads, or without a majority) are back-pressure: when
//! every node has said so, the request is sent again after a growing, jittered pause, until
//! its deadline. Any later reply is dropped, so the
//! caller sees exactly one reply. A decisive one is counted: as late if it is the request's first
//! and the caller gave up before it came (its deadline passed, or every node said unavailable),
//! else as a duplicate.
//!
//! Request ids are `c<client>-<random>-<n>`: unique across runs, because the cluster remembers
//! every id it served and serves an id only once.
//!
//! A connection that comes back is given every request still waiting, so a request survives
//! even the restart of every node that held it (nodes serve an id once, whatever its copies).
//! A connection that closes marks every request still waiting with that node
//! ([`EncryptRequest::resent_after`]) and gives it to one connected node, its carrier: had the
//! closed node won it and replied over the connection that is gone, the carrier serves it
//! again. One carrier at a time, since every node holding the mark would serve it again.
//!
//! Implementation caveats: the cluster answers each request at most once (a server replies
//! only after a majority has recorded it as the request's one winner: DESIGN.md, "At most one
//! reply"), so the duplicate count is a check that should stay 0, not an expected event; a
//! reply that arrives after the caller's deadline is late, not a duplicate, and its request
//! stays a timeout for the caller. The ids of finished requests are kept for the client's
//! lifetime, to tell a duplicate from a late reply.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::codec::metadata::Viewer;
use crate::config::NodeAddr;
use crate::ids::{NodeId, RequestId};
use crate::wire::framing::encode;
use crate::wire::request::EncryptRequest;
use crate::{Error, Result};

mod book;
pub mod cli;
mod link;
mod status;

use book::{Book, LinkHandle};
use link::link;

pub use status::{status_json, status_table};

/// How long a request waits for its reply by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// The longest a request waits for its reply (and so re-sends it): the cloud remembers a
/// commit for [`crate::cluster::log::LOG_RETENTION_MS`], and a request sent again after that
/// could be served twice.
pub const MAX_DEADLINE: Duration = Duration::from_millis(crate::cluster::node::RESEND_WINDOW_MS);
/// A deadline given in seconds (a flag), within 0.1 s and [`MAX_DEADLINE`].
pub fn deadline_from_secs(secs: f64) -> Duration {
    if secs.is_nan() {
        return DEFAULT_DEADLINE;
    }
    Duration::from_secs_f64(secs.clamp(0.1, MAX_DEADLINE.as_secs_f64()))
}

/// How long [`Client::connect`] waits for the first node.
pub const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// Longest wait between two connection attempts to a node.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The first pause before a request every node refused for now is sent again.
pub const FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest pause between two sends of a refused request (a busy node says "retry in a
/// second").
pub const MAX_RETRY: Duration = Duration::from_secs(1);

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

/// A connection to every node of a cluster.
pub struct Client {
    prefix: String,
    seq: AtomicU64,
    deadline: Duration,
    links: BTreeMap<NodeId, mpsc::Sender<Bytes>>,
    connected: watch::Receiver<usize>,
    book: Arc<Mutex<Book>>,
    retries: AtomicU64,
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
        let mut ends = Vec::new();
        let mut handles = Vec::new();
        for node in nodes {
            let (tx, rx) = mpsc::channel::<Bytes>(1024);
            handles.push(LinkHandle {
                id: node.id,
                // Weak: a link task must not keep the others' queues open after the client
                // is gone.
                queue: tx.downgrade(),
                up: Arc::new(AtomicBool::new(false)),
            });
            links.insert(node.id, tx);
            ends.push((node.clone(), rx));
        }
        let handles = Arc::new(handles);
        for (node, rx) in ends {
            tasks.spawn(link(
                node,
                rx,
                Arc::clone(&handles),
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
            retries: AtomicU64::new(0),
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

    /// Sets how long a request waits for its reply, at most [`MAX_DEADLINE`].
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline.min(MAX_DEADLINE);
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

    /// First replies that arrived after their caller gave up, its deadline passed or every node
    /// said unavailable (and were dropped); not duplicates.
    pub fn late(&self) -> u64 {
        self.book.lock().map_or(0, |b| b.late)
    }

    /// Requests sent again after every node refused them for now.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
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
            resent_after: Vec::new(),
        };
        self.send(request).await
    }

    /// Sends a request to every node and waits for its one reply. While every node refuses it
    /// for now ("unavailable": busy with other payloads, no majority), it is sent again after a
    /// pause that doubles from [`FIRST_RETRY`] to [`MAX_RETRY`], jittered, until its deadline:
    /// a refusal is back-pressure, not an answer. The id stays the same, so the cloud still
    /// serves it once.
    pub async fn send(&self, request: EncryptRequest) -> Result<Encrypted> {
        let id = request.id.clone();
        let bytes = encode(&request)?;
        let Ok(mut answer) = self
            .book
            .lock()
            .map(|mut b| b.wait_for(id.clone(), bytes.clone()))
        else {
            return Err(Error::Unavailable(
                "the client's request table broke (a task panicked)".into(),
            ));
        };
        let result = if self.to_every_node(&bytes) == 0 {
            Err(Error::Unavailable("no node is connected".into()))
        } else {
            self.await_reply(&id, &bytes, &mut answer).await
        };
        let Ok(mut book) = self.book.lock() else {
            return result;
        };
        // A reply that came between the deadline and this lock is the caller's after all.
        let result = match (result, answer.try_recv()) {
            (Err(Error::Timeout(_)), Ok(reply)) => reply,
            (result, _) => result,
        };
        book.finish(id);
        result
    }

    /// Waits for the one reply to request `id` (sent as `bytes`) until the deadline, sending
    /// it again after a pause whenever every node refused it for now.
    async fn await_reply(
        &self,
        id: &str,
        bytes: &Bytes,
        answer: &mut oneshot::Receiver<Result<Encrypted>>,
    ) -> Result<Encrypted> {
        let until = Instant::now() + self.deadline;
        let mut pause = FIRST_RETRY;
        loop {
            match tokio::time::timeout_at(until, &mut *answer).await {
                Ok(Ok(Err(Error::Unavailable(why)))) => {
                    let wake = Instant::now() + pause.mul_f64(0.5 + rand::random::<f64>());
                    if wake >= until {
                        return Err(Error::Unavailable(why));
                    }
                    tokio::time::sleep_until(wake).await;
                    pause = (pause * 2).min(MAX_RETRY);
                    let again = self.book.lock().ok().and_then(|mut b| b.again(id));
                    let Some(next) = again else {
                        return Err(Error::Unavailable(why));
                    };
                    *answer = next;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    // A node that is not connected now gets it when its connection comes back.
                    self.to_every_node(bytes);
                }
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => return Err(Error::Unavailable("the client shut down".into())),
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "no reply to {id} within {:.1} s",
                        self.deadline.as_secs_f64()
                    )))
                }
            }
        }
    }

    /// Queues an encoded request on every node's connection; how many took it.
    fn to_every_node(&self, bytes: &Bytes) -> usize {
        self.links
            .values()
            .filter(|link| link.try_send(bytes.clone()).is_ok())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::book::deliver;
    use super::*;
    use crate::wire::framing::decode;
    use crate::wire::request::{EncryptReply, Outcome, Refusal};

    /// A client with one node link that nothing reads: its replies come from the test.
    fn offline_client(deadline: Duration) -> (Client, mpsc::Receiver<Bytes>) {
        let (link, wire) = mpsc::channel(16);
        let (_, connected) = watch::channel(1);
        let client = Client {
            prefix: "c1-test".into(),
            seq: AtomicU64::new(0),
            deadline,
            links: [(1, link)].into(),
            connected,
            book: Arc::default(),
            retries: AtomicU64::new(0),
            _tasks: JoinSet::new(),
        };
        (client, wire)
    }

    fn request(id: &str) -> EncryptRequest {
        EncryptRequest {
            id: id.into(),
            secret: vec![1, 2, 3],
            cover: None,
            owner: "alice".into(),
            viewers: Vec::new(),
            resent_after: Vec::new(),
        }
    }

    fn png_reply(id: &str, served_by: NodeId) -> EncryptReply {
        EncryptReply {
            id: id.into(),
            served_by,
            outcome: Outcome::Encrypted(vec![0x89, b'P', b'N', b'G']),
        }
    }

    fn counts(client: &Client) -> (u64, u64) {
        (client.late(), client.duplicates())
    }

    #[test]
    fn a_deadline_flag_never_outlasts_the_clouds_memory_of_a_request() {
        assert_eq!(deadline_from_secs(1e12), MAX_DEADLINE);
        assert_eq!(deadline_from_secs(f64::INFINITY), MAX_DEADLINE);
        assert_eq!(deadline_from_secs(f64::NAN), DEFAULT_DEADLINE);
        assert_eq!(deadline_from_secs(-3.0), Duration::from_millis(100));
        assert_eq!(deadline_from_secs(30.0), Duration::from_secs(30));
        assert!(MAX_DEADLINE.as_millis() < u128::from(crate::cluster::log::LOG_RETENTION_MS));
    }

    #[tokio::test]
    async fn a_reply_after_the_deadline_is_late_not_a_duplicate() {
        let (client, _wire) = offline_client(Duration::from_millis(20));
        let result = client.send(request("r1")).await;
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
        deliver(&client.book, png_reply("r1", 2), 3);
        assert_eq!(counts(&client), (1, 0), "(late, duplicates)");
        // The request has had its reply now: a second one is the cluster serving it twice.
        deliver(&client.book, png_reply("r1", 3), 3);
        assert_eq!(counts(&client), (1, 1), "(late, duplicates)");
    }

    #[tokio::test]
    async fn a_second_answer_is_a_duplicate_not_late() {
        let (client, mut wire) = offline_client(Duration::from_secs(30));
        let client = Arc::new(client);
        let caller = tokio::spawn({
            let client = Arc::clone(&client);
            async move { client.send(request("r2")).await }
        });
        // On the wire means registered: answer it, then answer it again once it is retired.
        wire.recv().await.expect("the request is sent");
        deliver(&client.book, png_reply("r2", 1), 3);
        let answer = caller.await.expect("the caller finishes");
        assert_eq!(answer.map(|e| e.served_by).ok(), Some(1));
        deliver(&client.book, png_reply("r2", 2), 3);
        assert_eq!(counts(&client), (0, 1), "(late, duplicates)");
    }

    /// Issue 27: a reply lost with its server's connection was never asked for again from the
    /// other nodes; then every other node got the marked copy and each served it again
    /// (`scripts/chaos.sh restart-loop` counted 19 duplicates), and the restarted winner too.
    #[test]
    fn a_request_whose_connection_closed_has_one_carrier_at_a_time() {
        let mut book = Book::default();
        let _waiting = book.wait_for("w".into(), encode(&request("w")).unwrap());
        let _answered = book.wait_for("a".into(), encode(&request("a")).unwrap());
        let book = Mutex::new(book);
        deliver(&book, png_reply("a", 1), 3);
        let mut book = book.into_inner().unwrap();
        let (queues, mut wires): (Vec<_>, Vec<_>) =
            (1..=3).map(|_| mpsc::channel::<Bytes>(4)).unzip();
        let handles: Vec<LinkHandle> = (1..=3)
            .zip(&queues)
            .map(|(id, q)| LinkHandle {
                id,
                queue: q.downgrade(),
                up: Arc::new(AtomicBool::new(false)),
            })
            .collect();
        let set_up = |id: NodeId, on| handles[id as usize - 1].up.store(on, Ordering::Relaxed);
        let is_up = |id: NodeId| handles[id as usize - 1].up.load(Ordering::Relaxed);
        let link = |id: NodeId| handles.iter().find(|h| h.id == id);
        let mut sent = |id: NodeId| {
            let mut marks = Vec::new();
            while let Ok(bytes) = wires[id as usize - 1].try_recv() {
                let copy: EncryptRequest = decode(&bytes).unwrap();
                marks.push((copy.id, copy.resent_after));
            }
            marks
        };
        // Node 1's connection closes; node 3 is the one connected: it alone gets a copy.
        set_up(3, true);
        book.connection_closed(1, link(3), link);
        assert_eq!(
            sent(3),
            vec![("w".to_string(), vec![1])],
            "the answered one stays"
        );
        // Node 1 restarts: node 3 carries the request, so node 1 does not get it again.
        set_up(1, true);
        assert!(book.for_new_connection(1, is_up).is_empty());
        // Node 2 closes: the carrier, still connected, gets the new mark; nobody else.
        book.connection_closed(2, link(1), link);
        assert_eq!((sent(3), sent(1)), (vec![("w".into(), vec![1, 2])], vec![]));
        // The carrier closes: the next connected node carries it.
        set_up(3, false);
        book.connection_closed(3, link(1), link);
        assert_eq!(sent(1), vec![("w".to_string(), vec![1, 2, 3])]);
        // Node 3 comes back while node 1 carries it: nothing; node 1 gone: node 3 takes it.
        set_up(3, true);
        assert!(book.for_new_connection(3, is_up).is_empty());
        set_up(1, false);
        assert_eq!(book.for_new_connection(3, is_up).len(), 1);
        assert!(
            book.for_new_connection(2, is_up).is_empty(),
            "node 3 carries it"
        );
    }

    fn unavailable(id: &str, node: NodeId) -> EncryptReply {
        EncryptReply {
            id: id.into(),
            served_by: node,
            outcome: Outcome::Refused {
                kind: Refusal::Unavailable,
                message: "node 1 is busy".into(),
            },
        }
    }

    /// Issue 31: a request every node refused as busy ended at once as "unavailable"; now it is
    /// sent again, with the same id, until it is served or its deadline comes.
    #[tokio::test]
    async fn a_request_every_node_refused_is_sent_again_until_served() {
        let (client, mut wire) = offline_client(Duration::from_secs(30));
        let client = Arc::new(client);
        let caller = tokio::spawn({
            let client = Arc::clone(&client);
            async move { client.send(request("r4")).await }
        });
        for _ in 0..2 {
            let sent: EncryptRequest = decode(&wire.recv().await.expect("sent")).unwrap();
            assert_eq!(sent.id, "r4");
            deliver(&client.book, unavailable("r4", 1), 1);
        }
        wire.recv().await.expect("sent a third time");
        deliver(&client.book, png_reply("r4", 1), 1);
        let answer = caller.await.expect("the caller finishes");
        assert_eq!(answer.map(|e| e.served_by).ok(), Some(1));
        assert_eq!((client.retries(), counts(&client)), (2, (0, 0)));
    }

    #[tokio::test]
    async fn a_refused_request_ends_unavailable_when_no_retry_fits_its_deadline() {
        let deadline = FIRST_RETRY / 3;
        let (client, mut wire) = offline_client(deadline);
        let client = Arc::new(client);
        let caller = tokio::spawn({
            let client = Arc::clone(&client);
            async move { client.send(request("r5")).await }
        });
        wire.recv().await.expect("sent");
        deliver(&client.book, unavailable("r5", 1), 1);
        let answer = caller.await.expect("the caller finishes");
        assert!(
            matches!(&answer, Err(Error::Unavailable(m)) if m.contains("busy")),
            "{answer:?}"
        );
        assert_eq!(client.retries(), 0);
        assert!(wire.try_recv().is_err(), "not sent again");
    }

    #[test]
    fn a_reply_after_every_node_said_unavailable_is_late() {
        let book = Mutex::new(Book::default());
        let mut answer = book.lock().unwrap().wait_for("r3".into(), Bytes::new());
        let unavailable = |node| EncryptReply {
            id: "r3".into(),
            served_by: node,
            outcome: Outcome::Refused {
                kind: Refusal::Unavailable,
                message: "no quorum".into(),
            },
        };
        deliver(&book, unavailable(1), 2);
        deliver(&book, unavailable(2), 2);
        assert!(matches!(answer.try_recv(), Ok(Err(Error::Unavailable(_)))));
        // Before and after the caller retires the request: late first, then a duplicate.
        deliver(&book, png_reply("r3", 1), 2);
        book.lock().unwrap().finish("r3".into());
        deliver(&book, png_reply("r3", 2), 2);
        let book = book.lock().unwrap();
        assert_eq!((book.late, book.duplicates), (1, 1), "(late, duplicates)");
    }
}
