//! A user's peer process (phase 2): registers with the cloud and keeps its lease, serves its
//! HTTP port, and answers the `peer` subcommands.

pub mod cloud;

pub use cloud::Cloud;
