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
pub mod bodies;
pub mod directory;
pub mod ledger;
pub mod mailbox;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use account::{Ask, Credential, Query, SignedOp, UserOp};
pub use directory::{DirectoryEntry, SharedImage, UserRecord};
pub use ledger::{Change, Grant, ImageRecord, Ledger, Spent};
pub use mailbox::{Letter, Mailbox, Posted};

use crate::codec::metadata::ImageId;
use directory::{MAX_ADDR_LEN, MAX_LEASE_MS};

/// The most accounts the cloud keeps (each costs about 150 bytes plus what it shares).
pub const MAX_USERS: usize = 100_000;
/// How far ahead of the proposer's clock a sequence number may be, in microseconds.
const MAX_SEQ_AHEAD_US: u64 = 60_000_000;

/// How long after a view was signed its image is given again to a retry of it (the same signed
/// request, after a lost reply): a peer tries the three nodes 5 s each, so one full round and a
/// second fit. Later, the same request is a replay and shows nothing (docs/DESIGN.md).
pub const VIEW_RETRY_MS: u64 = 30_000;
/// The prefix of an image's row key in the store (user names cannot contain ':').
const IMAGE_ROW: &str = "image:";
/// The prefix of a mailbox's row key.
const MAIL_ROW: &str = "mail:";

/// One entry of the replicated log: a signed user operation, the time it was proposed, and
/// what the proposing node read from the sealed file sent with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The proposing node's clock, Unix milliseconds.
    pub at_ms: u64,
    /// What the user asked for.
    pub op: SignedOp,
    /// For `Share`, `Grant` and `View`: the metadata sealed in the file whose digest the
    /// operation names, as the node that took the operation opened it with the cluster key
    /// (only nodes write the log, so every node trusts it).
    pub sealed: Option<Sealed>,
}

/// What a node read from a sealed image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The image's id.
    pub image: ImageId,
    /// Its owner.
    pub owner: String,
    /// The viewers it names (a viewer's copy names its one viewer).
    pub viewers: Vec<String>,
    /// The file's length in bytes.
    pub bytes: u64,
}

impl Sealed {
    /// What `meta` says of a file of `bytes` bytes.
    pub fn of(meta: &crate::codec::metadata::ImageMeta, bytes: usize) -> Sealed {
        Sealed {
            image: meta.image_id,
            owner: meta.owner.clone(),
            viewers: meta.viewers.iter().map(|v| v.name.clone()).collect(),
            bytes: bytes as u64,
        }
    }

    /// Who `user` is to this file: the one rule for who may view a copy. The desk answers
    /// the owner and a stranger without a log entry; the state machine spends a view only for
    /// a named viewer (and, given one of the others, answers as the desk would).
    pub fn standing(&self, user: &str) -> Standing {
        if self.owner == user {
            Standing::Owner
        } else if self.viewers.iter().any(|v| v == user) {
            Standing::Viewer
        } else if self.viewers.is_empty() {
            Standing::Stranger(format!(
                "this is {}'s own image; only she may view it",
                self.owner
            ))
        } else {
            Standing::Stranger(format!(
                "this copy was made for {}, not for {user}",
                self.viewers.join(", ")
            ))
        }
    }
}

/// Who a user is to a sealed file ([`Sealed::standing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Its owner: sees her image, spends nothing.
    Owner,
    /// A viewer it names: a view is spent from her grant in the ledger.
    Viewer,
    /// Anyone else: the default image, with the reason.
    Stranger(String),
}

/// The state machine's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Applied (or a retry of the last applied operation).
    Done,
    /// Not allowed (a wrong key for the name, a replayed or stale operation), with the
    /// sentence for the user; nothing changed.
    Forbidden(String),
    /// Not possible as asked (an unknown user, a bad lease, the cloud full, not the owner),
    /// with the sentence; nothing changed.
    Refused(String),
    /// A grant changed: the viewer's views left and the grant's version now.
    Granted {
        /// Views left.
        views_left: u32,
        /// The grant's version.
        version: u64,
    },
    /// One view spent; this many are left.
    Viewed {
        /// Views left.
        views_left: u32,
    },
    /// No view was spent: the viewer gets the default image, for this reason.
    Default(String),
}

/// What a refusal means to the HTTP layer.
impl Reply {
    /// The reply itself unless it refuses: `Unauthorized` for `Forbidden`, `InvalidInput`
    /// for `Refused`.
    pub fn into_result(self) -> crate::Result<Reply> {
        match self {
            Reply::Forbidden(why) => Err(crate::Error::Unauthorized(why)),
            Reply::Refused(why) => Err(crate::Error::InvalidInput(why)),
            reply => Ok(reply),
        }
    }
}

/// A record's key in the store: a user, or an image of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowKey {
    /// A user's record (account and directory entry).
    User(String),
    /// An image's record (owner, name, grants).
    Image(ImageId),
    /// A user's mailbox.
    Mail(String),
}

impl RowKey {
    /// The key as the store's table holds it.
    pub fn encode(&self) -> String {
        match self {
            RowKey::User(name) => name.clone(),
            RowKey::Image(id) => format!("{IMAGE_ROW}{id}"),
            RowKey::Mail(user) => format!("{MAIL_ROW}{user}"),
        }
    }
}

/// Every record: accounts and the directory by user name, the ledger by image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Accounts and directory entries.
    pub users: BTreeMap<String, UserRecord>,
    /// Shared images and their grants.
    pub ledger: Ledger,
    /// Mailboxes, by user (a user with no letters may have none).
    pub mail: BTreeMap<String, Mailbox>,
}

impl State {
    /// Checks `op` against the accounts without applying it: what a leader does before it
    /// proposes, so that impostors and replays never reach the log. The signature is not
    /// checked here: the node that received the operation from the user did (see the module
    /// docs), and only nodes write the log. A retry of an operation already applied is Ok.
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
            Some(record) if record.answer(op.seq, &op.digest()).is_some() => Ok(()),
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

    /// Applies one command; returns the reply and the records it changed.
    pub fn apply(&mut self, command: &Command) -> (Reply, Vec<RowKey>) {
        let op = &command.op;
        if let Err(refusal) = self.check(op, command.at_ms) {
            return (refusal, Vec::new());
        }
        let digest = op.digest();
        if let Some(answer) = self
            .users
            .get(&op.user)
            .and_then(|r| r.answer(op.seq, &digest))
        {
            return match self.may_answer_again(command, answer) {
                Ok(()) => (answer.clone(), Vec::new()),
                Err(why) => (Reply::Forbidden(why), Vec::new()),
            };
        }
        let (reply, mut changed) = match self.apply_op(command) {
            Ok(done) => done,
            // A refusal by the records changes nothing, not even the sequence number.
            Err(why) => return (Reply::Refused(why), Vec::new()),
        };
        let record = self
            .users
            .entry(op.user.clone())
            .or_insert_with(|| UserRecord::new(op.key));
        record.remember(op.seq, digest, reply.clone());
        record.last_seen_ms = command.at_ms;
        changed.push(RowKey::User(op.user.clone()));
        changed.sort();
        changed.dedup();
        (reply, changed)
    }

    /// Whether an operation's remembered answer may be given again (a retry changes nothing).
    /// A view's image is given again only to a retry: within [`VIEW_RETRY_MS`] of the view's
    /// signing, while the viewer still holds the grant with at least the views that view left.
    /// Anything else is a replay of a captured request, and shows nothing.
    fn may_answer_again(&self, command: &Command, answer: &Reply) -> Result<(), String> {
        let Reply::Viewed { views_left } = answer else {
            return Ok(());
        };
        let (op, user) = (&command.op, command.op.user.as_str());
        let signed_ms = op.seq / 1000;
        if command.at_ms > signed_ms + VIEW_RETRY_MS {
            return Err(format!(
                "a replayed or stale view from {user}: it was signed {} s ago, and a view is \
                 answered again only within {} s",
                (command.at_ms - signed_ms) / 1000,
                VIEW_RETRY_MS / 1000
            ));
        }
        let grant = command
            .sealed
            .as_ref()
            .and_then(|sealed| self.ledger.images.get(&sealed.image))
            .and_then(|record| record.grant_of(user));
        match grant {
            None => Err(format!(
                "a replayed view from {user}: the grant was revoked since"
            )),
            Some(g) if g.left < *views_left => Err(format!(
                "a replayed view from {user}: {} view(s) left now, fewer than that view left",
                g.left
            )),
            Some(_) => Ok(()),
        }
    }

    /// What the operation itself does, after the account checks.
    fn apply_op(&mut self, command: &Command) -> Result<(Reply, Vec<RowKey>), String> {
        let (op, at_ms) = (&command.op, command.at_ms);
        let user = op.user.as_str();
        let sealed = || {
            command
                .sealed
                .as_ref()
                .ok_or_else(|| "the node sent no sealed metadata with the operation".to_string())
        };
        match &op.op {
            UserOp::Register { addr, lease_ms } => {
                let record = self
                    .users
                    .entry(op.user.clone())
                    .or_insert_with(|| UserRecord::new(op.key));
                record.addr = Some(addr.clone());
                record.lease_until_ms = at_ms + lease_ms;
                Ok((Reply::Done, Vec::new()))
            }
            UserOp::Unregister => {
                if let Some(record) = self.users.get_mut(user) {
                    record.addr = None;
                    record.lease_until_ms = at_ms;
                }
                Ok((Reply::Done, Vec::new()))
            }
            UserOp::Share { name, .. } => {
                let sealed = sealed()?;
                if sealed.owner != user {
                    return Err(format!(
                        "that image is sealed with {} as its owner, not {user}",
                        sealed.owner
                    ));
                }
                let UserOp::Share { file, .. } = &op.op else {
                    unreachable!("matched above")
                };
                self.ledger
                    .share(user, sealed.image, name, (*file, sealed.bytes))?;
                if let Some(record) = self.users.get_mut(user) {
                    record.shared.push(SharedImage {
                        id: sealed.image.to_string(),
                        name: name.clone(),
                    });
                }
                Ok((Reply::Done, vec![RowKey::Image(sealed.image)]))
            }
            UserOp::Grant {
                image,
                viewer,
                change,
                ..
            } => {
                let sealed = sealed()?;
                if sealed.image != *image || sealed.owner != user {
                    return Err(format!(
                        "the file sent is not {user}'s encrypted image {image}"
                    ));
                }
                if !self.users.contains_key(viewer) {
                    return Err(format!("unknown user {viewer}"));
                }
                let grant = self.ledger.grant(user, image, viewer, *change)?;
                let name = self.ledger.images[image].name.clone();
                self.mail
                    .entry(viewer.clone())
                    .or_default()
                    .grant(Letter::Grant {
                        owner: user.to_string(),
                        image: *image,
                        name,
                        views_left: grant.left,
                        version: grant.version,
                    });
                let reply = Reply::Granted {
                    views_left: grant.left,
                    version: grant.version,
                };
                Ok((
                    reply,
                    vec![RowKey::Image(*image), RowKey::Mail(viewer.clone())],
                ))
            }
            UserOp::View { .. } => {
                let sealed = sealed()?;
                match sealed.standing(user) {
                    Standing::Owner => {
                        return Err("an owner views her own images without spending views".into())
                    }
                    Standing::Stranger(why) => return Ok((Reply::Default(why), Vec::new())),
                    Standing::Viewer => {}
                }
                match self.ledger.view(user, &sealed.image) {
                    Spent::Viewed(left) => Ok((
                        Reply::Viewed { views_left: left },
                        vec![RowKey::Image(sealed.image)],
                    )),
                    Spent::Default(why) => Ok((Reply::Default(why), Vec::new())),
                }
            }
            UserOp::Post { to, letter } => {
                if !self.users.contains_key(to) {
                    return Err(format!("unknown user {to}"));
                }
                if let Posted::Request { image, .. } = letter {
                    match self.ledger.images.get(image) {
                        Some(record) if record.owner == *to => {}
                        _ => return Err(format!("{to} shares no image {image}")),
                    }
                }
                self.mail
                    .entry(to.clone())
                    .or_default()
                    .post(user, letter.clone(), to)?;
                Ok((Reply::Done, vec![RowKey::Mail(to.clone())]))
            }
            UserOp::Ack { upto } => {
                let Some(mailbox) = self.mail.get_mut(user) else {
                    return Ok((Reply::Done, Vec::new()));
                };
                mailbox.ack(*upto);
                Ok((Reply::Done, vec![RowKey::Mail(user.to_string())]))
            }
        }
    }

    /// The directory as it stands at `now_ms`, by user name.
    pub fn directory(&self, now_ms: u64) -> Vec<DirectoryEntry> {
        self.users
            .iter()
            .map(|(user, record)| record.entry(user, now_ms))
            .collect()
    }

    /// The encoded row of `key` (`None`: the record is gone).
    pub fn row(&self, key: &RowKey) -> Option<Vec<u8>> {
        let encoded = match key {
            RowKey::User(name) => self.users.get(name).map(postcard::to_stdvec),
            RowKey::Image(id) => self.ledger.images.get(id).map(postcard::to_stdvec),
            RowKey::Mail(user) => self.mail.get(user).map(postcard::to_stdvec),
        };
        encoded.map(|r| r.expect("a record serializes"))
    }

    /// Every row, keyed as the store's table holds them.
    pub fn rows(&self) -> Vec<(String, Vec<u8>)> {
        let users = self.users.keys().map(|u| RowKey::User(u.clone()));
        let images = self.ledger.images.keys().map(|i| RowKey::Image(*i));
        let mail = self.mail.keys().map(|u| RowKey::Mail(u.clone()));
        users
            .chain(images)
            .chain(mail)
            .filter_map(|key| Some((key.encode(), self.row(&key)?)))
            .collect()
    }

    /// Loads one row as [`State::rows`] wrote it.
    pub fn load_row(&mut self, key: &str, bytes: &[u8]) -> Result<(), String> {
        let bad = |e: postcard::Error| format!("the record {key:?} is unreadable: {e}");
        if let Some(user) = key.strip_prefix(MAIL_ROW) {
            let mailbox = postcard::from_bytes(bytes).map_err(bad)?;
            self.mail.insert(user.to_string(), mailbox);
            return Ok(());
        }
        match key.strip_prefix(IMAGE_ROW) {
            Some(hex_id) => {
                let id: ImageId = hex_id
                    .parse()
                    .map_err(|_| format!("the record key {key:?} names no image"))?;
                let record = postcard::from_bytes(bytes).map_err(bad)?;
                self.ledger.images.insert(id, record);
            }
            None => {
                let record = postcard::from_bytes(bytes).map_err(bad)?;
                self.users.insert(key.to_string(), record);
            }
        }
        Ok(())
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
        UserOp::Unregister | UserOp::View { .. } | UserOp::Ack { .. } => Ok(()),
        UserOp::Post { to, letter } => {
            account::check_user_name(to).map_err(|e| e.to_string())?;
            mailbox::check_posted(letter)
        }
        UserOp::Share { name, .. } => ledger::check_image_name(name),
        UserOp::Grant { viewer, change, .. } => {
            account::check_user_name(viewer).map_err(|e| e.to_string())?;
            ledger::check_change(*change)
        }
    }
}

/// Unix milliseconds on this machine's clock (the time a proposer stamps on a command).
pub fn unix_millis() -> u64 {
    account::unix_micros() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 32: who may view was decided twice (the desk and the state machine), in two
    /// wordings; now once.
    #[test]
    fn standing_is_owner_named_viewer_or_a_stranger_with_the_reason() {
        let sealed = |viewers: &[&str]| Sealed {
            image: ImageId([1; 16]),
            owner: "alice".into(),
            viewers: viewers.iter().map(|v| v.to_string()).collect(),
            bytes: 1,
        };
        assert_eq!(sealed(&["bob"]).standing("alice"), Standing::Owner);
        assert_eq!(sealed(&["bob"]).standing("bob"), Standing::Viewer);
        assert_eq!(
            sealed(&["bob"]).standing("carol"),
            Standing::Stranger("this copy was made for bob, not for carol".into())
        );
        assert_eq!(
            sealed(&[]).standing("carol"),
            Standing::Stranger("this is alice's own image; only she may view it".into())
        );
    }

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
            sealed: None,
        }
    }

    #[test]
    fn a_first_registration_creates_the_account_and_goes_online() {
        let alice = Credential::derive("alice", "pw").unwrap();
        let mut state = State::default();
        let command = at(register(&alice));
        assert_eq!(
            state.apply(&command),
            (Reply::Done, vec![RowKey::User("alice".into())])
        );
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
        assert!(changed.is_empty());
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
            (Reply::Done, Vec::new()),
            "a retry changes nothing"
        );
        // A replay of a recent operation is answered as that retry and changes nothing.
        assert_eq!(state.apply(&first), (Reply::Done, Vec::new()));
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
        assert_eq!(state.apply(&first), (Reply::Done, Vec::new()));
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

    /// alice and bob registered, and alice sharing "cat" as image `image`; the sealed
    /// metadata of her file.
    fn alice_shares_cat(image: ImageId) -> (Credential, Credential, State, Sealed) {
        let (alice, bob) = (
            Credential::derive("alice", "pw").unwrap(),
            Credential::derive("bob", "pw").unwrap(),
        );
        let mut state = State::default();
        state.apply(&at(register(&alice)));
        state.apply(&at(register(&bob)));
        let sealed = Sealed {
            image,
            owner: "alice".into(),
            viewers: vec![],
            bytes: 10,
        };
        let share = alice.sign(UserOp::Share {
            name: "cat".into(),
            file: [1; 32],
        });
        let command = Command {
            sealed: Some(sealed.clone()),
            ..at(share)
        };
        assert_eq!(state.apply(&command).0, Reply::Done);
        (alice, bob, state, sealed)
    }

    #[test]
    fn letters_wait_until_acknowledged_and_a_crash_before_the_ack_loses_none() {
        let (alice, bob, mut state, sealed) = alice_shares_cat(ImageId([9; 16]));
        let image = sealed.image;
        // bob asks while alice is offline; a request for an image she lacks is refused.
        let ask = |image| Posted::Request {
            id: "r1".into(),
            image,
            views: 3,
        };
        let post = |letter| UserOp::Post {
            to: "alice".into(),
            letter,
        };
        let (reply, changed) = state.apply(&at(bob.sign(post(ask(image)))));
        assert_eq!(reply, Reply::Done);
        assert_eq!(
            changed,
            vec![RowKey::User("bob".into()), RowKey::Mail("alice".into())]
        );
        let bogus = state.apply(&at(bob.sign(post(ask(ImageId([7; 16]))))));
        assert!(matches!(bogus.0, Reply::Refused(why) if why.contains("shares no image")));
        // alice reads, "crashes" before acknowledging, reads again: the letter is still there.
        let letters = |s: &State| s.mail["alice"].letters.clone();
        assert_eq!(letters(&state).len(), 1);
        assert_eq!(letters(&state).len(), 1);
        // Her approval posts bob's grant letter; a quota change replaces it.
        let grant = |change| {
            let mut c = at(alice.sign(UserOp::Grant {
                image,
                viewer: "bob".into(),
                change,
                file: [1; 32],
            }));
            c.sealed = Some(sealed.clone());
            c
        };
        state.apply(&grant(Change::Add(3)));
        state.apply(&grant(Change::Set(5)));
        let bob_letters: Vec<_> = state.mail["bob"].letters.values().cloned().collect();
        assert!(matches!(
            bob_letters.as_slice(),
            [Letter::Grant {
                views_left: 5,
                version: 2,
                ..
            }]
        ));
        // The ack removes what was read, once, even when retried.
        let (n, _) = state.mail["alice"].letters.iter().next_back().unwrap();
        let ack = at(alice.sign(UserOp::Ack { upto: *n }));
        assert_eq!(state.apply(&ack).0, Reply::Done);
        assert!(letters(&state).is_empty());
        state.apply(&at(bob.sign(post(Posted::Denied { id: "r9".into() }))));
        assert_eq!(
            state.apply(&ack),
            (Reply::Done, Vec::new()),
            "a retried ack"
        );
        assert_eq!(
            letters(&state).len(),
            1,
            "the retried ack removed a newer letter"
        );
    }

    #[test]
    fn a_view_is_answered_again_only_to_a_retry_in_time_while_the_grant_holds() {
        let (alice, bob, mut state, sealed) = alice_shares_cat(ImageId([3; 16]));
        let image = sealed.image;
        let with = |op: SignedOp, viewers: &[&str]| Command {
            sealed: Some(Sealed {
                viewers: viewers.iter().map(|v| v.to_string()).collect(),
                ..sealed.clone()
            }),
            ..at(op)
        };
        let grant = |change| {
            let op = alice.sign(UserOp::Grant {
                image,
                viewer: "bob".into(),
                change,
                file: [1; 32],
            });
            with(op, &[])
        };
        state.apply(&grant(Change::Add(3)));
        let view = with(bob.sign(UserOp::View { file: [2; 32] }), &["bob"]);
        let viewed = Reply::Viewed { views_left: 2 };
        assert_eq!(state.apply(&view).0, viewed);
        // A retry within the window, which counts from the signing (`seq`, in microseconds):
        // the same answer, nothing spent. (From `view.at_ms` the edge was flaky: the view is
        // applied up to a millisecond after it is signed.)
        let signed_ms = view.op.seq / 1000;
        let retry = Command {
            at_ms: signed_ms + VIEW_RETRY_MS,
            ..view.clone()
        };
        assert_eq!(state.apply(&retry), (viewed.clone(), Vec::new()));
        // Past the window: a replay.
        let late = Command {
            at_ms: signed_ms + VIEW_RETRY_MS + 1000,
            ..view.clone()
        };
        assert!(matches!(state.apply(&late).0, Reply::Forbidden(why) if why.contains("stale")));
        // The owner sets fewer views than that view left: a replay in time shows nothing.
        state.apply(&grant(Change::Set(1)));
        assert!(matches!(state.apply(&view).0, Reply::Forbidden(why) if why.contains("fewer")));
        // Revoked: nothing either.
        state.apply(&grant(Change::Revoke));
        assert!(matches!(state.apply(&view).0, Reply::Forbidden(why) if why.contains("revoked")));
        // A retry of another operation is answered as before.
        let leave = at(bob.sign(UserOp::Unregister));
        assert_eq!(state.apply(&leave).0, Reply::Done);
        let late_leave = Command {
            at_ms: leave.at_ms + 10 * VIEW_RETRY_MS,
            ..leave
        };
        assert_eq!(state.apply(&late_leave).0, Reply::Done);
    }
}
