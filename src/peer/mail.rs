//! The user's mailbox in the cloud ([`crate::sharing::mailbox`]): read when the peer starts
//! (after rebuilding a folder that starts empty) and every [`MAIL_EVERY`] after, each new letter applied to the folder, then all of them
//! acknowledged.
//!
//! ```text
//! Ask::Mail ──> [(n, letter)] ── n > last_letter? ── apply ── library: last_letter = n
//!                                                   └─ Ack { upto: highest n } ──> cloud
//! ```
//!
//! Exactly once in effect: a letter is applied before it is acknowledged, and every letter's
//! effect is idempotent (a request is known by its id, a copy already held at the same
//! version is not fetched again), so a crash between applying and acknowledging, or a read repeated on another node,
//! applies nothing twice; `last_letter` saves even the repeated work.
//!
//! Implementation caveats: a letter the folder cannot take (a request for an image this
//! folder no longer has) is skipped with a warning, so it cannot block the letters behind
//! it; one the cloud cannot serve now (no majority) stops the reading until the next round.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::actions::Peer;
use crate::sharing::bodies::Answer;
use crate::sharing::{Ask, Letter, Posted, UserOp};
use crate::{Error, Result};

/// How often a running peer reads its mailbox.
pub const MAIL_EVERY: Duration = Duration::from_secs(2);

impl Peer {
    /// Rebuilds a folder that starts empty (it may be a lost one), then reads the mailbox at
    /// once and every [`MAIL_EVERY`], for as long as the peer runs.
    pub async fn follow_mail(self: &Arc<Self>) {
        let records = self.library.records();
        if records.own.is_empty() && records.copies.is_empty() && records.last_letter == 0 {
            if let Err(e) = self.rebuild().await {
                warn!("[peer {}] could not rebuild the folder: {e}", self.user);
            }
        }
        let mut every = tokio::time::interval(MAIL_EVERY);
        loop {
            every.tick().await;
            if let Err(e) = self.read_mail().await {
                warn!("[peer {}] could not read the mailbox: {e}", self.user);
            }
        }
    }

    /// Asks the cloud about this user's own records.
    pub(super) async fn ask(&self, ask: Ask) -> Result<Answer> {
        self.cloud.query(&self.credential.query(ask)).await
    }

    /// Applies the letters not applied yet and acknowledges every letter read; how many
    /// were applied.
    pub async fn read_mail(self: &Arc<Self>) -> Result<usize> {
        let _one = self.reading.lock().await;
        let Answer::Mail(letters) = self.ask(Ask::Mail).await? else {
            return Err(Error::Protocol(
                "the cloud answered Mail with something else".into(),
            ));
        };
        let Some(&(upto, _)) = letters.last() else {
            return Ok(0);
        };
        let applied = self.apply_letters(letters).await?;
        let ack = UserOp::Ack { upto };
        self.signed(ack, |op| async move { self.cloud.submit(&op).await })
            .await?;
        Ok(applied)
    }

    /// Applies, in order, the letters numbered above the folder's `last_letter`; how many.
    async fn apply_letters(self: &Arc<Self>, letters: Vec<(u64, Letter)>) -> Result<usize> {
        let mut applied = 0;
        for (n, letter) in letters {
            if n <= self.library.records().last_letter {
                continue;
            }
            match self.apply_letter(letter).await {
                Ok(()) => applied += 1,
                Err(e @ Error::InvalidInput(_)) => {
                    warn!("[peer {}] skipped letter {n}: {e}", self.user)
                }
                Err(e) => return Err(e),
            }
            self.library
                .update(|r| r.last_letter = r.last_letter.max(n))?;
        }
        Ok(applied)
    }

    /// What one letter does to the folder (idempotent: see the module docs).
    async fn apply_letter(self: &Arc<Self>, letter: Letter) -> Result<()> {
        match letter {
            Letter::Posted {
                from,
                posted: Posted::Request { id, image, views },
            } => self
                .take_request(&from, &id, &image.to_string(), views)
                .map(drop),
            Letter::Posted {
                from,
                posted: Posted::Denied { id },
            } => self.take_denied(&from, &id),
            Letter::Grant {
                owner,
                image,
                name,
                views_left,
                version,
            } => {
                let id = image.to_string();
                let held = self
                    .library
                    .records()
                    .copies
                    .into_iter()
                    .find(|c| c.id == id);
                // Already taken (the owner sent it directly, or this letter was applied
                // before a crash). Equality, not order: a revoke restarts the versions.
                if held.is_some_and(|c| c.version == version && c.views_left == views_left) {
                    return Ok(());
                }
                if views_left == 0 {
                    // Revoked (or set to zero): the copy, if any, now shows the default image.
                    return self.library.update(|r| {
                        if let Some(copy) = r.copies.iter_mut().find(|c| c.id == id) {
                            copy.views_left = 0;
                            copy.version = version;
                        }
                    });
                }
                // The copy as the ledger has it now (a view since the letter counts).
                let (copy, views_left, version) = self.fresh_copy(image).await?;
                self.take_copy(&owner, None, &id, &name, views_left, version, &copy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::metadata::ImageId;
    use crate::config::ClusterConfig;
    use crate::peer::cloud::Cloud;
    use crate::peer::library::{CopyRecord, Library, OwnImage, RequestState};
    use crate::peer::Approve;
    use crate::sharing::Credential;

    fn peer(root: &std::path::Path, credential: &Credential) -> Arc<Peer> {
        let cluster = ClusterConfig::default();
        let library = Library::open(root).unwrap();
        let cloud = Cloud::new(&cluster);
        let token = String::new();
        Arc::new(Peer::new(
            credential.clone(),
            token,
            cloud,
            cluster,
            library,
            Approve::Ask,
        ))
    }

    #[tokio::test]
    async fn letters_take_effect_once_across_a_crash_and_a_repeated_read() {
        let dir = tempfile::tempdir().unwrap();
        let alice = Credential::derive("alice", "pw").unwrap();
        let (own, copy) = (ImageId([1; 16]), ImageId([2; 16]));
        let first = peer(dir.path(), &alice);
        first
            .library
            .update(|r| {
                r.own.push(OwnImage {
                    id: own.to_string(),
                    name: "cat".into(),
                    original: "x".into(),
                    preview_size: (1, 1),
                });
                r.copies.push(CopyRecord {
                    id: copy.to_string(),
                    name: "dog".into(),
                    owner: "carol".into(),
                    views_left: 4,
                    version: 3,
                });
            })
            .unwrap();
        let letters = vec![
            (
                5,
                Letter::Posted {
                    from: "bob".into(),
                    posted: Posted::Request {
                        id: "r1".into(),
                        image: own,
                        views: 2,
                    },
                },
            ),
            (
                6,
                Letter::Posted {
                    from: "carol".into(),
                    posted: Posted::Request {
                        id: "r2".into(),
                        image: ImageId([3; 16]),
                        views: 1,
                    },
                },
            ),
            (
                7,
                Letter::Grant {
                    owner: "carol".into(),
                    image: copy,
                    name: "dog".into(),
                    views_left: 0,
                    version: 0,
                },
            ),
        ];
        // The first letter takes effect, and the process dies before its number is saved.
        assert_eq!(first.apply_letters(letters[..1].to_vec()).await.unwrap(), 1);
        first.library.update(|r| r.last_letter = 0).unwrap();
        drop(first);
        // The restarted peer reads every letter again (nothing was acknowledged).
        let second = peer(dir.path(), &alice);
        assert_eq!(
            second.apply_letters(letters.clone()).await.unwrap(),
            2,
            "r2 is skipped"
        );
        let records = second.library.records();
        let requests: Vec<_> = records
            .requests
            .iter()
            .map(|q| (q.id.as_str(), q.state))
            .collect();
        assert_eq!(
            requests,
            vec![("r1", RequestState::Pending)],
            "one request, once"
        );
        assert_eq!(
            records.copies[0].views_left, 0,
            "the revoke reached the copy"
        );
        assert_eq!(records.last_letter, 7);
        // The acknowledgement was lost too: the same letters are read a third time.
        assert_eq!(second.apply_letters(letters).await.unwrap(), 0);
        assert_eq!(
            second.library.records(),
            records,
            "a repeated read changed the folder"
        );
    }
}
