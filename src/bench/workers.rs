//! A stress load spread over several OS processes: each child runs its share of the clients
//! (`client stress-worker`) and prints one line per request; the parent gathers the lines into
//! one [`StressRun`], as if one process had sent every request.
//!
//! Implementation caveats: the children share this machine; their clocks are the same clock,
//! so their samples' times line up without correction.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;

use tokio::io::AsyncBufReadExt;

use crate::bench::stress::{self, StressRun};
use crate::bench::LoadArgs;
use crate::Result;

/// Runs `load` in `processes` children: `program stress-worker --first-client F --clients C
/// ...` followed by `cluster_flags` (how the children find the cluster), with the cluster
/// secret in their environment. Reads every child's lines at once, so no child blocks on a
/// full pipe.
pub async fn run_workers(
    program: &Path,
    cluster_flags: &[OsString],
    load: &LoadArgs,
    processes: usize,
    secret: &str,
) -> Result<StressRun> {
    let mut children = Vec::new();
    let per = load.clients.div_ceil(processes.max(1));
    for p in 0..processes {
        let clients = per.min(load.clients.saturating_sub(p * per));
        if clients == 0 {
            break;
        }
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("stress-worker")
            .args(["--first-client", &(1 + p * per).to_string()])
            .args(["--clients", &clients.to_string()])
            .args(["--requests", &load.requests.to_string()])
            .args(["--deadline", &load.deadline.to_string()])
            .args(cluster_flags)
            .env("IMGCLOUD_SECRET", secret)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = &load.image {
            cmd.arg("--image").arg(path);
        }
        if load.no_verify {
            cmd.arg("--no-verify");
        }
        children.push(cmd.spawn()?);
    }
    let readers = children.into_iter().map(|mut child| async move {
        let (mut samples, mut duplicates, mut late) = (Vec::new(), 0, 0);
        if let Some(out) = child.stdout.take() {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line.strip_prefix("duplicates ") {
                    duplicates += n.trim().parse::<u64>().unwrap_or(0);
                } else if let Some(n) = line.strip_prefix("late ") {
                    late += n.trim().parse::<u64>().unwrap_or(0);
                } else if let Some(sample) = stress::parse_sample_line(&line) {
                    samples.push(sample);
                }
            }
        }
        let _ = child.wait().await;
        (samples, duplicates, late)
    });
    let mut samples = Vec::new();
    let (mut duplicates, mut late) = (0, 0);
    for (s, d, l) in futures::future::join_all(readers).await {
        samples.extend(s);
        duplicates += d;
        late += l;
    }
    samples.sort_by_key(|s| s.sent_at);
    let duration = samples
        .iter()
        .map(|s| s.completed_at())
        .max()
        .unwrap_or_default();
    Ok(StressRun {
        samples,
        duration,
        duplicates,
        late,
    })
}

/// Prints a worker's run the way [`run_workers`] reads it: one line per request, then the
/// duplicate and late replies it dropped.
pub fn print_worker_run(run: &StressRun) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for sample in &run.samples {
        let _ = writeln!(out, "{}", stress::sample_line(sample));
    }
    let _ = writeln!(out, "duplicates {}", run.duplicates);
    let _ = writeln!(out, "late {}", run.late);
}
