//! The comparison run end to end: a `--quick` run with a tiny duration on
//! one component writes `report.md`, `throughput.svg` and `results.json`,
//! the JSON parses back, the racy variant's anomalies are non-zero and the
//! lock-free type's are zero; `--baseline` reads it back; bad options fail.
//!
//! A demo component (an atomic counter against mutex-protected ones, with a
//! deterministic lost-update reproduction) exercises the framework itself;
//! the real components are checked by the same run once they are wired in.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use raceless::baseline::{Lock, MutexKind, ParkingLotMutex, StdMutex};
use raceless_harness::compare::{self, Component, Options, Results};
use raceless_harness::threads::run_concurrently;
use raceless_harness::workload::{impl_name, Reproduction, Workload, WorkloadDef};

struct AtomicCounter(AtomicU64);

impl Workload for AtomicCounter {
    fn run(&self, _thread: usize, _threads: usize, ops: u64) {
        for _ in 0..ops {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct MutexCounter<M: MutexKind>(M::Mutex<u64>);

impl<M: MutexKind> Workload for MutexCounter<M> {
    fn run(&self, _thread: usize, _threads: usize, ops: u64) {
        for _ in 0..ops {
            self.0.with(|n| *n += 1);
        }
    }
}

/// The floor of the demo: each thread counts on its own (nothing shared).
struct Unshared;

impl Workload for Unshared {
    fn run(&self, _thread: usize, _threads: usize, ops: u64) {
        let mut n = 0u64;
        for _ in 0..ops {
            n = std::hint::black_box(n + 1);
        }
    }
}

fn demo_workloads() -> Vec<WorkloadDef> {
    vec![WorkloadDef {
        component: "demo",
        name: "one-counter",
        description: "Every thread increments one shared counter.",
        impls: vec![
            (impl_name::LOCK_FREE, || {
                Box::new(AtomicCounter(AtomicU64::new(0)))
            }),
            (impl_name::STD_MUTEX, || {
                Box::new(MutexCounter::<StdMutex>(Lock::new(0)))
            }),
            (impl_name::PARKING_LOT, || {
                Box::new(MutexCounter::<ParkingLotMutex>(Lock::new(0)))
            }),
            ("unshared-floor", || Box::new(Unshared)),
        ],
    }]
}

/// Each round, every thread reads the counter, all wait at a barrier, then
/// each writes what it read plus one: a deterministic read-then-write race
/// that loses `threads - 1` increments per round.
fn racy_counter(threads: usize, rounds: usize) -> u64 {
    let barrier = Barrier::new(threads);
    (0..rounds)
        .map(|_| {
            let counter = AtomicU64::new(0);
            run_concurrently(threads, |_| {
                let seen = counter.load(Ordering::SeqCst);
                barrier.wait();
                counter.store(seen + 1, Ordering::SeqCst);
            });
            threads as u64 - counter.load(Ordering::SeqCst)
        })
        .sum()
}

/// The same rounds with `fetch_add`: nothing is lost.
fn atomic_counter(threads: usize, rounds: usize) -> u64 {
    let barrier = Barrier::new(threads);
    (0..rounds)
        .map(|_| {
            let counter = AtomicU64::new(0);
            run_concurrently(threads, |_| {
                barrier.wait();
                counter.fetch_add(1, Ordering::SeqCst);
            });
            threads as u64 - counter.load(Ordering::SeqCst)
        })
        .sum()
}

fn demo_reproduction() -> Reproduction {
    Reproduction {
        component: "demo",
        what_is_lost: "lost increments",
        racy: racy_counter,
        lock_free: atomic_counter,
    }
}

fn demo() -> Vec<Component> {
    vec![Component {
        name: "demo",
        workloads: demo_workloads,
        reproduction: Some(demo_reproduction),
    }]
}

fn quick_args<'a>(component: &'a str, out: &'a Path) -> Vec<String> {
    [
        "compare",
        "--quick",
        "--duration",
        "3ms",
        "--repeats",
        "2",
        "--threads",
        "1,2",
        "--components",
        component,
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

/// Checks the three files of a run and returns the parsed results.json.
fn check_files(out: &Path, component: &str) -> Results {
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(report.contains(&format!("## {component}")), "{report}");
    assert!(report.contains("Seed-bug reproduction"));
    assert!(report.contains("Machine: "));
    let svg = std::fs::read_to_string(out.join("throughput.svg")).expect("throughput.svg");
    assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let results: Results = serde_json::from_str(&json).expect("results.json parses");
    assert_eq!(results.components.len(), 1);
    assert_eq!(results.components[0].name, component);
    results
}

fn assert_racy_loses_lock_free_does_not(results: &Results) {
    let r = results.components[0]
        .reproduction
        .as_ref()
        .expect("a reproduction ran");
    assert_eq!(r.error, None);
    assert!(r.racy > 0, "the racy variant lost nothing: {r:?}");
    assert_eq!(r.lock_free, 0, "the lock-free type lost something: {r:?}");
}

#[test]
fn demo_quick_run_writes_reports_and_shows_the_race() {
    let dir = tempfile::tempdir().unwrap();
    let components = demo();
    let options = Options::parse_from(&components, quick_args("demo", dir.path())).unwrap();
    let outcome = compare::run(&components, &options).unwrap();
    let results = check_files(dir.path(), "demo");
    assert_eq!(outcome.results.components[0].workloads.len(), 1);

    assert_eq!(results.format, compare::results::FORMAT);
    assert_eq!(results.format, "raceless-compare/2");
    let wl = &results.components[0].workloads[0];
    assert_eq!(wl.cells.len(), 4 * 2);
    for cell in &wl.cells {
        assert_eq!(cell.samples.len(), 2);
        assert!(cell.median > 0.0 && cell.min <= cell.median && cell.median <= cell.max);
    }
    // Paired ratios: the lock-free row against each other row, one per
    // round, at every thread count, equal to the samples' quotients.
    assert_eq!(wl.ratios.len(), 3 * 2);
    for r in &wl.ratios {
        assert_eq!(r.ratios.len(), 2, "{r:?}");
        let lf = wl.cell("lock-free", r.threads).unwrap();
        let other = wl.cell(&r.against, r.threads).unwrap();
        for (k, ratio) in r.ratios.iter().enumerate() {
            assert!((ratio - lf.samples[k] / other.samples[k]).abs() < 1e-9 * ratio);
        }
        assert!(r.min <= r.median && r.median <= r.max);
    }
    for t in [1, 2] {
        let best = wl.vs_best_peer(t).expect("a best peer");
        assert!(["std-mutex", "parking-lot"].contains(&best.against.as_str()));
        assert_eq!(wl.vs_floor(t).expect("a floor").against, "unshared-floor");
    }
    assert_racy_loses_lock_free_does_not(&results);
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("lock-free / std-mutex"));
    assert!(report.contains("geometric mean"));
    assert!(report.contains("paired ratios"));
    assert!(
        report.contains("vs best peer @1") && report.contains("vs floor @2"),
        "{report}"
    );
    let header = report
        .lines()
        .find(|l| l.starts_with("| threads"))
        .expect("a workload table");
    assert!(
        header.contains("vs best peer") && header.contains("vs floor"),
        "{header}"
    );
    assert!(report.contains("lost increments"));

    // A second run against the first: every cell compared.
    let baseline = dir.path().join("baseline.json");
    std::fs::copy(dir.path().join("results.json"), &baseline).unwrap();
    let mut args = quick_args("demo", dir.path());
    args.extend(["--baseline".to_string(), baseline.display().to_string()]);
    let options = Options::parse_from(&components, args).unwrap();
    let outcome = compare::run(&components, &options).unwrap();
    let cmp = outcome.results.baseline.expect("baseline comparison");
    assert_eq!(cmp.changes.len(), 8);
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("Change against the baseline"));
}

#[test]
fn update_docs_refreshes_generated_sections() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("benchmarks.md");
    std::fs::write(
        &doc,
        "# Benchmarks\n\n<!-- BEGIN GENERATED: results (x) -->\nold\n<!-- END GENERATED: results -->\n",
    )
    .unwrap();
    // A component page beside it with a performance section.
    let page = dir.path().join("demo.md");
    std::fs::write(
        &page,
        "# demo\n\n## Performance\n\nprose\n\n<!-- BEGIN GENERATED: performance (x) -->\nstale\n<!-- END GENERATED: performance -->\n\n## Next\n",
    )
    .unwrap();
    let components = demo();
    let mut args = quick_args("demo", dir.path());
    args.extend(["--update-docs".to_string(), doc.display().to_string()]);
    let options = Options::parse_from(&components, args).unwrap();
    compare::run(&components, &options).unwrap();
    let page = std::fs::read_to_string(&page).unwrap();
    assert!(!page.contains("stale"), "{page}");
    assert!(page.contains("### demo / one-counter"), "{page}");
    assert!(
        page.contains("prose") && page.ends_with("## Next\n"),
        "{page}"
    );
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(!text.contains("\nold\n"));
    assert!(text.contains("one-counter"));
    assert!(text.contains("Every thread increments one shared counter."));
    assert!(text.contains("benchmarks-throughput.svg"));
    assert!(dir.path().join("benchmarks-throughput.svg").exists());
}

#[test]
fn bad_options_fail_with_a_message() {
    let components = demo();
    let parse = |args: &[&str]| {
        Options::parse_from(
            &components,
            std::iter::once("compare").chain(args.iter().copied()),
        )
    };
    let err = parse(&["--components", "nope"]).unwrap_err();
    assert!(
        err.to_string().contains("unknown component 'nope'"),
        "{err}"
    );
    assert!(err.to_string().contains("known: demo"), "{err}");
    assert!(parse(&["--threads", "0"]).is_err());
    assert!(parse(&["--threads", "two"]).is_err());
    assert!(parse(&["--duration", "fast"]).is_err());
    assert!(parse(&["--format", "xml"]).is_err());
    assert!(parse(&["--frobnicate"]).is_err());
    for args in [
        &["compare", "--threads", "0"][..],
        &["compare", "--components", "nope"],
    ] {
        assert_ne!(compare::main_with(&components, args), ExitCode::SUCCESS);
    }

    // A baseline that is not a results file: an error before measuring.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"not\": \"results\"}").unwrap();
    let mut args = quick_args("demo", dir.path());
    args.extend(["--baseline".to_string(), bogus.display().to_string()]);
    let options = Options::parse_from(&components, args).unwrap();
    let err = compare::run(&components, &options).err().expect("an error");
    assert!(err.to_string().contains("not a results.json"), "{err}");
    assert!(!dir.path().join("results.json").exists());

    // A results file of a format this version does not read: refused,
    // saying so.
    let old = dir.path().join("old.json");
    std::fs::write(
        &old,
        "{\"format\": \"raceless-compare/9\", \"components\": []}",
    )
    .unwrap();
    let mut args = quick_args("demo", dir.path());
    args.extend(["--baseline".to_string(), old.display().to_string()]);
    let options = Options::parse_from(&components, args).unwrap();
    let err = compare::run(&components, &options).err().expect("an error");
    let err = err.to_string();
    assert!(
        err.contains("raceless-compare/9") && err.contains("another version"),
        "{err}"
    );
    assert!(!dir.path().join("results.json").exists());
}

/// A real component: a quick run of `breaker` (its racy variant loses
/// thousands of increments per round, so the check is reliable), or of the
/// first wired-in component if `breaker` is not.
#[test]
fn real_component_quick_run() {
    let all = compare::components();
    let ready = |c: &&Component| c.reproduction.is_some() && !(c.workloads)().is_empty();
    let Some(component) = all
        .iter()
        .filter(ready)
        .find(|c| c.name == "breaker")
        .or_else(|| all.iter().find(ready))
    else {
        eprintln!("no component with workloads and a reproduction has landed yet");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = Options::parse_from(&all, quick_args(component.name, dir.path())).unwrap();
    compare::run(&all, &options).unwrap();
    let results = check_files(dir.path(), component.name);
    assert!(!results.components[0].workloads.is_empty());
    assert!(results.components[0]
        .workloads
        .iter()
        .flat_map(|w| &w.cells)
        .all(|c| c.error.is_none() && c.median > 0.0));
    assert_racy_loses_lock_free_does_not(&results);
}
