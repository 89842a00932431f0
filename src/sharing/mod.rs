//! The cloud's sharing records: accounts and the directory (phase 2), as a deterministic state
//! machine that the consensus store applies in log order on every node.
//!
//! ```text
//! peer ── SignedOp ──> any node ──(forward)──> Raft leader ── Command { at_ms, op } ──> log
//!                                                               every node: State::apply
//! ```
//!
//! - [`account`]: the user's credential (a password-derived Ed25519 key) and signed operations.
//! - [`directory`]: who is online, where, and what they share.
//!
//! [`State::apply`] is the only way the records change. It is a pure function of the state
//! and the command: the time it uses is the proposer's clock, carried in the command, so every
//! node reaches the same state. It checks the key (first registration creates the account;
//! any other key is an impostor) and the sequence number (replays are refused; a retry of one
//! of the user's last 16 operations is answered as done without applying it twice). The signature is checked
//! once, by the node that takes the operation from the user ([`Store::write`]), before it
//! goes anywhere: only nodes, which hold the cluster secret, write the log, so a log entry
//! needs no second check on every node (Ed25519 verification was a third of a write's CPU).
//!
//! [`Store::write`]: crate::store::Store::write
//!
//! Implementation caveats: a user's record is never deleted (the directory keeps offline users
//! with their last-seen time); the number of users is bounded by [`MAX_USERS`].

pub mod account;
pub mod directory;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use account::{Credential, SignedOp, UserOp};
pub use directory::{DirectoryEntry, SharedImage, UserRecord};

use directory::{MAX_ADDR_LEN, MAX_LEASE_MS};

/// The most accounts the cloud keeps (each costs about 150 bytes plus what it shares).
pub const MAX_USERS: usize = 100_000;
/// How far ahead of the proposer's clock a sequence number may be, in microseconds.
const MAX_SEQ_AHEAD_US: u64 = 60_000_000;

/// One entry of the replicated log: a signed user operation and the time it was proposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The proposing node's clock, Unix milliseconds.
    pub at_ms: u64,
    /// What the user asked for.
    pub op: SignedOp,
}

/// The state machine's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Applied (or a retry of the last applied operation).
    Done,
    /// Not allowed (a wrong key for the name, a replayed or stale operation), with the
    /// sentence for the user; nothing changed.
    Forbidden(String),
    /// Not possible as asked (an unknown user, a bad lease, the cloud full), with the
    /// sentence; nothing changed.
    Refused(String),
}

/// What a refusal means to the HTTP layer.
impl Reply {
    /// Ok for `Done`; `Unauthorized` for `Forbidden`, `InvalidInput` for `Refused`.
    pub fn into_result(self) -> crate::Result<()> {
        match self {
            Reply::Done => Ok(()),
            Reply::Forbidden(why) => Err(crate::Error::Unauthorized(why)),
            Reply::Refused(why) => Err(crate::Error::InvalidInput(why)),
        }
    }
}

/// Every record, keyed by user name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Accounts and directory entries.
    pub users: BTreeMap<String, UserRecord>,
}

impl State {
    /// Checks `op` against the records without applying it: what a leader does before it
    /// proposes, so that impostors and replays never reach the log. The signature is not
    /// checked here: the node that received the operation from the user did (see the module
    /// docs), and only nodes write the log.
    pub fn check(&self, op: &SignedOp, at_ms: u64) -> Result<(), Reply> {
        if op.seq > at_ms.saturating_mul(1000).saturating_add(MAX_SEQ_AHEAD_US) {
            return Err(Reply::Refused(format!(
                "{}'s clock is more than a minute ahead of the cloud's; fix the clock and retry",
                op.user
            )));
        }
        match self.users.get(&op.user) {
            Some(record) if record.key != op.key => Err(Reply::Forbidden(format!(
                "wrong password for {}: the name is taken by another key",
                op.user
            ))),
            Some(record) if record.accepted(op.seq, &op.digest()) => Ok(()),
            Some(record) if op.seq <= record.last_seq => Err(Reply::Forbidden(format!(
                "a replayed or stale request from {} (sequence {} <= {})",
                op.user, op.seq, record.last_seq
            ))),
            Some(_) => check_op(&op.op).map_err(Reply::Refused),
            None => match op.op {
                UserOp::Register { .. } if self.users.len() >= MAX_USERS => Err(Reply::Refused(
                    format!("the cloud holds its maximum of {MAX_USERS} accounts"),
                )),
                UserOp::Register { .. } => check_op(&op.op).map_err(Reply::Refused),
                _ => Err(Reply::Refused(format!(
                    "unknown user {}: register first",
                    op.user
                ))),
            },
        }
    }

    /// Applies one command; returns the reply and the user whose record changed, if any.
    pub fn apply(&mut self, command: &Command) -> (Reply, Option<String>) {
        let op = &command.op;
        if let Err(refusal) = self.check(op, command.at_ms) {
            return (refusal, None);
        }
        let record = self
            .users
            .entry(op.user.clone())
            .or_insert_with(|| UserRecord {
                key: op.key,
                last_seq: 0,
                recent: Vec::new(),
                addr: None,
                lease_until_ms: 0,
                last_seen_ms: 0,
                shared: Vec::new(),
            });
        let digest = op.digest();
        if record.accepted(op.seq, &digest) {
            return (Reply::Done, None);
        }
        record.last_seq = op.seq;
        if record.recent.len() >= directory::RECENT_OPS {
            record.recent.remove(0);
        }
        record.recent.push((op.seq, digest));
        record.last_seen_ms = command.at_ms;
        match &op.op {
            UserOp::Register { addr, lease_ms } => {
                record.addr = Some(addr.clone());
                record.lease_until_ms = command.at_ms + lease_ms;
            }
            UserOp::Unregister => {
                record.addr = None;
                record.lease_until_ms = command.at_ms;
            }
        }
        (Reply::Done, Some(op.user.clone()))
    }

    /// The directory as it stands at `now_ms`, by user name.
    pub fn directory(&self, now_ms: u64) -> Vec<DirectoryEntry> {
        self.users
            .iter()
            .map(|(user, record)| record.entry(user, now_ms))
            .collect()
    }
}

/// Checks what an operation asks for, whatever the records say.
pub fn check_op(op: &UserOp) -> Result<(), String> {
    match op {
        UserOp::Register { addr, lease_ms } => {
            if addr.is_empty() || addr.len() > MAX_ADDR_LEN {
                return Err(format!("a peer address must be 1 to {MAX_ADDR_LEN} bytes"));
            }
            if *lease_ms == 0 || *lease_ms > MAX_LEASE_MS {
                return Err(format!(
                    "a lease must be 1 to {MAX_LEASE_MS} ms (asked for {lease_ms} ms)"
                ));
            }
            Ok(())
        }
        UserOp::Unregister => Ok(()),
    }
}

/// Unix milliseconds on this machine's clock (the time a proposer stamps on a command).
pub fn unix_millis() -> u64 {
    account::unix_micros() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(who: &Credential) -> SignedOp {
        who.sign(UserOp::Register {
            addr: "127.0.0.1:7000".into(),
            lease_ms: 3000,
        })
    }

    fn at(op: SignedOp) -> Command {
        Command {
            at_ms: account::unix_micros() / 1000,
            op,
        }
    }

    #[test]
    fn a_first_registration_creates_the_account_and_goes_online() {
        let alice = Credential::derive("alice", "pw").unwrap();
        let mut state = State::default();
        let command = at(register(&alice));
        assert_eq!(state.apply(&command), (Reply::Done, Some("alice".into())));
        let dir = state.directory(command.at_ms);
        assert_eq!(dir.len(), 1);
        assert!(dir[0].online);
        assert_eq!(dir[0].addr.as_deref(), Some("127.0.0.1:7000"));
        assert!(
            !state.directory(command.at_ms + 3000)[0].online,
            "the lease ran out"
        );
    }

    #[test]
    fn an_impostor_with_another_password_is_refused_and_changes_nothing() {
        let alice = Credential::derive("alice", "pw").unwrap();
        let mallory = Credential::derive("alice", "guess").unwrap();
        let mut state = State::default();
        state.apply(&at(register(&alice)));
        let before = state.clone();
        let (reply, changed) = state.apply(&at(mallory.sign(UserOp::Unregister)));
        assert!(matches!(reply, Reply::Forbidden(why) if why.contains("wrong password")));
        assert_eq!(changed, None);
        assert_eq!(state, before);
    }

    #[test]
    fn a_retry_is_done_once_and_a_replay_changes_nothing() {
        let alice = Credential::derive("alice", "pw").unwrap();
        let mut state = State::default();
        let first = at(register(&alice));
        let second = at(alice.sign(UserOp::Unregister));
        state.apply(&first);
        assert_eq!(state.apply(&second).0, Reply::Done);
        assert_eq!(
            state.apply(&second),
            (Reply::Done, None),
            "a retry changes nothing"
        );
        // A replay of a recent operation is answered as that retry and changes nothing.
        assert_eq!(state.apply(&first), (Reply::Done, None));
        assert!(!state.directory(second.at_ms)[0].online);
        // One older than the last 16 is refused.
        for _ in 0..directory::RECENT_OPS {
            state.apply(&at(alice.sign(UserOp::Unregister)));
        }
        let (replayed, _) = state.apply(&first);
        assert!(matches!(replayed, Reply::Forbidden(why) if why.contains("replayed")));
        assert!(!state.directory(second.at_ms)[0].online);
    }

    #[test]
    fn a_retry_answered_after_a_newer_operation_is_done_not_refused() {
        // The first register was committed but its answer lost; the retry arrives after the
        // user's next operation was accepted (found by tests/linearizable.rs with a leader kill).
        let alice = Credential::derive("alice", "pw").unwrap();
        let mut state = State::default();
        let first = at(register(&alice));
        let second = at(alice.sign(UserOp::Unregister));
        assert_eq!(state.apply(&first).0, Reply::Done);
        assert_eq!(state.apply(&second).0, Reply::Done);
        let before = state.clone();
        assert_eq!(state.apply(&first), (Reply::Done, None));
        assert_eq!(state, before, "the retry was applied a second time");
    }

    #[test]
    fn forged_signatures_unknown_users_and_bad_leases_are_refused() {
        let alice = Credential::derive("alice", "pw").unwrap();
        let mut state = State::default();
        let mut forged = register(&alice);
        forged.sig[0] ^= 1;
        assert!(forged.verify().is_err(), "a forged signature verifies");
        assert!(
            matches!(state.apply(&at(alice.sign(UserOp::Unregister))).0, Reply::Refused(why) if why.contains("unknown user"))
        );
        let long = alice.sign(UserOp::Register {
            addr: "x".into(),
            lease_ms: 60_000,
        });
        assert!(matches!(state.apply(&at(long)).0, Reply::Refused(why) if why.contains("lease")));
        assert!(state.users.is_empty());
    }
}
