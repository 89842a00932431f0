//! Nothing a test starts outlives it, whether it passes, panics or dies at once: a test process
//! of this binary starts three nodes and a peer and then panics (destructors run) or aborts
//! (none run: only the children's parent watch can end them), and no process of its cluster
//! may be left.

mod support;

use std::process::Command;
use std::time::Duration;

use support::Cluster;

/// Set (to "panic" or "abort") only when this binary runs itself as the helper.
const HELPER: &str = "IMGCLOUD_CLEANUP_HELPER";

#[test]
#[ignore = "a helper: run by no_process_outlives_a_test_that_panics_or_aborts"]
fn helper_starts_a_cluster_and_a_peer_then_dies() {
    let Ok(how) = std::env::var(HELPER) else {
        return;
    };
    let cluster = Cluster::start(3, &[]);
    cluster
        .wait_agreed(Duration::from_secs(30))
        .expect("the helper's cluster agrees");
    let peer = cluster.peer("alice", "pw", &[]);
    assert!(peer.addr.is_some(), "the helper's peer came online");
    println!("CLUSTER-DIR {}", cluster.dir.path().display());
    match how.as_str() {
        "abort" => std::process::abort(),
        _ => panic!("on purpose"),
    }
}

#[test]
fn no_process_outlives_a_test_that_panics_or_aborts() {
    for how in ["panic", "abort"] {
        let out = support::output_within(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "helper_starts_a_cluster_and_a_peer_then_dies",
                    "--nocapture",
                ])
                .env(HELPER, how),
            Duration::from_secs(120),
            "the helper test",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CLUSTER-DIR "))
            .unwrap_or_else(|| panic!("the helper ({how}) did not start its cluster:\n{stdout}"))
            .to_string();
        assert!(!out.status.success(), "the helper ({how}) did not die");
        // The helper's nodes and peer are started with its cluster's folder on their command
        // lines; each notices its parent's end at once (a closed stdin).
        let left = support::wait_gone(&dir, Duration::from_secs(20));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            left, "",
            "processes left behind by a test that died by {how}"
        );
    }
}
