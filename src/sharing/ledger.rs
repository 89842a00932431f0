//! The view ledger: every shared image with its owner, and each viewer's grant (views left,
//! views used, a grant version). It is the only authority on views: a copy's hidden count is
//! what the viewer was told, never what they may spend.
//!
//! ```text
//! Share   owner lists an image it sealed            images[id] = { owner, name, grants: {} }
//! Grant   owner changes a viewer's views:           Add(n): left += n (a new viewer starts at n)
//!                                                   Set(n): left = n
//!                                                   Revoke: left = 0, the grant marked
//!                                                   revoked (its history kept); a later
//!                                                   Add or Set makes them a viewer again
//! View    a viewer spends one view                  left > 0: left -= 1, used += 1 -> Viewed
//!                                                   else (none, revoked, zero) -> Default
//! ```
//!
//! Every change of a grant, and every view, bumps its version (for receipts and updates; a
//! copy does not carry it: the ledger alone decides). The ledger never grants a viewer more views than the owner gave
//! them: `used + left` is at most the sum of every `Add` and `Set` the owner made (the property
//! test in `tests/ledger.rs` checks it under any interleaving).
//!
//! Implementation caveats: at most [`MAX_IMAGES_PER_USER`] images per owner and
//! [`MAX_GRANTS_PER_IMAGE`] viewers per image, revoked viewers included (their receipts stay).
//! Adding `revoked` to [`Grant`] changed the store's row encoding (postcard): a data folder
//! written before it does not load (the store says which row it cannot read).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bodies::{GrantHolding, Holdings, OwnHolding, Receipt};
use crate::codec::metadata::ImageId;

/// The most images one user may share.
pub const MAX_IMAGES_PER_USER: usize = 256;
/// The most viewers one image may have.
pub const MAX_GRANTS_PER_IMAGE: usize = 1024;
/// The most views a grant may hold at once.
pub const MAX_VIEWS: u32 = 1_000_000;
/// The most bytes of encrypted images the cloud keeps for one user.
pub const MAX_KEPT_BYTES_PER_USER: u64 = 512 * 1024 * 1024;
/// The largest encrypted image the cloud keeps (it travels in one store frame).
pub const MAX_KEPT_FILE: u64 = 32 * 1024 * 1024;
/// The longest image name, in bytes.
pub const MAX_IMAGE_NAME: usize = 64;

/// What an owner does to a viewer's views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Adds this many views (a new viewer starts with them): an approval, or `allow`.
    Add(u32),
    /// Sets the views left to this (`quota`).
    Set(u32),
    /// Takes every view away; the viewer's receipt stays, marked revoked (`revoke`).
    Revoke,
}

/// One shared image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Its owner.
    pub owner: String,
    /// Its name (unique among the owner's images).
    pub name: String,
    /// SHA-256 of the owner's encrypted image, which the cloud keeps (for rebuilds and for
    /// copies made while the owner is offline).
    pub file: [u8; 32],
    /// That file's length in bytes.
    pub bytes: u64,
    /// Its viewers, by name.
    pub grants: BTreeMap<String, Grant>,
}

/// One viewer's permission to view one image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Views left.
    pub left: u32,
    /// Views spent so far.
    pub used: u64,
    /// Bumped by every change the owner makes and every view.
    pub version: u64,
    /// Revoked by the owner: no views, no copy; the receipt (views used) stays.
    pub revoked: bool,
}

impl ImageRecord {
    /// `viewer`'s grant, unless there is none or it was revoked.
    pub fn grant_of(&self, viewer: &str) -> Option<&Grant> {
        self.grants.get(viewer).filter(|g| !g.revoked)
    }
}

/// Every shared image, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The images.
    pub images: BTreeMap<ImageId, ImageRecord>,
}

/// The answer to a view, as the ledger decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spent {
    /// One view spent; this many are left.
    Viewed(u32),
    /// No view: the default image, for this reason.
    Default(String),
}

/// Checks an image name.
pub fn check_image_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > MAX_IMAGE_NAME || name.chars().any(char::is_control) {
        return Err(format!(
            "an image name must be 1 to {MAX_IMAGE_NAME} bytes of printable text (got {name:?})"
        ));
    }
    Ok(())
}

/// Checks what a change asks for.
pub fn check_change(change: Change) -> Result<(), String> {
    match change {
        Change::Add(0) => Err("add at least one view".into()),
        Change::Add(n) | Change::Set(n) if n > MAX_VIEWS => {
            Err(format!("at most {MAX_VIEWS} views may be given at once"))
        }
        _ => Ok(()),
    }
}

impl Ledger {
    /// The images `owner` shares, in id order.
    pub fn owned_by<'a>(
        &'a self,
        owner: &'a str,
    ) -> impl Iterator<Item = (&'a ImageId, &'a ImageRecord)> {
        self.images.iter().filter(move |(_, r)| r.owner == owner)
    }

    /// Lists `image` as `owner`'s, named `name`, kept as the file with digest `file` of
    /// `bytes` bytes.
    pub fn share(
        &mut self,
        owner: &str,
        image: ImageId,
        name: &str,
        (file, bytes): ([u8; 32], u64),
    ) -> Result<(), String> {
        check_image_name(name)?;
        if bytes > MAX_KEPT_FILE {
            return Err(format!(
                "the encrypted image is {bytes} bytes; the cloud keeps at most {MAX_KEPT_FILE}"
            ));
        }
        if let Some(record) = self.images.get(&image) {
            return Err(if record.owner == owner {
                format!("image {image} is already shared, as {:?}", record.name)
            } else {
                format!("image {image} belongs to another user")
            });
        }
        let (mut count, mut kept) = (0, bytes);
        for (_, record) in self.owned_by(owner) {
            kept += record.bytes;
            if record.name == name {
                return Err(format!(
                    "{owner} already shares an image named {name:?}; pick another name"
                ));
            }
            count += 1;
        }
        if count >= MAX_IMAGES_PER_USER {
            return Err(format!(
                "{owner} already shares {MAX_IMAGES_PER_USER} images, the most allowed"
            ));
        }
        if kept > MAX_KEPT_BYTES_PER_USER {
            return Err(format!(
                "the cloud would keep {kept} bytes of {owner}'s images; at most {MAX_KEPT_BYTES_PER_USER} are allowed"
            ));
        }
        self.images.insert(
            image,
            ImageRecord {
                owner: owner.to_string(),
                name: name.to_string(),
                file,
                bytes,
                grants: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Applies `owner`'s `change` to `viewer`'s grant of `image`; returns the grant as it is
    /// now (all zero after a revoke).
    pub fn grant(
        &mut self,
        owner: &str,
        image: &ImageId,
        viewer: &str,
        change: Change,
    ) -> Result<Grant, String> {
        check_change(change)?;
        let record = self
            .images
            .get_mut(image)
            .ok_or_else(|| format!("image {image} was never shared"))?;
        if record.owner != owner {
            return Err(format!("{owner} does not own image {image}"));
        }
        if viewer == owner {
            return Err("an owner views her own images freely; grant views to others".into());
        }
        if change == Change::Revoke {
            let grant = record
                .grants
                .get_mut(viewer)
                .filter(|g| !g.revoked)
                .ok_or_else(|| format!("{viewer} is not a viewer of {:?}", record.name))?;
            grant.left = 0;
            grant.revoked = true;
            grant.version += 1;
            return Ok(*grant);
        }
        if !record.grants.contains_key(viewer) && record.grants.len() >= MAX_GRANTS_PER_IMAGE {
            return Err(format!(
                "{:?} already has {MAX_GRANTS_PER_IMAGE} viewers, the most allowed",
                record.name
            ));
        }
        let grant = record.grants.entry(viewer.to_string()).or_default();
        let left = match change {
            Change::Add(n) => grant.left.saturating_add(n),
            Change::Set(n) => n,
            Change::Revoke => unreachable!("handled above"),
        };
        if left > MAX_VIEWS {
            return Err(format!(
                "{viewer} would have {left} views of {:?}; at most {MAX_VIEWS} are allowed",
                record.name
            ));
        }
        grant.left = left;
        grant.revoked = false;
        grant.version += 1;
        Ok(*grant)
    }

    /// Views spent over every grant of every image, revoked grants included.
    pub fn views_spent(&self) -> u64 {
        let grants = self.images.values().flat_map(|r| r.grants.values());
        grants.map(|g| g.used).sum()
    }

    /// What `user` owns (with every viewer's receipt) and was granted.
    pub fn holdings(&self, user: &str) -> Holdings {
        let mut holdings = Holdings::default();
        for (id, record) in &self.images {
            if record.owner == user {
                let viewers = record.grants.iter().map(|(viewer, g)| Receipt {
                    viewer: viewer.clone(),
                    views_used: g.used,
                    views_left: g.left,
                    revoked: g.revoked,
                });
                holdings.own.push(OwnHolding {
                    id: id.to_string(),
                    name: record.name.clone(),
                    viewers: viewers.collect(),
                });
            } else if let Some(grant) = record.grant_of(user) {
                holdings.granted.push(GrantHolding {
                    id: id.to_string(),
                    name: record.name.clone(),
                    owner: record.owner.clone(),
                    views_left: grant.left,
                    version: grant.version,
                });
            }
        }
        holdings
    }

    /// Spends one of `viewer`'s views of `image`, if any is left.
    pub fn view(&mut self, viewer: &str, image: &ImageId) -> Spent {
        let Some(record) = self.images.get_mut(image) else {
            return Spent::Default(format!(
                "image {image} was never shared through the cloud, so nobody may view it"
            ));
        };
        let Some(grant) = record.grants.get_mut(viewer).filter(|g| !g.revoked) else {
            return Spent::Default(format!(
                "{viewer} is not (or no longer) a viewer of {}'s {:?}",
                record.owner, record.name
            ));
        };
        if grant.left == 0 {
            return Spent::Default(format!(
                "{viewer} has no views left of {}'s {:?}",
                record.owner, record.name
            ));
        }
        grant.left -= 1;
        grant.used += 1;
        grant.version += 1;
        Spent::Viewed(grant.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_viewer_keeps_a_receipt_and_gets_no_view_until_allowed_again() {
        let mut ledger = Ledger::default();
        let image: ImageId = "00112233445566778899aabbccddeeff".parse().unwrap();
        ledger
            .share("alice", image, "sunset", ([7; 32], 100))
            .unwrap();
        ledger
            .grant("alice", &image, "bob", Change::Add(3))
            .unwrap();
        assert_eq!(ledger.view("bob", &image), Spent::Viewed(2));

        let revoked = ledger
            .grant("alice", &image, "bob", Change::Revoke)
            .unwrap();
        assert_eq!((revoked.left, revoked.used, revoked.revoked), (0, 1, true));
        assert!(
            matches!(ledger.view("bob", &image), Spent::Default(why) if why.contains("no longer"))
        );
        let receipts = &ledger.holdings("alice").own[0].viewers;
        let expected = Receipt {
            viewer: "bob".into(),
            views_used: 1,
            views_left: 0,
            revoked: true,
        };
        assert_eq!(receipts, &vec![expected]);
        assert!(
            ledger.holdings("bob").granted.is_empty(),
            "a revoked grant is held"
        );
        assert!(ledger
            .grant("alice", &image, "bob", Change::Revoke)
            .is_err());

        let again = ledger
            .grant("alice", &image, "bob", Change::Add(2))
            .unwrap();
        assert_eq!((again.left, again.used, again.revoked), (2, 1, false));
        assert!(again.version > revoked.version);
        assert_eq!(ledger.view("bob", &image), Spent::Viewed(1));
        assert_eq!(ledger.holdings("bob").granted[0].views_left, 1);
    }
}
