//! Directory benchmark with real `cloud-node` processes on loopback, fsync on.
//!
//! `cargo bench --bench directory` prints, for 50 concurrent users:
//! - writes: signed registrations (`POST /users/op`) spread over the three nodes (two thirds
//!   reach a follower and are forwarded to the Raft leader); each is acknowledged only once a
//!   majority has it on disk. Throughput and latency p50/p99/max.
//! - reads: linearizable `GET /directory` from every node (each read waits for a leadership
//!   confirmation, shared by the reads waiting at that moment).
//!
//! The load generator runs on the same two cores as the three nodes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use imgcloud::sharing::{Credential, UserOp};
use support::Cluster;

const USERS: usize = 50;
const WRITES_PER_USER: usize = 100;
const READS_PER_USER: usize = 200;

fn report(name: &str, count: usize, elapsed: Duration, h: &Histogram<u64>) {
    println!(
        "{name:<28} n={count:<6} {:>8.0}/s  p50={:>6.2} ms  p99={:>6.2} ms  max={:>7.2} ms",
        count as f64 / elapsed.as_secs_f64(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

fn main() {
    let cluster = Cluster::start(3, &[]);
    let rt = support::runtime();
    let nodes: Vec<_> = cluster.config.nodes.iter().map(|n| n.http).collect();
    let creds: Vec<Credential> = (0..USERS)
        .map(|i| Credential::derive(&format!("user{i}"), "benchmark password").unwrap())
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(USERS)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    support::poll(Duration::from_secs(20), || cluster.directory(1)).expect("the store is up");

    let post = |cred: &Credential, node: std::net::SocketAddr, http: reqwest::Client| {
        let op = cred.sign(UserOp::Register {
            addr: format!("127.0.0.1:{}", 20000 + cred.user().len()),
            lease_ms: 5000,
        });
        async move {
            let started = Instant::now();
            let r = http
                .post(format!("http://{node}/users/op"))
                .json(&op)
                .send()
                .await
                .expect("a node answers");
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
            started.elapsed()
        }
    };
    // Every account exists before the measured run.
    rt.block_on(async {
        for (i, cred) in creds.iter().enumerate() {
            post(cred, nodes[i % nodes.len()], http.clone()).await;
        }
    });

    // 50 writers (the goal's load), then 5 (a write's latency with little queueing).
    for writers in [USERS, 5] {
        let cpu_before = cluster.nodes_cpu();
        let (writes, elapsed) = rt.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = creds[..writers]
                .iter()
                .enumerate()
                .map(|(i, cred)| {
                    let (cred, http, nodes) = (cred.clone(), http.clone(), nodes.clone());
                    tokio::spawn(async move {
                        let mut h = Histogram::<u64>::new(3).unwrap();
                        for k in 0..WRITES_PER_USER {
                            let node = nodes[(i + k) % nodes.len()];
                            let took = post(&cred, node, http.clone()).await;
                            h.record(took.as_micros() as u64).unwrap();
                        }
                        h
                    })
                })
                .collect();
            let mut all = Histogram::<u64>::new(3).unwrap();
            for t in tasks {
                all.add(t.await.unwrap()).unwrap();
            }
            (all, started.elapsed())
        });
        let count = writers * WRITES_PER_USER;
        report(
            &format!("writes ({writers} writers)"),
            count,
            elapsed,
            &writes,
        );
        let cpu = cluster.nodes_cpu() - cpu_before;
        println!(
            "  node CPU: {cpu:.2} s for {count} writes ({:.0} us per write, all three nodes)",
            cpu * 1e6 / count as f64
        );
    }

    let (reads, elapsed) = rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..USERS)
            .map(|i| {
                let (http, nodes) = (http.clone(), nodes.clone());
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new(3).unwrap();
                    for k in 0..READS_PER_USER {
                        let node = nodes[(i + k) % nodes.len()];
                        let t = Instant::now();
                        let r = http
                            .get(format!("http://{node}/directory"))
                            .send()
                            .await
                            .expect("a node answers");
                        assert_eq!(r.status(), 200);
                        let body = r.bytes().await.unwrap();
                        assert!(body.len() > USERS * 20, "a directory of {USERS} users");
                        h.record(t.elapsed().as_micros() as u64).unwrap();
                    }
                    h
                })
            })
            .collect();
        let mut all = Histogram::<u64>::new(3).unwrap();
        for t in tasks {
            all.add(t.await.unwrap()).unwrap();
        }
        (all, started.elapsed())
    });
    report(
        "reads (50 readers)",
        USERS * READS_PER_USER,
        elapsed,
        &reads,
    );
    let status = cluster.status(1).unwrap();
    println!("store after the run: {}", status["store"]);
}
