//! # imgcloud
//!
//! A fault-tolerant, load-balanced cloud for controlled sharing of images.
//!
//! Users send an image to the cloud to be "encrypted": a node hides it inside a cover picture
//! by LSB steganography, together with its owner and the viewers allowed to see it (each with a
//! view quota), sealed with authenticated encryption. The cloud is a few equal node
//! processes: they elect a coordinator by load (a modified Bully algorithm with epochs and
//! votes), the coordinator picks exactly one node to serve each request that clients send to
//! every node, a survivor takes over when a server dies, and a node that was silent catches up
//! with a majority before it serves again. `docs/DESIGN.md` explains every decision.
//!
//! ## Layout
//! One folder per subsystem; each `mod.rs` explains how its parts fit.
//! - [`ids`]: the ids every part shares (`NodeId`, `Epoch`, `Millis`, `RequestId`).
//! - [`wire`]: framing, the handshake, the client's request types, the protocol version.
//! - [`codec`]: pure and synchronous: stego (hiding in a cover, PNG out, revealing), seal
//!   (keys, header, authenticated encryption), metadata (owner, viewers, quotas), the default
//!   cover.
//! - [`cluster`]: the protocol core, synchronous state machines driven by messages and ticks:
//!   the node (lifecycle, election, failure simulation, recovery), the node-to-node messages,
//!   the failure detector, dispatch (who serves each request, the claim quorum), the
//!   replicated state.
//! - [`node`]: a node process's async shell, which moves bytes and timers only: the node loop
//!   ([`node::shell`]), the links to other nodes, the accept loop and client connections
//!   within bounded slots, the payload budget, the encryption pool, the HTTP API, the sharing
//!   desk ([`node::desk`]: a node's share, grant and view, the only place a sealed file is
//!   opened for a user), the node's flags ([`node::cli`]).
//! - [`client`]: the multicast client library (its table of waiting requests, one task per
//!   node connection), the status table, and the `client` binary's flags and commands
//!   ([`client::cli`]).
//! - [`watch`]: the cluster seen from outside through every node's `/status`: read once,
//!   waited on, or polled ([`watch::ClusterWatch`]); every reader of the nodes' state uses it.
//! - [`bench`]: the load flags, the stress test (in one process or spread over worker
//!   processes), the trial loop the demo and `client stress` share, its metrics, report and
//!   plot, the process launcher (the demo, chaos and the tests' clusters use it), the demo
//!   and the chaos scenarios.
//! - [`config`]: the cluster configuration (TOML, defaults); [`setup`]: what every binary sets
//!   up (logging, runtime, allocator, shutdown); [`error`]: the one error type.
//!
//! Phase 2 (users, the directory):
//! - [`store`]: the durable consensus store, openraft over one redb file per node.
//! - [`sharing`]: accounts, the directory and the view ledger: the state machine the store
//!   replicates, who may view a copy, and the bodies peers send nodes.
//! - [`peer`]: a user's peer process: registration, lease, sharing, P2P messages, its HTTP
//!   port, the `peer` CLI.
//! - [`web`]: the user's gallery and the node's live dashboard (embedded HTML, CSS, JS).

pub mod bench;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod error;
pub mod ids;
pub mod node;
pub mod peer;
pub mod setup;
pub mod sharing;
pub mod store;
pub mod watch;
pub mod web;
pub mod wire;

pub use error::{Error, Result};

/// The built-in test image (an 80x54 photo, about 9 KB of PNG) that `client ID N`, the stress
/// test and the demo send when given no image of their own.
pub const SAMPLE_IMAGE: &[u8] = include_bytes!("../assets/sample.png");
