//! The failure detector: decides, from heartbeat arrivals, whether a member is alive.
//!
//! A simplified phi-accrual detector. Heartbeat inter-arrival times are kept in a sliding
//! window; modelling them as exponential with the window's mean, the suspicion level after a
//! silence of `t` is `phi = t / (mean * ln 10)`, and a member is suspected once `phi` passes
//! [`PHI_THRESHOLD`]. The resulting timeout is clamped between a floor (`suspect_ms`, so an idle
//! cluster detects a silent member in about that time) and a ceiling: when the machine is loaded
//! and heartbeats arrive late, the mean grows and the detector waits longer instead of declaring
//! a slow member dead.
//!
//! A closed connection is stronger evidence than silence: the node shell reports it, and the
//! member is suspected at once, until it is heard from again. A killed process is therefore
//! detected in milliseconds, a stopped one after the timeout.
//!
//! Implementation caveats: intervals longer than the ceiling (a member that was down) are left
//! out of the window so that an outage does not make the detector lax afterwards.

use std::collections::VecDeque;

use crate::ids::Millis;

/// Suspicion level at which a member is declared suspected.
pub const PHI_THRESHOLD: f64 = 3.0;
/// How many inter-arrival times the detector remembers.
const WINDOW: usize = 64;

/// Liveness of one member.
#[derive(Clone, Debug)]
pub struct Detector {
    floor_ms: u64,
    ceiling_ms: u64,
    last_heard: Option<Millis>,
    intervals: VecDeque<u64>,
    sum: u64,
    disconnected: bool,
}

impl Detector {
    /// A detector that has heard nothing yet (the member counts as not alive).
    pub fn new(floor_ms: u64, ceiling_ms: u64) -> Self {
        Detector {
            floor_ms,
            ceiling_ms,
            last_heard: None,
            intervals: VecDeque::with_capacity(WINDOW),
            sum: 0,
            disconnected: false,
        }
    }

    /// Records a message from the member at `now`.
    pub fn heard(&mut self, now: Millis) {
        if let Some(last) = self.last_heard {
            let gap = now.saturating_sub(last);
            if gap <= self.ceiling_ms && !self.disconnected {
                if self.intervals.len() == WINDOW {
                    self.sum -= self.intervals.pop_front().unwrap_or(0);
                }
                self.intervals.push_back(gap);
                self.sum += gap;
            }
        }
        self.last_heard = Some(now);
        self.disconnected = false;
    }

    /// Records that the connection from the member closed: suspected until heard again.
    pub fn disconnected(&mut self) {
        self.disconnected = true;
    }

    /// Forgets everything (after this node itself was silent, its view is stale).
    pub fn reset(&mut self) {
        *self = Detector::new(self.floor_ms, self.ceiling_ms);
    }

    /// The silence after which the member is suspected, given the arrivals seen so far.
    pub fn timeout_ms(&self) -> u64 {
        if self.intervals.is_empty() {
            return self.floor_ms;
        }
        let mean = self.sum as f64 / self.intervals.len() as f64;
        let timeout = (PHI_THRESHOLD * std::f64::consts::LN_10 * mean) as u64;
        timeout.clamp(self.floor_ms, self.ceiling_ms)
    }

    /// Whether the member is considered alive at `now`.
    pub fn is_alive(&self, now: Millis) -> bool {
        match self.last_heard {
            Some(last) => !self.disconnected && now.saturating_sub(last) <= self.timeout_ms(),
            None => false,
        }
    }

    /// When the member was last heard from.
    pub fn last_heard(&self) -> Option<Millis> {
        self.last_heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beating(every: u64, count: u64) -> Detector {
        let mut d = Detector::new(800, 3000);
        for i in 0..count {
            d.heard(i * every);
        }
        d
    }

    #[test]
    fn unknown_member_is_not_alive() {
        assert!(!Detector::new(800, 3000).is_alive(0));
    }

    #[test]
    fn silent_member_is_suspected_after_the_floor() {
        let d = beating(100, 20);
        let last = 1900;
        assert!(d.is_alive(last + 800));
        assert!(!d.is_alive(last + 801));
    }

    #[test]
    fn slow_heartbeats_stretch_the_timeout() {
        let d = beating(300, 20);
        assert!(d.timeout_ms() > 2000, "timeout {}", d.timeout_ms());
        assert!(
            d.is_alive(19 * 300 + 1500),
            "a slow but regular member stays alive"
        );
        assert_eq!(
            beating(2000, 20).timeout_ms(),
            3000,
            "clamped to the ceiling"
        );
    }

    #[test]
    fn disconnect_suspects_at_once_until_heard_again() {
        let mut d = beating(100, 10);
        d.disconnected();
        assert!(!d.is_alive(901));
        d.heard(950);
        assert!(d.is_alive(960));
    }

    #[test]
    fn an_outage_does_not_make_the_detector_lax() {
        let mut d = beating(100, 10);
        d.heard(900 + 10_000);
        assert_eq!(d.timeout_ms(), 800);
    }
}
