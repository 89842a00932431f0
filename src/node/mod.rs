//! A node process's async shell: sockets, timers and tasks around the synchronous core in
//! [`crate::cluster`]. The shell moves bytes; the core decides.
//!
//! How the parts fit. [`run`] starts a node's tasks: the [`accept`] loop (bounded handshakes,
//! then a member's link or a client connection, see [`slots`]), the [`link`]s to the other
//! nodes, the [`http`] API and the [`shell`]'s node loop, which owns the core, feeds it
//! messages and ticks and carries out its outputs. Encryption jobs go to the bounded worker
//! [`pool`], which also measures the load the election and dispatch compare. Every payload a
//! node holds takes its size from the [`budget`]. The node loop publishes its [`status`] and
//! prints its [`events`].
//!
//! Implementation caveats: the node loop is one task that owns the core; links are one-way
//! (each node dials every other), and while a link is down its envelopes are dropped, which the
//! protocol tolerates; its commits are kept and written once it is up again ([`link`]).

pub mod accept;
pub mod budget;
pub mod cli;
pub mod desk;
pub mod events;
pub mod http;
pub mod link;
pub mod pool;
pub mod shell;
pub mod slots;
pub mod status;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{info, warn};

use std::collections::BTreeMap;

use crate::cluster::message::NodeState;
use crate::cluster::node::{Node, NodeConfig};
use crate::codec::seal::SealKey;
use crate::config::{ClusterConfig, Dispatch};
use crate::ids::NodeId;
use crate::node::budget::Budget;
use crate::node::link::link;
use crate::node::pool::Pool;
use crate::node::slots::{Bounded, MAX_HTTP_CONNECTIONS};
use crate::store::{Silence, Store};
use crate::wire::handshake::{LinkKind, MemberAuth};
use crate::{Error, Result};

use self::accept::accept_loop;
use self::shell::{Input, Shell, Wiring};
use self::status::initial_status;

/// How often the node loop ticks the core.
pub const TICK: Duration = Duration::from_millis(10);

pub use crate::node::link::HANDSHAKE_TIMEOUT;

/// The longest a node waits, once told to stop, for its consensus engine to stop: the node's
/// whole exit is bounded by it (its tasks are aborted, blocking threads are not waited for).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Inputs queued for the node loop.
const INPUT_QUEUE: usize = 8192;

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

    let auth = MemberAuth::new(&config.secret);
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
            static_split: config.dispatch == Dispatch::StaticSplit,
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
    for member in config.nodes.iter().filter(|n| n.id != id) {
        for (kind, links, counter) in [
            (LinkKind::Node, &mut links, &reconnects),
            (LinkKind::Data, &mut data_links, &data_reconnects),
        ] {
            let (handle, task) = link(
                kind,
                id,
                member.id,
                member.addr,
                auth.clone(),
                Arc::clone(counter),
            );
            links.insert(member.id, handle);
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
    let shell = Shell::new(Wiring {
        core,
        budget: budget.clone(),
        links,
        data_links,
        pool,
        inputs: input_tx.clone(),
        status: status_tx,
        reconnects,
    });
    tasks.spawn(shell.run(input_rx));
    tasks.spawn(http::serve(
        Bounded::new(http_listener, MAX_HTTP_CONNECTIONS),
        http::Api {
            node: id,
            budget,
            status: status_rx,
            inputs: input_tx,
            store: store.clone(),
            desk: desk::Desk::new(
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

/// Once a second: after a burst of big payloads, once none has been in flight for a second
/// (the last reply written out, its buffers freed), gives the allocator's free memory back to
/// the system, so a node returns near its idle size.
async fn give_back_memory(budget: Budget) -> Result<()> {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut drained = false;
    loop {
        every.tick().await;
        if drained && budget.in_use() == 0 {
            let _ = tokio::task::spawn_blocking(crate::setup::give_back_free_memory).await;
        }
        drained = budget.drained_after_load();
    }
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
