//! The state machine: [`State`] in memory, applied in log order, and each applied batch's
//! changed rows written with its last log id in one transaction (without its own fsync: see
//! [`disk`](super::disk)).
//!
//! A snapshot is the whole [`State`] (postcard) with its log id and membership; building one
//! also stores it in the file, so a follower far behind can be sent it after a restart.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::disk::{Disk, Write};
use super::log::io_error;
use super::TypeConfig;
use crate::ids::NodeId;
use crate::sharing::{Reply, State};

type StoreResult<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, openraft::EmptyNode>;

/// What the file says was applied last.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    log_id: Option<LogId<NodeId>>,
    membership: Membership,
}

/// A snapshot as stored and sent.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::EmptyNode>,
    data: Vec<u8>,
}

/// The state machine; the [`State`] is shared with readers.
pub struct Machine {
    disk: Disk,
    state: Arc<RwLock<State>>,
    applied: Applied,
    snapshots_built: u64,
}

fn sm_error(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    io_error(ErrorSubject::StateMachine, verb, e)
}

impl Machine {
    /// Loads the applied state from disk.
    pub(super) fn load(disk: Disk) -> crate::Result<Machine> {
        let bad = |what: &str, e: postcard::Error| {
            crate::Error::Storage(format!(
                "{what} in {} is unreadable: {e}",
                disk.path().display()
            ))
        };
        let applied = match disk.get_meta("applied")? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| bad("the applied state", e))?,
            None => Applied::default(),
        };
        let mut state = State::default();
        for (key, bytes) in disk.rows()? {
            state.load_row(&key, &bytes).map_err(|e| {
                crate::Error::Storage(format!("{e} (in {})", disk.path().display()))
            })?;
        }
        disk.send(Write::AppliedFloor(applied.log_id.map_or(0, |l| l.index)));
        Ok(Machine {
            disk,
            state: Arc::new(RwLock::new(state)),
            applied,
            snapshots_built: 0,
        })
    }

    /// The state, for readers.
    pub(super) fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }

    /// Writes changed rows with the applied log id; an installed snapshot (`clear_rows`) is
    /// made durable at once, applied entries ride on the next durable commit.
    async fn persist(
        &self,
        rows: Vec<(String, Option<Vec<u8>>)>,
        clear_rows: bool,
        snapshot: Option<Vec<u8>>,
    ) -> StoreResult<()> {
        let mut meta = vec![(
            "applied",
            postcard::to_stdvec(&self.applied).map_err(|e| sm_error(ErrorVerb::Write, e))?,
        )];
        if let Some(snapshot) = snapshot {
            let index = self.applied.log_id.map_or(0, |l| l.index);
            meta.push(("snapshot", snapshot));
            meta.push((super::disk::SNAPSHOT_INDEX, index.to_be_bytes().to_vec()));
        }
        let (done, wait) = oneshot::channel();
        self.disk.send(Write::Rows {
            durable: clear_rows,
            applied: self.applied.log_id.map(|l| l.index),
            rows,
            clear_rows,
            meta,
            done,
        });
        self.disk
            .wait(wait)
            .await
            .map_err(|e| sm_error(ErrorVerb::Write, e))
    }

    fn snapshot_of(&self, data: Vec<u8>) -> (SnapshotMeta<NodeId, openraft::EmptyNode>, Vec<u8>) {
        let id = match self.applied.log_id {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, self.snapshots_built),
            None => format!("empty-{}", self.snapshots_built),
        };
        (
            SnapshotMeta {
                last_log_id: self.applied.log_id,
                last_membership: self.applied.membership.clone(),
                snapshot_id: id,
            },
            data,
        )
    }
}

/// Builds a snapshot from a copy of the state taken when the builder was made.
pub struct Builder {
    disk: Disk,
    meta: SnapshotMeta<NodeId, openraft::EmptyNode>,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let stored = StoredSnapshot {
            meta: self.meta.clone(),
            data: self.data.clone(),
        };
        let bytes = postcard::to_stdvec(&stored).map_err(|e| sm_error(ErrorVerb::Write, e))?;
        let index = self.meta.last_log_id.map_or(0, |l| l.index);
        let (done, wait) = oneshot::channel();
        self.disk.send(Write::Snapshot(index, bytes, done));
        self.disk
            .wait(wait)
            .await
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Vec<Reply>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut changed = std::collections::BTreeSet::new();
        {
            let mut state = self.state.write().expect("state lock");
            for entry in entries {
                self.applied.log_id = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => replies.push(Vec::new()),
                    EntryPayload::Normal(batch) => {
                        let mut answers = Vec::with_capacity(batch.0.len());
                        for command in &batch.0 {
                            let (reply, rows) = state.apply(command);
                            changed.extend(rows);
                            answers.push(reply);
                        }
                        replies.push(answers);
                    }
                    EntryPayload::Membership(membership) => {
                        self.applied.membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        replies.push(Vec::new());
                    }
                }
            }
        }
        let rows = {
            let state = self.state.read().expect("state lock");
            changed
                .into_iter()
                .map(|key| (key.encode(), state.row(&key)))
                .collect()
        };
        self.persist(rows, false, None).await?;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        let data = postcard::to_stdvec(&*self.state.read().expect("state lock"))
            .expect("the state serializes");
        let (meta, data) = self.snapshot_of(data);
        Builder {
            disk: self.disk.clone(),
            meta,
            data,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::EmptyNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let state: State = postcard::from_bytes(&data).map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let rows = state
            .rows()
            .into_iter()
            .map(|(key, row)| (key, Some(row)))
            .collect();
        self.applied = Applied {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let bytes = postcard::to_stdvec(&stored).map_err(|e| sm_error(ErrorVerb::Write, e))?;
        *self.state.write().expect("state lock") = state;
        self.persist(rows, true, Some(bytes)).await
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let read = |e: String| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let Some(bytes) = self
            .disk
            .get_meta("snapshot")
            .map_err(|e| read(e.to_string()))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot =
            postcard::from_bytes(&bytes).map_err(|e| read(e.to_string()))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
