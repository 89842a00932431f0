//! The encryption service of a node: a bounded pool of CPU workers, and the load it measures.
//!
//! Encryption (decode, embed, PNG encode) never runs on the async runtime: each job waits for
//! one of `workers` permits, then runs on tokio's blocking threads. The simulated processing
//! delay (`--delay-ms`) is an async sleep before the job, so it adds latency without holding a
//! worker, as a remote dependency would.
//!
//! **Load.** The pool counts jobs queued and in flight, and keeps an exponentially weighted
//! mean of the service time (delay included). From them it reports the figure the election and
//! dispatch compare: the expected seconds for one more request to finish here,
//! `(queued + in_flight + 1) * cost`, where `cost = mean service time / workers`.
//!
//! Implementation caveats: the mean starts at zero, so a node that has served nothing looks
//! cheapest; a few requests correct that.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::codec::cover::DefaultCovers;
use crate::codec::metadata::ImageMeta;
use crate::codec::seal::SealKey;
use crate::codec::stego::{encrypt_image, Cover};
use crate::wire::request::{EncryptRequest, Outcome, Refusal};

/// Weight of the newest sample in the service-time mean.
const EWMA_ALPHA: f64 = 0.1;

/// A node's encryption service.
pub struct Pool {
    key: SealKey,
    covers: DefaultCovers,
    delay: Duration,
    workers: usize,
    permits: Semaphore,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    served: AtomicU64,
    mean_service_s: Mutex<f64>,
}

impl Pool {
    /// A pool of `workers` threads (0: one per core) with the given processing delay.
    pub fn new(key: SealKey, workers: usize, delay: Duration) -> Arc<Pool> {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            workers
        };
        Arc::new(Pool {
            key,
            covers: DefaultCovers::new(),
            delay,
            workers,
            permits: Semaphore::new(workers),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            mean_service_s: Mutex::new(0.0),
        })
    }

    /// Encrypts one request; never panics, whatever the input.
    pub async fn encrypt(self: &Arc<Self>, request: EncryptRequest) -> Outcome {
        let started = Instant::now();
        self.queued.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let permit = self.permits.acquire().await;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let pool = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || pool.encrypt_now(&request))
            .await
            .unwrap_or_else(|e| Outcome::Refused {
                kind: Refusal::Internal,
                message: format!("encryption failed: {e}"),
            });
        drop(permit);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed().as_secs_f64();
        if let Ok(mut mean) = self.mean_service_s.lock() {
            *mean = if *mean == 0.0 {
                took
            } else {
                *mean + EWMA_ALPHA * (took - *mean)
            };
        }
        outcome
    }

    fn encrypt_now(&self, request: &EncryptRequest) -> Outcome {
        let result =
            ImageMeta::new(request.owner.clone(), request.viewers.clone()).and_then(|meta| {
                let cover = match &request.cover {
                    Some(bytes) => Cover::Image(bytes),
                    None => Cover::Default(&self.covers),
                };
                encrypt_image(&request.secret, cover, &meta, &self.key)
            });
        match result {
            Ok(png) => Outcome::Encrypted(png),
            Err(e) => Outcome::Refused {
                kind: Refusal::of(&e),
                message: e.to_string(),
            },
        }
    }

    /// Jobs waiting for a worker (or in their simulated delay).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Jobs running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The worker count.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Seconds per request per worker, from the recent mean service time.
    pub fn cost(&self) -> f64 {
        self.mean_service_s.lock().map_or(0.0, |m| *m) / self.workers as f64
    }

    /// The load figure: expected seconds for one more request to finish here.
    pub fn load(&self) -> f64 {
        (self.queued() + self.in_flight() + 1) as f64 * self.cost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn request(secret: Vec<u8>) -> EncryptRequest {
        EncryptRequest {
            id: "t-1".into(),
            secret,
            cover: None,
            owner: "alice".into(),
            viewers: vec![],
            resent_after: Vec::new(),
        }
    }

    #[tokio::test]
    async fn encrypts_and_measures_service_time() {
        let pool = Pool::new(SealKey::from_secret(b"k"), 2, Duration::ZERO);
        assert_eq!(pool.load(), 0.0);
        match pool.encrypt(request(png(40, 30))).await {
            Outcome::Encrypted(bytes) => assert!(bytes.starts_with(b"\x89PNG")),
            other => panic!("{other:?}"),
        }
        assert!(pool.cost() > 0.0);
        assert_eq!(pool.in_flight() + pool.queued(), 0);
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_a_sentence() {
        let pool = Pool::new(SealKey::from_secret(b"k"), 1, Duration::ZERO);
        match pool.encrypt(request(b"not an image".to_vec())).await {
            Outcome::Refused {
                kind: Refusal::BadInput,
                message,
            } => assert!(message.contains("not an image"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
