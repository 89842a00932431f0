//! What travels between processes: framing, the handshake, the node-to-node messages and the
//! client's request types.
//!
//! How the parts fit. [`framing`] is the only place that sees bytes: every frame is a 4-byte
//! length and a postcard value. A connection opens with a [`handshake`] `Hello`: a client says
//! so, a node proves it knows the cluster secret by mutual challenge-response. After that, nodes
//! exchange the core's envelopes ([`crate::cluster::message`]), and clients write
//! [`request`] frames (`EncryptRequest` in, `EncryptReply` out, matched by request id).
//!
//! Implementation caveats: the protocol version is checked in the `Hello` and again on every
//! envelope read; a frame over `framing::MAX_FRAME_BYTES`, or one that does not decode, is a
//! protocol error, after which the caller closes that connection.

pub mod framing;
pub mod handshake;
pub mod request;

/// The version of the protocol (the handshake, the node messages, the client's requests); a
/// process speaking another one is refused.
/// Version 2: `Served` became the batched `Claims` (claim quorum before a reply). Version 3:
/// `ClaimBatch::withdrawn` (a node entering a simulated failure gives up its open claims).
/// Version 4: the request log by generation (commits and heartbeats carry generations, a
/// sync request the requester's summaries). Version 5: `EncryptRequest::resent_after`
/// (a lost reply is served again). Version 6: it lists every node whose connection closed.
/// Version 7: the store's ledger rows (in snapshots) carry `Grant::revoked`.
pub const PROTOCOL_VERSION: u16 = 8;
