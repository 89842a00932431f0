//! A node process's async shell: sockets, timers and tasks around the synchronous core in
//! [`crate::cluster`]. The shell moves bytes; the core decides.
//!
//! How the parts fit. [`server`] runs the node: the accept loop (handshake, then a node link or
//! a client connection), the links to the other nodes, and the node loop that owns the core,
//! feeds it messages and ticks and carries out its outputs. Encryption jobs go to the bounded
//! worker [`pool`], which also measures the load the election and dispatch compare. [`http`]
//! serves `POST /encrypt`, `GET /status` and `GET /metrics` from the status the node loop
//! publishes, plus the phase-2 user routes (see [`crate::desk`]).
//!
//! Implementation caveats: the node loop is one task that owns the core; links are one-way
//! (each node dials every other), and while a link is down its envelopes are dropped, which the
//! protocol tolerates; its commits are kept and written once it is up again ([`link`]).

pub mod budget;
pub mod http;
pub mod link;
pub mod pool;
pub mod server;
pub mod slots;
