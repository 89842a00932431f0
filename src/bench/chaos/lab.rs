//! The partition scenario's lab: hosts built out of network namespaces joined by a bridge, the
//! scenario run again inside them, and the nftables cut of one host.

use std::path::Path;
use std::process::Command;

use super::{
    cluster_config, drive, node_program, run_base, run_dir, ChaosArgs, Scenario, ScenarioOutcome,
};
use crate::bench::launcher::LocalCluster;
use crate::config::NodeAddr;
use crate::ids::NodeId;
use crate::{Error, Result};

/// Network namespace of the load generator and the bridge in the partition scenario.
pub const LB_NETNS: &str = "imgc-lb";
/// Prefix of the hosts' network namespaces (`imgc-h1`, `imgc-h2`, ...).
pub const HOST_NETNS: &str = "imgc-h";
/// The nftables table that makes the cut.
const CUT_TABLE: &str = "imgc_cut";

/// Runs a command, or says why it failed.
fn sh(program: &str, args: &[&str], input: Option<&str>) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Config(format!("cannot run {program}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn host_netns(id: NodeId) -> String {
    format!("{HOST_NETNS}{id}")
}

/// Drops, inside node `id`'s namespace, all traffic to and from `members`.
pub fn cut(id: NodeId, members: &[String]) -> Result<()> {
    let set = members.join(", ");
    let rules = format!(
        "table inet {CUT_TABLE} {{\n\
         chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
         chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
         }}\n"
    );
    let ns = host_netns(id);
    sh(
        "ip",
        &["netns", "exec", &ns, "nft", "-f", "-"],
        Some(&rules),
    )
}

/// Removes the cut of node `id`.
pub fn heal(id: NodeId) -> Result<()> {
    let ns = host_netns(id);
    sh(
        "ip",
        &[
            "netns", "exec", &ns, "nft", "delete", "table", "inet", CUT_TABLE,
        ],
        None,
    )
}

/// The partition scenario's outer half: builds the namespaces, runs `partition-inner` in the
/// load generator's namespace, passes its line on, and tears everything down.
pub(super) async fn partition_outer(args: &ChaosArgs) -> Result<ScenarioOutcome> {
    let lab = Lab::build(3)?;
    let exe = std::env::current_exe()?;
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", LB_NETNS])
        .arg(&exe)
        .arg("partition-inner")
        .args(["--clients", &args.clients.to_string()])
        .args(["--requests", &args.requests.to_string()])
        .args(["--deadline", &args.deadline.to_string()])
        .args(["--cut-for", &args.cut_for.to_string()])
        .arg("--node-program")
        .arg(node_program(args)?)
        .arg("--run-dir")
        .arg(run_base(args))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if args.no_verify {
        command.arg("--no-verify");
    }
    // Not `output()`: it would capture stderr, where the inner run explains a failure.
    let output = command.spawn()?.wait_with_output().await?;
    drop(lab);
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.starts_with("scenario="));
    let mut outcome = line.and_then(ScenarioOutcome::parse_line).ok_or_else(|| {
        Error::Protocol(format!(
            "partition-inner printed no result line (exit {})",
            output.status
        ))
    })?;
    if !output.status.success() && outcome.passed() {
        outcome
            .problems
            .push(format!("partition-inner exited with {}", output.status));
    }
    Ok(outcome)
}

/// The partition scenario's inner half, run inside [`LB_NETNS`]: nodes in their namespaces.
pub(super) async fn partition_inner(args: &ChaosArgs) -> Result<ScenarioOutcome> {
    let nodes: Vec<NodeAddr> = (1..=3u32)
        .map(|id| NodeAddr {
            id,
            addr: std::net::SocketAddr::from(([10, 77, 0, id as u8], 7000)),
            http: std::net::SocketAddr::from(([10, 77, 0, id as u8], 7100)),
        })
        .collect();
    let config = cluster_config(nodes);
    let dir = run_dir(args, "partition");
    let program = node_program(args)?;
    // `sh -c 'exec ip netns exec imgc-h$1 PROGRAM "$@"' PROGRAM ID --config ...`: each node in
    // its host's namespace, with the same pid (every step execs).
    let script = format!("exec ip netns exec {HOST_NETNS}\"$1\" \"$0\" \"$@\"");
    let program_arg = program.to_string_lossy().to_string();
    let prefix = ["-c", script.as_str(), program_arg.as_str()];
    let mut cluster =
        LocalCluster::new(config.clone(), &dir, Path::new("sh"), &prefix, None)?.started()?;
    let result = drive(Scenario::Partition, &mut cluster, &config, args).await;
    cluster.stop();
    for id in config.ids() {
        // A cut left behind by an early exit.
        let _ = heal(id);
    }
    result
}

/// Network namespaces for the partition scenario, removed on drop.
pub struct Lab {
    hosts: u32,
}

impl Lab {
    /// Builds `hosts` host namespaces bridged through [`LB_NETNS`] (10.77.0.254).
    pub fn build(hosts: u32) -> Result<Lab> {
        let lab = Lab { hosts };
        lab.teardown();
        let lb = LB_NETNS;
        sh("ip", &["netns", "add", lb], None)?;
        sh("ip", &["-n", lb, "link", "set", "lo", "up"], None)?;
        sh(
            "ip",
            &["-n", lb, "link", "add", "br0", "type", "bridge"],
            None,
        )?;
        sh(
            "ip",
            &["-n", lb, "addr", "add", "10.77.0.254/24", "dev", "br0"],
            None,
        )?;
        sh("ip", &["-n", lb, "link", "set", "br0", "up"], None)?;
        for id in 1..=hosts {
            let ns = host_netns(id);
            let veth = format!("v{id}");
            sh("ip", &["netns", "add", &ns], None)?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"], None)?;
            sh(
                "ip",
                &[
                    // "peer" is ip-link's word for the other end of a veth pair.
                    "-n", lb, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                    &ns,
                ],
                None,
            )?;
            sh(
                "ip",
                &["-n", lb, "link", "set", &veth, "master", "br0", "up"],
                None,
            )?;
            let addr = format!("10.77.0.{id}/24");
            sh(
                "ip",
                &["-n", &ns, "addr", "add", &addr, "dev", "eth0"],
                None,
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"], None)?;
        }
        Ok(lab)
    }

    /// Kills what still runs in the namespaces and deletes them.
    fn teardown(&self) {
        let mut names: Vec<String> = (1..=self.hosts).map(host_netns).collect();
        names.push(LB_NETNS.to_string());
        for ns in names {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}
