//! The member protocol's messages: one enum, carried in an [`Envelope`] that names the sender and
//! its election epoch.
//!
//! Every variant says who sends it and why. The messages are the core's own (they carry its
//! state, log and assignments), so they live beside it; bytes never appear here: framing and
//! encoding live in [`crate::wire::framing`], authentication in [`crate::wire::handshake`].

use serde::{Deserialize, Serialize};

use crate::cluster::dispatch::Assignment;
use crate::cluster::log::{Gen, GenSummary};
use crate::cluster::state::{Counters, FailureRecord, ReplicatedState};
use crate::ids::{Epoch, NodeId, RequestId};
use crate::wire::request::{EncryptReply, EncryptRequest};
use crate::{Error, Result};

pub use crate::wire::PROTOCOL_VERSION;

/// A node's lifecycle state, as shown in `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving: takes part in elections and serves requests.
    Active,
    /// Simulated failure: ignores every member and client until its time is up.
    Failed,
    /// Catching up with a majority of members before serving again.
    Recovering,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A message with its sender and the sender's epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`PROTOCOL_VERSION`]; decoding checks it first.
    pub version: u16,
    /// The sending node.
    pub from: NodeId,
    /// The sender's epoch (for `Election`, the epoch it asks votes for).
    pub epoch: Epoch,
    /// The payload.
    pub message: Message,
}

impl Envelope {
    /// `message` from node `from` in its epoch `epoch`, in this build's protocol version: the
    /// one way envelopes are made.
    pub fn new(from: NodeId, epoch: Epoch, message: Message) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            from,
            epoch,
            message,
        }
    }
}

/// What a node sends in every heartbeat: liveness plus its view of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's state.
    pub state: NodeState,
    /// The sender's measured load.
    pub load: f64,
    /// The sender's measured service time per request per worker, in seconds.
    pub cost: f64,
    /// The coordinator the sender follows in `Envelope::epoch`, if any.
    pub coordinator: Option<NodeId>,
    /// Digest of the sender's replicated state (anti-entropy compares them).
    pub digest: String,
    /// The sender's own counters (they converge through heartbeats).
    pub counters: Counters,
    /// The sender's current request-log generation (all nodes follow the highest).
    pub log_gen: Gen,
}

/// What a node knows, sent to a recovering or diverged member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The sender's state.
    pub state: NodeState,
    /// The coordinator the sender follows in `Envelope::epoch`.
    pub coordinator: Option<NodeId>,
    /// Every node's state as the sender sees it.
    pub members: Vec<(NodeId, NodeState)>,
    /// The sender's replicated state, its request log reduced to the generations that differ
    /// from the requester's.
    pub replicated: ReplicatedState,
}

/// Claims, answers and commits of finished requests, for one member (see [`crate::cluster::dispatch`]).
/// They flow at thousands per second, so the core gathers them per member and sends them as one
/// message per flush (after each burst of inputs, and every tick); at idle a flush follows every
/// input, so batching adds no latency. Claims are not fenced by epoch: a node's vote, not its
/// epoch, decides who replies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimBatch {
    /// Requests the sender finished: "hold me as their winner, unless you hold another".
    pub claims: Vec<RequestId>,
    /// Answers to the receiver's claims: each request with the winner the sender holds (the
    /// request log's entry if it is committed, else the sender's first-come vote).
    pub acks: Vec<(RequestId, NodeId)>,
    /// Committed requests, each with its server (a majority held it as the winner; it has
    /// replied), and the log generation of the commit: log it, forget the request. Sent by
    /// the server, and by a coordinator to a node that reports a request the log already has.
    pub served: Vec<(RequestId, NodeId, Gen)>,
    /// Claims the sender gives up without a verdict (it is entering a simulated failure and
    /// dropped their results): it will never reply to them, so a vote for it can go.
    pub withdrawn: Vec<RequestId>,
}

impl ClaimBatch {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
            && self.acks.is_empty()
            && self.served.is_empty()
            && self.withdrawn.is_empty()
    }
}

/// The member protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Every node to every member, every heartbeat interval (not while Failed).
    Heartbeat(Heartbeat),
    /// A candidate to every member: "vote for me in epoch `Envelope::epoch`, and tell me your load"
    /// (the Bully algorithm's Election and LoadQuery in one).
    Election,
    /// A member's answer to `Election` (Bully's Ok and LoadResponse): its load, and whether it
    /// grants its one vote of that epoch to the candidate. `Envelope::epoch` is the highest
    /// epoch the member knows, so a candidate that is behind learns it.
    ElectionOk {
        /// The epoch of the election this answers.
        round: Epoch,
        /// Whether the vote is granted.
        granted: bool,
        /// The member's load when it answered.
        load: f64,
    },
    /// The candidate that won a majority of votes, to every member: the coordinator of the
    /// epoch, chosen as the lowest load among the voters (ties by id).
    Coordinator {
        /// The new coordinator.
        coordinator: NodeId,
        /// Every answering node's load, as the candidate saw them.
        loads: Vec<(NodeId, f64)>,
    },
    /// The coordinator to every member: the named victim fails now for the given time.
    Fail(FailureRecord),
    /// The coordinator to every member: who serves a request (see [`crate::cluster::dispatch`]).
    Assign(Assignment),
    /// Claims of finished requests, answers to claims, and commits, batched per member
    /// ([`ClaimBatch`]). A server replies to a client only once a majority names it.
    Claims(ClaimBatch),
    /// A node chosen to serve a request it does not have, to the coordinator: choose another.
    Decline {
        /// The request.
        id: RequestId,
    },
    /// A node holding requests nobody assigned, to the coordinator (which may never have
    /// received them).
    Unassigned {
        /// The requests.
        ids: Vec<RequestId>,
    },
    /// A node that received a request alone (plain HTTP), to every member: hold it too.
    Forward(Box<EncryptRequest>),
    /// The server of a forwarded request to the node that received it: the answer.
    Reply(Box<EncryptReply>),
    /// A recovering node, or one whose digest differs, to a member: "send me what you know",
    /// with the summaries of its request log's generations (the answer holds those that differ).
    SyncRequest(Vec<GenSummary>),
    /// The answer to `SyncRequest`.
    SyncResponse(Box<Snapshot>),
}

impl Message {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Heartbeat(_) => "Heartbeat",
            Message::Election => "Election",
            Message::ElectionOk { .. } => "ElectionOk",
            Message::Coordinator { .. } => "Coordinator",
            Message::Fail(_) => "Fail",
            Message::Assign(_) => "Assign",
            Message::Claims(_) => "Claims",
            Message::Decline { .. } => "Decline",
            Message::Unassigned { .. } => "Unassigned",
            Message::Forward(_) => "Forward",
            Message::Reply(_) => "Reply",
            Message::SyncRequest(_) => "SyncRequest",
            Message::SyncResponse(_) => "SyncResponse",
        }
    }
}

/// Decodes a member envelope, checking the protocol version first.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope> {
    let (version, _): (u16, _) = postcard::take_from_bytes(bytes)
        .map_err(|e| Error::Protocol(format!("undecodable frame of {} bytes: {e}", bytes.len())))?;
    if version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "member speaks protocol version {version}, this node speaks {PROTOCOL_VERSION}"
        )));
    }
    crate::wire::framing::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::encode;

    #[test]
    fn envelopes_round_trip_and_versions_are_checked() {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            from: 2,
            epoch: 9,
            message: Message::Election,
        };
        let bytes = encode(&envelope).unwrap();
        assert_eq!(decode_envelope(&bytes).unwrap(), envelope);
        let other = Envelope {
            version: PROTOCOL_VERSION + 1,
            ..envelope
        };
        let err = decode_envelope(&encode(&other).unwrap()).unwrap_err();
        assert!(err.to_string().contains("protocol version"), "{err}");
        assert!(decode_envelope(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_envelope(&[]).is_err());
    }
}
