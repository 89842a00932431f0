//! The ids every part of the crate shares: which node, which election, which moment, which
//! request. They live here, below everything else, so that no module has to import another
//! subsystem for a number (the detector and dispatcher once reached into the node for
//! `Millis`, and the message and dispatch modules into each other).

/// A node's identity in the cluster: a small positive number, unique per node.
pub type NodeId = u32;

/// An election epoch: increases with every election, fences stale coordinators.
pub type Epoch = u64;

/// Milliseconds since the driver's start: the only notion of time in the core.
pub type Millis = u64;

/// A client-chosen request id, unique per request (e.g. `c7-42`).
pub type RequestId = String;
