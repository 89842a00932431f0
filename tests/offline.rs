//! End-to-end tests of offline operation (SPEC §6.3 steps 7-8): owner updates and requests
//! that wait in the cloud's mailboxes while their addressee is offline, a revoke that
//! survives `kill -9` of the whole cloud, receipts, and folders rebuilt from a password.
//! Real node processes with their durable stores, real peers, real images.

mod support;

use std::time::Duration;

use imgcloud::codec::metadata::ImageId;
use imgcloud::sharing::{Ask, Credential};
use serde_json::Value;
use support::users::{copy_of, every_node_follows_one_leader, photo, post, temp_file, User};
use support::Cluster;

/// Stops a user's peer cleanly (it unregisters: the directory shows it offline at once).
fn stop(user: &mut User) {
    support::signal_child(&user.proc.child, "TERM");
    let exited = user.proc.wait_exit(Duration::from_secs(10));
    assert!(exited.is_some(), "{}'s peer did not stop", user.name);
}

/// Waits (at most 20 s) until the entry with `id` in what `user`'s `listing` subcommand
/// prints (`images`, `requests`) satisfies `check`; that entry.
fn entry_of(user: &User, listing: &str, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    support::poll(Duration::from_secs(20), || {
        let entries = user.ok(&[listing]);
        let entry = entries.as_array()?.iter().find(|e| e["id"] == id)?.clone();
        check(&entry).then_some(entry)
    })
    .unwrap_or_else(|| {
        panic!(
            "{}'s {listing} {id} never reached the expected state",
            user.name
        )
    })
}

fn image_entry(user: &User, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    entry_of(user, "images", id, check)
}

fn request_entry(user: &User, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    entry_of(user, "requests", id, check)
}

fn share(cluster: &Cluster, owner: &User, name: &str, seed: u32) -> (String, Vec<u8>) {
    let original = photo(120, 80, seed);
    let path = temp_file(cluster, &format!("{name}.png"), &original);
    let shared = owner.ok(&["share", path.to_str().unwrap()]);
    (shared["id"].as_str().unwrap().to_string(), original)
}

fn grant(owner: &User, viewer: &User, name: &str, views: u32) {
    let request = viewer.ok(&["request", &owner.name, name, "--views", &views.to_string()]);
    owner.ok(&["approve", request["id"].as_str().unwrap()]);
}

fn receipt(owner: &User, id: &str, viewer: &str) -> (u64, u64) {
    let entry = image_entry(owner, id, |e| e["viewers"].is_array());
    let r = entry["viewers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["viewer"] == viewer)
        .unwrap_or_else(|| panic!("no receipt for {viewer}: {entry}"))
        .clone();
    (
        r["views_used"].as_u64().unwrap(),
        r["views_left"].as_u64().unwrap(),
    )
}

fn view(cluster: &Cluster, user: &User, id: &str, tag: &str) -> (Value, Vec<u8>) {
    let out = cluster.dir.path().join(format!("{}-{tag}.png", user.name));
    let shown = user.ok(&["view", id, "-o", out.to_str().unwrap()]);
    (shown, std::fs::read(&out).unwrap())
}

#[test]
fn updates_and_requests_wait_for_offline_users_and_a_revoke_survives_a_cloud_restart() {
    let mut cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &[]);
    let mut bob = User::start(&cluster, "bob", &[]);
    let (cat, cat_bytes) = share(&cluster, &alice, "cat", 1);
    let (dog, _) = share(&cluster, &alice, "dog", 2);
    grant(&alice, &bob, "cat", 2);
    grant(&alice, &bob, "dog", 3);
    assert_eq!(copy_of(&bob, &cat)["views_left"], 2);
    assert_eq!(copy_of(&bob, &dog)["views_left"], 3);

    // A quota change while bob is offline reaches his copy when he returns.
    stop(&mut bob);
    let changed = alice.ok(&["quota", "cat", "bob=5"]);
    assert_eq!(changed["views_left"], 5);
    assert_eq!(changed["delivered"], false, "bob is offline: {changed}");
    assert_eq!(receipt(&alice, &cat, "bob"), (0, 5));
    let mut bob = User::start(&cluster, "bob", &[]);
    image_entry(&bob, &cat, |e| e["views_left"] == 5);
    let (shown, bytes) = view(&cluster, &bob, &cat, "cat-1");
    assert_eq!(
        (shown["shown"].as_str(), shown["views_left"].as_u64()),
        (Some("image"), Some(4))
    );
    assert_eq!(bytes, cat_bytes);
    assert_eq!(
        receipt(&alice, &cat, "bob"),
        (1, 4),
        "receipts count the view"
    );
    // `allow` while he is online: straight to his peer.
    let allowed = alice.ok(&["allow", "cat", "bob=2"]);
    assert_eq!(
        (
            allowed["views_left"].as_u64(),
            allowed["delivered"].as_bool()
        ),
        (Some(6), Some(true))
    );
    image_entry(&bob, &cat, |e| e["views_left"] == 6);

    // A revoke while bob is offline survives kill -9 of every node, then stops his views
    // of that image; his other grant is intact.
    stop(&mut bob);
    let revoked = alice.ok(&["revoke", "dog", "bob"]);
    assert_eq!(revoked["views_left"], 0);
    for id in cluster.config.ids() {
        cluster.kill(id);
    }
    for id in cluster.config.ids() {
        cluster.spawn(id);
    }
    every_node_follows_one_leader(&cluster);
    let bob = User::start(&cluster, "bob", &[]);
    image_entry(&bob, &dog, |e| e["views_left"] == 0);
    let (no, _) = view(&cluster, &bob, &dog, "dog-revoked");
    assert_eq!(no["shown"], "default", "a revoked view was shown: {no}");
    let (yes, bytes) = view(&cluster, &bob, &cat, "cat-2");
    assert_eq!(
        (yes["shown"].as_str(), yes["views_left"].as_u64()),
        (Some("image"), Some(5))
    );
    assert_eq!(bytes, cat_bytes);

    // A request to alice while she is offline waits in her mailbox; her approval, made
    // while carol is offline in turn, reaches carol when she returns.
    let mut alice = alice;
    stop(&mut alice);
    let mut carol = User::start(&cluster, "carol", &[]);
    let asked = carol.ok(&["request", "alice", "cat", "--views", "1"]);
    assert_eq!(asked["state"], "pending");
    let req = asked["id"].as_str().unwrap().to_string();
    stop(&mut carol);
    let alice = User::start(&cluster, "alice", &[]);
    let waiting = request_entry(&alice, &req, |q| q["state"] == "pending");
    assert_eq!(waiting["from"], "carol");
    alice.ok(&["approve", &req]);
    let carol = User::start(&cluster, "carol", &[]);
    assert_eq!(copy_of(&carol, &cat)["views_left"], 1);
    request_entry(&carol, &req, |q| q["state"] == "delivered");
    let (seen, bytes) = view(&cluster, &carol, &cat, "cat");
    assert_eq!(seen["shown"], "image");
    assert_eq!(bytes, cat_bytes);
    drop((alice, bob, carol));
}

#[test]
fn users_who_lose_their_folders_get_their_images_and_views_back_from_their_passwords() {
    let cluster = Cluster::start(3, &[]);
    let mut alice = User::start(&cluster, "alice", &[]);
    let mut bob = User::start(&cluster, "bob", &[]);
    let (cat, cat_bytes) = share(&cluster, &alice, "cat", 3);
    grant(&alice, &bob, "cat", 3);
    copy_of(&bob, &cat);
    let (first, _) = view(&cluster, &bob, &cat, "before");
    assert_eq!(first["views_left"], 2);

    // Both folders are lost.
    stop(&mut alice);
    stop(&mut bob);
    std::fs::remove_dir_all(&alice.proc.dir).unwrap();
    std::fs::remove_dir_all(&bob.proc.dir).unwrap();

    // bob rebuilds with no peer running: his copy, with the views the ledger has left.
    let rebuilt = bob.ok(&["rebuild"]);
    assert_eq!(
        (rebuilt["own"].as_u64(), rebuilt["copies"].as_u64()),
        (Some(0), Some(1))
    );
    let bob = User::start(&cluster, "bob", &[]);
    assert_eq!(copy_of(&bob, &cat)["views_left"], 2);
    let (again, bytes) = view(&cluster, &bob, &cat, "after");
    assert_eq!(
        (again["shown"].as_str(), again["views_left"].as_u64()),
        (Some("image"), Some(1))
    );
    assert_eq!(bytes, cat_bytes);

    // alice's peer, started on an empty folder, rebuilds it by itself: her image, its
    // original, and its preview for others.
    let alice = User::start(&cluster, "alice", &[]);
    let own = image_entry(&alice, &cat, |e| e["owner"] == "alice");
    assert!(own["path"]
        .as_str()
        .is_some_and(|p| std::path::Path::new(p).is_file()));
    let (mine, bytes) = view(&cluster, &alice, &cat, "own");
    assert_eq!(mine["shown"], "image");
    assert_eq!(bytes, cat_bytes, "the rebuilt image is the original");
    let out = cluster.dir.path().join("bob-previews");
    let previews = bob.ok(&["previews", "alice", "-o", out.to_str().unwrap()]);
    assert_eq!(previews[0]["id"], cat.as_str());
    // Her receipts came back with the ledger: bob used 2 of 3.
    assert_eq!(receipt(&alice, &cat, "bob"), (2, 1));
    // Queries about someone else's records, from the wrong key, or not queries at all,
    // get a clear refusal.
    let node = format!("http://{}/query", cluster.config.nodes[0].http);
    let ask = |who: &Credential, ask| postcard::to_stdvec(&who.query(ask)).unwrap();
    let bob_key = Credential::derive("bob", &bob.password).unwrap();
    let image: ImageId = cat.parse().unwrap();
    let (status, body) = post(&node, ask(&bob_key, Ask::Own { image }));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not own"), "{body}");
    let impostor = Credential::derive("alice", "a guess").unwrap();
    let (status, body) = post(&node, ask(&impostor, Ask::Mail));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("wrong password"), "{body}");
    let (status, body) = post(&node, b"not a query".to_vec());
    assert_eq!(
        (status, body.contains("not a query")),
        (400, true),
        "{body}"
    );
    // Rebuilding a whole folder again brings nothing twice.
    let twice = alice.ok(&["rebuild"]);
    assert_eq!(
        (twice["own"].as_u64(), twice["copies"].as_u64()),
        (Some(0), Some(0))
    );
    drop((alice, bob));
}
