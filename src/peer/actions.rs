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
use tracing::info;

use super::cloud::Cloud;
use super::library::{file_safe, write_atomic, Library, OwnImage, RequestRecord};
use super::p2p::{Directory, Inbox, Msg, Preview};
use super::Approve;
use crate::client::Client;
use crate::config::ClusterConfig;
use crate::sharing::bodies::{SharedAnswer, Shown, WithFile};
use crate::sharing::ledger::MAX_VIEWS;
use crate::sharing::{Credential, SignedOp, UserOp};
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
    pub(super) deciding: std::sync::Mutex<std::collections::HashSet<String>>,
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
    pub viewers: Option<Vec<crate::sharing::bodies::Receipt>>,
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
}

pub(super) fn check_views(views: u32) -> Result<()> {
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
