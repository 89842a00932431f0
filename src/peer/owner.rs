//! What an owner controls and what the cloud gives back: `allow`, `quota` and `revoke`
//! (grant changes the ledger applies at once, sent on to the viewer), receipts (views used
//! and left per viewer), and `rebuild` (the folder's images and copies from the cloud).
//!
//! ```text
//! allow/quota/revoke ── POST /grant ──> ledger (now) + the viewer's mailbox letter
//!                       the new copy ── p2p Copy ──> viewer, when online
//! receipts ── Ask::Holdings ──> views used and left per viewer of each own image
//! rebuild  ── Ask::Holdings ──> Ask::Own (own encrypted images; the owner views each freely
//!                               to get the original back) and Ask::Copy (granted copies)
//! ```
//!
//! Implementation caveats: a rebuilt own image's original is the image as the cloud hid it
//! (the same bytes), and its preview is made again from it; requests decided before the
//! folder was lost are not rebuilt (the ledger has the grants they made).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::actions::{digest, Peer};
use super::copies::Delivery;
use crate::codec::metadata::ImageId;
use crate::sharing::bodies::{Answer, Holdings, OwnHolding, Shown, WithFile};
use crate::sharing::{Ask, Change, UserOp};
use crate::{Error, Result};

/// What `allow`, `quota` or `revoke` did, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The image's id.
    pub image: String,
    /// The viewer.
    pub viewer: String,
    /// The viewer's views left now.
    pub views_left: u32,
    /// Whether the viewer's peer got the update now (else it waits in their mailbox).
    pub delivered: bool,
}

/// What `rebuild` brought back, as `--json` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    /// Own images brought back.
    pub own: usize,
    /// Copies brought back or renewed.
    pub copies: usize,
}

impl Peer {
    /// Changes `viewer`'s views of own image `image` (id or name) in the ledger, and sends
    /// the viewer the copy with the new count (directly when online, else by mailbox).
    pub async fn change(&self, image: &str, viewer: &str, change: Change) -> Result<Changed> {
        let own = self
            .library
            .records()
            .own
            .into_iter()
            .find(|o| o.id == image || o.name == image)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{} owns no image {image:?} (see `peer images`)",
                    self.user
                ))
            })?;
        let answer = self.grant(&own.id, viewer, change).await?;
        let delivered = match answer.copy {
            Some(copy) => {
                let to = Delivery {
                    viewer,
                    request: None,
                    image: &own.id,
                    name: &own.name,
                    views_left: answer.views_left,
                    version: answer.version,
                };
                self.deliver(to, copy).await
            }
            // A revoke: the viewer's letter says so when they next read their mailbox.
            None => false,
        };
        Ok(Changed {
            image: own.id,
            viewer: viewer.to_string(),
            views_left: answer.views_left,
            delivered,
        })
    }

    /// Each own image's receipts (views used and left per viewer, revoked ones included), as
    /// the ledger has them now: one signed question to the cloud.
    pub async fn receipts(&self) -> Result<Vec<OwnHolding>> {
        Ok(self.holdings().await?.own)
    }

    async fn holdings(&self) -> Result<Holdings> {
        match self.ask(Ask::Holdings).await? {
            Answer::Holdings(holdings) => Ok(holdings),
            _ => Err(Error::Protocol(
                "the cloud answered Holdings with something else".into(),
            )),
        }
    }

    async fn own_file(&self, image: ImageId) -> Result<Vec<u8>> {
        match self.ask(Ask::Own { image }).await? {
            Answer::File(bytes) => Ok(bytes),
            _ => Err(Error::Protocol(
                "the cloud answered Own with something else".into(),
            )),
        }
    }

    /// A fresh copy of `image` for this user: the copy, its views left and version.
    pub(super) async fn fresh_copy(&self, image: ImageId) -> Result<(Vec<u8>, u32, u64)> {
        match self.ask(Ask::Copy { image }).await? {
            Answer::Copy {
                copy,
                views_left,
                version,
            } => Ok((copy, views_left, version)),
            _ => Err(Error::Protocol(
                "the cloud answered Copy with something else".into(),
            )),
        }
    }

    /// Brings back from the cloud what the folder lacks: own encrypted images (with their
    /// originals and previews) and granted copies with the views the ledger has left.
    pub async fn rebuild(self: &Arc<Self>) -> Result<Rebuilt> {
        let holdings = self.holdings().await?;
        let records = self.library.records();
        let mut rebuilt = Rebuilt::default();
        for own in holdings.own {
            let file = self.library.own_file(&own.id);
            if records.own.iter().any(|o| o.id == own.id) && file.exists() {
                continue;
            }
            let image: ImageId = own.id.parse()?;
            let encrypted = self.own_file(image).await?;
            let op = UserOp::View {
                file: digest(&encrypted),
            };
            let shown = self
                .signed(op, |op| async {
                    let request = WithFile {
                        op,
                        file: encrypted.clone(),
                    };
                    self.cloud.view(&request, &self.credential).await
                })
                .await?;
            if shown.shown != Shown::Image {
                return Err(Error::Protocol(format!(
                    "the cloud did not show {} her own image {}",
                    self.user, own.id
                )));
            }
            let photo = crate::codec::stego::decode_image(&shown.image, "the hidden image")?;
            self.keep_own(&own.id, &own.name, &encrypted, &shown.image, &photo)?;
            rebuilt.own += 1;
        }
        for granted in holdings.granted {
            let held = records.copies.iter().find(|c| c.id == granted.id);
            let same = held.is_some_and(|c| {
                c.version == granted.version && c.views_left == granted.views_left
            });
            if same && self.library.copy_file(&granted.id).exists() {
                continue;
            }
            let image: ImageId = granted.id.parse()?;
            let (copy, views_left, version) = self.fresh_copy(image).await?;
            let (owner, name) = (&granted.owner, &granted.name);
            self.take_copy(owner, None, &granted.id, name, views_left, version, &copy)?;
            rebuilt.copies += 1;
        }
        if rebuilt.own + rebuilt.copies > 0 {
            self.say(format!(
                "[peer {}] rebuilt from the cloud: {} own image(s), {} copy(ies)",
                self.user, rebuilt.own, rebuilt.copies
            ));
        }
        Ok(rebuilt)
    }
}
