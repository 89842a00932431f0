//! End-to-end test of the demo binary: it starts its own node processes, runs a small verified
//! stress test with the failure simulation on, tells the sharing story with three users' peers,
//! writes the report and the plot, and leaves no process behind.

mod support;

use std::process::Command;
use std::time::Duration;

#[test]
fn a_small_demo_serves_every_request_once_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (report, plot, run_dir) = (
        dir.path().join("r.json"),
        dir.path().join("r.png"),
        dir.path().join("run"),
    );
    let base = support::free_base_port().to_string();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"));
    demo.args(["--clients", "5", "--requests", "60", "--delay-ms", "20"])
        .args([
            "--failure-period",
            "1",
            "--failure-max",
            "1.5",
            "--observe",
            "0",
            "--limit-secs",
            "0.5",
            "--viewers",
            "6",
            "--views",
            "5",
        ])
        .args(["--base-port", &base])
        .arg("--report")
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--sharing-picture")
        .arg(dir.path().join("sharing.png"))
        .stdin(std::process::Stdio::null());
    let output = support::output_within(&mut demo, Duration::from_secs(300), "the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("=== ELECTION RESULT"),
        "the election is shown:\n{stdout}"
    );
    assert!(stdout.contains("STRESS TEST RESULTS"));
    assert!(!stderr.contains("panicked"), "{stderr}");

    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // With failures on, the load runs past its 300 requests until a failure came and went.
    let total = r["total"].as_u64().unwrap();
    assert!(total >= 300, "{r}");
    assert_eq!(r["success_rate"], 1.0, "{r}");
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["lost"], 0);
    let served: u64 = r["served_per_node"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(served, total, "served per node sums to the total");
    assert!(r["limit_rps"].as_f64().unwrap() > 0.0);
    // The yardstick, measured in the same run: efficiency against the static split.
    let baseline = r["baseline_rps"]
        .as_f64()
        .expect("the baseline was measured");
    let throughput = r["throughput_rps"].as_f64().unwrap();
    assert!(baseline > 0.0, "{r}");
    assert!(
        (r["efficiency"].as_f64().unwrap() - throughput / baseline).abs() < 1e-9,
        "{r}"
    );
    assert!(stdout.contains("static split: "), "{stdout}");
    assert!(r["lb_decisions"].as_u64().unwrap() >= total);
    let png = std::fs::read(&plot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the plot is a PNG");

    // The sharing story: every step printed and in the report, nothing overdrawn or lost.
    let sharing = &r["sharing"];
    let steps = sharing["steps"]
        .as_array()
        .expect("the report has the story's steps");
    assert!(steps.len() >= 20, "{sharing}");
    for step in steps {
        assert_eq!(step["ok"], true, "{step}");
        let what = step["what"].as_str().unwrap();
        assert!(
            stdout.contains(&format!("ok   {what}: ")),
            "{what} is printed"
        );
    }
    for what in [
        "carol loses her folder",
        "killed with SIGKILL",
        "alice revokes bob",
    ] {
        assert!(
            steps
                .iter()
                .any(|s| s["what"].as_str().unwrap().contains(what)),
            "{what}"
        );
    }
    assert_eq!(
        (
            sharing["overdraws"].as_u64(),
            sharing["lost_after_restart"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // The story's 6 images and 5 default images, and the view load's 6 x 5 and 6.
    assert_eq!(sharing["views_shown"].as_u64(), Some(6 + 30), "{sharing}");
    assert_eq!(sharing["views_default"].as_u64(), Some(5 + 6), "{sharing}");
    assert!(sharing["views_per_s"].as_f64().unwrap() > 0.0, "{sharing}");
    let latency = &sharing["view_latency_ms"];
    for key in ["p50", "p95", "p99", "max"] {
        assert!(latency[key].as_f64().unwrap() > 0.0, "{latency}");
    }

    let picture = std::fs::read(dir.path().join("sharing.png")).expect("the story's picture");
    assert!(
        picture.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the picture is a PNG"
    );

    // No node or peer outlives the demo (they exit with it; a bounded moment for the last to go).
    let leftover = support::wait_gone(run_dir.to_str().unwrap(), Duration::from_secs(10));
    assert_eq!(leftover, "", "processes left behind");
}

/// Ctrl-C in the middle of the sharing story stops the demo at once (exit 130) and leaves no
/// node and no peer behind.
#[test]
fn ctrl_c_during_the_sharing_story_leaves_no_process() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let base = support::free_base_port().to_string();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--clients", "2", "--requests", "20", "--failures", "off"])
        .args(["--limit-secs", "0", "--observe", "0", "--base-port", &base])
        .arg("--report")
        .arg(dir.path().join("r.json"))
        .arg("--plot")
        .arg(dir.path().join("r.png"))
        .arg("--sharing-picture")
        .arg(dir.path().join("s.png"))
        .arg("--run-dir")
        .arg(&run_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // Interrupt once the users' peers run: the first step's line is printed.
            if line.contains("alice, bob and carol start their peers") {
                let _ = tx.send(line);
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(120));
    let interrupted = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = demo.kill();
            let _ = demo.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(started.is_ok(), "the story never started its peers");
    assert!(interrupted.success());
    assert_eq!(status.and_then(|s| s.code()), Some(130), "exit on Ctrl-C");
    let leftover = support::wait_gone(run_dir.to_str().unwrap(), Duration::from_secs(10));
    assert_eq!(leftover, "", "processes left behind after Ctrl-C");
}
