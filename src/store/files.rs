//! The files the cloud keeps beside the log: users' encrypted images, named by their SHA-256
//! (the ledger records the digest, so a file is trusted only when its bytes hash to it).
//!
//! ```text
//! desk: share ── keep(bytes) ──> this node's DATA/files/HEX   (fsync, rename)
//!                           └──> every other node: Request::Keep ── a majority holds it ──> Ok
//!        then the Share operation goes to the log, naming the digest
//! desk: copy, rebuild ── kept(digest) ──> here, or fetched from another node (and kept here)
//! ```
//!
//! Files are kept out of the Raft log on purpose: an encrypted image is megabytes, and a log
//! entry is replicated, snapshotted and replayed; a digest is 32 bytes.
//!
//! Implementation caveats: a file is never deleted (the ledger never forgets an image); what
//! one user may make the cloud keep is bounded by the ledger
//! ([`crate::sharing::ledger::MAX_KEPT_BYTES_PER_USER`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One node's kept files.
#[derive(Clone, Debug)]
pub(super) struct Files {
    dir: PathBuf,
}

impl Files {
    /// The files under `data_dir/files`.
    pub fn open(data_dir: &Path) -> Result<Files> {
        let dir = data_dir.join("files");
        std::fs::create_dir_all(&dir)?;
        Ok(Files { dir })
    }

    fn path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(hex::encode(digest))
    }

    /// Keeps `bytes` durably (written, synced, renamed into place); returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<[u8; 32]> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let path = self.path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(digest)
    }

    /// The file with `digest`, if this node has it intact (a damaged one is removed).
    pub fn get(&self, digest: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let path = self.path(digest);
        match std::fs::read(&path) {
            Ok(bytes) if Sha256::digest(&bytes).as_slice() == digest => Ok(Some(bytes)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "a kept file is damaged; removed");
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Storage(format!(
                "cannot read the kept file {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_comes_back_and_a_damaged_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path()).unwrap();
        let digest = files.put(b"an encrypted image").unwrap();
        assert_eq!(files.put(b"an encrypted image").unwrap(), digest);
        assert_eq!(files.get(&digest).unwrap().unwrap(), b"an encrypted image");
        assert_eq!(files.get(&[7; 32]).unwrap(), None);
        std::fs::write(files.path(&digest), b"bit rot").unwrap();
        assert_eq!(
            files.get(&digest).unwrap(),
            None,
            "a damaged file was served"
        );
    }
}
