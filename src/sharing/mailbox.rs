//! Mailboxes: per user, what waits for them while they may be offline. A letter stays until
//! its addressee acknowledges it, and lives in the replicated store with the rest of the
//! records, so it survives a restart of the whole cloud.
//!
//! ```text
//! bob   Post { to: alice, Request }  ──> alice's mailbox   (alice offline: bob's request waits)
//! alice Post { to: bob, Denied }     ──> bob's mailbox
//! alice Grant (approve, allow, quota, revoke) ──> bob's mailbox: Grant { views_left, version }
//!                                              (the state machine posts it; a newer one for
//!                                              the same image replaces the older)
//! peer  reads its letters, applies each (idempotently), then Ack { upto } ──> removed
//! ```
//!
//! Delivery is exactly once in effect: a letter is applied by its peer before it is
//! acknowledged, and applying one twice (a crash between the two, a retried read) changes
//! nothing more (requests are known by id, a grant carries its version).
//!
//! Implementation caveats: users post at most [`MAX_POSTED`] letters into one mailbox (the
//! cloud's own grant letters are at most one per image the addressee was granted).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::metadata::ImageId;

/// The most letters from users one mailbox holds.
pub const MAX_POSTED: usize = 256;
/// The longest request id, in bytes.
pub const MAX_REQUEST_ID: usize = 64;

/// What a user may post to another user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Posted {
    /// Asks the addressee (the owner) for `views` views of `image`.
    Request {
        /// The asker's id for the request.
        id: String,
        /// The image.
        image: ImageId,
        /// Views asked for.
        views: u32,
    },
    /// The owner denied the addressee's request `id`.
    Denied {
        /// The request.
        id: String,
    },
}

/// A letter in a mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Letter {
    /// From another user, who signed it.
    Posted {
        /// Who posted it.
        from: String,
        /// What they posted.
        posted: Posted,
    },
    /// The addressee's grant of `image` changed (an approval, `allow`, `quota`, `revoke`).
    Grant {
        /// The image's owner.
        owner: String,
        /// The image.
        image: ImageId,
        /// Its name.
        name: String,
        /// Views left now (0 after a revoke).
        views_left: u32,
        /// The grant's version now (a revoke's letter has no grant: 0).
        version: u64,
    },
}

/// One user's mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The number the next letter gets (numbers only grow).
    pub next: u64,
    /// The letters not yet acknowledged, by number.
    pub letters: BTreeMap<u64, Letter>,
}

impl Mailbox {
    /// Adds a letter from a user, unless the mailbox holds [`MAX_POSTED`] of them.
    pub fn post(&mut self, from: &str, posted: Posted, to: &str) -> Result<u64, String> {
        let posted_count = self
            .letters
            .values()
            .filter(|l| matches!(l, Letter::Posted { .. }))
            .count();
        if posted_count >= MAX_POSTED {
            return Err(format!(
                "{to}'s mailbox holds {MAX_POSTED} letters, the most allowed; try when {to} is back online"
            ));
        }
        Ok(self.add(Letter::Posted {
            from: from.to_string(),
            posted,
        }))
    }

    /// Adds a grant letter, replacing an older one for the same image.
    pub fn grant(&mut self, letter: Letter) -> u64 {
        if let Letter::Grant { image, .. } = &letter {
            self.letters
                .retain(|_, l| !matches!(l, Letter::Grant { image: i, .. } if i == image));
        }
        self.add(letter)
    }

    /// Removes every letter numbered `upto` or lower.
    pub fn ack(&mut self, upto: u64) {
        self.letters.retain(|n, _| *n > upto);
    }

    fn add(&mut self, letter: Letter) -> u64 {
        self.next += 1;
        self.letters.insert(self.next, letter);
        self.next
    }
}

/// Checks what a user posts, whatever the records say.
pub fn check_posted(posted: &Posted) -> Result<(), String> {
    let id = match posted {
        Posted::Request { id, views, .. } => {
            super::ledger::check_change(super::Change::Add(*views))?;
            id
        }
        Posted::Denied { id } => id,
    };
    if id.is_empty() || id.len() > MAX_REQUEST_ID || !id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "a request id is 1 to {MAX_REQUEST_ID} letters and digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(image: ImageId, views_left: u32, version: u64) -> Letter {
        Letter::Grant {
            owner: "alice".into(),
            image,
            name: "cat".into(),
            views_left,
            version,
        }
    }

    #[test]
    fn a_newer_grant_replaces_the_older_and_acks_remove_up_to_a_number() {
        let (a, b) = (ImageId([1; 16]), ImageId([2; 16]));
        let mut mailbox = Mailbox::default();
        assert_eq!(mailbox.grant(grant(a, 3, 1)), 1);
        assert_eq!(mailbox.grant(grant(b, 1, 1)), 2);
        assert_eq!(mailbox.grant(grant(a, 5, 2)), 3);
        let kept: Vec<_> = mailbox.letters.keys().copied().collect();
        assert_eq!(kept, vec![2, 3], "the older letter for image a is gone");
        mailbox.ack(2);
        assert_eq!(mailbox.letters.keys().copied().collect::<Vec<_>>(), vec![3]);
        mailbox.ack(2);
        assert_eq!(mailbox.letters.len(), 1, "a repeated ack changes nothing");
        assert_eq!(mailbox.grant(grant(b, 0, 0)), 4, "numbers never repeat");
    }

    #[test]
    fn users_fill_a_mailbox_only_up_to_its_limit() {
        let mut mailbox = Mailbox::default();
        for n in 0..MAX_POSTED {
            let posted = Posted::Denied {
                id: format!("r{n}"),
            };
            mailbox.post("bob", posted, "alice").unwrap();
        }
        let full = mailbox.post("bob", Posted::Denied { id: "x".into() }, "alice");
        assert!(full.unwrap_err().contains("mailbox holds"));
        mailbox.grant(grant(ImageId([1; 16]), 1, 1));
        assert_eq!(
            mailbox.letters.len(),
            MAX_POSTED + 1,
            "grant letters still arrive"
        );
        assert!(check_posted(&Posted::Denied { id: "../x".into() }).is_err());
        assert!(check_posted(&Posted::Denied { id: "ab12".into() }).is_ok());
    }
}
