//! Starting a cluster of real node processes on this machine (the demo, benchmarks, scripts).
//!
//! Each node is a child process running `PROGRAM ARGS... ID --config FILE --parent-watch`:
//! the program is this very binary (the demo runs itself as a node) or `cloud-node`. The
//! children's stdin is a pipe that nothing writes to; `--parent-watch` makes a node exit when
//! it closes, so a node never outlives its launcher, even one killed by SIGKILL. Their stdout
//! (election results, state changes: the lines an operator watches) is copied to the console
//! with a `[node N]` prefix where asked, and everything is kept in `node-N.log` in the run
//! folder.
//!
//! Implementation caveats: ports come from the caller (`--base-port`); a port already taken
//! makes that node exit with a clear error in its log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ClusterConfig, NodeId};
use crate::{Error, Result};

/// What to do with the lines a node prints on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Keep them in the log only.
    Quiet,
    /// Also print them on the console.
    Console,
}

/// A cluster of child node processes.
pub struct LocalCluster {
    /// The cluster's configuration (written to `cluster.toml` in the run folder).
    pub config: ClusterConfig,
    /// The run folder: config and logs.
    pub dir: PathBuf,
    program: PathBuf,
    prefix_args: Vec<String>,
    children: BTreeMap<NodeId, Child>,
    echo: Arc<Mutex<Echo>>,
}

impl LocalCluster {
    /// Writes the config into `dir` and starts every node with `program prefix_args...`.
    pub fn start(config: ClusterConfig, dir: &Path, program: &Path, prefix_args: &[&str], echo: Echo) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("cluster.toml"), config.to_toml())?;
        let mut cluster = LocalCluster {
            config,
            dir: dir.to_path_buf(),
            program: program.to_path_buf(),
            prefix_args: prefix_args.iter().map(|s| s.to_string()).collect(),
            children: BTreeMap::new(),
            echo: Arc::new(Mutex::new(echo)),
        };
        for id in cluster.config.ids() {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Changes whether node output is echoed to the console.
    pub fn set_echo(&self, echo: Echo) {
        if let Ok(mut e) = self.echo.lock() {
            *e = echo;
        }
    }

    /// Starts (or restarts) node `id`.
    pub fn spawn(&mut self, id: NodeId) -> Result<()> {
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut child = Command::new(&self.program)
            .args(&self.prefix_args)
            .arg(id.to_string())
            .arg("--config")
            .arg(self.dir.join("cluster.toml"))
            .arg("--parent-watch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()
            .map_err(|e| Error::Config(format!("cannot start node {id} ({}): {e}", self.program.display())))?;
        if let Some(stdout) = child.stdout.take() {
            let echo = Arc::clone(&self.echo);
            std::thread::spawn(move || copy_lines(id, stdout, log, &echo));
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
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, mut child) in std::mem::take(&mut self.children) {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn copy_lines(id: NodeId, stdout: impl std::io::Read, mut log: std::fs::File, echo: &Mutex<Echo>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        if echo.lock().is_ok_and(|e| *e == Echo::Console) {
            println!("  [node {id}] {line}");
        }
    }
}
