//! The results of a run as `results.json` holds them, the machine they were
//! measured on, and the comparison with a baseline run.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::CompareError;
use crate::workload::impl_name::STD_MUTEX;

/// The `format` field of every results file this tool writes. Version 2:
/// the rows of a workload and thread count are measured interleaved
/// (sample `k` of every cell comes from round `k`), and each workload
/// carries its paired ratios ([`WorkloadResult::ratios`]).
pub const FORMAT: &str = "raceless-compare/2";

/// The format of the first version of this tool, which measured the rows
/// of a workload one after another (no rounds, no paired ratios). Its
/// cells still serve as a `--baseline`: only their medians and ranges are
/// compared.
pub const FORMAT_1: &str = "raceless-compare/1";

/// What a row of a workload is, for the summary's "vs best peer" and
/// "vs floor" columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// One of raceless's own types (`lock-free`, `lock-free-by-name`, …).
    Raceless,
    /// A real implementation a user could pick instead: the mutex
    /// baselines, `sharded-mutex`, the crates.io peers, an `RwLock`.
    Peer,
    /// A reference row that is not a full implementation: the least the
    /// design costs (`*-floor`) or a bare primitive (`atomic-u64`,
    /// `bare-arcswap`).
    Floor,
    /// Not comparable in-process (the `redis` rows: a network round trip).
    Remote,
}

/// The bare-primitive reference rows that are floors without the `-floor`
/// suffix.
const FLOOR_ROWS: [&str; 2] = ["atomic-u64", "bare-arcswap"];

/// Classifies a row by its name: `lock-free*` is raceless's, `*-floor` and
/// the bare primitives are floors, `redis` is remote, anything else a peer.
pub fn row_kind(name: &str) -> RowKind {
    if name.starts_with("lock-free") {
        RowKind::Raceless
    } else if name.ends_with("-floor") || FLOOR_ROWS.contains(&name) {
        RowKind::Floor
    } else if name == "redis" {
        RowKind::Remote
    } else {
        RowKind::Peer
    }
}

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
    /// The lock-free row ÷ every other row, per thread count, paired by
    /// round.
    #[serde(default)]
    pub ratios: Vec<PairedRatio>,
}

/// The lock-free row's throughput ÷ another row's in the same round, for
/// one thread count: one ratio per round both rows completed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairedRatio {
    /// Threads.
    pub threads: usize,
    /// The other row (the denominator).
    pub against: String,
    /// One ratio per round, in round order.
    pub ratios: Vec<f64>,
    /// Their median (the number the tables give).
    pub median: f64,
    /// Their minimum.
    pub min: f64,
    /// Their maximum.
    pub max: f64,
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl WorkloadResult {
    /// The lock-free implementation's name (by name, else the first, as
    /// [`crate::workload::WorkloadDef`] orders them).
    pub fn lock_free_name(&self) -> &str {
        use crate::workload::impl_name::LOCK_FREE;
        self.impls
            .iter()
            .find(|i| i.as_str() == LOCK_FREE)
            .or(self.impls.first())
            .map_or(LOCK_FREE, String::as_str)
    }

    /// Fills [`WorkloadResult::ratios`] from the cells: for every thread
    /// count and every other row, sample `k` of the lock-free row ÷ sample
    /// `k` of the other (both from round `k`).
    pub fn compute_ratios(&mut self) {
        let lf = self.lock_free_name().to_string();
        let mut ratios = Vec::new();
        let threads: Vec<usize> = {
            let mut t: Vec<usize> = self.cells.iter().map(|c| c.threads).collect();
            t.dedup();
            t
        };
        for t in threads {
            let Some(a) = self.cell(&lf, t).filter(|c| c.error.is_none()) else {
                continue;
            };
            for other in self.impls.iter().filter(|i| **i != lf) {
                let Some(b) = self.cell(other, t).filter(|c| c.error.is_none()) else {
                    continue;
                };
                let r: Vec<f64> = a
                    .samples
                    .iter()
                    .zip(&b.samples)
                    .filter(|(x, y)| **x > 0.0 && **y > 0.0)
                    .map(|(x, y)| x / y)
                    .collect();
                if r.is_empty() {
                    continue;
                }
                ratios.push(PairedRatio {
                    threads: t,
                    against: other.clone(),
                    median: median(&r),
                    min: r.iter().copied().fold(f64::INFINITY, f64::min),
                    max: r.iter().copied().fold(0.0, f64::max),
                    ratios: r,
                });
            }
        }
        self.ratios = ratios;
    }

    /// The paired ratio of the lock-free row against `against` at
    /// `threads`, if both were measured.
    pub fn ratio(&self, against: &str, threads: usize) -> Option<&PairedRatio> {
        self.ratios
            .iter()
            .find(|r| r.threads == threads && r.against == against)
    }

    /// The fastest row of `kind` at `threads` (highest median), if any.
    pub fn fastest(&self, kind: RowKind, threads: usize) -> Option<&str> {
        self.impls
            .iter()
            .filter(|i| row_kind(i) == kind)
            .filter_map(|i| self.cell(i, threads).filter(|c| c.error.is_none()))
            .filter(|c| c.median > 0.0)
            .max_by(|a, b| a.median.total_cmp(&b.median))
            .map(|c| c.implementation.as_str())
    }

    /// "vs best peer": the paired ratio against the fastest peer row
    /// (by median) at `threads`.
    pub fn vs_best_peer(&self, threads: usize) -> Option<&PairedRatio> {
        self.ratio(self.fastest(RowKind::Peer, threads)?, threads)
    }

    /// "vs floor": the paired ratio against the floor row (the fastest, if
    /// there are several) at `threads`.
    pub fn vs_floor(&self, threads: usize) -> Option<&PairedRatio> {
        self.ratio(self.fastest(RowKind::Floor, threads)?, threads)
    }

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
    /// Operations per second (all threads together) of each repetition;
    /// sample `k` is from round `k`, like every other cell of its workload
    /// and thread count.
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
        let median = median(&sorted);
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
    /// The baseline's format ([`FORMAT`] or [`FORMAT_1`]).
    #[serde(default)]
    pub format: String,
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
    /// The change relative to the `std-mutex` row's change in the same
    /// workload and thread count, `(new / old) / (std_new / std_old) - 1`,
    /// when both runs have that row (not for the `std-mutex` row itself).
    /// The mutex baseline's code rarely changes, so this cancels most of
    /// a machine phase that slowed or sped up the whole of one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against_std: Option<f64>,
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

/// Reads a results file written by an earlier run: this version's
/// [`FORMAT`] or the first version's [`FORMAT_1`] (rows measured one after
/// another; its cells compare like any other). A file of another format
/// version is refused with a message that says so.
pub fn load_baseline(path: &Path) -> Result<Results, CompareError> {
    let bad = |reason: String| CompareError::Baseline {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("not a results.json of this tool ({e})")))?;
    match value.get("format").and_then(serde_json::Value::as_str) {
        Some(FORMAT | FORMAT_1) => {}
        Some(other) if other.starts_with("raceless-compare/") => {
            return Err(bad(format!(
                "format '{other}' of another version of this tool; this version reads \
                 '{FORMAT}' and '{FORMAT_1}': measure the baseline again"
            )))
        }
        _ => {
            return Err(bad(
                "not a results.json of this tool (no 'format' field of raceless-compare)"
                    .to_string(),
            ))
        }
    }
    serde_json::from_value(value).map_err(|e| bad(format!("not a results.json of this tool ({e})")))
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
                let std_change = (cell.implementation != STD_MUTEX)
                    .then(|| {
                        let now = wl.cell(STD_MUTEX, cell.threads)?.median;
                        let then = old_wl.cell(STD_MUTEX, cell.threads)?.median;
                        (now > 0.0 && then > 0.0).then_some(now / then)
                    })
                    .flatten();
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
                    against_std: std_change.map(|s| cell.median / old_cell.median / s - 1.0),
                    verdict,
                });
            }
        }
    }
    BaselineComparison {
        machine: old.machine.clone(),
        format: old.format.clone(),
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
                    ratios: Vec::new(),
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
    fn rows_are_classified_by_name() {
        assert_eq!(row_kind("lock-free"), RowKind::Raceless);
        assert_eq!(row_kind("lock-free-handle"), RowKind::Raceless);
        for peer in [
            "std-mutex",
            "parking-lot",
            "sharded-mutex",
            "recloser",
            "rwlock",
        ] {
            assert_eq!(row_kind(peer), RowKind::Peer, "{peer}");
        }
        for floor in [
            "slot-floor",
            "sequenced-floor",
            "atomic-u64",
            "bare-arcswap",
        ] {
            assert_eq!(row_kind(floor), RowKind::Floor, "{floor}");
        }
        assert_eq!(row_kind("redis"), RowKind::Remote);
    }

    #[test]
    fn ratios_are_paired_by_round() {
        let mut wl = WorkloadResult {
            name: "w".into(),
            description: String::new(),
            impls: ["lock-free", "std-mutex", "sharded-mutex", "x-floor"]
                .map(String::from)
                .to_vec(),
            cells: vec![
                // A slow second round hits every row.
                Cell::from_samples("lock-free", 4, vec![200.0, 100.0, 220.0]),
                Cell::from_samples("std-mutex", 4, vec![100.0, 50.0, 100.0]),
                Cell::from_samples("sharded-mutex", 4, vec![160.0, 80.0, 200.0]),
                Cell::from_samples("x-floor", 4, vec![400.0, 200.0, 440.0]),
            ],
            ratios: Vec::new(),
        };
        wl.compute_ratios();
        let std = wl.ratio("std-mutex", 4).unwrap();
        assert_eq!(std.ratios, vec![2.0, 2.0, 2.2]);
        assert_eq!(std.median, 2.0);
        // Against the medians (200 / 100) it would be the same; against
        // sharded-mutex the paired ratios (1.25, 1.25, 1.1) differ from
        // the ratio of medians (200 / 160).
        let best = wl.vs_best_peer(4).unwrap();
        assert_eq!(best.against, "sharded-mutex");
        assert_eq!(best.median, 1.25);
        let floor = wl.vs_floor(4).unwrap();
        assert_eq!((floor.against.as_str(), floor.median), ("x-floor", 0.5));
        assert!(wl.ratio("lock-free", 4).is_none());
        assert!(wl.vs_best_peer(8).is_none());
    }

    #[test]
    fn a_baseline_of_an_unknown_format_is_refused_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("raceless-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("old.json");
        let mut r = results_with(vec![1.0]);
        r.format = "raceless-compare/0".into();
        std::fs::write(&file, serde_json::to_string(&r).unwrap()).unwrap();
        let err = load_baseline(&file).unwrap_err().to_string();
        assert!(
            err.contains("another version") && err.contains(FORMAT),
            "{err}"
        );
        for format in [FORMAT, FORMAT_1] {
            r.format = format.into();
            std::fs::write(&file, serde_json::to_string(&r).unwrap()).unwrap();
            let old = load_baseline(&file).unwrap();
            assert_eq!(compare(&old, &r).format, format);
        }
        std::fs::write(&file, "{\"format\": \"other\"}").unwrap();
        let err = load_baseline(&file).unwrap_err().to_string();
        assert!(err.contains("not a results.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn round_trips_through_json() {
        let r = results_with(vec![1.0, 2.0, 3.0]);
        let text = serde_json::to_string(&r).unwrap();
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back.components[0].workloads[0].cells[0].median, 2.0);
    }
}
