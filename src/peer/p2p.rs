//! Messages between users' peers, sent directly (`POST /p2p` on the addressee's port) and
//! signed with the sender's key, which the addressee looks up in the cloud's directory.
//!
//! ```text
//! bob's peer ── SignedMsg { from: bob, to: alice, seq, msg, sig } ──> alice's peer
//!                                   alice: sig by bob's key in the directory? bob online?
//!                                          to == alice? seq within a minute, not seen before?
//!            <── postcard answer (or a JSON error with 400/401/404/413) ──
//! ```
//!
//! A message is one of [`Msg`]: fetch previews, ask for views, deliver a copy, tell a decision.
//! The signature covers the sender, the addressee, the sequence number and the message, so a
//! message can be neither forged, redirected to another peer nor replayed (the addressee
//! remembers what it saw for [`FRESH_US`] and refuses anything older).
//!
//! Implementation caveats: the link is plain HTTP (the signature authenticates, nothing is
//! secret: a copy is sealed, a preview is public to the logged-in); the directory is cached
//! for [`DIRECTORY_TTL`], so a user who has just gone offline may still be heard that long.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cloud::Cloud;
use crate::sharing::account::{unix_micros, verify_message, PublicKey};
use crate::sharing::{Credential, DirectoryEntry, SharedImage};
use crate::{Error, Result};

/// How far a message's sequence number may be from the addressee's clock.
pub const FRESH_US: u64 = 60_000_000;
/// How long a peer trusts its copy of the directory.
pub const DIRECTORY_TTL: Duration = Duration::from_secs(1);
/// The largest message a peer accepts (a copy of a large photo in its cover).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
/// How long a peer waits for another peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer waits for another peer to accept a connection: a host cut off (its
/// packets dropped, not refused) would otherwise hold `peer quota` or `peer previews` for the
/// whole [`PEER_TIMEOUT`], while the update already waits in the mailbox.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The domain every peer-to-peer signature starts with.
const DOMAIN: &[u8] = b"imgcloud peer message v1";

/// What one peer asks of another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// The addressee's previews. Answer: `Vec<Preview>`.
    Previews,
    /// `views` views of the addressee's image `image` (its id), asked as request `id`.
    /// Answer: [`RequestAnswer`].
    Request {
        /// The request's id, chosen by the asker.
        id: String,
        /// The image's id.
        image: String,
        /// How many views.
        views: u32,
    },
    /// The sender's image `image`, as the addressee's copy (for request `request`, if any).
    /// Answer: `()`.
    Copy {
        /// The request it answers.
        request: Option<String>,
        /// The image's id.
        image: String,
        /// Its name.
        name: String,
        /// The views left that the copy says.
        views_left: u32,
        /// The grant's version (a newer copy replaces an older one, never the reverse).
        version: u64,
        /// The sealed copy.
        #[serde(with = "serde_bytes")]
        copy: Vec<u8>,
    },
    /// The sender denied the addressee's request. Answer: `()`.
    Denied {
        /// The request.
        request: String,
    },
}

/// One preview, as the owner's peer sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The preview's size.
    pub width: u32,
    /// The preview's size.
    pub height: u32,
    /// The preview (PNG, longest side at most 128 px).
    #[serde(with = "serde_bytes")]
    pub png: Vec<u8>,
}

/// What a request got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAnswer {
    /// The request's id.
    pub id: String,
    /// Its state at the owner (`pending`, `approved`, `delivered`, `denied`).
    pub state: String,
}

/// A signed message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMsg {
    /// The sender.
    pub from: String,
    /// The addressee.
    pub to: String,
    /// The sender's clock in microseconds (strictly increasing per sender).
    pub seq: u64,
    /// The message.
    pub msg: Msg,
    /// The sender's signature.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

impl SignedMsg {
    /// Signs `msg` from `credential`'s user to `to`.
    pub fn seal(credential: &Credential, to: &str, msg: Msg) -> SignedMsg {
        let mut envelope = SignedMsg {
            from: credential.user().to_string(),
            to: to.to_string(),
            seq: credential.next_seq(),
            msg,
            sig: Vec::new(),
        };
        envelope.sig = credential.sign_message(&envelope.signed_bytes());
        envelope
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(&(&self.from, &self.to, self.seq, &self.msg))
            .expect("a peer message serializes");
        [DOMAIN, &body].concat()
    }
}

/// The directory as a peer sees it: cached briefly, refreshed for an unknown user.
pub struct Directory {
    cloud: Cloud,
    cached: Mutex<Option<(Instant, HashMap<String, DirectoryEntry>)>>,
}

impl Directory {
    /// The directory of `cloud`.
    pub fn new(cloud: Cloud) -> Directory {
        Directory {
            cloud,
            cached: Mutex::new(None),
        }
    }

    /// `user`'s entry, from a copy at most [`DIRECTORY_TTL`] old (or fresh if the copy does
    /// not know them).
    pub async fn entry(&self, user: &str) -> Result<Option<DirectoryEntry>> {
        let cached = {
            let cache = self.cached.lock().expect("directory lock");
            cache.as_ref().and_then(|(at, entries)| {
                (at.elapsed() < DIRECTORY_TTL).then(|| entries.get(user).cloned())
            })
        };
        if let Some(Some(entry)) = cached {
            return Ok(Some(entry));
        }
        let entries: HashMap<String, DirectoryEntry> = self
            .cloud
            .directory()
            .await?
            .into_iter()
            .map(|e| (e.user.clone(), e))
            .collect();
        let entry = entries.get(user).cloned();
        *self.cached.lock().expect("directory lock") = Some((Instant::now(), entries));
        Ok(entry)
    }

    /// The image `user` shares as `image` (its id, or else its name) in the cloud's
    /// directory: the cached copy if it lists it, else a fresh one. The cache may predate an
    /// image shared a moment ago (it is filled by any message from `user`, too), and a page
    /// that read the directory afresh offers that image at once.
    pub async fn shared(&self, user: &str, image: &str) -> Result<Option<SharedImage>> {
        let find = |entry: Option<DirectoryEntry>| {
            let shared = entry.map(|e| e.shared).unwrap_or_default();
            let by_id = shared.iter().find(|s| s.id == image);
            by_id
                .or_else(|| shared.iter().find(|s| s.name == image))
                .cloned()
        };
        if let Some(found) = find(self.entry(user).await?) {
            return Ok(Some(found));
        }
        self.forget();
        Ok(find(self.entry(user).await?))
    }

    /// Where `user`'s peer is, or why it cannot be reached. "Offline" is never taken from
    /// the cache: a user who has just come back is looked up afresh.
    pub async fn address(&self, user: &str) -> Result<String> {
        match self.known_address(user).await {
            Err(Error::Unavailable(_)) => {
                self.forget();
                self.known_address(user).await
            }
            known => known,
        }
    }

    /// Drops the cached copy (an address it gave did not answer).
    pub fn forget(&self) {
        *self.cached.lock().expect("directory lock") = None;
    }

    async fn known_address(&self, user: &str) -> Result<String> {
        match self.entry(user).await? {
            None => Err(Error::InvalidInput(format!("unknown user {user}"))),
            Some(DirectoryEntry {
                online: true,
                addr: Some(addr),
                ..
            }) => Ok(addr),
            Some(_) => Err(Error::Unavailable(format!("{user} is offline"))),
        }
    }
}

/// Checks arriving envelopes: signature, addressee, freshness, replays.
pub struct Inbox {
    me: String,
    seen: Mutex<HashSet<(String, u64)>>,
}

impl Inbox {
    /// The inbox of user `me`.
    pub fn new(me: &str) -> Inbox {
        Inbox {
            me: me.to_string(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Accepts `envelope` if it is a fresh message to this user, signed by its sender, who is
    /// logged in (online in the directory).
    pub async fn accept(&self, envelope: &SignedMsg, directory: &Directory) -> Result<()> {
        if envelope.to != self.me {
            return Err(Error::InvalidInput(format!(
                "this message is for {}, and this is {}'s peer",
                envelope.to, self.me
            )));
        }
        let now = unix_micros();
        if envelope.seq.abs_diff(now) > FRESH_US {
            return Err(Error::Unauthorized(
                "the message is more than a minute old or ahead of this peer's clock".into(),
            ));
        }
        let not_logged_in = || {
            Error::Unauthorized(format!(
                "{} is not logged in (not online in the cloud's directory)",
                envelope.from
            ))
        };
        let entry = directory
            .entry(&envelope.from)
            .await?
            .ok_or_else(not_logged_in)?;
        if !entry.online {
            return Err(not_logged_in());
        }
        let key: PublicKey = hex::decode(&entry.key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::Protocol("the directory holds a malformed key".into()))?;
        if !verify_message(&key, &envelope.signed_bytes(), &envelope.sig) {
            return Err(Error::Unauthorized(format!(
                "the message is not signed by {}'s key",
                envelope.from
            )));
        }
        let mut seen = self.seen.lock().expect("inbox lock");
        seen.retain(|(_, seq)| seq.abs_diff(now) <= FRESH_US);
        if !seen.insert((envelope.from.clone(), envelope.seq)) {
            return Err(Error::Unauthorized("a replayed message".into()));
        }
        Ok(())
    }
}

/// Sends `msg` to `to`'s peer at `addr` and decodes its answer.
pub async fn send<T: serde::de::DeserializeOwned>(
    credential: &Credential,
    to: &str,
    addr: &str,
    msg: Msg,
) -> Result<T> {
    let envelope = SignedMsg::seal(credential, to, msg);
    let body = postcard::to_stdvec(&envelope).expect("an envelope serializes");
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let http = HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PEER_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("an HTTP client builds")
    });
    let response = http
        .post(format!("http://{addr}/p2p"))
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("{to}'s peer at {addr} does not answer: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let why = super::cloud::error_text(response).await;
        return Err(super::status_error(
            status.as_u16(),
            format!("{to}'s peer: {why}"),
        ));
    }
    super::cloud::postcard_answer(response, &format!("{to}'s peer")).await
}
