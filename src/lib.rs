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
//! The codec (pure, synchronous):
//! - [`stego`]: hiding a sealed payload in a cover's low bits (PNG out) and revealing it.
//! - [`seal`]: key derivation from the cluster secret, the payload header, and authenticated encryption.
//! - [`metadata`]: owner, viewers with view quotas, image id and format version hidden with an image.
//! - [`cover`]: the default procedural landscape cover and its cache.
//!
//! The node's protocol core (synchronous state machines, driven by messages and ticks):
//! - [`node`]: lifecycle, election, failure simulation, recovery; routes to the parts below.
//! - [`detector`]: the phi-accrual-style failure detector.
//! - [`dispatch`]: which node serves each request, reassignment after failures.
//! - [`state`]: the replicated record (a CRDT) and its digest.
//! - [`message`]: the peer protocol's messages in their envelope.
//!
//! The node's async shell:
//! - [`server`]: the node loop, peer links, accept loop, client connections.
//! - [`connection`]: framing; [`handshake`]: peer authentication.
//! - [`pool`]: the bounded encryption workers and the measured load.
//! - [`http`]: `POST /encrypt`, `GET /status`, `GET /metrics`.
//! - [`config`]: the cluster configuration (TOML, defaults).
//!
//! Clients, the stress test and the demo:
//! - [`client`]: the multicast client library and the status table; [`request`]: its wire types.
//! - [`stress`]: concurrent verified load, cluster watching, the machine's limit.
//! - [`metrics`]: stress-test samples, whole-run figures, the 100 ms timeline, confidence intervals.
//! - [`report`]: the stress-test report as JSON and as the console summary, and trial combination.
//! - [`plot`]: the stress-test PNG: throughput, latency and per-node load over time, failures shaded.
//! - [`launcher`]: node processes started and stopped by the demo and benchmarks.
//! - [`demo`]: the demo's orchestration; [`cli`]: flags shared by the binaries.
//! - [`chaos`]: real faults (kill, stop, restarts, a partition) against node processes under load.
//! - [`error`]: the one error type.
//!
//! Phase 2 (users, the directory), one folder per subsystem:
//! - [`store`]: the durable consensus store, openraft over one redb file per node.
//! - [`sharing`]: accounts, the directory and the view ledger: the state machine the store
//!   replicates, and the bodies peers send nodes.
//! - [`desk`]: a node's share, grant and view (the only place a sealed file is opened for a user).
//! - [`peer`]: a user's peer process: registration, lease, sharing, P2P messages, its HTTP
//!   port, the `peer` CLI.
//! - [`web`]: the user's gallery and the node's live dashboard (embedded HTML, CSS, JS).

pub mod chaos;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod cover;
pub mod demo;
pub mod desk;
pub mod detector;
pub mod dispatch;
pub mod error;
pub mod handshake;
pub mod http;
pub mod launcher;
pub mod message;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod plot;
pub mod pool;
pub mod report;
pub mod request;
pub mod seal;
pub mod server;
pub mod sharing;
pub mod state;
pub mod stego;
pub mod store;
pub mod stress;
pub mod web;

pub use error::{Error, Result};

/// The built-in test image (an 80x54 photo, about 9 KB of PNG) that `client ID N`, the stress
/// test and the demo send when given no image of their own.
pub const SAMPLE_IMAGE: &[u8] = include_bytes!("../assets/sample.png");
