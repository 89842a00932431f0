//! What a user's peer does: share an image, show and fetch previews, ask for views, decide
//! requests, deliver and receive copies, and view, each through the cloud where the cloud
//! decides (encryption, grants, views) and directly between peers where it does not
//! (previews, requests, copies).
//!
//! ```text
//! share    photo ── phase-1 multicast ──> encrypted ── POST /share ──> ledger + directory
//! previews bob ── p2p Previews ──> alice: her previews
//! request  bob ── p2p Request ──> alice: pending (or approved at once with --approve auto)
//! approve  alice ── POST /grant (her encrypted image) ──> ledger; the copy ── p2p Copy ──> bob
//! view     bob ── POST /view (his copy) ──> the image and his copy with the new count
//! ```
//!
//! Every signed write to the cloud goes through [`Peer::signed`], one at a time, so that the
//! cloud sees this user's sequence numbers in order (concurrent views from one user would
//! otherwise arrive out of order and be refused as stale).
//!
//! Whoever is offline gets their letters from the cloud's mailbox when they return
//! ([`super::mail`]): a request to an offline owner is posted there, and every grant the
//! cloud records is posted to its viewer, so a copy that cannot be sent directly waits there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::cloud::Cloud;
use super::library::{
    file_safe, write_atomic, CopyRecord, Library, OwnImage, RequestRecord, RequestState,
};
use super::p2p::{self, Directory, Inbox, Msg, Preview, RequestAnswer};
use super::Approve;
use crate::client::Client;
use crate::codec::metadata::ImageId;
use crate::config::ClusterConfig;
use crate::sharing::ledger::MAX_VIEWS;
use crate::sharing::wire::{SharedAnswer, Shown, WithFile};
use crate::sharing::{Change, Credential, Posted, SignedOp, UserOp};
use crate::{Error, Result};

/// Longest side of a preview, in pixels.
pub const PREVIEW_SIDE: u32 = 128;
/// How long the phase-1 encryption of a shared photo may take.
const ENCRYPT_DEADLINE: Duration = Duration::from_secs(60);

/// A running peer.
pub struct Peer {
    /// Whose peer it is.
    pub user: String,
    /// The login token of the local API and gallery.
    pub token: String,
    /// The user's key.
    pub credential: Credential,
    /// The cloud.
    pub cloud: Cloud,
    /// The cloud's nodes (for the phase-1 request path).
    pub cluster: ClusterConfig,
    /// The folder's records.
    pub library: Library,
    /// The directory, cached.
    pub directory: Directory,
    /// Checks arriving peer messages.
    pub inbox: Inbox,
    /// How incoming requests are decided.
    pub approve: Approve,
    /// Serialises signed writes (see the module docs).
    writes: tokio::sync::Mutex<()>,
    /// Whether event lines ("received a copy ...") stay unprinted (a one-off command).
    quiet: bool,
    /// One mailbox reading at a time ([`super::mail`]).
    pub(super) reading: tokio::sync::Mutex<()>,
    /// Requests being decided now (an approval and a second one, or a denial, must not
    /// both go ahead: each would grant the views).
    deciding: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A request being decided; it is free again when this drops.
struct Deciding<'a> {
    peer: &'a Peer,
    id: String,
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        self.peer
            .deciding
            .lock()
            .expect("deciding lock")
            .remove(&self.id);
    }
}

/// `share`'s arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareArgs {
    /// The photo (an absolute path).
    pub path: PathBuf,
    /// Its name (default: the file's stem).
    pub name: Option<String>,
    /// A cover to hide it in (default: the cloud's).
    pub cover: Option<PathBuf>,
}

/// A fetched preview, as `previews --json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewFile {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where the preview was saved.
    pub path: PathBuf,
    /// Its size.
    pub width: u32,
    /// Its size.
    pub height: u32,
}

/// One image as `images --json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Views left (none for own images, which the owner views freely).
    pub views_left: Option<u32>,
    /// The file: the encrypted image, or the copy.
    pub path: PathBuf,
    /// For own images: each viewer's views used and left, as the ledger says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<Vec<crate::sharing::wire::Receipt>>,
}

/// What `view` did, as `view --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewResult {
    /// `image` or `default`.
    pub shown: Shown,
    /// Views left now (none for an own image).
    pub views_left: Option<u32>,
    /// Where the image was written.
    pub out: PathBuf,
    /// Why the default image, in a sentence.
    pub reason: Option<String>,
}

/// Where a copy goes, and what it says.
pub(super) struct Delivery<'a> {
    pub viewer: &'a str,
    pub request: Option<&'a str>,
    pub image: &'a str,
    pub name: &'a str,
    pub views_left: u32,
    pub version: u64,
}

/// What a file given to `view` is.
enum Source {
    Own(OwnImage),
    Copy(CopyRecord),
    Path(PathBuf),
}

impl Peer {
    /// A peer for `credential`'s user.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        credential: Credential,
        token: String,
        cloud: Cloud,
        cluster: ClusterConfig,
        library: Library,
        approve: Approve,
    ) -> Peer {
        let user = credential.user().to_string();
        Peer {
            inbox: Inbox::new(&user),
            directory: Directory::new(cloud.clone()),
            user,
            token,
            credential,
            cloud,
            cluster,
            library,
            approve,
            writes: tokio::sync::Mutex::new(()),
            reading: tokio::sync::Mutex::new(()),
            quiet: false,
            deciding: Default::default(),
        }
    }

    /// The same peer, printing no event lines.
    pub fn quiet(self) -> Peer {
        Peer {
            quiet: true,
            ..self
        }
    }

    /// Prints an event line (what happened, for the user watching the peer).
    pub(super) fn say(&self, line: String) {
        if !self.quiet {
            println!("{line}");
        }
    }

    /// Signs `op` and sends it with `send`, one signed write at a time.
    pub async fn signed<T, F>(&self, op: UserOp, send: impl FnOnce(SignedOp) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let _turn = self.writes.lock().await;
        send(self.credential.sign(op)).await
    }

    /// Encrypts the photo through the cloud with this user as owner, lists it in the ledger
    /// and keeps the original, the encrypted image and a preview.
    pub async fn share(&self, args: ShareArgs) -> Result<SharedAnswer> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                Error::InvalidInput(format!("cannot read the {what} {}: {e}", path.display()))
            })
        };
        let secret = read(&args.path, "photo")?;
        let photo = crate::codec::stego::decode_image(&secret, "photo")?;
        let cover = args
            .cover
            .as_deref()
            .map(|c| read(c, "cover"))
            .transpose()?;
        let name = match args.name {
            Some(name) => name,
            None => args
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into()),
        };
        crate::sharing::ledger::check_image_name(&name).map_err(Error::InvalidInput)?;
        let client = Client::connect(rand::random(), &self.cluster.nodes)
            .await?
            .with_deadline(ENCRYPT_DEADLINE);
        let encrypted = client
            .encrypt(secret.clone(), cover, &self.user, Vec::new())
            .await?
            .png;
        let file = digest(&encrypted);
        let shared = self
            .signed(UserOp::Share { name, file }, |op| async {
                let request = WithFile {
                    op,
                    file: encrypted.clone(),
                };
                self.cloud.share(&request).await
            })
            .await?;
        self.keep_own(&shared.id, &shared.name, &encrypted, &secret, &photo)?;
        info!(user = %self.user, id = %shared.id, "[peer {}] shared {:?}", self.user, shared.name);
        Ok(shared)
    }

    /// Keeps an own image in the folder: the encrypted image, the original and its preview.
    pub(super) fn keep_own(
        &self,
        id: &str,
        name: &str,
        encrypted: &[u8],
        secret: &[u8],
        photo: &image::DynamicImage,
    ) -> Result<()> {
        let preview = photo.thumbnail(PREVIEW_SIDE, PREVIEW_SIDE);
        let preview_png = crate::codec::stego::encode_png(&preview)?;
        let ext = crate::codec::stego::image_extension(secret).unwrap_or("bin");
        let original = format!("{id}.original.{ext}");
        let lib = &self.library;
        write_atomic(&lib.own_file(id), encrypted)?;
        write_atomic(&lib.root().join("own").join(&original), secret)?;
        write_atomic(&lib.preview_file(id), &preview_png)?;
        lib.update(|r| {
            r.own.retain(|o| o.id != id);
            r.own.push(OwnImage {
                id: id.to_string(),
                name: name.to_string(),
                original,
                preview_size: (preview.width(), preview.height()),
            })
        })
    }

    /// This user's previews, as another peer gets them.
    pub fn own_previews(&self) -> Result<Vec<Preview>> {
        self.library
            .records()
            .own
            .into_iter()
            .map(|own| {
                Ok(Preview {
                    png: std::fs::read(self.library.preview_file(&own.id))?,
                    id: own.id,
                    name: own.name,
                    width: own.preview_size.0,
                    height: own.preview_size.1,
                })
            })
            .collect()
    }

    /// Fetches `owner`'s previews from her peer and saves them in `out` (default:
    /// `DIR/previews/OWNER`).
    pub async fn previews(&self, owner: &str, out: Option<PathBuf>) -> Result<Vec<PreviewFile>> {
        let previews: Vec<Preview> = self.send_to(owner, Msg::Previews).await?;
        let dir = out.unwrap_or_else(|| self.library.root().join("previews").join(owner));
        let mut files = Vec::new();
        for preview in previews {
            if preview.width.max(preview.height) > PREVIEW_SIDE {
                return Err(Error::Protocol(format!(
                    "{owner}'s peer sent a preview of {}x{}, larger than {PREVIEW_SIDE} px",
                    preview.width, preview.height
                )));
            }
            crate::codec::stego::decode_image(&preview.png, "preview")?;
            let short = preview.id.get(..8).unwrap_or(&preview.id);
            let path = dir.join(format!("{}-{short}.png", file_safe(&preview.name)));
            write_atomic(&path, &preview.png)?;
            files.push(PreviewFile {
                id: preview.id,
                name: preview.name,
                path,
                width: preview.width,
                height: preview.height,
            });
        }
        Ok(files)
    }

    /// Asks `owner` for `views` views of her image `image` (its id or name).
    pub async fn request(&self, owner: &str, image: &str, views: u32) -> Result<RequestAnswer> {
        if owner == self.user {
            return Err(Error::InvalidInput(
                "you own your images; there is nothing to request".into(),
            ));
        }
        check_views(views)?;
        let shared = match self.directory.shared(owner, image).await? {
            Some(shared) => shared,
            None if self.directory.entry(owner).await?.is_none() => {
                return Err(Error::InvalidInput(format!("unknown user {owner}")))
            }
            None => {
                return Err(Error::InvalidInput(format!(
                    "{owner} shares no image {image:?} (see `peer online`)"
                )))
            }
        };
        let image_id: ImageId = shared.id.parse()?;
        let id = hex::encode(rand::random::<[u8; 6]>());
        self.library.update(|r| {
            r.requests.push(RequestRecord {
                id: id.clone(),
                from: self.user.clone(),
                to: owner.to_string(),
                image: shared.id.clone(),
                name: shared.name.clone(),
                views,
                state: RequestState::Pending,
                views_left: None,
            })
        })?;
        let msg = Msg::Request {
            id: id.clone(),
            image: shared.id.clone(),
            views,
        };
        let sent = self.send_to::<RequestAnswer>(owner, msg).await;
        let answer = match sent {
            Ok(answer) => answer,
            // Offline, or gone since the directory said otherwise: the request waits in her
            // mailbox for her return.
            Err(Error::Unavailable(why)) => {
                info!(
                    "[peer {}] {owner} is not reachable ({why}); mailing",
                    self.user
                );
                let letter = Posted::Request {
                    id: id.clone(),
                    image: image_id,
                    views,
                };
                let posted = self.post(owner, letter).await;
                if let Err(e) = posted {
                    self.forget_request(&id)?;
                    return Err(e);
                }
                self.say(format!(
                    "[peer {}] {owner} is offline: request {id} waits in {owner}'s mailbox",
                    self.user
                ));
                RequestAnswer {
                    id: id.clone(),
                    state: "pending".into(),
                }
            }
            Err(e) => {
                self.forget_request(&id)?;
                return Err(e);
            }
        };
        // The copy may have arrived (and set "delivered") before this answer did.
        let state = self.library.update(|r| {
            let request = r.requests.iter_mut().find(|q| q.id == id);
            request.map(|q| q.state.word().to_string())
        })?;
        Ok(RequestAnswer {
            id,
            state: state.unwrap_or(answer.state),
        })
    }

    /// Takes `from`'s request for views of one of this user's images.
    pub fn take_request(
        self: &std::sync::Arc<Self>,
        from: &str,
        id: &str,
        image: &str,
        views: u32,
    ) -> Result<RequestAnswer> {
        check_views(views)?;
        if id.is_empty() || id.len() > 64 {
            return Err(Error::InvalidInput("a request id is 1 to 64 bytes".into()));
        }
        let records = self.library.records();
        let own =
            records.own.iter().find(|o| o.id == image).ok_or_else(|| {
                Error::InvalidInput(format!("{} has no image {image:?}", self.user))
            })?;
        if let Some(known) = records
            .requests
            .iter()
            .find(|q| q.id == id && q.from == from && q.to == self.user)
        {
            return Ok(RequestAnswer {
                id: id.to_string(),
                state: known.state.word().into(),
            });
        }
        let record = RequestRecord {
            id: id.to_string(),
            from: from.to_string(),
            to: self.user.clone(),
            image: own.id.clone(),
            name: own.name.clone(),
            views,
            state: RequestState::Pending,
            views_left: None,
        };
        self.library.update(|r| r.requests.push(record))?;
        self.say(format!(
            "[peer {}] {from} asks for {views} view(s) of {:?} (request {id})",
            self.user, own.name
        ));
        if self.approve == Approve::Auto {
            let peer = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(e) = peer.approve(&id, None).await {
                    warn!("[peer {}] could not approve request {id}: {e}", peer.user);
                }
            });
        }
        Ok(RequestAnswer {
            id: id.to_string(),
            state: "pending".into(),
        })
    }

    /// Approves request `id` to this user with its views (or `views`): the cloud records the
    /// grant and seals the copy, which goes to the viewer directly.
    pub async fn approve(&self, id: &str, views: Option<u32>) -> Result<RequestRecord> {
        let (request, _turn) = self.decide(id)?;
        let views = views.unwrap_or(request.views);
        check_views(views)?;
        let answer = self
            .grant(&request.image, &request.from, Change::Add(views))
            .await?;
        let copy = answer
            .copy
            .ok_or_else(|| Error::Protocol("the cloud granted views but sent no copy".into()))?;
        self.set_request(id, &request.from, |q| {
            q.state = RequestState::Approved;
            q.views = views;
            q.views_left = Some(answer.views_left);
        })?;
        self.say(format!(
            "[peer {}] approved {} view(s) of {:?} for {}",
            self.user, views, request.name, request.from
        ));
        let delivery = Delivery {
            viewer: &request.from,
            request: Some(id),
            image: &request.image,
            name: &request.name,
            views_left: answer.views_left,
            version: answer.version,
        };
        if self.deliver(delivery, copy).await {
            self.set_request(id, &request.from, |q| q.state = RequestState::Delivered)?;
        }
        Ok(self.request_record(id, &request.from).unwrap_or(request))
    }

    /// Denies request `id` to this user, and tells the asker if they are online.
    pub async fn deny(&self, id: &str) -> Result<RequestRecord> {
        let (request, _turn) = self.decide(id)?;
        self.set_request(id, &request.from, |q| q.state = RequestState::Denied)?;
        let msg = Msg::Denied {
            request: id.to_string(),
        };
        if let Err(e) = self.send_to::<()>(&request.from, msg).await {
            info!(
                "[peer {}] {} not reachable ({e}); mailing the denial",
                self.user, request.from
            );
            let letter = Posted::Denied { id: id.to_string() };
            self.post(&request.from, letter).await?;
        }
        Ok(self.request_record(id, &request.from).unwrap_or(request))
    }

    /// Changes `viewer`'s views of own image `image` (its id) in the ledger, sending the
    /// owner's encrypted image for the cloud to seal the viewer's copy from.
    pub(super) async fn grant(
        &self,
        image: &str,
        viewer: &str,
        change: Change,
    ) -> Result<crate::sharing::wire::GrantAnswer> {
        let id: ImageId = image.parse()?;
        let encrypted = std::fs::read(self.library.own_file(image))?;
        let op = UserOp::Grant {
            image: id,
            viewer: viewer.to_string(),
            change,
            file: digest(&encrypted),
        };
        self.signed(op, |op| async {
            let request = WithFile {
                op,
                file: encrypted.clone(),
            };
            self.cloud.grant(&request).await
        })
        .await
    }

    /// Sends a copy to its viewer directly; whether it arrived. One that did not waits in
    /// the viewer's mailbox (the cloud posted the grant there), for the viewer's return.
    pub(super) async fn deliver(&self, to: Delivery<'_>, copy: Vec<u8>) -> bool {
        let msg = Msg::Copy {
            request: to.request.map(str::to_string),
            image: to.image.to_string(),
            name: to.name.to_string(),
            views_left: to.views_left,
            version: to.version,
            copy,
        };
        match self.send_to::<()>(to.viewer, msg).await {
            Ok(()) => {
                self.say(format!(
                    "[peer {}] delivered {}'s copy of {:?} ({} view(s) left)",
                    self.user, to.viewer, to.name, to.views_left
                ));
                true
            }
            Err(e) => {
                self.say(format!(
                    "[peer {}] {} is not reachable ({e}): the update waits in {}'s mailbox",
                    self.user, to.viewer, to.viewer
                ));
                false
            }
        }
    }

    /// Sends `msg` to `to`'s peer directly; when the address the directory gave does not
    /// answer, asks the directory afresh once (the peer may have come back elsewhere).
    pub(super) async fn send_to<T: serde::de::DeserializeOwned>(
        &self,
        to: &str,
        msg: Msg,
    ) -> Result<T> {
        let addr = self.directory.address(to).await?;
        match p2p::send::<T>(&self.credential, to, &addr, msg.clone()).await {
            Err(Error::Unavailable(why)) => {
                self.directory.forget();
                match self.directory.address(to).await? {
                    fresh if fresh != addr => p2p::send(&self.credential, to, &fresh, msg).await,
                    _ => Err(Error::Unavailable(why)),
                }
            }
            sent => sent,
        }
    }

    /// Leaves `letter` in `to`'s mailbox.
    pub(super) async fn post(&self, to: &str, letter: Posted) -> Result<()> {
        let op = UserOp::Post {
            to: to.to_string(),
            letter,
        };
        self.signed(op, |op| async move { self.cloud.submit(&op).await })
            .await
    }

    fn forget_request(&self, id: &str) -> Result<()> {
        self.library
            .update(|r| r.requests.retain(|q| !(q.id == id && q.from == self.user)))
    }

    /// Takes a copy `from` an owner (the caller checked that `from` owns it): keeps it and marks
    /// the request it answers delivered; a copy older than the one kept changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn take_copy(
        &self,
        from: &str,
        request: Option<&str>,
        image: &str,
        name: &str,
        views_left: u32,
        version: u64,
        copy: &[u8],
    ) -> Result<()> {
        let id: ImageId = image.parse()?;
        let id = id.to_string();
        crate::sharing::ledger::check_image_name(name).map_err(Error::InvalidInput)?;
        if crate::codec::stego::image_extension(copy) != Some("png") {
            return Err(Error::InvalidInput(
                "a copy must be a PNG made by the cloud".into(),
            ));
        }
        // A newer copy replaces an older one, never the reverse (a late or replayed letter).
        let newer = self
            .library
            .records()
            .copies
            .iter()
            .any(|c| c.id == id && c.version > version);
        if newer {
            return Ok(());
        }
        write_atomic(&self.library.copy_file(&id), copy)?;
        self.library.update(|r| {
            r.copies.retain(|c| c.id != id);
            r.copies.push(CopyRecord {
                id: id.clone(),
                name: name.to_string(),
                owner: from.to_string(),
                views_left,
                version,
            });
            // The request it answers; a copy from the mailbox answers the open ones for it.
            for q in r.requests.iter_mut() {
                let answers = match request {
                    Some(request) => q.id == request,
                    None => q.image == id && q.state == RequestState::Pending,
                };
                if answers && q.to == from && q.from == self.user {
                    q.state = RequestState::Delivered;
                    q.views_left = Some(views_left);
                }
            }
        })?;
        self.say(format!(
            "[peer {}] received a copy of {from}'s {name:?} ({views_left} view(s))",
            self.user
        ));
        Ok(())
    }

    /// `from` denied this user's request `request`.
    pub fn take_denied(&self, from: &str, request: &str) -> Result<()> {
        self.library.update(|r| {
            for q in r.requests.iter_mut() {
                if q.id == request && q.to == from && q.from == self.user {
                    q.state = RequestState::Denied;
                }
            }
        })
    }

    /// Own images and received copies.
    pub fn images(&self) -> Vec<ImageEntry> {
        let records = self.library.records();
        let own = records.own.into_iter().map(|o| ImageEntry {
            path: self.library.own_file(&o.id),
            id: o.id,
            name: o.name,
            owner: self.user.clone(),
            views_left: None,
            viewers: None,
        });
        let copies = records.copies.into_iter().map(|c| ImageEntry {
            path: self.library.copy_file(&c.id),
            id: c.id,
            name: c.name,
            owner: c.owner,
            views_left: Some(c.views_left),
            viewers: None,
        });
        own.chain(copies).collect()
    }

    /// Requests in and out.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.library.records().requests
    }

    /// Views `image` (an own image or a copy, by id or name, or a copy file's path) through
    /// the cloud, and writes what it shows to `out`.
    pub async fn view(&self, image: &str, out: Option<PathBuf>) -> Result<ViewResult> {
        let source = self.source(image)?;
        let (path, name) = match &source {
            Source::Own(o) => (self.library.own_file(&o.id), o.name.clone()),
            Source::Copy(c) => (self.library.copy_file(&c.id), c.name.clone()),
            Source::Path(p) => (
                p.clone(),
                p.file_stem()
                    .map_or("image".into(), |s| s.to_string_lossy().into_owned()),
            ),
        };
        let file = std::fs::read(&path)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?;
        let op = UserOp::View {
            file: digest(&file),
        };
        let answer = self
            .signed(op, |op| async {
                let request = WithFile { op, file };
                self.cloud.view(&request, &self.credential).await
            })
            .await?;
        let ext = crate::codec::stego::image_extension(&answer.image).unwrap_or("png");
        let out = out.unwrap_or_else(|| {
            let suffix = if answer.shown == Shown::Default {
                ".default"
            } else {
                ""
            };
            self.library
                .root()
                .join("views")
                .join(format!("{}{suffix}.{ext}", file_safe(&name)))
        });
        write_atomic(&out, &answer.image)?;
        let mut views_left = answer.views_left;
        if let Source::Copy(copy) = &source {
            if let Some(renewed) = &answer.copy {
                write_atomic(&self.library.copy_file(&copy.id), renewed)?;
            }
            let left = views_left.unwrap_or(0);
            views_left = Some(left);
            self.library.update(|r| {
                if let Some(c) = r.copies.iter_mut().find(|c| c.id == copy.id) {
                    c.views_left = left;
                }
            })?;
        }
        Ok(ViewResult {
            shown: answer.shown,
            views_left,
            out,
            reason: answer.reason,
        })
    }

    /// What `image` names: an own image, a copy (by id, then by name), or a file.
    fn source(&self, image: &str) -> Result<Source> {
        let records = self.library.records();
        if let Some(own) = records
            .own
            .iter()
            .find(|o| o.id == image || o.name == image)
        {
            return Ok(Source::Own(own.clone()));
        }
        if let Some(copy) = records.copies.iter().find(|c| c.id == image) {
            return Ok(Source::Copy(copy.clone()));
        }
        let named: Vec<&CopyRecord> = records.copies.iter().filter(|c| c.name == image).collect();
        match named.as_slice() {
            [one] => return Ok(Source::Copy((*one).clone())),
            [] => {}
            many => {
                let owners: Vec<&str> = many.iter().map(|c| c.owner.as_str()).collect();
                return Err(Error::InvalidInput(format!(
                    "{} copies are named {image:?} (from {}); give the image's id",
                    many.len(),
                    owners.join(", ")
                )));
            }
        }
        let path = PathBuf::from(image);
        if path.is_file() {
            return Ok(Source::Path(path));
        }
        Err(Error::InvalidInput(format!(
            "no image {image:?}: give an id or a name from `peer images`, or a copy's path"
        )))
    }

    /// Takes request `id` to this user for a decision: it must be pending and not being
    /// decided already.
    fn decide(&self, id: &str) -> Result<(RequestRecord, Deciding<'_>)> {
        if !self
            .deciding
            .lock()
            .expect("deciding lock")
            .insert(id.to_string())
        {
            return Err(Error::InvalidInput(format!(
                "request {id} is being decided right now"
            )));
        }
        let turn = Deciding {
            peer: self,
            id: id.to_string(),
        };
        Ok((self.pending_request(id)?, turn))
    }

    fn pending_request(&self, id: &str) -> Result<RequestRecord> {
        let request = self
            .library
            .records()
            .requests
            .into_iter()
            .find(|q| q.id == id && q.to == self.user)
            .ok_or_else(|| {
                Error::InvalidInput(format!("there is no request {id} to {}", self.user))
            })?;
        if request.state != RequestState::Pending {
            return Err(Error::InvalidInput(format!(
                "request {id} is already {}",
                request.state.word()
            )));
        }
        Ok(request)
    }

    fn request_record(&self, id: &str, from: &str) -> Option<RequestRecord> {
        self.library
            .records()
            .requests
            .into_iter()
            .find(|q| q.id == id && q.from == from && q.to == self.user)
    }

    fn set_request(&self, id: &str, from: &str, f: impl FnOnce(&mut RequestRecord)) -> Result<()> {
        self.library.update(|r| {
            if let Some(q) = r
                .requests
                .iter_mut()
                .find(|q| q.id == id && q.from == from && q.to == self.user)
            {
                f(q);
            }
        })
    }
}

fn check_views(views: u32) -> Result<()> {
    if views == 0 || views > MAX_VIEWS {
        return Err(Error::InvalidInput(format!(
            "ask for 1 to {MAX_VIEWS} views (got {views})"
        )));
    }
    Ok(())
}

/// SHA-256 of a file, as signed operations name it.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
