//! What a peer keeps in its folder: its own images (original, encrypted, preview), the copies
//! it received, and the requests in and out, indexed by `library.json` (rewritten whole, by
//! rename, after each change).
//!
//! ```text
//! DIR/library.json            the index below
//! DIR/own/ID.png              an own image, encrypted by the cloud (the cover with it inside)
//! DIR/own/ID.original.EXT     the original photo
//! DIR/own/ID.preview.png      its preview (longest side <= 128 px)
//! DIR/copies/ID.png           a received copy (sealed: only the cloud can open it)
//! DIR/previews/OWNER/...      previews fetched from other peers
//! DIR/views/...               what `view` wrote
//! ```
//!
//! Implementation caveats: one running peer owns the folder (the peer refuses to start
//! beside another); a crash between writing a file and the index leaves an unlisted file,
//! never a listed file that is missing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The index's file name.
const INDEX: &str = "library.json";

/// One of the user's own images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnImage {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The original's file name under `own/`.
    pub original: String,
    /// The preview's size.
    pub preview_size: (u32, u32),
}

/// A copy received from an owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Views left, as the cloud last said.
    pub views_left: u32,
    /// The grant's version the copy was made at.
    #[serde(default)]
    pub version: u64,
}

/// A request's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for the owner's decision.
    Pending,
    /// Approved; the copy is not yet with the viewer.
    Approved,
    /// Denied.
    Denied,
    /// Approved and the copy delivered.
    Delivered,
}

impl RequestState {
    /// The state's word, as `requests` prints it.
    pub fn word(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Delivered => "delivered",
        }
    }
}

/// A request for views, in either direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request's id.
    pub id: String,
    /// Who asks.
    pub from: String,
    /// The owner asked.
    pub to: String,
    /// The image's id.
    pub image: String,
    /// The image's name, when known.
    pub name: String,
    /// Views asked for (or granted, once approved).
    pub views: u32,
    /// Its state.
    pub state: RequestState,
    /// Views left that the copy says, once the cloud granted them.
    #[serde(default)]
    pub views_left: Option<u32>,
}

/// The index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Own images.
    pub own: Vec<OwnImage>,
    /// Received copies.
    pub copies: Vec<CopyRecord>,
    /// Requests in and out.
    pub requests: Vec<RequestRecord>,
    /// The number of the last mailbox letter applied (see [`super::mail`]).
    #[serde(default)]
    pub last_letter: u64,
}

/// A folder's library.
pub struct Library {
    root: PathBuf,
    records: std::sync::Mutex<Records>,
    /// Counts saves, so a page can follow the library live ([`Library::changes`]).
    changed: tokio::sync::watch::Sender<u64>,
}

impl Library {
    /// Opens the library in `root` (an empty one if there is none yet).
    pub fn open(root: &Path) -> Result<Library> {
        for dir in ["own", "copies", "previews", "views"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let path = root.join(INDEX);
        let records = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::Config(format!(
                    "{} is damaged ({e}); move it away to start with an empty library",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Records::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(Library {
            root: root.to_path_buf(),
            records: std::sync::Mutex::new(records),
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Follows the library: the value goes up on every save.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The records as they are now.
    pub fn records(&self) -> Records {
        self.records.lock().expect("library lock").clone()
    }

    /// Changes the records with `f` and saves them; returns what `f` returned.
    pub fn update<T>(&self, f: impl FnOnce(&mut Records) -> T) -> Result<T> {
        let mut records = self.records.lock().expect("library lock");
        let out = f(&mut records);
        let text = serde_json::to_string_pretty(&*records).expect("records serialize");
        write_atomic(&self.root.join(INDEX), text.as_bytes())?;
        self.changed.send_modify(|n| *n += 1);
        Ok(out)
    }

    /// The encrypted file of own image `id`.
    pub fn own_file(&self, id: &str) -> PathBuf {
        self.root.join("own").join(format!("{id}.png"))
    }

    /// The preview of own image `id`.
    pub fn preview_file(&self, id: &str) -> PathBuf {
        self.root.join("own").join(format!("{id}.preview.png"))
    }

    /// The preview of `owner`'s image `id` that `previews` saved, if any.
    pub fn peer_preview(&self, owner: &str, id: &str) -> Option<PathBuf> {
        let short = format!("-{}.png", id.get(..8)?);
        let dir = self.root.join("previews").join(file_safe(owner));
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&short))
    }

    /// The copy of image `id`.
    pub fn copy_file(&self, id: &str) -> PathBuf {
        self.root.join("copies").join(format!("{id}.png"))
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}

/// A name made safe as a file name (letters, digits, '.', '-', '_'; others become '_').
pub fn file_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.').to_string();
    if safe.is_empty() {
        "image".into()
    } else {
        safe
    }
}
