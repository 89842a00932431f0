//! The demo: the one command that shows everything the system does.
//!
//! 1. Measures the machine's limit: the codec alone, in-process, on every core.
//! 2. Starts the nodes as separate OS processes (this binary, run as `demo node ID`), with a
//!    fresh cluster secret, and waits for their first election, whose result they print.
//! 3. Runs the stress test (K trials), with the elected-victim failure simulation on by
//!    default, while echoing every election and state change the nodes print. With failures
//!    on, each trial's load lasts until a failure has begun and ended inside it
//!    ([`stress::trial_through_failure`]): every client sends its `--requests`, then all go on
//!    until the cluster's own victim has failed and recovered, plus half a second, bounded by
//!    [`failure_limit`]. On a fast machine the load would otherwise end before the first
//!    failure.
//! 4. Prints the summary, writes the JSON report and the plot.
//! 5. Tells the sharing story with three users' peers and runs the view load
//!    ([`crate::bench::sharing`], `--sharing off` skips both), adds them to the report as
//!    `sharing` and draws the story's picture ([`crate::bench::storyboard`]).
//! 6. Keeps observing the cluster for `--observe` seconds, with a status line every few
//!    seconds, then stops every process it started; exits 1 if the story failed.
//!
//! Implementation caveats: the nodes, the load generator and the limit measurement share one
//! machine, as in the seed project; the limit is measured before the nodes start.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::bench::launcher::{LineSink, LocalCluster};
use crate::bench::metrics::SampleOutcome;
use crate::bench::report::Report;
use crate::bench::sharing::{Cast, Story};
use crate::bench::stress::{self, Progress, Trial};
use crate::bench::trials::{measure_limit, run_trials, write_report, Yardsticks};
use crate::bench::LoadArgs;
use crate::cluster::node::{MIN_FAILURE_MS, VICTIM_SETTLE_MS};
use crate::codec::seal::SealKey;
use crate::config::{ClusterConfig, Dispatch, FirstVictim, NodeAddr, DEFAULT_BASE_PORT};
use crate::node::cli::NodeArgs;
use crate::setup::OnOff;
use crate::watch::{cluster_status, wait_for_agreement};
use crate::{Error, Result};

/// How often the observation phase prints a status line.
const OBSERVE_EVERY: Duration = Duration::from_secs(5);
/// How long the demo waits for the first election.
const FIRST_ELECTION_WAIT: Duration = Duration::from_secs(15);
/// Slack on top of the longest a failure can take to come and go (see [`failure_limit`]).
const FAILURE_SLACK: Duration = Duration::from_secs(5);

/// Runs the whole imgcloud demo on this machine: nodes as processes, an election, a verified
/// stress test with simulated failures, a report and a plot; then stops everything it started.
#[derive(Parser, Debug, Serialize)]
#[command(name = "demo", version, about, long_about = None)]
pub struct DemoArgs {
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<DemoCommand>,
    /// Nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Simulated processing delay per encryption, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// The elected-victim failure simulation.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub failures: OnOff,
    /// Seconds between simulated failures. With failures on, the load goes on past its
    /// requests until one failure has come and gone.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub failure_period: f64,
    /// Longest simulated failure, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 6.0)]
    pub failure_max: f64,
    /// Measure the static split first (each request served by the node its id hashes to; no
    /// election, claims, commits or fault tolerance) with the same clients, image and node
    /// processes: the report's `baseline_rps`, and `efficiency` against it.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub baseline: OnOff,
    /// Who fails first: the coordinator (every request then waits on a silent coordinator),
    /// a worker, or any node; later victims are drawn among every node.
    #[arg(long, value_enum, default_value_t = FirstVictim::Any)]
    pub first_victim: FirstVictim,
    /// The sharing story after the stress test: three users' peers share, ask, approve, view
    /// to zero, go offline, rebuild, and outlive a kill -9 of every node.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub sharing: OnOff,
    /// Viewers in the view load after the story (0: no load).
    #[arg(long, default_value_t = 50)]
    pub viewers: usize,
    /// Views granted to, and spent by, each viewer of the view load.
    #[arg(long, default_value_t = 40)]
    pub views: u32,
    /// Where the sharing story's picture goes: what each user saw at each step.
    #[arg(long, value_name = "FILE", default_value = "demo-sharing.png")]
    pub sharing_picture: PathBuf,
    /// Seconds to keep observing the cluster at the end.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub observe: f64,
    /// Seed of the nodes' random choices (victims, durations).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Peer port of node 1; node i uses BASE+i-1 and HTTP 1000 above (to run beside another cluster).
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Folder for the cluster's config and node logs (default: a fresh one under the temp dir).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// The demo's hidden subcommand.
#[derive(Subcommand, Debug)]
pub enum DemoCommand {
    /// Run as one node (the demo starts its nodes this way).
    #[command(hide = true)]
    Node(NodeArgs),
    /// Run as a user's peer or one of its subcommands (the sharing story starts its users
    /// this way).
    #[command(hide = true)]
    Peer(crate::peer::cli::PeerArgs),
}

/// A progress bar slot that node output can print above.
type Bar = Arc<Mutex<Option<ProgressBar>>>;

fn say(bar: &Bar, line: &str) {
    match bar.lock().ok().and_then(|b| b.clone()) {
        Some(b) => b.println(line),
        None => println!("{line}"),
    }
}

/// Runs the demo; returns the report.
pub async fn run(args: DemoArgs) -> Result<Report> {
    let image = args.load.image_bytes()?;
    if args.nodes == 0 || args.load.clients == 0 || args.load.trials == 0 {
        return Err(Error::InvalidInput(
            "--nodes, --clients and --trials must be at least 1".into(),
        ));
    }
    println!(
        "imgcloud demo: {} nodes, {} clients x {} requests, {} trial(s), failures {}",
        args.nodes,
        args.load.clients,
        args.load.requests,
        args.load.trials,
        if args.failures == OnOff::On {
            "on"
        } else {
            "off"
        }
    );

    let secret = hex::encode(rand::random::<[u8; 16]>());
    let key = SealKey::from_secret(secret.as_bytes());
    let limit_rps = measure_limit(&args.load, &image, &key).await?;

    let mut config = ClusterConfig {
        secret,
        nodes: ClusterConfig::local_nodes(args.nodes, args.base_port),
        ..Default::default()
    };
    config.failures.enabled = args.failures == OnOff::On;
    config.failures.period_s = args.failure_period;
    config.failures.max_s = args.failure_max;
    config.failures.first = args.first_victim;
    config.delay_ms = args.delay_ms;
    let dir = args.run_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("imgcloud-demo-{}", std::process::id()))
    });
    let exe = std::env::current_exe()?;
    let bar: Bar = Arc::new(Mutex::new(None));
    let sink_bar = Arc::clone(&bar);
    let sink: LineSink =
        Arc::new(move |id, line: &str| say(&sink_bar, &format!("  [node {id}] {line}")));
    let mut node_args = vec!["node".to_string()];
    if let Some(seed) = args.seed {
        node_args.extend(["--seed".to_string(), seed.to_string()]);
    }
    let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
    let baseline_rps = match args.baseline {
        OnOff::On => Some(baseline(&args, &config, &dir, &exe, &node_args, &key, &image).await?),
        OnOff::Off => None,
    };
    println!(
        "Starting {} node processes (config and logs in {})",
        args.nodes,
        dir.display()
    );
    let mut cluster =
        LocalCluster::new(config.clone(), &dir, &exe, &node_args, Some(sink))?.started()?;

    let started = Instant::now();
    let agreed = wait_for_agreement(&config.nodes, FIRST_ELECTION_WAIT).await;
    let Some((coordinator, epoch)) = agreed else {
        cluster.stop();
        return Err(Error::Unavailable(format!(
            "the nodes did not agree on a coordinator within {} s; see the logs in {}",
            FIRST_ELECTION_WAIT.as_secs(),
            dir.display()
        )));
    };
    println!(
        "Cluster ready: node {coordinator} coordinates (epoch {epoch}), {} ms after start",
        started.elapsed().as_millis()
    );

    let yardsticks = Yardsticks {
        limit_rps,
        baseline_rps,
        config: serde_json::to_value(&args).unwrap_or_default(),
    };
    let mut report = run_trials(&args.load, &yardsticks, |t| {
        one_trial(t, &args, &config, &key, &image, &bar, &dir)
    })
    .await?;

    if args.sharing == OnOff::On {
        let cast = Cast {
            program: &exe,
            prefix_args: &["peer"],
            dir: dir.join("sharing"),
        };
        let mut story = Story::new(cast, &config)?;
        story.tell(&mut cluster).await;
        if args.viewers > 0 && args.views > 0 {
            story.view_load(&config, args.viewers, args.views).await;
        }
        let sharing = story.report.clone();
        report.sharing = Some(sharing);
        write_report(&report, &args.load)?;
        let title = "imgcloud sharing story: what each user saw (green: the image, red: the \
                     default image)";
        crate::bench::storyboard::render(title, &story.frames, &args.sharing_picture)?;
        println!("Report: {} (with the story)", args.load.report.display());
        println!("Picture: {}", args.sharing_picture.display());
    }

    if args.observe > 0.0 {
        observe(&config.nodes, Duration::from_secs_f64(args.observe)).await;
    }
    cluster.set_sink(None);
    cluster.stop();
    println!(
        "Stopped the {} node processes; their logs are in {}",
        args.nodes,
        dir.display()
    );
    if let Some(sharing) = report.sharing.as_ref().filter(|s| !s.passed()) {
        let failed = sharing.steps.iter().filter(|s| !s.ok).count();
        return Err(Error::Internal(format!(
            "the sharing story failed: {failed} step(s) failed, {} overdraw(s), {} write(s) \
             lost after the restart (see {})",
            sharing.overdraws,
            sharing.lost_after_restart,
            args.load.report.display()
        )));
    }
    Ok(report)
}

/// Runs trial `t` with a progress bar (through a failure when failures are on), and says when
/// no failure came and went inside it or when the load ran on past its quota to meet one.
async fn one_trial(
    t: usize,
    args: &DemoArgs,
    config: &ClusterConfig,
    key: &SealKey,
    image: &[u8],
    bar: &Bar,
    dir: &std::path::Path,
) -> Result<Trial> {
    let total = (args.load.clients * args.load.requests) as u64;
    let progress: Progress = Arc::default();
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_prefix(format!("trial {t}/{}", args.load.trials));
    if let Ok(mut slot) = bar.lock() {
        *slot = Some(pb.clone());
    }
    let ticker = {
        let (pb, progress) = (pb.clone(), Arc::clone(&progress));
        tokio::spawn(async move {
            loop {
                let done = progress.load(std::sync::atomic::Ordering::Relaxed);
                // Past the quota while the load waits for a failure to come and go.
                pb.set_length(done.max(total));
                pb.set_position(done);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let options = args.load.options(image.to_vec(), 1);
    let limit = failure_limit(config);
    let trial = if config.failures.enabled {
        stress::trial_through_failure(&config.nodes, key, &options, progress, limit).await
    } else {
        stress::trial(&config.nodes, key, &options, progress).await
    };
    ticker.abort();
    pb.finish_and_clear();
    if let Ok(mut slot) = bar.lock() {
        *slot = None;
    }
    let trial = trial?;
    if config.failures.enabled {
        let sent = trial.run.samples.len() as u64;
        if !trial.failure_passed() {
            println!(
                "Note: no simulated failure began and ended within {:.0} s of load \
                 (failure period {} s, longest failure {} s); see the node logs in {}",
                limit.as_secs_f64(),
                args.failure_period,
                args.failure_max,
                dir.display()
            );
        } else if sent > total {
            println!(
                "The load ran on past its {total} requests until a simulated failure had \
                 come and gone: {sent} requests in {:.2} s",
                trial.run.duration.as_secs_f64()
            );
        }
    }
    Ok(trial)
}

/// The longest a load waits for a failure to come and go: the nodes' settling time before a
/// victim is elected, one failure period, the longest failure, and [`FAILURE_SLACK`] for
/// detection, recovery and a slow machine.
pub fn failure_limit(config: &ClusterConfig) -> Duration {
    let longest = config
        .failures
        .max()
        .max(Duration::from_millis(MIN_FAILURE_MS));
    Duration::from_millis(VICTIM_SETTLE_MS) + config.failures.period() + longest + FAILURE_SLACK
}

/// The yardstick: the same load (clients, requests, image, verification) against the same
/// node processes started with the static split (`--dispatch static-split`: each request
/// served by the node its id hashes to; no election decides it, no claims, no commits, no
/// fault tolerance), on the same ports, before the real cluster starts. Its throughput in
/// requests per second.
async fn baseline(
    args: &DemoArgs,
    config: &ClusterConfig,
    dir: &std::path::Path,
    exe: &std::path::Path,
    node_args: &[&str],
    key: &SealKey,
    image: &[u8],
) -> Result<f64> {
    let mut baseline = config.clone();
    baseline.dispatch = Dispatch::StaticSplit;
    baseline.failures.enabled = false;
    let dir = dir.join("baseline");
    println!(
        "Measuring the static split first (the yardstick: each request served by the node its \
         id hashes to, no fault tolerance), same clients and image; logs in {}",
        dir.display()
    );
    let mut nodes = LocalCluster::new(baseline.clone(), &dir, exe, node_args, None)?.started()?;
    let measured = async {
        if wait_for_agreement(&baseline.nodes, FIRST_ELECTION_WAIT)
            .await
            .is_none()
        {
            return Err(Error::Unavailable(format!(
                "the static-split nodes did not come up within {} s; see the logs in {}",
                FIRST_ELECTION_WAIT.as_secs(),
                dir.display()
            )));
        }
        let options = args.load.options(image.to_vec(), 1);
        stress::run(&baseline.nodes, key, &options, Progress::default()).await
    }
    .await;
    nodes.stop();
    let run = measured?;
    let ok = run
        .samples
        .iter()
        .filter(|s| s.outcome == SampleOutcome::Ok)
        .count();
    if ok < run.samples.len() {
        return Err(Error::Unavailable(format!(
            "the static split answered {ok} of {} requests; see the logs in {}",
            run.samples.len(),
            dir.display()
        )));
    }
    let rps = ok as f64 / run.duration.as_secs_f64().max(1e-9);
    println!("  static split: {rps:.0} requests/s ({ok} requests, every reply verified)");
    Ok(rps)
}

/// Prints a one-line cluster status every few seconds for `how_long`.
async fn observe(nodes: &[NodeAddr], how_long: Duration) {
    println!(
        "Observing the cluster for {:.0} s (Ctrl-C to stop early)...",
        how_long.as_secs_f64()
    );
    let start = Instant::now();
    loop {
        let parts: Vec<String> = cluster_status(nodes)
            .await
            .into_iter()
            .map(|(node, s)| match s {
                Ok(s) => {
                    let c = &s.core;
                    let role = if c.coordinator == Some(node.id) {
                        " coordinator"
                    } else {
                        ""
                    };
                    format!(
                        "node {} {}{} epoch {} served {}",
                        node.id, c.state, role, c.epoch, c.served
                    )
                }
                Err(_) => format!("node {} unreachable", node.id),
            })
            .collect();
        println!(
            "  +{:>3.0}s  {}",
            start.elapsed().as_secs_f64(),
            parts.join(" | ")
        );
        if start.elapsed() + OBSERVE_EVERY > how_long {
            break;
        }
        tokio::time::sleep(OBSERVE_EVERY).await;
    }
}
