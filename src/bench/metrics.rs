//! Stress-test measurements: one [`Sample`] per request, and the figures made from them.
//!
//! The stress driver records, for every request, when it was sent (relative to the start of
//! the run), how long it took, which node served it and how it ended. Everything else is
//! computed here, after the run, by pure functions over the slice of samples:
//!
//! - [`summarize`] gives the whole-run figures: counts, success rate, throughput, latency
//!   average / p50 / p95 / p99 / max and requests served per node.
//! - [`timeline`] cuts the run into fixed slices ([`SLICE`], 100 ms) by completion time
//!   (`sent_at + latency`) and gives per-slice successes, p50 / p99 latency and completions per
//!   node: the report's `timeline` and the data the plot draws.
//! - [`mean_ci95`] gives the mean and Student-t 95% confidence interval of one figure over
//!   repeated trials.
//!
//! Only successful requests count towards throughput, latency and served-per-node: a request
//! that timed out after 30 s says nothing about how fast the cloud serves. Percentiles come
//! from an HDR histogram in microseconds with 3 significant digits (relative error at most
//! 0.1%), using the nearest-rank definition (p50 of 1..=100 is the 50th value); each is
//! reported as the middle of its histogram bucket and never above the exact maximum. The
//! average and the maximum are exact.
//!
//! Implementation caveats: latencies above one hour saturate at one hour in the histogram
//! (the average and maximum stay exact); timeline slices are half-open `[start, end)`, so a
//! completion exactly on a boundary belongs to the later slice, and the last slice usually holds
//! only the run's last stragglers, so its throughput reads low; a run with no success reports
//! zero latencies rather than "not a number".

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::NodeId;
use crate::Error;

/// Largest latency the histogram tracks, in microseconds (one hour); larger values saturate.
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// Significant digits the histogram keeps.
const SIGNIFICANT_DIGITS: u8 = 3;
/// Two-sided 97.5% quantiles of Student's t for 1..=30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];
/// The normal quantile used beyond 30 degrees of freedom.
const Z_975: f64 = 1.96;

/// What happened to one request of the stress test.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When the request was sent, since the run started.
    pub sent_at: Duration,
    /// How long it took until the reply (or the failure) arrived.
    pub latency: Duration,
    /// The node that served it, when the reply says.
    pub served_by: Option<NodeId>,
    /// Whether it succeeded.
    pub outcome: SampleOutcome,
}

impl Sample {
    /// When the request completed, since the run started.
    pub fn completed_at(&self) -> Duration {
        self.sent_at + self.latency
    }

    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        self.outcome == SampleOutcome::Ok
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleOutcome {
    /// A verified (or, with verification off, well-formed) reply arrived.
    Ok,
    /// The request failed for the given cause.
    Failed(Cause),
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// No reply before the client's deadline.
    Timeout,
    /// The cluster said it cannot serve now (no quorum, shutting down).
    Unavailable,
    /// The cluster refused the request as bad input.
    Refused,
    /// The reply did not decrypt to the original bytes and metadata.
    WrongReply,
    /// The connection could not be opened or broke.
    Connection,
    /// The reply broke the wire protocol.
    Protocol,
}

impl Cause {
    /// Every cause, in the order reports list them.
    pub const ALL: [Cause; 6] = [
        Cause::Timeout,
        Cause::Unavailable,
        Cause::Refused,
        Cause::WrongReply,
        Cause::Connection,
        Cause::Protocol,
    ];

    /// The stable snake_case name used as a JSON key.
    pub fn name(&self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::Unavailable => "unavailable",
            Cause::Refused => "refused",
            Cause::WrongReply => "wrong_reply",
            Cause::Connection => "connection",
            Cause::Protocol => "protocol",
        }
    }
}

impl From<&Error> for Cause {
    /// Classifies a client-side error; errors about the reply's content count as a wrong reply.
    fn from(error: &Error) -> Self {
        match error {
            Error::Timeout(_) => Cause::Timeout,
            Error::Unavailable(_) | Error::Storage(_) => Cause::Unavailable,
            Error::InvalidInput(_)
            | Error::Config(_)
            | Error::Unauthorized(_)
            | Error::CoverTooSmall { .. } => Cause::Refused,
            Error::Io(_) | Error::Internal(_) => Cause::Connection,
            Error::Protocol(_) => Cause::Protocol,
            Error::NotAnImage(_)
            | Error::Truncated(_)
            | Error::Unsupported(_)
            | Error::NoPayload
            | Error::Tampered(_)
            | Error::WrongKey => Cause::WrongReply,
        }
    }
}

/// Latency figures of a set of successful requests, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// Exact arithmetic mean.
    pub avg: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Exact maximum.
    pub max: f64,
}

impl LatencyMs {
    /// Computes the figures of the given latencies (all zero when there are none).
    pub fn of(latencies: impl IntoIterator<Item = Duration>) -> Self {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid");
        let (mut sum, mut max) = (0u128, 0u128);
        for latency in latencies {
            let micros = latency.as_micros();
            sum += micros;
            max = max.max(micros);
            histogram.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
        }
        let count = histogram.len();
        if count == 0 {
            return Self::default();
        }
        let max_ms = max as f64 / 1000.0;
        // The middle of the bucket halves the worst-case error; the clamp keeps pN <= max.
        let quantile = |q: f64| {
            let micros = histogram.median_equivalent(histogram.value_at_quantile(q));
            (micros as f64 / 1000.0).min(max_ms)
        };
        LatencyMs {
            avg: sum as f64 / count as f64 / 1000.0,
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
            max: max_ms,
        }
    }
}

/// The whole-run figures of a stress test.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests sent.
    pub total: u64,
    /// Requests that succeeded.
    pub succeeded: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Failed requests by [`Cause::name`]; causes that never happened are absent.
    pub failed_by_cause: BTreeMap<String, u64>,
    /// `succeeded / total`, between 0 and 1 (0 for an empty run).
    pub success_rate: f64,
    /// Length of the run in seconds.
    pub duration_s: f64,
    /// Successful requests per second of the run.
    pub throughput_rps: f64,
    /// Latency of the successful requests.
    pub latency_ms: LatencyMs,
    /// Successful requests served by each node.
    #[serde(deserialize_with = "node_keyed")]
    pub served_per_node: BTreeMap<NodeId, u64>,
}

/// Reads a map keyed by node id from its JSON form, where the ids are strings. serde_json turns
/// them into numbers itself, but not when the map sits in a flattened struct (the report holds
/// its [`Summary`] so), which is read through a buffer: serde issue 1183.
fn node_keyed<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<NodeId, u64>, D::Error> {
    BTreeMap::<String, u64>::deserialize(deserializer)?
        .into_iter()
        .map(|(key, n)| match key.parse() {
            Ok(node) => Ok((node, n)),
            Err(_) => Err(D::Error::custom(format!(
                "node id \"{key}\" is not a number"
            ))),
        })
        .collect()
}

/// Computes the whole-run figures of `samples` for a run that lasted `duration`.
pub fn summarize(samples: &[Sample], duration: Duration) -> Summary {
    let mut failed_by_cause = BTreeMap::new();
    let mut served_per_node = BTreeMap::new();
    for sample in samples {
        match sample.outcome {
            SampleOutcome::Ok => {
                if let Some(node) = sample.served_by {
                    *served_per_node.entry(node).or_insert(0) += 1;
                }
            }
            SampleOutcome::Failed(cause) => {
                *failed_by_cause.entry(cause.name().to_string()).or_insert(0) += 1;
            }
        }
    }
    let total = samples.len() as u64;
    let failed: u64 = failed_by_cause.values().sum();
    let succeeded = total - failed;
    let duration_s = duration.as_secs_f64();
    Summary {
        total,
        succeeded,
        failed,
        failed_by_cause,
        success_rate: ratio(succeeded as f64, total as f64),
        duration_s,
        throughput_rps: ratio(succeeded as f64, duration_s),
        latency_ms: LatencyMs::of(samples.iter().filter(|s| s.is_ok()).map(|s| s.latency)),
        served_per_node,
    }
}

/// A mean with the half width of its 95% confidence interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Arithmetic mean of the values (0 when there are none).
    pub mean: f64,
    /// Half width of the 95% confidence interval: the mean is `mean ± half_width`.
    pub half_width: f64,
    /// Number of values.
    pub n: usize,
}

/// Mean and 95% confidence interval (Student's t, sample standard deviation) of `values`.
pub fn mean_ci95(values: &[f64]) -> Interval {
    let n = values.len();
    if n == 0 {
        return Interval::default();
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Interval {
            mean,
            half_width: 0.0,
            n,
        };
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T_975.get(n - 2).copied().unwrap_or(Z_975);
    Interval {
        mean,
        half_width: t * variance.sqrt() / (n as f64).sqrt(),
        n,
    }
}

/// Width of one timeline slice: the report's `timeline` and the plot are cut by it.
pub const SLICE: Duration = Duration::from_millis(100);

/// The figures of one time slice of the run: an entry of the report's `timeline` and a point of
/// the plot (both come from [`timeline`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// Start of the slice, in seconds since the run started; it ends one slice width later.
    pub t_s: f64,
    /// Successful requests that completed in the slice.
    pub ok: u64,
    /// Median latency (ms) of the slice's successful requests, if any.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms) of the slice's successful requests, if any.
    pub p99_ms: Option<f64>,
    /// Successful completions per node in the slice; nodes with none are absent.
    #[serde(deserialize_with = "node_keyed")]
    pub served_per_node: BTreeMap<NodeId, u64>,
}

/// Cuts the run into consecutive `width`-long slices by completion time, from 0 to the last
/// completion; slices with nothing in them are included, with zero counts and no percentiles.
pub fn timeline(samples: &[Sample], width: Duration) -> Vec<Slice> {
    let width_us = width.as_micros() as u64;
    let width = width.as_secs_f64();
    if samples.is_empty() || width_us == 0 {
        return Vec::new();
    }
    let index = |s: &Sample| (s.completed_at().as_secs_f64() / width).floor() as usize;
    let count = samples.iter().map(index).max().unwrap_or(0) + 1;
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); count];
    let mut slices: Vec<Slice> = (0..count)
        .map(|i| Slice {
            // From whole microseconds, so that the JSON says 0.3, not 0.30000000000000004.
            t_s: (i as u64 * width_us) as f64 / 1e6,
            ..Slice::default()
        })
        .collect();
    for sample in samples.iter().filter(|s| s.is_ok()) {
        let i = index(sample);
        let slice = &mut slices[i];
        slice.ok += 1;
        latencies[i].push(sample.latency);
        if let Some(node) = sample.served_by {
            *slice.served_per_node.entry(node).or_insert(0) += 1;
        }
    }
    for (slice, latencies) in slices.iter_mut().zip(latencies) {
        if !latencies.is_empty() {
            let figures = LatencyMs::of(latencies);
            slice.p50_ms = Some(figures.p50);
            slice.p99_ms = Some(figures.p99);
        }
    }
    slices
}

/// `numerator / denominator`, or 0 when the denominator is not positive.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok(sent_ms: u64, latency_ms: u64, node: NodeId) -> Sample {
        Sample {
            sent_at: ms(sent_ms),
            latency: ms(latency_ms),
            served_by: Some(node),
            outcome: SampleOutcome::Ok,
        }
    }

    fn failed(sent_ms: u64, latency_ms: u64, cause: Cause) -> Sample {
        Sample {
            sent_at: ms(sent_ms),
            latency: ms(latency_ms),
            served_by: None,
            outcome: SampleOutcome::Failed(cause),
        }
    }

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance
    }

    #[test]
    fn percentiles_of_one_to_hundred_ms_are_the_nearest_ranks() {
        let samples: Vec<Sample> = (1..=100).map(|i| ok(0, i, 1)).collect();
        let latency = summarize(&samples, Duration::from_secs(1)).latency_ms;
        // Nearest rank: pq is the ceil(q * 100)-th smallest value, so p50 = 50, p95 = 95,
        // p99 = 99 ms. Three significant digits allow 0.1% error: 0.05, 0.095, 0.099 ms.
        assert!(close(latency.p50, 50.0, 0.05), "p50 {}", latency.p50);
        assert!(close(latency.p95, 95.0, 0.095), "p95 {}", latency.p95);
        assert!(close(latency.p99, 99.0, 0.099), "p99 {}", latency.p99);
    }

    #[test]
    fn average_and_max_are_exact() {
        let samples: Vec<Sample> = (1..=100).map(|i| ok(0, i, 1)).collect();
        let latency = summarize(&samples, Duration::from_secs(1)).latency_ms;
        // (1 + 2 + ... + 100) / 100 = 5050 / 100 = 50.5 ms; max 100 ms.
        assert_eq!(latency.avg, 50.5);
        assert_eq!(latency.max, 100.0);
    }

    #[test]
    fn latency_counts_only_successful_requests() {
        let samples = vec![ok(0, 10, 1), ok(0, 30, 1), failed(0, 5000, Cause::Timeout)];
        let latency = summarize(&samples, Duration::from_secs(1)).latency_ms;
        // (10 + 30) / 2 = 20 ms; the 5 s timeout is not a latency.
        assert_eq!(latency.avg, 20.0);
        assert_eq!(latency.max, 30.0);
    }

    #[test]
    fn success_rate_and_failed_by_cause_count_each_outcome() {
        let samples = vec![
            ok(0, 10, 1),
            ok(0, 10, 2),
            ok(0, 10, 2),
            failed(0, 10, Cause::Timeout),
            failed(0, 10, Cause::Timeout),
            failed(0, 10, Cause::WrongReply),
            ok(0, 10, 1),
            ok(0, 10, 3),
        ];
        let summary = summarize(&samples, Duration::from_secs(2));
        // 8 sent, 3 failed (2 timeout + 1 wrong_reply), 5 succeeded: 5 / 8 = 0.625.
        assert_eq!(
            (summary.total, summary.succeeded, summary.failed),
            (8, 5, 3)
        );
        assert_eq!(summary.success_rate, 0.625);
        let expected: BTreeMap<String, u64> =
            [("timeout".to_string(), 2), ("wrong_reply".to_string(), 1)].into();
        assert_eq!(summary.failed_by_cause, expected);
        // Served: node 1 twice, node 2 twice, node 3 once.
        assert_eq!(summary.served_per_node, [(1, 2), (2, 2), (3, 1)].into());
    }

    #[test]
    fn throughput_is_successes_per_second_of_the_run() {
        let mut samples: Vec<Sample> = (0..45).map(|_| ok(0, 10, 1)).collect();
        samples.extend((0..5).map(|_| failed(0, 10, Cause::Connection)));
        let summary = summarize(&samples, Duration::from_millis(2500));
        // 45 successes / 2.5 s = 18 requests/s; failures do not count.
        assert_eq!(summary.throughput_rps, 18.0);
        assert_eq!(summary.duration_s, 2.5);
    }

    #[test]
    fn an_empty_run_has_zero_figures_not_nan() {
        let summary = summarize(&[], Duration::ZERO);
        assert_eq!(summary.success_rate, 0.0);
        assert_eq!(summary.throughput_rps, 0.0);
        assert_eq!(summary.latency_ms, LatencyMs::default());
    }

    #[test]
    fn cause_names_are_distinct_snake_case() {
        let names: Vec<&str> = Cause::ALL.iter().map(Cause::name).collect();
        assert_eq!(
            names,
            [
                "timeout",
                "unavailable",
                "refused",
                "wrong_reply",
                "connection",
                "protocol"
            ]
        );
    }

    #[test]
    fn errors_map_to_their_cause() {
        assert_eq!(Cause::from(&Error::Timeout("t".into())), Cause::Timeout);
        assert_eq!(
            Cause::from(&Error::InvalidInput("x".into())),
            Cause::Refused
        );
        assert_eq!(Cause::from(&Error::Tampered("x".into())), Cause::WrongReply);
        let io = Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Cause::from(&io), Cause::Connection);
    }

    #[test]
    fn ci95_of_ten_twelve_fourteen_uses_student_t_with_two_df() {
        let interval = mean_ci95(&[10.0, 12.0, 14.0]);
        // mean = 36 / 3 = 12; s^2 = (4 + 0 + 4) / 2 = 4, s = 2;
        // half width = t(0.975, 2) * s / sqrt(3) = 4.303 * 2 / 1.7320508 = 4.96867...
        assert_eq!(interval.mean, 12.0);
        assert_eq!(interval.n, 3);
        assert!(
            close(interval.half_width, 4.96867, 1e-4),
            "{}",
            interval.half_width
        );
    }

    #[test]
    fn ci95_beyond_thirty_df_uses_the_normal_quantile() {
        // 32 values alternating 0 and 2: mean 1; s^2 = 32 * 1 / 31; df = 31 > 30, so t = 1.96.
        let values: Vec<f64> = (0..32)
            .map(|i| if i % 2 == 0 { 0.0 } else { 2.0 })
            .collect();
        let interval = mean_ci95(&values);
        let expected = 1.96 * (32.0f64 / 31.0).sqrt() / 32.0f64.sqrt();
        assert_eq!(interval.mean, 1.0);
        assert!(close(interval.half_width, expected, 1e-12));
    }

    #[test]
    fn ci95_of_fewer_than_two_values_has_zero_width() {
        assert_eq!(
            mean_ci95(&[7.0]),
            Interval {
                mean: 7.0,
                half_width: 0.0,
                n: 1
            }
        );
        assert_eq!(
            mean_ci95(&[]),
            Interval {
                mean: 0.0,
                half_width: 0.0,
                n: 0
            }
        );
    }

    #[test]
    fn timeline_assigns_samples_by_completion_time() {
        let samples = vec![
            ok(0, 400, 1),                     // completes at 0.4 s -> slice 0 [0, 1)
            ok(800, 300, 2), // completes at 1.1 s -> slice 1, although sent in slice 0
            ok(1500, 500, 1), // completes at exactly 2.0 s -> slice 2 (half-open slices)
            failed(100, 3000, Cause::Timeout), // gives up at 3.1 s -> slice 3, not counted
        ];
        let slices = timeline(&samples, Duration::from_secs(1));
        assert_eq!(slices.len(), 4);
        let counts: Vec<u64> = slices.iter().map(|s| s.ok).collect();
        assert_eq!(counts, [1, 1, 1, 0]);
        assert_eq!(slices[1].served_per_node, [(2, 1)].into());
        assert_eq!(slices[2].t_s, 2.0);
        let tenths = timeline(&[ok(1000, 0, 1)], SLICE);
        assert_eq!(
            tenths[3].t_s.to_string(),
            "0.3",
            "slice starts are exact tenths"
        );
    }

    #[test]
    fn timeline_gives_counts_and_percentiles_per_slice() {
        // Slice 0 of 0.5 s: ten successes of 1..=10 ms, nodes 1 and 2 alternating.
        let samples: Vec<Sample> = (1..=10).map(|i| ok(0, i, 1 + (i % 2) as NodeId)).collect();
        let slices = timeline(&samples, Duration::from_millis(500));
        assert_eq!(slices.len(), 1);
        // p50 = 5th value = 5 ms, p99 = 10th = 10 ms, each within the histogram's 0.1% (the
        // histogram bucket holding 5000 us is 4 us wide).
        assert_eq!(slices[0].ok, 10);
        assert!(
            close(slices[0].p50_ms.unwrap(), 5.0, 0.005),
            "{:?}",
            slices[0].p50_ms
        );
        assert!(
            close(slices[0].p99_ms.unwrap(), 10.0, 0.01),
            "{:?}",
            slices[0].p99_ms
        );
        assert_eq!(slices[0].served_per_node, [(1, 5), (2, 5)].into());
    }

    #[test]
    fn timeline_keeps_empty_slices_without_percentiles() {
        let slices = timeline(&[ok(250, 0, 1)], SLICE);
        // 0.25 s falls in the third 100 ms slice; the first two are empty.
        assert_eq!(slices.len(), 3);
        assert_eq!((slices[0].ok, slices[0].p50_ms), (0, None));
        assert_eq!(slices[2].ok, 1);
        assert_eq!(slices[2].t_s, 0.2);
    }

    #[test]
    fn a_slice_is_written_with_the_report_keys_and_reads_back() {
        let slices = timeline(&[ok(0, 20, 3)], SLICE);
        let value = serde_json::to_value(&slices[0]).unwrap();
        let keys: std::collections::BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["t_s", "ok", "p50_ms", "p99_ms", "served_per_node"].into()
        );
        assert_eq!(value["served_per_node"]["3"], 1);
        let back: Slice = serde_json::from_value(value).unwrap();
        assert_eq!(back, slices[0]);
    }
}
