//! The encryption service of a node: a bounded pool of CPU workers, and the load it measures.
//!
//! Encryption (decode, embed, PNG encode) never runs on the async runtime: each job waits for
//! one of `workers` permits, then runs on one of the pool's own `workers` threads, which run at
//! a lower OS priority (nice [`ENCRYPT_NICE`]) than the rest of the node: when encryption
//! saturates every core, the node loop, its links and the store still get the CPU at once, so
//! heartbeats, claims and commits never wait behind an image (issue 31). The simulated processing
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

use tokio::sync::{oneshot, Semaphore};

use crate::codec::cover::DefaultCovers;
use crate::codec::metadata::ImageMeta;
use crate::codec::seal::SealKey;
use crate::codec::stego::{encrypt_image, Cover};
use crate::wire::request::{EncryptRequest, Outcome, Refusal};

/// Weight of the newest sample in the service-time mean.
const EWMA_ALPHA: f64 = 0.1;

/// The nice value of the encryption threads (the node's other threads keep 0). Linux's
/// scheduler gives a nice-0 thread about nine times the CPU share of a nice-10 one.
pub const ENCRYPT_NICE: i32 = 10;

/// Memory the encryption jobs of one node may use at once, estimated per job as
/// [`WORK_PER_PAYLOAD_BYTE`] times its payload. Jobs that would pass it wait their turn:
/// their payloads were admitted, so they are served, one huge one at a time.
pub const WORK_BUDGET_BYTES: usize = 512 * 1024 * 1024;
/// Bytes of memory an encryption takes per byte of its request's images: the plaintext and
/// its sealed copy (1x each), a default cover and the output PNG (4x each: two bits per
/// sample), the reply's encoding and its frame (4x each). Measured: a 27 MB upload took
/// 355 MB in `client encrypt --local` (13x) and a serving node's peak rose by ~450 MB (16x).
pub const WORK_PER_PAYLOAD_BYTE: usize = 16;

/// What an encryption thread needs.
struct Codec {
    key: SealKey,
    covers: DefaultCovers,
}

type Job = (EncryptRequest, oneshot::Sender<Outcome>);

/// A node's encryption service.
pub struct Pool {
    jobs: std::sync::mpsc::Sender<Job>,
    delay: Duration,
    workers: usize,
    permits: Semaphore,
    /// [`WORK_BUDGET_BYTES`] in KiB.
    work: Semaphore,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    served: AtomicU64,
    mean_service_s: Mutex<f64>,
}

impl Pool {
    /// A pool of `workers` threads (0: one per core) with the given processing delay.
    pub fn new(key: SealKey, workers: usize, delay: Duration) -> crate::Result<Arc<Pool>> {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            workers
        };
        let codec = Arc::new(Codec {
            key,
            covers: DefaultCovers::new(),
        });
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers {
            let (codec, queue) = (Arc::clone(&codec), Arc::clone(&queue));
            std::thread::Builder::new()
                .name(format!("encrypt-{n}"))
                .spawn(move || codec.serve(&queue))
                .map_err(|e| {
                    crate::Error::Internal(format!("cannot start an encryption thread: {e}"))
                })?;
        }
        Ok(Arc::new(Pool {
            jobs,
            delay,
            workers,
            permits: Semaphore::new(workers),
            work: Semaphore::new(WORK_BUDGET_BYTES >> 10),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            mean_service_s: Mutex::new(0.0),
        }))
    }

    /// Encrypts one request; never panics, whatever the input.
    pub async fn encrypt(self: &Arc<Self>, request: EncryptRequest) -> Outcome {
        let started = Instant::now();
        self.queued.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let work = self
            .work
            .acquire_many(work_kib(request.payload_len()))
            .await;
        let permit = self.permits.acquire().await;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let (done, outcome) = oneshot::channel();
        let outcome = match self.jobs.send((request, done)) {
            Ok(()) => outcome.await.ok(),
            Err(_) => None,
        }
        .unwrap_or_else(|| Outcome::Refused {
            kind: Refusal::Internal,
            message: "encryption failed: the encryption threads are gone".into(),
        });
        drop((permit, work));
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

impl Codec {
    /// An encryption thread: at [`ENCRYPT_NICE`], takes jobs until the pool is gone. A job
    /// that panics is answered as an internal failure, and the thread goes on.
    fn serve(&self, queue: &Mutex<std::sync::mpsc::Receiver<Job>>) {
        lower_priority();
        loop {
            let job = match queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok((request, done)) = job else { return };
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.encrypt(&request)))
                    .unwrap_or_else(|_| Outcome::Refused {
                        kind: Refusal::Internal,
                        message: "encryption failed: a bug (the encryption panicked)".into(),
                    });
            let _ = done.send(outcome);
        }
    }

    fn encrypt(&self, request: &EncryptRequest) -> Outcome {
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
}

/// The estimated memory of the encryption of `payload` bytes, in KiB, within the budget.
fn work_kib(payload: usize) -> u32 {
    let kib = payload.saturating_mul(WORK_PER_PAYLOAD_BYTE) >> 10;
    kib.clamp(1, WORK_BUDGET_BYTES >> 10) as u32
}

/// Puts the calling thread at [`ENCRYPT_NICE`] (on Linux a nice value is a thread's own).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id.
        let failed = unsafe {
            let tid = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, ENCRYPT_NICE) != 0
        };
        if failed {
            tracing::warn!(
                "cannot lower the encryption threads' priority: {}",
                std::io::Error::last_os_error()
            );
        }
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
        let pool = Pool::new(SealKey::from_secret(b"k"), 2, Duration::ZERO).unwrap();
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
        let pool = Pool::new(SealKey::from_secret(b"k"), 1, Duration::ZERO).unwrap();
        match pool.encrypt(request(b"not an image".to_vec())).await {
            Outcome::Refused {
                kind: Refusal::BadInput,
                message,
            } => assert!(message.contains("not an image"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 31: two 27 MB uploads encrypted at once took a node near 1 GiB.
    #[test]
    fn huge_jobs_take_the_work_budget_one_at_a_time_and_small_ones_hardly_any() {
        let huge = work_kib(27 << 20);
        assert!(
            2 * huge > (WORK_BUDGET_BYTES >> 10) as u32 && huge < (WORK_BUDGET_BYTES >> 10) as u32
        );
        assert_eq!(work_kib(usize::MAX), (WORK_BUDGET_BYTES >> 10) as u32);
        assert!(work_kib(9 << 10) <= 144);
        assert_eq!(work_kib(0), 1);
    }

    /// Issue 31: encryption on tokio's blocking threads ran at the node's own priority and,
    /// with every core busy, delayed heartbeats enough for elections with every node alive.
    #[cfg(target_os = "linux")]
    #[test]
    fn encryption_threads_run_below_the_rest_of_the_node() {
        let _pool = Pool::new(SealKey::from_secret(b"k"), 2, Duration::ZERO).unwrap();
        let nice_of = |name: &str| -> Vec<i64> {
            let mut found = Vec::new();
            for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim() != name {
                    continue;
                }
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
                found.push(nice_in(&stat));
            }
            found
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut nice = Vec::new();
        while Instant::now() < deadline {
            nice = [nice_of("encrypt-0"), nice_of("encrypt-1")].concat();
            if nice.len() == 2 && nice.iter().all(|&n| n == i64::from(ENCRYPT_NICE)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(nice, vec![i64::from(ENCRYPT_NICE); 2]);
        let caller = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_eq!(nice_in(&caller), 0, "the caller keeps its priority");
    }

    /// The nice value in a `/proc/.../stat` line: field 19, the 17th after the command.
    #[cfg(target_os = "linux")]
    fn nice_in(stat: &str) -> i64 {
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }
}
