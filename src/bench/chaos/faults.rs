//! The faults a scenario injects into the running cluster: SIGKILL and restart, SIGSTOP for a
//! while, a round of restarts, and a network partition of the coordinator's host.

use std::process::Command;
use std::time::{Duration, Instant};

use tracing::info;

use super::lab::{cut, heal};
use super::{secs, Ctx, AGREE_WAIT, ISOLATION_GRACE, POLL_INTERVAL};
use crate::bench::launcher::LocalCluster;
use crate::cluster::message::NodeState;
use crate::config::NodeAddr;
use crate::ids::NodeId;
use crate::watch::wait_for_agreement;
use crate::{Error, Result};

/// Kills the coordinator or a serving follower, waits, restarts it.
pub(super) async fn kill_and_restart(ctx: Ctx<'_>, coordinator: bool) -> Vec<String> {
    let Some(leader) = ctx.watch.coordinator() else {
        return vec!["no coordinator to find the victim by".into()];
    };
    let victim = if coordinator {
        leader
    } else {
        // A follower with work in progress (waiting up to 3 s for one), else the busiest.
        let started = Instant::now();
        loop {
            let latest = ctx.watch.latest();
            let followers = latest.values().filter(|s| s.core.id != leader);
            let busy = followers
                .clone()
                .filter(|s| s.in_flight > 0)
                .map(|s| s.core.id)
                .next();
            if let Some(id) = busy {
                break id;
            }
            if started.elapsed() > Duration::from_secs(3) {
                match followers.max_by_key(|s| s.encryptions).map(|s| s.core.id) {
                    Some(id) => break id,
                    None => return vec!["no follower to kill".into()],
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    info!(victim, coordinator, "SIGKILL node {victim}");
    ctx.cluster.kill(victim);
    tokio::time::sleep(secs(ctx.args.restart_after)).await;
    info!(victim, "restarting node {victim}");
    match ctx.cluster.spawn(victim) {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!("cannot restart node {victim}: {e}")],
    }
}

/// Sends `signal` (e.g. "STOP") to node `id` with the `kill` command.
fn signal(cluster: &LocalCluster, id: NodeId, signal: &str) -> Result<()> {
    let pid = cluster
        .pid(id)
        .ok_or_else(|| Error::Config(format!("node {id} is not running")))?;
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Config(format!("kill -{signal} {pid} failed")))
    }
}

/// SIGSTOPs the coordinator, waits, SIGCONTs it.
pub(super) async fn stop_coordinator(ctx: Ctx<'_>) -> Vec<String> {
    let Some(leader) = ctx.watch.coordinator() else {
        return vec!["no coordinator to stop".into()];
    };
    info!(leader, "SIGSTOP node {leader}");
    if let Err(e) = signal(ctx.cluster, leader, "STOP") {
        return vec![e.to_string()];
    }
    tokio::time::sleep(secs(ctx.args.stop_for)).await;
    info!(leader, "SIGCONT node {leader}");
    match signal(ctx.cluster, leader, "CONT") {
        Ok(()) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

/// Restarts every node in turn, `rounds` times, waiting for agreement after each restart.
pub(super) async fn restart_loop(ctx: Ctx<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    for round in 1..=ctx.args.rounds {
        for id in ctx.cluster.config.ids() {
            info!(round, node = id, "restarting node {id}");
            ctx.cluster.kill(id);
            if let Err(e) = ctx.cluster.spawn(id) {
                problems.push(format!("round {round}: cannot restart node {id}: {e}"));
                return problems;
            }
            if wait_for_agreement(&ctx.nodes, AGREE_WAIT).await.is_none() {
                problems.push(format!(
                    "round {round}: no agreement within {} s after restarting node {id}",
                    AGREE_WAIT.as_secs()
                ));
            }
        }
    }
    problems
}

/// Cuts the coordinator's host off for `cut_for`, checking the two sides, then heals.
pub(super) async fn partition(ctx: Ctx<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(isolated) = ctx.watch.coordinator() else {
        return vec!["no coordinator to isolate".into()];
    };
    let others: Vec<&NodeAddr> = ctx.nodes.iter().filter(|n| n.id != isolated).collect();
    let Some(me) = ctx.nodes.iter().find(|n| n.id == isolated) else {
        return vec![format!("node {isolated} is not in the cluster")];
    };
    let other_ips: Vec<String> = others.iter().map(|n| n.addr.ip().to_string()).collect();
    info!(isolated, "cutting node {isolated} off from {other_ips:?}");
    if let Err(e) = cut(isolated, &other_ips) {
        return vec![format!("cannot cut node {isolated} off: {e}")];
    }
    let cut_at = Instant::now();
    let cut_for = secs(ctx.args.cut_for);
    tokio::time::sleep(ISOLATION_GRACE.min(cut_for)).await;
    let ok_before = ctx.load.progress();
    // After the grace: the isolated node refuses work, the majority serves.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    match post_encrypt(&http, me).await {
        Some(503) => {}
        other => problems.push(format!(
            "the isolated node {isolated} answered POST /encrypt with {other:?}, not 503"
        )),
    }
    if let Some(member) = others.first() {
        match post_encrypt(&http, member).await {
            Some(200) => {}
            other => problems.push(format!(
                "majority node {} answered POST /encrypt with {other:?}, not 200",
                member.id
            )),
        }
    }
    // Until the heal, the isolated node must never act as coordinator.
    let mut acted = 0;
    while cut_at.elapsed() < cut_for {
        if let Some(s) = ctx.watch.latest().get(&isolated) {
            if s.core.state == NodeState::Active && s.core.coordinator == Some(isolated) {
                acted += 1;
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    if acted > 0 {
        problems.push(format!(
            "the isolated node {isolated} acted as coordinator in {acted} polls after the grace"
        ));
    }
    let served = ctx.load.progress().saturating_sub(ok_before);
    if served == 0 {
        problems.push("the majority served nothing during the partition".into());
    }
    info!(isolated, served, "healing the partition");
    if let Err(e) = heal(isolated) {
        problems.push(format!("cannot heal the partition: {e}"));
    }
    problems
}

async fn post_encrypt(http: &reqwest::Client, node: &NodeAddr) -> Option<u16> {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(crate::SAMPLE_IMAGE.to_vec()).file_name("s.png"),
        )
        .text("owner", "chaos");
    http.post(format!("http://{}/encrypt", node.http))
        .multipart(form)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}
