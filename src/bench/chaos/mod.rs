//! Chaos scenarios: real faults (SIGKILL, SIGSTOP, restarts, a network partition) against real
//! node processes while a stress load runs, each summed up in one line.
//!
//! Every scenario follows the same plan:
//!
//! 1. Start the nodes ([`LocalCluster`]) and wait until they agree on a coordinator.
//! 2. Start a [`ClusterWatch`] that reads every node's `/status` every [`POLL_INTERVAL`]
//!    and records which coordinators the Active nodes name in each epoch.
//! 3. Start the load: rounds of [`stress::run`] (`clients` clients, `requests` each) one after
//!    another until the fault is over, so the fault always hits a running load.
//! 4. Inject the fault and heal it; then let the last round finish.
//! 5. Wait (at most [`CONVERGE_WAIT`]) until every node is Active and all digests are equal.
//!
//! The line is `scenario=NAME sent=N ok=N lost=N dup=N late=N max_coordinators_per_epoch=N
//! converged=yes|no p99_ms=N`; a scenario fails if a request got no reply by its deadline
//! (`lost`), a client saw a second reply (`dup`), an epoch had two coordinators, the cluster
//! did not converge, or a scenario-specific check failed (printed on stderr). `late` counts
//! replies that came after their client gave up on the request (mostly at its deadline, so the
//! request is in `lost` already): it fails nothing by itself, and tells a slow answer from none.
//!
//! The partition scenario needs root, iproute2 and nftables: [`Lab`] builds three hosts out of
//! network namespaces (`imgc-h1..3`, addresses 10.77.0.1-3/24) joined by a bridge in a fourth
//! (`imgc-lb`, 10.77.0.254), where this program runs itself again (`partition-inner`) with the
//! load generator. The cut is an nftables table inside the coordinator's namespace that drops
//! traffic to and from the two other hosts, but not from the load generator.
//!
//! The parts: this file holds the flags, the plan and the result line; [`faults`] the faults
//! themselves; [`lab`] the namespaces and the cut of the partition scenario; [`load`] the load.
//!
//! Implementation caveats: `lost` counts only requests that timed out; requests refused as
//! unavailable (every node said so) are neither ok nor lost. The nodes and the load generator
//! share one machine, so latencies are those of a loaded laptop, not of a cluster.

mod faults;
mod lab;
mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use tracing::info;

use crate::bench::launcher::LocalCluster;
use crate::bench::metrics::{Cause, LatencyMs, Sample, SampleOutcome};
use crate::bench::stress::StressOptions;
use crate::codec::seal::SealKey;
use crate::config::{ClusterConfig, NodeAddr};
use crate::ids::NodeId;
use crate::watch::{wait_converged, wait_for_agreement, ClusterWatch};
use crate::{Error, Result};
use faults::{kill_and_restart, partition, restart_loop, stop_coordinator};
use lab::{partition_inner, partition_outer};
pub use lab::{Lab, HOST_NETNS, LB_NETNS};
use load::Load;

/// How often the watch reads every node's `/status`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long the nodes may take to agree on their first coordinator.
pub const AGREE_WAIT: Duration = Duration::from_secs(20);
/// How long the cluster may take to converge after the load and the heal.
pub const CONVERGE_WAIT: Duration = Duration::from_secs(30);
/// How long after the cut the isolated node may still act as coordinator (failure detection).
pub const ISOLATION_GRACE: Duration = Duration::from_secs(3);

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// SIGKILL a node that serves requests (not the coordinator); restart it later.
    KillServer,
    /// SIGKILL the coordinator; restart it later.
    KillCoordinator,
    /// SIGSTOP the coordinator, then SIGCONT.
    Stop20s,
    /// Restart each node in turn, several rounds.
    RestartLoop,
    /// Cut the coordinator's host off from the other two, then heal.
    Partition,
}

impl Scenario {
    /// Every scenario, in the order `chaos` runs them by default.
    pub const ALL: [Scenario; 5] = [
        Scenario::KillServer,
        Scenario::KillCoordinator,
        Scenario::Stop20s,
        Scenario::RestartLoop,
        Scenario::Partition,
    ];

    /// The scenario's name on the command line and in its line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillServer => "kill-server",
            Scenario::KillCoordinator => "kill-coordinator",
            Scenario::Stop20s => "stop-20s",
            Scenario::RestartLoop => "restart-loop",
            Scenario::Partition => "partition",
        }
    }

    /// The scenario of that name.
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Runs chaos scenarios against real node processes under a stress load and prints one line
/// per scenario; exits non-zero if any scenario failed.
#[derive(Parser, Debug, Clone)]
#[command(name = "chaos", version, about, long_about = None)]
pub struct ChaosArgs {
    /// Scenarios: kill-server, kill-coordinator, stop-20s, restart-loop, partition (default: all).
    pub scenarios: Vec<String>,
    /// Concurrent clients of the load.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Requests per client per load round (rounds repeat until the fault is over).
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Protocol port of node 1 (node i uses BASE+i-1, HTTP 1000 above); default: free ports.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Seconds a request waits for its reply before it counts as lost (at most 60: the cloud
    /// remembers a served request for 70 s).
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub deadline: f64,
    /// Seconds between a kill and the restart.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub restart_after: f64,
    /// Seconds the coordinator stays stopped in stop-20s.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub stop_for: f64,
    /// Seconds the partition lasts.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub cut_for: f64,
    /// Rounds of restart-loop.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Do not decrypt and check every reply.
    #[arg(long)]
    pub no_verify: bool,
    /// The node binary (default: `cloud-node` next to this program).
    #[arg(long, value_name = "PATH")]
    pub node_program: Option<PathBuf>,
    /// Folder for configs and node logs (default: a fresh one under the temp dir).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// What one scenario measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioOutcome {
    /// The scenario's name.
    pub scenario: String,
    /// Requests sent.
    pub sent: u64,
    /// Requests with a verified reply.
    pub ok: u64,
    /// Requests with no reply by their deadline.
    pub lost: u64,
    /// Second replies the clients received (and dropped).
    pub dup: u64,
    /// Replies that came after their client gave up on the request (see `lost`).
    pub late: u64,
    /// The most distinct coordinators Active nodes named in one epoch.
    pub max_coordinators_per_epoch: usize,
    /// Whether every node ended Active with equal digests.
    pub converged: bool,
    /// 99th percentile latency of the successful requests.
    pub p99_ms: u64,
    /// Scenario-specific checks that failed, as sentences.
    pub problems: Vec<String>,
}

impl ScenarioOutcome {
    /// The one line `chaos` prints.
    pub fn line(&self) -> String {
        format!(
            "scenario={} sent={} ok={} lost={} dup={} late={} max_coordinators_per_epoch={} converged={} p99_ms={}",
            self.scenario,
            self.sent,
            self.ok,
            self.lost,
            self.dup,
            self.late,
            self.max_coordinators_per_epoch,
            if self.converged { "yes" } else { "no" },
            self.p99_ms
        )
    }

    /// Whether the scenario passed.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.dup == 0
            && self.max_coordinators_per_epoch <= 1
            && self.converged
            && self.problems.is_empty()
    }

    /// Reads a line back (the partition scenario's inner run prints it).
    pub fn parse_line(line: &str) -> Option<ScenarioOutcome> {
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        Some(ScenarioOutcome {
            scenario: fields.get("scenario")?.to_string(),
            sent: num("sent")?,
            ok: num("ok")?,
            lost: num("lost")?,
            dup: num("dup")?,
            late: num("late")?,
            max_coordinators_per_epoch: num("max_coordinators_per_epoch")? as usize,
            converged: *fields.get("converged")? == "yes",
            p99_ms: num("p99_ms")?,
            problems: Vec::new(),
        })
    }
}

/// Runs the scenarios the arguments name, printing one line each; returns whether all passed.
pub async fn run(args: ChaosArgs) -> Result<bool> {
    if args.scenarios.first().map(String::as_str) == Some("partition-inner") {
        let outcome = partition_inner(&args).await?;
        println!("{}", outcome.line());
        report_problems(&outcome);
        return Ok(outcome.passed());
    }
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|name| {
                Scenario::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    Error::InvalidInput(format!(
                        "unknown scenario \"{name}\" (known: {})",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    let mut all_passed = true;
    for scenario in scenarios {
        let outcome = match scenario {
            Scenario::Partition => partition_outer(&args).await,
            local => run_local(local, &args).await,
        };
        let outcome = outcome.unwrap_or_else(|e| ScenarioOutcome {
            scenario: scenario.name().to_string(),
            sent: 0,
            ok: 0,
            lost: 0,
            dup: 0,
            late: 0,
            max_coordinators_per_epoch: 0,
            converged: false,
            p99_ms: 0,
            problems: vec![format!("the scenario could not run: {e}")],
        });
        println!("{}", outcome.line());
        report_problems(&outcome);
        all_passed &= outcome.passed();
    }
    Ok(all_passed)
}

fn report_problems(outcome: &ScenarioOutcome) {
    for problem in &outcome.problems {
        eprintln!("chaos: {}: {problem}", outcome.scenario);
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn node_program(args: &ChaosArgs) -> Result<PathBuf> {
    match &args.node_program {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?.with_file_name("cloud-node")),
    }
}

/// The folder under which each scenario gets its own.
fn run_base(args: &ChaosArgs) -> PathBuf {
    args.run_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("imgcloud-chaos-{}", std::process::id()))
    })
}

fn run_dir(args: &ChaosArgs, scenario: &str) -> PathBuf {
    run_base(args).join(scenario)
}

/// Three loopback nodes, on `base` or on free ports.
fn loopback_nodes(base: Option<u16>) -> Result<Vec<NodeAddr>> {
    if let Some(base) = base {
        return Ok(ClusterConfig::local_nodes(3, base));
    }
    let listeners = (0..6)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((0..3)
        .map(|i| NodeAddr {
            id: i as NodeId + 1,
            addr: addrs[2 * i],
            http: addrs[2 * i + 1],
        })
        .collect())
}

fn cluster_config(nodes: Vec<NodeAddr>) -> ClusterConfig {
    let mut config = ClusterConfig {
        secret: hex::encode(rand::random::<[u8; 16]>()),
        nodes,
        ..Default::default()
    };
    // Real faults only: the simulated victim would blur what each scenario measures.
    config.failures.enabled = false;
    config
}

fn stress_options(args: &ChaosArgs) -> StressOptions {
    StressOptions {
        clients: args.clients.max(1),
        requests: args.requests.max(1),
        image: crate::SAMPLE_IMAGE.to_vec(),
        verify: !args.no_verify,
        deadline: crate::client::deadline_from_secs(args.deadline),
        first_client: 1,
    }
}

/// Runs a scenario of loopback processes.
async fn run_local(scenario: Scenario, args: &ChaosArgs) -> Result<ScenarioOutcome> {
    let config = cluster_config(loopback_nodes(args.base_port)?);
    let dir = run_dir(args, scenario.name());
    let program = node_program(args)?;
    let mut cluster = LocalCluster::new(config.clone(), &dir, &program, &[], None)?.started()?;
    let result = drive(scenario, &mut cluster, &config, args).await;
    cluster.stop();
    result
}

/// Everything a scenario's fault needs.
struct Ctx<'a> {
    cluster: &'a mut LocalCluster,
    nodes: Vec<NodeAddr>,
    watch: &'a ClusterWatch,
    load: &'a Load,
    args: &'a ChaosArgs,
}

async fn drive(
    scenario: Scenario,
    cluster: &mut LocalCluster,
    config: &ClusterConfig,
    args: &ChaosArgs,
) -> Result<ScenarioOutcome> {
    let nodes = config.nodes.clone();
    let Some((coordinator, epoch)) = wait_for_agreement(&nodes, AGREE_WAIT).await else {
        return Err(Error::Unavailable(format!(
            "the nodes did not agree on a coordinator within {} s; logs in {}",
            AGREE_WAIT.as_secs(),
            cluster.dir.display()
        )));
    };
    info!(
        scenario = scenario.name(),
        coordinator, epoch, "cluster ready"
    );
    let key = SealKey::from_secret(config.secret.as_bytes());
    let watch = ClusterWatch::start(&nodes, Instant::now(), POLL_INTERVAL);
    let load = Load::start(&nodes, &key, stress_options(args));
    let mut problems = Vec::new();
    if !load.wait_running(args.clients as u64, AGREE_WAIT).await {
        problems.push("the load did not get going".to_string());
    }
    let ctx = Ctx {
        cluster,
        nodes: nodes.clone(),
        watch: &watch,
        load: &load,
        args,
    };
    problems.extend(match scenario {
        Scenario::KillServer => kill_and_restart(ctx, false).await,
        Scenario::KillCoordinator => kill_and_restart(ctx, true).await,
        Scenario::Stop20s => stop_coordinator(ctx).await,
        Scenario::RestartLoop => restart_loop(ctx).await,
        Scenario::Partition => partition(ctx).await,
    });
    let (samples, dup, late) = load.finish().await;
    let converged = wait_converged(&nodes, CONVERGE_WAIT).await;
    let max_coordinators = watch.finish().max_coordinators_per_epoch;
    Ok(outcome(
        scenario.name(),
        &samples,
        dup,
        late,
        max_coordinators,
        converged,
        problems,
    ))
}

fn outcome(
    scenario: &str,
    samples: &[Sample],
    dup: u64,
    late: u64,
    max_coordinators_per_epoch: usize,
    converged: bool,
    problems: Vec<String>,
) -> ScenarioOutcome {
    let ok = samples.iter().filter(|s| s.is_ok()).count() as u64;
    let lost = samples
        .iter()
        .filter(|s| s.outcome == SampleOutcome::Failed(Cause::Timeout))
        .count() as u64;
    let p99 = LatencyMs::of(samples.iter().filter(|s| s.is_ok()).map(|s| s.latency)).p99;
    ScenarioOutcome {
        scenario: scenario.to_string(),
        sent: samples.len() as u64,
        ok,
        lost,
        dup,
        late,
        max_coordinators_per_epoch,
        converged,
        p99_ms: p99.round() as u64,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_back_with_its_late_count() {
        let outcome = ScenarioOutcome {
            scenario: "partition".into(),
            sent: 120,
            ok: 118,
            lost: 2,
            dup: 0,
            late: 1,
            max_coordinators_per_epoch: 1,
            converged: true,
            p99_ms: 35,
            problems: Vec::new(),
        };
        let line = outcome.line();
        assert!(line.contains(" dup=0 late=1 "), "{line}");
        assert_eq!(ScenarioOutcome::parse_line(&line), Some(outcome));
    }
}
