//! Load, measurement and demonstration: the stress test, its figures, report and plot, the
//! process launcher, the demo and the chaos scenarios.
//!
//! How the parts fit. [`launcher`] starts node processes on this machine. [`stress`] drives
//! concurrent verified load through [`crate::client`] and watches the cluster while it runs;
//! [`metrics`] turns its samples into figures, [`report`] into JSON and the console summary,
//! [`plot`] into a PNG. [`workers`] spreads a load over
//! client processes. [`trials`] is the trial loop `demo` and `client stress` share (limit,
//! K trials, combined report, outputs). [`demo`] strings them together (limit, nodes, trials,
//! outputs);
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
pub mod trials;
pub mod views;
pub mod workers;

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

/// The load flags shared by `demo` and `client stress`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct LoadArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Image each request hides (default: the built-in 9 KB photo).
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Do not decrypt and check every reply.
    #[arg(long)]
    pub no_verify: bool,
    /// Repeat the run K times; the report gives means and 95% confidence intervals.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub trials: usize,
    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE", default_value = "demo-report.json")]
    pub report: PathBuf,
    /// Where to write the plot of throughput and latency over time (PNG).
    #[arg(long, value_name = "FILE", default_value = "demo-report.png")]
    pub plot: PathBuf,
    /// Seconds a request waits for its reply before it counts as lost (at most 60: the cloud
    /// remembers a served request for 70 s).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub deadline: f64,
    /// Seconds to measure the machine's limit (the codec alone on every core); 0 skips it.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub limit_secs: f64,
}

impl LoadArgs {
    /// The image the requests hide.
    pub fn image_bytes(&self) -> crate::Result<Vec<u8>> {
        match &self.image {
            Some(path) => std::fs::read(path).map_err(|e| {
                crate::Error::Config(format!("cannot read the image {}: {e}", path.display()))
            }),
            None => Ok(crate::SAMPLE_IMAGE.to_vec()),
        }
    }

    /// The stress options for clients numbered from `first_client`.
    pub fn options(&self, image: Vec<u8>, first_client: u64) -> stress::StressOptions {
        stress::StressOptions {
            clients: self.clients,
            requests: self.requests,
            image,
            verify: !self.no_verify,
            deadline: crate::client::deadline_from_secs(self.deadline),
            first_client,
        }
    }
}
