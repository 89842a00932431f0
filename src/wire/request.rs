//! What clients ask of the cloud and what they get back, as sent on the wire.
//!
//! A client opens a connection to a node with `Hello::Client`, then writes
//! [`EncryptRequest`] frames and reads [`EncryptReply`] frames, matched by request id, in any
//! order. The same request goes to every node; exactly one of them answers it.

use serde::{Deserialize, Serialize};

use crate::codec::metadata::Viewer;
use crate::ids::{NodeId, RequestId};
use crate::Error;

/// The longest request id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Encrypt `secret` for `owner` and `viewers`, hidden in `cover` (or the default cover).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncryptRequest {
    /// Unique per request; the same id sent twice is served once.
    pub id: RequestId,
    /// The encoded secret image (any format the `image` crate decodes).
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
    /// The encoded cover image, or None for the default cover.
    #[serde(with = "serde_bytes")]
    pub cover: Option<Vec<u8>>,
    /// The image's owner.
    pub owner: String,
    /// Who may view it, with view quotas.
    pub viewers: Vec<Viewer>,
    /// On a copy the client sends again: the nodes whose connections to the client closed
    /// while the request waited for its reply. Should the request log name one of them as
    /// the request's server, its reply is lost with the connection, and the node that
    /// receives the copy serves it again (DESIGN.md, "Winner dies after its commit").
    pub resent_after: Vec<NodeId>,
}

impl EncryptRequest {
    /// The bytes of its images (what a node's payload budget counts).
    pub fn payload_len(&self) -> usize {
        self.secret.len() + self.cover.as_ref().map_or(0, Vec::len)
    }

    /// The id of an encoded request, read from its first bytes alone (the id leads the
    /// encoding): what the refusal of a frame never read whole names.
    pub fn id_of(head: &[u8]) -> crate::Result<RequestId> {
        postcard::take_from_bytes::<RequestId>(head)
            .map(|(id, _)| id)
            .map_err(|e| crate::Error::Protocol(format!("a request without a readable id: {e}")))
    }
}

/// Why a request was not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The request itself is wrong (not an image, cover too small, bad metadata): do not retry.
    BadInput,
    /// The request is over the size limit.
    TooLarge,
    /// The cluster cannot serve now (no coordinator with a majority, shutting down).
    Unavailable,
    /// The server failed unexpectedly.
    Internal,
}

impl Refusal {
    /// The HTTP status that carries this refusal.
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::BadInput => 400,
            Refusal::TooLarge => 413,
            Refusal::Unavailable => 503,
            Refusal::Internal => 500,
        }
    }

    /// The refusal for a library error.
    pub fn of(error: &Error) -> Refusal {
        match error {
            Error::Unavailable(_) | Error::Timeout(_) => Refusal::Unavailable,
            Error::Io(_) | Error::Protocol(_) | Error::Config(_) | Error::Internal(_) => {
                Refusal::Internal
            }
            _ => Refusal::BadInput,
        }
    }
}

/// The result of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The PNG with the hidden image.
    Encrypted(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Not served, with the reason in words.
    Refused {
        /// The kind of refusal.
        kind: Refusal,
        /// What went wrong, as a sentence.
        message: String,
    },
}

/// A node's answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncryptReply {
    /// The request answered.
    pub id: RequestId,
    /// The node that served it.
    pub served_by: NodeId,
    /// The result.
    pub outcome: Outcome,
}
