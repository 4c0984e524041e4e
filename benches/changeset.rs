//! Criterion benchmarks of the `changeset` component: the lock-free type against
//! its `std::sync::Mutex` and `parking_lot::Mutex` baselines at 1, 2, 4 and 8
//! threads. The workloads live in `raceless_harness::changeset`, shared with the
//! comparison run.

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    raceless_harness::bench::bench_workloads(c, &raceless_harness::changeset::workloads());
    raceless_harness::bench::bench_workloads(c, &raceless_harness::changeset::async_workloads());
}

criterion_group!(group, benches);
criterion_main!(group);
