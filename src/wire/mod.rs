//! What travels between processes: framing, the handshake, the node-to-node messages and the
//! client's request types.
//!
//! How the parts fit. [`framing`] is the only place that sees bytes: every frame is a 4-byte
//! length and a postcard value. A connection opens with a [`handshake`] `Hello`: a client says
//! so, a node proves it knows the cluster secret by mutual challenge-response. After that, nodes
//! exchange [`message`] envelopes (sender, epoch, one `Message`), and clients write
//! [`request`] frames (`EncryptRequest` in, `EncryptReply` out, matched by request id).
//!
//! Implementation caveats: the protocol version is checked in the `Hello` and again on every
//! envelope read; a frame over `framing::MAX_FRAME_BYTES`, or one that does not decode, is a
//! protocol error, after which the caller closes that connection.

pub mod framing;
pub mod handshake;
pub mod message;
pub mod request;
