//! End-to-end tests of phase-2 sharing: three real node processes with their durable stores,
//! real peer processes, real TCP, real images. Each user runs the `peer` binary as a new user
//! would, and each check reads what the commands print (`--json`) and the files they write.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::users::{
    copy_of, every_node_follows_one_leader, parse, photo, post, shared_and_granted, temp_file, User,
};
use support::Cluster;

#[test]
fn alice_shares_bob_views_twice_then_sees_the_default_and_carol_never_sees_it() {
    let mut cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &[]);
    let bob = User::start(&cluster, "bob", &[]);
    let carol = User::start(&cluster, "carol", &[]);
    let original = photo(320, 200, 1);
    let photo_path = temp_file(&cluster, "sunset.png", &original);

    // Share: encrypted through the cloud, listed in the directory.
    let shared = alice.ok(&["share", photo_path.to_str().unwrap()]);
    let id = shared["id"].as_str().unwrap().to_string();
    assert_eq!(shared["name"], "sunset");
    let online = bob.ok(&["online"]);
    let listed = online
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["user"] == "alice")
        .unwrap();
    assert_eq!(listed["shared"][0]["id"], id.as_str());

    // Previews come from alice's peer, at most 128 px on the longest side.
    let out = cluster.dir.path().join("bob-previews");
    let previews = bob.ok(&["previews", "alice", "-o", out.to_str().unwrap()]);
    let preview = &previews[0];
    assert_eq!(preview["id"], id.as_str());
    let (w, h) = (
        preview["width"].as_u64().unwrap(),
        preview["height"].as_u64().unwrap(),
    );
    assert_eq!(
        (w, h),
        (128, 80),
        "the preview keeps the aspect ratio at 128 px"
    );
    let file = image::open(preview["path"].as_str().unwrap()).unwrap();
    assert_eq!((file.width() as u64, file.height() as u64), (w, h));

    // Request, seen by both sides, approved by alice, delivered to bob.
    let request = bob.ok(&["request", "alice", "sunset", "--views", "2"]);
    let req = request["id"].as_str().unwrap().to_string();
    assert_eq!(request["state"], "pending");
    let incoming = alice.ok(&["requests"]);
    let mine = incoming
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == req.as_str())
        .unwrap();
    assert_eq!(
        (mine["from"].as_str(), mine["state"].as_str()),
        (Some("bob"), Some("pending"))
    );
    alice.ok(&["approve", &req]);
    let copy = copy_of(&bob, &id);
    assert_eq!(copy["views_left"], 2);
    let outgoing = bob.ok(&["requests"]);
    assert_eq!(outgoing[0]["state"], "delivered");
    let copy_path = PathBuf::from(copy["path"].as_str().unwrap());
    let old_copy = std::fs::read(&copy_path).unwrap();

    // Two views are the exact original; the third is the default image.
    for left in [1, 0] {
        let out = cluster.dir.path().join(format!("bob-view-{left}.png"));
        let view = bob.ok(&["view", &id, "-o", out.to_str().unwrap()]);
        assert_eq!(view["shown"], "image", "{view}");
        assert_eq!(view["views_left"], left);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            original,
            "a view is the exact original"
        );
        if left == 1 {
            // Every acknowledged write survives kill -9 of the whole cloud: the share, the
            // grant and the view just spent.
            for id in cluster.config.ids() {
                cluster.kill(id);
            }
            for id in cluster.config.ids() {
                cluster.spawn(id);
            }
            every_node_follows_one_leader(&cluster);
        }
    }
    assert_ne!(
        std::fs::read(&copy_path).unwrap(),
        old_copy,
        "the copy was rewritten"
    );
    let third = bob.ok(&["view", "sunset"]);
    assert_eq!(third["shown"], "default", "{third}");
    assert_ne!(
        std::fs::read(third["out"].as_str().unwrap()).unwrap(),
        original
    );

    // His restored old copy (2 views inside) gains nothing.
    let restored = temp_file(&cluster, "restored-copy.png", &old_copy);
    let again = bob.ok(&["view", restored.to_str().unwrap()]);
    assert_eq!(again["shown"], "default", "{again}");

    // Carol, not a viewer, gets the default image from bob's file.
    let theirs = carol.ok(&["view", copy_path.to_str().unwrap()]);
    assert_eq!(theirs["shown"], "default", "{theirs}");
    assert!(
        theirs["reason"].as_str().unwrap().contains("bob"),
        "{theirs}"
    );

    // The owner views her own image freely.
    for _ in 0..3 {
        let own = alice.ok(&["view", "sunset"]);
        assert_eq!(own["shown"], "image");
        assert_eq!(
            std::fs::read(own["out"].as_str().unwrap()).unwrap(),
            original
        );
    }
    drop((alice, bob, carol));
}

/// The node that is the consensus leader now, by node 1's (or any node's) status.
fn leader(cluster: &Cluster) -> u32 {
    support::poll(Duration::from_secs(10), || {
        cluster
            .statuses()
            .values()
            .flatten()
            .find_map(|s| s["store"]["leader"].as_u64())
    })
    .expect("no consensus leader within 10 s") as u32
}

#[test]
fn twenty_views_racing_over_five_while_the_leader_is_killed_show_exactly_five_images() {
    let mut cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &["--approve", "auto"]);
    let bob = User::start(&cluster, "bob", &[]);
    let (id, original, _) = shared_and_granted(&cluster, &alice, &bob, "race", 5);

    let outs: Vec<PathBuf> = (0..20)
        .map(|k| cluster.dir.path().join(format!("race-{k}.png")))
        .collect();
    let mut views: Vec<support::Running> = outs
        .iter()
        .map(|out| {
            support::Running::start(
                &mut bob.command(&["view", &id, "-o", out.to_str().unwrap()]),
                "bob's view",
            )
        })
        .collect();
    // Mid-way: once the first view has finished, the leader dies, with views still running.
    support::wait_for(Duration::from_secs(60), || {
        views.iter_mut().any(|v| v.ended())
    })
    .expect("no view finished within 60 s");
    let killed = leader(&cluster);
    cluster.kill(killed);
    let running = views
        .iter_mut()
        .filter_map(|v| (!v.ended()).then_some(()))
        .count();
    assert!(
        running > 0,
        "every view had ended when node {killed} was killed: nothing raced the failure"
    );

    let mut images = 0;
    for (view, out) in views.into_iter().zip(&outs) {
        let result = parse(&["view"], view.finish(support::COMMAND_LIMIT))
            .unwrap_or_else(|e| panic!("a view failed while node {killed} was down: {e}"));
        match result["shown"].as_str() {
            Some("image") => {
                images += 1;
                assert_eq!(std::fs::read(out).unwrap(), original);
            }
            Some("default") => {}
            other => panic!("a view showed {other:?}"),
        }
    }
    assert_eq!(
        images, 5,
        "5 views were granted; {images} images were shown"
    );
    let after = bob.ok(&["view", &id]);
    assert_eq!(after["shown"], "default");
    assert_eq!(copy_of(&bob, &id)["views_left"], 0);
}

/// The body of `POST /view`: a view of `file` (a copy) signed by `who`.
fn view_body(who: &imgcloud::sharing::Credential, file: &[u8]) -> Vec<u8> {
    use imgcloud::sharing::{bodies::WithFile, UserOp};
    let op = who.sign(UserOp::View {
        file: imgcloud::peer::actions::digest(file),
    });
    postcard::to_stdvec(&WithFile {
        op,
        file: file.to_vec(),
    })
    .unwrap()
}

/// POSTs a view `body` to `node`: its answer with the image opened by `who` (the cloud seals
/// it to the signer), or the status and error text (a status of 0: no answer at all, e.g. the
/// node died).
fn view_at(
    cluster: &Cluster,
    node: u32,
    body: Vec<u8>,
    who: &imgcloud::sharing::Credential,
) -> Result<imgcloud::sharing::bodies::ViewAnswer, (u16, String)> {
    let mut answer = view_to(cluster.config.node(node).unwrap().http, body)?;
    answer.image = who
        .open_sealed(&answer.image)
        .expect("a reply sealed to the viewer");
    Ok(answer)
}

/// The same to the node serving HTTP at `http`, the image left sealed.
fn view_to(
    http: std::net::SocketAddr,
    body: Vec<u8>,
) -> Result<imgcloud::sharing::bodies::ViewAnswer, (u16, String)> {
    let (status, bytes) = support::runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(format!("http://{http}/view"))
            .body(body)
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        match response {
            Ok(r) => (r.status().as_u16(), r.bytes().await.unwrap_or_default()),
            Err(e) => (0, e.to_string().into_bytes().into()),
        }
    });
    match status {
        200 => Ok(postcard::from_bytes(&bytes).expect("a view answer")),
        _ => Err((status, String::from_utf8_lossy(&bytes).into_owned())),
    }
}

/// Sends a view of `file` signed by `who` straight to node 1; the status and body.
fn view_at_node(
    cluster: &Cluster,
    who: &imgcloud::sharing::Credential,
    file: Vec<u8>,
) -> (u16, String) {
    let node = cluster.config.node(1).unwrap().http;
    post(&format!("http://{node}/view"), view_body(who, &file))
}

#[test]
fn bad_copies_requests_and_messages_get_clear_errors_and_change_nothing() {
    use imgcloud::codec::metadata::{ImageMeta, Viewer};
    use imgcloud::peer::p2p::{self, Msg};
    use imgcloud::sharing::Credential;

    let cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &[]);
    let bob = User::start(&cluster, "bob", &[]);
    let (id, original, copy) = shared_and_granted(&cluster, &alice, &bob, "guarded", 3);
    let copy_bytes = std::fs::read(copy["path"].as_str().unwrap()).unwrap();
    let bob_key = Credential::derive("bob", "bob's password").unwrap();

    // A copy from another cluster (sealed with another secret), naming bob as its viewer.
    let meta = ImageMeta::new(
        "alice",
        vec![Viewer {
            name: "bob".into(),
            quota: 9,
        }],
    )
    .unwrap();
    let covers = imgcloud::codec::cover::DefaultCovers::new();
    let foreign = imgcloud::codec::stego::encrypt_image(
        &original,
        imgcloud::codec::stego::Cover::Default(&covers),
        &meta,
        &imgcloud::codec::seal::SealKey::from_secret(b"another cluster"),
    )
    .unwrap();
    let foreign_path = temp_file(&cluster, "foreign.png", &foreign);
    let e = bob.err(&["view", foreign_path.to_str().unwrap()]);
    assert!(e.contains("another cloud"), "{e}");

    // A tampered copy: one low bit flipped inside the sealed payload.
    let mut pixels = image::load_from_memory(&copy_bytes).unwrap().to_rgb8();
    pixels.as_mut()[3000] ^= 1;
    let mut tampered = std::io::Cursor::new(Vec::new());
    pixels
        .write_to(&mut tampered, image::ImageFormat::Png)
        .unwrap();
    let tampered_path = temp_file(&cluster, "tampered.png", &tampered.into_inner());
    let e = bob.err(&["view", tampered_path.to_str().unwrap()]);
    assert!(e.contains("tampered"), "{e}");

    // A truncated copy, and a plain PNG with no payload.
    let truncated = temp_file(
        &cluster,
        "truncated.png",
        &copy_bytes[..copy_bytes.len() / 2],
    );
    let e = bob.err(&["view", truncated.to_str().unwrap()]);
    assert!(
        e.contains("cannot be opened") || e.contains("truncated"),
        "{e}"
    );
    let plain = temp_file(&cluster, "plain.png", &photo(64, 64, 9));
    let e = bob.err(&["view", plain.to_str().unwrap()]);
    assert!(e.contains("no imgcloud payload"), "{e}");

    // Garbage and a 1 GB body at the node; a view whose signed digest is not the file's.
    let node = cluster.config.node(1).unwrap().http;
    let (status, body) = post(&format!("http://{node}/view"), b"garbage".to_vec());
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        huge_post(node, "/view"),
        413,
        "a 1 GB body must be refused as too large"
    );
    let (status, body) = {
        use imgcloud::sharing::{bodies::WithFile, UserOp};
        let op = bob_key.sign(UserOp::View { file: [0; 32] });
        let body = postcard::to_stdvec(&WithFile {
            op,
            file: copy_bytes.clone(),
        })
        .unwrap();
        post(&format!("http://{node}/view"), body)
    };
    assert_eq!(status, 400);
    assert!(body.contains("SHA-256"), "{body}");
    // A view signed with the wrong password for bob.
    let impostor = Credential::derive("bob", "guess").unwrap();
    let (status, body) = view_at_node(&cluster, &impostor, copy_bytes.clone());
    assert_eq!(status, 403, "{body}");

    // Requests for images that do not exist, decisions on requests that are not there.
    let e = bob.err(&["request", "alice", "no-such-image", "--views", "1"]);
    assert!(e.contains("shares no image"), "{e}");
    let e = bob.err(&["request", "nobody", "guarded", "--views", "1"]);
    assert!(e.contains("unknown user"), "{e}");
    let e = alice.err(&["approve", "feedfacecafe"]);
    assert!(e.contains("no request"), "{e}");
    let request = bob.ok(&["request", "alice", "guarded", "--views", "1"]);
    let req = request["id"].as_str().unwrap();
    let e = bob.err(&["approve", req]);
    assert!(
        e.contains("no request"),
        "bob approved alice's request: {e}"
    );
    alice.ok(&["deny", req]);
    let e = alice.err(&["approve", req]);
    assert!(e.contains("already denied"), "{e}");
    support::wait_for(Duration::from_secs(10), || {
        bob.ok(&["requests"])
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["id"] == req && q["state"] == "denied")
    })
    .expect("bob never heard of the denial");

    // Two approvals of one request at once: one grants, the other is refused.
    let request = bob.ok(&["request", "alice", "guarded", "--views", "1"]);
    let req = request["id"].as_str().unwrap();
    let both: Vec<support::Running> = (0..2)
        .map(|_| support::Running::start(&mut alice.command(&["approve", req]), "alice's approve"))
        .collect();
    let results: Vec<Result<Value, String>> = both
        .into_iter()
        .map(|c| parse(&["approve"], c.finish(support::COMMAND_LIMIT)))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let refused = results.iter().find_map(|r| r.clone().err()).unwrap();
    assert!(
        refused.contains("being decided") || refused.contains("already"),
        "{refused}"
    );
    support::wait_for(Duration::from_secs(20), || {
        copy_of(&bob, &id)["views_left"] == 4
    })
    .expect("bob's copy never said 3 + 1 views");

    // Peer messages: garbage, a 1 GB body, an unknown sender, a forged one, a bogus image.
    let alice_addr = alice.proc.addr.clone().unwrap();
    let (status, body) = post(&format!("http://{alice_addr}/p2p"), vec![0xff; 100]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(huge_post(alice_addr.parse().unwrap(), "/p2p"), 413);
    let rt = support::runtime();
    let mallory = Credential::derive("mallory", "pw").unwrap();
    let e = rt
        .block_on(p2p::send::<Vec<p2p::Preview>>(
            &mallory,
            "alice",
            &alice_addr,
            Msg::Previews,
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not logged in"), "{e}");
    let e = rt
        .block_on(p2p::send::<Vec<p2p::Preview>>(
            &impostor,
            "alice",
            &alice_addr,
            Msg::Previews,
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not signed by bob"), "{e}");
    let bogus = Msg::Request {
        id: "r1".into(),
        image: "00".repeat(16),
        views: 1,
    };
    let e = rt
        .block_on(p2p::send::<p2p::RequestAnswer>(
            &bob_key,
            "alice",
            &alice_addr,
            bogus,
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no image"), "{e}");

    // A view retried (the same signed request, to another node) is counted once.
    {
        let current = std::fs::read(copy_of(&bob, &id)["path"].as_str().unwrap()).unwrap();
        let body = view_body(&bob_key, &current);
        let answers: Vec<_> = [1, 2]
            .iter()
            .map(|&n| view_at(&cluster, n, body.clone(), &bob_key).expect("a view answer"))
            .collect();
        assert_eq!(answers[0].views_left, Some(3), "4 views, one spent");
        assert_eq!(
            answers[1].views_left,
            Some(3),
            "the retry spent a second view"
        );
        assert_eq!(answers[1].image, original);
    }

    // Nothing crashed, nothing was spent: bob's next view is his second of four.
    for id in cluster.config.ids() {
        assert!(cluster.status(id).is_some(), "node {id} stopped answering");
    }
    let view = bob.ok(&["view", &id]);
    assert_eq!(view["shown"], "image");
    assert_eq!(view["views_left"], 2, "a bad input changed the ledger");
}

/// Announces a 1 GB body to `addr` and sends its first bytes; the status it gets back (0
/// if none within 10 s).
fn huge_post(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The first bytes of the body; the rest never comes (a refusal must not wait for it).
    stream.write_all(&[0u8; 4096]).unwrap();
    let mut answer = [0u8; 12];
    match stream.read_exact(&mut answer) {
        Ok(()) => String::from_utf8_lossy(&answer[9..12]).parse().unwrap_or(0),
        Err(_) => 0,
    }
}

#[test]
fn a_view_at_a_node_cut_off_from_the_majority_is_refused_and_shows_nothing() {
    use imgcloud::sharing::bodies::Shown;
    let cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &["--approve", "auto"]);
    let bob = User::start(&cluster, "bob", &[]);
    let (id, original, copy) = shared_and_granted(&cluster, &alice, &bob, "island", 2);
    let copy_bytes = std::fs::read(copy["path"].as_str().unwrap()).unwrap();
    let bob_key = imgcloud::sharing::Credential::derive("bob", "bob's password").unwrap();

    // The consensus leader alone: the other two are stopped while bob's view reaches it.
    let island = leader(&cluster);
    let others: Vec<u32> = cluster
        .config
        .ids()
        .into_iter()
        .filter(|&n| n != island)
        .collect();
    for &n in &others {
        cluster.signal(n, "STOP");
    }
    let body = view_body(&bob_key, &copy_bytes);
    let refused = view_at(&cluster, island, body.clone(), &bob_key);
    for &n in &others {
        cluster.signal(n, "CONT");
    }
    match refused {
        Err((503, why)) => assert!(why.contains("majority"), "{why}"),
        other => panic!("a view at an isolated node: {:?}", other.map(|a| a.shown)),
    }

    // Healed: the refused view showed nothing, and whatever became of it, bob is shown the
    // image no more than twice in all (the same signed view again, then his own views).
    every_node_follows_one_leader(&cluster);
    let mut shown = 0;
    if let Ok(answer) = view_at(&cluster, island, body, &bob_key) {
        if answer.shown == Shown::Image {
            assert_eq!(answer.image, original);
            shown += 1;
        }
    }
    for k in 0..3 {
        let out = cluster.dir.path().join(format!("island-{k}.png"));
        let view = bob.ok(&["view", &id, "-o", out.to_str().unwrap()]);
        if view["shown"] == "image" {
            assert_eq!(std::fs::read(&out).unwrap(), original);
            shown += 1;
        }
    }
    assert_eq!(
        shown, 2,
        "bob was shown the image {shown} times on a 2-view grant"
    );
}

#[test]
fn a_restored_old_copy_spends_what_the_ledger_says_while_views_remain_and_after_a_lower_quota() {
    let cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &["--approve", "auto"]);
    let bob = User::start(&cluster, "bob", &[]);
    let (id, original, copy) = shared_and_granted(&cluster, &alice, &bob, "kept", 4);
    // Bob keeps his copy as it came: it says 4 views.
    let old_copy = std::fs::read(copy["path"].as_str().unwrap()).unwrap();
    let restored = temp_file(&cluster, "kept-old.png", &old_copy);
    let view_old = |k: u32| {
        std::fs::write(&restored, &old_copy).unwrap();
        let out = cluster.dir.path().join(format!("kept-{k}.png"));
        let view = bob.ok(&[
            "view",
            restored.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        if view["shown"] == "image" {
            assert_eq!(std::fs::read(&out).unwrap(), original);
        }
        view
    };

    // One view spent through his current copy (3 left); the old copy, which says 4, shows the
    // image counted by the ledger: 2 left after it, not 3.
    let first = bob.ok(&["view", &id]);
    assert_eq!(first["shown"], "image", "{first}");
    assert_eq!(first["views_left"], 3);
    let old = view_old(1);
    assert_eq!(old["shown"], "image", "{old}");
    assert_eq!(
        old["views_left"], 2,
        "the old copy's own count was used: {old}"
    );

    // Alice lowers bob's quota to 1 left: the old copy (still saying 4) shows one image, then
    // the default image, and so does his current copy.
    let lowered = alice.ok(&["quota", "kept", "bob=1"]);
    assert_eq!(lowered["views_left"], 1, "{lowered}");
    let last = view_old(2);
    assert_eq!(last["shown"], "image", "{last}");
    assert_eq!(last["views_left"], 0, "{last}");
    let after = view_old(3);
    assert_eq!(
        after["shown"], "default",
        "after the lowered quota ran out: {after}"
    );
    let current = bob.ok(&["view", &id]);
    assert_eq!(current["shown"], "default", "{current}");
}

#[test]
fn a_third_user_cannot_forge_or_replay_copies_denials_or_requests() {
    use imgcloud::peer::p2p::{self, Msg, SignedMsg};
    use imgcloud::sharing::Credential;
    let cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &[]);
    let bob = User::start(&cluster, "bob", &[]);
    let _carol = User::start(&cluster, "carol", &[]);
    let (id, _, copy) = shared_and_granted(&cluster, &alice, &bob, "guarded", 2);
    let copy_path = PathBuf::from(copy["path"].as_str().unwrap());
    let bob_copy = std::fs::read(&copy_path).unwrap();
    let (alice_key, carol_key) = (
        Credential::derive("alice", "alice's password").unwrap(),
        Credential::derive("carol", "carol's password").unwrap(),
    );
    let (alice_addr, bob_addr) = (
        alice.proc.addr.clone().unwrap(),
        bob.proc.addr.clone().unwrap(),
    );
    let rt = support::runtime();
    let send = |from: &Credential, to: &str, addr: &str, msg: Msg| {
        rt.block_on(p2p::send::<()>(from, to, addr, msg))
            .map_err(|e| e.to_string())
    };
    let junk = photo(32, 32, 99);
    let forged_copy = |version| Msg::Copy {
        request: None,
        image: id.clone(),
        name: "guarded".into(),
        views_left: 99,
        version,
        copy: junk.clone(),
    };

    // Carol, logged in, sends bob a "copy" of alice's image: refused, bob's copy unchanged.
    let e = send(&carol_key, "bob", &bob_addr, forged_copy(1 << 40)).unwrap_err();
    assert!(e.contains("carol shares no image"), "{e}");
    assert_eq!(std::fs::read(&copy_path).unwrap(), bob_copy);
    let kept = copy_of(&bob, &id);
    assert_eq!(
        (kept["owner"].as_str(), kept["views_left"].as_u64()),
        (Some("alice"), Some(2))
    );

    // Alice's own older copy (version 0) does not replace bob's newer one.
    send(&alice_key, "bob", &bob_addr, forged_copy(0)).unwrap();
    assert_eq!(
        std::fs::read(&copy_path).unwrap(),
        bob_copy,
        "an older copy replaced a newer one"
    );

    // Carol denies bob's pending request to alice: nothing changes.
    let request = bob.ok(&["request", "alice", "guarded", "--views", "1"]);
    let req = request["id"].as_str().unwrap().to_string();
    send(
        &carol_key,
        "bob",
        &bob_addr,
        Msg::Denied {
            request: req.clone(),
        },
    )
    .unwrap();
    let state = |u: &User| {
        u.ok(&["requests"])
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["id"] == req.as_str())
            .map(|q| q["state"].clone())
    };
    assert_eq!(
        state(&bob),
        Some(Value::from("pending")),
        "carol denied bob's request to alice"
    );

    // A message sent twice (a replay) is refused the second time; one re-addressed is refused.
    let envelope = SignedMsg::seal(
        &carol_key,
        "alice",
        Msg::Request {
            id: "carol-1".into(),
            image: id.clone(),
            views: 1,
        },
    );
    let raw = |addr: &str, envelope: &SignedMsg| {
        post(
            &format!("http://{addr}/p2p"),
            postcard::to_stdvec(envelope).unwrap(),
        )
    };
    let (status, body) = raw(&alice_addr, &envelope);
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw(&alice_addr, &envelope);
    assert_eq!(status, 401, "a replayed request: {body}");
    assert!(body.contains("replayed"), "{body}");
    let (status, body) = raw(&bob_addr, &envelope);
    assert!(
        (400..500).contains(&status),
        "a message for alice taken by bob: {body}"
    );
    let pending = alice.ok(&["requests"]);
    let carols = pending
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["from"] == "carol")
        .count();
    assert_eq!(carols, 1, "the replay made a second request: {pending}");
}

#[test]
fn a_node_killed_between_the_commit_of_a_view_and_its_reply_counts_it_once_and_the_retry_gets_it() {
    use imgcloud::sharing::bodies::Shown;
    let mut cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &["--approve", "auto"]);
    let bob = User::start(&cluster, "bob", &[]);
    // A large photo: resealing bob's copy after the commit takes long enough to kill the node
    // in between.
    let original = photo(1600, 1200, 5);
    let path = temp_file(&cluster, "big.png", &original);
    let id = alice.ok(&["share", path.to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    bob.ok(&["request", "alice", "big", "--views", "3"]);
    let copy = std::fs::read(copy_of(&bob, &id)["path"].as_str().unwrap()).unwrap();
    // No peer writes from now on (lease renewals): the next applied entry is the view.
    drop((alice, bob));
    let bob_key = imgcloud::sharing::Credential::derive("bob", "bob's password").unwrap();
    let applied =
        |c: &Cluster, node: u32| c.status(node).and_then(|s| s["store"]["applied"].as_u64());
    // A quiet log (nothing applied for 1.5 s), so that the next entry node 1 applies is the
    // view's.
    let mut before = 0;
    support::wait_for(Duration::from_secs(30), || {
        let Some(now) = applied(&cluster, 1) else {
            return false;
        };
        before = now;
        support::wait_for(Duration::from_millis(1500), || {
            applied(&cluster, 1).is_some_and(|a| a != now)
        })
        .is_none()
    })
    .expect("the log never went quiet");

    let view = view_body(&bob_key, &copy);
    let started = std::time::Instant::now();
    let first = std::thread::spawn({
        let (http, view) = (cluster.config.node(1).unwrap().http, view.clone());
        move || view_to(http, view)
    });
    let committed = support::wait_for(Duration::from_secs(30), || {
        applied(&cluster, 1).is_some_and(|a| a > before)
    });
    let at = started.elapsed();
    cluster.kill(1);
    committed.expect("the view was never applied at node 1");
    let first = first.join().unwrap();
    assert!(
        matches!(first, Err((0, _))),
        "the reply came before the kill ({at:?} after the request): {:?}",
        first.map(|a| a.views_left)
    );

    // The same signed view, retried at another node: the image, with the count of one view.
    let again = view_at(&cluster, 2, view, &bob_key).expect("the retry is answered");
    assert_eq!(again.shown, Shown::Image);
    assert_eq!(
        again.views_left,
        Some(2),
        "the view was counted twice or not at all"
    );
    assert_eq!(again.image, original);
    // A new view: the second of three.
    let next = view_at(&cluster, 3, view_body(&bob_key, &copy), &bob_key).expect("a new view");
    assert_eq!(next.views_left, Some(1));
}

#[test]
fn a_captured_view_request_replayed_after_a_revoke_shows_nothing_even_after_kill_9() {
    use imgcloud::sharing::bodies::Shown;
    let mut cluster = Cluster::start(3, &[]);
    let alice = User::start(&cluster, "alice", &["--approve", "auto"]);
    let bob = User::start(&cluster, "bob", &[]);
    let (_, original, copy) = shared_and_granted(&cluster, &alice, &bob, "coffee", 1);
    let copy = std::fs::read(copy["path"].as_str().unwrap()).unwrap();
    let bob_key = imgcloud::sharing::Credential::derive("bob", "bob's password").unwrap();

    // bob's view, as a recording proxy would capture it on its way to node 1.
    let captured = view_body(&bob_key, &copy);
    let raw = view_to(cluster.config.node(1).unwrap().http, captured.clone()).expect("bob's view");
    // Captured off the wire, the reply opens for bob's password only.
    let carol_key = imgcloud::sharing::Credential::derive("carol", "carol's password").unwrap();
    let e = carol_key.open_sealed(&raw.image).unwrap_err().to_string();
    assert!(e.contains("not sealed to carol"), "{e}");
    let seen = imgcloud::sharing::bodies::ViewAnswer {
        image: bob_key
            .open_sealed(&raw.image)
            .expect("bob opens his reply"),
        ..raw
    };
    assert_eq!((seen.shown, seen.views_left), (Shown::Image, Some(0)));
    assert_eq!(seen.image, original);

    // alice revokes; the captured request, presented again to any node, shows nothing.
    alice.ok(&["revoke", "coffee", "bob"]);
    let refused = |cluster: &Cluster, when: &str| {
        for node in cluster.config.ids() {
            match view_at(cluster, node, captured.clone(), &bob_key) {
                Err((403, why)) => assert!(why.contains("revoked"), "{when}, node {node}: {why}"),
                Err(other) => panic!("{when}, node {node}: {other:?}"),
                Ok(answer) => panic!(
                    "{when}, node {node}: answered {:?} (the original image again: {})",
                    answer.shown,
                    answer.image == original
                ),
            }
        }
    };
    refused(&cluster, "after the revoke");
    // And after kill -9 of every node: the facts live in the ledger's store.
    drop((alice, bob));
    for id in cluster.config.ids() {
        cluster.kill(id);
    }
    for id in cluster.config.ids() {
        cluster.spawn(id);
    }
    every_node_follows_one_leader(&cluster);
    refused(&cluster, "after kill -9 of every node");
}
