//! A user's peer process (phase 2): one long-running process per user that registers with
//! the cloud, keeps its lease, serves its HTTP port, and answers that user's `peer`
//! subcommands.
//!
//! ```text
//! peer --user alice ──> derive key (Argon2id) ──> bind port ──> Register (signed) ──> cloud
//!        │                                                       every RENEW: Register again
//!        └─ writes DIR/peer.json (addr, token) <── `peer --user alice online` reads it and
//!                                                   calls GET /api/online with the token
//! ```
//!
//! - [`actions`]: the peer itself, sharing its own images and their previews; [`requests`]
//!   asking for views and deciding requests; [`copies`] a copy's way from grant to viewer;
//!   [`view`] a view spent through the cloud.
//! - [`mail`]: the user's mailbox in the cloud: letters applied once, then acknowledged.
//! - [`owner`]: an owner's controls (allow, quota, revoke), receipts, and `rebuild`.
//! - [`cloud`]: signed operations and directory reads against any node.
//! - [`p2p`]: signed messages between peers.
//! - [`folder`]: the user's folder and the record of the running peer.
//! - [`library`]: own images, received copies and requests, kept in the folder.
//! - [`api`]: the peer's HTTP port: the token-protected local API, `POST /p2p` and the
//!   page at `/`.
//! - [`cli`]: the `peer` binary's flags and subcommands.
//!
//! A peer outlives the cloud's outages: started while the cloud (or a majority of it) does
//! not answer, or losing it later, it serves its gallery and API anyway, says once that it is
//! waiting for the cloud, and registers again with back-off (from [`RENEW`] to
//! [`MAX_RETRY`]); only a refused password ends it.
//!
//! Implementation caveats: the lease is renewed every [`RENEW`]; a peer whose renewals fail
//! shows offline in the directory once its lease ends, until a registration goes through.

pub mod actions;
mod api;
pub mod cli;
pub mod cloud;
mod copies;
pub mod folder;
pub mod library;
mod mail;
pub mod owner;
pub mod p2p;
mod requests;
mod view;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use api::OnlineEntry;
pub use cloud::Cloud;
pub use folder::{Folder, Running};

use crate::config::ClusterConfig;
use crate::sharing::{Credential, UserOp};
use crate::{Error, Result};

/// How long a registration holds without renewal.
pub const LEASE: Duration = Duration::from_millis(3000);
/// How often the peer renews its registration.
pub const RENEW: Duration = Duration::from_millis(1000);
/// The longest pause between two registrations while the cloud does not answer.
pub const MAX_RETRY: Duration = Duration::from_secs(8);
/// How long a subcommand waits for the running peer (a share encrypts through the cloud).
const LOCAL_TIMEOUT: Duration = Duration::from_secs(120);

/// The approval policy for incoming requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Approve {
    /// Approve every request as asked.
    Auto,
    /// Leave requests pending until `peer approve` or `peer deny`.
    Ask,
}

/// Everything a peer process needs.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// The user's folder.
    pub folder: Folder,
    /// The cloud's nodes.
    pub cluster: ClusterConfig,
    /// Where to listen (port 0: any free port; None: see [`listen_addr`]).
    pub listen: Option<SocketAddr>,
    /// The address to register for other peers (None: see [`advertised`]).
    pub advertise: Option<IpAddr>,
    /// How incoming requests are decided.
    pub approve: Approve,
}

/// Runs the peer of `credential`'s user until `shutdown` completes; then unregisters.
pub async fn run(
    options: PeerOptions,
    credential: Credential,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let user = credential.user().to_string();
    options.folder.create()?;
    if let Ok(running) = options.folder.running() {
        if ask_whoami(&running).await.is_ok() {
            return Err(Error::Config(format!(
                "{user}'s peer is already running at {} (pid {})",
                running.addr, running.pid
            )));
        }
    }
    let cloud_addrs: Vec<SocketAddr> = options.cluster.nodes.iter().map(|n| n.http).collect();
    let listen = options.listen.unwrap_or_else(|| listen_addr(&cloud_addrs));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Config(format!("{user}'s peer cannot listen on {listen}: {e}")))?;
    let bound = listener.local_addr()?;
    let addr = advertised(bound, options.advertise, &cloud_addrs, route_to)
        .map_err(|why| Error::Config(format!("{user}'s peer listens on {bound} but {why}")))?;
    let cloud = Cloud::new(&options.cluster);
    let library = library::Library::open(options.folder.root())?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let peer = Arc::new(actions::Peer::new(
        credential,
        token.clone(),
        cloud.clone(),
        options.cluster.clone(),
        library,
        options.approve,
    ));
    let cloud = &cloud;
    let running = Running {
        user: user.clone(),
        addr,
        token,
        pid: std::process::id(),
    };
    options.folder.set_running(&running)?;
    let register = || UserOp::Register {
        addr: addr.to_string(),
        lease_ms: LEASE.as_millis() as u64,
    };
    // Registers, then renews every RENEW. While the cloud does not answer (down, or no
    // majority) the peer serves its gallery and API anyway and tries again, backing off to
    // MAX_RETRY; only a refusal of the password ends it.
    // The mailbox is read once the user is registered: before, the cloud knows no such user
    // (a new one), and every read would only warn so.
    let (first_registration, mut registered_once) = tokio::sync::watch::channel(false);
    let registrations = async {
        // Whether a registration ever went through, and whether the last one failed.
        let (mut registered, mut away) = (false, false);
        let mut pause = RENEW;
        loop {
            // The first registration, and the first after an outage, asks the cloud to try
            // the address: a peer others cannot reach should say so.
            let probe = !registered || away;
            let answer = peer
                .signed(
                    register(),
                    |op| async move { cloud.register(&op, probe).await },
                )
                .await;
            match answer {
                Ok(answer) => {
                    if let (Some(false), Some(node)) = (answer.reachable, answer.node) {
                        println!(
                            "[peer {user}] the cloud cannot reach this peer at {addr} (node {node} \
                             tried for {} s): other peers cannot fetch its previews or copies; \
                             advertise an address they reach with --advertise IP, or listen on \
                             one with --listen ADDR",
                            crate::sharing::directory::PROBE_WAIT.as_secs()
                        );
                        warn!(user = %user, %addr, node, "[peer {user}] unreachable from the cloud");
                    }
                    if !registered {
                        let gallery = running.gallery_url();
                        println!("[peer {user}] online at {addr}; gallery: {gallery}");
                        info!(user = %user, %addr, "[peer {user}] registered");
                    } else if away {
                        println!("[peer {user}] the cloud answers again: online at {addr}");
                    }
                    (registered, away, pause) = (true, false, RENEW);
                    first_registration.send_replace(true);
                }
                Err(e @ Error::Unauthorized(_)) => return Err(e),
                Err(e) => {
                    if !away {
                        let gallery = running.gallery_url();
                        println!(
                            "[peer {user}] waiting for the cloud ({e}); trying again with back-off, the gallery works meanwhile: {gallery}"
                        );
                    }
                    warn!(user = %user, "[peer {user}] could not register: {e}");
                    away = true;
                }
            }
            tokio::time::sleep(pause).await;
            if away {
                pause = (pause * 2).min(MAX_RETRY);
            }
        }
    };
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        r = api::serve(listener, peer.clone()) => r,
        r = registrations => r,
        () = async {
            let _ = registered_once.wait_for(|&yes| yes).await;
            peer.follow_mail().await
        } => Ok(()),
    };
    options.folder.clear_running();
    let bye = peer.signed(
        UserOp::Unregister,
        |op| async move { cloud.submit(&op).await },
    );
    match bye.await {
        Ok(()) => println!("[peer {user}] offline"),
        Err(e) => warn!(user = %user, "[peer {user}] could not unregister: {e}"),
    }
    result
}

/// Where a peer listens by default: a free port on 127.0.0.1 when the whole cloud is on this
/// host, else on every interface (other hosts' peers must reach it).
pub fn listen_addr(cloud: &[SocketAddr]) -> SocketAddr {
    if cloud.iter().all(|a| a.ip().is_loopback()) {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    }
}

/// The address a peer bound to `bound` registers: `flag` if given, else the bound address, or,
/// bound to every interface, the local address `route` finds towards the cloud. A reason
/// (ending the sentence "the peer listens on ... but") when that would be unspecified, or
/// loopback while the cloud is on another host.
pub fn advertised(
    bound: SocketAddr,
    flag: Option<IpAddr>,
    cloud: &[SocketAddr],
    route: impl Fn(SocketAddr) -> Option<IpAddr>,
) -> std::result::Result<SocketAddr, String> {
    let remote = cloud.iter().find(|a| !a.ip().is_loopback());
    let ip = match flag {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => {
            let towards = remote.or(cloud.first()).copied();
            towards.and_then(&route).ok_or_else(|| {
                "no route to the cloud shows this host's address; name it with --advertise IP"
                    .to_string()
            })?
        }
        None => bound.ip(),
    };
    if ip.is_unspecified() {
        return Err(format!(
            "{ip} is no address other peers can reach; name one with --advertise IP"
        ));
    }
    if let (true, Some(node)) = (ip.is_loopback(), remote) {
        return Err(format!(
            "would advertise {ip}, which peers on other hosts cannot reach (the cloud is at {node}); listen on this host's address (--listen IP:0 or 0.0.0.0:0) or name it with --advertise IP"
        ));
    }
    Ok(SocketAddr::new(ip, bound.port()))
}

/// This host's address on the route to `to` (a connected UDP socket: nothing is sent).
fn route_to(to: SocketAddr) -> Option<IpAddr> {
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(to).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// Asks the running peer who it is (a liveness check that also proves the token).
async fn ask_whoami(running: &Running) -> Result<String> {
    let value: serde_json::Value = local_get(running, "/api/whoami").await?;
    Ok(value["user"].as_str().unwrap_or_default().to_string())
}

/// GET a token-protected path of the running peer's local API.
pub async fn local_get<T: serde::de::DeserializeOwned>(running: &Running, path: &str) -> Result<T> {
    local_call(running, path, None).await
}

/// POSTs `body` to a token-protected path of the running peer's local API.
pub async fn local_post<T: serde::de::DeserializeOwned>(
    running: &Running,
    path: &str,
    body: serde_json::Value,
) -> Result<T> {
    local_call(running, path, Some(body)).await
}

async fn local_call<T: serde::de::DeserializeOwned>(
    running: &Running,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<T> {
    let client = reqwest::Client::builder()
        .timeout(LOCAL_TIMEOUT)
        .build()
        .expect("an HTTP client builds");
    let url = format!("http://{}{path}", running.addr);
    let request = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let response = request
        .bearer_auth(&running.token)
        .send()
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "{}'s peer at {} does not answer ({e}); is it running?",
                running.user, running.addr
            ))
        })?;
    let status = response.status();
    if !status.is_success() {
        let why = cloud::error_text(response).await;
        return Err(status_error(status.as_u16(), why));
    }
    response
        .json()
        .await
        .map_err(|e| Error::Protocol(format!("{}'s peer sent a bad answer: {e}", running.user)))
}

/// The library error an HTTP error status stands for.
pub(crate) fn status_error(status: u16, why: String) -> Error {
    let kind: fn(String) -> Error = match status {
        401 | 403 => Error::Unauthorized,
        400 | 404 | 413 => Error::InvalidInput,
        _ => Error::Unavailable,
    };
    Error::passed_on(kind, why)
}

#[cfg(test)]
mod advertise_tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A route that finds `ip` whatever the destination.
    fn via(ip: &str) -> impl Fn(SocketAddr) -> Option<IpAddr> {
        let ip: IpAddr = ip.parse().unwrap();
        move |_| Some(ip)
    }

    #[test]
    fn a_peer_on_every_interface_advertises_its_address_towards_the_cloud() {
        let cloud = [addr("10.0.0.1:9001"), addr("10.0.0.2:9002")];
        let got = advertised(addr("0.0.0.0:4567"), None, &cloud, via("10.0.0.7"));
        assert_eq!(got, Ok(addr("10.0.0.7:4567")));
        // Issue 34: it advertised 0.0.0.0:PORT, which no other peer can reach.
        let local = [addr("127.0.0.1:9001")];
        let got = advertised(addr("0.0.0.0:4567"), None, &local, via("127.0.0.1"));
        assert_eq!(got, Ok(addr("127.0.0.1:4567")));
    }

    #[test]
    fn a_loopback_address_is_never_advertised_to_a_cloud_on_another_host() {
        let cloud = [addr("10.0.0.1:9001")];
        let why = advertised(addr("127.0.0.1:4567"), None, &cloud, via("10.0.0.7")).unwrap_err();
        assert!(why.contains("other hosts cannot reach"), "{why}");
        let flagged = "127.0.0.1".parse().ok();
        assert!(advertised(addr("0.0.0.0:4567"), flagged, &cloud, via("10.0.0.7")).is_err());
        // The flag names the address on a multi-homed host.
        let flagged = "192.168.5.5".parse().ok();
        let got = advertised(addr("0.0.0.0:4567"), flagged, &cloud, via("10.0.0.7"));
        assert_eq!(got, Ok(addr("192.168.5.5:4567")));
        // Without a route there is nothing to advertise but the flag.
        let got = advertised(addr("0.0.0.0:4567"), None, &cloud, |_| None);
        assert!(got.unwrap_err().contains("--advertise"));
    }

    #[test]
    fn the_default_listening_address_follows_where_the_cloud_is() {
        assert!(listen_addr(&[addr("127.0.0.1:9001")]).ip().is_loopback());
        assert!(listen_addr(&[addr("10.0.0.1:9001")]).ip().is_unspecified());
    }
}
