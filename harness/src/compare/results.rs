//! The results of a run as `results.json` holds them, the machine they were
//! measured on, and the comparison with a baseline run.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::CompareError;

/// The `format` field of every results file this tool writes.
pub const FORMAT: &str = "raceless-compare/1";

/// Everything a run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Always [`FORMAT`].
    pub format: String,
    /// When the run finished, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// How the cells were measured.
    pub settings: Settings,
    /// One entry per component run.
    pub components: Vec<ComponentResult>,
    /// The comparison with `--baseline`, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineComparison>,
}

/// The machine a run was measured on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    /// The OS (distribution name when known) and architecture.
    pub os: String,
    /// The kernel release, when known.
    #[serde(default)]
    pub kernel: Option<String>,
    /// The CPU model, when known.
    #[serde(default)]
    pub cpu: Option<String>,
    /// `rustc --version`, when `rustc` is on the path.
    #[serde(default)]
    pub rustc: Option<String>,
    /// `release` or `debug` (a debug build's numbers mean little).
    pub profile: String,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Self {
        let os_name = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let rustc = Command::new(rustc)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{os_name} ({})", std::env::consts::ARCH),
            kernel,
            cpu,
            rustc,
            profile: if cfg!(debug_assertions) {
                "debug".to_string()
            } else {
                "release".to_string()
            },
        }
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} cores", self.cores), self.os.clone()];
        if let Some(k) = &self.kernel {
            parts.push(format!("Linux {k}"));
        }
        if let Some(cpu) = &self.cpu {
            parts.push(cpu.clone());
        }
        parts.push(
            self.rustc
                .clone()
                .unwrap_or_else(|| "rustc: unknown".to_string()),
        );
        parts.push(format!("{} build", self.profile));
        parts.join(", ")
    }
}

/// How the cells were measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// The thread counts.
    pub threads: Vec<usize>,
    /// The measured time of one repetition of a cell, in milliseconds.
    pub duration_ms: f64,
    /// The warm-up of a cell before its repetitions, in milliseconds.
    pub warmup_ms: f64,
    /// Repetitions per cell.
    pub repeats: usize,
    /// `--quick`.
    pub quick: bool,
    /// Threads of each seed-bug reproduction.
    pub reproduction_threads: usize,
    /// Wall time of the whole run, in seconds.
    pub wall_seconds: f64,
}

/// One component's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComponentResult {
    /// The component.
    pub name: String,
    /// Its workloads (empty while the component has none).
    pub workloads: Vec<WorkloadResult>,
    /// Its seed-bug reproduction (absent while it has none).
    #[serde(default)]
    pub reproduction: Option<ReproductionResult>,
}

/// One workload's cells.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// The workload's id.
    pub name: String,
    /// What its operations are.
    pub description: String,
    /// The implementations, in the definition's order (lock-free first).
    pub impls: Vec<String>,
    /// One cell per implementation and thread count.
    pub cells: Vec<Cell>,
}

impl WorkloadResult {
    /// The cell of `imp` at `threads`, if it was measured.
    pub fn cell(&self, imp: &str, threads: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.implementation == imp && c.threads == threads)
    }
}

/// One implementation at one thread count: the throughput of each
/// repetition and their summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// The implementation (`lock-free`, `std-mutex`, `parking-lot`, …).
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Threads.
    pub threads: usize,
    /// Operations per second (all threads together) of each repetition.
    pub samples: Vec<f64>,
    /// Their median.
    pub median: f64,
    /// Their minimum.
    pub min: f64,
    /// Their maximum.
    pub max: f64,
    /// Why the cell has no samples (the workload panicked), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Cell {
    /// A cell from its samples (operations per second).
    pub fn from_samples(implementation: &str, threads: usize, mut samples: Vec<f64>) -> Self {
        let sorted = {
            samples.retain(|s| s.is_finite());
            let mut s = samples.clone();
            s.sort_by(f64::total_cmp);
            s
        };
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Cell {
            implementation: implementation.to_string(),
            threads,
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            samples,
            error: None,
        }
    }

    /// Half the range of the samples, as a fraction of the median (the
    /// `±` of the tables).
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / 2.0 / self.median
        } else {
            0.0
        }
    }
}

/// A seed-bug reproduction's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReproductionResult {
    /// What the racy variant loses (`"lost increments"`, …).
    pub what_is_lost: String,
    /// Threads per round.
    pub threads: usize,
    /// Rounds run on each variant.
    pub rounds: usize,
    /// Anomalies the racy check-then-act variant produced.
    pub racy: u64,
    /// Anomalies the lock-free type produced (expected: 0).
    pub lock_free: u64,
    /// Wall time of the racy runs, in milliseconds.
    pub racy_ms: f64,
    /// Wall time of the lock-free run, in milliseconds.
    pub lock_free_ms: f64,
    /// Why the reproduction did not finish (it panicked), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The change of every cell present in both runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineComparison {
    /// The baseline's machine.
    pub machine: Machine,
    /// One entry per cell present in both runs.
    pub changes: Vec<Change>,
}

impl BaselineComparison {
    /// How many cells regressed beyond the measured spread.
    pub fn regressions(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.verdict == Verdict::Regression)
            .count()
    }
}

/// One cell's change against the baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// The component.
    pub component: String,
    /// The workload.
    pub workload: String,
    /// The implementation.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Threads.
    pub threads: usize,
    /// The baseline's median (ops/s).
    pub old: f64,
    /// This run's median (ops/s).
    pub new: f64,
    /// `new / old - 1`.
    pub change: f64,
    /// Whether the change is beyond the measured spread.
    pub verdict: Verdict,
}

/// Whether a change exceeds the noise the two runs measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Slower by more than the two runs' spreads together.
    Regression,
    /// Faster by more than the two runs' spreads together.
    Improvement,
    /// Within the spread: noise.
    Unchanged,
}

/// Reads a results file written by an earlier run.
pub fn load_baseline(path: &Path) -> Result<Results, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|e| CompareError::Baseline {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let results: Results = serde_json::from_str(&text).map_err(|e| CompareError::Baseline {
        path: path.to_path_buf(),
        reason: format!("not a results.json of this tool ({e})"),
    })?;
    if results.format != FORMAT {
        return Err(CompareError::Baseline {
            path: path.to_path_buf(),
            reason: format!("format '{}', expected '{FORMAT}'", results.format),
        });
    }
    Ok(results)
}

/// Compares every cell of `new` with the same cell (component, workload,
/// implementation, threads) of `old`.
///
/// A cell regressed when its median fell by more than the sum of both
/// runs' half-ranges (`(max - min) / 2`): the two runs' ranges around
/// their medians do not overlap, so the drop is beyond what either run
/// measured as noise. Improvements are judged the same way.
pub fn compare(old: &Results, new: &Results) -> BaselineComparison {
    let mut changes = Vec::new();
    for comp in &new.components {
        let Some(old_comp) = old.components.iter().find(|c| c.name == comp.name) else {
            continue;
        };
        for wl in &comp.workloads {
            let Some(old_wl) = old_comp.workloads.iter().find(|w| w.name == wl.name) else {
                continue;
            };
            for cell in &wl.cells {
                let Some(old_cell) = old_wl.cell(&cell.implementation, cell.threads) else {
                    continue;
                };
                if old_cell.median <= 0.0 || cell.median <= 0.0 {
                    continue;
                }
                let noise = (old_cell.max - old_cell.min) / 2.0 + (cell.max - cell.min) / 2.0;
                let delta = cell.median - old_cell.median;
                let verdict = if -delta > noise {
                    Verdict::Regression
                } else if delta > noise {
                    Verdict::Improvement
                } else {
                    Verdict::Unchanged
                };
                changes.push(Change {
                    component: comp.name.clone(),
                    workload: wl.name.clone(),
                    implementation: cell.implementation.clone(),
                    threads: cell.threads,
                    old: old_cell.median,
                    new: cell.median,
                    change: cell.median / old_cell.median - 1.0,
                    verdict,
                });
            }
        }
    }
    BaselineComparison {
        machine: old.machine.clone(),
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results_with(samples: Vec<f64>) -> Results {
        Results {
            format: FORMAT.to_string(),
            finished_unix: 0,
            machine: Machine::detect(),
            settings: Settings {
                threads: vec![1],
                duration_ms: 1.0,
                warmup_ms: 1.0,
                repeats: samples.len(),
                quick: true,
                reproduction_threads: 2,
                wall_seconds: 0.0,
            },
            components: vec![ComponentResult {
                name: "c".into(),
                workloads: vec![WorkloadResult {
                    name: "w".into(),
                    description: String::new(),
                    impls: vec!["lock-free".into()],
                    cells: vec![Cell::from_samples("lock-free", 1, samples)],
                }],
                reproduction: None,
            }],
            baseline: None,
        }
    }

    #[test]
    fn median_and_spread() {
        let cell = Cell::from_samples("x", 1, vec![90.0, 110.0, 100.0]);
        assert_eq!(cell.median, 100.0);
        assert!((cell.spread() - 0.1).abs() < 1e-9);
        assert_eq!(Cell::from_samples("x", 1, vec![1.0, 3.0]).median, 2.0);
        assert_eq!(Cell::from_samples("x", 1, vec![]).median, 0.0);
    }

    #[test]
    fn regressions_are_beyond_the_spread() {
        let old = results_with(vec![95.0, 100.0, 105.0]);
        let verdict = |samples| compare(&old, &results_with(samples)).changes[0].verdict;
        assert_eq!(verdict(vec![80.0, 85.0, 90.0]), Verdict::Regression);
        assert_eq!(verdict(vec![88.0, 92.0, 100.0]), Verdict::Unchanged);
        assert_eq!(verdict(vec![120.0, 121.0, 122.0]), Verdict::Improvement);
    }

    #[test]
    fn round_trips_through_json() {
        let r = results_with(vec![1.0, 2.0, 3.0]);
        let text = serde_json::to_string(&r).unwrap();
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back.components[0].workloads[0].cells[0].median, 2.0);
    }
}
