//! The view load: many viewers spending views of one image through the cloud at once.
//!
//! One owner shares a real encrypted photo and grants each of N viewers V views; then every
//! viewer spends them, one at a time, viewer i starting at node i % nodes (a user's
//! [`Cloud`], which moves to the next node when one is down or failing), each answer checked:
//! the exact original, the views left, and the renewed copy used for the next view. Then one
//! view more each, which must be the default image. Overdraws are counted twice and exactly:
//! images a viewer was shown beyond its grant, and, after the load, views the ledger itself
//! says were spent beyond a grant (the owner's receipts, read with a signed query).
//!
//! Used by the demo (while the cluster's elected failures run) and `cargo bench --bench
//! views`. Timing is reported, never asserted here.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sha2::{Digest, Sha256};

use crate::config::ClusterConfig;
use crate::peer::Cloud;
use crate::sharing::bodies::{Answer, Shown, ViewAnswer, WithFile};
use crate::sharing::{Ask, Change, Credential, UserOp};
use crate::{Error, Result};

/// View latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewLatency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// How long a viewer's registration in the directory holds (they never renew it).
const LEASE_MS: u64 = 5_000;

/// What a view load saw.
#[derive(Clone, Debug)]
pub struct ViewLoad {
    /// Viewers, and views granted to each.
    pub viewers: usize,
    pub views: u32,
    /// Views that showed the image (the load's, then the extra ones).
    pub images: u64,
    /// Extra views after each quota ran out that showed the default image.
    pub defaults: u64,
    /// Images shown beyond a grant, and views the ledger counts beyond a grant.
    pub overdraws: u64,
    /// Images that were not the original, or said the wrong views left.
    pub wrong: u64,
    /// Views the ledger counts as spent, by the owner's receipts after the load.
    pub ledger_used: u64,
    /// Views that failed (no answer, or the default image while views were left).
    pub errors: u64,
    /// The first of them, in a sentence.
    pub first_error: Option<String>,
    /// Latency of the load's views, in microseconds.
    pub latency: Histogram<u64>,
    /// How long the load's views took (the extra ones left out).
    pub elapsed: Duration,
}

impl ViewLoad {
    /// Views per second during the load.
    pub fn views_per_s(&self) -> f64 {
        self.latency.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The load's latency percentiles, in milliseconds.
    pub fn latency_ms(&self) -> ViewLatency {
        let ms = |micros: u64| micros as f64 / 1000.0;
        ViewLatency {
            p50: ms(self.latency.value_at_quantile(0.5)),
            p95: ms(self.latency.value_at_quantile(0.95)),
            p99: ms(self.latency.value_at_quantile(0.99)),
            max: ms(self.latency.max()),
        }
    }
}

/// The users and the shared image, ready for a load.
pub struct Prepared {
    owner: (Credential, Cloud),
    viewers: Vec<(Credential, Cloud)>,
    image: crate::codec::metadata::ImageId,
    secret: Vec<u8>,
    encrypted: Vec<u8>,
    copies: Vec<Vec<u8>>,
    views: u32,
    /// The encrypted image's size, its copy's size.
    pub sizes: (usize, usize),
    /// Latency of the grants, in microseconds.
    pub grants: Histogram<u64>,
}

/// Registers an owner and `viewers` viewers on `cluster`, shares `secret` (encrypted through
/// the cloud) and grants each viewer `views` views.
pub async fn prepare(
    cluster: &ClusterConfig,
    secret: Vec<u8>,
    viewers: usize,
    views: u32,
) -> Result<Prepared> {
    let names: Vec<String> = std::iter::once("owner".to_string())
        .chain((0..viewers).map(|i| format!("viewer{i}")))
        .collect();
    let creds = derive_all(names).await?;
    let cloud_at = |i: usize| {
        // Viewer i starts at node i % nodes: the same node order, rotated.
        let mut rotated = cluster.clone();
        let n = rotated.nodes.len().max(1);
        rotated.nodes.rotate_left(i % n);
        Cloud::new(&rotated)
    };
    let mut users: Vec<(Credential, Cloud)> = creds
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, cloud_at(i)))
        .collect();
    for (cred, cloud) in &users {
        let op = cred.sign(UserOp::Register {
            addr: "127.0.0.1:9".into(),
            lease_ms: LEASE_MS,
        });
        cloud.submit(&op).await?;
    }
    let client =
        crate::client::Client::connect(u64::from(rand::random::<u32>()), &cluster.nodes).await?;
    let encrypted = client
        .encrypt(secret.clone(), None, "owner", vec![])
        .await?
        .png;
    drop(client);
    let (owner, cloud) = users.remove(0);
    let share = WithFile {
        op: owner.sign(UserOp::Share {
            name: "view-load".into(),
            file: sha256(&encrypted),
        }),
        file: encrypted.clone(),
    };
    let shared = cloud.share(&share).await?;
    let image = shared
        .id
        .parse()
        .map_err(|_| Error::Protocol(format!("the cloud named the image {:?}", shared.id)))?;
    let mut copies = Vec::new();
    let mut grants = histogram();
    for (viewer, _) in &users {
        let grant = WithFile {
            op: owner.sign(UserOp::Grant {
                image,
                viewer: viewer.user().to_string(),
                change: Change::Add(views),
                file: sha256(&encrypted),
            }),
            file: encrypted.clone(),
        };
        let started = Instant::now();
        let answer = cloud.grant(&grant).await?;
        let _ = grants.record(micros(started.elapsed()));
        let copy = answer
            .copy
            .ok_or_else(|| Error::Protocol("a grant gave no copy".into()))?;
        copies.push(copy);
    }
    Ok(Prepared {
        owner: (owner, cloud),
        sizes: (encrypted.len(), copies.first().map_or(0, Vec::len)),
        viewers: users,
        image,
        secret,
        encrypted,
        copies,
        views,
        grants,
    })
}

impl Prepared {
    /// The owner's credential.
    pub fn owner(&self) -> &Credential {
        &self.owner.0
    }

    /// The viewers' credentials.
    pub fn viewers(&self) -> Vec<Credential> {
        self.viewers.iter().map(|(c, _)| c.clone()).collect()
    }

    /// The shared image's id.
    pub fn image(&self) -> crate::codec::metadata::ImageId {
        self.image
    }

    /// The shared image, encrypted, and the photo hidden in it.
    pub fn files(&self) -> (&[u8], &[u8]) {
        (&self.encrypted, &self.secret)
    }

    /// Every viewer spends every view at once, then one more each; the owner's receipts are
    /// read after. Runs once: the views are spent.
    pub async fn run(&self) -> Result<ViewLoad> {
        let views = self.views;
        let secret = std::sync::Arc::new(self.secret.clone());
        let started = Instant::now();
        let tasks: Vec<_> = self
            .viewers
            .iter()
            .cloned()
            .zip(self.copies.iter().cloned())
            .map(|((viewer, cloud), copy)| {
                let secret = std::sync::Arc::clone(&secret);
                tokio::spawn(viewer_load(cloud, viewer, copy, views, secret))
            })
            .collect();
        let mut load = ViewLoad {
            viewers: tasks.len(),
            views,
            images: 0,
            defaults: 0,
            overdraws: 0,
            wrong: 0,
            ledger_used: 0,
            errors: 0,
            first_error: None,
            latency: histogram(),
            elapsed: Duration::ZERO,
        };
        let mut last = Vec::new();
        for task in tasks {
            let (tally, viewer, cloud, copy) = task
                .await
                .map_err(|e| Error::Internal(format!("a viewer's task failed: {e}")))?;
            load.add(tally);
            last.push((viewer, cloud, copy));
        }
        load.elapsed = started.elapsed();

        // One view more each: the default image, never an image beyond the grant.
        let extra: Vec<_> = last
            .into_iter()
            .map(|(viewer, cloud, copy)| {
                tokio::spawn(async move { view(&cloud, &viewer, &copy).await })
            })
            .collect();
        for task in extra {
            match task.await {
                Ok(Ok(a)) if a.shown == Shown::Default => load.defaults += 1,
                Ok(Ok(_)) => {
                    load.images += 1;
                    load.overdraws += 1;
                }
                Ok(Err(e)) => load.error(e.to_string()),
                Err(e) => load.error(e.to_string()),
            }
        }

        // The ledger's own count.
        let (owner, cloud) = &self.owner;
        match cloud.query(&owner.query(Ask::Holdings)).await? {
            Answer::Holdings(holdings) => {
                let image = self.image.to_string();
                let receipts = holdings
                    .own
                    .into_iter()
                    .find(|o| o.id == image)
                    .map(|o| o.viewers)
                    .unwrap_or_default();
                for r in receipts {
                    load.ledger_used += r.views_used;
                    load.overdraws += r.views_used.saturating_sub(u64::from(views));
                }
            }
            other => {
                return Err(Error::Protocol(format!(
                    "the cloud answered a holdings query with {other:?}"
                )))
            }
        }
        Ok(load)
    }
}

impl ViewLoad {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn add(&mut self, tally: Tally) {
        let _ = self.latency.add(&tally.latency);
        self.images += tally.images;
        self.overdraws += tally.overdraws;
        self.wrong += tally.wrong;
        self.errors += tally.errors;
        if self.first_error.is_none() {
            self.first_error = tally.first_error;
        }
    }
}

/// What one viewer saw.
struct Tally {
    latency: Histogram<u64>,
    images: u64,
    overdraws: u64,
    wrong: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One view of `copy` by `viewer`, opened with the viewer's key.
pub async fn view(cloud: &Cloud, viewer: &Credential, copy: &[u8]) -> Result<ViewAnswer> {
    let request = WithFile {
        op: viewer.sign(UserOp::View { file: sha256(copy) }),
        file: copy.to_vec(),
    };
    cloud.view(&request, viewer).await
}

/// A viewer's `views` views, each checked; the tally, and what the next view needs.
async fn viewer_load(
    cloud: Cloud,
    viewer: Credential,
    mut copy: Vec<u8>,
    views: u32,
    secret: std::sync::Arc<Vec<u8>>,
) -> (Tally, Credential, Cloud, Vec<u8>) {
    let mut tally = Tally {
        latency: histogram(),
        images: 0,
        overdraws: 0,
        wrong: 0,
        errors: 0,
        first_error: None,
    };
    for k in 0..views {
        let started = Instant::now();
        let answer = view(&cloud, &viewer, &copy).await;
        let took = micros(started.elapsed());
        let problem = match answer {
            Ok(answer) => {
                let _ = tally.latency.record(took);
                match answer.shown {
                    Shown::Image => {
                        tally.images += 1;
                        if tally.images > u64::from(views) {
                            tally.overdraws += 1;
                        }
                        if answer.image != *secret || answer.views_left != Some(views - k - 1) {
                            tally.wrong += 1;
                        }
                        match answer.copy {
                            Some(next) => {
                                copy = next;
                                None
                            }
                            None => Some("an image was shown with no renewed copy".to_string()),
                        }
                    }
                    Shown::Default => Some(format!(
                        "view {} of {views} gave the default image: {}",
                        k + 1,
                        answer.reason.unwrap_or_default()
                    )),
                }
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = problem {
            tally.errors += 1;
            tally.first_error.get_or_insert(problem);
        }
    }
    (tally, viewer, cloud, copy)
}

/// Derives every user's key (Argon2, ~50 ms each) on all cores.
async fn derive_all(names: Vec<String>) -> Result<Vec<Credential>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = names.len().div_ceil(cores).max(1);
    let tasks: Vec<_> = names
        .chunks(chunk)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .map(|n| Credential::derive(n, "view load password"))
                    .collect::<Result<Vec<_>>>()
            })
        })
        .collect();
    let mut creds = Vec::new();
    for task in tasks {
        let derived = task
            .await
            .map_err(|e| Error::Internal(format!("a key derivation failed: {e}")))?;
        creds.extend(derived?);
    }
    Ok(creds)
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is a valid histogram")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
