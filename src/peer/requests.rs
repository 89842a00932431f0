//! Requests for views: asking an owner, an owner taking a request in, and deciding it (approve
//! through the cloud's ledger, or deny), one decision per request at a time.

use tracing::{info, warn};

use super::actions::{check_views, Peer};
use super::copies::Delivery;
use super::library::{RequestRecord, RequestState};
use super::p2p::{Msg, RequestAnswer};
use super::Approve;
use crate::codec::metadata::ImageId;
use crate::sharing::{Change, Posted};
use crate::{Error, Result};

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

impl Peer {
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

    fn forget_request(&self, id: &str) -> Result<()> {
        self.library
            .update(|r| r.requests.retain(|q| !(q.id == id && q.from == self.user)))
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
