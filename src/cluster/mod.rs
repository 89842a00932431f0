//! The cluster's protocol core: synchronous state machines, driven by messages and ticks.
//! Nothing here touches a socket or a clock; the async shell ([`crate::node`]) and the
//! deterministic simulator of the scenario tests drive the same code.
//!
//! How the parts fit. [`node`] is one node's core: its lifecycle (Recovering, Active,
//! Failed), the election, the failure simulation and recovery, one file each; it routes
//! requests to [`dispatch`] (which node serves each request, reassignment after a failure) and
//! finished jobs to [`claims`] (the quorum that lets at most one node reply), asks the
//! [`detector`] whether a member is alive, and keeps the replicated record in [`state`] (a
//! CRDT merged by anti-entropy). Nodes speak in [`message`] envelopes, the core's own types.
//! Every decision comes back to the shell as `Output`s to send and `Event`s to print.
//!
//! Implementation caveats: time is `Millis` passed in by the driver; randomness (the victim
//! choice) comes from a seeded generator, so a simulation replays exactly.

pub mod claims;
pub mod detector;
pub mod dispatch;
pub mod log;
pub mod message;
pub mod node;
pub mod state;
