//! End-to-end tests of the cluster with real `cloud-node` processes on free loopback ports.

mod support;

use std::time::Duration;

use support::{poll, wait_for, Cluster};

#[test]
fn coordinator_kill_fails_over_and_a_restart_converges() {
    let mut cluster = Cluster::start(3, &[]);
    let (old, epoch) = cluster.wait_agreed(AGREE_LIMIT).expect("initial agreement");

    cluster.kill(old as u32);
    let (new, new_epoch) = poll(FAILOVER_LIMIT, || {
        cluster.agreed().filter(|&(c, _)| c != old)
    })
    .unwrap_or_else(|| panic!("no failover: {:?}", cluster.statuses()));
    assert_ne!(new, old);
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");

    cluster.spawn(old as u32);
    let rejoined = cluster.wait_settled(SETTLE_LIMIT);
    assert!(
        rejoined.is_some(),
        "no convergence after restart: {:?}\n{}",
        cluster.statuses(),
        cluster.log(old as u32)
    );
}

/// How long a test waits for a cold cluster to agree. Agreement takes ~0.55 s on an idle
/// machine (`cargo bench --bench failover` prints the figures); this bound only tells a cluster
/// that never agrees from one on a machine busy with other tests.
const AGREE_LIMIT: Duration = Duration::from_secs(15);

/// How long a test waits for survivors to replace a silent coordinator (the detector waits
/// 0.8-3 s, adaptively, then an election round; the bench prints ~1 s idle), and for a
/// returning node to catch up; the same kind of bound.
const FAILOVER_LIMIT: Duration = Duration::from_secs(15);
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn cold_starts_in_any_order_agree_twenty_times_and_keep_it() {
    for trial in 0..20u32 {
        let mut cluster = Cluster::new(3, &[]);
        let mut order = vec![1, 2, 3];
        order.rotate_left((trial % 3) as usize);
        if trial % 2 == 1 {
            order.swap(1, 2);
        }
        for id in order {
            cluster.spawn(id);
        }
        let agreed = cluster.wait_agreed(AGREE_LIMIT);
        assert!(
            agreed.is_some(),
            "trial {trial}: no agreement within {AGREE_LIMIT:?}: {:?}",
            cluster.statuses()
        );
        // Idle, the view stays: every node that answers over the next 1.5 s names the same one.
        let changed = wait_for(Duration::from_millis(1500), || {
            cluster.statuses().values().flatten().any(|s| {
                (s["coordinator"].as_u64(), s["epoch"].as_u64())
                    != (agreed.map(|v| v.0), agreed.map(|v| v.1))
            })
        });
        assert!(
            changed.is_none(),
            "trial {trial}: the coordinator changed while idle: {agreed:?} then {:?}",
            cluster.statuses()
        );
    }
}

#[test]
fn a_stopped_coordinator_is_replaced_and_catches_up() {
    let mut cluster = Cluster::start(3, &[]);
    let view = cluster.wait_agreed(AGREE_LIMIT).expect("initial agreement");
    let old = view.0 as u32;
    cluster.signal(old, "STOP");
    let failover = cluster.wait_replaced(view, FAILOVER_LIMIT);
    assert!(
        failover.is_some(),
        "no failover after SIGSTOP: {:?}",
        cluster.statuses()
    );
    cluster.signal(old, "CONT");
    let back = cluster.wait_settled(SETTLE_LIMIT);
    assert!(
        back.is_some(),
        "no convergence after SIGCONT: {:?}",
        cluster.statuses()
    );
    cluster.kill(old);
}

#[test]
fn the_elected_victim_shows_failed_then_recovers_with_equal_digests() {
    let cluster = Cluster::start(
        3,
        &[
            "--failures",
            "on",
            "--failure-period",
            "2",
            "--failure-max",
            "2",
        ],
    );
    cluster.wait_agreed(AGREE_LIMIT).expect("initial agreement");
    let victim = cluster
        .wait_any(SETTLE_LIMIT, |s| s["state"] == "Failed")
        .expect("no node reported Failed");
    let back = cluster.wait_status(victim, SETTLE_LIMIT, |s| s["state"] == "Active");
    assert!(
        back.is_some(),
        "victim {victim} did not come back:\n{}",
        cluster.log(victim)
    );
    assert!(cluster
        .log(victim)
        .contains(&format!("[Node {victim}] *** Entering FAILED state ***")));
    assert!(cluster.log(victim).contains(&format!(
        "[Node {victim}] *** Entering RECOVERING state ***"
    )));
}

#[test]
fn status_and_metrics_describe_the_node() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_agreed(AGREE_LIMIT).expect("agreement");
    let s = cluster.status(2).unwrap();
    for key in [
        "id",
        "state",
        "epoch",
        "coordinator",
        "load",
        "members",
        "digest",
    ] {
        assert!(!s[key].is_null(), "/status lacks {key}: {s}");
    }
    assert_eq!(s["members"].as_array().unwrap().len(), 2);
    let metrics = support::http_get(cluster.config.node(2).unwrap().http, "/metrics").unwrap();
    assert!(metrics.contains("# TYPE imgcloud_epoch gauge"));
    assert!(metrics.contains("imgcloud_state{node=\"2\",state=\"Active\"} 1"));
}

#[test]
fn a_watched_node_exits_promptly_on_sigterm_and_when_its_parent_goes() {
    // With --parent-watch a blocking thread reads stdin; neither a SIGTERM nor the end of
    // stdin may be held up by it.
    let cluster = Cluster::new(1, &[]);
    let log = cluster.dir.path().join("watched.log");
    let start = |cluster: &Cluster| {
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-node"))
            .args(["1", "--parent-watch", "--config"])
            .arg(cluster.config_path())
            .stdin(std::process::Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cloud-node starts");
        let http = cluster.config.node(1).unwrap().http;
        wait_for(SETTLE_LIMIT, || {
            support::http_get(http, "/status").is_some()
        })
        .expect("the node answers /status");
        child
    };
    // A node's exit is bounded by its own SHUTDOWN_GRACE (it waits for nothing else: ~10 ms
    // idle or beside a release build); the slack is for a machine busy with other tests, where
    // a hang still shows.
    let limit = imgcloud::node::SHUTDOWN_GRACE + Duration::from_secs(10);
    let exit = |mut child: std::process::Child, how: &str| {
        let status = poll(limit, || child.try_wait().ok().flatten());
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let status =
            status.unwrap_or_else(|| panic!("still running {limit:?} after {how}:\n{log}"));
        assert!(status.success(), "exit {status} after {how}:\n{log}");
        assert!(
            log.contains("shutting down"),
            "no clean shutdown after {how}:\n{log}"
        );
    };

    let child = start(&cluster);
    support::signal_child(&child, "TERM");
    exit(child, "SIGTERM");

    let mut child = start(&cluster);
    drop(child.stdin.take());
    exit(child, "the end of its stdin");
}
