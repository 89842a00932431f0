//! Who a user is: a key pair derived from a password, and operations signed with it.
//!
//! A user's password never leaves their machine. Argon2id stretches it, salted with the user
//! name, into the seed of an Ed25519 key pair: the same password gives the same key on any
//! machine, so a user who lost their folder still has their identity. The first registration
//! of a name records its public key in the cloud's ledger ("trust on first use"); every later
//! operation must carry a valid signature by that key. Each operation carries a sequence
//! number (microseconds of the signer's clock, kept strictly increasing) that the ledger
//! requires to grow, so a captured operation cannot be replayed.
//!
//! Implementation caveats: there is no password change or account recovery (a new password
//! is a new key, refused for an existing name); the salt is the user name, so two users with
//! the same name and password in two different clusters share a key.

use argon2::{Algorithm, Argon2, Params, Version};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ledger::Change;
use super::mailbox::Posted;
use crate::codec::metadata::ImageId;
use crate::{Error, Result};

/// Argon2id memory cost in KiB (OWASP's first recommended setting: 19 MiB, 2 passes).
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes.
const ARGON2_PASSES: u32 = 2;
/// What every signature covers first, so a signature made for anything else never verifies.
const SIGNATURE_DOMAIN: &[u8] = b"imgcloud user operation v1";
/// The domain of a signed query.
const QUERY_DOMAIN: &[u8] = b"imgcloud user query v1";
/// The longest user name.
pub const MAX_USER_LEN: usize = 32;

/// A user's public key, as recorded in the ledger.
pub type PublicKey = [u8; 32];

/// Checks a user name: 1 to 32 characters of `a-z`, `0-9`, `-`, `_`.
pub fn check_user_name(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "user name {user:?} must be 1 to {MAX_USER_LEN} characters of a-z, 0-9, '-' and '_'"
        )))
    }
}

/// A user's signing identity, derived from their name and password.
#[derive(Clone)]
pub struct Credential {
    user: String,
    key: SigningKey,
    last_seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Derives the key pair (Argon2id, about 50 ms); the password is not kept.
    pub fn derive(user: &str, password: &str) -> Result<Self> {
        check_user_name(user)?;
        if password.is_empty() {
            return Err(Error::InvalidInput("the password is empty".into()));
        }
        let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, Some(32))
            .map_err(|e| Error::Config(format!("argon2 parameters: {e}")))?;
        let salt = Sha256::digest(format!("imgcloud user key v1:{user}").as_bytes());
        let mut seed = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), &salt, &mut seed)
            .map_err(|e| Error::InvalidInput(format!("cannot derive the key: {e}")))?;
        Ok(Credential {
            user: user.to_string(),
            key: SigningKey::from_bytes(&seed),
            last_seq: Default::default(),
        })
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The public half, as the ledger records it.
    pub fn public_key(&self) -> PublicKey {
        self.key.verifying_key().to_bytes()
    }

    /// Opens `sealed`, a reply the cloud sealed to this user's key ([`seal_to`]); an error if
    /// it was sealed to another key or damaged.
    pub fn open_sealed(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        crypto_box::SecretKey::from_bytes(self.key.to_scalar_bytes())
            .unseal(sealed)
            .map_err(|_| {
                Error::Unauthorized(format!(
                    "this reply is not sealed to {}'s key (or it was damaged on the way)",
                    self.user
                ))
            })
    }

    /// A fresh sequence number: the clock in microseconds, strictly increasing.
    pub fn next_seq(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let now = unix_micros();
        let mut prev = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self
                .last_seq
                .compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// Signs `op` with a fresh sequence number.
    pub fn sign(&self, op: UserOp) -> SignedOp {
        let seq = self.next_seq();
        let mut signed = SignedOp {
            user: self.user.clone(),
            key: self.public_key(),
            seq,
            op,
            sig: Vec::new(),
        };
        signed.sig = self.key.sign(&signed.message()).to_bytes().to_vec();
        signed
    }
}

/// Seals `bytes` to the user whose signing key is `key`, so that only the holder of that
/// user's password opens them ([`Credential::open_sealed`]): a libsodium sealed box
/// (`crypto_box`: X25519, XSalsa20-Poly1305, a fresh ephemeral key per message) to the
/// X25519 form of the user's Ed25519 key (as libsodium's `crypto_sign_ed25519_pk_to_curve25519`).
pub fn seal_to(key: &PublicKey, bytes: &[u8]) -> Result<Vec<u8>> {
    let key = VerifyingKey::from_bytes(key)
        .map_err(|_| Error::InvalidInput("a malformed user key".into()))?;
    crypto_box::PublicKey::from_bytes(key.to_montgomery().to_bytes())
        .seal(&mut rand::rngs::OsRng, bytes)
        .map_err(|_| Error::Protocol("sealing a reply failed".into()))
}

impl Credential {
    /// Signs `message` (which must start with a domain string of its own, so that it can
    /// never be mistaken for a signed operation); used for messages between peers.
    pub fn sign_message(&self, message: &[u8]) -> Vec<u8> {
        debug_assert!(!message.starts_with(SIGNATURE_DOMAIN) && !message.starts_with(QUERY_DOMAIN));
        self.key.sign(message).to_bytes().to_vec()
    }
}

impl Credential {
    /// Signs a question to the cloud about this user's own records.
    pub fn query(&self, ask: Ask) -> Query {
        let mut query = Query {
            user: self.user.clone(),
            key: self.public_key(),
            at_ms: unix_micros() / 1000,
            ask,
            sig: Vec::new(),
        };
        query.sig = self.key.sign(&query.message()).to_bytes().to_vec();
        query
    }
}

/// What a user may ask the cloud about their own records (answered without a log entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    /// The letters in the user's mailbox.
    Mail,
    /// The user's images with their receipts, and the grants the user holds.
    Holdings,
    /// A fresh copy of `image` for the user, with the views the ledger has left.
    Copy {
        /// The image.
        image: ImageId,
    },
    /// The user's own encrypted image `image`, as the cloud keeps it.
    Own {
        /// The image.
        image: ImageId,
    },
}

/// A signed question (see [`Credential::query`]); fresh for [`QUERY_FRESH_MS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Who asks.
    pub user: String,
    /// Their public key (must be the one the cloud recorded).
    pub key: PublicKey,
    /// When they asked, Unix milliseconds.
    pub at_ms: u64,
    /// What they ask.
    pub ask: Ask,
    /// Ed25519 signature over the domain, user, key, time and question.
    pub sig: Vec<u8>,
}

/// How far a query's time may be from the cloud's clock.
pub const QUERY_FRESH_MS: u64 = 60_000;

impl Query {
    fn message(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(&(&self.user, &self.key, self.at_ms, &self.ask))
            .expect("a query always serializes");
        [QUERY_DOMAIN, &body].concat()
    }

    /// Checks the name, the signature and the time (against `now_ms`); the key must still
    /// be compared with the recorded one.
    pub fn verify(&self, now_ms: u64) -> Result<()> {
        check_user_name(&self.user)?;
        if !verify_message(&self.key, &self.message(), &self.sig) {
            return Err(Error::Unauthorized(format!(
                "the signature of {}'s question is not valid",
                self.user
            )));
        }
        if self.at_ms.abs_diff(now_ms) > QUERY_FRESH_MS {
            return Err(Error::Unauthorized(format!(
                "{}'s question is more than a minute old or ahead (check the clock)",
                self.user
            )));
        }
        Ok(())
    }
}

/// Whether `sig` is `key`'s signature of `message` (see [`Credential::sign_message`]).
pub fn verify_message(key: &PublicKey, message: &[u8], sig: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .is_ok()
}

/// What a user asks the cloud to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserOp {
    /// Online at `addr` until `lease_ms` from now (creates the account on first use; the
    /// peer renews it by registering again).
    Register {
        /// Where the user's peer serves its P2P API and gallery.
        addr: String,
        /// How long the registration holds without renewal, in milliseconds.
        lease_ms: u64,
    },
    /// Offline now (a clean exit).
    Unregister,
    /// Lists in the ledger and the directory the image sealed in the file whose SHA-256 is
    /// `file` (the node that takes the operation opens the file and checks that the user owns it).
    Share {
        /// The image's name.
        name: String,
        /// SHA-256 of the encrypted image sent with the operation.
        file: [u8; 32],
    },
    /// Changes `viewer`'s views of the user's `image`; `file` is the owner's encrypted image
    /// (sent with the operation), from which the node seals the viewer's copy.
    Grant {
        /// The image.
        image: ImageId,
        /// The viewer.
        viewer: String,
        /// What changes.
        change: Change,
        /// SHA-256 of the owner's encrypted image sent with the operation.
        file: [u8; 32],
    },
    /// Spends one view of the copy whose SHA-256 is `file` (sent with the operation). The
    /// operation's sequence number is the view's id: a retry of the same signed operation is
    /// answered as the first time, and spends nothing more.
    View {
        /// SHA-256 of the copy sent with the operation.
        file: [u8; 32],
    },
    /// Leaves a letter in `to`'s mailbox (a request to an offline owner, a denial for an
    /// offline asker).
    Post {
        /// The addressee.
        to: String,
        /// The letter.
        letter: Posted,
    },
    /// Removes this user's letters numbered `upto` or lower (they were applied).
    Ack {
        /// The highest letter number applied.
        upto: u64,
    },
}

impl UserOp {
    /// The operation's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            UserOp::Register { .. } => "register",
            UserOp::Unregister => "unregister",
            UserOp::Share { .. } => "share",
            UserOp::Grant { .. } => "grant",
            UserOp::View { .. } => "view",
            UserOp::Post { .. } => "post",
            UserOp::Ack { .. } => "ack",
        }
    }
}

/// An operation signed by its user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOp {
    /// Who signs.
    pub user: String,
    /// Their public key (must match the ledger's, or create it on first registration).
    pub key: PublicKey,
    /// Strictly increasing per user: the ledger refuses a sequence number it has passed.
    pub seq: u64,
    /// What they ask for.
    pub op: UserOp,
    /// Ed25519 signature over the domain, user, key, seq and op.
    pub sig: Vec<u8>,
}

impl SignedOp {
    fn message(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(&(&self.user, &self.key, self.seq, &self.op))
            .expect("a user operation always serializes");
        [SIGNATURE_DOMAIN, &body].concat()
    }

    /// Checks the user name and that `sig` is the signature of `key` over the operation.
    pub fn verify(&self) -> Result<()> {
        check_user_name(&self.user)?;
        let bad = || {
            Error::Unauthorized(format!(
                "the signature of {}'s request is not valid",
                self.user
            ))
        };
        let key = VerifyingKey::from_bytes(&self.key).map_err(|_| bad())?;
        let sig: [u8; 64] = self.sig.as_slice().try_into().map_err(|_| bad())?;
        key.verify_strict(&self.message(), &Signature::from_bytes(&sig))
            .map_err(|_| bad())
    }

    /// A digest that names this exact operation (to answer a retried one the same way).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.message()).into()
    }
}

/// Microseconds since the Unix epoch on this machine's clock.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register() -> UserOp {
        UserOp::Register {
            addr: "127.0.0.1:1".into(),
            lease_ms: 3000,
        }
    }

    #[test]
    fn the_same_password_gives_the_same_key_and_another_does_not() {
        let a = Credential::derive("alice", "correct horse").unwrap();
        let b = Credential::derive("alice", "correct horse").unwrap();
        let c = Credential::derive("alice", "wrong horse").unwrap();
        let d = Credential::derive("bob", "correct horse").unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), c.public_key());
        assert_ne!(a.public_key(), d.public_key());
    }

    #[test]
    fn a_reply_sealed_to_a_user_opens_with_their_password_only() {
        let bob = Credential::derive("bob", "pw").unwrap();
        let carol = Credential::derive("carol", "pw").unwrap();
        let sealed = seal_to(&bob.public_key(), b"the photo").unwrap();
        assert_ne!(
            seal_to(&bob.public_key(), b"the photo").unwrap(),
            sealed,
            "no fresh key"
        );
        assert_eq!(bob.open_sealed(&sealed).unwrap(), b"the photo");
        assert!(carol.open_sealed(&sealed).is_err());
        let again = Credential::derive("bob", "pw").unwrap();
        assert_eq!(
            again.open_sealed(&sealed).unwrap(),
            b"the photo",
            "the same password"
        );
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(bob.open_sealed(&damaged).is_err());
        assert!(bob.open_sealed(&sealed[..20]).is_err());
    }

    #[test]
    fn signatures_verify_and_any_change_breaks_them() {
        let alice = Credential::derive("alice", "pw").unwrap();
        let op = alice.sign(register());
        op.verify().unwrap();
        let mut changed = op.clone();
        changed.seq += 1;
        assert!(changed.verify().is_err());
        let mut other_user = op.clone();
        other_user.user = "bob".into();
        assert!(other_user.verify().is_err());
        let mut short = op;
        short.sig.truncate(10);
        assert!(short.verify().is_err());
    }

    #[test]
    fn sequence_numbers_strictly_increase() {
        let alice = Credential::derive("alice", "pw").unwrap();
        let seqs: Vec<u64> = (0..100)
            .map(|_| alice.sign(UserOp::Unregister).seq)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bad_names_and_empty_passwords_are_refused() {
        assert!(Credential::derive("Alice", "pw").is_err());
        assert!(Credential::derive("", "pw").is_err());
        assert!(Credential::derive(&"a".repeat(33), "pw").is_err());
        assert!(Credential::derive("alice", "").is_err());
    }
}
