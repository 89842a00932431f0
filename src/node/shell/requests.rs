//! A request's way through the node loop: its payload held (within the budget), its job
//! served, its result kept until the core's verdict, and its reply written once the commit
//! that goes with it is on the members' sockets.

use super::*;

impl Shell {
    /// Holds a copy forwarded by node `origin` if the payload budget has room for it; if not,
    /// and this node is chosen, it declines and another serves it.
    pub(super) fn hold_forwarded(
        &mut self,
        request: EncryptRequest,
        origin: NodeId,
    ) -> Vec<Output> {
        if self.held.contains_key(&request.id) {
            return self.hold(request, ReplyTo::Origin(origin), None);
        }
        match self.budget.try_take(request.payload_len()) {
            Some(share) => self.hold(request, ReplyTo::Origin(origin), Some(share)),
            None => {
                debug!(node = self.id(), request = %request.id, "over the payload budget: a forwarded copy is not held");
                Vec::new()
            }
        }
    }

    /// Keeps a request's payload and tells the core it arrived.
    pub(super) fn hold(
        &mut self,
        request: EncryptRequest,
        reply_to: ReplyTo,
        share: Option<Share>,
    ) -> Vec<Output> {
        if let Some(held) = self.held.get_mut(&request.id) {
            // A client that reconnected sent it again: answer on the connection that is open.
            if let (ReplyTo::Client(old), ReplyTo::Client(_)) = (&held.reply_to, &reply_to) {
                if old.is_closed() {
                    held.reply_to = reply_to;
                }
            }
            // Sent again after the connection to another node closed: remembered for the
            // request's commit, which may name that node (see `Output::Forget`).
            if let Some(held) = &mut held.request {
                if !request.resent_after.is_empty() {
                    held.resent_after = request.resent_after;
                }
            }
            return Vec::new();
        }
        let id = request.id.clone();
        self.held.insert(
            id.clone(),
            Held {
                request: Some(request),
                reply_to,
                _share: share,
            },
        );
        self.core.request_arrived(self.now(), &id)
    }

    /// Serves a request whose reply was lost (`why`, see [`Node::answers_again`]): the log
    /// already names its server, so the reply needs no claim.
    pub(super) fn serve_again(
        &mut self,
        request: EncryptRequest,
        client: mpsc::Sender<EncryptReply>,
        why: &str,
    ) {
        let (me, id) = (self.id(), request.id.clone());
        info!(node = me, request = %id, "[Node {me}] serving {id} again: {why}");
        self.serve_directly(request, client);
    }

    /// Serves `request` and answers `client` as soon as the job is done, with no claim
    /// ([`Shell::finish`] sends the reply of a request in `again` at once).
    pub(super) fn serve_directly(
        &mut self,
        request: EncryptRequest,
        client: mpsc::Sender<EncryptReply>,
    ) {
        let id = request.id.clone();
        self.again.insert(id.clone(), client);
        self.held.insert(
            id.clone(),
            Held {
                request: Some(request),
                reply_to: ReplyTo::Origin(self.id()),
                _share: None,
            },
        );
        self.serve(id);
    }

    /// A job finished: keep the result and tell the core, which claims the request.
    pub(super) fn finish(&mut self, now: Millis, reply: EncryptReply) -> Vec<Output> {
        if self.core.silent() {
            return Vec::new();
        }
        if let Some(client) = self.again.remove(&reply.id) {
            // The only reply this request gets: waited for like any committed reply.
            self.held.remove(&reply.id);
            send_committed(client, reply);
            return Vec::new();
        }
        let Some(held) = self.held.remove(&reply.id) else {
            // Someone else served it meanwhile (after a reassignment): stay silent.
            return Vec::new();
        };
        let id = reply.id.clone();
        self.results.insert(
            id.clone(),
            Finished {
                reply,
                reply_to: held.reply_to,
            },
        );
        self.core.job_finished(now, &id)
    }

    /// A majority holds this node as the winner of `id`: answer once the commit is written.
    pub(super) fn reply(&mut self, id: &str) {
        match self.results.remove(id) {
            Some(finished) => self.ready.push(finished),
            None => warn!(node = self.id(), request = %id, "told to reply without a result"),
        }
    }

    /// Sends the replies of the last flush once every link has written what was queued
    /// before them (the commits): a reply never reaches a client before its commit reaches
    /// the members' sockets.
    pub(super) fn release_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let me = self.id();
        let epoch = self.core.epoch();
        // Only the links to members heard from: a silent member is dead (its votes died with it)
        // or cut off (its link is blocked, and it releases nothing without a close).
        let barrier_links: Vec<LinkHandle> = self
            .core
            .live_members(self.now())
            .iter()
            .filter_map(|member| self.links.get(member).cloned())
            .collect();
        let mut deliveries = Vec::new();
        for Finished { reply, reply_to } in std::mem::take(&mut self.ready) {
            let to = match reply_to {
                ReplyTo::Client(client) => Delivery::Client(client),
                ReplyTo::Origin(origin) if origin == me => {
                    match self.http_waiters.remove(&reply.id) {
                        Some(waiter) => Delivery::Http(waiter),
                        None => continue,
                    }
                }
                ReplyTo::Origin(origin) => match self.data_links.get(&origin) {
                    Some(link) => Delivery::Member(link.clone()),
                    None => continue,
                },
            };
            deliveries.push((reply, to));
        }
        tokio::spawn(async move {
            let written = async {
                for link in barrier_links {
                    // A full queue is waited for (within the bound below): a barrier that
                    // could not be queued would let the replies overtake their commits.
                    if let Some(barrier) = link.barrier(BARRIER_WAIT).await {
                        // Err: the link is down, and the member has seen the connection close.
                        let _ = barrier.await;
                    }
                }
            };
            if timeout(BARRIER_WAIT, written).await.is_err() {
                debug!(
                    node = me,
                    "a link did not write within {BARRIER_WAIT:?}; replying anyway"
                );
            }
            for (reply, to) in deliveries {
                match to {
                    Delivery::Client(client) => send_committed(client, reply),
                    Delivery::Http(waiter) => {
                        let _ = waiter.send(reply);
                    }
                    Delivery::Member(link) => {
                        let envelope = Envelope::new(me, epoch, Message::Reply(Box::new(reply)));
                        tokio::spawn(async move {
                            if timeout(COMMITTED_REPLY_WAIT, link.send_waiting(envelope))
                                .await
                                .is_err()
                            {
                                warn!("a committed reply for a member was dropped: its link took more than {COMMITTED_REPLY_WAIT:?}");
                            }
                        });
                    }
                }
            }
        });
    }

    /// Starts the encryption job of a held request.
    pub(super) fn serve(&mut self, id: RequestId) {
        let Some(request) = self.held.get_mut(&id).and_then(|h| h.request.take()) else {
            warn!(node = self.id(), request = %id, "asked to serve a request whose payload is gone");
            return;
        };
        let (pool, inputs, me) = (Arc::clone(&self.pool), self.inputs.clone(), self.id());
        tokio::spawn(async move {
            let outcome = pool.encrypt(request).await;
            let _ = inputs
                .send(Input::Done(EncryptReply {
                    id,
                    served_by: me,
                    outcome,
                }))
                .await;
        });
    }
}
