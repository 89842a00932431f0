//! What a peer sends a node to share an image, change a grant or spend a view, and what it
//! gets back: the postcard bodies of `POST /share`, `POST /grant` and `POST /view`.
//!
//! Each request is a signed operation with the file it names by digest (the encrypted image,
//! or the viewer's copy). The node checks the digest, opens the file with the cluster key,
//! and puts what it read next to the operation in the log ([`super::Sealed`]).

use serde::{Deserialize, Serialize};

use super::SignedOp;

/// The body of `POST /share`, `/grant` and `/view`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithFile {
    /// The signed operation (its `file` field is the SHA-256 of `file`).
    pub op: SignedOp,
    /// The encrypted image or the copy.
    #[serde(with = "serde_bytes")]
    pub file: Vec<u8>,
}

/// The answer to `POST /share`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedAnswer {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The answer to `POST /grant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantAnswer {
    /// The viewer's views left now.
    pub views_left: u32,
    /// The grant's version now.
    pub version: u64,
    /// The viewer's copy with its count inside (none after a revoke).
    #[serde(with = "serde_bytes")]
    pub copy: Option<Vec<u8>>,
}

/// What a view showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shown {
    /// The hidden image.
    Image,
    /// The default image (the cover): no view was spent.
    Default,
}

/// The answer to `POST /view`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewAnswer {
    /// What the viewer gets.
    pub shown: Shown,
    /// Why the default image, in a sentence.
    pub reason: Option<String>,
    /// Views left after this one (none for the owner, who views freely).
    pub views_left: Option<u32>,
    /// The image shown, the hidden image's own bytes or the default image, sealed to the
    /// requesting user's key (`account::seal_to`; the peer opens it with its credential).
    #[serde(with = "serde_bytes")]
    pub image: Vec<u8>,
    /// The viewer's copy rewritten with the new count inside (after a spent view).
    #[serde(with = "serde_bytes")]
    pub copy: Option<Vec<u8>>,
}

/// The answer to a [`super::Query`] (the postcard body of `POST /query`'s reply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The letters in the asker's mailbox, by number.
    Mail(Vec<(u64, super::Letter)>),
    /// The asker's images and grants.
    Holdings(Holdings),
    /// The asker's own encrypted image.
    File(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A fresh copy, with the grant as the ledger has it now.
    Copy {
        /// The copy.
        #[serde(with = "serde_bytes")]
        copy: Vec<u8>,
        /// Views left.
        views_left: u32,
        /// The grant's version.
        version: u64,
    },
}

/// What the ledger holds of one user: what they own and what they were granted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    /// The user's own images, with receipts.
    pub own: Vec<OwnHolding>,
    /// The images the user may view.
    pub granted: Vec<GrantHolding>,
}

/// One of the user's own images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnHolding {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Each viewer's receipt.
    pub viewers: Vec<Receipt>,
}

/// One viewer's use of one image, as the owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The viewer.
    pub viewer: String,
    /// Views spent.
    pub views_used: u64,
    /// Views left.
    pub views_left: u32,
    /// Revoked by the owner (the counts are the history).
    pub revoked: bool,
}

/// One grant the user holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantHolding {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Views left.
    pub views_left: u32,
    /// The grant's version.
    pub version: u64,
}
