//! The cloud's durable consensus store: openraft (`=0.9.25`) over one redb file per node,
//! replicating the [`sharing`](crate::sharing) state machine (accounts, directory, ledger).
//!
//! ```text
//!   HTTP handler ── Store::write(op) ──> leader? ── yes ─> write batcher: the commands waiting
//!                                          │ no            now as one Batch ─> Raft::client_write
//!                                          └─ Request::Write ─> leader's store   │ majority
//!                                                               every node: Machine::apply
//!   HTTP handler ── Store::read(f) ──> read index from the leader (batched, one quorum
//!                                       heartbeat for all waiting readers) ──> wait until
//!                                       applied >= index ──> f(&State)
//! ```
//!
//! - [`disk`]: the redb file and its single writer thread (group commit, ordered writes).
//! - [`log`]: the Raft log store; [`machine`]: the state machine and its snapshots.
//! - [`network`]: the store's RPCs over authenticated, multiplexed TCP links.
//! - [`files`]: users' encrypted images, kept by digest beside the log on a majority.
//!
//! The Raft leader and the phase-1 load coordinator are separate roles: the coordinator is
//! elected by load, the leader by Raft, and `/status` shows both. Membership is the
//! configuration's nodes; a node whose store is fresh initialises it with that membership
//! (every node may do so: openraft accepts the same initial membership from each).
//! While the node is in a simulated failure its store is silent too, and it does not start
//! elections; it starts them again [`REJOIN_QUIET`] after it returns, so that the leader's
//! heartbeats reach it first (openraft 0.9 has no Pre-Vote).
//!
//! Implementation caveats: a node that lost its disk rejoins as a fresh store and may vote
//! again in a term it voted in before (the classic Raft disk-loss hazard); the safe way back
//! for such a node is a membership change, which this fixed-membership cluster does not make.

mod disk;
mod files;
mod log;
mod machine;
mod network;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, EmptyNode, Raft, SnapshotPolicy};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};

use crate::config::ClusterConfig;
use crate::ids::NodeId;
use crate::sharing::{unix_millis, Command, Reply, Sealed, SignedOp, State};
use crate::wire::framing::{FrameReader, FrameWriter};
use crate::wire::handshake::MemberAuth;
use crate::{Error, Result};

pub use network::Silence;
use network::{Channel, Network, NotDone, Request, Response};

openraft::declare_raft_types!(
    /// The store's openraft types: batches of commands in, their replies out, nodes named by
    /// id only.
    pub TypeConfig:
        D = Batch,
        R = Vec<Reply>,
        NodeId = NodeId,
        Node = EmptyNode,
);

/// One log entry: the commands the leader took at once ([`batch_writes`]), applied in order;
/// the entry's reply has one [`Reply`] per command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Batch(pub Vec<Command>);

/// The most commands one log entry carries.
const MAX_BATCH: usize = 256;
/// Log entries the leader's batcher has in flight at once; while all are, arriving commands
/// wait and go together in the next entry.
const ENTRIES_IN_FLIGHT: usize = 4;

/// How long a write or a read may wait for a majority before it is refused (503).
pub const MAJORITY_DEADLINE: Duration = Duration::from_secs(3);
/// Raft heartbeat interval.
const HEARTBEAT_MS: u64 = 100;
/// Raft election timeout range.
const ELECTION_MS: (u64, u64) = (500, 1000);
/// Entries kept in the log behind a snapshot, for followers slightly behind (at most a tenth
/// of the snapshot interval).
const KEEP_BEHIND_SNAPSHOT: u64 = 1_000;
/// After a simulated failure, how long the node listens before it may start an election.
pub const REJOIN_QUIET: Duration = Duration::from_millis(600);
/// The longest one attempt waits for the leader it was sent to (then the leader is looked up
/// again: a stopped leader must not hold a write for the whole deadline; retries are safe,
/// the ledger answers a retried operation as done).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two attempts while there is no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(30);

/// What `/status` shows of the store.
#[derive(Clone, Debug, Serialize)]
pub struct StoreStatus {
    /// The Raft leader this node knows of.
    pub leader: Option<NodeId>,
    /// The current Raft term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log: Option<u64>,
    /// Index of the last applied entry.
    pub applied: Option<u64>,
    /// Index of the last snapshot built or installed.
    pub snapshot: Option<u64>,
    /// Index of the last purged log entry.
    pub purged: Option<u64>,
    /// Accounts in the directory.
    pub users: usize,
    /// Users whose lease holds now.
    pub users_online: usize,
    /// Images shared.
    pub images: usize,
    /// Views spent, over every grant of every image (revoked grants included).
    pub views_spent: u64,
    /// Mailboxes holding letters not yet acknowledged.
    pub mailboxes_waiting: usize,
    /// Letters waiting in them.
    pub letters_waiting: usize,
    /// SHA-256 of the applied state (equal on nodes at the same `applied` index).
    pub digest: String,
}

/// A node's store: cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft<TypeConfig>,
    state: Arc<RwLock<State>>,
    channels: Arc<BTreeMap<NodeId, Arc<Channel>>>,
    reads: mpsc::Sender<oneshot::Sender<std::result::Result<u64, NotDone>>>,
    writes: mpsc::Sender<(
        Command,
        oneshot::Sender<std::result::Result<Reply, NotDone>>,
    )>,
    silent: Silence,
    files: files::Files,
    /// The state digest and the applied index it was computed at (the state changes only
    /// when that index does).
    digest: std::sync::Mutex<(Option<u64>, String)>,
}

fn cluster_fingerprint(config: &ClusterConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"imgcloud store identity v1");
    h.update(MemberAuth::new(&config.secret).fingerprint());
    for id in config.ids() {
        h.update(id.to_be_bytes());
    }
    h.finalize().into()
}

impl Store {
    /// Opens node `id`'s store in `data_dir` and starts its Raft node.
    pub async fn open(
        config: &ClusterConfig,
        id: NodeId,
        data_dir: &Path,
        silent: Silence,
    ) -> Result<Store> {
        let identity = disk::Identity {
            node: id,
            cluster: cluster_fingerprint(config),
        };
        let disk = disk::Disk::open(data_dir, &identity)?;
        let files = files::Files::open(data_dir)?;
        let log = log::LogStore::load(disk.clone())?;
        let machine = machine::Machine::load(disk)?;
        let fresh = log.is_fresh()?;
        let state = machine.state();
        let auth = MemberAuth::new(&config.secret);
        let channels: BTreeMap<NodeId, Arc<Channel>> = config
            .nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| {
                let channel = Channel::new(id, n.id, n.addr, auth.clone(), silent.clone());
                (n.id, Arc::new(channel))
            })
            .collect();
        let channels = Arc::new(channels);
        let raft_config = Config {
            cluster_name: "imgcloud".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_MS.0,
            election_timeout_max: ELECTION_MS.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.store.snapshot_every),
            max_in_snapshot_log_to_keep: KEEP_BEHIND_SNAPSHOT.min(config.store.snapshot_every / 10),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(format!("raft configuration: {e}")))?;
        let network = Network {
            channels: channels.clone(),
        };
        let raft = Raft::new(id, Arc::new(raft_config), network, log, machine)
            .await
            .map_err(|e| Error::Storage(format!("cannot start the consensus engine: {e}")))?;
        if fresh {
            let members: BTreeMap<NodeId, EmptyNode> = config
                .ids()
                .into_iter()
                .map(|n| (n, EmptyNode {}))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(node = id, error = %e, "store already initialised");
            }
        }
        let (reads, read_rx) = mpsc::channel(4096);
        tokio::spawn(batch_read_index(raft.clone(), read_rx));
        let (writes, write_rx) = mpsc::channel(4096);
        tokio::spawn(batch_writes(raft.clone(), write_rx));
        let store = Store {
            inner: Arc::new(Inner {
                id,
                raft,
                state,
                channels,
                reads,
                writes,
                silent,
                files,
                digest: Default::default(),
            }),
        };
        Ok(store)
    }

    /// Keeps elections off while the node is silent, and on again `REJOIN_QUIET` after it
    /// returns; `changes` fires whenever the node's state may have changed.
    pub async fn follow_silence<T>(&self, mut changes: tokio::sync::watch::Receiver<T>) {
        let raft = &self.inner.raft;
        let mut silent = false;
        while changes.changed().await.is_ok() {
            let now = (self.inner.silent)();
            if now && !silent {
                raft.runtime_config().elect(false);
            } else if !now && silent {
                tokio::time::sleep(REJOIN_QUIET).await;
                if (self.inner.silent)() {
                    continue;
                }
                raft.runtime_config().elect(true);
            }
            silent = now;
        }
    }

    /// Records a user's operation, with what this node read from the sealed file sent with
    /// it: checks its signature, then answers only once a majority has it durably.
    pub async fn write(&self, op: SignedOp, sealed: Option<Sealed>) -> Result<Reply> {
        op.verify()?;
        let command = Command {
            at_ms: unix_millis(),
            op,
            sealed,
        };
        let deadline = Instant::now() + MAJORITY_DEADLINE;
        loop {
            let attempt = match self.leader().await {
                Some(leader) if leader == self.inner.id => {
                    self.write_as_leader(command.clone()).await
                }
                Some(leader) => {
                    match self
                        .ask_leader(leader, Request::Write(command.clone()), deadline)
                        .await
                    {
                        Ok(Response::Write(result)) => result,
                        Ok(_) => Err(out_of_turn(leader)),
                        Err(e) => Err(e),
                    }
                }
                None => Err(NotDone::NotLeader(None)),
            };
            match attempt {
                Ok(reply) => return reply.into_result(),
                Err(NotDone::Unavailable(why)) if Instant::now() >= deadline => {
                    return Err(no_majority(&why))
                }
                Err(_) if Instant::now() >= deadline => {
                    return Err(no_majority("no leader was reachable"))
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    }

    /// Sends `request` to `leader`, waiting at most one attempt's time before `deadline`.
    async fn ask_leader(
        &self,
        leader: NodeId,
        request: Request,
        deadline: Instant,
    ) -> std::result::Result<Response, NotDone> {
        let channel = self
            .inner
            .channels
            .get(&leader)
            .ok_or(NotDone::NotLeader(None))?;
        let ttl = deadline
            .saturating_duration_since(Instant::now())
            .min(ATTEMPT_TIMEOUT);
        channel
            .call(request, ttl)
            .await
            .map_err(|e| NotDone::Unavailable(e.to_string()))
    }

    async fn write_as_leader(&self, command: Command) -> std::result::Result<Reply, NotDone> {
        // Refused here only what no later entry can change: an invalid operation, a wrong
        // key, a passed sequence number (this leader may not have applied everything its
        // predecessor acknowledged, so "unknown user" is for the log to decide).
        if let Err(why) = crate::sharing::check_op(&command.op.op) {
            return Ok(Reply::Refused(why));
        }
        let check = self
            .inner
            .state
            .read()
            .expect("state lock")
            .check(&command.op, command.at_ms);
        if let Err(forbidden @ Reply::Forbidden(_)) = check {
            return Ok(forbidden);
        }
        let (tx, rx) = oneshot::channel();
        let ask = async {
            self.inner.writes.send((command, tx)).await.ok()?;
            rx.await.ok()
        };
        match timeout(MAJORITY_DEADLINE, ask).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(NotDone::Unavailable("shutting down".into())),
            Err(_) => Err(NotDone::Unavailable(
                "the write was not committed by a majority in time".into(),
            )),
        }
    }

    /// Runs `f` on the state after every write acknowledged before this call (linearizable).
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T> {
        let deadline = Instant::now() + MAJORITY_DEADLINE;
        let index = loop {
            let attempt = match self.leader().await {
                Some(leader) if leader == self.inner.id => self.read_index_as_leader().await,
                Some(leader) => match self.ask_leader(leader, Request::ReadIndex, deadline).await {
                    Ok(Response::ReadIndex(result)) => result,
                    Ok(_) => Err(out_of_turn(leader)),
                    Err(e) => Err(e),
                },
                None => Err(NotDone::NotLeader(None)),
            };
            match attempt {
                Ok(index) => break index,
                Err(_) if Instant::now() >= deadline => {
                    return Err(no_majority("the leader could not confirm its majority"))
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|_| no_majority("this node did not catch up with the leader in time"))?;
        let state = self.inner.state.read().expect("state lock");
        Ok(f(&state))
    }

    /// Runs `f` on this node's applied state as it is now (not linearizable: for records
    /// that never change once written, such as a user's key).
    pub fn local<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.state.read().expect("state lock"))
    }

    async fn read_index_as_leader(&self) -> std::result::Result<u64, NotDone> {
        let (tx, rx) = oneshot::channel();
        let ask = async {
            self.inner.reads.send(tx).await.ok()?;
            rx.await.ok()
        };
        match timeout(MAJORITY_DEADLINE, ask).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(NotDone::Unavailable("shutting down".into())),
            Err(_) => Err(NotDone::Unavailable(
                "no majority confirmed the leader".into(),
            )),
        }
    }

    /// The leader this node knows of, waiting briefly while there is none.
    async fn leader(&self) -> Option<NodeId> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_and_update().current_leader {
                    return Some(leader);
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        };
        timeout(Duration::from_millis(200), wait)
            .await
            .ok()
            .flatten()
    }

    /// What `/status` shows.
    pub fn status(&self) -> StoreStatus {
        let now_ms = crate::sharing::unix_millis();
        let m = self.inner.raft.metrics().borrow().clone();
        let state = self.inner.state.read().expect("state lock");
        let applied = m.last_applied.map(|l| l.index);
        let mut digest = self.inner.digest.lock().expect("digest lock");
        if digest.0 != applied || digest.1.is_empty() {
            let bytes = postcard::to_stdvec(&*state).expect("the state serializes");
            *digest = (applied, hex::encode(&Sha256::digest(&bytes)[..8]));
        }
        StoreStatus {
            leader: m.current_leader,
            term: m.current_term,
            last_log: m.last_log_index,
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            users: state.users.len(),
            users_online: state.users.values().filter(|u| u.online(now_ms)).count(),
            images: state.ledger.images.len(),
            views_spent: state.ledger.views_spent(),
            mailboxes_waiting: state
                .mail
                .values()
                .filter(|m| !m.letters.is_empty())
                .count(),
            letters_waiting: state.mail.values().map(|m| m.letters.len()).sum(),
            digest: digest.1.clone(),
        }
    }

    /// Serves a store link that node `from` opened (after the handshake).
    pub async fn serve(
        &self,
        reader: FrameReader,
        writer: FrameWriter,
        from: NodeId,
    ) -> Result<()> {
        let store = self.clone();
        let handle = move |request: Request| {
            let store = store.clone();
            async move { store.handle(request).await }
        };
        let result = network::serve(reader, writer, self.inner.silent.clone(), handle).await;
        tracing::debug!(node = self.inner.id, from, "store link closed");
        result
    }

    async fn handle(&self, request: Request) -> Response {
        let raft = &self.inner.raft;
        match request {
            Request::Append(r) => Response::Append(raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::Snapshot(r) => Response::Snapshot(raft.install_snapshot(r).await),
            Request::Write(command) => Response::Write(self.write_as_leader(command).await),
            Request::ReadIndex => Response::ReadIndex(self.read_index_as_leader().await),
            Request::Keep(bytes) => Response::Kept(
                self.put_file(bytes)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            Request::Fetch(digest) => {
                let files = self.inner.files.clone();
                let found = tokio::task::spawn_blocking(move || files.get(&digest)).await;
                Response::Fetched(match found {
                    Ok(Ok(bytes)) => bytes.map(serde_bytes::ByteBuf::from),
                    _ => None,
                })
            }
        }
    }

    async fn put_file(&self, bytes: Vec<u8>) -> Result<[u8; 32]> {
        let files = self.inner.files.clone();
        tokio::task::spawn_blocking(move || files.put(&bytes))
            .await
            .map_err(|e| Error::Storage(format!("keeping a file failed: {e}")))?
    }

    /// Keeps `bytes` on a majority of the nodes (this one and others), durably; their digest
    /// once it is. A node that missed it fetches it when it needs it ([`Store::kept`]).
    pub async fn keep(&self, bytes: Vec<u8>) -> Result<[u8; 32]> {
        let nodes = self.inner.channels.len() + 1;
        let majority = nodes / 2 + 1;
        let shared = std::sync::Arc::new(bytes);
        let mut sends: tokio::task::JoinSet<bool> = tokio::task::JoinSet::new();
        for channel in self.inner.channels.values() {
            let (channel, bytes) = (channel.clone(), shared.clone());
            sends.spawn(async move {
                let request = Request::Keep(bytes.as_ref().clone());
                matches!(
                    channel.call(request, MAJORITY_DEADLINE).await,
                    Ok(Response::Kept(Ok(())))
                )
            });
        }
        let digest = self.put_file(shared.as_ref().clone()).await?;
        let mut held = 1;
        while held < majority {
            match sends.join_next().await {
                Some(Ok(true)) => held += 1,
                Some(_) => {}
                None => {
                    return Err(Error::Unavailable(format!(
                        "the file reached {held} of {} nodes; a majority must keep it",
                        self.inner.channels.len() + 1
                    )))
                }
            }
        }
        // The rest finish in the background.
        sends.detach_all();
        Ok(digest)
    }

    /// The kept file with `digest`: from this node, or fetched from another (and kept here).
    pub async fn kept(&self, digest: [u8; 32]) -> Result<Vec<u8>> {
        let files = self.inner.files.clone();
        let local = tokio::task::spawn_blocking(move || files.get(&digest))
            .await
            .map_err(|e| Error::Storage(format!("reading a kept file failed: {e}")))??;
        if let Some(bytes) = local {
            return Ok(bytes);
        }
        for channel in self.inner.channels.values() {
            let answer = channel.call(Request::Fetch(digest), ATTEMPT_TIMEOUT).await;
            if let Ok(Response::Fetched(Some(bytes))) = answer {
                let bytes = bytes.into_vec();
                if Sha256::digest(&bytes).as_slice() == digest {
                    self.put_file(bytes.clone()).await?;
                    return Ok(bytes);
                }
            }
        }
        Err(Error::Unavailable(
            "no reachable node keeps that file now; try again".into(),
        ))
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
    }
}

fn out_of_turn(leader: NodeId) -> NotDone {
    NotDone::Unavailable(format!(
        "node {leader} answered with the wrong kind of response"
    ))
}

fn no_majority(why: &str) -> Error {
    Error::Unavailable(format!(
        "the cloud has no majority for this request right now ({why}); retry later"
    ))
}

/// Proposes waiting writes in batches: every command that arrived while the previous entries
/// were being proposed goes into one log entry (at most [`MAX_BATCH`]), with at most
/// [`ENTRIES_IN_FLIGHT`] entries in flight, so one append and one replication round carry
/// many users' operations.
async fn batch_writes(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::Receiver<(
        Command,
        oneshot::Sender<std::result::Result<Reply, NotDone>>,
    )>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(ENTRIES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
            let written = timeout(MAJORITY_DEADLINE, raft.client_write(Batch(commands))).await;
            let failed = match written {
                Ok(Ok(response)) => {
                    for (waiter, reply) in waiters.into_iter().zip(response.data) {
                        let _ = waiter.send(Ok(reply));
                    }
                    return drop(permit);
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    NotDone::NotLeader(f.leader_id)
                }
                Ok(Err(e)) => NotDone::Unavailable(e.to_string()),
                Err(_) => {
                    NotDone::Unavailable("the write was not committed by a majority in time".into())
                }
            };
            for waiter in waiters {
                let _ = waiter.send(Err(failed.clone()));
            }
            drop(permit);
        });
    }
}

/// Answers waiting readers in batches: one leadership confirmation (a heartbeat round to a
/// quorum) serves every reader that was waiting when it started.
async fn batch_read_index(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::Receiver<oneshot::Sender<std::result::Result<u64, NotDone>>>,
) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = match timeout(MAJORITY_DEADLINE, raft.get_read_log_id()).await {
            Ok(Ok((read, _))) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                f,
            )))) => Err(NotDone::NotLeader(f.leader_id)),
            Ok(Err(e)) => Err(NotDone::Unavailable(e.to_string())),
            Err(_) => Err(NotDone::Unavailable(
                "no majority confirmed the leader".into(),
            )),
        };
        for reader in waiting {
            let _ = reader.send(result.clone());
        }
    }
}
