//! Cluster configuration: plain data with defaults, loaded once by a binary and passed by value.
//!
//! With no file at all the cluster is the default three nodes on loopback: node `i` listens for
//! members and clients on `127.0.0.1:800i` and serves HTTP on `127.0.0.1:900i`. A TOML file
//! (`--config cluster.toml`) names the nodes and may override the secret, the timing and the
//! failure simulation; flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::{Error, Result};

/// Nodes of the default loopback cluster (the `--nodes` flag's default).
pub const DEFAULT_NODES: u32 = 3;
/// Port of node 1's member and client listener in the default cluster; node `i` uses `BASE + i - 1`.
pub const DEFAULT_BASE_PORT: u16 = 8001;
/// Distance between a node's protocol port and its HTTP port in generated clusters.
pub const HTTP_PORT_OFFSET: u16 = 1000;

/// Where one node listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// The node's id.
    pub id: NodeId,
    /// Member and client listener (TCP, framed protocol).
    pub addr: SocketAddr,
    /// HTTP API listener.
    pub http: SocketAddr,
}

/// Protocol timing; every field in milliseconds in the TOML file.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// How often a node sends a heartbeat to each other member.
    pub heartbeat_ms: u64,
    /// A member silent this long is suspected (the adaptive detector may wait longer under load).
    pub suspect_ms: u64,
    /// The adaptive detector never waits longer than this.
    pub suspect_max_ms: u64,
    /// How long an election round waits for votes before it gives up.
    pub election_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_ms: 100,
            suspect_ms: 800,
            suspect_max_ms: 3000,
            election_timeout_ms: 500,
        }
    }
}

/// The elected-victim failure simulation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureSim {
    /// Whether the coordinator periodically elects a victim.
    pub enabled: bool,
    /// Seconds between two victim elections.
    pub period_s: f64,
    /// The longest a victim stays silent, in seconds.
    pub max_s: f64,
    /// Who the cluster's first victim is (later ones are drawn among every node).
    pub first: FirstVictim,
}

/// How the nodes decide which of them serves each client request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dispatch {
    /// The product: the elected coordinator assigns each request by load, the claim quorum
    /// lets one server reply, the request log records it; any node may fail.
    #[default]
    Elected,
    /// The yardstick simpler designs use: each request is served by the node its id hashes to
    /// (every node receives it, the others drop it); no assignment, claims or commits, and no
    /// fault tolerance (a silent node's requests go unanswered). The demo measures it first.
    StaticSplit,
}

/// Who the first elected victim is: the coordinator that elects it, a worker, or any node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FirstVictim {
    /// Any node, drawn at random (as every later victim).
    #[default]
    Any,
    /// The coordinator itself: every client request waits on a silent coordinator.
    Coordinator,
    /// A node that is not the coordinator.
    Worker,
}

impl Default for FailureSim {
    fn default() -> Self {
        FailureSim {
            enabled: true,
            period_s: 30.0,
            max_s: 20.0,
            first: FirstVictim::Any,
        }
    }
}

impl FailureSim {
    /// The period as a duration.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(self.period_s.max(0.1))
    }
    /// The maximum silence as a duration.
    pub fn max(&self) -> Duration {
        Duration::from_secs_f64(self.max_s.max(0.1))
    }
}

/// The whole cluster as every node and client sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// The shared secret: authenticates members and keys the image payloads.
    pub secret: String,
    /// Every node of the cluster.
    pub nodes: Vec<NodeAddr>,
    /// Protocol timing.
    pub timing: Timing,
    /// The failure simulation.
    pub failures: FailureSim,
    /// Simulated processing delay added to every encryption, in milliseconds.
    pub delay_ms: u64,
    /// Threads that encrypt images on each node (0: one per core).
    pub workers: usize,
    /// How the nodes pick each request's server (`elected`, the default, or the
    /// `static-split` baseline).
    pub dispatch: Dispatch,
    /// Megabytes of request payloads a node holds at once (uploads being read or waiting for
    /// their answer, copies forwarded by other nodes); beyond, it refuses at once (see
    /// `node::budget`; default [`DEFAULT_PAYLOAD_BUDGET_MB`]).
    pub payload_budget_mb: u64,
    /// Where the nodes keep their durable stores: node `i` in `DATA_DIR/node-i`
    /// (default `imgcloud-data/node-i` under the working directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The consensus store's tuning.
    pub store: StoreSettings,
    /// What the users' peers of one host take from their copy (`[peer]`; nodes ignore it).
    #[serde(skip_serializing_if = "PeerSettings::is_empty")]
    pub peer: PeerSettings,
}

/// What a user's peer takes from the users' config of its host (`[peer]` in the TOML file):
/// one copy per client host can name that host's address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerSettings {
    /// The address other peers reach this host's peers at, as `peer --advertise IP` (the flag
    /// wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<std::net::IpAddr>,
}

impl PeerSettings {
    fn is_empty(&self) -> bool {
        *self == PeerSettings::default()
    }
}

/// The consensus store's tuning (`[store]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreSettings {
    /// Log entries between two snapshots; the log before a snapshot is then purged, and a
    /// node that is further behind is sent the snapshot.
    pub snapshot_every: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            snapshot_every: 10_000,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            secret: String::new(),
            nodes: Self::local_nodes(3, DEFAULT_BASE_PORT),
            timing: Timing::default(),
            failures: FailureSim::default(),
            delay_ms: 0,
            workers: 0,
            dispatch: Dispatch::Elected,
            payload_budget_mb: DEFAULT_PAYLOAD_BUDGET_MB,
            data_dir: None,
            store: StoreSettings::default(),
            peer: PeerSettings::default(),
        }
    }
}

impl ClusterConfig {
    /// `count` nodes on loopback: node `i` on `base + i - 1`, HTTP `HTTP_PORT_OFFSET` above.
    pub fn local_nodes(count: u32, base_port: u16) -> Vec<NodeAddr> {
        (1..=count)
            .map(|id| {
                let port = base_port + id as u16 - 1;
                NodeAddr {
                    id,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    http: SocketAddr::from(([127, 0, 0, 1], port + HTTP_PORT_OFFSET)),
                }
            })
            .collect()
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: ClusterConfig =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the protocol relies on: unique ids, at least one node, sane timing.
    pub fn validate(&self) -> Result<()> {
        if self.payload_budget_mb == 0 {
            return Err(Error::Config(
                "payload_budget_mb must be at least 1 (megabyte)".into(),
            ));
        }
        if self.nodes.is_empty() {
            return Err(Error::Config(
                "the cluster needs at least one [[nodes]] entry".into(),
            ));
        }
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::Config("node ids must be unique".into()));
        }
        if ids[0] == 0 {
            return Err(Error::Config("node ids start at 1".into()));
        }
        if self.store.snapshot_every < 10 {
            return Err(Error::Config(format!(
                "store.snapshot_every must be at least 10 (it is {})",
                self.store.snapshot_every
            )));
        }
        let t = &self.timing;
        if t.heartbeat_ms == 0 || t.suspect_ms <= t.heartbeat_ms || t.suspect_max_ms < t.suspect_ms
        {
            return Err(Error::Config(format!(
                "timing must satisfy 0 < heartbeat_ms ({}) < suspect_ms ({}) <= suspect_max_ms ({})",
                t.heartbeat_ms, t.suspect_ms, t.suspect_max_ms
            )));
        }
        if self.dispatch == Dispatch::StaticSplit && self.failures.enabled {
            return Err(Error::Config(
                "the static split has no fault tolerance: run it with the failure simulation \
                 off (failures.enabled = false, or --failures off)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The entry of node `id`.
    pub fn node(&self, id: NodeId) -> Result<&NodeAddr> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let known: Vec<String> = self.nodes.iter().map(|n| n.id.to_string()).collect();
            Error::Config(format!(
                "node {id} is not in the cluster (known: {})",
                known.join(", ")
            ))
        })
    }

    /// Where node `id` keeps its durable store: `node-ID` under `data_dir`, else under
    /// [`default_data_dir`].
    pub fn node_data_dir(&self, id: NodeId) -> PathBuf {
        match &self.data_dir {
            Some(root) => root.join(format!("node-{id}")),
            None => default_data_dir(id),
        }
    }

    /// All node ids, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids
    }

    /// How many nodes make a majority.
    pub fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Writes the config as TOML text (for the demo's generated clusters).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a ClusterConfig always serializes")
    }

    /// The configuration to give users' peers: the nodes' addresses, and nothing a user must
    /// not hold (no secret, no data folder).
    pub fn for_users(&self) -> ClusterConfig {
        ClusterConfig {
            nodes: self.nodes.clone(),
            peer: self.peer,
            ..Default::default()
        }
    }
}

/// The default payload budget of a node, in MB (see `node::budget`). An upload costs far
/// more than its bytes while it is served: a 27 MB PNG of noise took ~350 MB to encrypt (its pixels, a cover four times its size, the
/// encrypted PNG), and the copies forwarded to the other nodes. Measured with
/// `scripts/flood.sh` (30 concurrent 27 MB uploads to one node): with 256 MB, nine were taken
/// at once, the nodes peaked at 1.2-1.4 GB and the cluster held elections with every node
/// alive; with 64 MB, two at a time, peaks of 554-695 MB and no election. Small images are
/// unaffected (the demo's 9 KB requests need a few MB in all).
pub const DEFAULT_PAYLOAD_BUDGET_MB: u64 = 64;

/// The default data dir of node `id`: `imgcloud-data/node-ID` under the working directory.
pub fn default_data_dir(id: NodeId) -> PathBuf {
    PathBuf::from("imgcloud-data").join(format!("node-{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cluster_is_three_loopback_nodes() {
        let c = ClusterConfig::default();
        assert_eq!(c.ids(), vec![1, 2, 3]);
        assert_eq!(c.node(2).unwrap().addr.to_string(), "127.0.0.1:8002");
        assert_eq!(c.node(3).unwrap().http.to_string(), "127.0.0.1:9003");
        assert_eq!(c.majority(), 2);
    }

    #[test]
    fn the_static_split_reads_from_toml_and_refuses_the_failure_simulation() {
        let mut c = ClusterConfig {
            dispatch: Dispatch::StaticSplit,
            ..Default::default()
        };
        assert!(
            c.to_toml().contains("dispatch = \"static-split\""),
            "{}",
            c.to_toml()
        );
        let refused = ClusterConfig::parse(&c.to_toml()).unwrap_err().to_string();
        assert!(refused.contains("no fault tolerance"), "{refused}");
        c.failures.enabled = false;
        let back = ClusterConfig::parse(&c.to_toml()).unwrap();
        assert_eq!(back.dispatch, Dispatch::StaticSplit);
    }

    #[test]
    fn toml_round_trip_and_overrides() {
        let text = r#"
            secret = "s3"
            [[nodes]]
            id = 7
            addr = "10.0.0.7:7000"
            http = "10.0.0.7:7100"
            [failures]
            enabled = false
        "#;
        let c = ClusterConfig::parse(text).unwrap();
        assert_eq!(c.secret, "s3");
        assert_eq!(c.ids(), vec![7]);
        assert!(!c.failures.enabled);
        assert_eq!(c.failures.max_s, 20.0);
        assert_eq!(ClusterConfig::parse(&c.to_toml()).unwrap(), c);
    }

    /// Issue 34: a client host's copy of the users' config names the address its peers
    /// advertise; the users' copy keeps it and never the secret; a bad address is refused.
    #[test]
    fn a_users_config_carries_its_hosts_advertised_address() {
        let text = r#"
            secret = "s3"
            [[nodes]]
            id = 1
            addr = "10.0.0.1:8001"
            http = "10.0.0.1:9001"
            [peer]
            advertise = "10.0.0.102"
        "#;
        let c = ClusterConfig::parse(text).unwrap();
        assert_eq!(c.peer.advertise, Some("10.0.0.102".parse().unwrap()));
        let users = ClusterConfig::parse(&c.for_users().to_toml()).unwrap();
        assert_eq!((users.peer, users.secret.as_str()), (c.peer, ""));
        assert!(!ClusterConfig::default().to_toml().contains("[peer]"));
        let bad = text.replace("10.0.0.102", "not-an-address");
        assert!(ClusterConfig::parse(&bad).is_err());
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let text = r#"
            [[nodes]]
            id = 1
            addr = "127.0.0.1:1"
            http = "127.0.0.1:2"
            [[nodes]]
            id = 1
            addr = "127.0.0.1:3"
            http = "127.0.0.1:4"
        "#;
        assert!(ClusterConfig::parse(text)
            .unwrap_err()
            .to_string()
            .contains("unique"));
    }
}
