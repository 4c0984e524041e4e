//! Running a closure on several threads at once.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Runs `f(thread_index)` on `threads` scoped threads that a barrier
/// releases together, and returns their results in thread order.
///
/// The barrier maximises overlap, which is what a stress test wants.
pub fn run_concurrently<R: Send>(threads: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Runs a hunt for a race (`attempt` returns the anomalies it counted) up
/// to `attempts` times and returns the first non-zero count, or 0.
///
/// Tests that show a check catches a racy variant use it, so that one
/// schedule in which the race happened not to show (a busy machine can
/// serialise the threads) cannot make them flaky.
pub fn hunt(attempts: usize, mut attempt: impl FnMut() -> u64) -> u64 {
    (0..attempts)
        .map(|_| attempt())
        .find(|&n| n > 0)
        .unwrap_or(0)
}

/// A preemption point for stress loops: thread `thread` yields once or
/// twice (by its parity). The uneven count makes the rounds of different
/// threads drift against each other through every relative phase, so a race
/// between one thread's step and another's shows up even when the machine
/// gives all of them one core and they only switch where they yield.
pub fn stagger(thread: usize) {
    for _ in 0..=thread % 2 {
        std::thread::yield_now();
    }
}

/// Runs `f(thread_index)` on `threads` threads released together and
/// returns the wall time from the release to the last thread's end; thread
/// start-up is not timed.
pub fn time_concurrently(threads: usize, f: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(t);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        start.elapsed()
    })
}

/// The number of iterations of a stress loop: `n` normally, much fewer
/// under Miri (which is ~1000× slower) so the same tests stay runnable there.
pub const fn iterations(n: usize) -> usize {
    if cfg!(miri) {
        if n / 500 > 2 {
            n / 500
        } else {
            2
        }
    } else {
        n
    }
}
