//! The load a scenario runs through its fault: rounds of stress clients until told to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::POLL_INTERVAL;
use crate::bench::metrics::Sample;
use crate::bench::stress::{self, Progress, StressOptions};
use crate::codec::seal::SealKey;
use crate::config::NodeAddr;

/// The load: rounds of [`stress::run`] until told to stop.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    progress: Progress,
    task: tokio::task::JoinHandle<(Vec<Sample>, u64, u64)>,
}

impl Load {
    pub(super) fn start(nodes: &[NodeAddr], key: &SealKey, options: StressOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Progress = Arc::default();
        let (nodes, key) = (nodes.to_vec(), key.clone());
        let (stop_r, progress_r) = (Arc::clone(&stop), Arc::clone(&progress));
        let task = tokio::spawn(async move {
            let (mut samples, mut dup, mut late) = (Vec::new(), 0, 0);
            let mut round = 0u64;
            while !stop_r.load(Ordering::Relaxed) {
                let options = StressOptions {
                    first_client: 1 + round * options.clients as u64,
                    ..options.clone()
                };
                if let Ok(run) = stress::run(&nodes, &key, &options, Arc::clone(&progress_r)).await
                {
                    samples.extend(run.samples);
                    dup += run.duplicates;
                    late += run.late;
                }
                round += 1;
            }
            (samples, dup, late)
        });
        Load {
            stop,
            progress,
            task,
        }
    }

    /// Requests completed so far.
    pub(super) fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits until `done` requests completed.
    pub(super) async fn wait_running(&self, done: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.progress() < done {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        true
    }

    /// Lets the current round finish; returns every sample, the duplicates and the late replies.
    pub(super) async fn finish(self) -> (Vec<Sample>, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
