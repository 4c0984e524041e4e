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
