//! Failover and recovery benchmark with real `cloud-node` processes on loopback.
//!
//! `cargo bench --bench failover` prints:
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
    let trials = 20;
    let mut cluster = Cluster::start(3, &[]);
    wait_for(Duration::from_secs(10), || cluster.agreed().is_some()).expect("initial agreement");
    let (mut failover, mut restart) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let (old, epoch) = cluster.agreed().expect("agreement before the trial");
        let survivors: Vec<u32> = cluster
            .config
            .ids()
            .into_iter()
            .filter(|&n| n != old as u32)
            .collect();
        let started = Instant::now();
        cluster.kill(old as u32);
        let agreed = wait_for(Duration::from_secs(5), || {
            let views: Vec<Option<(u64, u64)>> = survivors
                .iter()
                .map(|&n| {
                    cluster
                        .status(n)
                        .and_then(|s| Some((s["coordinator"].as_u64()?, s["epoch"].as_u64()?)))
                })
                .collect();
            views
                .iter()
                .all(|v| v.is_some_and(|(c, e)| c != old && e > epoch))
                && views.windows(2).all(|w| w[0] == w[1])
        });
        assert!(agreed.is_some(), "trial {trial}: no failover");
        failover.push(started.elapsed().as_secs_f64() * 1000.0);
        cluster.spawn(old as u32);
        let back = wait_for(Duration::from_secs(10), || {
            cluster.agreed().is_some() && cluster.converged()
        });
        assert!(
            back.is_some(),
            "trial {trial}: the restarted node did not converge"
        );
        if let Some(ms) = cluster
            .status(old as u32)
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
    wait_for(Duration::from_secs(10), || cluster.agreed().is_some()).expect("agreement");
    let (mut revival, mut converged) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    while revival.len() < 10 && Instant::now() < deadline {
        let Some(victim) = cluster
            .statuses()
            .into_iter()
            .find_map(|(id, s)| s.filter(|s| s["state"] == "Failed").map(|_| id))
        else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let before = cluster
            .status(victim)
            .and_then(|s| s["last_recovery_ms"].as_f64());
        let Some(_) = wait_for(Duration::from_secs(5), || {
            cluster
                .status(victim)
                .is_some_and(|s| s["state"] != "Failed")
        }) else {
            continue;
        };
        let left_failed = Instant::now();
        if wait_for(Duration::from_secs(5), || {
            cluster
                .status(victim)
                .is_some_and(|s| s["state"] == "Active")
        })
        .is_none()
        {
            continue;
        }
        let equal = wait_for(Duration::from_secs(5), || cluster.converged());
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
