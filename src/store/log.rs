//! The Raft log: every entry since the last purge in memory for reads, on disk for restarts.
//!
//! `append` puts the entries in the in-memory tail at once (openraft may read them back to
//! replicate before they are flushed) and queues them for the writer thread, whose commit
//! calls openraft's flush callback; the vote is durable before `save_vote` returns.
//! Truncations and purges go through the same ordered queue.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};

use super::disk::{Disk, Write};
use super::TypeConfig;
use crate::ids::NodeId;

type StoreResult<T> = std::result::Result<T, StorageError<NodeId>>;

/// The log store: a cheap handle (openraft clones one for its readers).
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
    tail: Arc<Mutex<Tail>>,
}

struct Tail {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
}

pub(super) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

impl LogStore {
    /// Loads the log from disk.
    pub(super) fn load(disk: Disk) -> crate::Result<LogStore> {
        let mut entries = BTreeMap::new();
        for (index, bytes) in disk.log_entries()? {
            let entry: Entry<TypeConfig> = postcard::from_bytes(&bytes).map_err(|e| {
                crate::Error::Storage(format!(
                    "log entry {index} in {} is unreadable: {e}",
                    disk.path().display()
                ))
            })?;
            entries.insert(index, entry);
        }
        let last_purged = match disk.get_meta("last_purged")? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| crate::Error::Storage(format!("last purged log id: {e}")))?,
            None => None,
        };
        Ok(LogStore {
            disk,
            tail: Arc::new(Mutex::new(Tail {
                entries,
                last_purged,
            })),
        })
    }

    /// `append` with a plain callback: `done` runs once the entries are durable (only openraft
    /// can make a `LogFlushed`, so the storage tests, typed with other node ids, call this).
    pub(super) fn append_then(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
        done: Box<dyn FnOnce(std::io::Result<()>) + Send>,
    ) -> std::result::Result<(), postcard::Error> {
        let mut rows = Vec::new();
        {
            let mut tail = self.tail.lock().expect("log tail lock");
            for entry in entries {
                let bytes = postcard::to_stdvec(&entry)?;
                rows.push((entry.log_id.index, bytes));
                tail.entries.insert(entry.log_id.index, entry);
            }
        }
        self.disk.send(Write::Append(rows, done));
        Ok(())
    }

    /// Whether nothing was ever written (no entry, no purge, no vote): a fresh store.
    pub(super) fn is_fresh(&self) -> crate::Result<bool> {
        let tail = self.tail.lock().expect("log tail lock");
        Ok(tail.entries.is_empty()
            && tail.last_purged.is_none()
            && self.disk.get_meta("vote")?.is_none())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let tail = self.tail.lock().expect("log tail lock");
        Ok(tail.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let tail = self.tail.lock().expect("log tail lock");
        let last = tail.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: tail.last_purged,
            last_log_id: last.or(tail.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let bytes = postcard::to_stdvec(vote)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.disk
            .put_meta("vote", bytes)
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        let read = |e: String| io_error(ErrorSubject::Vote, ErrorVerb::Read, e);
        match self
            .disk
            .get_meta("vote")
            .map_err(|e| read(e.to_string()))?
        {
            Some(bytes) => Ok(Some(
                postcard::from_bytes(&bytes).map_err(|e| read(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_then(
            entries,
            Box::new(move |result| callback.log_io_completed(result)),
        )
        .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.tail
            .lock()
            .expect("log tail lock")
            .entries
            .retain(|&index, _| index < log_id.index);
        self.disk.send(Write::Truncate(log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let bytes = postcard::to_stdvec(&Some(log_id))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        {
            let mut tail = self.tail.lock().expect("log tail lock");
            tail.entries.retain(|&index, _| index > log_id.index);
            tail.last_purged = Some(log_id);
        }
        self.disk.send(Write::Purge(log_id.index, bytes));
        Ok(())
    }
}
