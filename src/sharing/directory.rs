//! The directory: every user with their public key, whether they are online, where, since
//! when, and what they share.
//!
//! Online is a lease: a registration holds until `lease_until_ms`, a time set from the
//! proposing node's clock when the registration was committed, and the peer renews it by
//! registering again. Whether a user is online is decided when the directory is read, against
//! the reader's clock, so nothing has to be written for a lease to run out.
//!
//! Implementation caveats: leases compare clocks of different nodes; on one machine they are
//! the same clock, across hosts they need NTP-level agreement (a skew of `s` moves every
//! lease's end by `s`).

use serde::{Deserialize, Serialize};

use super::account::PublicKey;
use super::Reply;

/// The longest lease a peer may ask for.
pub const MAX_LEASE_MS: u64 = 5_000;
/// The longest peer address recorded.
pub const MAX_ADDR_LEN: usize = 256;
/// How long a node tries to reach a peer's registered address when the peer asks it to (its
/// first registration, and the first after an outage): a peer others cannot reach says so.
pub const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One user's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The key recorded at the first registration.
    pub key: PublicKey,
    /// The last sequence number accepted from this user.
    pub last_seq: u64,
    /// The last few operations applied, with their answers: a retry of any of them gets the
    /// same answer and changes nothing, not refused as a replay (a retry after an ambiguous
    /// failure may arrive after the user's next operation was accepted).
    pub recent: Vec<Recent>,
    /// Where the user's peer was last registered (`None` after a clean exit).
    pub addr: Option<String>,
    /// When the registration runs out, in Unix milliseconds.
    pub lease_until_ms: u64,
    /// When the user was last heard from, in Unix milliseconds.
    pub last_seen_ms: u64,
    /// What the user shares.
    pub shared: Vec<SharedImage>,
}

/// One operation a user record remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    /// Its sequence number.
    pub seq: u64,
    /// Its digest ([`SignedOp::digest`](super::SignedOp::digest)).
    pub digest: [u8; 32],
    /// The answer it got.
    pub reply: Reply,
}

/// An image a user shares, as the directory lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedImage {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// One user as `GET /directory` shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The user's name.
    pub user: String,
    /// Their public key (hex), which signs their messages to other peers.
    pub key: String,
    /// Whether their lease holds now.
    pub online: bool,
    /// Their peer's address while online.
    pub addr: Option<String>,
    /// When they were last heard from, in Unix milliseconds.
    pub last_seen: u64,
    /// What they share.
    pub shared: Vec<SharedImage>,
}

/// How many accepted operations a record remembers for retries.
pub const RECENT_OPS: usize = 16;

impl UserRecord {
    /// A fresh record of an account with `key`.
    pub fn new(key: PublicKey) -> UserRecord {
        UserRecord {
            key,
            last_seq: 0,
            recent: Vec::new(),
            addr: None,
            lease_until_ms: 0,
            last_seen_ms: 0,
            shared: Vec::new(),
        }
    }

    /// The answer `(seq, digest)` got, if it is one of the operations recently applied.
    pub fn answer(&self, seq: u64, digest: &[u8; 32]) -> Option<&Reply> {
        self.recent
            .iter()
            .find(|r| r.seq == seq && &r.digest == digest)
            .map(|r| &r.reply)
    }

    /// Records an applied operation and its answer (forgetting the oldest beyond
    /// [`RECENT_OPS`]).
    pub fn remember(&mut self, seq: u64, digest: [u8; 32], reply: Reply) {
        self.last_seq = self.last_seq.max(seq);
        if self.recent.len() >= RECENT_OPS {
            self.recent.remove(0);
        }
        self.recent.push(Recent { seq, digest, reply });
    }

    /// Whether the user's lease holds at `now_ms`.
    pub fn online(&self, now_ms: u64) -> bool {
        self.addr.is_some() && self.lease_until_ms > now_ms
    }

    /// The record as the directory shows it at `now_ms`.
    pub fn entry(&self, user: &str, now_ms: u64) -> DirectoryEntry {
        let online = self.online(now_ms);
        DirectoryEntry {
            user: user.to_string(),
            key: hex::encode(self.key),
            online,
            addr: if online { self.addr.clone() } else { None },
            last_seen: self.last_seen_ms,
            shared: self.shared.clone(),
        }
    }
}
