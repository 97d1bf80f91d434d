//! The stats-watch overhead report (`--stats-watch-overhead`): BlipMQ's
//! throughput without and with `blipmqctl stats --watch` beside it, and
//! whether the difference is within the noise between runs.

use std::fmt::Write as _;

use serde::Serialize;

use super::{human_rate, Report, RunResult, Status};
use crate::scenarios::Scenario;

/// The overhead figures of every scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Runs per scenario and arm.
    pub repeats: usize,
    pub blipmqctl: String,
    pub watch_command: String,
    pub scenarios: Vec<ScenarioOverhead>,
}

/// Is the watcher's effect distinguishable from run-to-run noise?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// |difference| ≤ noise.
    WithinNoise,
    /// |difference| > noise.
    BeyondNoise,
    /// Fewer than two clean runs without, or none with, the watcher.
    Incomplete,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::WithinNoise => "within noise",
            Verdict::BeyondNoise => "**beyond noise**",
            Verdict::Incomplete => "**incomplete** (failed runs)",
        }
    }
}

/// One scenario's runs without and with the watcher.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioOverhead {
    pub scenario: String,
    /// msgs/s of each clean run, in run order.
    pub without_msgs_per_sec: Vec<f64>,
    pub with_msgs_per_sec: Vec<f64>,
    /// Runs that were not clean (no speed), both arms.
    pub failed_runs: usize,
    /// Runs, both arms, during which other processes loaded the machine.
    pub skewed_runs: usize,
    pub mean_without: Option<f64>,
    pub mean_with: Option<f64>,
    /// (mean with − mean without) / mean without: negative = slower with
    /// the watcher.
    pub difference: Option<f64>,
    /// (max − min) / mean of the runs without the watcher: how much the
    /// same configuration varies from run to run.
    pub noise: Option<f64>,
    /// The same spread over the runs with the watcher, for reference.
    pub noise_with: Option<f64>,
    /// Sample standard deviation / mean of the runs without the watcher.
    pub cv_without: Option<f64>,
    pub verdict: Verdict,
    /// Mean CPU seconds the watcher itself used per run.
    pub watcher_cpu_secs: Option<f64>,
    /// Mean broker CPU seconds per million delivered messages.
    pub cpu_per_million_without: Option<f64>,
    pub cpu_per_million_with: Option<f64>,
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// (max − min) / mean; needs two values.
fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    mean(values).filter(|m| *m > 0.0).map(|m| (max - min) / m)
}

/// Sample standard deviation / mean; needs two values.
fn coefficient_of_variation(values: &[f64]) -> Option<f64> {
    let m = mean(values).filter(|m| *m > 0.0)?;
    if values.len() < 2 {
        return None;
    }
    let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    Some(var.sqrt() / m)
}

impl ScenarioOverhead {
    pub fn of(scenario: &str, results: &[RunResult]) -> ScenarioOverhead {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.scenario == scenario && r.stats_watch.is_some())
            .collect();
        let arm = |watcher: bool| {
            runs.iter()
                .filter(move |r| r.stats_watch.as_ref().is_some_and(|a| a.watcher == watcher))
                .copied()
        };
        let rates = |watcher| {
            arm(watcher)
                .filter_map(|r| r.msgs_per_sec)
                .collect::<Vec<_>>()
        };
        let cpu = |watcher| {
            mean(
                &arm(watcher)
                    .filter_map(|r| r.cpu_secs_per_million)
                    .collect::<Vec<_>>(),
            )
        };
        let without = rates(false);
        let with = rates(true);
        let mean_without = mean(&without);
        let mean_with = mean(&with);
        let difference = match (mean_without, mean_with) {
            (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a),
            _ => None,
        };
        let noise = spread(&without);
        let verdict = match (difference, noise) {
            (Some(d), Some(n)) if d.abs() <= n => Verdict::WithinNoise,
            (Some(_), Some(_)) => Verdict::BeyondNoise,
            _ => Verdict::Incomplete,
        };
        ScenarioOverhead {
            scenario: scenario.to_string(),
            failed_runs: runs.iter().filter(|r| r.status != Status::Ok).count(),
            skewed_runs: runs.iter().filter(|r| r.skewed).count(),
            mean_without,
            mean_with,
            difference,
            noise,
            noise_with: spread(&with),
            cv_without: coefficient_of_variation(&without),
            verdict,
            watcher_cpu_secs: mean(
                &arm(true)
                    .filter_map(|r| r.stats_watch.as_ref()?.watcher_cpu_secs)
                    .collect::<Vec<_>>(),
            ),
            cpu_per_million_without: cpu(false),
            cpu_per_million_with: cpu(true),
            without_msgs_per_sec: without,
            with_msgs_per_sec: with,
        }
    }
}

pub fn summarize(
    scenarios: &[Scenario],
    results: &[RunResult],
    repeats: usize,
    blipmqctl: String,
) -> Summary {
    Summary {
        repeats,
        watch_command: format!("{blipmqctl} stats --file STATS_FILE --watch"),
        blipmqctl,
        scenarios: scenarios
            .iter()
            .map(|s| ScenarioOverhead::of(&s.name, results))
            .collect(),
    }
}

fn pct(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{:+.1} %", v * 100.0))
}

fn share(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{:.1} %", v * 100.0))
}

/// CPU seconds in ms (/proc counts in 10 ms ticks: 0 ms = under one tick).
fn millis(secs: f64) -> String {
    format!("{:.0} ms", secs * 1000.0)
}

fn rate(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{} msg/s", human_rate(v)))
}

/// The section and a table of every run.
pub fn render(report: &Report, summary: &Summary, md: &mut String) {
    let _ = write!(
        md,
        "\n## Stats watcher overhead\n\n\
         BlipMQ only. Each scenario ran {} times without and {} times with `{}` beside the broker \
         (alternating, the order swapped every round), from before the warm-up to the last message. \
         Both arms run blipmqd with the same config, `[control] stats_file` on tmpfs included, so the \
         watcher is the only difference. Difference = (mean with − mean without) / mean without; \
         noise = (max − min) / mean of the runs without the watcher; **within noise** when \
         |difference| ≤ noise. Watcher CPU is its own user + system time over the whole run \
         (`/proc/PID/stat`, 10 ms ticks), which also counts in that run's other CPU.\n\n",
        summary.repeats, summary.repeats, summary.watch_command
    );
    *md += "| Scenario | without (mean) | with (mean) | difference | noise (without) | spread with | verdict | watcher CPU per run | broker CPU/M without → with |\n\
            |---|---:|---:|---:|---:|---:|---|---:|---:|\n";
    for row in &summary.scenarios {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} → {} |",
            row.scenario,
            rate(row.mean_without),
            rate(row.mean_with),
            pct(row.difference),
            share(row.noise),
            share(row.noise_with),
            row.verdict.label(),
            row.watcher_cpu_secs.map_or("–".into(), millis),
            row.cpu_per_million_without
                .map_or("–".into(), |c| format!("{c:.3} s")),
            row.cpu_per_million_with
                .map_or("–".into(), |c| format!("{c:.3} s")),
        );
    }
    let skewed: usize = summary.scenarios.iter().map(|s| s.skewed_runs).sum();
    if skewed > 0 {
        let _ = writeln!(
            md,
            "\n{skewed} run(s) shared the machine with other load (marked † below); the noise \
             column includes that."
        );
    }
    *md += "\n### Runs\n\n| Scenario | round | watcher | msgs/s | MB/s | broker CPU/M | other CPU (CPUs) | watcher CPU |\n\
            |---|---:|---|---:|---:|---:|---:|---:|\n";
    for r in &report.results {
        let Some(arm) = &r.stats_watch else { continue };
        let speed = match r.msgs_per_sec {
            Some(v) => format!("{}{}", human_rate(v), if r.skewed { " †" } else { "" }),
            None => format!("**{}**", r.status.label()),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            arm.round,
            if arm.watcher { "with" } else { "without" },
            speed,
            r.mb_per_sec.map_or("–".into(), |v| format!("{v:.1}")),
            r.cpu_secs_per_million
                .map_or("–".into(), |c| format!("{c:.3} s")),
            if r.window_secs > 0.0 {
                format!("{:.2}", r.other_cpu_secs / r.window_secs)
            } else {
                "–".into()
            },
            arm.watcher_cpu_secs.map_or("–".into(), millis),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_verdict_figures() {
        assert_eq!(spread(&[1.0]), None);
        let s = spread(&[90.0, 100.0, 110.0]).unwrap();
        assert!((s - 0.2).abs() < 1e-9);
        let cv = coefficient_of_variation(&[90.0, 100.0, 110.0]).unwrap();
        assert!((cv - 0.1).abs() < 1e-9);
    }
}
