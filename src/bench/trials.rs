//! The trial loop that `demo` and `client stress` share: the machine's limit measured first,
//! K trials each run by the caller and turned into a report, the trials combined (means and
//! 95% confidence intervals), the console summary, the JSON report and the plot.
//!
//! A caller says how one trial runs (with a progress bar, through a failure, over worker
//! processes) and what it prints about it; everything around the trials is done here once.
//!
//! Implementation caveats: the limit is measured before the trials, on the same machine, so it
//! includes nothing of the network or the cluster.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::bench::report::Report;
use crate::bench::stress::{self, Trial};
use crate::bench::LoadArgs;
use crate::codec::seal::SealKey;
use crate::{Error, Result};

/// The figures every trial's report carries beside its own.
#[derive(Clone, Debug, Default)]
pub struct Yardsticks {
    /// The machine's limit, in requests per second (the codec alone on every core).
    pub limit_rps: Option<f64>,
    /// The static split's throughput, in requests per second.
    pub baseline_rps: Option<f64>,
    /// The run's configuration, as the report records it.
    pub config: Value,
}

/// Measures the machine's limit for `--limit-secs` (None if 0): the codec alone, hiding (and
/// verifying, unless `--no-verify`) `image` on every core. Prints what it does and the figure.
pub async fn measure_limit(load: &LoadArgs, image: &[u8], key: &SealKey) -> Result<Option<f64>> {
    if load.limit_secs <= 0.0 {
        return Ok(None);
    }
    let verify = !load.no_verify;
    println!(
        "Measuring this machine's limit: the codec alone ({}) on every core for {:.0} s...",
        if verify { "hide + verify" } else { "hide" },
        load.limit_secs
    );
    let (image, key, secs) = (image.to_vec(), key.clone(), load.limit_secs);
    let limit = tokio::task::spawn_blocking(move || {
        stress::measure_limit(&image, &key, Duration::from_secs_f64(secs), verify)
    })
    .await
    .map_err(|e| Error::Internal(format!("the limit measurement failed: {e}")))?;
    println!("  limit: {limit:.0} requests/s");
    Ok(Some(limit))
}

/// Runs `--trials` trials, `run(t)` running trial `t` (from 1); prints the combined summary and
/// writes the report and the plot. Returns the combined report.
pub async fn run_trials<F, Fut>(
    load: &LoadArgs,
    yardsticks: &Yardsticks,
    mut run: F,
) -> Result<Report>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<Trial>>,
{
    let mut reports = Vec::new();
    for t in 1..=load.trials.max(1) {
        let trial = run(t).await?;
        reports.push(stress::report(
            &trial,
            !load.no_verify,
            yardsticks.limit_rps,
            yardsticks.baseline_rps,
            yardsticks.config.clone(),
        ));
    }
    let report = Report::combine_trials(reports);
    println!("{}", report.console());
    write_outputs(&report, load)?;
    Ok(report)
}

/// Writes the JSON report and the plot of its `timeline` and `failure_windows` (with several
/// trials, the first trial's, as the report's top level keeps them).
pub fn write_outputs(report: &Report, load: &LoadArgs) -> Result<()> {
    write_report(report, load)?;
    println!("Report: {}", load.report.display());
    let title = format!(
        "imgcloud stress test: {} requests, {:.0} req/s, p99 {:.0} ms",
        report.summary.total, report.summary.throughput_rps, report.summary.latency_ms.p99
    );
    crate::bench::plot::render(
        &title,
        &report.timeline,
        crate::bench::metrics::SLICE,
        &report.failure_windows,
        &load.plot,
    )?;
    println!("Plot:   {}", load.plot.display());
    Ok(())
}

/// Writes the JSON report.
pub fn write_report(report: &Report, load: &LoadArgs) -> Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(&load.report, json)
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", load.report.display())))
}
