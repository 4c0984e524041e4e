//! Criterion glue: every workload measured the same way.

use criterion::{BenchmarkId, Criterion, Throughput};

use crate::threads::time_concurrently;
use crate::workload::{WorkloadDef, THREAD_COUNTS};

/// Registers one benchmark group per workload, `component/workload`, with
/// ids `BenchmarkId::new(impl, threads)`. Each sample builds a fresh
/// instance per thread count and times `iters` operations per thread with
/// `iter_custom`, behind a barrier so thread start-up is not timed.
pub fn bench_workloads(c: &mut Criterion, defs: &[WorkloadDef]) {
    for def in defs {
        let mut group = c.benchmark_group(format!("{}/{}", def.component, def.name));
        group.sample_size(20);
        group.warm_up_time(std::time::Duration::from_millis(500));
        group.measurement_time(std::time::Duration::from_secs(2));
        for &threads in &THREAD_COUNTS {
            // Throughput counts all threads' operations.
            group.throughput(Throughput::Elements(threads as u64));
            for &(name, make) in &def.impls {
                let workload = make();
                group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                    b.iter_custom(|iters| {
                        time_concurrently(threads, |t| workload.run(t, threads, iters))
                    })
                });
            }
        }
        group.finish();
    }
}
