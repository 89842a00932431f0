//! The node's one redb file and the one thread that writes it.
//!
//! Tables: `meta` (identity, vote, last purged log id, applied state, current snapshot),
//! `log` (index -> entry) and `users` (name -> record). Every write goes through [`Disk`]'s
//! writer thread, which takes everything queued, writes it in ONE transaction, commits it
//! durably (fsync) and then acknowledges each item: many appends and applies share one fsync
//! (group commit), and writes reach the file in the order they were sent. A batch made only of
//! applied state rows is committed without fsync: the entries it applies are already durable
//! in the log, a crash loses only a suffix of such commits (redb keeps commit order), and the
//! state machine applies those entries again on restart.
//!
//! Implementation caveats: the writer acknowledges an item only after its transaction
//! committed; a failed commit is reported to every item of the batch, and openraft then stops
//! the node (a store it cannot write is not one it may vote with).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::ids::NodeId;
use crate::{Error, Result};

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// The meta key of the stored snapshot's last index (8 bytes, big-endian).
pub(super) const SNAPSHOT_INDEX: &str = "snapshot_index";
/// The file's name inside the node's data dir.
pub const FILE_NAME: &str = "store.redb";
/// redb's page cache, capped (the default is 1 GiB).
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// The most items one transaction takes from the queue.
const MAX_BATCH: usize = 1024;

/// Which node and which cluster a data dir belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Identity {
    pub node: NodeId,
    pub cluster: [u8; 32],
}

/// Something to write, with how to acknowledge it.
pub(super) enum Write {
    /// Log entries (index, encoded entry); `done` runs once they are durable.
    Append(
        Vec<(u64, Vec<u8>)>,
        Box<dyn FnOnce(std::io::Result<()>) + Send>,
    ),
    /// Delete log entries from this index on.
    Truncate(u64),
    /// Delete log entries up to and including this index; record `last_purged`. Held back
    /// until rows applied up to that index are written (openraft purges behind an installed
    /// snapshot before the state machine has written it).
    Purge(u64, Vec<u8>),
    /// The index the rows on disk were applied up to when the store opened.
    AppliedFloor(u64),
    /// A built snapshot (its last index, the stored bytes); skipped if the file already holds
    /// a snapshot as new (a build can finish after a newer snapshot was installed).
    Snapshot(u64, Vec<u8>, Ack),
    /// A meta key's value.
    Meta(&'static str, Vec<u8>, Ack),
    /// Changed record rows (`None` deletes), plus meta values, in one transaction; `durable`
    /// false lets the commit skip its fsync (the next durable commit carries it to disk).
    Rows {
        durable: bool,
        applied: Option<u64>,
        rows: Vec<(String, Option<Vec<u8>>)>,
        clear_rows: bool,
        meta: Vec<(&'static str, Vec<u8>)>,
        done: Ack,
    },
}

/// Acknowledgement of a durable write.
pub(super) type Ack = oneshot::Sender<std::result::Result<(), String>>;

/// Handle to the writer thread and the database (for reads).
#[derive(Clone)]
pub(super) struct Disk {
    db: Arc<Database>,
    queue: std::sync::mpsc::Sender<Write>,
    path: PathBuf,
}

impl Disk {
    /// Opens (or creates) the file in `dir`, checks that it belongs to `identity`, and starts
    /// the writer thread.
    pub fn open(dir: &Path, identity: &Identity) -> Result<Disk> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!("cannot create the data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Config(format!(
                    "the store {} is in use by another process (is node {} already running?)",
                    path.display(),
                    identity.node
                )),
                e => Error::Storage(format!(
                    "cannot open the store {}: {e} (the file is damaged or not a store: move it away to start this node empty; its members then send it their state)",
                    path.display()
                )),
            })?;
        let db = Arc::new(db);
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            txn.open_table(LOG).map_err(storage)?;
            txn.open_table(RECORDS).map_err(storage)?;
            let found = meta
                .get("identity")
                .map_err(storage)?
                .map(|v| postcard::from_bytes::<Identity>(v.value()));
            match found {
                None => {
                    let bytes = postcard::to_stdvec(identity).expect("identity serializes");
                    meta.insert("identity", bytes.as_slice()).map_err(storage)?;
                }
                Some(Ok(found)) if found == *identity => {}
                Some(Ok(found)) if found.cluster == identity.cluster => {
                    return Err(Error::Config(format!(
                        "the data dir {} belongs to node {}, not node {}: give each node its own --data-dir",
                        dir.display(),
                        found.node,
                        identity.node
                    )))
                }
                Some(Ok(found)) => {
                    return Err(Error::Config(format!(
                        "the data dir {} belongs to node {} of another cluster (other secret or members): give this node a new --data-dir",
                        dir.display(),
                        found.node
                    )))
                }
                Some(Err(e)) => {
                    return Err(Error::Storage(format!(
                        "the store {} has an unreadable identity: {e}",
                        path.display()
                    )))
                }
            }
        }
        txn.commit().map_err(storage)?;
        let (queue, rx) = std::sync::mpsc::channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name(format!("store-writer-{}", identity.node))
            .spawn(move || writer(writer_db, rx))
            .map_err(Error::Io)?;
        Ok(Disk { db, queue, path })
    }

    /// Queues a write (the writer thread outlives every handle).
    pub fn send(&self, write: Write) {
        if let Err(std::sync::mpsc::SendError(write)) = self.queue.send(write) {
            fail(write, "the store's writer thread has stopped");
        }
    }

    /// Writes a meta value and waits until it is durable.
    pub async fn put_meta(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Write::Meta(key, value, done));
        self.wait(wait).await
    }

    /// Waits for an acknowledgement.
    pub async fn wait(
        &self,
        ack: oneshot::Receiver<std::result::Result<(), String>>,
    ) -> Result<()> {
        match ack.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Storage(format!("{}: {e}", self.path.display()))),
            Err(_) => Err(Error::Storage(
                "the store's writer thread has stopped".into(),
            )),
        }
    }

    /// A meta value.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(META).map_err(storage)?;
        Ok(table.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    /// Every log entry, in index order.
    pub fn log_entries(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        self.scan(LOG, |k| k)
    }

    /// Every record row (key as [`State::rows`](crate::sharing::State::rows) names it).
    pub fn rows(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.scan(RECORDS, |k| k.to_string())
    }

    /// Every row of `table`, with its key made owned by `key`.
    fn scan<K: redb::Key + 'static, T>(
        &self,
        table: TableDefinition<K, &[u8]>,
        key: impl Fn(K::SelfType<'_>) -> T,
    ) -> Result<Vec<(T, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(table).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            out.push((key(k.value()), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The file's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

fn fail(write: Write, why: &str) {
    match write {
        Write::Append(_, done) => done(Err(std::io::Error::other(why.to_string()))),
        Write::Meta(_, _, ack) | Write::Rows { done: ack, .. } | Write::Snapshot(_, _, ack) => {
            let _ = ack.send(Err(why.to_string()));
        }
        Write::Truncate(_) | Write::Purge(..) | Write::AppliedFloor(_) => {}
    }
}

/// The writer thread: one transaction per batch of queued writes.
fn writer(db: Arc<Database>, queue: std::sync::mpsc::Receiver<Write>) {
    // After a failed commit the file may lack a truncation or purge that later writes assume:
    // every later write fails too, and openraft stops this node's store.
    let mut failed: Option<String> = None;
    // Rows on disk are applied up to `applied`; purges beyond it wait in `held`.
    let (mut applied, mut held) = (0u64, Vec::new());
    while let Ok(first) = queue.recv() {
        if let Some(why) = &failed {
            fail(first, why);
            continue;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut batch_applied = applied;
        let mut kept = Vec::with_capacity(batch.len());
        for write in batch {
            match write {
                Write::AppliedFloor(index) => batch_applied = batch_applied.max(index),
                Write::Purge(upto, bytes) => held.push((upto, bytes)),
                Write::Rows {
                    applied: Some(index),
                    ..
                } => {
                    batch_applied = batch_applied.max(index);
                    kept.push(write);
                }
                other => kept.push(other),
            }
        }
        let mut batch = kept;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            held.drain(..).partition(|(upto, _)| *upto <= batch_applied);
        held = waiting;
        batch.extend(
            ready
                .into_iter()
                .map(|(upto, bytes)| Write::Purge(upto, bytes)),
        );
        if batch.is_empty() {
            applied = batch_applied;
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = write_batch(&db, &batch);
        if outcome.is_ok() {
            applied = batch_applied;
        }
        tracing::debug!(
            items = batch.len(),
            us = started.elapsed().as_micros() as u64,
            "store batch committed"
        );
        match outcome {
            Ok(()) => {
                for write in batch {
                    match write {
                        Write::Append(_, done) => done(Ok(())),
                        Write::Meta(_, _, ack)
                        | Write::Rows { done: ack, .. }
                        | Write::Snapshot(_, _, ack) => {
                            let _ = ack.send(Ok(()));
                        }
                        Write::Truncate(_) | Write::Purge(..) | Write::AppliedFloor(_) => {}
                    }
                }
            }
            Err(e) => {
                let why = format!("the store could not commit a write ({e}); it takes no more");
                tracing::error!("{why}");
                for write in batch {
                    fail(write, &why);
                }
                failed = Some(why);
            }
        }
    }
}

fn write_batch(db: &Database, batch: &[Write]) -> std::result::Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    let durable = batch
        .iter()
        .any(|w| !matches!(w, Write::Rows { durable: false, .. }));
    if !durable {
        txn.set_durability(redb::Durability::None)
            .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
    }
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        let mut records = txn.open_table(RECORDS)?;
        for write in batch {
            match write {
                Write::Append(entries, _) => {
                    for (index, bytes) in entries {
                        log.insert(*index, bytes.as_slice())?;
                    }
                }
                Write::Truncate(from) => log.retain_in(*from.., |_, _| false)?,
                Write::Purge(upto, last_purged) => {
                    log.retain_in(..=*upto, |_, _| false)?;
                    meta.insert("last_purged", last_purged.as_slice())?;
                }
                Write::Meta(key, value, _) => {
                    meta.insert(*key, value.as_slice())?;
                }
                Write::Snapshot(index, bytes, _) => {
                    let stored = meta
                        .get(SNAPSHOT_INDEX)?
                        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                        .map(u64::from_be_bytes);
                    if stored.is_none_or(|stored| stored < *index) {
                        meta.insert("snapshot", bytes.as_slice())?;
                        meta.insert(SNAPSHOT_INDEX, index.to_be_bytes().as_slice())?;
                    }
                }
                Write::AppliedFloor(_) => {}
                Write::Rows {
                    rows,
                    clear_rows,
                    meta: values,
                    ..
                } => {
                    if *clear_rows {
                        records.retain(|_, _| false)?;
                    }
                    for (name, row) in rows {
                        match row {
                            Some(bytes) => {
                                records.insert(name.as_str(), bytes.as_slice())?;
                            }
                            None => {
                                records.remove(name.as_str())?;
                            }
                        }
                    }
                    for (key, value) in values {
                        meta.insert(*key, value.as_slice())?;
                    }
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Disk {
        let identity = Identity {
            node: 1,
            cluster: [7; 32],
        };
        Disk::open(dir, &identity).unwrap()
    }

    async fn put_rows(disk: &Disk, applied: u64) {
        let (done, wait) = oneshot::channel();
        disk.send(Write::Rows {
            durable: false,
            applied: Some(applied),
            rows: vec![("u".into(), Some(vec![1]))],
            clear_rows: false,
            meta: vec![],
            done,
        });
        disk.wait(wait).await.unwrap();
    }

    #[tokio::test]
    async fn a_purge_beyond_the_applied_rows_waits_for_them() {
        // openraft purges behind an installed snapshot before the state machine writes it; a
        // crash in between must not leave a log purged past the rows on disk.
        let dir = tempfile::tempdir().unwrap();
        let disk = open(dir.path());
        disk.send(Write::AppliedFloor(0));
        let (tx, rx) = oneshot::channel();
        let entries = (1..=10).map(|i| (i, vec![i as u8])).collect();
        disk.send(Write::Append(
            entries,
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        ));
        assert!(rx.await.unwrap());
        disk.send(Write::Purge(10, vec![]));
        disk.put_meta("vote", vec![1]).await.unwrap();
        assert_eq!(
            disk.log_entries().unwrap().len(),
            10,
            "purged before the rows were written"
        );
        put_rows(&disk, 10).await;
        disk.put_meta("vote", vec![2]).await.unwrap();
        assert!(
            disk.log_entries().unwrap().is_empty(),
            "the held purge never ran"
        );
    }

    #[tokio::test]
    async fn a_snapshot_built_late_does_not_replace_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let disk = open(dir.path());
        for (index, bytes) in [(20, b"new".to_vec()), (10, b"old".to_vec())] {
            let (done, wait) = oneshot::channel();
            disk.send(Write::Snapshot(index, bytes, done));
            disk.wait(wait).await.unwrap();
        }
        assert_eq!(disk.get_meta("snapshot").unwrap().unwrap(), b"new");
    }
}
