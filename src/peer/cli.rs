//! The `peer` binary's flags and subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::actions::{ImageEntry, PreviewFile, ViewResult};
use super::library::RequestRecord;
use super::owner::{Changed, Rebuilt};
use super::p2p::RequestAnswer;
use super::{Approve, Folder, OnlineEntry, PeerOptions};
use crate::config::{ClusterConfig, DEFAULT_BASE_PORT, DEFAULT_NODES};
use crate::sharing::bodies::{OwnHolding, SharedAnswer, Shown};
use crate::sharing::Credential;
use crate::{Error, Result};

/// A user's peer process: registers with the imgcloud cloud, keeps its lease, serves its HTTP
/// port (P2P API and gallery), and answers the user's subcommands.
///
/// With no subcommand, runs USER's peer until Ctrl-C. A subcommand talks to the running
/// peer of that user, found through --user and --dir. The password comes from
/// --password-file or IMGCLOUD_PASSWORD; the cloud never sees it.
#[derive(Parser, Debug)]
#[command(name = "peer", version)]
pub struct PeerArgs {
    /// The user (1 to 32 characters of a-z, 0-9, '-' and '_').
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The user's folder (default: imgcloud-peers/USER under the working directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// TOML cluster configuration for users (`client user-config`: the nodes' addresses, no
    /// secret); a file that holds the cluster secret is refused.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Size of the default loopback cluster (ignored with --config).
    #[arg(long, global = true, default_value_t = DEFAULT_NODES)]
    pub nodes: u32,
    /// Peer port of node 1 in the default cluster; node i serves HTTP on BASE+999+i.
    #[arg(long, global = true, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// A file whose first line is the password (else IMGCLOUD_PASSWORD).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Where the peer listens (default: a free port on 127.0.0.1, or on every interface when
    /// the cloud is on another host).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The address other peers reach this one at, registered in the directory (default: the
    /// config's `[peer] advertise`, else the listening address; listening on every interface,
    /// this host's address on the route to the cloud). Never a loopback address when the cloud
    /// is on another host; the cloud tries it when the peer comes online, and the peer says if
    /// that failed.
    #[arg(long, value_name = "IP")]
    pub advertise: Option<std::net::IpAddr>,
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

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Who is registered with the cloud: online or not, where, what they share.
    Online,
    /// The running peer's gallery URL (with its login token), as the peer printed it.
    Gallery,
    /// Encrypt PHOTO through the cloud with you as owner and share it (a preview goes in the
    /// directory; the original and the encrypted image stay in your folder).
    Share {
        /// The photo (any image format the cloud reads).
        photo: PathBuf,
        /// Its name (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        /// A cover to hide it in (default: the cloud's landscape).
        #[arg(long, value_name = "COVER")]
        cover: Option<PathBuf>,
    },
    /// Fetch OWNER's previews from her peer directly.
    Previews {
        /// The owner.
        owner: String,
        /// Where to save them (default: DIR/previews/OWNER).
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Ask OWNER for views of her IMAGE (its id or name).
    Request {
        /// The owner.
        owner: String,
        /// The image: its id or its name.
        image: String,
        /// How many views.
        #[arg(long)]
        views: u32,
    },
    /// Requests to you and from you, with their states.
    Requests,
    /// Approve request REQ to you (with the views asked, or N).
    Approve {
        /// The request's id.
        req: String,
        /// Grant this many views instead.
        #[arg(long, value_name = "N")]
        views: Option<u32>,
    },
    /// Deny request REQ to you.
    Deny {
        /// The request's id.
        req: String,
    },
    /// Your own images and the copies you received, with views left.
    Images,
    /// View IMAGE (an id, a name, or a copy's path): spends one view through the cloud and
    /// writes the image, or the default image when no view is left.
    View {
        /// The image: an id, a name, or the path of a copy file.
        image: String,
        /// Where to write it (default: DIR/views/NAME.EXT).
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Give VIEWER N more views of your IMAGE (a new viewer starts with N): `allow cat carol=2`.
    Allow {
        /// Your image: its id or name.
        image: String,
        /// VIEWER=N.
        #[arg(value_name = "VIEWER=N", value_parser = viewer_views)]
        grant: (String, u32),
    },
    /// Set VIEWER's views left of your IMAGE to N: `quota cat bob=5`.
    Quota {
        /// Your image: its id or name.
        image: String,
        /// VIEWER=N.
        #[arg(value_name = "VIEWER=N", value_parser = viewer_views)]
        grant: (String, u32),
    },
    /// Take every view of your IMAGE from VIEWER and remove them as a viewer.
    Revoke {
        /// Your image: its id or name.
        image: String,
        /// The viewer.
        viewer: String,
    },
    /// Bring back from the cloud your own images and your copies (with the views left);
    /// works with the folder gone and no peer running (the password is enough).
    Rebuild,
}

/// Parses `VIEWER=N`.
fn viewer_views(text: &str) -> std::result::Result<(String, u32), String> {
    let (viewer, views) = text
        .split_once('=')
        .ok_or_else(|| format!("expected VIEWER=N, like carol=2 (got {text:?})"))?;
    let views = views
        .parse()
        .map_err(|_| format!("{views:?} is not a number of views"))?;
    Ok((viewer.to_string(), views))
}

impl PeerArgs {
    fn user(&self) -> Result<&str> {
        self.user
            .as_deref()
            .ok_or_else(|| Error::InvalidInput("say whose peer: --user NAME".into()))
    }

    fn cluster(&self) -> Result<ClusterConfig> {
        match &self.config {
            Some(path) => {
                let config = ClusterConfig::load(path)?;
                if !config.secret.is_empty() {
                    return Err(Error::Config(format!(
                        "{} holds the cluster secret, which a user's peer must never have (with \
                         it any copy opens without the cloud counting the view); give users a \
                         copy without it: client user-config --config {} > cloud.toml",
                        path.display(),
                        path.display()
                    )));
                }
                Ok(config)
            }
            None => Ok(ClusterConfig {
                nodes: ClusterConfig::local_nodes(self.nodes, self.base_port),
                ..Default::default()
            }),
        }
    }

    fn folder(&self) -> Result<Folder> {
        Ok(Folder::new(self.user()?, self.dir.clone()))
    }

    /// The command that starts this user's peer, with the folder and cluster flags given.
    fn start_command(&self) -> String {
        let mut command = format!("peer --user {}", self.user.as_deref().unwrap_or("NAME"));
        if let Some(dir) = &self.dir {
            command += &format!(" --dir {}", dir.display());
        }
        if let Some(config) = &self.config {
            command += &format!(" --config {}", config.display());
        } else {
            if self.nodes != DEFAULT_NODES {
                command += &format!(" --nodes {}", self.nodes);
            }
            if self.base_port != DEFAULT_BASE_PORT {
                command += &format!(" --base-port {}", self.base_port);
            }
        }
        if let Some(file) = &self.password_file {
            command += &format!(" --password-file {}", file.display());
        }
        command
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
    let runtime = crate::setup::runtime()?;
    let result = runtime.block_on(async move {
        match &args.command {
            None => {
                let cluster = args.cluster()?;
                let options = PeerOptions {
                    folder: args.folder()?,
                    advertise: args.advertise.or(cluster.peer.advertise),
                    cluster,
                    listen: args.listen,
                    approve: args.approve,
                };
                let credential = args.credential()?;
                let watch = args.parent_watch;
                let shutdown = async move {
                    if watch {
                        tokio::select! {
                            _ = crate::setup::shutdown_signal() => {}
                            _ = crate::node::stdin_closed() => {}
                        }
                    } else {
                        crate::setup::shutdown_signal().await
                    }
                };
                super::run(options, credential, shutdown).await
            }
            Some(command) => subcommand(&args, command).await,
        }
    });
    crate::setup::stop_runtime(runtime);
    result
}

/// Runs a subcommand against the user's running peer (`rebuild` also without one).
async fn subcommand(args: &PeerArgs, command: &PeerCommand) -> Result<()> {
    let running = match (command, args.folder()?.running()) {
        (_, Ok(running)) => running,
        (PeerCommand::Rebuild, Err(_)) => {
            let rebuilt = rebuild_here(args).await?;
            show(args.json, &rebuilt, || print_rebuilt(&rebuilt));
            return Ok(());
        }
        (_, Err(Error::Unavailable(why))) => {
            let start = args.start_command();
            return Err(Error::Unavailable(format!(
                "{why}; start it with `{start}`"
            )));
        }
        (_, Err(e)) => return Err(e),
    };
    let running = &running;
    let json = args.json;
    match command {
        PeerCommand::Gallery => {
            // Asking the peer proves that the URL in the folder is the running peer's.
            let _: serde_json::Value = super::local_get(running, "/api/whoami").await?;
            let url = running.gallery_url();
            show(json, &serde_json::json!({ "url": url }), || {
                println!("{url}")
            });
        }
        PeerCommand::Online => {
            let entries: Vec<OnlineEntry> = super::local_get(running, "/api/online").await?;
            show(json, &entries, || print_online(&entries));
        }
        PeerCommand::Share { photo, name, cover } => {
            let body = serde_json::json!({
                "path": absolute(photo)?,
                "name": name,
                "cover": cover.as_deref().map(absolute).transpose()?,
            });
            let shared: SharedAnswer = super::local_post(running, "/api/share", body).await?;
            show(json, &shared, || {
                println!("shared {:?} as image {}", shared.name, shared.id)
            });
        }
        PeerCommand::Previews { owner, out } => {
            let out = out.as_deref().map(absolute).transpose()?;
            let body = serde_json::json!({ "owner": owner, "out": out });
            let files: Vec<PreviewFile> = super::local_post(running, "/api/previews", body).await?;
            show(json, &files, || {
                println!("{} preview(s) from {owner}:", files.len());
                for f in &files {
                    println!(
                        "  {:<32} {}x{}  {}  {}",
                        f.name,
                        f.width,
                        f.height,
                        f.id,
                        f.path.display()
                    );
                }
            });
        }
        PeerCommand::Request {
            owner,
            image,
            views,
        } => {
            let body = serde_json::json!({ "owner": owner, "image": image, "views": views });
            let answer: RequestAnswer = super::local_post(running, "/api/request", body).await?;
            show(json, &answer, || {
                println!("request {} to {owner}: {}", answer.id, answer.state)
            });
        }
        PeerCommand::Requests => {
            let requests: Vec<RequestRecord> = super::local_get(running, "/api/requests").await?;
            let rows: Vec<serde_json::Value> = requests.iter().map(request_json).collect();
            show(json, &rows, || print_requests(&requests));
        }
        PeerCommand::Approve { req, views } => {
            let body = serde_json::json!({ "id": req, "views": views });
            let request: RequestRecord = super::local_post(running, "/api/approve", body).await?;
            show(json, &request_json(&request), || {
                println!(
                    "request {} from {}: {} ({} view(s) of {:?})",
                    request.id,
                    request.from,
                    request.state.word(),
                    request.views,
                    request.name
                )
            });
        }
        PeerCommand::Deny { req } => {
            let body = serde_json::json!({ "id": req });
            let request: RequestRecord = super::local_post(running, "/api/deny", body).await?;
            show(json, &request_json(&request), || {
                println!("request {} from {}: denied", request.id, request.from)
            });
        }
        PeerCommand::Images => {
            let mut images: Vec<ImageEntry> = super::local_get(running, "/api/images").await?;
            let receipts: crate::Result<Vec<OwnHolding>> =
                super::local_get(running, "/api/receipts").await;
            match receipts {
                Ok(receipts) => {
                    for image in &mut images {
                        let own = receipts.iter().find(|r| r.id == image.id);
                        image.viewers = own.map(|r| r.viewers.clone());
                    }
                }
                Err(e) => eprintln!("peer: no receipts now ({e})"),
            }
            show(json, &images, || print_images(&images));
        }
        PeerCommand::View { image, out } => {
            // A path is the user's, relative to where they are; an id or name is not a path.
            let image = match std::path::Path::new(image).is_file() {
                true => absolute(std::path::Path::new(image))?.display().to_string(),
                false => image.clone(),
            };
            let out = out.as_deref().map(absolute).transpose()?;
            let body = serde_json::json!({ "image": image, "out": out });
            let result: ViewResult = super::local_post(running, "/api/view", body).await?;
            show(json, &result, || match result.shown {
                Shown::Image => match result.views_left {
                    Some(left) => println!(
                        "wrote the image to {} ({left} view(s) left)",
                        result.out.display()
                    ),
                    None => println!("wrote your image to {}", result.out.display()),
                },
                Shown::Default => println!(
                    "no view: {}; wrote the default image to {}",
                    result
                        .reason
                        .as_deref()
                        .unwrap_or("the cloud gave the default image"),
                    result.out.display()
                ),
            });
        }
        PeerCommand::Allow { image, grant } | PeerCommand::Quota { image, grant } => {
            let path = match command {
                PeerCommand::Allow { .. } => "/api/allow",
                _ => "/api/quota",
            };
            let body = serde_json::json!({ "image": image, "viewer": grant.0, "views": grant.1 });
            let changed: Changed = super::local_post(running, path, body).await?;
            show(json, &changed, || print_changed(&changed));
        }
        PeerCommand::Revoke { image, viewer } => {
            let body = serde_json::json!({ "image": image, "viewer": viewer });
            let changed: Changed = super::local_post(running, "/api/revoke", body).await?;
            show(json, &changed, || print_changed(&changed));
        }
        PeerCommand::Rebuild => {
            let rebuilt: Rebuilt =
                super::local_post(running, "/api/rebuild", serde_json::json!({})).await?;
            show(json, &rebuilt, || print_rebuilt(&rebuilt));
        }
    }
    Ok(())
}

/// `rebuild` with no peer running: into the folder, from the password alone.
async fn rebuild_here(args: &PeerArgs) -> Result<Rebuilt> {
    let folder = args.folder()?;
    folder.create()?;
    let cluster = args.cluster()?;
    let cloud = super::cloud::Cloud::new(&cluster);
    let library = super::library::Library::open(folder.root())?;
    let token = String::new();
    let peer = super::actions::Peer::new(
        args.credential()?,
        token,
        cloud,
        cluster,
        library,
        Approve::Ask,
    );
    std::sync::Arc::new(peer.quiet()).rebuild().await
}

fn print_changed(changed: &Changed) {
    let reached = if changed.delivered {
        "their copy is updated"
    } else {
        "it waits in their mailbox"
    };
    println!(
        "{} has {} view(s) left of {}; {reached}",
        changed.viewer, changed.views_left, changed.image
    );
}

fn print_rebuilt(rebuilt: &Rebuilt) {
    println!(
        "rebuilt from the cloud: {} own image(s), {} copy(ies)",
        rebuilt.own, rebuilt.copies
    );
}

/// Prints `value` as JSON, or runs `table`.
fn show<T: serde::Serialize>(json: bool, value: &T, table: impl FnOnce()) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
    } else {
        table();
    }
}

/// `path` made absolute against the working directory (the running peer has its own).
fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| Error::InvalidInput(format!("bad path {}: {e}", path.display())))
}

/// A request as `requests --json` shows it.
fn request_json(q: &RequestRecord) -> serde_json::Value {
    serde_json::json!({
        "id": q.id,
        "from": q.from,
        "to": q.to,
        "image": q.image,
        "name": q.name,
        "views": q.views,
        "state": q.state.word(),
    })
}

fn print_requests(requests: &[RequestRecord]) {
    println!(
        "{:<14} {:<12} {:<12} {:<24} {:>5}  state",
        "id", "from", "to", "image", "views"
    );
    for q in requests {
        println!(
            "{:<14} {:<12} {:<12} {:<24} {:>5}  {}",
            q.id,
            q.from,
            q.to,
            q.name,
            q.views,
            q.state.word()
        );
    }
}

fn print_images(images: &[ImageEntry]) {
    println!(
        "{:<32} {:<24} {:<12} {:>10}  path",
        "id", "name", "owner", "views left"
    );
    for i in images {
        let left = i.views_left.map_or("own".to_string(), |l| l.to_string());
        println!(
            "{:<32} {:<24} {:<12} {:>10}  {}",
            i.id,
            i.name,
            i.owner,
            left,
            i.path.display()
        );
        for r in i.viewers.iter().flatten() {
            let revoked = if r.revoked { " (revoked)" } else { "" };
            println!(
                "    viewer {:<16} {} used, {} left{revoked}",
                r.viewer, r.views_used, r.views_left
            );
        }
    }
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
