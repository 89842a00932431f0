//! The `cloud-node` flags ([`NodeArgs`], also taken by `demo`, which runs itself as a node)
//! and [`run_node`], which runs one node process from them.

use std::path::PathBuf;

use clap::Parser;

use crate::codec::seal::{DEV_SECRET, DEV_SECRET_WARNING};
use crate::config::{ClusterConfig, DEFAULT_BASE_PORT, DEFAULT_NODES};
use crate::setup::{runtime, shutdown_signal, stop_runtime, OnOff};

/// One node of the imgcloud cluster.
///
/// With no flags, node ID of the default 3-node loopback cluster: node i listens for members and
/// clients on 127.0.0.1:800i and serves HTTP (/status, /metrics) on 127.0.0.1:900i.
#[derive(Parser, Debug)]
#[command(name = "cloud-node", version, about, long_about = None)]
pub struct NodeArgs {
    /// This node's id (1-based).
    pub id: u32,
    /// TOML cluster configuration (nodes, secret, timing, failures); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Size of the generated loopback cluster (ignored with --config).
    #[arg(long, default_value_t = DEFAULT_NODES)]
    pub nodes: u32,
    /// Protocol port of node 1 in the generated cluster; node i uses BASE+i-1, HTTP 1000 above.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Cluster secret (authenticates members, keys the image payloads).
    #[arg(long, env = "IMGCLOUD_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The elected-victim failure simulation.
    #[arg(long, value_enum)]
    pub failures: Option<OnOff>,
    /// Seconds between two simulated failures.
    #[arg(long, value_name = "SECS")]
    pub failure_period: Option<f64>,
    /// Longest simulated failure, in seconds.
    #[arg(long, value_name = "SECS")]
    pub failure_max: Option<f64>,
    /// Heartbeat interval in milliseconds.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Silence after which a member is suspected, in milliseconds (the adaptive floor).
    #[arg(long)]
    pub suspect_ms: Option<u64>,
    /// Simulated processing delay added to every encryption, in milliseconds.
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// Encryption worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// How the nodes pick each request's server: `elected` (the product: a coordinator by
    /// load, the claim quorum, the request log) or `static-split` (the baseline simpler
    /// designs use: the node the request id hashes to serves it; no fault tolerance, needs
    /// --failures off; `demo` measures it before its load).
    #[arg(long, value_enum)]
    pub dispatch: Option<crate::config::Dispatch>,
    /// Megabytes of request payloads this node holds at once (uploads being read or waiting
    /// for their answer, copies from other nodes); beyond, it refuses at once: HTTP 503 with
    /// Retry-After (default 64).
    #[arg(long, value_name = "MB")]
    pub payload_budget_mb: Option<u64>,
    /// Exit when standard input closes (set by launchers so no node outlives them).
    #[arg(long)]
    pub parent_watch: bool,
    /// Seed of this node's random choices (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where this node keeps its durable store (default: the config's data_dir/node-ID, else
    /// imgcloud-data/node-ID under the working directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Runs a node process as the flags say, until Ctrl-C, SIGTERM or (with `--parent-watch`)
/// the end of standard input.
pub fn run_node(args: NodeArgs) -> crate::Result<()> {
    let mut config = match &args.config {
        Some(path) => ClusterConfig::load(path)?,
        None => ClusterConfig {
            nodes: ClusterConfig::local_nodes(args.nodes, args.base_port),
            ..Default::default()
        },
    };
    if let Some(secret) = args.secret {
        config.secret = secret;
    }
    if config.secret.is_empty() {
        eprintln!("cloud-node: {DEV_SECRET_WARNING}");
        config.secret = DEV_SECRET.to_string();
    }
    if let Some(f) = args.failures {
        config.failures.enabled = f == OnOff::On;
    }
    if let Some(p) = args.failure_period {
        config.failures.period_s = p;
    }
    if let Some(m) = args.failure_max {
        config.failures.max_s = m;
    }
    if let Some(h) = args.heartbeat_ms {
        config.timing.heartbeat_ms = h;
    }
    if let Some(s) = args.suspect_ms {
        config.timing.suspect_ms = s;
    }
    if let Some(d) = args.delay_ms {
        config.delay_ms = d;
    }
    if let Some(w) = args.workers {
        config.workers = w;
    }
    if let Some(d) = args.dispatch {
        config.dispatch = d;
    }
    if let Some(mb) = args.payload_budget_mb {
        config.payload_budget_mb = mb;
    }
    config.validate()?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let watch = args.parent_watch;
    let shutdown = async move {
        if watch {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = crate::node::stdin_closed() => {}
            }
        } else {
            shutdown_signal().await
        }
    };
    let runtime = runtime()?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| config.node_data_dir(args.id));
    let result = runtime.block_on(crate::node::run(config, args.id, seed, data_dir, shutdown));
    stop_runtime(runtime);
    result
}
