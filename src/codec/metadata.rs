//! Access metadata hidden next to the secret: who owns the image, who may view it and how
//! many times, which image it is, and the format version it was written with.
//!
//! [`ImageMeta::new`] is the only way user input becomes metadata: it checks that the owner is
//! present, that every name is short and printable, that no viewer appears twice and that the
//! list is of a sane length. The values are plain data with serde derives; the codec encodes
//! them with postcard inside the sealed payload, so nothing here is ever visible in the clear.
//!
//! Implementation caveats: names are compared byte for byte (no Unicode normalisation or case
//! folding), and a viewer may carry a quota of zero (phase 2 treats that as "no views left").

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the hidden payload layout and metadata encoding written by this build.
pub const FORMAT_VERSION: u16 = 1;

/// Longest owner or viewer name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Largest number of viewers one image may list.
pub const MAX_VIEWERS: usize = 256;

/// A user allowed to view an image, with the number of views left.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Viewer {
    /// The viewer's user name.
    pub name: String,
    /// How many more times the viewer may see the image.
    pub quota: u32,
}

impl FromStr for Viewer {
    type Err = Error;

    /// Parses `name=quota`, e.g. `bob=5`.
    fn from_str(s: &str) -> Result<Viewer> {
        let (name, quota) = s.split_once('=').ok_or_else(|| {
            Error::InvalidInput(format!(
                "viewer \"{s}\" must be written name=quota, e.g. bob=5"
            ))
        })?;
        let quota = quota.trim().parse::<u32>().map_err(|_| {
            Error::InvalidInput(format!(
                "viewer \"{s}\": the quota \"{quota}\" is not a whole number from 0 to {}",
                u32::MAX
            ))
        })?;
        let name = name.trim().to_string();
        check_name("viewer", &name)?;
        Ok(Viewer { name, quota })
    }
}

impl fmt::Display for Viewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.quota)
    }
}

/// A random 128-bit identifier of one encrypted image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImageId(pub [u8; 16]);

impl ImageId {
    /// Draws a fresh identifier from the operating system's random source.
    pub fn random() -> ImageId {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        ImageId(id)
    }
}

impl FromStr for ImageId {
    type Err = Error;

    /// Parses the 32 hex digits [`ImageId`]'s `Display` writes.
    fn from_str(s: &str) -> Result<ImageId> {
        hex::decode(s)
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(ImageId)
            .ok_or_else(|| Error::InvalidInput(format!("{s:?} is not an image id (32 hex digits)")))
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Everything hidden next to the secret image besides the image itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// Payload format version ([`FORMAT_VERSION`] when written by this build).
    pub version: u16,
    /// Identifier of this encrypted image.
    pub image_id: ImageId,
    /// The user who owns the image.
    pub owner: String,
    /// The users allowed to view it, each with a view quota.
    pub viewers: Vec<Viewer>,
}

impl ImageMeta {
    /// Checks the owner and viewers and builds metadata with a fresh random image id.
    pub fn new(owner: impl Into<String>, viewers: Vec<Viewer>) -> Result<ImageMeta> {
        let meta = ImageMeta {
            version: FORMAT_VERSION,
            image_id: ImageId::random(),
            owner: owner.into().trim().to_string(),
            viewers,
        };
        meta.validate()?;
        Ok(meta)
    }

    /// Checks the rules [`ImageMeta::new`] enforces, for metadata built by other means.
    pub fn validate(&self) -> Result<()> {
        check_name("owner", &self.owner)?;
        if self.viewers.len() > MAX_VIEWERS {
            return Err(Error::InvalidInput(format!(
                "{} viewers given; at most {MAX_VIEWERS} are allowed",
                self.viewers.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for viewer in &self.viewers {
            check_name("viewer", &viewer.name)?;
            if !seen.insert(viewer.name.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "viewer \"{}\" is listed twice; give each viewer once with one quota",
                    viewer.name
                )));
            }
        }
        Ok(())
    }
}

/// Rejects empty, over-long, or non-printable user names.
fn check_name(role: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidInput(format!("the {role} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidInput(format!(
            "the {role} name is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if name.chars().any(|c| c.is_control() || c == '=') {
        return Err(Error::InvalidInput(format!(
            "the {role} name \"{}\" contains a control character or '='",
            name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_parses_and_displays() {
        let v: Viewer = "bob=5".parse().unwrap();
        assert_eq!(
            v,
            Viewer {
                name: "bob".into(),
                quota: 5
            }
        );
        assert_eq!(v.to_string(), "bob=5");
    }

    #[test]
    fn viewer_errors_are_sentences() {
        let e = "bob".parse::<Viewer>().unwrap_err().to_string();
        assert!(e.contains("name=quota"), "{e}");
        let e = "bob=-1".parse::<Viewer>().unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        assert!("=3".parse::<Viewer>().is_err());
    }

    #[test]
    fn meta_rejects_bad_input() {
        assert!(ImageMeta::new("", vec![]).is_err());
        assert!(ImageMeta::new("x".repeat(65), vec![]).is_err());
        let dup = vec!["bob=1".parse().unwrap(), "bob=2".parse().unwrap()];
        let e = ImageMeta::new("alice", dup).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let ok = ImageMeta::new("alice", vec!["bob=1".parse().unwrap()]).unwrap();
        assert_eq!(ok.version, FORMAT_VERSION);
        assert_eq!(ok.image_id.to_string().len(), 32);
    }
}
