//! Global flags: the cluster flags (`--config`, `--nodes`, `--base-port`, `--secret`) are taken
//! before or after a subcommand, and every command that needs the secret reads it from
//! `--config` (issue 33: `client decrypt --config F` failed with "unexpected argument").

use std::path::Path;
use std::process::Command;

fn client(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .current_dir(dir)
        .env_remove("IMGCLOUD_SECRET")
        .output()
        .expect("client runs")
}

#[test]
fn client_takes_the_cluster_flags_before_or_after_the_subcommand_and_the_secret_from_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("photo.jpg"), imgcloud::SAMPLE_IMAGE).unwrap();
    std::fs::write(
        dir.path().join("cloud.toml"),
        "secret = \"flags-secret\"\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let after = [
        "encrypt",
        "--local",
        "--owner",
        "alice",
        "-o",
        "sealed.png",
        "photo.jpg",
    ];
    let out = client(
        &[&after[..], &["--config", "cloud.toml"]].concat(),
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Sealed with the config's secret: the development secret cannot open it ...
    let out = client(&["decrypt", "sealed.png", "-o", "dev.jpg"], dir.path());
    assert!(!out.status.success(), "opened without the config's secret");
    // ... and the config given before or after the subcommand can.
    for args in [
        &[
            "--config",
            "cloud.toml",
            "decrypt",
            "sealed.png",
            "-o",
            "a.jpg",
        ][..],
        &[
            "decrypt",
            "sealed.png",
            "-o",
            "b.jpg",
            "--config",
            "cloud.toml",
        ][..],
        &[
            "--secret",
            "flags-secret",
            "decrypt",
            "sealed.png",
            "-o",
            "c.jpg",
        ][..],
    ] {
        let out = client(args, dir.path());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let name = args[args.iter().position(|a| *a == "-o").unwrap() + 1];
        let back = std::fs::read(dir.path().join(name)).unwrap();
        assert!(
            back == imgcloud::SAMPLE_IMAGE,
            "{args:?}: another image came back"
        );
    }

    // A cluster command, the flags on either side.
    for args in [
        &["--config", "cloud.toml", "user-config"][..],
        &["user-config", "--config", "cloud.toml"][..],
    ] {
        let out = client(args, dir.path());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("127.0.0.1:1"),
            "{args:?}: {text}"
        );
        assert!(
            !text.contains("flags-secret"),
            "{args:?}: the secret leaked: {text}"
        );
    }
}

/// Issue 33: the hint of a subcommand run without its peer left out the flags the user gave
/// ("start it with `peer --user bob`" for a peer started with --dir and --base-port).
#[test]
fn peers_hint_repeats_the_flags_given_on_either_side() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("bob");
    let folder = folder.to_str().unwrap();
    let flags = ["--user", "bob", "--dir", folder, "--base-port", "9100"];
    for args in [
        [&["online"][..], &flags].concat(),
        [&flags[..], &["online"]].concat(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("peer runs");
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = format!("start it with `peer --user bob --dir {folder} --base-port 9100`");
        assert!(
            !out.status.success() && err.contains(&hint),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("unavailable:").count(), 1, "{err}");
    }
}

/// How a binary parses `args`, as Debug text (to compare two orders of the same flags).
fn parsed<P: clap::Parser + std::fmt::Debug>(args: &[&str]) -> String {
    let parsed = P::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    format!("{parsed:?}")
}

/// Parses `first`, then the same words with `flags` moved after `rest`: both must parse the
/// same, and the flags must have been taken (`taken` appears in the parse).
fn same_either_side<P: clap::Parser + std::fmt::Debug>(
    program: &str,
    flags: &[&str],
    rest: &[&str],
    taken: &str,
) {
    let before: Vec<&str> = [&[program], flags, rest].concat();
    let after: Vec<&str> = [&[program], rest, flags].concat();
    let (b, a) = (parsed::<P>(&before), parsed::<P>(&after));
    assert_eq!(b, a, "{before:?} and {after:?} parse differently");
    assert!(b.contains(taken), "{before:?} did not take its flags: {b}");
}

/// Issue 33: every binary takes its cluster flags (and `--json` where it applies) on either
/// side of its subcommand or positional arguments.
#[test]
fn every_binary_takes_its_flags_on_either_side() {
    use imgcloud::bench::chaos::ChaosArgs;
    use imgcloud::client::cli::ClientArgs;
    use imgcloud::node::cli::NodeArgs;
    use imgcloud::peer::cli::PeerArgs;

    let cluster = ["--nodes", "5", "--base-port", "9100"];
    for rest in [
        &["status"][..],
        &["status", "--json"],
        &["user-config"],
        &["decrypt", "x.png"],
        &["encrypt", "s.png", "--owner", "alice", "-o", "out.png"],
        &["stress", "--clients", "2"],
        &["7", "3"],
    ] {
        let flags = [&cluster[..], &["--secret", "s", "--config", "c.toml"]].concat();
        same_either_side::<ClientArgs>("client", &flags, rest, "base_port: 9100");
    }
    for rest in [&["online"][..], &["share", "p.png"], &["view", "cat"], &[]] {
        let flags = [&cluster[..], &["--user", "bob", "--dir", "d", "--json"]].concat();
        same_either_side::<PeerArgs>("peer", &flags, rest, "base_port: 9100");
    }
    let node = [&cluster[..], &["--secret", "s", "--config", "c.toml"]].concat();
    same_either_side::<NodeArgs>("cloud-node", &node, &["2"], "base_port: 9100");
    same_either_side::<ChaosArgs>(
        "chaos",
        &["--base-port", "9100", "--clients", "3"],
        &["kill-server", "partition"],
        "base_port: Some(9100)",
    );
}
