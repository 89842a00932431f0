//! The `peer` binary's flags and subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::{Folder, OnlineEntry, PeerOptions};
use crate::config::{ClusterConfig, DEFAULT_BASE_PORT};
use crate::sharing::Credential;
use crate::{Error, Result};

/// A user's peer process: registers with the imgcloud cloud, keeps its lease, serves its HTTP
/// port (P2P API and gallery), and answers the user's subcommands.
///
/// With no subcommand, runs USER's peer until Ctrl-C. A subcommand talks to the running
/// peer of that user, found through --user and --dir. The password comes from
/// --password-file or IMGCLOUD_PASSWORD; the cloud never sees it.
#[derive(Parser, Debug)]
#[command(name = "peer", version, about, long_about = None)]
pub struct PeerArgs {
    /// The user (1 to 32 characters of a-z, 0-9, '-' and '_').
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The user's folder (default: imgcloud-peers/USER under the working directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// TOML cluster configuration (the nodes' addresses); the peer never needs the secret.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Size of the default loopback cluster (ignored with --config).
    #[arg(long, global = true, default_value_t = 3)]
    pub nodes: u32,
    /// Peer port of node 1 in the default cluster; node i serves HTTP on BASE+999+i.
    #[arg(long, global = true, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// A file whose first line is the password (else IMGCLOUD_PASSWORD).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Where the peer listens (default: a free port on 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// How the peer answers view requests: approve them all, or ask the user.
    #[arg(long, value_enum, default_value_t = Approve::Ask)]
    pub approve: Approve,
    /// Exit when standard input closes (set by launchers so no peer outlives them).
    #[arg(long, hide = true)]
    pub parent_watch: bool,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do (none: run the peer).
    #[command(subcommand)]
    pub command: Option<PeerCommand>,
}

/// The approval policy for incoming requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Approve {
    /// Approve every request as asked.
    Auto,
    /// Leave requests pending until `peer approve` or `peer deny`.
    Ask,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Who is registered with the cloud: online or not, where, what they share.
    Online,
}

impl PeerArgs {
    fn user(&self) -> Result<&str> {
        self.user
            .as_deref()
            .ok_or_else(|| Error::InvalidInput("say whose peer: --user NAME".into()))
    }

    fn cluster(&self) -> Result<ClusterConfig> {
        match &self.config {
            Some(path) => ClusterConfig::load(path),
            None => Ok(ClusterConfig {
                nodes: ClusterConfig::local_nodes(self.nodes, self.base_port),
                ..Default::default()
            }),
        }
    }

    fn folder(&self) -> Result<Folder> {
        Ok(Folder::new(self.user()?, self.dir.clone()))
    }

    fn credential(&self) -> Result<Credential> {
        let password = match &self.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => std::env::var("IMGCLOUD_PASSWORD").map_err(|_| {
                Error::InvalidInput(
                    "no password: give --password-file FILE or set IMGCLOUD_PASSWORD".into(),
                )
            })?,
        };
        Credential::derive(self.user()?, &password)
    }
}

/// Runs the binary as the flags say.
pub fn main(args: PeerArgs) -> Result<()> {
    let runtime = crate::cli::runtime()?;
    let result = runtime.block_on(async move {
        match &args.command {
            None => {
                let options = PeerOptions {
                    folder: args.folder()?,
                    cluster: args.cluster()?,
                    listen: args
                        .listen
                        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
                };
                let credential = args.credential()?;
                let watch = args.parent_watch;
                let shutdown = async move {
                    if watch {
                        tokio::select! {
                            _ = crate::cli::shutdown_signal() => {}
                            _ = crate::server::stdin_closed() => {}
                        }
                    } else {
                        crate::cli::shutdown_signal().await
                    }
                };
                super::run(options, credential, shutdown).await
            }
            Some(PeerCommand::Online) => {
                let running = args.folder()?.running()?;
                let entries: Vec<OnlineEntry> = super::local_get(&running, "/api/online").await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&entries).expect("JSON"));
                } else {
                    print_online(&entries);
                }
                Ok(())
            }
        }
    });
    // The blocking thread reading stdin for `--parent-watch` never returns by itself.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

fn print_online(entries: &[OnlineEntry]) {
    println!("{:<16} {:<8} {:<22} shared", "user", "online", "address");
    for e in entries {
        let shared: Vec<&str> = e.shared.iter().map(|s| s.name.as_str()).collect();
        println!(
            "{:<16} {:<8} {:<22} {}",
            e.user,
            if e.online { "yes" } else { "no" },
            e.addr.as_deref().unwrap_or("-"),
            shared.join(", ")
        );
    }
}
