//! A user's peer folder: what the running peer leaves there so that the user's subcommands
//! (and the gallery's login link) can find it.
//!
//! `peer.json` names the running peer's address, its process id and the login token; it is
//! written (mode 0600) when the peer is registered and removed when it stops cleanly. A
//! subcommand reads it and talks to that address with the token.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The file that names the running peer.
const RUNNING_FILE: &str = "peer.json";

/// What a running peer writes into its folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Whose peer it is.
    pub user: String,
    /// Its HTTP port (P2P API, gallery, local control).
    pub addr: SocketAddr,
    /// The login token of its gallery and local API.
    pub token: String,
    /// Its process id.
    pub pid: u32,
}

impl Running {
    /// The gallery's login URL.
    pub fn gallery_url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.token)
    }
}

/// A user's peer folder.
#[derive(Clone, Debug)]
pub struct Folder {
    user: String,
    root: PathBuf,
}

impl Folder {
    /// The folder of `user`: `dir`, or `imgcloud-peers/USER` under the working directory.
    pub fn new(user: &str, dir: Option<PathBuf>) -> Folder {
        Folder {
            user: user.to_string(),
            root: dir.unwrap_or_else(|| PathBuf::from("imgcloud-peers").join(user)),
        }
    }

    /// The folder's path.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Creates the folder if it is missing.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| {
            Error::Config(format!(
                "cannot create {}'s folder {}: {e}",
                self.user,
                self.root.display()
            ))
        })
    }

    /// The running peer, as its file says (it may have died without removing it). The caller,
    /// which knows the flags given, says how to start it.
    pub fn running(&self) -> Result<Running> {
        let path = self.root.join(RUNNING_FILE);
        let not_running = || {
            Error::Unavailable(format!(
                "{}'s peer is not running (no {})",
                self.user,
                path.display()
            ))
        };
        let text = std::fs::read_to_string(&path).map_err(|_| not_running())?;
        let running: Running = serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!("{} is damaged ({e}); delete it", path.display()))
        })?;
        if running.user != self.user {
            return Err(Error::Config(format!(
                "{} belongs to {}'s peer, not {}'s: give each user their own --dir",
                path.display(),
                running.user,
                self.user
            )));
        }
        Ok(running)
    }

    /// Records the running peer (readable by its owner only).
    pub fn set_running(&self, running: &Running) -> Result<()> {
        let path = self.root.join(RUNNING_FILE);
        let text = serde_json::to_string_pretty(running).expect("a running record serializes");
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&tmp)?, text.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Forgets the running peer (on a clean stop).
    pub fn clear_running(&self) {
        let _ = std::fs::remove_file(self.root.join(RUNNING_FILE));
    }
}
