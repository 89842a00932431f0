//! The demo always shows a failure under load: with small numbers, whose requests alone take a
//! fraction of a second on any machine, the cluster's own elected victim still fails and
//! recovers inside the load, and the report's `failure_windows`, `failures_injected` and
//! `timeline` show it.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest the demo may take here: the first election (at most 15 s) and a load that waits
/// at most settle + period + longest failure + slack (2 + 2 + 6 + 5 s) at the defaults, twice
/// over for a machine busy with other tests (it takes 4-5 s idle): it tells a hang.
const DEMO_LIMIT: Duration = Duration::from_secs(120);

/// Runs the demo with `args` in `dir`, killed if it takes longer than [`DEMO_LIMIT`]; returns
/// its stdout and the report. Asserts it succeeded and left no process behind.
fn run_demo(dir: &Path, args: &[&str]) -> (String, Value) {
    let (report, run_dir) = (dir.join("r.json"), dir.join("run"));
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let base = support::free_base_port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(args)
        .args(["--observe", "0", "--limit-secs", "0", "--base-port", &base])
        .arg("--report")
        .arg(&report)
        .arg("--plot")
        .arg(dir.join("r.png"))
        .arg("--run-dir")
        .arg(&run_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("the demo starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > DEMO_LIMIT {
            // Its nodes watch their parent and go when it does.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "demo failed or ran past {DEMO_LIMIT:?}:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();

    // No node outlives the demo (they exit with it; a bounded moment for the last to go).
    let leftover = support::wait_gone(run_dir.to_str().unwrap(), Duration::from_secs(10));
    assert_eq!(leftover, "", "processes left behind");
    (stdout, report)
}

#[test]
fn a_small_fast_demo_still_runs_through_a_failure_and_its_recovery() {
    let dir = tempfile::tempdir().unwrap();
    // 300 requests with no delay take well under a second; the first failure comes after 2 s.
    // The coordinator fails first, on purpose: the window says so.
    let args = [
        "--clients",
        "10",
        "--requests",
        "30",
        "--first-victim",
        "coordinator",
    ];
    let (stdout, r) = run_demo(dir.path(), &args);

    let duration = r["duration_s"].as_f64().unwrap();
    let windows = r["failure_windows"].as_array().unwrap();
    assert!(r["failures_injected"].as_u64().unwrap() >= 1, "{r}");
    let inside = windows.iter().find(|w| {
        let (start, end) = (w["start_s"].as_f64().unwrap(), w["end_s"].as_f64().unwrap());
        start > 0.0 && start < end && end < duration
    });
    let inside = inside.unwrap_or_else(|| {
        panic!("no failure window opens and closes inside the {duration} s load: {windows:?}")
    });
    assert_eq!(
        windows[0]["coordinator"], true,
        "the first victim: {windows:?}"
    );
    let role = match inside["coordinator"].as_bool() {
        Some(true) => " (the coordinator)",
        _ => "",
    };
    assert!(
        stdout.contains(&format!("node {}{role} failed at", inside["node"])),
        "{stdout}"
    );
    // Every request answered once, and at least the 300 asked for.
    assert!(r["total"].as_u64().unwrap() >= 300, "{r}");
    assert_eq!(r["success_rate"], 1.0, "{r}");
    assert_eq!((&r["duplicates"], &r["lost"]), (&0.into(), &0.into()));
    assert!(r["takeovers"].is_u64(), "{r}");

    // The timeline: one entry per 100 ms from 0 to the last reply, and the window's slices in it.
    let timeline = r["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), (duration / 0.1).floor() as usize + 1);
    for (i, slice) in timeline.iter().enumerate() {
        assert!((slice["t_s"].as_f64().unwrap() - i as f64 * 0.1).abs() < 1e-9);
        for key in ["ok", "p50_ms", "p99_ms", "served_per_node"] {
            assert!(slice.get(key).is_some(), "slice {i} lacks {key}: {slice}");
        }
    }
    let ok: u64 = timeline.iter().map(|s| s["ok"].as_u64().unwrap()).sum();
    assert_eq!(
        ok,
        r["succeeded"].as_u64().unwrap(),
        "slices sum to the successes"
    );
    assert!(stdout.contains("Worst Failure Slice:"), "{stdout}");
}
