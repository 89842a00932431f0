//! Starting a cluster of real node processes on this machine (the demo, benchmarks, scripts).
//!
//! Each node is a child process running `PROGRAM ARGS... ID --config FILE --parent-watch`:
//! the program is this very binary (the demo runs itself as a node) or `cloud-node`. The
//! children's stdin is a pipe that nothing writes to; `--parent-watch` makes a node exit when
//! it closes, so a node never outlives its launcher, even one killed by SIGKILL. Their stdout
//! (election results, state changes: the lines an operator watches) goes to a [`LineSink`]
//! (every node prints each election result; only the winner's copy is passed on), and
//! everything is kept in `node-N.log` in the run folder.
//!
//! A user's peer is started the same way ([`LocalPeer`]): `PROGRAM ARGS... --user NAME --dir
//! DIR --config FILE --parent-watch`, its password in `IMGCLOUD_PASSWORD`, its output in
//! `peer-NAME.log`.
//!
//! Implementation caveats: ports come from the caller (`--base-port`); a port already taken
//! makes that node exit with a clear error in its log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ClusterConfig;
use crate::ids::NodeId;
use crate::{Error, Result};

/// Where the lines that nodes print on stdout go (besides their logs).
pub type LineSink = Arc<dyn Fn(NodeId, &str) + Send + Sync>;

/// A cluster of child node processes.
pub struct LocalCluster {
    /// The cluster's configuration (written to `cluster.toml` in the run folder).
    pub config: ClusterConfig,
    /// The run folder: config and logs.
    pub dir: PathBuf,
    program: PathBuf,
    prefix_args: Vec<String>,
    env: Vec<(String, String)>,
    children: BTreeMap<NodeId, Child>,
    sink: Arc<Mutex<Option<LineSink>>>,
}

impl LocalCluster {
    /// Writes the config into `dir` and starts no node yet: [`LocalCluster::started`] starts
    /// them all, [`LocalCluster::spawn`] one (in any order).
    pub fn new(
        config: ClusterConfig,
        dir: &Path,
        program: &Path,
        prefix_args: &[&str],
        sink: Option<LineSink>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut config = config;
        config.data_dir.get_or_insert_with(|| dir.join("data"));
        let cluster = LocalCluster {
            config,
            dir: dir.to_path_buf(),
            program: program.to_path_buf(),
            prefix_args: prefix_args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            children: BTreeMap::new(),
            sink: Arc::new(Mutex::new(sink)),
        };
        cluster.write_config()?;
        Ok(cluster)
    }

    /// Starts every node.
    pub fn started(mut self) -> Result<Self> {
        for id in self.config.ids() {
            self.spawn(id)?;
        }
        Ok(self)
    }

    /// Writes [`LocalCluster::config`] to the run folder again (after a change; nodes started
    /// from then on read it).
    pub fn write_config(&self) -> Result<()> {
        std::fs::write(self.config_path(), self.config.to_toml())?;
        Ok(())
    }

    /// The config file the nodes read.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }

    /// Sets an environment variable for the nodes started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The nodes started and not killed, in id order.
    pub fn running(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.children.keys().copied()
    }

    /// Changes where node output goes (None: logs only).
    pub fn set_sink(&self, sink: Option<LineSink>) {
        if let Ok(mut s) = self.sink.lock() {
            *s = sink;
        }
    }

    /// Starts (or restarts) node `id`.
    pub fn spawn(&mut self, id: NodeId) -> Result<()> {
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut child = Command::new(&self.program)
            .args(&self.prefix_args)
            .arg(id.to_string())
            .arg("--config")
            .arg(self.config_path())
            .arg("--parent-watch")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()
            .map_err(|e| {
                Error::Config(format!(
                    "cannot start node {id} ({}): {e}",
                    self.program.display()
                ))
            })?;
        if let Some(stdout) = child.stdout.take() {
            let sink = Arc::clone(&self.sink);
            std::thread::spawn(move || copy_lines(id, stdout, log, &sink));
        }
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILLs node `id` (a real crash).
    pub fn kill(&mut self, id: NodeId) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of node `id`.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    /// Stops every node: closes their stdin (they shut down cleanly), then kills stragglers.
    pub fn stop(&mut self) {
        for child in self.children.values_mut() {
            drop(child.stdin.take());
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (_, mut child) in std::mem::take(&mut self.children) {
            end_by(&mut child, deadline);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A user's peer as a child process.
pub struct LocalPeer {
    /// The user.
    pub user: String,
    /// The user's folder.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl LocalPeer {
    /// Starts `program prefix_args... --user USER --dir DIR --config CONFIG --parent-watch`
    /// with `password`, its output appended to `log`.
    pub fn start(
        program: &Path,
        prefix_args: &[&str],
        user: &str,
        dir: &Path,
        config: &Path,
        password: &str,
        log: &Path,
    ) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(program)
            .args(prefix_args)
            .args(["--user", user, "--dir"])
            .arg(dir)
            .arg("--config")
            .arg(config)
            .arg("--parent-watch")
            .env("IMGCLOUD_PASSWORD", password)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                Error::Config(format!(
                    "cannot start {user}'s peer ({}): {e}",
                    program.display()
                ))
            })?;
        Ok(LocalPeer {
            user: user.to_string(),
            dir: dir.to_path_buf(),
            child: Some(child),
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs the peer (it leaves its lease to run out and its record in the folder).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the peer cleanly (closes its stdin: it unregisters and exits), killing it if it
    /// has not gone within 3 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            end_by(&mut child, Instant::now() + STOP_GRACE);
        }
    }
}

impl Drop for LocalPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a child whose stdin closed may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Waits until `deadline` for `child` to exit, then kills it; reaps it either way.
fn end_by(child: &mut Child, deadline: Instant) {
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn copy_lines(
    id: NodeId,
    stdout: impl std::io::Read,
    mut log: std::fs::File,
    sink: &Mutex<Option<LineSink>>,
) {
    // Within an election block: None before its Coordinator line, then whether to pass it on.
    let (mut header, mut keep): (Option<String>, Option<bool>) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        let Some(sink) = sink.lock().ok().and_then(|s| s.clone()) else {
            continue;
        };
        if line.starts_with("=== ELECTION RESULT") {
            (header, keep) = (Some(line), None);
            continue;
        }
        if let (Some(head), Some(rest)) = (header.take(), line.strip_prefix("Coordinator: Node ")) {
            let winner: Option<NodeId> =
                rest.split_whitespace().next().and_then(|w| w.parse().ok());
            let mine = winner == Some(id);
            if mine {
                sink(id, &head);
                sink(id, &line);
            }
            keep = Some(mine);
            continue;
        }
        if line.starts_with("  Node ") && keep.is_some() {
            if keep == Some(true) {
                sink(id, &line);
            }
            continue;
        }
        keep = None;
        sink(id, &line);
    }
}
