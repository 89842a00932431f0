//! Users for the phase-2 end-to-end tests: a running `peer` process per user, driven by its
//! own subcommands with `--json` as a new user would, and the waits on what they report.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{Cluster, PeerProc};

/// A photo-like PNG (gradients and a pattern), `w` x `h`.
pub fn photo(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 3 + seed * 11) % 256;
        image::Rgb([v as u8, ((x ^ y) % 256) as u8, ((x * y + seed) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A user with a running peer.
pub struct User {
    pub config_path: PathBuf,
    /// Whether the peer runs with `--approve auto`.
    pub auto: bool,
    pub name: String,
    pub password: String,
    pub proc: PeerProc,
}

impl User {
    pub fn start(cluster: &Cluster, name: &str, extra: &[&str]) -> User {
        let password = format!("{name}'s password");
        let proc = cluster.peer(name, &password, extra);
        assert!(
            proc.addr.is_some(),
            "{name}'s peer did not come online; node 1 log:\n{}",
            cluster.log(1)
        );
        User {
            config_path: cluster.user_config_path.clone(),
            auto: extra.windows(2).any(|w| w == ["--approve", "auto"]),
            name: name.into(),
            password,
            proc,
        }
    }

    /// The `peer` command of this user with `args` and `--json`.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_peer"));
        command
            .args(["--user", &self.name, "--dir"])
            .arg(&self.proc.dir)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .arg("--json")
            .env("IMGCLOUD_PASSWORD", &self.password)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null());
        command
    }

    /// Runs `peer --user NAME ARGS --json`; Ok(JSON) on success, Err(stderr) on failure.
    pub fn run(&self, args: &[&str]) -> Result<Value, String> {
        let what = format!("{} {args:?}", self.name);
        parse(
            args,
            super::output_within(&mut self.command(args), super::COMMAND_LIMIT, &what),
        )
    }

    pub fn ok(&self, args: &[&str]) -> Value {
        self.run(args)
            .unwrap_or_else(|e| panic!("{} {args:?} failed: {e}", self.name))
    }

    pub fn err(&self, args: &[&str]) -> String {
        match self.run(args) {
            Ok(v) => panic!("{} {args:?} succeeded but must fail: {v}", self.name),
            Err(e) => e,
        }
    }
}

/// A subcommand's JSON on success, its standard error on failure (exit code 1).
pub fn parse(args: &[&str], output: std::process::Output) -> Result<Value, String> {
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
            "{args:?} must exit 1 on an error: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The file's path in a test's temp dir.
pub fn temp_file(cluster: &Cluster, name: &str, bytes: &[u8]) -> PathBuf {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Waits (at most 20 s) for `user`'s copy of `image` to arrive; its `images` entry.
pub fn copy_of(user: &User, image: &str) -> Value {
    let found = super::poll(Duration::from_secs(20), || {
        let images = user.ok(&["images"]);
        images
            .as_array()?
            .iter()
            .find(|i| i["id"] == image && i["owner"] != user.name.as_str())
            .cloned()
    });
    found.unwrap_or_else(|| panic!("{}'s copy of {image} never arrived", user.name))
}

/// Shares a photo as `owner`, has `viewer` ask for `views`, approves (unless the owner's
/// peer approves by itself); the image id, the original bytes and the viewer's copy entry.
pub fn shared_and_granted(
    cluster: &Cluster,
    owner: &User,
    viewer: &User,
    name: &str,
    views: u32,
) -> (String, Vec<u8>, Value) {
    let original = photo(96, 64, views);
    let path = temp_file(cluster, &format!("{name}.png"), &original);
    let shared = owner.ok(&["share", path.to_str().unwrap()]);
    let id = shared["id"].as_str().unwrap().to_string();
    let views = views.to_string();
    let request = viewer.ok(&["request", &owner.name, name, "--views", &views]);
    if !owner.auto {
        owner.ok(&["approve", request["id"].as_str().unwrap()]);
    }
    let copy = copy_of(viewer, &id);
    (id, original, copy)
}

/// Waits (at most 30 s) until every node names the same consensus leader, and it has
/// applied what it committed before (a restarted cloud takes writes again).
pub fn every_node_follows_one_leader(cluster: &Cluster) {
    let agreed = super::wait_for(Duration::from_secs(30), || {
        let stores: Vec<Value> = cluster
            .statuses()
            .values()
            .flatten()
            .map(|s| s["store"].clone())
            .collect();
        stores.len() == cluster.config.ids().len()
            && stores
                .iter()
                .all(|s| s["leader"].is_u64() && s["leader"] == stores[0]["leader"])
            && stores.iter().all(|s| s["applied"] == s["last_log"])
    });
    agreed.unwrap_or_else(|| {
        panic!(
            "no common leader after the restart: {:?}",
            cluster.statuses()
        )
    });
}

/// POSTs `body` as octets; the status and the body of the answer.
pub fn post(url: &str, body: Vec<u8>) -> (u16, String) {
    super::runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}
