//! End-to-end tests of the cluster with real `cloud-node` processes on free loopback ports.

mod support;

use std::time::Duration;

use support::{poll, wait_for, Cluster};

#[test]
fn coordinator_kill_fails_over_and_a_restart_converges() {
    let mut cluster = Cluster::start(3, &[]);
    let (old, epoch) = cluster
        .wait_agreed(Duration::from_secs(5))
        .expect("initial agreement");

    cluster.kill(old as u32);
    let (new, new_epoch) = poll(Duration::from_secs(5), || {
        cluster.agreed().filter(|&(c, _)| c != old)
    })
    .unwrap_or_else(|| panic!("no failover: {:?}", cluster.statuses()));
    assert_ne!(new, old);
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");

    cluster.spawn(old as u32);
    let rejoined = cluster.wait_settled(Duration::from_secs(10));
    assert!(
        rejoined.is_some(),
        "no convergence after restart: {:?}\n{}",
        cluster.statuses(),
        cluster.log(old as u32)
    );
}

#[test]
fn cold_starts_agree_within_two_seconds_twenty_times_and_keep_it() {
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
        let agreed = cluster.wait_agreed(Duration::from_secs(2));
        assert!(
            agreed.is_some(),
            "trial {trial}: no agreement within 2 s: {:?}",
            cluster.statuses()
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            cluster.agreed(),
            agreed,
            "trial {trial}: the coordinator changed while idle"
        );
    }
}

#[test]
fn a_stopped_coordinator_is_replaced_and_catches_up() {
    let mut cluster = Cluster::start(3, &[]);
    let view = cluster
        .wait_agreed(Duration::from_secs(5))
        .expect("initial agreement");
    let old = view.0 as u32;
    cluster.signal(old, "STOP");
    let failover = cluster.wait_replaced(view, Duration::from_secs(5));
    assert!(
        failover.is_some(),
        "no failover after SIGSTOP: {:?}",
        cluster.statuses()
    );
    cluster.signal(old, "CONT");
    let back = cluster.wait_settled(Duration::from_secs(10));
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
    cluster
        .wait_agreed(Duration::from_secs(5))
        .expect("initial agreement");
    let victim = cluster
        .wait_any(Duration::from_secs(15), |s| s["state"] == "Failed")
        .expect("no node reported Failed");
    let back = cluster.wait_status(victim, Duration::from_secs(5), |s| s["state"] == "Active");
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
    cluster
        .wait_agreed(Duration::from_secs(5))
        .expect("agreement");
    let s = cluster.status(2).unwrap();
    for key in [
        "id",
        "state",
        "epoch",
        "coordinator",
        "load",
        "peers",
        "digest",
    ] {
        assert!(!s[key].is_null(), "/status lacks {key}: {s}");
    }
    assert_eq!(s["peers"].as_array().unwrap().len(), 2);
    let metrics = support::http_get(cluster.config.node(2).unwrap().http, "/metrics").unwrap();
    assert!(metrics.contains("# TYPE imgcloud_epoch gauge"));
    assert!(metrics.contains("imgcloud_state{node=\"2\",state=\"Active\"} 1"));
}

#[test]
fn a_watched_node_exits_promptly_on_sigterm_and_when_its_parent_goes() {
    // With --parent-watch a blocking thread reads stdin; neither a SIGTERM nor the end of
    // stdin may be held up by it.
    let cluster = Cluster::new(1, &[]);
    let start = |cluster: &Cluster| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-node"))
            .args(["1", "--parent-watch", "--config"])
            .arg(&cluster.config_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cloud-node starts");
        let http = cluster.config.node(1).unwrap().http;
        wait_for(Duration::from_secs(10), || {
            support::http_get(http, "/status").is_some()
        })
        .expect("the node answers /status");
        child
    };
    let exited_within = |child: &mut std::process::Child| {
        wait_for(Duration::from_secs(3), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
    };

    let mut child = start(&cluster);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let took = exited_within(&mut child);
    let _ = child.kill();
    assert!(took.is_some(), "still running 3 s after SIGTERM");

    let mut child = start(&cluster);
    drop(child.stdin.take());
    let took = exited_within(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    assert!(took.is_some(), "still running 3 s after its stdin closed");
}
