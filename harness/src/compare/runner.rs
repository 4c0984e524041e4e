//! The measurement and the seed-bug reproductions.
//!
//! A *cell* is one implementation (a *row*) of one workload at one thread
//! count. The cells of one workload and thread count are measured together,
//! interleaved ([`measure_interleaved`]): every row gets a fresh instance
//! and its own threads, a warm-up (which also sizes the batches), then
//! `repeats` rounds each run every row once for a fixed duration, the
//! starting row rotating from round to round. In a row's turn its
//! `threads` threads, released together by a barrier, call
//! [`Workload::run`] in batches until the main thread raises the stop flag;
//! the sample is all threads' operations divided by the wall time from the
//! release to the last thread's end (so the overshoot of the last batch is
//! counted on both sides). The report gives each cell's median and spread
//! and, for the lock-free row against every other row, the median of the
//! per-round (paired) ratios.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::results::{
    Cell, ComponentResult, Machine, ReproductionResult, Results, Settings, WorkloadResult, FORMAT,
};
use super::{Component, Options};
use crate::workload::{Reproduction, Workload, WorkloadDef};

/// The shortest and longest derived duration of one repetition.
const MIN_DURATION: Duration = Duration::from_millis(5);
const MAX_DURATION: Duration = Duration::from_secs(1);
/// Batches grow (during the warm-up) until one takes this long, at most.
const MAX_BATCH_TIME: Duration = Duration::from_millis(1);
const MAX_BATCH: u64 = 1 << 24;

/// Threads of every seed-bug reproduction: more than the 2 cores of the
/// reference machine, so a check-then-act window is preempted often.
pub const REPRODUCTION_THREADS: usize = 4;

/// How long one repetition of a cell runs: `options.duration`, or the
/// time budget shared by `cells` cells of `repeats` repetitions and a
/// half-length warm-up each, clamped to 5 ms ..= 1 s.
pub fn cell_duration(options: &Options, cells: usize) -> Duration {
    if let Some(d) = options.duration {
        return d;
    }
    if cells == 0 {
        return MIN_DURATION;
    }
    let per_cell = options.budget().as_secs_f64() / cells as f64;
    let d = Duration::from_secs_f64(per_cell / (options.repeats as f64 + 0.5));
    d.clamp(MIN_DURATION, MAX_DURATION)
}

/// The warm-up of a cell whose repetitions last `duration`.
pub fn warmup(duration: Duration) -> Duration {
    (duration / 2).max(Duration::from_millis(2))
}

/// Runs every cell and reproduction of `components` (already filtered).
pub fn run(components: &[Component], options: &Options) -> Results {
    let started = Instant::now();
    let defs: Vec<Vec<WorkloadDef>> = components.iter().map(|c| (c.workloads)()).collect();
    let cells: usize = defs
        .iter()
        .flatten()
        .map(|d| d.impls.len() * options.threads.len())
        .sum();
    let reproductions = components
        .iter()
        .filter(|c| c.reproduction.is_some())
        .count();
    let duration = cell_duration(options, cells);
    let warmup = warmup(duration);

    let progress = ProgressBar::with_draw_target(
        Some((cells + reproductions) as u64),
        ProgressDrawTarget::stderr(),
    );
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let estimate = (warmup + duration * options.repeats as u32) * cells as u32;
    progress.println(format!(
        "{cells} cells × {} repetitions of {} ms (+{} ms warm-up): about {:.0} s, then {reproductions} reproductions",
        options.repeats,
        duration.as_millis(),
        warmup.as_millis(),
        estimate.as_secs_f64()
    ));

    let mut out = Vec::new();
    for (component, defs) in components.iter().zip(&defs) {
        let mut workloads = Vec::new();
        for def in defs {
            let mut result = WorkloadResult {
                name: def.name.to_string(),
                description: def.description.to_string(),
                impls: def.impls.iter().map(|(n, _)| n.to_string()).collect(),
                cells: Vec::new(),
                ratios: Vec::new(),
            };
            for &threads in &options.threads {
                progress.set_message(format!(
                    "{}/{} ×{threads} ({} rows interleaved)",
                    component.name,
                    def.name,
                    def.impls.len()
                ));
                // Every row's instance is built before any is measured.
                let built: Vec<Result<Box<dyn Workload>, String>> = def
                    .impls
                    .iter()
                    .map(|&(_, make)| {
                        catch_unwind(AssertUnwindSafe(make)).map_err(|p| panic_message(&p))
                    })
                    .collect();
                let rows: Vec<Result<&dyn Workload, String>> = built
                    .iter()
                    .map(|b| b.as_ref().map(|w| &**w).map_err(Clone::clone))
                    .collect();
                let measured =
                    measure_interleaved(&rows, threads, warmup, duration, options.repeats);
                drop(rows);
                drop(built);
                for (&(name, _), measured) in def.impls.iter().zip(measured) {
                    result.cells.push(match measured {
                        Ok(samples) => Cell::from_samples(name, threads, samples),
                        Err(message) => Cell {
                            error: Some(message),
                            ..Cell::from_samples(name, threads, Vec::new())
                        },
                    });
                }
                progress.inc(def.impls.len() as u64);
            }
            result.compute_ratios();
            workloads.push(result);
        }
        let reproduction = component.reproduction.map(|make| {
            progress.set_message(format!("{}: seed-bug reproduction", component.name));
            let r = reproduce(&make(), REPRODUCTION_THREADS, options.quick);
            progress.inc(1);
            r
        });
        out.push(ComponentResult {
            name: component.name.to_string(),
            workloads,
            reproduction,
        });
    }
    progress.finish_and_clear();

    Results {
        format: FORMAT.to_string(),
        finished_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: Machine::detect(),
        settings: Settings {
            threads: options.threads.clone(),
            duration_ms: duration.as_secs_f64() * 1e3,
            warmup_ms: warmup.as_secs_f64() * 1e3,
            repeats: options.repeats,
            quick: options.quick,
            reproduction_threads: REPRODUCTION_THREADS,
            wall_seconds: started.elapsed().as_secs_f64(),
        },
        components: out,
        baseline: None,
    }
}

/// Measures one cell alone: [`measure_interleaved`] with one row.
pub fn measure(
    workload: &dyn Workload,
    threads: usize,
    warmup: Duration,
    duration: Duration,
    repeats: usize,
) -> Result<Vec<f64>, String> {
    measure_interleaved(&[Ok(workload)], threads, warmup, duration, repeats)
        .pop()
        .unwrap_or_else(|| Err("no row".to_string()))
}

/// The worker threads of one cell group and what they share with the main
/// thread. One pool of `threads` threads runs every row of the group (one
/// row per phase), so the process never holds more measuring threads than
/// the cell's thread count: per-thread state inside the libraries measured
/// (arc-swap's debt lists, epoch participants, thread-local caches) is the
/// size a server with that many threads would see, for every row alike.
/// The threads live as long as the cell group, so each row's batch size
/// and thread-local state carry from its warm-up into every round.
struct Pool {
    /// The row the next phase runs.
    row: AtomicUsize,
    stop: AtomicBool,
    quit: AtomicBool,
    total: AtomicU64,
    panicked: Mutex<Option<String>>,
    barrier: Barrier,
}

impl Pool {
    fn new(threads: usize) -> Self {
        Pool {
            row: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            total: AtomicU64::new(0),
            panicked: Mutex::new(None),
            barrier: Barrier::new(threads + 1),
        }
    }

    /// One worker thread: waits at the barrier for each phase, runs
    /// batches of the phase's row until `stop`, adds its count, waits at
    /// the barrier again.
    fn work(
        &self,
        workloads: &[Result<&dyn Workload, String>],
        t: usize,
        threads: usize,
        target: Duration,
    ) {
        // Per row: grows (doubling) during the row's warm-up until a batch
        // takes about `target`, then stays.
        let mut sizes = vec![1u64; workloads.len()];
        let mut warming = vec![true; workloads.len()];
        loop {
            self.barrier.wait();
            // Relaxed (here, for `row` and for `stop`): the flags are
            // written before, and read after, a barrier wait (a mutex
            // inside), which orders them; during a phase `stop` only ends
            // the loop, and the counts reach the main thread through the
            // end barrier.
            if self.quit.load(Ordering::Relaxed) {
                break;
            }
            let r = self.row.load(Ordering::Relaxed);
            let (Some(Ok(workload)), Some(size)) = (workloads.get(r), sizes.get_mut(r)) else {
                self.barrier.wait();
                continue;
            };
            let mut ops = 0u64;
            loop {
                let begun = Instant::now();
                let ran = catch_unwind(AssertUnwindSafe(|| workload.run(t, threads, *size)));
                if let Err(panic) = ran {
                    let mut slot = self.panicked.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(panic_message(&panic));
                    break;
                }
                ops += *size;
                if warming[r] && begun.elapsed() < target && *size < MAX_BATCH {
                    *size *= 2;
                }
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            warming[r] = false;
            self.total.fetch_add(ops, Ordering::Relaxed);
            self.barrier.wait();
        }
    }

    /// One phase of row `row` for `length`, run from the main thread:
    /// releases the threads, stops them after `length`, and returns all
    /// threads' operations per second (or the message of a panic).
    fn phase(&self, row: usize, length: Duration) -> Result<f64, String> {
        self.row.store(row, Ordering::Relaxed);
        self.stop.store(false, Ordering::Relaxed);
        self.barrier.wait();
        let started = Instant::now();
        std::thread::sleep(length);
        self.stop.store(true, Ordering::Relaxed);
        self.barrier.wait();
        let elapsed = started.elapsed();
        let ops = self.total.swap(0, Ordering::Relaxed);
        if let Some(message) = self
            .panicked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(message);
        }
        Ok(ops as f64 / elapsed.as_secs_f64())
    }

    fn quit(&self) {
        self.quit.store(true, Ordering::Relaxed);
        self.barrier.wait();
    }
}

/// The order of the rows in round `round` of `rows`: every row once,
/// starting at row `round % rows` (so no row is always first or last).
pub fn round_order(round: usize, rows: usize) -> Vec<usize> {
    (0..rows).map(|i| (round + i) % rows.max(1)).collect()
}

/// Measures the rows of one cell group (one workload at one thread count)
/// interleaved: one pool of `threads` threads, spawned once, runs every row
/// (an `Err` is a row whose instance could not be built; it stays an
/// error); each row is warmed up in turn (which also sizes each thread's
/// batches), then `repeats` rounds run every row once for `duration`, in
/// the order of [`round_order`]. Returns each row's samples, operations
/// per second, sample `k` from round `k`, or the message of a panic in the
/// workload (a row that panics sits out the later rounds).
///
/// Only one row runs at a time. A slow phase of the machine therefore hits
/// one round of every row rather than every repetition of one row, and the
/// ratio of two rows within a round (a *paired* ratio) cancels it.
pub fn measure_interleaved(
    workloads: &[Result<&dyn Workload, String>],
    threads: usize,
    warmup: Duration,
    duration: Duration,
    repeats: usize,
) -> Vec<Result<Vec<f64>, String>> {
    let target = (duration / 50).clamp(Duration::from_micros(20), MAX_BATCH_TIME);
    let pool = Pool::new(threads);
    let mut out: Vec<Result<Vec<f64>, String>> = workloads
        .iter()
        .map(|w| match w {
            Ok(_) => Ok(Vec::with_capacity(repeats)),
            Err(e) => Err(e.clone()),
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let pool = &pool;
            s.spawn(move || pool.work(workloads, t, threads, target));
        }
        let live = |out: &[Result<Vec<f64>, String>], i: usize| out[i].is_ok();
        for i in 0..workloads.len() {
            if live(&out, i) {
                if let Err(e) = pool.phase(i, warmup) {
                    out[i] = Err(e);
                }
            }
        }
        for round in 0..repeats {
            for i in round_order(round, workloads.len()) {
                if !live(&out, i) {
                    continue;
                }
                match pool.phase(i, duration) {
                    Ok(sample) => {
                        if let Ok(samples) = &mut out[i] {
                            samples.push(sample);
                        }
                    }
                    Err(e) => out[i] = Err(e),
                }
            }
        }
        pool.quit();
    });
    out
}

/// Runs a seed-bug reproduction: the racy variant in growing chunks of
/// rounds until it has lost something and has run at least `min_rounds`
/// rounds or a soft time limit (200 rounds or 0.5 s; 50 rounds or 0.25 s with
/// `quick`), giving up after a hard limit (3 s; 1 s) if it loses nothing;
/// then the lock-free type for the same number of rounds.
pub fn reproduce(reproduction: &Reproduction, threads: usize, quick: bool) -> ReproductionResult {
    let (min_rounds, soft, hard) = if quick {
        (50, Duration::from_millis(250), Duration::from_secs(1))
    } else {
        (200, Duration::from_millis(500), Duration::from_secs(3))
    };
    let mut result = ReproductionResult {
        what_is_lost: reproduction.what_is_lost.to_string(),
        threads,
        rounds: 0,
        racy: 0,
        lock_free: 0,
        racy_ms: 0.0,
        lock_free_ms: 0.0,
        error: None,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let started = Instant::now();
        let mut chunk = min_rounds.min(16);
        loop {
            let begun = Instant::now();
            result.racy += (reproduction.racy)(threads, chunk);
            result.rounds += chunk;
            let elapsed = started.elapsed();
            let enough = result.rounds >= min_rounds || elapsed >= soft;
            if (result.racy > 0 && enough) || elapsed >= hard {
                break;
            }
            // Double, but aim at the next limit rather than far past it.
            let limit = if elapsed < soft { soft } else { hard };
            let per_round = begun.elapsed().as_secs_f64() / chunk as f64;
            let fits = ((limit - elapsed).as_secs_f64() / per_round.max(1e-9)).ceil() as usize;
            chunk = result.rounds.min(fits).max(1);
        }
        result.racy_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        result.lock_free = (reproduction.lock_free)(threads, result.rounds);
        result.lock_free_ms = started.elapsed().as_secs_f64() * 1e3;
    }));
    if let Err(panic) = outcome {
        result.error = Some(panic_message(&panic));
    }
    result
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    struct Counter(AtomicU64);
    impl Workload for Counter {
        fn run(&self, _: usize, _: usize, ops: u64) {
            for _ in 0..ops {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn counts_every_operation() {
        let w = Counter(AtomicU64::new(0));
        let samples =
            measure(&w, 3, Duration::from_millis(2), Duration::from_millis(3), 3).unwrap();
        assert_eq!(samples.len(), 3);
        assert!(samples.iter().all(|&s| s > 0.0));
        assert!(w.0.load(Ordering::Relaxed) >= 3 * 4);
    }

    struct Panics;
    impl Workload for Panics {
        fn run(&self, thread: usize, _: usize, _: u64) {
            assert!(thread != 1, "thread 1 fails");
        }
    }

    /// Logs its row on every batch.
    struct Logs<'a> {
        row: usize,
        log: &'a Mutex<Vec<usize>>,
    }
    impl Workload for Logs<'_> {
        fn run(&self, _: usize, _: usize, _: u64) {
            let mut log = self.log.lock().unwrap();
            if log.last() != Some(&self.row) {
                log.push(self.row);
            }
        }
    }

    #[test]
    fn rows_are_interleaved_round_robin_with_a_rotating_start() {
        assert_eq!(round_order(0, 3), vec![0, 1, 2]);
        assert_eq!(round_order(1, 3), vec![1, 2, 0]);
        assert_eq!(round_order(2, 3), vec![2, 0, 1]);
        assert_eq!(round_order(3, 3), vec![0, 1, 2]);
        // One thread per row and one row at a time: the log (consecutive
        // batches of one row merged) is the order of the phases.
        let log = Mutex::new(Vec::new());
        let rows: Vec<Logs> = (0..3).map(|row| Logs { row, log: &log }).collect();
        let mut refs: Vec<Result<&dyn Workload, String>> =
            rows.iter().map(|r| Ok(r as &dyn Workload)).collect();
        // A row whose instance could not be built stays an error and
        // sits out every round.
        refs.push(Err("no instance".to_string()));
        let out = measure_interleaved(
            &refs,
            1,
            Duration::from_millis(2),
            Duration::from_millis(2),
            3,
        );
        assert_eq!(out[3], Err("no instance".to_string()));
        for r in &out[..3] {
            assert_eq!(r.as_ref().map(Vec::len), Ok(3));
        }
        // Warm-ups 0 1 2, then rounds over 4 rows starting at 0, 1, 2.
        assert_eq!(
            *log.lock().unwrap(),
            vec![0, 1, 2, 0, 1, 2, 1, 2, 0, 2, 0, 1]
        );
    }

    #[test]
    fn a_panicking_workload_is_reported_not_hung() {
        let err = measure(
            &Panics,
            2,
            Duration::from_millis(1),
            Duration::from_millis(1),
            2,
        )
        .unwrap_err();
        assert!(err.contains("thread 1 fails"), "{err}");
    }
}
