//! The story's users: starting, stopping and killing their peer processes, and rebuilding a
//! user's folder from the password alone.

use super::*;

impl Story<'_> {
    /// Starts `user`'s peer and waits until it answers as that user.
    pub(super) async fn start(&mut self, user: &'static str) -> Result<Running> {
        let dir = self.cast.dir.join("users").join(user);
        let log = self.cast.dir.join(format!("peer-{user}.log"));
        let password = password(user);
        let peer = LocalPeer::start(
            self.cast.program,
            self.cast.prefix_args,
            user,
            &dir,
            &self.users_config,
            &password,
            &log,
        )?;
        let pid = peer.pid();
        self.peers.insert(user, peer);
        let deadline = Instant::now() + ONLINE_WAIT;
        loop {
            if let Ok(running) = Folder::new(user, Some(dir.clone())).running() {
                if Some(running.pid) == pid
                    && local_get::<serde_json::Value>(&running, "/api/whoami")
                        .await
                        .is_ok()
                {
                    return Ok(running);
                }
            }
            if self.peers.get_mut(user).is_none_or(LocalPeer::exited) {
                return Err(failed(format!(
                    "{user}'s peer exited; see {}",
                    log.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "{user}'s peer did not come online within {} s; see {}",
                    ONLINE_WAIT.as_secs(),
                    log.display()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops `user`'s peer cleanly (it unregisters: offline at once).
    pub(super) fn stop(&mut self, user: &str) {
        if let Some(mut peer) = self.peers.remove(user) {
            peer.stop();
        }
    }

    /// Kills `user`'s peer and deletes their folder; the folder's path.
    pub(super) fn kill_and_forget(&mut self, user: &str) -> Result<PathBuf> {
        let dir = self.cast.dir.join("users").join(user);
        if let Some(mut peer) = self.peers.remove(user) {
            peer.kill();
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(dir)
    }

    /// Runs `peer --user USER rebuild --json` with no peer running (the password alone).
    pub(super) async fn rebuild(&self, user: &str) -> Result<Rebuilt> {
        let dir = self.cast.dir.join("users").join(user);
        let mut command = tokio::process::Command::new(self.cast.program);
        command
            .args(self.cast.prefix_args)
            .args(["--user", user, "--dir"])
            .arg(&dir)
            .arg("--config")
            .arg(&self.users_config)
            .args(["rebuild", "--json"])
            .env("IMGCLOUD_PASSWORD", password(user))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(STEP_LIMIT, command.output())
            .await
            .map_err(|_| failed("`peer rebuild` did not finish in time"))??;
        if !output.status.success() {
            return Err(failed(format!(
                "`peer rebuild` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| failed(format!("`peer rebuild` printed no JSON: {e}")))
    }

    /// The running record of `user`'s peer.
    pub(super) fn running(&self, user: &str) -> Result<Running> {
        Folder::new(user, Some(self.cast.dir.join("users").join(user))).running()
    }
}
