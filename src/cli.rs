//! Command-line definitions shared by the binaries: the node's flags (used by `cloud-node`
//! and by `demo`, which runs itself as a node) and logging set-up.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};
use serde::Serialize;

use crate::codec::seal::{DEV_SECRET, DEV_SECRET_WARNING};
use crate::config::{ClusterConfig, DEFAULT_BASE_PORT};

/// One node of the imgcloud cluster.
///
/// With no flags, node ID of the default 3-node loopback cluster: node i listens for peers and
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
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Peer port of node 1 in the generated cluster; node i uses BASE+i-1, HTTP 1000 above.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Cluster secret (authenticates peers, keys the image payloads).
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
    /// Silence after which a peer is suspected, in milliseconds (the adaptive floor).
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

/// A switch flag's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

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
    pub fn options(
        &self,
        image: Vec<u8>,
        first_client: u64,
    ) -> crate::bench::stress::StressOptions {
        crate::bench::stress::StressOptions {
            clients: self.clients,
            requests: self.requests,
            image,
            verify: !self.no_verify,
            deadline: crate::client::deadline_from_secs(self.deadline),
            first_client,
        }
    }
}

/// Sets up logging to stderr (`RUST_LOG`, default `info`), coloured only on a terminal.
pub fn init_logging() {
    let from_env = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !from_env.contains("openraft") {
        // openraft warns about every stale vote response of an election: not news to an operator.
        filter = filter.add_directive("openraft=error".parse().expect("a valid directive"));
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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

/// Ends a binary's runtime once its work has returned, without waiting for blocking threads:
/// the one reading standard input for `--parent-watch` never returns by itself, and waiting
/// for it (as `shutdown_timeout` does) only delays the exit. Everything the process had to
/// finish (the store's shutdown, a peer's unregistration) was awaited before.
pub fn stop_runtime(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_background();
}

/// The async runtime of every binary: one thread runs all tasks (network I/O, the protocol,
/// the stress test's clients); image work runs on the blocking pool, at most two threads per
/// core. Three nodes and a load generator share two cores in the demo, and a scheduler thread
/// per core in every process only adds hand-offs between them (DESIGN.md, "One runtime thread
/// per process"). Also tunes the allocator ([`tune_allocator`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune_allocator();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2 * cores + 2)
        .build()
}

/// Keeps freed memory in the process. By default glibc gives a thread's free heap top back to
/// the kernel as soon as it passes 128 KiB, which with 10-100 KB request and reply buffers
/// meant one `madvise` per request and page faults to take the memory back for the next:
/// 40 % of the CPU per request in the demo (DESIGN.md, "Memory allocator"). Here memory is
/// returned only past 256 MiB of free space, and blocks under 32 MiB come from the heap, not
/// from fresh `mmap`s.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's malloc parameters; any value is valid to pass, and a
    // refused one leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// Gives the allocator's free memory back to the system now (after a burst of big payloads:
/// [`crate::node::budget::Budget::drained_after_load`]). Takes a few milliseconds.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
