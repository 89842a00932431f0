//! Load, measurement and demonstration: the stress test, its figures, report and plot, the
//! process launcher, the demo and the chaos scenarios.
//!
//! How the parts fit. [`launcher`] starts node processes on this machine. [`stress`] drives
//! concurrent verified load through [`crate::client`] and watches the cluster while it runs;
//! [`metrics`] turns its samples into figures, [`report`] into JSON and the console summary,
//! [`plot`] into a PNG. [`demo`] strings them together (limit, nodes, trials, outputs);
//! [`chaos`] injects real faults (kill, stop, restart, partition) under the same load.
//!
//! Implementation caveats: everything here runs on the operator's machine next to the nodes,
//! so measured limits include the load generator's own cost.

pub mod chaos;
pub mod demo;
pub mod launcher;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod sharing;
pub mod storyboard;
pub mod stress;
pub mod views;
