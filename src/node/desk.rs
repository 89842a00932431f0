//! A node's sharing desk: where a user's peer shares an image, changes a grant and spends a
//! view (`POST /share`, `/grant`, `/view`). The desk is the only place a sealed image is
//! opened for a user, and only nodes hold the key to open it.
//!
//! ```text
//! peer ── WithFile { signed op, file } ──> desk: digest(file) == op.file?
//!                                                open file (cluster key) -> Sealed
//!                                                store.write(op, Sealed) ── majority ──> Reply
//!                                                reseal the copy with its new count
//!      <── SharedAnswer | GrantAnswer { copy } | ViewAnswer { image, copy } ──
//! ```
//!
//! A view is decided by the ledger, never by the count inside the copy: the desk writes the
//! view to the log, and only a `Viewed` reply (committed by a majority) reveals the image.
//! Two answers need no write, because the ledger could not change them: the owner viewing
//! her own image (revealed freely), and someone presenting a copy made for another viewer
//! (the default image). Both still need the signer's key to be the one the cloud recorded.
//!
//! Implementation caveats: the default image is the presented file itself (the cover as it
//! looks, its payload still sealed), not the cover before hiding; opening and resealing run
//! on blocking threads, at most [`CODEC_JOBS`] at once per node.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::codec::metadata::{ImageMeta, Viewer, FORMAT_VERSION};
use crate::codec::seal::SealKey;
use crate::codec::stego::{decrypt_image, encrypt_image_with, Cover, HideOptions};
use crate::sharing::bodies::{Answer, GrantAnswer, SharedAnswer, Shown, ViewAnswer, WithFile};
use crate::sharing::ledger::MAX_KEPT_FILE;
use crate::sharing::{unix_millis, Ask, Change, Query, Reply, Sealed, SignedOp, Standing, UserOp};
use crate::store::Store;
use crate::{Error, Result};

/// The most files a node opens or seals at once for the desk.
pub const CODEC_JOBS: usize = 4;

/// A node's sharing desk (cheap to clone).
#[derive(Clone)]
pub struct Desk {
    store: Store,
    key: Arc<SealKey>,
    jobs: Arc<Semaphore>,
    counts: Arc<DeskCounts>,
}

/// What this node's desk answered to views since it started (`/status`'s `desk`).
#[derive(Debug, Default, serde::Serialize)]
pub struct DeskCounts {
    /// Views that showed the image (a viewer's, or an owner's own).
    pub views_shown: std::sync::atomic::AtomicU64,
    /// Views that gave the default image.
    pub views_default: std::sync::atomic::AtomicU64,
}

impl Desk {
    /// The desk of a node with `store` and the cluster `key`.
    pub fn new(store: Store, key: SealKey) -> Desk {
        Desk {
            store,
            key: Arc::new(key),
            jobs: Arc::new(Semaphore::new(CODEC_JOBS)),
            counts: Arc::default(),
        }
    }

    /// What this desk answered to views so far.
    pub fn counts(&self) -> &DeskCounts {
        &self.counts
    }

    /// `POST /share`: lists the user's encrypted image in the ledger and the directory.
    pub async fn share(&self, request: WithFile) -> Result<SharedAnswer> {
        let UserOp::Share { name, file } = &request.op.op else {
            return Err(wrong_op("share", &request.op));
        };
        check_digest(file, &request.file)?;
        let (file, meta, _) = self.open(request.file, "the image to share").await?;
        let name = name.clone();
        let bytes = file.len();
        if bytes as u64 > MAX_KEPT_FILE {
            return Err(Error::InvalidInput(format!(
                "the encrypted image is {bytes} bytes; the cloud keeps at most {MAX_KEPT_FILE}"
            )));
        }
        // Kept on a majority before the ledger names it: a listed image always has its file.
        self.store.keep(file).await?;
        self.store
            .write(request.op, Some(Sealed::of(&meta, bytes)))
            .await?
            .into_result()?;
        Ok(SharedAnswer {
            id: meta.image_id.to_string(),
            name,
        })
    }

    /// `POST /grant`: changes a viewer's views and seals the viewer's copy.
    pub async fn grant(&self, request: WithFile) -> Result<GrantAnswer> {
        let UserOp::Grant {
            viewer,
            change,
            file,
            ..
        } = &request.op.op
        else {
            return Err(wrong_op("grant", &request.op));
        };
        check_digest(file, &request.file)?;
        let (viewer, change) = (viewer.clone(), *change);
        let (encrypted, meta, secret) = self.open(request.file, "the owner's image").await?;
        let sealed = Sealed::of(&meta, encrypted.len());
        let reply = self
            .store
            .write(request.op, Some(sealed))
            .await?
            .into_result()?;
        let Reply::Granted {
            views_left,
            version,
        } = reply
        else {
            return Err(unexpected(&reply));
        };
        let copy = match change {
            Change::Revoke => None,
            _ => {
                let copy_meta = copy_meta(&meta, &viewer, views_left);
                Some(self.seal(secret, encrypted, copy_meta).await?)
            }
        };
        Ok(GrantAnswer {
            views_left,
            version,
            copy,
        })
    }

    /// `POST /view`: spends one view of a copy (or shows the owner her image), or says why
    /// not and gives the default image; the image travels sealed to the signer's key, so a
    /// reply captured or replayed is of no use to anyone else.
    pub async fn view(&self, request: WithFile) -> Result<ViewAnswer> {
        let key = request.op.key;
        let mut answer = self.view_unsealed(request).await?;
        let count = match answer.shown {
            Shown::Image => &self.counts.views_shown,
            Shown::Default => &self.counts.views_default,
        };
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        answer.image = crate::sharing::account::seal_to(&key, &answer.image)?;
        Ok(answer)
    }

    async fn view_unsealed(&self, request: WithFile) -> Result<ViewAnswer> {
        let UserOp::View { file } = &request.op.op else {
            return Err(wrong_op("view", &request.op));
        };
        check_digest(file, &request.file)?;
        let (copy, meta, secret) = self.open(request.file, "the copy").await?;
        let user = request.op.user.clone();
        let sealed = Sealed::of(&meta, copy.len());
        match sealed.standing(&user) {
            Standing::Viewer => {}
            // Nothing the ledger holds can change these answers: no write, but the signer
            // must be the user the cloud knows.
            Standing::Owner => {
                self.check_signer(&request.op).await?;
                return Ok(ViewAnswer {
                    shown: Shown::Image,
                    reason: None,
                    views_left: None,
                    image: secret,
                    copy: None,
                });
            }
            Standing::Stranger(reason) => {
                self.check_signer(&request.op).await?;
                return Ok(default_image(reason, copy));
            }
        }
        let reply = self
            .store
            .write(request.op, Some(sealed))
            .await?
            .into_result()?;
        match reply {
            Reply::Viewed { views_left } => {
                let renewed = copy_meta(&meta, &user, views_left);
                let image = secret.clone();
                let new_copy = self.seal(secret, copy, renewed).await?;
                Ok(ViewAnswer {
                    shown: Shown::Image,
                    reason: None,
                    views_left: Some(views_left),
                    image,
                    copy: Some(new_copy),
                })
            }
            Reply::Default(reason) => Ok(default_image(reason, copy)),
            reply => Err(unexpected(&reply)),
        }
    }

    /// `POST /query`: answers a user's signed question about their own records, read
    /// linearizably (no log entry: nothing changes).
    pub async fn query(&self, query: Query) -> Result<Answer> {
        query.verify(unix_millis())?;
        self.check_key(&query.user, &query.key).await?;
        let user = query.user.clone();
        match query.ask {
            Ask::Mail => {
                let letters = self
                    .store
                    .read(move |s| {
                        let mailbox = s.mail.get(&user);
                        let letters = mailbox.into_iter().flat_map(|m| m.letters.iter());
                        letters.map(|(n, l)| (*n, l.clone())).collect()
                    })
                    .await?;
                Ok(Answer::Mail(letters))
            }
            Ask::Holdings => Ok(Answer::Holdings(
                self.store.read(move |s| s.ledger.holdings(&user)).await?,
            )),
            Ask::Own { image } => {
                let file = self
                    .store
                    .read(move |s| match s.ledger.images.get(&image) {
                        Some(record) if record.owner == user => Ok(record.file),
                        Some(_) => Err(format!("{user} does not own image {image}")),
                        None => Err(format!("image {image} was never shared")),
                    })
                    .await?
                    .map_err(Error::InvalidInput)?;
                Ok(Answer::File(self.store.kept(file).await?))
            }
            Ask::Copy { image } => {
                let viewer = user.clone();
                let (file, grant) = self
                    .store
                    .read(move |s| {
                        let record = s
                            .ledger
                            .images
                            .get(&image)
                            .ok_or_else(|| format!("image {image} was never shared"))?;
                        let grant = record.grant_of(&user).ok_or_else(|| {
                            format!(
                                "{user} is not (or no longer) a viewer of {}'s {:?}",
                                record.owner, record.name
                            )
                        })?;
                        Ok::<_, String>((record.file, *grant))
                    })
                    .await?
                    .map_err(Error::InvalidInput)?;
                let kept = self.store.kept(file).await?;
                let (encrypted, meta, secret) = self.open(kept, "the kept image").await?;
                let copy_meta = copy_meta(&meta, &viewer, grant.left);
                Ok(Answer::Copy {
                    copy: self.seal(secret, encrypted, copy_meta).await?,
                    views_left: grant.left,
                    version: grant.version,
                })
            }
        }
    }

    /// Checks that `op` is signed by the key the cloud recorded for its user.
    async fn check_signer(&self, op: &SignedOp) -> Result<()> {
        op.verify()?;
        self.check_key(&op.user, &op.key).await
    }

    /// Checks that `key` is the one the cloud recorded for `user`.
    async fn check_key(&self, user: &str, key: &crate::sharing::account::PublicKey) -> Result<()> {
        let user = user.to_string();
        // Keys never change once recorded, so this node's own state answers when it has the
        // user; only a user it has not seen yet needs a read through the leader.
        let recorded = match self.store.local(|s| s.users.get(&user).map(|r| r.key)) {
            Some(recorded) => Some(recorded),
            None => {
                self.store
                    .read(|s| s.users.get(&user).map(|r| r.key))
                    .await?
            }
        };
        match recorded {
            Some(recorded) if recorded == *key => Ok(()),
            Some(_) => Err(Error::Unauthorized(format!(
                "wrong password for {user}: the name is taken by another key"
            ))),
            None => Err(Error::InvalidInput(format!(
                "unknown user {user}: register first"
            ))),
        }
    }

    /// Opens a sealed file on a blocking thread; the file back, its metadata and the hidden
    /// image. Errors say what the file is.
    async fn open(&self, file: Vec<u8>, what: &str) -> Result<(Vec<u8>, ImageMeta, Vec<u8>)> {
        let key = self.key.clone();
        let opened = self
            .blocking(move || {
                let (meta, secret) = decrypt_image(&file, &key)?;
                Ok((file, meta, secret))
            })
            .await
            .map_err(|e| match e {
                Error::WrongKey => Error::InvalidInput(format!(
                    "{what} was sealed by another cloud (a different cluster secret)"
                )),
                Error::NoPayload => Error::InvalidInput(format!(
                    "{what} carries no imgcloud payload (a plain image, or re-encoded)"
                )),
                Error::Tampered(why) => {
                    Error::InvalidInput(format!("{what} was tampered with or damaged ({why})"))
                }
                Error::Unavailable(why) => Error::Unavailable(why),
                e => Error::InvalidInput(format!("{what} cannot be opened: {e}")),
            })?;
        Ok(opened)
    }

    /// Seals `secret` with `meta` in `cover` (an image made by this cloud) on a blocking thread.
    async fn seal(&self, secret: Vec<u8>, cover: Vec<u8>, meta: ImageMeta) -> Result<Vec<u8>> {
        let key = self.key.clone();
        // Stored rows: a copy is opened and resealed on every view (DESIGN.md, "Phase 2:
        // sharing"), and inflating and deflating it was a third of a view's CPU.
        let options = HideOptions {
            bits: None,
            stored: true,
        };
        self.blocking(move || {
            encrypt_image_with(&secret, Cover::Image(&cover), &meta, &key, options)
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .jobs
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the node is shutting down".into()))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| Error::Unavailable(format!("a codec job failed: {e}")))?
    }
}

/// The metadata of `viewer`'s copy of the image `meta` describes.
fn copy_meta(meta: &ImageMeta, viewer: &str, views_left: u32) -> ImageMeta {
    ImageMeta {
        version: FORMAT_VERSION,
        image_id: meta.image_id,
        owner: meta.owner.clone(),
        viewers: vec![Viewer {
            name: viewer.to_string(),
            quota: views_left,
        }],
    }
}

fn default_image(reason: String, file: Vec<u8>) -> ViewAnswer {
    ViewAnswer {
        shown: Shown::Default,
        reason: Some(reason),
        views_left: None,
        image: file,
        copy: None,
    }
}

fn check_digest(digest: &[u8; 32], file: &[u8]) -> Result<()> {
    if Sha256::digest(file).as_slice() == digest {
        Ok(())
    } else {
        Err(Error::InvalidInput(
            "the file sent is not the one the signed request names (its SHA-256 differs)".into(),
        ))
    }
}

fn wrong_op(path: &str, op: &SignedOp) -> Error {
    Error::InvalidInput(format!(
        "POST /{path} takes a {path} operation, not a {} operation",
        op.op.kind()
    ))
}

fn unexpected(reply: &Reply) -> Error {
    Error::Protocol(format!(
        "the ledger answered {reply:?}, which this request cannot get"
    ))
}
