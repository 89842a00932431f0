//! The stress test: many concurrent clients, each sending its requests one after another
//! through the cluster, every reply verified, every request timed.
//!
//! - [`run`] drives `clients` closed-loop clients (each a [`Client`] with its own connection
//!   to every node) for `requests` requests each and returns one [`Sample`] per request.
//!   Verification (the reply decrypts to the exact original bytes and metadata) runs on the
//!   blocking pool, off the async runtime.
//! - [`ClusterWatch`] polls every node's `/status` while the load runs, to find the windows in
//!   which a node was not Active (failed, recovering, unreachable) and the counters the
//!   report needs (elections, simulated failures, load-balancing decisions, encryptions).
//! - [`trial_through_failure`] keeps the load going past its quota until the watch has seen a
//!   failure begin and end inside it (the cluster still elects its victim itself), so that a
//!   run on a fast machine cannot finish before the first failure; see DESIGN.md, "Stress
//!   metrics and report".
//! - [`measure_limit`] is the yardstick: the same request pushed through the codec in-process
//!   on every core, with no network and no cluster.
//!
//! Implementation caveats: the load generator shares the machine with the nodes it measures,
//! as the seed project's did; `--client-processes` in the client binary spreads it over
//! several processes but not over several machines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::bench::metrics::{Cause, Sample, SampleOutcome};
use crate::client::Client;
use crate::codec::cover::DefaultCovers;
use crate::codec::metadata::{ImageMeta, Viewer};
use crate::codec::seal::SealKey;
use crate::codec::stego::{decrypt_image, encrypt_image, Cover};
use crate::config::NodeAddr;
use crate::watch::FailureWindow;
use crate::watch::{cluster_status, ClusterWatch};
use crate::Result;

/// How often [`ClusterWatch`] polls the nodes.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How long [`trial_through_failure`]'s load runs on after the failure it waited for is over,
/// so that the report and the plot show the cluster back at full rate.
pub const AFTER_RECOVERY: Duration = Duration::from_millis(500);

/// What one stress run does.
#[derive(Clone, Debug)]
pub struct StressOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// The image every request hides.
    pub image: Vec<u8>,
    /// Whether every reply is decrypted and compared with the original.
    pub verify: bool,
    /// How long a request waits for its reply.
    pub deadline: Duration,
    /// First client id (client processes use disjoint ranges).
    pub first_client: u64,
}

/// The outcome of a stress run.
#[derive(Clone, Debug)]
pub struct StressRun {
    /// One sample per request.
    pub samples: Vec<Sample>,
    /// From the first request sent to the last reply.
    pub duration: Duration,
    /// Replies for already-answered requests, dropped by the clients.
    pub duplicates: u64,
    /// Replies that came after their request was given up (deadline passed), dropped too.
    pub late: u64,
}

/// Requests completed so far by a running stress test (for progress bars).
pub type Progress = Arc<AtomicU64>;

fn viewers() -> Vec<Viewer> {
    vec![
        Viewer {
            name: "bob".into(),
            quota: 5,
        },
        Viewer {
            name: "carol".into(),
            quota: 2,
        },
    ]
}

/// Runs the stress test against `nodes`.
pub async fn run(
    nodes: &[NodeAddr],
    key: &SealKey,
    options: &StressOptions,
    progress: Progress,
) -> Result<StressRun> {
    run_while(nodes, key, options, progress, None).await
}

/// [`run`], except that a client that has sent its `requests` goes on sending while `more`
/// (if given) says true; it stops after the request under way when `more` turns false.
pub async fn run_while(
    nodes: &[NodeAddr],
    key: &SealKey,
    options: &StressOptions,
    progress: Progress,
    more: Option<watch::Receiver<bool>>,
) -> Result<StressRun> {
    let start = Instant::now();
    let image = Arc::new(options.image.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..options.clients {
        let client_id = options.first_client + c as u64;
        let nodes = nodes.to_vec();
        let (key, image, progress) = (key.clone(), Arc::clone(&image), Arc::clone(&progress));
        let (requests, verify, deadline) = (options.requests, options.verify, options.deadline);
        let more = more.clone();
        tasks.spawn(async move {
            let owner = format!("client{client_id}");
            let mut samples = Vec::with_capacity(requests);
            let client = match Client::connect(client_id, &nodes).await {
                Ok(client) => client.with_deadline(deadline),
                Err(_) => {
                    let sent_at = start.elapsed();
                    let failed = Sample {
                        sent_at,
                        latency: Duration::ZERO,
                        served_by: None,
                        outcome: SampleOutcome::Failed(Cause::Connection),
                    };
                    progress.fetch_add(requests as u64, Ordering::Relaxed);
                    return (vec![failed; requests], 0, 0);
                }
            };
            let keep_going = || more.as_ref().is_some_and(|m| *m.borrow());
            while samples.len() < requests || keep_going() {
                let sent_at = start.elapsed();
                let sent = Instant::now();
                let result = client
                    .encrypt(image.to_vec(), None, &owner, viewers())
                    .await;
                let (served_by, outcome) = match result {
                    Ok(reply) => {
                        let outcome = if verify {
                            let (key, image, owner) =
                                (key.clone(), Arc::clone(&image), owner.clone());
                            let png = reply.png;
                            let checked = tokio::task::spawn_blocking(move || {
                                reply_is_right(&png, &key, &image, &owner)
                            })
                            .await
                            .unwrap_or(false);
                            if checked {
                                SampleOutcome::Ok
                            } else {
                                SampleOutcome::Failed(Cause::WrongReply)
                            }
                        } else {
                            SampleOutcome::Ok
                        };
                        (Some(reply.served_by), outcome)
                    }
                    Err(e) => (None, SampleOutcome::Failed(Cause::from(&e))),
                };
                samples.push(Sample {
                    sent_at,
                    latency: sent.elapsed(),
                    served_by,
                    outcome,
                });
                progress.fetch_add(1, Ordering::Relaxed);
            }
            (samples, client.duplicates(), client.late())
        });
    }
    let mut samples = Vec::with_capacity(options.clients * options.requests);
    let (mut duplicates, mut late) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        if let Ok((s, d, l)) = done {
            samples.extend(s);
            duplicates += d;
            late += l;
        }
    }
    let duration = samples
        .iter()
        .map(Sample::completed_at)
        .max()
        .unwrap_or_default();
    samples.sort_by_key(|s| s.sent_at);
    Ok(StressRun {
        samples,
        duration,
        duplicates,
        late,
    })
}

/// Whether a reply decrypts to exactly the image and metadata the request sent.
fn reply_is_right(png: &[u8], key: &SealKey, image: &[u8], owner: &str) -> bool {
    match decrypt_image(png, key) {
        Ok((meta, secret)) => secret == image && meta.owner == owner && meta.viewers == viewers(),
        Err(_) => false,
    }
}

/// Requests per second the codec alone does on every core of this machine: the same image,
/// the default cover, no network, no cluster. With `verify`, each request is also revealed
/// and compared, as the stress test does with every reply, so the yardstick does the same
/// work per request as the run it is compared with.
pub fn measure_limit(image: &[u8], key: &SealKey, how_long: Duration, verify: bool) -> f64 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let covers = Arc::new(DefaultCovers::new());
    let meta = match ImageMeta::new("limit", viewers()) {
        Ok(meta) => meta,
        Err(_) => return 0.0,
    };
    let start = Instant::now();
    let done: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (covers, meta) = (Arc::clone(&covers), meta.clone());
                scope.spawn(move || {
                    let mut n = 0u64;
                    while start.elapsed() < how_long {
                        let Ok(png) = encrypt_image(image, Cover::Default(&covers), &meta, key)
                        else {
                            continue;
                        };
                        if !verify || reply_is_right(&png, key, image, &meta.owner) {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// Figures read from every node's `/status` at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterCounters {
    /// Elections in the replicated record (the highest any node reports).
    pub elections: u64,
    /// Simulated failures in the replicated record (the highest any node reports).
    pub failures: u64,
    /// Load-balancing decisions, summed over the nodes.
    pub lb_decisions: u64,
    /// Requests taken over while no coordinator assigned them, summed over the nodes.
    pub takeovers: u64,
    /// Encryption jobs completed, summed over the nodes.
    pub encryptions: u64,
}

impl ClusterCounters {
    /// Reads the counters now.
    pub async fn read(nodes: &[NodeAddr]) -> ClusterCounters {
        let mut c = ClusterCounters::default();
        for (_, status) in cluster_status(nodes).await {
            if let Ok(s) = status {
                c.elections = c.elections.max(s.core.elections as u64);
                c.failures = c.failures.max(s.core.failures as u64);
                c.lb_decisions += s.lb_decisions;
                c.takeovers += s.takeovers;
                c.encryptions += s.encryptions;
            }
        }
        c
    }

    /// What grew from `before` to `self`.
    pub fn since(&self, before: &ClusterCounters) -> ClusterCounters {
        ClusterCounters {
            elections: self.elections.saturating_sub(before.elections),
            failures: self.failures.saturating_sub(before.failures),
            lb_decisions: self.lb_decisions.saturating_sub(before.lb_decisions),
            takeovers: self.takeovers.saturating_sub(before.takeovers),
            encryptions: self.encryptions.saturating_sub(before.encryptions),
        }
    }
}

/// One stress run with the cluster's counters and failure windows around it.
#[derive(Clone, Debug)]
pub struct Trial {
    /// The requests.
    pub run: StressRun,
    /// What the cluster's counters grew by during the run.
    pub counters: ClusterCounters,
    /// When nodes were not Active, in seconds since the run started.
    pub windows: Vec<FailureWindow>,
}

impl Trial {
    /// Whether some failure window began after the load's start and ended before its last
    /// reply: a failure the load ran through, from its beginning to its recovery.
    pub fn failure_passed(&self) -> bool {
        let end = self.run.duration.as_secs_f64();
        self.windows
            .iter()
            .any(|w| w.start_s > 0.0 && w.end_s < end)
    }
}

/// Runs one trial: counters before, the load with a [`ClusterWatch`] beside it, counters after.
pub async fn trial(
    nodes: &[NodeAddr],
    key: &SealKey,
    options: &StressOptions,
    progress: Progress,
) -> Result<Trial> {
    trial_with(nodes, run(nodes, key, options, progress)).await
}

/// [`trial`] around any load (e.g. one spread over client processes).
pub async fn trial_with(
    nodes: &[NodeAddr],
    load: impl std::future::Future<Output = Result<StressRun>>,
) -> Result<Trial> {
    let before = ClusterCounters::read(nodes).await;
    let watch = ClusterWatch::start(nodes, Instant::now(), WATCH_INTERVAL);
    let run = load.await;
    finish_trial(nodes, before, watch, run?).await
}

/// [`trial`] whose load lasts until a failure has come and gone inside it: every client sends
/// its `requests`, and all of them go on until the watch has seen a node leave Active after
/// the load began and come back, then for [`AFTER_RECOVERY`] more; or until `limit` has passed
/// since the start, whichever is first. The cluster elects and times its victims itself; this
/// only keeps the load running long enough to meet one. [`Trial::failure_passed`] says
/// whether it did.
pub async fn trial_through_failure(
    nodes: &[NodeAddr],
    key: &SealKey,
    options: &StressOptions,
    progress: Progress,
    limit: Duration,
) -> Result<Trial> {
    let before = ClusterCounters::read(nodes).await;
    let watch = ClusterWatch::start(nodes, Instant::now(), WATCH_INTERVAL);
    let (more_tx, more) = watch::channel(true);
    let mut passed = watch.passed_failures();
    let holder = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + limit;
        let one = async { passed.wait_for(|n| *n >= 1).await.is_ok() };
        if tokio::time::timeout_at(deadline, one).await == Ok(true) {
            tokio::time::sleep(AFTER_RECOVERY).await;
        }
        let _ = more_tx.send(false);
    });
    let run = run_while(nodes, key, options, progress, Some(more)).await;
    holder.abort();
    finish_trial(nodes, before, watch, run?).await
}

/// Stops the watch and reads what the cluster's counters grew by.
async fn finish_trial(
    nodes: &[NodeAddr],
    before: ClusterCounters,
    watch: ClusterWatch,
    run: StressRun,
) -> Result<Trial> {
    let windows = watch.finish().windows;
    // The nodes publish their counters every tick; let the last ones land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let counters = ClusterCounters::read(nodes).await.since(&before);
    Ok(Trial {
        run,
        counters,
        windows,
    })
}

/// The report of one trial.
pub fn report(
    trial: &Trial,
    verified: bool,
    limit_rps: Option<f64>,
    baseline_rps: Option<f64>,
    config: serde_json::Value,
) -> crate::bench::report::Report {
    let summary = crate::bench::metrics::summarize(&trial.run.samples, trial.run.duration);
    let lost = summary
        .failed_by_cause
        .get(Cause::Timeout.name())
        .copied()
        .unwrap_or(0);
    let extras = crate::bench::report::Extras {
        lb_decisions: trial.counters.lb_decisions,
        takeovers: trial.counters.takeovers,
        elections: trial.counters.elections,
        duplicates: trial.run.duplicates,
        late: trial.run.late,
        lost,
        verified,
        limit_rps,
        baseline_rps,
        config,
        failure_windows: trial.windows.clone(),
        timeline: crate::bench::metrics::timeline(&trial.run.samples, crate::bench::metrics::SLICE),
    };
    let mut report = crate::bench::report::Report::from_summary(summary, extras);
    report.failures_injected = trial.counters.failures;
    report
}

/// Writes one sample as a text line (how client worker processes report to their parent):
/// `sent_us latency_us served_by|- ok|CAUSE`.
pub fn sample_line(s: &Sample) -> String {
    let served = s.served_by.map_or("-".to_string(), |n| n.to_string());
    let outcome = match s.outcome {
        SampleOutcome::Ok => "ok",
        SampleOutcome::Failed(cause) => cause.name(),
    };
    format!(
        "{} {} {served} {outcome}",
        s.sent_at.as_micros(),
        s.latency.as_micros()
    )
}

/// Reads a line written by [`sample_line`]; None if it is not one.
pub fn parse_sample_line(line: &str) -> Option<Sample> {
    let mut parts = line.split_whitespace();
    let sent_at = Duration::from_micros(parts.next()?.parse().ok()?);
    let latency = Duration::from_micros(parts.next()?.parse().ok()?);
    let served_by = match parts.next()? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    let outcome = match parts.next()? {
        "ok" => SampleOutcome::Ok,
        name => SampleOutcome::Failed(*Cause::ALL.iter().find(|c| c.name() == name)?),
    };
    Some(Sample {
        sent_at,
        latency,
        served_by,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_round_trip() {
        let samples = [
            Sample {
                sent_at: Duration::from_micros(12),
                latency: Duration::from_micros(3400),
                served_by: Some(2),
                outcome: SampleOutcome::Ok,
            },
            Sample {
                sent_at: Duration::from_secs(3),
                latency: Duration::from_secs(30),
                served_by: None,
                outcome: SampleOutcome::Failed(Cause::Timeout),
            },
        ];
        for s in samples {
            assert_eq!(parse_sample_line(&sample_line(&s)), Some(s));
        }
        assert_eq!(parse_sample_line("garbage"), None);
    }
}
