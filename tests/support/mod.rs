//! Test support: a cluster of real `cloud-node` processes on free loopback ports, their
//! `/status` read through the library's watcher, a tiny HTTP/1.1 GET for other pages, and the bounded waits on what they report that the
//! end-to-end tests and `benches/failover.rs` share. Every process is killed when the cluster
//! drops; every wait has a deadline and polls every 20 ms.

#![allow(dead_code)]

pub mod users;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgcloud::bench::launcher::LocalCluster;
use imgcloud::config::{ClusterConfig, NodeAddr};
use imgcloud::ids::NodeId;
use serde_json::Value;

/// Free loopback addresses for the nodes of a test cluster.
///
/// Ports come from [`next_free_port`]: below the kernel's ephemeral range, so no outgoing
/// connection of a test running beside this one can take a port between the check and the
/// node's bind (ports found by binding port 0 are ephemeral ones, and were taken so).
pub fn free_addrs(count: usize) -> Vec<SocketAddr> {
    (0..count)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], next_free_port())))
        .collect()
}

/// Ports handed out by this test process, from a random start in `PORTS` (tests of one binary
/// run as threads of one process, so no two get the same port; processes running side by
/// side start apart).
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The ports tests take: under the ephemeral range (32768-60999 on Linux).
const PORTS: std::ops::Range<u32> = 20000..32000;

/// The next port of this process's sequence that nothing listens on now.
pub fn next_free_port() -> u16 {
    let span = PORTS.end - PORTS.start;
    let _ = NEXT_PORT.compare_exchange(
        0,
        1 + std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(rand_seed())
            % span,
        std::sync::atomic::Ordering::SeqCst,
        std::sync::atomic::Ordering::SeqCst,
    );
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let port = (PORTS.start + n % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

fn rand_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A cluster of real `cloud-node` processes, started by the library's launcher
/// ([`LocalCluster`], the one the demo and chaos use) in a temporary folder; `Cluster` derefs
/// to it (`config`, `kill`, `pid`, `running`, `config_path`, `write_config`).
pub struct Cluster {
    /// The nodes; dropped (killed) before the folder they write in.
    pub nodes: LocalCluster,
    /// The configuration users' peers get: the nodes' addresses without the secret.
    pub user_config_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.nodes
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.nodes
    }
}

impl Cluster {
    /// Writes a config for `n` nodes on free ports; starts nothing. `extra` are flags every
    /// node gets.
    pub fn new(n: u32, extra: &[&str]) -> Cluster {
        let addrs = free_addrs(2 * n as usize);
        let nodes = (0..n as usize)
            .map(|i| NodeAddr {
                id: i as u32 + 1,
                addr: addrs[2 * i],
                http: addrs[2 * i + 1],
            })
            .collect();
        let mut config = ClusterConfig {
            secret: "test-secret".into(),
            nodes,
            ..Default::default()
        };
        config.failures.enabled = false;
        let dir = tempfile::tempdir().unwrap();
        let user_config_path = dir.path().join("cloud.toml");
        std::fs::write(&user_config_path, config.for_users().to_toml()).unwrap();
        let program = Path::new(env!("CARGO_BIN_EXE_cloud-node"));
        let mut nodes = LocalCluster::new(config, dir.path(), program, extra, None).unwrap();
        let level = std::env::var("IMGCLOUD_TEST_LOG").unwrap_or_else(|_| "info".into());
        nodes.set_env("RUST_LOG", &level);
        Cluster {
            nodes,
            user_config_path,
            dir,
        }
    }

    /// Starts `n` nodes.
    pub fn start(n: u32, extra: &[&str]) -> Cluster {
        let mut c = Cluster::new(n, extra);
        for id in c.config.ids() {
            c.spawn(id);
        }
        c
    }

    /// Starts (or restarts) node `id`; its output goes to `node-ID.log` in the cluster's folder.
    /// The node watches its standard input (`--parent-watch`), a pipe the launcher holds: if
    /// the test binary dies, killed or aborted, its nodes exit with it.
    pub fn spawn(&mut self, id: NodeId) {
        self.nodes.spawn(id).expect("cloud-node starts");
    }

    /// Sends a signal (e.g. "STOP", "CONT") to node `id`.
    pub fn signal(&self, id: NodeId, signal: &str) {
        let pid = self.pid(id).expect("node runs").to_string();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Node `id`'s `/status`, or None if it does not answer within 500 ms: read by the
    /// library's watcher ([`imgcloud::watch::node_status`]), as raw JSON, so the tests check
    /// the fields the nodes publish.
    pub fn status(&self, id: NodeId) -> Option<Value> {
        let node = self.config.node(id).ok()?;
        let (runtime, http) = status_reader();
        let read = imgcloud::watch::node_status(http, node, Duration::from_millis(500));
        // On a thread of its own: some callers (the browser tests) run inside a runtime.
        std::thread::scope(|s| s.spawn(|| runtime.block_on(read)).join())
            .ok()?
            .ok()
    }

    /// Every running node's status (None where a node does not answer).
    pub fn statuses(&self) -> BTreeMap<NodeId, Option<Value>> {
        self.running().map(|id| (id, self.status(id))).collect()
    }

    /// The coordinator every running node names, if they all answer, are Active and agree.
    pub fn agreed(&self) -> Option<(u64, u64)> {
        let mut seen = None;
        for status in self.statuses().into_values() {
            let s = status?;
            if s["state"] != "Active" {
                return None;
            }
            let view = (s["coordinator"].as_u64()?, s["epoch"].as_u64()?);
            match seen {
                None => seen = Some(view),
                Some(v) if v == view => {}
                Some(_) => return None,
            }
        }
        seen
    }

    /// Whether every running node reports the same digest.
    pub fn converged(&self) -> bool {
        let digests: Vec<Option<Value>> = self
            .statuses()
            .into_values()
            .map(|s| s.map(|s| s["digest"].clone()))
            .collect();
        digests.iter().all(|d| d.is_some() && *d == digests[0])
    }

    /// The coordinator and epoch that every node but `old.0` names, if they all answer and agree
    /// on another coordinator in an epoch after `old.1` (their states are not checked).
    pub fn replaced(&self, old: (u64, u64)) -> Option<(u64, u64)> {
        let mut seen = None;
        for id in self.config.ids() {
            if u64::from(id) == old.0 {
                continue;
            }
            let s = self.status(id)?;
            let view = (s["coordinator"].as_u64()?, s["epoch"].as_u64()?);
            if view.0 == old.0 || view.1 <= old.1 || seen.is_some_and(|v| v != view) {
                return None;
            }
            seen = Some(view);
        }
        seen
    }

    /// Whether some running node that answers names another (coordinator, epoch) than `view`
    /// (a node that does not answer within its budget, on a busy machine, says nothing).
    pub fn left_view(&self, view: (u64, u64)) -> bool {
        self.statuses().values().flatten().any(|s| {
            (s["coordinator"].as_u64(), s["epoch"].as_u64()) != (Some(view.0), Some(view.1))
        })
    }

    /// Waits up to `limit` for a view that every node agrees on and that no node leaves for
    /// `quiet` (a late joiner's re-election comes 1 s after it is up); returns that view.
    pub fn wait_stable(&self, limit: Duration, quiet: Duration) -> Option<(u64, u64)> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let view = self.wait_agreed(limit.saturating_sub(start.elapsed()))?;
            if wait_for(quiet, || self.left_view(view)).is_none() {
                return Some(view);
            }
        }
        None
    }

    /// Waits up to `limit` for [`Cluster::agreed`]; returns the view it saw.
    pub fn wait_agreed(&self, limit: Duration) -> Option<(u64, u64)> {
        poll(limit, || self.agreed())
    }

    /// Waits up to `limit` for the survivors of coordinator `old.0` to agree on a new one
    /// ([`Cluster::replaced`]); returns the new view.
    pub fn wait_replaced(&self, old: (u64, u64), limit: Duration) -> Option<(u64, u64)> {
        poll(limit, || self.replaced(old))
    }

    /// Waits up to `limit` for the running nodes to agree and report the same digest.
    pub fn wait_settled(&self, limit: Duration) -> Option<(u64, u64)> {
        poll(limit, || self.agreed().filter(|_| self.converged()))
    }

    /// Waits up to `limit` for node `id`'s `/status` to satisfy `pred`; returns that status.
    pub fn wait_status(
        &self,
        id: NodeId,
        limit: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        poll(limit, || self.status(id).filter(|s| pred(s)))
    }

    /// Waits up to `limit` for some running node's `/status` to satisfy `pred`; returns its id.
    pub fn wait_any(
        &self,
        limit: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Option<NodeId> {
        poll(limit, || {
            self.statuses()
                .into_iter()
                .find_map(|(id, s)| s.filter(|s| pred(s)).map(|_| id))
        })
    }

    /// The node log of `id` (for failure messages).
    pub fn log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    /// Wakes stopped nodes and SIGKILLs every node (a test ends without a clean shutdown).
    fn drop(&mut self) {
        for id in self.running().collect::<Vec<_>>() {
            if let Some(pid) = self.pid(id) {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(pid.to_string())
                    .status();
            }
            self.kill(id);
        }
    }
}

/// Calls `probe` every 20 ms until it returns a value or `limit` passes (it is called at least
/// once); returns that value.
pub fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `pred` every 20 ms until it holds or `limit` passes; returns the time it took.
pub fn wait_for(limit: Duration, mut pred: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    poll(limit, || pred().then(|| start.elapsed()))
}

/// The runtime and HTTP client every test thread reads statuses with (made once).
fn status_reader() -> &'static (tokio::runtime::Runtime, reqwest::Client) {
    static READER: std::sync::OnceLock<(tokio::runtime::Runtime, reqwest::Client)> =
        std::sync::OnceLock::new();
    READER.get_or_init(|| (runtime(), imgcloud::watch::status_client()))
}

/// A minimal HTTP/1.1 GET returning the body of a 200 response.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_get_within(addr, path, Duration::from_millis(500))
}

/// The same with `budget` per step.
pub fn http_get_within(addr: SocketAddr, path: &str, budget: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, budget).ok()?;
    stream.set_read_timeout(Some(budget)).ok()?;
    stream.set_write_timeout(Some(budget)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A two-thread tokio runtime for tests that drive async clients from sync code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A user's peer process (`peer --user NAME`) on a test cluster, killed on drop; it watches
/// its standard input (`--parent-watch`), so it also ends with the test binary.
pub struct PeerProc {
    pub user: String,
    pub dir: PathBuf,
    pub child: Child,
    /// The address it printed when it came online.
    pub addr: Option<String>,
    /// Its standard error so far, read all along (a full pipe would block the peer).
    stderr: Drained,
    /// Its standard output so far, read the same way.
    stdout: Drained,
}

/// The text a child writes to one of its pipes, read by a thread until the pipe closes.
#[derive(Clone, Default)]
pub struct Drained(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Drained {
    /// Reads `pipe` on a thread until it closes; `line` sees each complete line.
    pub fn start(
        pipe: impl Read + Send + 'static,
        mut line: impl FnMut(&str) + Send + 'static,
    ) -> (Drained, std::thread::JoinHandle<()>) {
        let drained = Drained::default();
        let sink = drained.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut pipe = std::io::BufReader::new(pipe);
            let mut buf = Vec::new();
            while matches!(pipe.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                line(String::from_utf8_lossy(&buf).trim_end());
                sink.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&mut buf);
            }
        });
        (drained, reader)
    }

    /// What was read so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// A child process whose output is read all along (no full pipe can block it); killed on
/// drop if it is still running.
pub struct Running {
    child: Child,
    what: String,
    out: Drained,
    err: Drained,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `command` with its stdout and stderr captured; `what` names it in failures.
    pub fn start(command: &mut Command, what: &str) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let (out, out_reader) = Drained::start(child.stdout.take().unwrap(), |_| {});
        let (err, err_reader) = Drained::start(child.stderr.take().unwrap(), |_| {});
        Running {
            child,
            what: what.to_string(),
            out,
            err,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Whether it has ended.
    pub fn ended(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for its end, at most `limit` (then kills it and panics with what it printed).
    pub fn finish(mut self, limit: Duration) -> std::process::Output {
        let Some(status) = poll(limit, || self.child.try_wait().ok().flatten()) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "{} still running after {limit:?}; killed. Output:\n{}\n{}",
                self.what,
                self.out.text(),
                self.err.text()
            );
        };
        // The pipes close when the child ends (unless it left a process holding them).
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        std::process::Output {
            status,
            stdout: self.out.text().into_bytes(),
            stderr: self.err.text().into_bytes(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The longest a one-shot command of the project (a peer subcommand, a client call) may take
/// in a test: its own network waits are bounded well under this.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// Runs `command` to its end with its output captured, killing it if it has not ended within
/// `limit` (then it panics with what it printed so far, naming `what`).
pub fn output_within(command: &mut Command, limit: Duration, what: &str) -> std::process::Output {
    Running::start(command, what).finish(limit)
}

impl Cluster {
    /// Starts `user`'s peer with `password` and a folder inside the cluster's temp dir, and
    /// waits (at most 20 s) for its "online at" line; `addr` stays None if it never came online.
    pub fn peer(&self, user: &str, password: &str, extra: &[&str]) -> PeerProc {
        self.peer_at(user, password, user, extra)
    }

    /// The same with the folder `peers/FOLDER` (another machine's copy of the user).
    pub fn peer_at(&self, user: &str, password: &str, folder: &str, extra: &[&str]) -> PeerProc {
        self.peer_within(user, password, folder, extra, Duration::from_secs(20))
    }

    /// [`Cluster::peer_at`], waiting at most `limit` for the "online at" line.
    pub fn peer_within(
        &self,
        user: &str,
        password: &str,
        folder: &str,
        extra: &[&str],
        limit: Duration,
    ) -> PeerProc {
        let dir = self.dir.path().join("peers").join(folder);
        let mut child = self
            .peer_command(user, password, &dir, &["--parent-watch"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("peer starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stdout, _) = Drained::start(child.stdout.take().unwrap(), move |line| {
            if let Some(rest) = line.split(" online at ").nth(1) {
                let addr = rest.split(';').next().unwrap_or_default().to_string();
                let _ = tx.send(addr);
            }
        });
        let (stderr, _) = Drained::start(child.stderr.take().unwrap(), |_| {});
        let addr = rx.recv_timeout(limit).ok();
        PeerProc {
            user: user.to_string(),
            dir,
            child,
            addr,
            stderr,
            stdout,
        }
    }

    /// The gallery URL (with its login token) of `user`'s running `peer`, as
    /// `peer gallery --json` prints it.
    pub fn gallery_url(&self, peer: &PeerProc, password: &str) -> String {
        let out = output_within(
            &mut self.peer_command(&peer.user, password, &peer.dir, &["gallery", "--json"]),
            COMMAND_LIMIT,
            "peer gallery",
        );
        assert!(
            out.status.success(),
            "peer gallery failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("gallery JSON");
        answer["url"].as_str().expect("a url").to_string()
    }

    /// The `peer` command for `user` against this cluster, with `args` (a subcommand).
    pub fn peer_command(&self, user: &str, password: &str, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_peer"));
        command
            .arg("--user")
            .arg(user)
            .arg("--dir")
            .arg(dir)
            .arg("--config")
            .arg(&self.user_config_path)
            .args(args)
            .env("IMGCLOUD_PASSWORD", password)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    /// Node `id`'s `/directory`, or None if it does not answer 200 within 5 s (a node waits
    /// at most 3 s for its majority; parallel test clusters share two cores).
    pub fn directory(&self, id: NodeId) -> Option<Value> {
        let addr = self.config.node(id).ok()?.http;
        let body = http_get_within(addr, "/directory", Duration::from_secs(5))?;
        serde_json::from_str(&body).ok()
    }
}

impl PeerProc {
    /// SIGKILLs the peer (no clean unregister).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most `limit`) for the peer to exit; its exit code and standard error.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<(i32, String)> {
        let status = poll(limit, || self.child.try_wait().ok().flatten())?;
        // The reading thread may still hold the last lines: wait (bounded) for the pipe's end.
        let text = poll(Duration::from_secs(2), || {
            let t = self.stderr.text();
            (Arc::strong_count(&self.stderr.0) == 1).then_some(t)
        })
        .unwrap_or_else(|| self.stderr.text());
        Some((status.code().unwrap_or(-1), text))
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Its standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal (e.g. "TERM") to a child process.
pub fn signal_child(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A base port from which the six ports a 3-node demo needs (P..P+2 and P+1000..P+1002) are
/// free. Bases come from 10000-10999 (so P+1000 is in 11000-11999), apart from
/// [`next_free_port`]'s range, in the same per-process sequence.
pub fn free_base_port() -> u16 {
    for _ in 0..400 {
        let base = 10000 + (next_free_port() as u32 % 333) as u16 * 3;
        let ports = [
            base,
            base + 1,
            base + 2,
            base + 1000,
            base + 1001,
            base + 1002,
        ];
        if ports
            .iter()
            .all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free base port found");
}

/// The processes whose command line contains `pattern` (`pgrep -a -f`), one a line.
pub fn processes(pattern: &str) -> String {
    let out = output_within(
        Command::new("pgrep").arg("-a").arg("-f").arg(pattern),
        Duration::from_secs(10),
        "pgrep",
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits up to `limit` for no process to match `pattern`; what still matches then.
pub fn wait_gone(pattern: &str, limit: Duration) -> String {
    poll(limit, || processes(pattern).is_empty().then_some(()))
        .map_or_else(|| processes(pattern), |_| String::new())
}

/// CPU seconds (user + system) that process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

impl Cluster {
    /// CPU seconds its node processes have used.
    pub fn nodes_cpu(&self) -> f64 {
        self.running()
            .filter_map(|id| self.pid(id))
            .map(cpu_seconds)
            .sum()
    }
}
