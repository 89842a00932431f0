//! A node's byte budget for request payloads in flight (issue 31).
//!
//! Every payload a node holds for a request (an HTTP upload while its body is read and until
//! it is answered, a copy forwarded by another node until the request is served) takes its size
//! from one [`Budget`]. What would exceed it is refused at once, before any work is done on
//! it: `POST /encrypt` answers 503 with `Retry-After`, a forwarded copy is not held (the node
//! then declines the request if it is chosen, and another serves it). Whatever was accepted
//! holds its share until it is answered, so the node's memory for payloads stays bounded by
//! the budget whatever clients send.
//!
//! Alternatives: a bound on the count of requests (what the queues had: 30 requests of 27 MB
//! are 800 MB), or waiting for room (a flood then fills memory with waiting bodies and answers
//! late instead of at once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ids::NodeId;

/// Bytes admitted after which a node, once no payload is in flight, gives its free memory
/// back to the system ([`Budget::drained_after_load`]): the allocator keeps up to 256 MiB
/// free for speed (`cli::tune_allocator`), which after a flood of huge uploads left a node at
/// 369 MB instead of its idle 12 MB.
pub const GIVE_BACK_AFTER_BYTES: u64 = 32 * 1024 * 1024;

/// The byte budget shared by every holder of request payloads in one node.
#[derive(Clone, Debug)]
pub struct Budget {
    room: Arc<Semaphore>,
    capacity: usize,
    refused: Arc<AtomicU64>,
    since_give_back: Arc<AtomicU64>,
}

/// A share of the budget: given back when dropped.
#[derive(Debug)]
pub struct Share {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `capacity` bytes (at least one byte).
    pub fn new(capacity: usize) -> Budget {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Budget {
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
            refused: Arc::new(AtomicU64::new(0)),
            since_give_back: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Takes `bytes` of the budget if there is room for them now; else counts a refusal.
    pub fn try_take(&self, bytes: usize) -> Option<Share> {
        let bytes = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        match Arc::clone(&self.room).try_acquire_many_owned(bytes) {
            Ok(permit) => {
                self.since_give_back
                    .fetch_add(u64::from(bytes), Ordering::Relaxed);
                Some(Share { _permit: permit })
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The budget, in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> usize {
        self.capacity - self.room.available_permits().min(self.capacity)
    }

    /// The sentence that refuses `wanted` bytes at node `node` for want of room.
    pub fn busy(&self, node: NodeId, wanted: usize) -> String {
        format!(
            "node {node} is busy: {} MB of payloads are in flight and {} MB more would pass its \
             budget of {} MB; retry in a second, or send it to another node",
            self.in_use() >> 20,
            wanted.div_ceil(1 << 20),
            self.capacity() >> 20
        )
    }

    /// Whether no payload is in flight now and at least [`GIVE_BACK_AFTER_BYTES`] were
    /// admitted since this last said yes: the moment to give free memory back.
    pub fn drained_after_load(&self) -> bool {
        self.in_use() == 0
            && self.since_give_back.load(Ordering::Relaxed) >= GIVE_BACK_AFTER_BYTES
            && self.since_give_back.swap(0, Ordering::Relaxed) >= GIVE_BACK_AFTER_BYTES
    }

    /// Payloads refused so far for want of room.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_refused_beyond_the_budget_and_given_back_when_dropped() {
        let budget = Budget::new(100);
        let a = budget.try_take(60).expect("room for 60");
        assert_eq!(budget.in_use(), 60);
        assert!(budget.try_take(41).is_none(), "60 + 41 > 100");
        let b = budget.try_take(40).expect("exactly full");
        assert_eq!((budget.in_use(), budget.refused()), (100, 1));
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(budget.try_take(60).is_some());
        drop(b);
        assert!(
            budget.try_take(usize::MAX).is_none(),
            "more than the budget never fits"
        );
        assert_eq!(budget.refused(), 2);
    }

    #[test]
    fn drained_after_load_says_yes_once_per_load_and_only_when_nothing_is_in_flight() {
        let budget = Budget::new(64 << 20);
        let a = budget.try_take(20 << 20).unwrap();
        let b = budget.try_take(20 << 20).unwrap();
        assert!(!budget.drained_after_load(), "in flight");
        drop((a, b));
        assert!(budget.drained_after_load());
        assert!(!budget.drained_after_load(), "once");
        drop(budget.try_take(1 << 20));
        assert!(!budget.drained_after_load(), "a small load is not worth it");
    }
}
