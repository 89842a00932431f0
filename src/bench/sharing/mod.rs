//! The demo's sharing story (phase 2), told with real processes on a running cluster.
//!
//! Three users' peers (this binary run as `demo peer`, see [`LocalPeer`]) go through what the
//! product is for, one printed line per step, each saying what happened and what was checked:
//! alice shares a photo; bob sees her online with a preview and asks for 2 views; alice
//! approves; bob views to zero (each image compared with the original, byte for byte and pixel
//! for pixel) and then gets the default image; his restored old copy and carol presenting his
//! copy get the default image too; a quota change made while bob is offline reaches him when he
//! returns; a revoke; carol loses her folder and rebuilds it from her password; every node is
//! killed with SIGKILL and restarted, and every acknowledged share, grant and spent view is
//! checked to be still there.
//!
//! The steps drive the peers through their local API (what the `peer` subcommands call), so
//! each step is what a user typing `peer ...` would see. The story stops at the first step
//! that fails; [`SharingReport::passed`] says whether everything held.
//!
//! Implementation caveats: the cluster's elected failures go on during the story, so a step
//! may wait for a failover; every step is bounded by [`STEP_LIMIT`].

mod cast;
mod story;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bench::launcher::{LocalCluster, LocalPeer};
use crate::bench::views::ViewLatency;
use crate::config::ClusterConfig;
use crate::peer::actions::{ImageEntry, PreviewFile, ViewResult};
use crate::peer::library::RequestRecord;
use crate::peer::owner::{Changed, Rebuilt};
use crate::peer::p2p::RequestAnswer;
use crate::peer::{local_get, local_post, Folder, OnlineEntry, Running};
use crate::sharing::bodies::{OwnHolding, SharedAnswer, Shown};
use crate::watch::wait_for_agreement;
use crate::{Error, Result};

/// The longest one step may take (a step may wait out a failover or a restart).
pub const STEP_LIMIT: Duration = Duration::from_secs(45);
/// The longest the view load may take (setup included).
const LOAD_LIMIT: Duration = Duration::from_secs(120);
/// How long a started peer may take to come online.
const ONLINE_WAIT: Duration = Duration::from_secs(30);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(100);

/// What the report says about sharing (its `sharing` key).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SharingReport {
    /// Every step of the story, in order.
    pub steps: Vec<StepRecord>,
    /// Views that showed the image (story and view load).
    pub views_shown: u64,
    /// Views that showed the default image (story and view load).
    pub views_default: u64,
    /// Images shown beyond what the ledger granted (must be 0).
    pub overdraws: u64,
    /// Acknowledged shares, grants and spent views missing after the whole cloud's restart
    /// (must be 0).
    pub lost_after_restart: u64,
    /// Views per second during the view load (0 if it did not run).
    pub views_per_s: f64,
    /// View latency during the view load, in milliseconds.
    pub view_latency_ms: ViewLatency,
}

impl SharingReport {
    /// Whether every step held, nothing was overdrawn and nothing acknowledged was lost.
    pub fn passed(&self) -> bool {
        !self.steps.is_empty()
            && self.steps.iter().all(|s| s.ok)
            && self.overdraws == 0
            && self.lost_after_restart == 0
    }
}

/// One step of the story.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// What the step did.
    pub what: String,
    /// Whether what it checked held.
    pub ok: bool,
    /// How long it took.
    pub ms: u64,
    /// What was checked, or why it failed.
    pub detail: String,
}

/// One thumbnail of the picture: what a user saw at a step.
#[derive(Clone, Debug)]
pub struct StoryFrame {
    /// Who saw it.
    pub who: String,
    /// The step, in a few words.
    pub step: String,
    /// The PNG shown (absent if it could not be read).
    pub png: Option<Vec<u8>>,
    /// The image, the default image, or the owner's own photo (None).
    pub shown: Option<Shown>,
    /// Views left after it, for a viewer.
    pub views_left: Option<u32>,
}

/// How to start the users' peers.
pub struct Cast<'a> {
    /// The program and the arguments before `--user` (this binary: `demo peer`).
    pub program: &'a Path,
    pub prefix_args: &'a [&'a str],
    /// Where the users' folders, the photo and the views go.
    pub dir: PathBuf,
}

/// The story's state: the users' peers, the steps so far and the frames of the picture.
pub struct Story<'a> {
    cast: Cast<'a>,
    users_config: PathBuf,
    peers: BTreeMap<&'static str, LocalPeer>,
    /// Every step so far.
    pub report: SharingReport,
    /// What each user saw.
    pub frames: Vec<StoryFrame>,
}

impl<'a> Story<'a> {
    /// Prepares the story for `cluster` (writes the users' config: node addresses, no secret).
    pub fn new(cast: Cast<'a>, cluster: &ClusterConfig) -> Result<Self> {
        std::fs::create_dir_all(&cast.dir)?;
        let users_config = cast.dir.join("users.toml");
        std::fs::write(&users_config, cluster.for_users().to_toml())?;
        Ok(Story {
            cast,
            users_config,
            peers: BTreeMap::new(),
            report: SharingReport::default(),
            frames: Vec::new(),
        })
    }

    /// Tells the whole story on `cluster`; stops at the first step that fails (its record says
    /// why). The peers are stopped at the end, whatever happened.
    pub async fn tell(&mut self, cluster: &mut LocalCluster) {
        println!(
            "The sharing story: three users' peers on the cluster, while it goes on failing nodes"
        );
        let told = self.steps(cluster).await;
        for peer in self.peers.values_mut() {
            peer.stop();
        }
        if let Err(e) = told {
            println!("  the story stopped: {e}");
        }
    }

    /// The view load: `viewers` viewers spend `views` views each through the cloud at once,
    /// then one more each; one step, and the report's view figures.
    pub async fn view_load(&mut self, cluster: &ClusterConfig, viewers: usize, views: u32) {
        println!(
            "The view load: {viewers} viewers x {views} views of one photo through the cloud at once"
        );
        let (r, ms) = timed_for(LOAD_LIMIT, async {
            let prepared =
                crate::bench::views::prepare(cluster, sunset(96, 96), viewers, views).await?;
            prepared.run().await
        })
        .await;
        let what = format!("{viewers} viewers spend {views} views each, then one more");
        let checked = r.and_then(|load| {
            let report = &mut self.report;
            report.views_shown += load.images;
            report.views_default += load.defaults;
            report.overdraws += load.overdraws;
            report.views_per_s = load.views_per_s();
            report.view_latency_ms = load.latency_ms();
            let l = report.view_latency_ms;
            let due = viewers as u64 * u64::from(views);
            let figures =
                format!(
                "{:.0} views/s, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms; images \
                 {}/{due}, default images after the quota {}/{viewers}, overdraws {} (the \
                 ledger counts {} spent)",
                report.views_per_s, l.p50, l.p95, l.p99, l.max, load.images, load.defaults,
                load.overdraws, load.ledger_used
            );
            if load.overdraws > 0
                || load.wrong > 0
                || load.errors > 0
                || load.images != due
                || load.defaults != viewers as u64
                || load.ledger_used != due
            {
                return Err(failed(format!(
                    "{figures}; {} wrong, {} errors{}",
                    load.wrong,
                    load.errors,
                    load.first_error
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                )));
            }
            Ok(((), figures))
        });
        let _ = self.record(&what, ms, checked);
    }

    /// One view by `user` of `image` (an id, a name or a copy's path), as step `what` and the
    /// picture's frame `caption`. `left` is the views left when the image must show (equal to
    /// `photo`); None when the default image must (an image then is an overdraw).
    async fn view(
        &mut self,
        user: &'static str,
        image: &str,
        what: &str,
        caption: &str,
        photo: &[u8],
        left: Option<u32>,
    ) -> Result<()> {
        let running = self.running(user)?;
        let out =
            (self.cast.dir.join("views")).join(format!("{:02}-{user}.png", self.frames.len()));
        let (r, ms) = timed(async {
            let body = serde_json::json!({ "image": image, "out": out });
            let result: ViewResult =
                retry_unavailable(|| local_post(&running, "/api/view", body.clone())).await?;
            let png = std::fs::read(&result.out).ok();
            Ok((result, png))
        })
        .await;
        let checked = r.and_then(|(result, png)| {
            match result.shown {
                Shown::Image => self.report.views_shown += 1,
                Shown::Default => self.report.views_default += 1,
            }
            let shown = png.as_deref().unwrap_or_default();
            let detail = match (left, result.shown) {
                (Some(left), Shown::Image) => {
                    if shown != photo || !same_pixels(shown, photo) {
                        return Err(failed("the image shown is not the original"));
                    }
                    if result.views_left != Some(left) {
                        return Err(failed(format!(
                            "{:?} views left, expected {left}",
                            result.views_left
                        )));
                    }
                    format!("the image, equal to the original pixel for pixel; {left} left")
                }
                (Some(_), Shown::Default) => {
                    return Err(failed(format!(
                        "the default image where the image was due: {}",
                        result.reason.unwrap_or_default()
                    )))
                }
                (None, Shown::Image) => {
                    self.report.overdraws += 1;
                    return Err(failed(
                        "the image was shown with no view granted: an overdraw",
                    ));
                }
                (None, Shown::Default) => {
                    if shown.is_empty() || same_pixels(shown, photo) {
                        return Err(failed("the default image is missing or is the photo"));
                    }
                    format!(
                        "the default image ({})",
                        result
                            .reason
                            .clone()
                            .unwrap_or_else(|| "no view left".into())
                    )
                }
            };
            self.frame(user, caption, png, Some(result.shown), result.views_left);
            Ok(((), detail))
        });
        self.record(what, ms, checked)
    }

    /// Records a frame of the picture that is not a view.
    fn frame(
        &mut self,
        who: &str,
        step: &str,
        png: Option<Vec<u8>>,
        shown: Option<Shown>,
        left: Option<u32>,
    ) {
        self.frames.push(StoryFrame {
            who: who.to_string(),
            step: step.to_string(),
            png,
            shown,
            views_left: left,
        });
    }

    /// Prints and records step `what` that took `ms`; its value, or the error that stops the
    /// story.
    fn record<T>(&mut self, what: &str, ms: u64, result: Result<(T, String)>) -> Result<T> {
        let (ok, detail) = match &result {
            Ok((_, detail)) => (true, detail.clone()),
            Err(e) => (false, e.to_string()),
        };
        let mark = if ok { "ok  " } else { "FAIL" };
        println!("  {mark} {what}: {detail} ({ms} ms)");
        self.report.steps.push(StepRecord {
            what: what.to_string(),
            ok,
            ms,
            detail,
        });
        result.map(|(value, _)| value)
    }
}

/// A user's password in the story.
fn password(user: &str) -> String {
    format!("{user}'s demo password")
}

/// An error that stops the story.
fn failed(why: impl Into<String>) -> Error {
    Error::InvalidInput(why.into())
}

/// Runs `work` bounded by [`STEP_LIMIT`]; its result and how long it took, in milliseconds.
async fn timed<T>(work: impl Future<Output = Result<T>>) -> (Result<T>, u64) {
    timed_for(STEP_LIMIT, work).await
}

/// Runs `work` bounded by `limit`; its result and how long it took, in milliseconds.
async fn timed_for<T>(limit: Duration, work: impl Future<Output = Result<T>>) -> (Result<T>, u64) {
    let started = Instant::now();
    let result = match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    };
    (result, started.elapsed().as_millis() as u64)
}

/// Calls `call` until it gives something other than "unavailable" (a node failing or the
/// cloud restarting), for at most [`STEP_LIMIT`].
async fn retry_unavailable<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        match call().await {
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(POLL * 2).await
            }
            other => return other,
        }
    }
}

/// Waits until `user`'s copy of `image` says `views` views left; its entry.
async fn copy_with(running: &Running, image: &str, views: u32) -> Result<ImageEntry> {
    let deadline = Instant::now() + STEP_LIMIT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(images) = local_get::<Vec<ImageEntry>>(running, "/api/images").await {
            let copy = images
                .into_iter()
                .find(|i| i.id == image && i.owner != running.user);
            if let Some(copy) = copy {
                if copy.views_left == Some(views) {
                    return Ok(copy);
                }
                last = copy.views_left;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Err(failed(format!(
        "{}'s copy never said {views} views (last: {last:?})",
        running.user
    )))
}

/// Whether two PNGs decode to the same pixels.
fn same_pixels(a: &[u8], b: &[u8]) -> bool {
    match (image::load_from_memory(a), image::load_from_memory(b)) {
        (Ok(a), Ok(b)) => a.to_rgba8() == b.to_rgba8(),
        _ => false,
    }
}

/// A photo-like sunset over the sea, `w` x `h`, as a PNG.
pub fn sunset(w: u32, h: u32) -> Vec<u8> {
    let horizon = h * 3 / 5;
    let (sun_x, sun_y, sun_r) = (
        w as f32 * 0.62,
        horizon as f32 - h as f32 * 0.12,
        h as f32 * 0.13,
    );
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let d = ((fx - sun_x).powi(2) + (fy - sun_y).powi(2)).sqrt();
        if y < horizon {
            let t = fy / horizon as f32;
            if d < sun_r {
                return image::Rgb([255, 236, 160]);
            }
            let glow = (1.0 - (d / (w as f32 * 0.5)).min(1.0)) * 60.0;
            let c = |a: f32, b: f32| (a + (b - a) * t + glow).clamp(0.0, 255.0) as u8;
            image::Rgb([c(70.0, 250.0), c(60.0, 140.0), c(140.0, 90.0)])
        } else {
            let t = (fy - horizon as f32) / (h - horizon) as f32;
            let wave = ((fx * 0.15 + fy * 0.9).sin() * 12.0) * (1.0 - t);
            let path = (1.0 - ((fx - sun_x).abs() / (w as f32 * 0.12)).min(1.0)) * 90.0 * (1.0 - t);
            let c = |a: f32, b: f32| (a + (b - a) * t + wave + path).clamp(0.0, 255.0) as u8;
            image::Rgb([c(60.0, 15.0), c(70.0, 35.0), c(120.0, 70.0)])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("a PNG encodes into memory");
    out.into_inner()
}
