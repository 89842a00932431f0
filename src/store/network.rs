//! The store's RPCs between nodes: Raft's own (append, vote, snapshot) and two of ours (a
//! write forwarded to the leader, a read index asked of it), over authenticated TCP.
//!
//! Each node keeps one [`Channel`] per other node: one connection on the protocol port, opened
//! with the cluster-secret handshake as a *store* link (so it can never be mistaken for a
//! node link), multiplexed by request id, so a slow write never holds up a heartbeat. The
//! accepting side handles each request in its own task, at most [`MAX_IN_FLIGHT`] at once per
//! connection. A node in its simulated failure neither sends nor answers (the store goes
//! silent with the rest of the node).
//!
//! Implementation caveats: frames are not individually authenticated after the handshake (as
//! the node links); a connection that breaks fails its pending calls, which openraft retries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, EmptyNode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::timeout;

use super::TypeConfig;
use crate::ids::NodeId;
use crate::sharing::{Command, Reply};
use crate::wire::framing::{split, FrameReader, FrameWriter};
use crate::wire::handshake::{LinkKind, MemberAuth};
use crate::{Error, Result};

/// Requests one store connection handles at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// Longest wait to connect and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames queued for one connection's writer.
const WRITE_QUEUE: usize = 1024;

/// Whether this node is silent now (its simulated failure).
pub type Silence = Arc<dyn Fn() -> bool + Send + Sync>;

/// A request between stores.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    /// Raft: replicate entries or heartbeat.
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: ask for a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: a snapshot chunk.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client's write, forwarded to the node the sender believes is the leader.
    Write(Command),
    /// The leader's commit index after confirming its leadership (a linearizable read).
    ReadIndex,
    /// Keep this file (see [`super::files`]).
    Keep(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The kept file with this digest, if the node has it.
    Fetch([u8; 32]),
}

/// Why a leader-only request was not done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) enum NotDone {
    /// This node is not the leader; it names the one it knows of.
    NotLeader(Option<NodeId>),
    /// The leader could not do it (no majority, shutting down).
    Unavailable(String),
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Response {
    Append(std::result::Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(std::result::Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(
        std::result::Result<
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>,
        >,
    ),
    Write(std::result::Result<Reply, NotDone>),
    ReadIndex(std::result::Result<u64, NotDone>),
    Kept(std::result::Result<(), String>),
    Fetched(Option<serde_bytes::ByteBuf>),
}

/// A request or response with the id that pairs them.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Tagged<T> {
    pub id: u64,
    pub body: T,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Conn {
    frames: mpsc::Sender<Tagged<Request>>,
    pending: Pending,
    next: AtomicU64,
    closed: Arc<AtomicBool>,
}

/// This node's connection to one other node's store.
pub(super) struct Channel {
    me: NodeId,
    target: NodeId,
    addr: SocketAddr,
    auth: MemberAuth,
    silent: Silence,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

impl Channel {
    pub fn new(
        me: NodeId,
        target: NodeId,
        addr: SocketAddr,
        auth: MemberAuth,
        silent: Silence,
    ) -> Self {
        Channel {
            me,
            target,
            addr,
            auth,
            silent,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `request` and waits at most `ttl` for its response.
    pub async fn call(&self, request: Request, ttl: Duration) -> Result<Response> {
        if (self.silent)() {
            return Err(Error::Unavailable(
                "this node is in a (simulated) failure".into(),
            ));
        }
        let conn = timeout(ttl, self.connection())
            .await
            .map_err(|_| Error::Timeout(format!("connecting to node {}", self.target)))??;
        let id = conn.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock").insert(id, tx);
        let sent = conn.frames.send(Tagged { id, body: request }).await.is_ok();
        let answer = if sent {
            timeout(ttl, rx).await.ok()
        } else {
            None
        };
        conn.pending.lock().expect("pending lock").remove(&id);
        match answer {
            Some(Ok(response)) => Ok(response),
            Some(Err(_)) | None if !sent || conn.closed.load(Ordering::Relaxed) => Err(
                Error::Unavailable(format!("the store link to node {} closed", self.target)),
            ),
            _ => Err(Error::Timeout(format!(
                "node {} did not answer within {ttl:?}",
                self.target
            ))),
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.closed.load(Ordering::Relaxed) {
                return Ok(conn.clone());
            }
        }
        let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| Error::Timeout(format!("connecting to node {}", self.target)))??;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = split(stream);
        timeout(
            CONNECT_TIMEOUT,
            self.auth.connect(
                LinkKind::Store,
                &mut reader,
                &mut writer,
                self.me,
                self.target,
            ),
        )
        .await
        .map_err(|_| Error::Timeout(format!("authenticating to node {}", self.target)))??;
        let (frames, rx) = mpsc::channel(WRITE_QUEUE);
        let conn = Arc::new(Conn {
            frames,
            pending: Pending::default(),
            next: AtomicU64::new(0),
            closed: Arc::new(AtomicBool::new(false)),
        });
        tokio::spawn(write_frames(writer, rx, conn.closed.clone()));
        tokio::spawn(read_responses(
            reader,
            conn.pending.clone(),
            conn.closed.clone(),
        ));
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

async fn write_frames<T: Serialize>(
    mut writer: FrameWriter,
    mut rx: mpsc::Receiver<Tagged<T>>,
    closed: Arc<AtomicBool>,
) {
    let result = async {
        while let Some(frame) = rx.recv().await {
            writer.feed(&frame).await?;
            while let Ok(more) = rx.try_recv() {
                writer.feed(&more).await?;
            }
            writer.flush().await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "store link writer stopped");
    }
    closed.store(true, Ordering::Relaxed);
}

async fn read_responses(mut reader: FrameReader, pending: Pending, closed: Arc<AtomicBool>) {
    loop {
        match reader.read::<Tagged<Response>>().await {
            Ok(Some(frame)) => {
                if let Some(tx) = pending.lock().expect("pending lock").remove(&frame.id) {
                    let _ = tx.send(frame.body);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "closing a store link");
                break;
            }
        }
    }
    closed.store(true, Ordering::Relaxed);
    pending.lock().expect("pending lock").clear();
}

/// Serves one accepted store connection from node `from` until it closes.
pub(super) async fn serve<H, F>(
    mut reader: FrameReader,
    writer: FrameWriter,
    silent: Silence,
    handle: H,
) -> Result<()>
where
    H: Fn(Request) -> F + Send + Sync + Clone + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Tagged<Response>>(WRITE_QUEUE);
    let closed = Arc::new(AtomicBool::new(false));
    tokio::spawn(write_frames(writer, rx, closed.clone()));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(frame) = reader.read::<Tagged<Request>>().await? {
        if silent() || closed.load(Ordering::Relaxed) {
            continue;
        }
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (handle, tx) = (handle.clone(), tx.clone());
        tokio::spawn(async move {
            let body = handle(frame.body).await;
            let _ = tx.send(Tagged { id: frame.id, body }).await;
            drop(permit);
        });
    }
    Ok(())
}

/// openraft's view of the channels.
#[derive(Clone)]
pub(super) struct Network {
    pub channels: Arc<std::collections::BTreeMap<NodeId, Arc<Channel>>>,
}

/// One replication or vote stream to a target.
pub(super) struct TargetLink {
    channel: Option<Arc<Channel>>,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = TargetLink;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> TargetLink {
        TargetLink {
            channel: self.channels.get(&target).cloned(),
            target,
        }
    }
}

fn unreachable<E: std::error::Error>(e: Error) -> RPCError<NodeId, EmptyNode, E> {
    match e {
        Error::Timeout(_) => RPCError::Network(NetworkError::new(&AnyError::error(e.to_string()))),
        _ => RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string()))),
    }
}

fn unexpected<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, EmptyNode, E> {
    RPCError::Network(NetworkError::new(&AnyError::error(format!(
        "node {target} answered with the wrong kind of response"
    ))))
}

impl TargetLink {
    async fn call<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> std::result::Result<Response, RPCError<NodeId, EmptyNode, E>> {
        let channel = self.channel.as_ref().ok_or_else(|| {
            unreachable(Error::Config(format!(
                "node {} is not a member",
                self.target
            )))
        })?;
        channel
            .call(request, option.hard_ttl())
            .await
            .map_err(unreachable)
    }
}

impl RaftNetwork<TypeConfig> for TargetLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<
        AppendEntriesResponse<NodeId>,
        RPCError<NodeId, EmptyNode, RaftError<NodeId>>,
    > {
        match self.call(Request::Append(rpc), &option).await? {
            Response::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected(self.target)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, EmptyNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Request::Snapshot(rpc), &option).await? {
            Response::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected(self.target)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, EmptyNode, RaftError<NodeId>>>
    {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected(self.target)),
        }
    }
}
