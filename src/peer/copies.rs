//! A copy's way to its viewer: the owner's grant through the cloud, the copy sent directly
//! (or left in the viewer's mailbox when they are away), and the viewer keeping it.

use super::actions::{digest, Peer};
use super::library::{write_atomic, CopyRecord, RequestState};
use super::p2p::{self, Msg};
use crate::codec::metadata::ImageId;
use crate::sharing::bodies::WithFile;
use crate::sharing::{Change, Posted, UserOp};
use crate::{Error, Result};

/// Where a copy goes, and what it says.
pub(super) struct Delivery<'a> {
    pub viewer: &'a str,
    pub request: Option<&'a str>,
    pub image: &'a str,
    pub name: &'a str,
    pub views_left: u32,
    pub version: u64,
}

impl Peer {
    /// Changes `viewer`'s views of own image `image` (its id) in the ledger, sending the
    /// owner's encrypted image for the cloud to seal the viewer's copy from.
    pub(super) async fn grant(
        &self,
        image: &str,
        viewer: &str,
        change: Change,
    ) -> Result<crate::sharing::bodies::GrantAnswer> {
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
}
