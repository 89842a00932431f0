//! Failover and recovery benchmark with real `cloud-node` processes on loopback.
//!
//! `cargo bench --bench failover` prints:
//! - cold start: three processes started at once; time until every `/status` names the same
//!   coordinator (10 trials; `tests/cluster.rs` checks agreement, this measures it);
//! - failover: the coordinator is SIGKILLed; time until every survivor's `/status` names the
//!   same new coordinator (20 trials; the killed node is restarted between trials);
//! - restart: a restarted process's recovery, from start to Active (its own measurement);
//! - revival: an elected victim's recovery, from the end of its silence to Active with the
//!   state merged (its own measurement), and until every digest is equal (polled).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{wait_for, Cluster};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn print(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name:<44} n={:<3} p50={:>7.1} ms  max={:>7.1} ms  min={:>6.1} ms",
        values.len(),
        percentile(&values, 0.5),
        values.last().copied().unwrap_or(0.0),
        values.first().copied().unwrap_or(0.0)
    );
}

fn main() {
    let mut cold = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let cluster = Cluster::start(3, &[]);
        cluster
            .wait_agreed(Duration::from_secs(10))
            .expect("a cold cluster agrees");
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    print("cold start (3 processes -> agreement)", cold);

    let trials = 20;
    let mut cluster = Cluster::start(3, &[]);
    cluster
        .wait_agreed(Duration::from_secs(10))
        .expect("initial agreement");
    let (mut failover, mut restart) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let view = cluster.agreed().expect("agreement before the trial");
        let old = view.0 as u32;
        let started = Instant::now();
        cluster.kill(old);
        let replaced = cluster.wait_replaced(view, Duration::from_secs(5));
        assert!(replaced.is_some(), "trial {trial}: no failover");
        failover.push(started.elapsed().as_secs_f64() * 1000.0);
        cluster.spawn(old);
        let back = cluster.wait_settled(Duration::from_secs(10));
        assert!(
            back.is_some(),
            "trial {trial}: the restarted node did not converge"
        );
        if let Some(ms) = cluster
            .status(old)
            .and_then(|s| s["last_recovery_ms"].as_f64())
        {
            restart.push(ms);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(cluster);
    print("failover (SIGKILL -> survivors agree)", failover);
    print("restart (process start -> Active)", restart);

    let cluster = Cluster::start(
        3,
        &[
            "--failures",
            "on",
            "--failure-period",
            "2",
            "--failure-max",
            "1.5",
        ],
    );
    cluster
        .wait_agreed(Duration::from_secs(10))
        .expect("agreement");
    let (mut revival, mut converged) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    while revival.len() < 10 && Instant::now() < deadline {
        let Some(victim) = cluster
            .wait_any(deadline.saturating_duration_since(Instant::now()), |s| {
                s["state"] == "Failed"
            })
        else {
            break;
        };
        let before = cluster
            .status(victim)
            .and_then(|s| s["last_recovery_ms"].as_f64());
        let five = Duration::from_secs(5);
        if cluster
            .wait_status(victim, five, |s| s["state"] != "Failed")
            .is_none()
        {
            continue;
        }
        let left_failed = Instant::now();
        if cluster
            .wait_status(victim, five, |s| s["state"] == "Active")
            .is_none()
        {
            continue;
        }
        let equal = wait_for(five, || cluster.converged());
        if let (Some(ms), Some(_)) = (
            cluster
                .status(victim)
                .and_then(|s| s["last_recovery_ms"].as_f64()),
            equal,
        ) {
            if Some(ms) != before {
                revival.push(ms);
                converged.push(left_failed.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    print("revival (silence over -> Active, merged)", revival);
    print("revival seen by a poller (-> equal digests)", converged);
}
