//! The client's table of requests waiting for their one reply: who waits, which replies were
//! decisive, which came late or twice, and which node carries a request whose connection closed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::Encrypted;
use crate::ids::{NodeId, RequestId};
use crate::wire::framing::{decode, encode};
use crate::wire::request::{EncryptReply, EncryptRequest, Outcome, Refusal};
use crate::{Error, Result};

struct Waiter {
    done: Option<oneshot::Sender<Result<Encrypted>>>,
    /// Whether a decisive reply (not "unavailable") came.
    answered: bool,
    unavailable: usize,
    /// The encoded request, re-sent to a node whose connection comes back.
    bytes: Bytes,
    /// The nodes whose connections closed while the request waited: had one of them won
    /// it, its reply is lost ([`EncryptRequest::resent_after`]).
    closed: Vec<NodeId>,
    /// The one node that holds the request marked with `closed`: every node that got the mark
    /// would serve it again, so one carries it at a time.
    carrier: Option<NodeId>,
}

#[derive(Default)]
pub(super) struct Book {
    waiting: HashMap<RequestId, Waiter>,
    /// Finished requests that had a decisive reply: another one is a duplicate.
    pub(super) answered: HashSet<RequestId>,
    /// Finished requests whose caller gave up without one: the first one now is late.
    abandoned: HashSet<RequestId>,
    pub(super) duplicates: u64,
    pub(super) late: u64,
}

impl Book {
    /// Registers a request; the receiver gets its outcome.
    pub(super) fn wait_for(
        &mut self,
        id: RequestId,
        bytes: Bytes,
    ) -> oneshot::Receiver<Result<Encrypted>> {
        let (done, answer) = oneshot::channel();
        let waiter = Waiter {
            done: Some(done),
            answered: false,
            unavailable: 0,
            bytes,
            closed: Vec::new(),
            carrier: None,
        };
        self.waiting.insert(id, waiter);
        answer
    }

    /// Counts a decisive reply that came after the caller had its outcome: a duplicate if the
    /// request had a decisive reply before, else late.
    fn extra_reply(&mut self, answered_before: bool) {
        if answered_before {
            self.duplicates += 1;
        } else {
            self.late += 1;
        }
    }

    /// The requests a new connection to `node` carries: every one still waiting, except
    /// those a closed connection marked that another connected node carries (`up` says
    /// which are connected). The marked ones it takes, `node` carries from now on.
    pub(super) fn for_new_connection(
        &mut self,
        node: NodeId,
        up: impl Fn(NodeId) -> bool,
    ) -> Vec<Bytes> {
        let mut out = Vec::new();
        for waiter in self.waiting.values_mut().filter(|w| w.done.is_some()) {
            if waiter.closed.is_empty() {
                out.push(waiter.bytes.clone());
            } else if !waiter.carrier.is_some_and(|c| c != node && up(c)) {
                if let Some(marked) = marked(&waiter.bytes, &waiter.closed) {
                    waiter.carrier = Some(node);
                    out.push(marked);
                }
            }
        }
        out
    }

    /// After the connection to `gone` closed: every request still waiting is marked with it
    /// and given to its carrier if that one is still connected, else to `next`, the first
    /// other node that is (none: it waits for a connection to come back). Every reply that
    /// came over the closed connection was delivered before: its reader has ended.
    pub(super) fn connection_closed<'a>(
        &mut self,
        gone: NodeId,
        next: Option<&'a LinkHandle>,
        link: impl Fn(NodeId) -> Option<&'a LinkHandle>,
    ) {
        for waiter in self.waiting.values_mut().filter(|w| w.done.is_some()) {
            if !waiter.closed.contains(&gone) {
                waiter.closed.push(gone);
            }
            let carrier = waiter
                .carrier
                .filter(|&c| c != gone)
                .and_then(&link)
                .filter(|l| l.up.load(Ordering::Relaxed))
                .or(next);
            waiter.carrier = None;
            let (Some(carrier), Some(marked)) = (carrier, marked(&waiter.bytes, &waiter.closed))
            else {
                continue;
            };
            // A full queue is a node that is not reading: the request waits for its deadline.
            if carrier
                .queue
                .upgrade()
                .is_some_and(|q| q.try_send(marked).is_ok())
            {
                waiter.carrier = Some(carrier.id);
            }
        }
    }

    /// Waits again for a request every node refused for now, to be sent again; None if a
    /// decisive reply came meanwhile (it counted as late) or the request is not waiting.
    pub(super) fn again(&mut self, id: &str) -> Option<oneshot::Receiver<Result<Encrypted>>> {
        let waiter = self.waiting.get_mut(id)?;
        if waiter.answered || waiter.done.is_some() {
            return None;
        }
        let (done, answer) = oneshot::channel();
        waiter.done = Some(done);
        waiter.unavailable = 0;
        Some(answer)
    }

    /// Retires a request whose caller stopped waiting.
    pub(super) fn finish(&mut self, id: RequestId) {
        if self.waiting.remove(&id).is_some_and(|w| w.answered) {
            self.answered.insert(id);
        } else {
            self.abandoned.insert(id);
        }
    }
}

/// Records a reply: the first decisive one answers the waiter (or is late, if the caller gave up
/// first), later ones are duplicates.
pub(super) fn deliver(book: &Mutex<Book>, reply: EncryptReply, nodes: usize) {
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
        if decisive && book.abandoned.remove(&id) {
            book.late += 1;
            book.answered.insert(id);
        } else if decisive && book.answered.contains(&id) {
            book.duplicates += 1;
        }
        return;
    };
    let Some(done) = waiter.done.take() else {
        // The caller has its outcome and has not retired the request yet.
        if decisive {
            let answered_before = std::mem::replace(&mut waiter.answered, true);
            book.extra_reply(answered_before);
        }
        return;
    };
    waiter.answered = decisive;
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
        Outcome::Refused { message, .. } => Err(Error::passed_on(Error::InvalidInput, message)),
    };
    let _ = done.send(result);
}

/// The encoded request `bytes`, marked as re-sent after the connections to `closed` closed.
fn marked(bytes: &[u8], closed: &[NodeId]) -> Option<Bytes> {
    let mut request: EncryptRequest = decode(bytes).ok()?;
    request.resent_after = closed.to_vec();
    encode(&request).ok()
}

/// A node's request queue and connection state, as every link task sees it.
pub(super) struct LinkHandle {
    pub(super) id: NodeId,
    pub(super) queue: mpsc::WeakSender<Bytes>,
    /// Whether its connection is up.
    pub(super) up: Arc<AtomicBool>,
}
