//! Criterion benchmarks of the `stream` component: the lock-free type against
//! its `std::sync::Mutex` and `parking_lot::Mutex` baselines at 1, 2, 4 and 8
//! threads. The workloads live in `raceless_harness::stream`, shared with the
//! comparison run.
//!
//! `stream-store/caller-save`: what one save costs the *caller* (a save
//! hook on a request thread): `SessionStore::save` (blocking: write, two
//! `fsync`s) against `StoreWriter::save` (enqueue; the writer thread does
//! the I/O, flushed after each measured batch, outside the measurement).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use raceless::stream::{SessionSnapshot, SessionStore, StoreWriter};

fn benches(c: &mut Criterion) {
    raceless_harness::bench::bench_workloads(c, &raceless_harness::stream::workloads());
}

fn snapshot(i: u64) -> SessionSnapshot {
    SessionSnapshot {
        session_id: format!("s{}", i % 64),
        version: i + 1,
        active: None,
    }
}

fn caller_save(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream-store/caller-save");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path().join("sync")).unwrap();
    let mut version = 0;
    group.bench_function(BenchmarkId::new("sync-store", 1), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                store.save(&snapshot(version)).unwrap();
                version += 1;
            }
            start.elapsed()
        })
    });
    let writer = StoreWriter::spawn(SessionStore::open(dir.path().join("bg")).unwrap()).unwrap();
    let mut version = 0;
    group.bench_function(BenchmarkId::new("background-writer", 1), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                writer.save(&snapshot(version)).unwrap();
                version += 1;
            }
            let elapsed = start.elapsed();
            writer.flush();
            elapsed
        })
    });
    writer.shutdown();
    group.finish();
}

criterion_group!(group, benches, caller_save);
criterion_main!(group);
