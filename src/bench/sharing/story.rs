//! The story's script: every step in order, from three users starting their peers to every
//! node killed with SIGKILL and restarted, and the check that no acknowledged write was lost.

use super::*;

impl Story<'_> {
    pub(super) async fn steps(&mut self, cluster: &mut LocalCluster) -> Result<()> {
        let photo = sunset(320, 200);
        let photo_path = self.cast.dir.join("sunset.png");
        std::fs::write(&photo_path, &photo)?;

        let (r, ms) = timed(async {
            let mut seen = Vec::new();
            for user in ["alice", "bob", "carol"] {
                let running = self.start(user).await?;
                seen.push(format!("{user} at {}", running.addr));
            }
            Ok((
                (),
                format!("3 peer processes registered: {}", seen.join(", ")),
            ))
        })
        .await;
        self.record("alice, bob and carol start their peers", ms, r)?;

        // alice shares.
        let alice = self.running("alice")?;
        let (r, ms) = timed(async {
            let body = serde_json::json!({ "path": photo_path, "name": "sunset" });
            let shared: SharedAnswer = local_post(&alice, "/api/share", body).await?;
            let detail = format!(
                "encrypted through the cloud (hidden in a cover, sealed) as image {}",
                shared.id
            );
            Ok((shared.id, detail))
        })
        .await;
        let image = self.record("alice shares her photo sunset.png", ms, r)?;
        self.frame("alice", "her photo", Some(photo.clone()), None, None);

        // bob discovers alice and her preview.
        let bob = self.running("bob")?;
        let out = self.cast.dir.join("bob-previews");
        let (r, ms) = timed(async {
            let online: Vec<OnlineEntry> = local_get(&bob, "/api/online").await?;
            let entry = online
                .iter()
                .find(|e| e.user == "alice" && e.online)
                .ok_or_else(|| failed("alice is not online in bob's directory"))?;
            if !entry.shared.iter().any(|s| s.id == image) {
                return Err(failed("the directory does not list alice's image"));
            }
            let body = serde_json::json!({ "owner": "alice", "out": out });
            let files: Vec<PreviewFile> = local_post(&bob, "/api/previews", body).await?;
            let file = files
                .into_iter()
                .find(|f| f.id == image)
                .ok_or_else(|| failed("alice's peer sent no preview of the image"))?;
            if file.width.max(file.height) > 128 {
                return Err(failed(format!(
                    "the preview is {}x{}, over 128 px",
                    file.width, file.height
                )));
            }
            let png = std::fs::read(&file.path)?;
            let detail = format!(
                "alice online at {} sharing \"sunset\"; a {}x{} preview straight from her peer",
                entry.addr.as_deref().unwrap_or("?"),
                file.width,
                file.height
            );
            Ok((png, detail))
        })
        .await;
        let preview = self.record("bob sees alice online and fetches her preview", ms, r)?;
        self.frame("bob", "alice's preview", Some(preview), None, None);

        // bob asks, alice approves, the copy arrives.
        let (r, ms) = timed(async {
            let body = serde_json::json!({ "owner": "alice", "image": "sunset", "views": 2 });
            let answer: RequestAnswer = local_post(&bob, "/api/request", body).await?;
            let incoming: Vec<RequestRecord> = local_get(&alice, "/api/requests").await?;
            let mine = incoming
                .iter()
                .find(|q| q.id == answer.id)
                .ok_or_else(|| failed("alice's peer does not list bob's request"))?;
            let detail = format!(
                "request {} is {} at bob and {} at alice",
                answer.id,
                answer.state,
                mine.state.word()
            );
            Ok((answer.id, detail))
        })
        .await;
        let request = self.record("bob asks alice for 2 views", ms, r)?;
        let (r, ms) = timed(async {
            let body = serde_json::json!({ "id": request });
            let _: RequestRecord = local_post(&alice, "/api/approve", body).await?;
            let copy = copy_with(&bob, &image, 2).await?;
            let detail = format!(
                "bob's folder holds a copy with 2 views left ({})",
                copy.path.display()
            );
            Ok((copy, detail))
        })
        .await;
        let copy = self.record("alice approves; bob's copy arrives", ms, r)?;
        let old_copy = self.cast.dir.join("bob-old-copy.png");
        std::fs::copy(&copy.path, &old_copy)?;

        // bob views to zero, then the default image.
        for (n, left) in [(1, 1), (2, 0)] {
            let what = format!("bob views sunset ({n} of 2)");
            self.view(
                "bob",
                &image,
                &what,
                &format!("view {n}"),
                &photo,
                Some(left),
            )
            .await?;
        }
        self.view(
            "bob",
            &image,
            "bob views once more: no view left",
            "view 3",
            &photo,
            None,
        )
        .await?;
        let old = old_copy.display().to_string();
        let what = "bob restores his old copy (2 views inside) and views it";
        self.view("bob", &old, what, "restored old copy", &photo, None)
            .await?;
        let bobs = copy.path.display().to_string();
        self.view(
            "carol",
            &bobs,
            "carol presents bob's copy",
            "bob's copy",
            &photo,
            None,
        )
        .await?;

        // A quota change while bob is offline.
        self.stop("bob");
        let (r, ms) = timed(async {
            let body = serde_json::json!({ "image": image, "viewer": "bob", "views": 3 });
            let changed: Changed = local_post(&alice, "/api/quota", body).await?;
            if changed.delivered || changed.views_left != 3 {
                return Err(failed(format!(
                    "expected 3 views left waiting in bob's mailbox, got {} left, delivered {}",
                    changed.views_left, changed.delivered
                )));
            }
            Ok((
                (),
                "the ledger says 3; the news waits in bob's mailbox".to_string(),
            ))
        })
        .await;
        self.record("bob goes offline; alice sets his quota to 3", ms, r)?;
        let (r, ms) = timed(async {
            let bob = self.start("bob").await?;
            copy_with(&bob, &image, 3).await?;
            Ok((
                (),
                "his peer read his mailbox: his copy says 3 views".to_string(),
            ))
        })
        .await;
        self.record("bob comes back: the change reaches him", ms, r)?;
        let what = "bob views with his new quota";
        self.view("bob", &image, what, "quota 3, view 1", &photo, Some(2))
            .await?;

        // A revoke.
        let (r, ms) = timed(async {
            let body = serde_json::json!({ "image": image, "viewer": "bob" });
            let changed: Changed = local_post(&alice, "/api/revoke", body).await?;
            Ok((
                (),
                format!("the ledger gives bob {} views", changed.views_left),
            ))
        })
        .await;
        self.record("alice revokes bob", ms, r)?;
        self.view(
            "bob",
            &image,
            "bob views after the revoke",
            "revoked",
            &photo,
            None,
        )
        .await?;

        // carol gets views, spends one, loses her folder and rebuilds it.
        let carol = self.running("carol")?;
        let (r, ms) = timed(async {
            let body = serde_json::json!({ "image": image, "viewer": "carol", "views": 3 });
            let _: Changed = local_post(&alice, "/api/allow", body).await?;
            copy_with(&carol, &image, 3).await?;
            Ok(((), "carol's copy arrived with 3 views".to_string()))
        })
        .await;
        self.record("alice allows carol 3 views", ms, r)?;
        self.view(
            "carol",
            &image,
            "carol views sunset",
            "view 1",
            &photo,
            Some(2),
        )
        .await?;
        let (r, ms) = timed(async {
            let dir = self.kill_and_forget("carol")?;
            let rebuilt = self.rebuild("carol").await?;
            let carol = self.start("carol").await?;
            let copy = copy_with(&carol, &image, 2).await?;
            let detail = format!(
                "{} deleted; `peer rebuild` brought back {} copy; it says {} views",
                dir.display(),
                rebuilt.copies,
                copy.views_left.unwrap_or(0)
            );
            Ok(((), detail))
        })
        .await;
        self.record(
            "carol loses her folder and rebuilds it from her password",
            ms,
            r,
        )?;
        let what = "carol views from her rebuilt folder";
        self.view("carol", &image, what, "rebuilt, view 2", &photo, Some(1))
            .await?;

        // The whole cloud dies and comes back.
        let (r, ms) = timed(async {
            let ids = cluster.config.ids();
            for &id in &ids {
                cluster.kill(id);
            }
            for &id in &ids {
                cluster.spawn(id)?;
            }
            let agreed = wait_for_agreement(&cluster.config.nodes, STEP_LIMIT).await;
            let (coordinator, epoch) =
                agreed.ok_or_else(|| failed("the restarted nodes did not agree"))?;
            let detail = format!(
                "{} nodes back; node {coordinator} coordinates (epoch {epoch})",
                ids.len()
            );
            Ok(((), detail))
        })
        .await;
        self.record("every node is killed with SIGKILL and restarted", ms, r)?;
        self.after_restart(&image, &photo).await
    }

    /// Checks that every acknowledged write survived the restart; each missing one counts in
    /// `lost_after_restart`.
    async fn after_restart(&mut self, image: &str, photo: &[u8]) -> Result<()> {
        let (alice, bob) = (self.running("alice")?, self.running("bob")?);
        let (r, ms) = timed(async {
            let mut lost = Vec::new();
            let online: Vec<OnlineEntry> =
                retry_unavailable(|| local_get(&bob, "/api/online")).await?;
            let listed = online
                .iter()
                .any(|e| e.user == "alice" && e.shared.iter().any(|s| s.id == image));
            if !listed {
                lost.push("alice's share");
            }
            let receipts: Vec<OwnHolding> =
                retry_unavailable(|| local_get(&alice, "/api/receipts")).await?;
            let receipts = receipts
                .into_iter()
                .find(|i| i.id == image)
                .map(|i| i.viewers)
                .unwrap_or_default();
            let of = |who: &str| {
                let receipt = receipts.iter().find(|r| r.viewer == who);
                receipt.map(|r| (r.views_used, r.views_left, r.revoked))
            };
            if of("carol") != Some((2, 1, false)) {
                lost.push("carol's grant and her 2 views spent");
            }
            if of("bob") != Some((3, 0, true)) {
                lost.push("bob's revoke (his receipt: 3 used, revoked)");
            }
            Ok(lost)
        })
        .await;
        let lost = match r {
            Ok(lost) => lost,
            Err(e) => {
                return self.record(
                    "after the restart, every write is there",
                    ms,
                    Err::<((), String), _>(e),
                )
            }
        };
        self.report.lost_after_restart = lost.len() as u64;
        let result = if lost.is_empty() {
            Ok((
                (),
                "alice's share is in the directory; carol's receipt: 2 used, 1 left; bob's: 3 used, revoked".to_string(),
            ))
        } else {
            Err(failed(format!(
                "missing after the restart: {}",
                lost.join(", ")
            )))
        };
        self.record(
            "after the restart, every acknowledged write is there",
            ms,
            result,
        )?;
        let what = "after the restart, carol spends her last view";
        self.view("carol", image, what, "after kill -9", photo, Some(0))
            .await?;
        let what = "after the restart, bob is still revoked";
        self.view("bob", image, what, "after kill -9", photo, None)
            .await?;
        Ok(())
    }
}
