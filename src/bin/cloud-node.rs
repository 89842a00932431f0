//! `cloud-node ID`: runs one node of the cluster until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use imgcloud::config::{ClusterConfig, DEFAULT_BASE_PORT};

/// One node of the imgcloud cluster.
///
/// With no flags, node ID of the default 3-node loopback cluster: node i listens for peers and
/// clients on 127.0.0.1:800i and serves HTTP (/status, /metrics) on 127.0.0.1:900i.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// This node's id (1-based).
    id: u32,
    /// TOML cluster configuration (nodes, secret, timing, failures); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Size of the generated loopback cluster (ignored with --config).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Peer port of node 1 in the generated cluster; node i uses BASE+i-1, HTTP 1000 above.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Cluster secret (authenticates peers, keys the image payloads).
    #[arg(long, env = "IMGCLOUD_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The elected-victim failure simulation.
    #[arg(long, value_enum)]
    failures: Option<OnOff>,
    /// Seconds between two simulated failures.
    #[arg(long, value_name = "SECS")]
    failure_period: Option<f64>,
    /// Longest simulated failure, in seconds.
    #[arg(long, value_name = "SECS")]
    failure_max: Option<f64>,
    /// Heartbeat interval in milliseconds.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Silence after which a peer is suspected, in milliseconds (the adaptive floor).
    #[arg(long)]
    suspect_ms: Option<u64>,
    /// Simulated processing delay added to every encryption, in milliseconds.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Encryption worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Seed of this node's random choices (default: random).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("cloud-node: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> imgcloud::Result<()> {
    let mut config = match &args.config {
        Some(path) => ClusterConfig::load(path)?,
        None => ClusterConfig { nodes: ClusterConfig::local_nodes(args.nodes, args.base_port), ..Default::default() },
    };
    if let Some(secret) = args.secret {
        config.secret = secret;
    }
    if config.secret.is_empty() {
        eprintln!("cloud-node: {}", imgcloud::seal::DEV_SECRET_WARNING);
        config.secret = imgcloud::seal::DEV_SECRET.to_string();
    }
    if let Some(f) = args.failures {
        config.failures.enabled = matches!(f, OnOff::On);
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
    config.validate()?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(imgcloud::server::run(config, args.id, seed, shutdown_signal()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
