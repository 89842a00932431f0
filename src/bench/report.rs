//! The stress-test report: the figures of a run as one JSON document and as the console summary.
//!
//! A [`Report`] is the [`Summary`] of the samples, whose fields it writes at the top level of
//! the JSON, plus the figures only the driver knows ([`Extras`]: load-balancing decisions,
//! elections, injected failures, duplicate and late replies, lost requests, whether replies were
//! verified, the capacity limit, the flags). Its JSON keys are a fixed set, always all present,
//! so scripts can rely on them:
//!
//! ```text
//! total succeeded failed failed_by_cause{cause: n} success_rate duration_s throughput_rps
//! latency_ms{avg p50 p95 p99 max} served_per_node{node: n} lb_decisions takeovers elections
//! failures_injected duplicates late lost verified limit_rps baseline_rps efficiency
//! trials[] trials_ci{figure: {mean half_width n}} config{flag: value}
//! failure_windows[{node start_s end_s coordinator}]
//! timeline[{t_s ok p50_ms p99_ms served_per_node{node: n}}]
//! ```
//!
//! `timeline` has one entry per 100 ms slice of the run ([`crate::bench::metrics::timeline`], by
//! completion time, from 0 to the last completion, empty slices included): the data the plot
//! draws. [`Report::failure_dip`] reads from it the worst slice inside a failure window against
//! the mean outside, which the console summary prints.
//!
//! `late` counts replies that came after the client gave up on their request (its deadline
//! passed, so the request is in `lost` too, or every node had said unavailable): it tells a slow
//! answer from none.
//!
//! `limit_rps` (the codec alone on every core: what no design can pass), `baseline_rps` (the
//! same load against the same nodes in the static split, [`crate::config::Dispatch`]: what a
//! simpler design without fault tolerance reaches) and `efficiency` (`throughput_rps /
//! baseline_rps`) are `null` when unknown.
//!
//! Repeated trials: [`Report::combine_trials`] turns K reports into one whose top-level figures
//! are the means over the trials (counts rounded to the nearest integer, `verified` only if every
//! trial verified), whose `trials` lists the K reports in order, and whose `trials_ci` maps each
//! figure to its mean and 95% confidence half width ([`mean_ci95`]). Figure names are the JSON
//! keys, dotted for nested ones: `throughput_rps`, `latency_ms.p95`, `failed_by_cause.timeout`,
//! `served_per_node.2`. A single run has `trials: []` and `trials_ci: {}`. Entries of `trials`
//! are reports themselves, with `config: null` (it is the same for all) and empty `trials`.
//!
//! Implementation caveats: the combined report keeps the first trial's `config`,
//! `failure_windows` and `timeline` (the plot draws that trial); a cause or node that
//! shows up in only some trials counts as 0 in the others; `limit_rps`, `baseline_rps` and
//! `efficiency` are averaged only over the trials that know them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bench::metrics::{mean_ci95, Interval, LatencyMs, Slice, Summary, SLICE};
use crate::ids::NodeId;
use crate::watch::FailureWindow;

/// Width of the rule lines of the console summary.
const RULE: usize = 60;
/// The title line of the console summary, indented as the original project printed it.
const TITLE: &str = "              STRESS TEST RESULTS";
/// Width of the label column of the console summary.
const LABEL: usize = 23;
/// Slack when comparing slice edges (multiples of 0.1 s) with window edges, in seconds.
const EDGE_S: f64 = 1e-9;

/// The figures of a run that only the stress driver knows, to complete a [`Summary`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    /// Load-balancing decisions the cluster reported.
    pub lb_decisions: u64,
    /// Requests the cluster's nodes took over while no coordinator assigned them.
    pub takeovers: u64,
    /// Elections that took place during the run.
    pub elections: u64,
    /// Requests served more than once.
    pub duplicates: u64,
    /// Replies that came after their request was given up, dropped by the clients.
    pub late: u64,
    /// Requests accepted but never answered.
    pub lost: u64,
    /// Whether every reply was checked to decrypt back to the original.
    pub verified: bool,
    /// Throughput the cluster could reach at best, if known (requests per second).
    pub limit_rps: Option<f64>,
    /// The static split's throughput on the same load, if measured (requests per second).
    pub baseline_rps: Option<f64>,
    /// The value of every flag of the run.
    pub config: Value,
    /// The failures injected, one window each.
    pub failure_windows: Vec<FailureWindow>,
    /// The run cut into 100 ms slices.
    pub timeline: Vec<Slice>,
}

/// The complete result of a stress test, as written by `--report`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Counts, rates, latency and requests per node; its keys are the report's first ones.
    #[serde(flatten)]
    pub summary: Summary,
    /// Load-balancing decisions.
    pub lb_decisions: u64,
    /// Requests taken over while no coordinator assigned them (see
    /// [`crate::cluster::dispatch`]).
    pub takeovers: u64,
    /// Elections during the run.
    pub elections: u64,
    /// Failures injected (the length of `failure_windows`).
    pub failures_injected: u64,
    /// Requests served more than once.
    pub duplicates: u64,
    /// Replies that came after their request was given up (see the module doc); absent (0) in
    /// reports written before it was counted.
    #[serde(default)]
    pub late: u64,
    /// Requests accepted but never answered.
    pub lost: u64,
    /// Whether replies were checked to decrypt back to the original.
    pub verified: bool,
    /// Best throughput the cluster could reach, if known: the codec alone on every core.
    pub limit_rps: Option<f64>,
    /// Throughput of the same load on the same machine with the static split (each request
    /// served by the node its id hashes to, no fault tolerance), measured in the same run.
    #[serde(default)]
    pub baseline_rps: Option<f64>,
    /// `throughput_rps / baseline_rps`, if the baseline was measured.
    pub efficiency: Option<f64>,
    /// One report per trial when more than one ran, else empty.
    pub trials: Vec<Report>,
    /// Mean and 95% confidence interval of each figure over the trials, else empty.
    pub trials_ci: BTreeMap<String, Interval>,
    /// The value of every flag of the run.
    pub config: Value,
    /// When which node was failed.
    pub failure_windows: Vec<FailureWindow>,
    /// One entry per 100 ms slice of the run; absent (empty) in reports written before it.
    #[serde(default)]
    pub timeline: Vec<Slice>,
    /// The demo's sharing story and view load (absent when it did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<crate::bench::sharing::SharingReport>,
}

/// The worst 100 ms slice wholly inside a failure window, against the slices outside any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dip {
    /// Start of the worst slice, in seconds since the run started.
    pub t_s: f64,
    /// Successful requests in it.
    pub ok: u64,
    /// Mean successful requests per slice outside every failure window.
    pub mean_outside: f64,
    /// `ok / mean_outside`.
    pub ratio: f64,
}

impl Report {
    /// Builds the report of one run from its summary and the driver's figures.
    pub fn from_summary(summary: Summary, extras: Extras) -> Self {
        let efficiency = extras
            .baseline_rps
            .filter(|baseline| *baseline > 0.0)
            .map(|baseline| summary.throughput_rps / baseline);
        Report {
            summary,
            lb_decisions: extras.lb_decisions,
            takeovers: extras.takeovers,
            elections: extras.elections,
            failures_injected: extras.failure_windows.len() as u64,
            duplicates: extras.duplicates,
            late: extras.late,
            lost: extras.lost,
            verified: extras.verified,
            limit_rps: extras.limit_rps,
            baseline_rps: extras.baseline_rps,
            efficiency,
            trials: Vec::new(),
            trials_ci: BTreeMap::new(),
            config: extras.config,
            failure_windows: extras.failure_windows,
            timeline: extras.timeline,
            sharing: None,
        }
    }

    /// The worst slice of the timeline wholly inside a failure window, as a ratio of the mean
    /// slice wholly outside every window; None without a slice of each kind. The last slice is
    /// left out of the mean: it usually holds only the run's stragglers.
    pub fn failure_dip(&self) -> Option<Dip> {
        self.dip_inside(&self.failure_windows)
    }

    /// The same for the slices wholly inside one of `windows` (still against the slices
    /// outside every window of the run).
    pub fn dip_inside(&self, windows: &[FailureWindow]) -> Option<Dip> {
        let width = SLICE.as_secs_f64();
        let inside = |s: &Slice| {
            windows
                .iter()
                .any(|w| s.t_s >= w.start_s - EDGE_S && s.t_s + width <= w.end_s + EDGE_S)
        };
        let touches = |s: &Slice| {
            self.failure_windows
                .iter()
                .any(|w| s.t_s < w.end_s - EDGE_S && s.t_s + width > w.start_s + EDGE_S)
        };
        let full = self.timeline.split_last().map_or(&[][..], |(_, rest)| rest);
        let outside: Vec<u64> = full.iter().filter(|s| !touches(s)).map(|s| s.ok).collect();
        let worst = self
            .timeline
            .iter()
            .filter(|s| inside(s))
            .min_by_key(|s| s.ok)?;
        if outside.is_empty() {
            return None;
        }
        let mean_outside = outside.iter().sum::<u64>() as f64 / outside.len() as f64;
        Some(Dip {
            t_s: worst.t_s,
            ok: worst.ok,
            mean_outside,
            ratio: if mean_outside > 0.0 {
                worst.ok as f64 / mean_outside
            } else {
                0.0
            },
        })
    }

    /// Combines the reports of K trials: means at the top level, the trials listed, and a 95%
    /// confidence interval per figure. One report comes back unchanged; none gives the default.
    pub fn combine_trials(reports: Vec<Report>) -> Report {
        if reports.len() <= 1 {
            return reports.into_iter().next().unwrap_or_default();
        }
        // The flags are the same for every trial: kept once, at the top level.
        let config = reports[0].config.clone();
        let trials: Vec<Report> = reports
            .into_iter()
            .map(|r| Report {
                config: Value::Null,
                trials: Vec::new(),
                trials_ci: BTreeMap::new(),
                ..r
            })
            .collect();
        let mut ci = BTreeMap::new();
        let mut figure = |name: String, get: &dyn Fn(&Report) -> Option<f64>| {
            let values: Vec<f64> = trials.iter().filter_map(get).collect();
            let interval = mean_ci95(&values);
            if interval.n > 0 {
                ci.insert(name, interval);
            }
            interval.mean
        };
        let count = |x: f64| x.round() as u64;
        let mut combined = Report {
            summary: Summary {
                total: count(figure("total".into(), &|r| Some(r.summary.total as f64))),
                succeeded: count(figure("succeeded".into(), &|r| {
                    Some(r.summary.succeeded as f64)
                })),
                failed: count(figure("failed".into(), &|r| Some(r.summary.failed as f64))),
                success_rate: figure("success_rate".into(), &|r| Some(r.summary.success_rate)),
                duration_s: figure("duration_s".into(), &|r| Some(r.summary.duration_s)),
                throughput_rps: figure("throughput_rps".into(), &|r| {
                    Some(r.summary.throughput_rps)
                }),
                latency_ms: LatencyMs {
                    avg: figure("latency_ms.avg".into(), &|r| Some(r.summary.latency_ms.avg)),
                    p50: figure("latency_ms.p50".into(), &|r| Some(r.summary.latency_ms.p50)),
                    p95: figure("latency_ms.p95".into(), &|r| Some(r.summary.latency_ms.p95)),
                    p99: figure("latency_ms.p99".into(), &|r| Some(r.summary.latency_ms.p99)),
                    max: figure("latency_ms.max".into(), &|r| Some(r.summary.latency_ms.max)),
                },
                ..Summary::default()
            },
            lb_decisions: count(figure("lb_decisions".into(), &|r| {
                Some(r.lb_decisions as f64)
            })),
            takeovers: count(figure("takeovers".into(), &|r| Some(r.takeovers as f64))),
            elections: count(figure("elections".into(), &|r| Some(r.elections as f64))),
            failures_injected: count(figure("failures_injected".into(), &|r| {
                Some(r.failures_injected as f64)
            })),
            duplicates: count(figure("duplicates".into(), &|r| Some(r.duplicates as f64))),
            late: count(figure("late".into(), &|r| Some(r.late as f64))),
            lost: count(figure("lost".into(), &|r| Some(r.lost as f64))),
            verified: trials.iter().all(|r| r.verified),
            ..Report::default()
        };
        // Optional figures: averaged over the trials that have them.
        if trials.iter().any(|r| r.limit_rps.is_some()) {
            combined.limit_rps = Some(figure("limit_rps".into(), &|r| r.limit_rps));
        }
        if trials.iter().any(|r| r.baseline_rps.is_some()) {
            combined.baseline_rps = Some(figure("baseline_rps".into(), &|r| r.baseline_rps));
        }
        if trials.iter().any(|r| r.efficiency.is_some()) {
            combined.efficiency = Some(figure("efficiency".into(), &|r| r.efficiency));
        }
        // Per-cause and per-node counts: absent in a trial means zero there.
        let causes: BTreeSet<String> = trials
            .iter()
            .flat_map(|r| r.summary.failed_by_cause.keys().cloned())
            .collect();
        for cause in causes {
            let mean = figure(format!("failed_by_cause.{cause}"), &|r| {
                Some(r.summary.failed_by_cause.get(&cause).copied().unwrap_or(0) as f64)
            });
            combined.summary.failed_by_cause.insert(cause, count(mean));
        }
        let nodes: BTreeSet<NodeId> = trials
            .iter()
            .flat_map(|r| r.summary.served_per_node.keys().copied())
            .collect();
        for node in nodes {
            let mean = figure(format!("served_per_node.{node}"), &|r| {
                Some(r.summary.served_per_node.get(&node).copied().unwrap_or(0) as f64)
            });
            combined.summary.served_per_node.insert(node, count(mean));
        }
        combined.trials_ci = ci;
        combined.config = config;
        combined.failure_windows = trials[0].failure_windows.clone();
        combined.timeline = trials[0].timeline.clone();
        combined.trials = trials;
        combined
    }

    /// The console summary: the original project's layout, then the further figures.
    pub fn console(&self) -> String {
        let rule = "=".repeat(RULE);
        let s = &self.summary;
        // The original's block, verbatim in layout.
        let mut out = format!("{rule}\n{TITLE}\n{rule}\n");
        row(
            &mut out,
            "Total Duration",
            format!("{:.2} seconds", s.duration_s),
        );
        row(&mut out, "Total Requests", s.total);
        row(&mut out, "Successful", s.succeeded);
        row(&mut out, "Failed", s.failed);
        row(
            &mut out,
            "Success Rate",
            format!("{:.2}%", s.success_rate * 100.0),
        );
        row(
            &mut out,
            "Throughput",
            format!("{:.2} requests/second", s.throughput_rps),
        );
        out.push_str("\nLatency Statistics:\n");
        row(&mut out, "  Average", format!("{:.2} ms", s.latency_ms.avg));
        row(&mut out, "  P95", format!("{:.0} ms", s.latency_ms.p95));
        let _ = writeln!(out, "\nLoad Balancing Decisions: {}", self.lb_decisions);

        // The extension underneath.
        out.push_str("\nLatency Detail:\n");
        row(&mut out, "  P50", format!("{:.0} ms", s.latency_ms.p50));
        row(&mut out, "  P99", format!("{:.0} ms", s.latency_ms.p99));
        row(&mut out, "  Max", format!("{:.0} ms", s.latency_ms.max));
        out.push('\n');
        row(
            &mut out,
            "Failed By Cause",
            if s.failed_by_cause.is_empty() {
                "none"
            } else {
                ""
            },
        );
        for (cause, n) in &s.failed_by_cause {
            row(&mut out, &format!("  {cause}"), n);
        }
        row(&mut out, "Served Per Node", "");
        for (node, n) in &s.served_per_node {
            let share = if s.succeeded > 0 {
                *n as f64 * 100.0 / s.succeeded as f64
            } else {
                0.0
            };
            row(
                &mut out,
                &format!("  node {node}"),
                format!("{n} ({share:.1}%)"),
            );
        }
        out.push('\n');
        row(&mut out, "Elections", self.elections);
        row(
            &mut out,
            "Taken Over",
            format!("{} (no live coordinator assigned them)", self.takeovers),
        );
        row(&mut out, "Simulated Failures", self.failures_injected);
        for w in &self.failure_windows {
            let role = if w.coordinator {
                " (the coordinator)"
            } else {
                ""
            };
            let worst = match self.dip_inside(std::slice::from_ref(w)) {
                Some(dip) => format!(
                    "; worst 100 ms slice {:.2} of the mean ({} ok at {:.1} s)",
                    dip.ratio, dip.ok, dip.t_s
                ),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  node {}{role} failed at {:.2} s, back at {:.2} s{worst}",
                w.node, w.start_s, w.end_s
            );
        }
        if let Some(dip) = self.failure_dip() {
            row(
                &mut out,
                "Worst Failure Slice",
                format!(
                    "{:.2} of the mean outside failures ({} vs {:.1} ok per 100 ms, at {:.1} s)",
                    dip.ratio, dip.ok, dip.mean_outside, dip.t_s
                ),
            );
        }
        row(&mut out, "Duplicate Serves", self.duplicates);
        row(&mut out, "Late Replies", self.late);
        row(&mut out, "Lost Requests", self.lost);
        row(
            &mut out,
            "Replies Verified",
            if self.verified { "yes" } else { "no" },
        );
        if let Some(limit) = self.limit_rps {
            row(
                &mut out,
                "Capacity Limit",
                format!("{limit:.2} requests/second"),
            );
        }
        if let Some(baseline) = self.baseline_rps {
            row(
                &mut out,
                "Static Split Baseline",
                format!("{baseline:.2} requests/second"),
            );
        }
        if let Some(efficiency) = self.efficiency {
            row(
                &mut out,
                "Efficiency",
                format!("{:.2}% of the static split", efficiency * 100.0),
            );
        }
        if self.trials.len() > 1 {
            self.push_trials(&mut out);
        }
        let _ = writeln!(out, "{rule}");
        out
    }

    /// Appends the mean ± 95% confidence interval of the main figures over the trials.
    fn push_trials(&self, out: &mut String) {
        out.push('\n');
        row(
            out,
            "Trials",
            format!("{} (mean ± 95% confidence interval)", self.trials.len()),
        );
        let rows = [
            ("Throughput", "throughput_rps", 1.0, " requests/second"),
            ("Success Rate", "success_rate", 100.0, "%"),
            ("Average Latency", "latency_ms.avg", 1.0, " ms"),
            ("P95 Latency", "latency_ms.p95", 1.0, " ms"),
            ("P99 Latency", "latency_ms.p99", 1.0, " ms"),
            ("Duration", "duration_s", 1.0, " seconds"),
        ];
        for (label, key, scale, unit) in rows {
            if let Some(i) = self.trials_ci.get(key) {
                let (mean, half) = (i.mean * scale, i.half_width * scale);
                row(
                    out,
                    &format!("  {label}"),
                    format!("{mean:.2} ± {half:.2}{unit}"),
                );
            }
        }
    }
}

/// Appends one `Label:  value` line with the value in the console summary's second column.
fn row(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let line = format!("{:<LABEL$}{value}", format!("{label}:"));
    let _ = writeln!(out, "{}", line.trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures of the original project's example summary.
    fn seed_report() -> Report {
        let summary = Summary {
            total: 10000,
            succeeded: 10000,
            failed: 0,
            failed_by_cause: BTreeMap::new(),
            success_rate: 1.0,
            duration_s: 45.23,
            throughput_rps: 221.09,
            latency_ms: LatencyMs {
                avg: 524.32,
                p50: 480.0,
                p95: 1250.0,
                p99: 1400.4,
                max: 1520.0,
            },
            served_per_node: [(1, 3400), (2, 3300), (3, 3300)].into(),
        };
        let extras = Extras {
            lb_decisions: 10000,
            elections: 1,
            verified: true,
            limit_rps: Some(300.0),
            baseline_rps: Some(250.0),
            config: serde_json::json!({ "clients": 50, "requests": 200 }),
            failure_windows: vec![FailureWindow {
                node: 2,
                start_s: 20.0,
                end_s: 34.0,
                coordinator: false,
            }],
            ..Extras::default()
        };
        Report::from_summary(summary, extras)
    }

    /// A trial report with the given throughput, p95 and timeouts.
    fn trial(throughput_rps: f64, p95: f64, timeouts: u64, total: u64) -> Report {
        Report {
            summary: Summary {
                total,
                throughput_rps,
                latency_ms: LatencyMs {
                    p95,
                    ..LatencyMs::default()
                },
                failed_by_cause: [("timeout".to_string(), timeouts)].into(),
                ..Summary::default()
            },
            verified: true,
            config: serde_json::json!({ "trials": 3 }),
            ..Report::default()
        }
    }

    #[test]
    fn json_has_exactly_the_required_keys() {
        let value = serde_json::to_value(seed_report()).unwrap();
        let keys: BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected: BTreeSet<&str> = [
            "total",
            "succeeded",
            "failed",
            "failed_by_cause",
            "success_rate",
            "duration_s",
            "throughput_rps",
            "latency_ms",
            "served_per_node",
            "lb_decisions",
            "takeovers",
            "elections",
            "failures_injected",
            "duplicates",
            "late",
            "lost",
            "verified",
            "limit_rps",
            "baseline_rps",
            "efficiency",
            "trials",
            "trials_ci",
            "config",
            "failure_windows",
            "timeline",
        ]
        .into();
        assert_eq!(keys, expected);
        let latency: BTreeSet<&str> = value["latency_ms"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(latency, ["avg", "p50", "p95", "p99", "max"].into());
        assert_eq!(value["served_per_node"]["2"], 3300);
        assert_eq!(value["failure_windows"][0]["end_s"], 34.0);
    }

    #[test]
    fn json_round_trips() {
        let report = Report::combine_trials(vec![seed_report(), seed_report()]);
        let text = serde_json::to_string_pretty(&report).unwrap();
        // Node ids are string keys in JSON, read back through the flattened summary.
        assert!(
            text.contains("\"served_per_node\": {\n    \"1\": 3400"),
            "{text}"
        );
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn a_report_written_before_late_was_counted_reads_back() {
        let mut value = serde_json::to_value(seed_report()).unwrap();
        value.as_object_mut().unwrap().remove("late");
        let text = serde_json::to_string(&value).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, seed_report());
    }

    #[test]
    fn from_summary_derives_efficiency_and_failure_count() {
        let report = seed_report();
        // 221.09 / 250 = 0.88436.
        assert!((report.efficiency.unwrap() - 0.88436).abs() < 1e-9);
        assert_eq!(report.failures_injected, 1);
        let unknown = Report::from_summary(Summary::default(), Extras::default());
        assert_eq!((unknown.baseline_rps, unknown.efficiency), (None, None));
    }

    #[test]
    fn console_starts_with_the_seed_layout_and_numbers() {
        let console = seed_report().console();
        let seed = "\
============================================================
              STRESS TEST RESULTS
============================================================
Total Duration:        45.23 seconds
Total Requests:        10000
Successful:            10000
Failed:                0
Success Rate:          100.00%
Throughput:            221.09 requests/second

Latency Statistics:
  Average:             524.32 ms
  P95:                 1250 ms

Load Balancing Decisions: 10000
";
        assert!(console.starts_with(seed), "{console}");
    }

    #[test]
    fn console_lists_the_extended_figures() {
        let console = seed_report().console();
        for line in [
            "  P99:                 1400 ms",
            "  Max:                 1520 ms",
            "Failed By Cause:       none",
            "  node 2:              3300 (33.0%)",
            "Elections:             1",
            "Taken Over:            0 (no live coordinator assigned them)",
            "Simulated Failures:    1",
            "  node 2 failed at 20.00 s, back at 34.00 s",
            "Late Replies:          0",
            "Lost Requests:         0",
            "Capacity Limit:        300.00 requests/second",
            "Static Split Baseline: 250.00 requests/second",
            "Efficiency:            88.44% of the static split",
        ] {
            assert!(
                console.lines().any(|l| l == line),
                "missing {line:?} in\n{console}"
            );
        }
        assert!(!console.contains("Trials:"));
    }

    #[test]
    fn combine_trials_gives_means_and_student_t_intervals() {
        let combined = Report::combine_trials(vec![
            trial(200.0, 1000.0, 1, 100),
            trial(210.0, 1200.0, 2, 100),
            trial(220.0, 1100.0, 6, 101),
        ]);
        // Throughput: mean 630 / 3 = 210; s^2 = (100 + 0 + 100) / 2 = 100, s = 10;
        // half width = 4.303 * 10 / sqrt(3) = 24.8434...
        assert_eq!(combined.summary.throughput_rps, 210.0);
        let ci = combined.trials_ci["throughput_rps"];
        assert_eq!((ci.mean, ci.n), (210.0, 3));
        assert!((ci.half_width - 24.8434).abs() < 1e-3, "{}", ci.half_width);
        // P95: mean 3300 / 3 = 1100, same spread: half width 4.303 * 100 / sqrt(3) = 248.434...
        assert_eq!(combined.summary.latency_ms.p95, 1100.0);
        assert!((combined.trials_ci["latency_ms.p95"].half_width - 248.434).abs() < 1e-2);
        // Timeouts: mean (1 + 2 + 6) / 3 = 3; total: 301 / 3 = 100.33, rounded to 100.
        assert_eq!(combined.summary.failed_by_cause["timeout"], 3);
        assert_eq!(combined.trials_ci["failed_by_cause.timeout"].mean, 3.0);
        assert_eq!(combined.summary.total, 100);
        assert_eq!(combined.trials.len(), 3);
        assert_eq!(combined.trials[1].config, Value::Null);
        assert_eq!(combined.config, serde_json::json!({ "trials": 3 }));
    }

    #[test]
    fn console_shows_mean_and_ci_when_trials_ran() {
        let combined = Report::combine_trials(vec![
            trial(200.0, 1000.0, 0, 100),
            trial(210.0, 1200.0, 0, 100),
            trial(220.0, 1100.0, 0, 100),
        ]);
        let console = combined.console();
        assert!(console.contains("Trials:                3 (mean ± 95% confidence interval)"));
        assert!(
            console.contains("  Throughput:          210.00 ± 24.84 requests/second"),
            "{console}"
        );
    }

    /// 3 s of 100 ms slices, 10 ok each, except 5 (and once 3) while node 2 failed, 1 s to 2 s.
    fn dipped_report() -> Report {
        let timeline = (0..30)
            .map(|i| Slice {
                t_s: i as f64 * 0.1,
                ok: match i {
                    13 => 3,
                    10..=19 => 5,
                    _ => 10,
                },
                ..Slice::default()
            })
            .collect();
        let extras = Extras {
            failure_windows: vec![FailureWindow {
                node: 2,
                start_s: 1.0,
                end_s: 2.0,
                coordinator: false,
            }],
            timeline,
            ..Extras::default()
        };
        Report::from_summary(Summary::default(), extras)
    }

    #[test]
    fn the_failure_dip_is_the_worst_slice_inside_against_the_mean_outside() {
        let dip = dipped_report().failure_dip().unwrap();
        // Inside: slices 1.0 .. 1.9, the worst 3 at 1.3 s; outside: 0.0 .. 0.9 and 2.0 .. 2.8
        // (the last slice, 2.9, is left out), 10 each: 3 / 10 = 0.3.
        assert_eq!((dip.ok, dip.mean_outside), (3, 10.0));
        assert!((dip.t_s - 1.3).abs() < 1e-9 && (dip.ratio - 0.3).abs() < 1e-12);
        let console = dipped_report().console();
        assert!(
            console.lines().any(|l| l
                == "Worst Failure Slice:   0.30 of the mean outside failures (3 vs 10.0 ok per 100 ms, at 1.3 s)"),
            "{console}"
        );
        assert_eq!(seed_report().failure_dip(), None, "no timeline, no dip");
    }

    #[test]
    fn each_failure_says_its_node_its_role_and_its_own_worst_slice() {
        let mut report = dipped_report();
        report.failure_windows[0].coordinator = true;
        // A second, shallower failure of node 3 at 2.2 .. 2.5 s: slices 2.2 .. 2.4 at 10.
        report.failure_windows.push(FailureWindow {
            node: 3,
            start_s: 2.2,
            end_s: 2.5,
            coordinator: false,
        });
        let console = report.console();
        let lines: Vec<&str> = console
            .lines()
            .filter(|l| l.contains(" failed at "))
            .collect();
        assert_eq!(lines.len(), 2, "{console}");
        assert!(
            lines[0].starts_with(
                "  node 2 (the coordinator) failed at 1.00 s, back at 2.00 s; worst 100 ms slice"
            ) && lines[0].contains("(3 ok at 1.3 s)"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("  node 3 failed at 2.20 s")
                && lines[1].contains("(10 ok at 2.2 s)"),
            "{}",
            lines[1]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["failure_windows"][0]["coordinator"], true);
    }

    #[test]
    fn the_timeline_is_in_the_json_and_reads_back() {
        let report = dipped_report();
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["timeline"].as_array().unwrap().len(), 30);
        assert_eq!(value["timeline"][13]["ok"], 3);
        let back: Report = serde_json::from_value(value).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn combining_one_trial_returns_it_unchanged() {
        let report = seed_report();
        assert_eq!(Report::combine_trials(vec![report.clone()]), report);
        assert!(report.trials.is_empty() && report.trials_ci.is_empty());
    }
}
