//! Tests of the store: openraft's storage suite over a fresh redb file, and what the suite
//! does not cover (a restart, a foreign or damaged file, a snapshot carrying real records).
//!
//! openraft's suite needs `NodeId: From<u64>`, and the store's node ids are `u32`; so the
//! suite runs on [`SuiteConfig`] (the same types with `u64` ids) through thin wrappers that
//! re-type every value between the two configs and call the real log store and machine.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::testing::{blank_ent, log_id, membership_ent, StoreBuilder, Suite};
use openraft::{
    EmptyNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, Membership, OptionalSend,
    RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tempfile::TempDir;

use super::disk::{Disk, Identity, FILE_NAME};
use super::log::{io_error, LogStore};
use super::machine::{Builder, Machine};
use super::{Batch, TypeConfig};
use crate::ids::NodeId;
use crate::sharing::{unix_millis, Command, Credential, Reply, State, UserOp};
use crate::Error;

openraft::declare_raft_types!(
    /// The store's types with `u64` node ids, as openraft's storage suite requires.
    SuiteConfig:
        D = Batch,
        R = Vec<Reply>,
        NodeId = u64,
        Node = EmptyNode,
);

type SuiteResult<T> = Result<T, StorageError<u64>>;

/// Re-types a value between the two configs (they differ only in the width of node ids).
fn retype<A: Serialize, B: DeserializeOwned>(value: &A) -> B {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .expect("the value fits both configs")
}

fn widen(e: StorageError<NodeId>) -> StorageError<u64> {
    retype(&e)
}

fn widen_snapshot(snapshot: Snapshot<TypeConfig>) -> Snapshot<SuiteConfig> {
    Snapshot {
        meta: retype(&snapshot.meta),
        snapshot: snapshot.snapshot,
    }
}

fn narrow_entries(entries: impl IntoIterator<Item = Entry<SuiteConfig>>) -> Vec<Entry<TypeConfig>> {
    entries.into_iter().map(|e| retype(&e)).collect()
}

/// The real [`LogStore`], seen through [`SuiteConfig`].
struct SuiteLog(LogStore);

impl RaftLogReader<SuiteConfig> for SuiteLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SuiteResult<Vec<Entry<SuiteConfig>>> {
        let entries = self.0.try_get_log_entries(range).await.map_err(widen)?;
        Ok(retype(&entries))
    }
}

impl RaftLogStorage<SuiteConfig> for SuiteLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> SuiteResult<LogState<SuiteConfig>> {
        let state = self.0.get_log_state().await.map_err(widen)?;
        Ok(LogState {
            last_purged_log_id: retype(&state.last_purged_log_id),
            last_log_id: retype(&state.last_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        SuiteLog(self.0.get_log_reader().await)
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> SuiteResult<()> {
        self.0.save_vote(&retype(vote)).await.map_err(widen)
    }

    async fn read_vote(&mut self) -> SuiteResult<Option<Vote<u64>>> {
        Ok(retype(&self.0.read_vote().await.map_err(widen)?))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> SuiteResult<()> {
        self.0
            .save_committed(retype(&committed))
            .await
            .map_err(widen)
    }

    async fn read_committed(&mut self) -> SuiteResult<Option<LogId<u64>>> {
        Ok(retype(&self.0.read_committed().await.map_err(widen)?))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<SuiteConfig>) -> SuiteResult<()>
    where
        I: IntoIterator<Item = Entry<SuiteConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let done = Box::new(move |result| callback.log_io_completed(result));
        self.0
            .append_then(narrow_entries(entries), done)
            .map_err(|e| widen(io_error(ErrorSubject::Logs, ErrorVerb::Write, e)))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> SuiteResult<()> {
        self.0.truncate(retype(&log_id)).await.map_err(widen)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> SuiteResult<()> {
        self.0.purge(retype(&log_id)).await.map_err(widen)
    }
}

/// The real [`Machine`], seen through [`SuiteConfig`].
struct SuiteMachine(Machine);

/// The real snapshot [`Builder`], seen through [`SuiteConfig`].
struct SuiteBuilder(Builder);

impl RaftSnapshotBuilder<SuiteConfig> for SuiteBuilder {
    async fn build_snapshot(&mut self) -> SuiteResult<Snapshot<SuiteConfig>> {
        Ok(widen_snapshot(
            self.0.build_snapshot().await.map_err(widen)?,
        ))
    }
}

impl RaftStateMachine<SuiteConfig> for SuiteMachine {
    type SnapshotBuilder = SuiteBuilder;

    async fn applied_state(
        &mut self,
    ) -> SuiteResult<(Option<LogId<u64>>, StoredMembership<u64, EmptyNode>)> {
        Ok(retype(&self.0.applied_state().await.map_err(widen)?))
    }

    async fn apply<I>(&mut self, entries: I) -> SuiteResult<Vec<Vec<Reply>>>
    where
        I: IntoIterator<Item = Entry<SuiteConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.0.apply(narrow_entries(entries)).await.map_err(widen)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SuiteBuilder(self.0.get_snapshot_builder().await)
    }

    async fn begin_receiving_snapshot(&mut self) -> SuiteResult<Box<Cursor<Vec<u8>>>> {
        self.0.begin_receiving_snapshot().await.map_err(widen)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, EmptyNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SuiteResult<()> {
        self.0
            .install_snapshot(&retype(meta), snapshot)
            .await
            .map_err(widen)
    }

    async fn get_current_snapshot(&mut self) -> SuiteResult<Option<Snapshot<SuiteConfig>>> {
        let current = self.0.get_current_snapshot().await.map_err(widen)?;
        Ok(current.map(widen_snapshot))
    }
}

/// Opens a fresh store in a temp dir, which lives as long as the store is tested.
struct FreshStore;

impl StoreBuilder<SuiteConfig, SuiteLog, SuiteMachine, TempDir> for FreshStore {
    async fn build(&self) -> SuiteResult<(TempDir, SuiteLog, SuiteMachine)> {
        let failed = |e: Error| widen(io_error(ErrorSubject::Store, ErrorVerb::Read, e));
        let dir = TempDir::new().map_err(|e| failed(Error::Io(e)))?;
        let disk = Disk::open(dir.path(), &identity(1)).map_err(failed)?;
        let log = LogStore::load(disk.clone()).map_err(failed)?;
        let machine = Machine::load(disk).map_err(failed)?;
        Ok((dir, SuiteLog(log), SuiteMachine(machine)))
    }
}

#[test]
fn the_store_passes_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(FreshStore) {
        panic!("openraft's storage suite failed: {e}");
    }
}

fn identity(node: NodeId) -> Identity {
    Identity {
        node,
        cluster: [7; 32],
    }
}

/// Opens `dir`, waiting while the previous handles' writer thread still holds the file open
/// (it lets go shortly after the last handle is dropped).
fn open_after_close(dir: &Path, identity: &Identity) -> crate::Result<Disk> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Disk::open(dir, identity) {
            Err(Error::Config(why))
                if why.contains("in use by another process") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

fn open(dir: &Path, node: NodeId) -> (Disk, LogStore, Machine) {
    let disk = open_after_close(dir, &identity(node)).expect("the store opens");
    let log = LogStore::load(disk.clone()).expect("the log loads");
    let machine = Machine::load(disk.clone()).expect("the machine loads");
    (disk, log, machine)
}

/// Appends and waits until the entries are durable.
async fn append(log: &LogStore, entries: Vec<Entry<TypeConfig>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = Box::new(move |result| {
        let _ = tx.send(result);
    });
    log.append_then(entries, done).expect("append");
    rx.await.expect("acknowledged").expect("durable");
}

fn command(op: crate::sharing::SignedOp) -> Command {
    Command {
        at_ms: unix_millis(),
        op,
        sealed: None,
    }
}

fn register(who: &Credential, port: u16) -> Command {
    command(who.sign(UserOp::Register {
        addr: format!("127.0.0.1:{port}"),
        lease_ms: 3000,
    }))
}

fn normal(index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Batch(vec![command])),
    }
}

fn members() -> Membership<NodeId, EmptyNode> {
    Membership::new(vec![[1, 2, 3].into()], None)
}

fn state_of(machine: &Machine) -> State {
    machine.state().read().expect("state lock").clone()
}

#[tokio::test]
async fn a_reopened_store_has_its_log_vote_applied_id_and_records() {
    let dir = TempDir::new().unwrap();
    let alice = Credential::derive("alice", "pw").unwrap();
    let bob = Credential::derive("bob", "pw").unwrap();
    let (disk, mut log, mut machine) = open(dir.path(), 1);
    assert!(log.is_fresh().unwrap());

    let entries = vec![
        membership_ent::<TypeConfig>(1, 1, 1, vec![[1, 2, 3].into()]),
        normal(2, register(&alice, 7001)),
        normal(3, register(&bob, 7002)),
        normal(4, command(alice.sign(UserOp::Unregister))),
        blank_ent::<TypeConfig>(1, 1, 5),
        blank_ent::<TypeConfig>(1, 1, 6),
    ];
    append(&log, entries.clone()).await;
    let replies = machine.apply(entries[..3].to_vec()).await.unwrap();
    // The membership entry has no commands; each of the others has one.
    assert_eq!(replies, vec![vec![], vec![Reply::Done], vec![Reply::Done]]);
    let replies = machine.apply(entries[3..4].to_vec()).await.unwrap();
    assert_eq!(replies, vec![vec![Reply::Done]]);
    log.purge(log_id(1, 1, 1)).await.unwrap();
    log.truncate(log_id(1, 1, 6)).await.unwrap();
    // The vote is written after the purge and the truncation, in order: once it is durable,
    // so are they.
    let vote = Vote::new_committed(1, 1);
    log.save_vote(&vote).await.unwrap();
    let state = state_of(&machine);
    assert_eq!(state.users["alice"].addr, None, "alice unregistered");
    assert_eq!(state.users["bob"].addr.as_deref(), Some("127.0.0.1:7002"));
    drop((disk, log, machine));

    let (_disk, mut log, mut machine) = open(dir.path(), 1);
    assert!(!log.is_fresh().unwrap());
    let kept = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(
        kept,
        entries[1..5].to_vec(),
        "entries 2..=5 survive the purge and truncation"
    );
    let log_state = log.get_log_state().await.unwrap();
    assert_eq!(log_state.last_purged_log_id, Some(log_id(1, 1, 1)));
    assert_eq!(log_state.last_log_id, Some(log_id(1, 1, 5)));
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let (applied, membership) = machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 4)));
    assert_eq!(
        membership,
        StoredMembership::new(Some(log_id(1, 1, 1)), members())
    );
    assert_eq!(state_of(&machine), state, "the users' records came back");
}

#[test]
fn a_data_dir_of_another_node_or_cluster_is_refused_by_name() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path(), 1));

    let other_node = open_after_close(dir.path(), &identity(2)).err();
    match other_node {
        Some(Error::Config(why)) => {
            assert!(why.contains("belongs to node 1, not node 2"), "{why}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let stranger = Identity {
        node: 1,
        cluster: [8; 32],
    };
    match open_after_close(dir.path(), &stranger).err() {
        Some(Error::Config(why)) => {
            assert!(why.contains("node 1 of another cluster"), "{why}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    open_after_close(dir.path(), &identity(1)).expect("the refusals changed nothing");
}

#[test]
fn a_damaged_file_is_a_storage_error() {
    for len in [1, 17, 512, 4096, 64 * 1024] {
        let dir = TempDir::new().unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ len as u64;
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(dir.path().join(FILE_NAME), garbage).unwrap();
        match Disk::open(dir.path(), &identity(1)) {
            Err(Error::Storage(why)) => assert!(why.contains(FILE_NAME), "{why}"),
            Err(other) => panic!("{len} bytes of garbage: expected a storage error, got {other}"),
            Ok(_) => panic!("{len} bytes of garbage opened as a store"),
        }
    }
}

#[tokio::test]
async fn an_installed_snapshot_gives_the_same_state() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let alice = Credential::derive("alice", "pw").unwrap();
    let bob = Credential::derive("bob", "pw").unwrap();
    let carol = Credential::derive("carol", "pw").unwrap();
    let (_disk_a, _log_a, mut a) = open(dir_a.path(), 1);
    let (disk_b, log_b, mut b) = open(dir_b.path(), 2);
    a.apply(vec![
        membership_ent::<TypeConfig>(1, 1, 1, vec![[1, 2, 3].into()]),
        normal(2, register(&alice, 7001)),
        normal(3, register(&bob, 7002)),
    ])
    .await
    .unwrap();
    // The follower had a record the snapshot does not: installing replaces everything.
    b.apply(vec![normal(1, register(&carol, 7003))])
        .await
        .unwrap();

    let snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 3)));
    let mut received = b.begin_receiving_snapshot().await.unwrap();
    *received = *snapshot.snapshot;
    b.install_snapshot(&snapshot.meta, received).await.unwrap();

    let state = state_of(&a);
    assert_eq!(state.users.len(), 2);
    assert_eq!(state_of(&b), state);
    assert_eq!(
        b.applied_state().await.unwrap(),
        a.applied_state().await.unwrap()
    );
    let current = b
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a current snapshot");
    assert_eq!(current.meta, snapshot.meta);

    drop((disk_b, log_b, b));
    let (_disk_b, _log_b, mut b) = open(dir_b.path(), 2);
    assert_eq!(state_of(&b), state, "the installed records are durable");
    assert_eq!(b.applied_state().await.unwrap().0, Some(log_id(1, 1, 3)));
}
