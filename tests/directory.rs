//! End-to-end tests of the phase-2 directory and accounts: real node processes with their
//! durable stores, real peer processes, real TCP.

mod support;

use std::time::Duration;

use imgcloud::sharing::{Credential, UserOp};
use serde_json::Value;
use support::{Cluster, PeerProc};

/// The user's entry in node `id`'s directory. A read that gets no answer (503 while the
/// node confirms its leader, a slow machine) is retried for up to 20 s; any answer counts.
fn entry(cluster: &Cluster, id: u32, user: &str) -> Option<Value> {
    let dir = support::poll(Duration::from_secs(20), || cluster.directory(id))?;
    dir.as_array()?.iter().find(|e| e["user"] == user).cloned()
}

fn online_everywhere(cluster: &Cluster, user: &str, addr: &str) -> bool {
    cluster.config.ids().into_iter().all(|id| {
        entry(cluster, id, user).is_some_and(|e| e["online"] == true && e["addr"] == addr)
    })
}

fn started(cluster: &Cluster, user: &str, password: &str) -> (PeerProc, String) {
    started_with(cluster, user, password, &[])
}

/// `user`'s peer started with `extra` flags, online; its printed address.
fn started_with(
    cluster: &Cluster,
    user: &str,
    password: &str,
    extra: &[&str],
) -> (PeerProc, String) {
    let peer = cluster.peer(user, password, extra);
    let addr = peer.addr.clone().unwrap_or_else(|| {
        panic!(
            "{user}'s peer did not come online; node 1 log:\n{}",
            cluster.log(1)
        )
    });
    (peer, addr)
}

#[test]
fn a_registration_is_visible_from_every_node_at_once_and_a_killed_peer_goes_offline_everywhere() {
    let cluster = Cluster::start(3, &[]);
    let (mut alice, addr) = started(&cluster, "alice", "alice's password");
    // The peer prints its address only after the cloud acknowledged the registration, so
    // every node must show it on the first read: linearizable, not eventually.
    assert!(
        online_everywhere(&cluster, "alice", &addr),
        "a node did not show alice right after her acknowledged registration: {:?}",
        cluster
            .config
            .ids()
            .iter()
            .map(|&id| cluster.directory(id))
            .collect::<Vec<_>>()
    );
    let online = support::output_within(
        &mut cluster.peer_command(
            "alice",
            "alice's password",
            &alice.dir,
            &["online", "--json"],
        ),
        support::COMMAND_LIMIT,
        "peer online",
    );
    assert!(
        online.status.success(),
        "{}",
        String::from_utf8_lossy(&online.stderr)
    );
    let listed: Value = serde_json::from_slice(&online.stdout).unwrap();
    assert_eq!(listed[0]["user"], "alice");
    assert_eq!(listed[0]["online"], true);
    assert_eq!(listed[0]["addr"], addr.as_str());

    alice.kill();
    let offline = support::wait_for(Duration::from_secs(30), || {
        cluster.config.ids().into_iter().all(|id| {
            entry(&cluster, id, "alice")
                .is_some_and(|e| e["online"] == false && e["addr"].is_null())
        })
    });
    let took = offline.expect("alice still online on some node 30 s after kill -9");
    assert!(
        took >= Duration::from_millis(1000),
        "offline too early ({took:?}): the lease is 3 s"
    );
}

#[test]
fn a_clean_stop_unregisters_at_once() {
    let cluster = Cluster::start(3, &[]);
    let (mut bob, addr) = started(&cluster, "bob", "pw");
    assert!(online_everywhere(&cluster, "bob", &addr));
    support::signal_child(&bob.child, "TERM");
    let (code, _) = bob
        .wait_exit(Duration::from_secs(10))
        .expect("bob's peer exits on SIGTERM");
    assert_eq!(code, 0);
    for id in cluster.config.ids() {
        let e = entry(&cluster, id, "bob").unwrap();
        assert_eq!(
            e["online"], false,
            "node {id} still shows bob online after his clean exit"
        );
    }
}

#[test]
fn an_impostor_cannot_take_a_name_and_every_acknowledged_write_survives_kill_9_of_all_nodes() {
    let mut cluster = Cluster::start(3, &[]);
    let (mut alice, addr) = started(&cluster, "alice", "right");
    let mut impostor = cluster.peer_at("alice", "wrong", "mallory", &[]);
    assert_eq!(impostor.addr, None, "the impostor came online as alice");
    let (code, err) = impostor
        .wait_exit(Duration::from_secs(10))
        .expect("the impostor exits");
    assert_eq!(code, 1);
    assert!(err.contains("wrong password for alice"), "stderr: {err}");
    assert!(
        online_everywhere(&cluster, "alice", &addr),
        "the impostor changed alice's entry"
    );

    alice.kill();
    for id in cluster.config.ids() {
        cluster.kill(id);
    }
    for id in cluster.config.ids() {
        cluster.spawn(id);
    }
    // alice's account (her key) survived: the impostor is still refused, alice still gets in.
    let back = support::poll(Duration::from_secs(20), || entry(&cluster, 2, "alice"));
    let back = back.expect("alice's account is gone after kill -9 of every node");
    assert!(back["last_seen"].is_u64());
    let mut impostor = cluster.peer_at("alice", "wrong", "mallory", &[]);
    assert_eq!(impostor.addr, None);
    let (_, err) = impostor.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(err.contains("wrong password"), "after the restart: {err}");
    let (_alice, addr) = started(&cluster, "alice", "right");
    assert!(online_everywhere(&cluster, "alice", &addr));
}

#[test]
fn a_replayed_registration_changes_nothing_and_an_old_one_is_refused() {
    let cluster = Cluster::start(3, &[]);
    let rt = support::runtime();
    let cloud = imgcloud::peer::Cloud::new(&cluster.config);
    let carol = Credential::derive("carol", "pw").unwrap();
    let register = carol.sign(UserOp::Register {
        addr: "127.0.0.1:1".into(),
        lease_ms: 5000,
    });
    let leave = carol.sign(UserOp::Unregister);
    rt.block_on(cloud.submit(&register)).unwrap();
    rt.block_on(cloud.submit(&leave)).unwrap();
    // An eavesdropper re-sends the captured registration. While it is one of carol's last 16
    // operations it is indistinguishable from a retry: answered, applied no second time.
    rt.block_on(cloud.submit(&register)).unwrap();
    assert_eq!(entry(&cluster, 3, "carol").unwrap()["online"], false);
    // Older than that, it is refused.
    for _ in 0..16 {
        rt.block_on(cloud.submit(&carol.sign(UserOp::Unregister)))
            .unwrap();
    }
    let replay = rt.block_on(cloud.submit(&register)).unwrap_err();
    assert!(replay.to_string().contains("replayed"), "{replay}");
    assert_eq!(entry(&cluster, 3, "carol").unwrap()["online"], false);
    // A lease for someone else's name, signed by carol's key, is refused too.
    let mut stolen = carol.sign(UserOp::Register {
        addr: "127.0.0.1:2".into(),
        lease_ms: 5000,
    });
    stolen.user = "dave".into();
    let refused = rt.block_on(cloud.submit(&stolen)).unwrap_err();
    assert!(
        matches!(&refused, imgcloud::Error::Unauthorized(why) if why.contains("signature")),
        "a lease signed by carol's key for dave: {refused:?}"
    );
    let listed = support::poll(Duration::from_secs(20), || cluster.directory(1))
        .expect("node 1 answers /directory");
    assert!(
        !listed.to_string().contains("\"dave\""),
        "a lease signed by carol's key registered dave: {listed}"
    );
}

#[test]
fn a_node_cut_off_from_the_majority_registers_nobody_and_the_majority_goes_on() {
    let cluster = Cluster::start(3, &[]);
    let rt = support::runtime();
    let (_alice, _) = started(&cluster, "alice", "pw");
    let node1 = cluster.config.node(1).unwrap().http;
    let erin = Credential::derive("erin", "pw").unwrap();
    let post = |op: &imgcloud::sharing::SignedOp| {
        let client = reqwest::Client::new();
        rt.block_on(async {
            let r = client
                .post(format!("http://{node1}/users/op"))
                .json(op)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    cluster.signal(2, "STOP");
    cluster.signal(3, "STOP");
    let register = erin.sign(UserOp::Register {
        addr: "127.0.0.1:3".into(),
        lease_ms: 5000,
    });
    let (status, body) = post(&register);
    assert_eq!(
        status, 503,
        "a node without a majority answered {status}: {body}"
    );
    assert!(body.contains("no majority"), "{body}");
    assert_eq!(
        cluster.directory(1),
        None,
        "an isolated node answered a linearizable read"
    );
    cluster.signal(2, "CONT");
    cluster.signal(3, "CONT");
    // The refused registration never happened; a new one goes through.
    let listed = support::poll(Duration::from_secs(10), || cluster.directory(2)).unwrap();
    assert!(
        !listed.to_string().contains("erin"),
        "a refused write was applied: {listed}"
    );
    let again = erin.sign(UserOp::Register {
        addr: "127.0.0.1:3".into(),
        lease_ms: 5000,
    });
    let ok = support::wait_for(Duration::from_secs(10), || post(&again).0 == 200);
    assert!(
        ok.is_some(),
        "the healed cluster did not take erin's registration"
    );
    assert!(entry(&cluster, 3, "erin").is_some());
}

#[test]
fn a_data_dir_of_another_node_or_a_damaged_store_stops_the_node_with_a_sentence() {
    let mut cluster = Cluster::start(3, &[]);
    assert!(support::poll(Duration::from_secs(10), || cluster.directory(1)).is_some());
    let data = cluster.config.data_dir.clone().unwrap();
    cluster.kill(2);
    let config_path = cluster.config_path();
    let run = |dir: &std::path::Path| {
        support::output_within(
            std::process::Command::new(env!("CARGO_BIN_EXE_cloud-node"))
                .arg("2")
                .arg("--config")
                .arg(&config_path)
                .arg("--data-dir")
                .arg(dir)
                .stdin(std::process::Stdio::null()),
            support::COMMAND_LIMIT,
            "a cloud-node on a wrong data dir",
        )
    };
    let busy = run(&data.join("node-1"));
    assert_eq!(busy.status.code(), Some(1));
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    cluster.kill(1);
    let wrong = run(&data.join("node-1"));
    assert_eq!(wrong.status.code(), Some(1));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("belongs to node 1, not node 2"), "{err}");

    let damaged = cluster.dir.path().join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("store.redb"), vec![0x5a; 64 * 1024]).unwrap();
    let out = run(&damaged);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the store"), "{err}");
    // Node 3 went on: it still answers (its store has no majority now, so no directory).
    assert!(cluster.status(3).is_some());
}

/// Node `id`'s store status.
fn store(cluster: &Cluster, id: u32) -> Option<Value> {
    cluster.status(id).map(|s| s["store"].clone())
}

/// Whether every node has applied at least `index` and all show the same state digest.
fn converged(cluster: &Cluster, index: u64) -> bool {
    let stores: Option<Vec<Value>> = cluster
        .config
        .ids()
        .into_iter()
        .map(|id| store(cluster, id))
        .collect();
    let Some(stores) = stores else { return false };
    stores.iter().all(|s| s["applied"].as_u64() >= Some(index))
        && stores.windows(2).all(|w| w[0]["digest"] == w[1]["digest"])
}

#[test]
fn a_node_far_behind_installs_a_snapshot_and_a_stopped_one_catches_up() {
    let mut cluster = Cluster::new(3, &[]);
    cluster.config.store.snapshot_every = 50;
    cluster.write_config().unwrap();
    for id in cluster.config.ids() {
        cluster.spawn(id);
    }
    let rt = support::runtime();
    let cloud = imgcloud::peer::Cloud::new(&cluster.config);
    let users: Vec<Credential> = (0..4)
        .map(|i| Credential::derive(&format!("u{i}"), "pw").unwrap())
        .collect();
    let write = |n: usize| {
        rt.block_on(async {
            for k in 0..n {
                let who = &users[k % users.len()];
                let op = who.sign(UserOp::Register {
                    addr: format!("127.0.0.1:{}", 1000 + k),
                    lease_ms: 5000,
                });
                cloud.submit(&op).await.unwrap();
            }
        })
    };
    write(10);
    cluster.kill(3);
    write(300);
    // Snapshots are built, and the log behind them purged, in the background after the
    // entries are applied: wait for it (bounded) rather than read it once.
    let leader = support::poll(Duration::from_secs(10), || {
        store(&cluster, 1).filter(|s| s["purged"].as_u64().is_some_and(|p| p > 20))
    })
    .unwrap_or_else(|| {
        panic!(
            "the log was not purged behind a snapshot: {:?}",
            store(&cluster, 1)
        )
    });
    let purged = leader["purged"].as_u64().unwrap();
    let applied = leader["applied"].as_u64().unwrap();
    assert!(purged > 20, "purged only up to {purged}");
    cluster.spawn(3);
    let caught_up = support::wait_for(Duration::from_secs(20), || converged(&cluster, applied));
    assert!(
        caught_up.is_some(),
        "node 3 did not catch up: {:?}",
        store(&cluster, 3)
    );
    let node3 = store(&cluster, 3).unwrap();
    assert!(
        node3["snapshot"].as_u64() >= Some(purged),
        "node 3 caught up without the snapshot: {node3}"
    );

    // A follower that is silent (stopped) while writes go on catches up when it returns.
    let follower = if leader["leader"] == 2 { 1 } else { 2 };
    cluster.signal(follower, "STOP");
    write(40);
    let applied = store(&cluster, 3).unwrap()["applied"].as_u64().unwrap();
    cluster.signal(follower, "CONT");
    let caught_up = support::wait_for(Duration::from_secs(20), || converged(&cluster, applied));
    assert!(
        caught_up.is_some(),
        "node {follower} did not catch up: {:?}",
        store(&cluster, follower)
    );
}

#[test]
fn a_wrong_secret_or_garbage_on_a_store_link_closes_only_that_link() {
    use imgcloud::wire::framing::split;
    use imgcloud::wire::handshake::MemberAuth;

    let cluster = Cluster::start(3, &[]);
    assert!(support::poll(Duration::from_secs(10), || cluster.directory(1)).is_some());
    let rt = support::runtime();
    let node1 = cluster.config.node(1).unwrap().addr;
    let secret = cluster.config.secret.clone();
    rt.block_on(async {
        // A process without the secret is refused a store link.
        let stream = tokio::net::TcpStream::connect(node1).await.unwrap();
        let (mut r, mut w) = split(stream);
        let refused = MemberAuth::new("not the secret")
            .connect(
                imgcloud::wire::handshake::LinkKind::Store,
                &mut r,
                &mut w,
                2,
                1,
            )
            .await;
        let refused = refused.expect_err("a wrong secret got a store link");
        assert!(
            refused.to_string().contains("failed to prove"),
            "refused for another reason than the secret: {refused}"
        );
        // A frame that is no store request (the framing is shared with the node links, whose
        // oversized-frame handling tests/hostile.rs checks).
        for garbage in [vec![0xff; 64], vec![7; 100_000]] {
            let stream = tokio::net::TcpStream::connect(node1).await.unwrap();
            let (mut r, mut w) = split(stream);
            MemberAuth::new(&secret)
                .connect(
                    imgcloud::wire::handshake::LinkKind::Store,
                    &mut r,
                    &mut w,
                    2,
                    1,
                )
                .await
                .unwrap();
            w.write_bytes(garbage.into()).await.unwrap();
            let closed = tokio::time::timeout(Duration::from_secs(5), r.next_frame()).await;
            assert!(
                matches!(closed, Ok(Ok(None)) | Ok(Err(_))),
                "the link stayed open or answered: {closed:?}"
            );
        }
    });
    // The node and its store go on.
    let (_alice, addr) = started(&cluster, "alice", "pw");
    assert!(online_everywhere(&cluster, "alice", &addr));
}

#[test]
fn a_peer_refuses_a_config_holding_the_cluster_secret_and_client_user_config_makes_one_without() {
    let cluster = Cluster::start(3, &[]);
    // The nodes' file, with the secret: refused before anything starts.
    let dir = cluster.dir.path().join("peers").join("eve");
    let out = support::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(["--user", "eve", "--dir"])
            .arg(&dir)
            .arg("--config")
            .arg(cluster.config_path())
            .env("IMGCLOUD_PASSWORD", "pw")
            .stdin(std::process::Stdio::null()),
        support::COMMAND_LIMIT,
        "peer with the nodes' config",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds the cluster secret"), "{err}");
    assert!(err.contains("client user-config"), "{err}");
    assert!(
        !err.contains(&cluster.config.secret),
        "the refusal shows the secret: {err}"
    );

    // `client user-config` writes the users' file: the nodes, no secret; a peer runs on it.
    let out = support::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_client"))
            .args(["user-config", "--config"])
            .arg(cluster.config_path()),
        support::COMMAND_LIMIT,
        "client user-config",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(&cluster.config.secret), "{text}");
    let users = imgcloud::config::ClusterConfig::parse(&text).unwrap();
    assert_eq!(users.nodes, cluster.config.nodes);
    assert_eq!(users.secret, "");
    std::fs::write(&cluster.user_config_path, &text).unwrap();
    let (_eve, _) = started(&cluster, "eve", "pw");
}

/// Issue 34: a peer started while the cloud had no majority exited at once ("the cloud has no
/// majority ... retry later"), so after the heal that user was gone. Now it runs, serves its
/// page, says once that it waits, and registers as soon as a majority answers.
#[test]
fn a_peer_started_without_a_majority_waits_and_registers_when_the_cloud_returns() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.kill(2);
    cluster.kill(3);
    let mut carol = cluster.peer_within("carol", "pw", "carol", &[], Duration::from_secs(3));
    assert_eq!(carol.addr, None, "carol came online without a majority");
    let waiting = support::poll(Duration::from_secs(10), || {
        carol
            .stdout()
            .contains("waiting for the cloud")
            .then_some(())
    });
    assert!(
        waiting.is_some(),
        "carol's peer did not say it waits; stdout:\n{}\nstderr:\n{}",
        carol.stdout(),
        carol.stderr()
    );
    assert!(
        carol.child.try_wait().unwrap().is_none(),
        "carol's peer exited without the cloud: {}",
        carol.stderr()
    );
    cluster.spawn(2);
    cluster.spawn(3);
    let online = support::poll(Duration::from_secs(40), || {
        entry(&cluster, 1, "carol").filter(|e| e["online"] == true)
    });
    assert!(
        online.is_some(),
        "carol did not register after the heal; stdout:\n{}",
        carol.stdout()
    );
    // The directory may show the registration a moment before the peer prints its line.
    let said = support::poll(Duration::from_secs(10), || {
        carol.stdout().contains("online at").then_some(())
    });
    assert!(said.is_some(), "{}", carol.stdout());
}

/// Issue 34: a peer listening on every interface (`--listen 0.0.0.0:0`) registered
/// 0.0.0.0:PORT, which no other peer can reach; it registers its address towards the cloud.
#[test]
fn a_peer_on_every_interface_registers_an_address_others_can_reach() {
    let cluster = Cluster::start(3, &[]);
    let (_dave, addr) = started_with(&cluster, "dave", "pw", &["--listen", "0.0.0.0:0"]);
    assert!(addr.starts_with("127.0.0.1:"), "dave advertised {addr}");
    assert!(online_everywhere(&cluster, "dave", &addr));
}

/// Issue 34: a peer whose registered address the cloud cannot reach said nothing, so its user
/// learned it only when no one could fetch from it. The node that records its first
/// registration now tries the address, and the peer says so, with the flags that fix it.
#[test]
fn a_peer_the_cloud_cannot_reach_says_so_and_a_reachable_one_does_not() {
    let cluster = Cluster::start(3, &[]);
    // Listening on 127.0.0.1, advertising 127.0.0.2: nothing answers there.
    let extra = ["--listen", "127.0.0.1:0", "--advertise", "127.0.0.2"];
    let (erin, addr) = started_with(&cluster, "erin", "pw", &extra);
    assert!(addr.starts_with("127.0.0.2:"), "erin advertised {addr}");
    let said = erin.stdout();
    assert!(
        said.contains(&format!("the cloud cannot reach this peer at {addr}"))
            && said.contains("--advertise IP"),
        "erin's peer did not say it is unreachable:\n{said}"
    );
    let (frank, frank_addr) = started_with(&cluster, "frank", "pw", &[]);
    assert!(
        !frank.stdout().contains("cannot reach"),
        "a reachable peer was told it is not:\n{}",
        frank.stdout()
    );
    // A new user's peer read its mailbox (and tried to rebuild its empty folder) before its
    // first registration went through, and warned that the cloud knows no such user.
    assert!(online_everywhere(&cluster, "frank", &frank_addr));
    assert!(
        !frank.stderr().contains("register first"),
        "a new user's peer asked the cloud before it registered:\n{}",
        frank.stderr()
    );
}
