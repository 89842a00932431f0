//! End-to-end tests of phase-2 sharing: three real node processes with their durable stores,
//! real peer processes, real TCP, real images. Each user runs the `peer` binary as a new user
//! would, and each check reads what the commands print (`--json`) and the files they write.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, PeerProc};

/// A photo-like PNG (gradients and a pattern), `w` x `h`.
fn photo(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 3 + seed * 11) % 256;
        image::Rgb([v as u8, ((x ^ y) % 256) as u8, ((x * y + seed) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A user with a running peer.
struct User<'a> {
    cluster: &'a Cluster,
    name: String,
    password: String,
    proc: PeerProc,
}

impl<'a> User<'a> {
    fn start(cluster: &'a Cluster, name: &str, extra: &[&str]) -> User<'a> {
        let password = format!("{name}'s password");
        let proc = cluster.peer(name, &password, extra);
        assert!(
            proc.addr.is_some(),
            "{name}'s peer did not come online; node 1 log:\n{}",
            cluster.log(1)
        );
        User {
            cluster,
            name: name.into(),
            password,
            proc,
        }
    }

    /// Runs `peer --user NAME ARGS --json`; Ok(JSON) on success, Err(stderr) on failure.
    fn run(&self, args: &[&str]) -> Result<Value, String> {
        let output = self
            .cluster
            .peer_command(&self.name, &self.password, &self.proc.dir, args)
            .arg("--json")
            .output()
            .unwrap();
        if output.status.success() {
            Ok(serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!(
                    "{args:?} printed no JSON ({e}): {:?}",
                    String::from_utf8_lossy(&output.stdout)
                )
            }))
        } else {
            assert_eq!(
                output.status.code(),
                Some(1),
                "{args:?} must exit 1 on an error"
            );
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    fn ok(&self, args: &[&str]) -> Value {
        self.run(args)
            .unwrap_or_else(|e| panic!("{} {args:?} failed: {e}", self.name))
    }

    fn err(&self, args: &[&str]) -> String {
        match self.run(args) {
            Ok(v) => panic!("{} {args:?} succeeded but must fail: {v}", self.name),
            Err(e) => e,
        }
    }

    fn dir(&self) -> &Path {
        &self.proc.dir
    }
}

/// The file's path in a test's temp dir.
fn temp_file(cluster: &Cluster, name: &str, bytes: &[u8]) -> PathBuf {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Waits (at most 20 s) for `user`'s copy of `image` to arrive; its `images` entry.
fn copy_of(user: &User, image: &str) -> Value {
    let found = support::poll(Duration::from_secs(20), || {
        let images = user.ok(&["images"]);
        images
            .as_array()?
            .iter()
            .find(|i| i["id"] == image && i["owner"] != user.name.as_str())
            .cloned()
    });
    found.unwrap_or_else(|| panic!("{}'s copy of {image} never arrived", user.name))
}

#[test]
fn alice_shares_bob_views_twice_then_sees_the_default_and_carol_never_sees_it() {
    let cluster = Cluster::start(3, &[]);
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
