//! The `changeset` contract, written once over `ChangesetStore` and run on
//! the lock-free log (default stripes and one stripe), the `std` mutex
//! baseline and the `parking_lot` baseline; plus the racy variant caught.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use raceless::changeset::{ChangesetError, ChangesetId, ChangesetStore, Recorder};
use raceless_harness::changeset::{apply, seal_race, Model, Op, RacyChangesets};
use raceless_harness::model::SequentialSpec;
use raceless_harness::threads::{hunt, iterations, run_concurrently};

/// Record goes to the latest open changeset; after sealing the latest, to
/// the one below it; errors for bad input leave the state untouched.
fn sequential_contract<S: ChangesetStore<u32>>(log: S) {
    assert_eq!(log.record_change(0), Err(ChangesetError::NoActiveChangeset));
    assert!(log.active().is_empty());
    let a = log.start_changeset();
    assert_eq!(log.record_change(1), Ok(a));
    let b = log.start_changeset();
    assert!(b > a);
    assert_eq!(log.active(), vec![b, a]);
    assert_eq!(log.record_change(2), Ok(b));
    assert_eq!(log.record_change(3), Ok(b));
    assert_eq!(log.seal(b), Ok(()));
    assert_eq!(log.seal(b), Ok(()), "sealing twice is a no-op");
    assert_eq!(log.active(), vec![a]);
    assert_eq!(
        log.record_change(4),
        Ok(a),
        "after sealing the latest, the one below"
    );
    assert_eq!(log.changes(a), Some(vec![1, 4]));
    assert_eq!(log.changes(b), Some(vec![2, 3]));
    let ghost = ChangesetId::from_raw(999);
    assert_eq!(log.changes(ghost), None);
    assert_eq!(
        log.seal(ghost),
        Err(ChangesetError::UnknownChangeset(ghost))
    );
    assert_eq!(
        log.take(ghost),
        Err(ChangesetError::UnknownChangeset(ghost))
    );
    assert_eq!(log.take(a), Err(ChangesetError::StillOpen(a)));
    assert_eq!(
        log.changes(a),
        Some(vec![1, 4]),
        "a failed take changes nothing"
    );
    // Sealing one below the top leaves the top as the target.
    let c = log.start_changeset();
    assert_eq!(log.seal(a), Ok(()));
    assert_eq!(log.record_change(5), Ok(c));
    assert_eq!(log.active(), vec![c]);
    assert_eq!(log.take(b), Ok(vec![2, 3]));
    assert_eq!(log.changes(b), None);
    assert_eq!(log.take(b), Err(ChangesetError::UnknownChangeset(b)));
    assert_eq!(log.seal(c), Ok(()));
    assert_eq!(log.record_change(6), Err(ChangesetError::NoActiveChangeset));
    assert_eq!(log.changes(c), Some(vec![5]));
}

/// One thread starts changesets while four record 10,000 entries each:
/// every `Ok(id)` entry is in `changes(id)`, exactly once, per-thread order
/// kept, totals exact. Returns the number of anomalies.
fn start_while_recording<S: ChangesetStore<u64>>(log: S) -> u64 {
    let per_thread = iterations(10_000);
    log.start_changeset();
    let done = AtomicU64::new(0);
    let results = run_concurrently(5, |t| {
        let mut recorded = Vec::new();
        if t == 0 {
            while done.load(Ordering::Acquire) < 4 {
                log.start_changeset();
                std::thread::yield_now();
            }
        } else {
            for i in 0..per_thread {
                let e = ((t as u64) << 32) | i as u64;
                match log.record_change(e) {
                    Ok(id) => recorded.push((id, e)),
                    Err(err) => panic!("no changeset is ever sealed here: {err}"),
                }
            }
            done.fetch_add(1, Ordering::Release);
        }
        recorded
    });
    let mut anomalies = 0;
    let recorded: Vec<_> = results.into_iter().flatten().collect();
    anomalies += (recorded.len() as u64).abs_diff(4 * per_thread as u64);
    let mut by_id: HashMap<ChangesetId, Vec<u64>> = HashMap::new();
    for &(id, e) in &recorded {
        by_id.entry(id).or_default().push(e);
    }
    let mut total = 0;
    for id in log.active() {
        let have = log.changes(id).unwrap_or_default();
        total += have.len();
        // Per-thread record order is kept.
        let mut last: HashMap<u64, u64> = HashMap::new();
        for &e in &have {
            if let Some(prev) = last.insert(e >> 32, e & 0xFFFF_FFFF) {
                if prev >= e & 0xFFFF_FFFF {
                    anomalies += 1;
                }
            }
        }
        let mut want = by_id.remove(&id).unwrap_or_default();
        let mut have = have;
        want.sort_unstable();
        have.sort_unstable();
        if want != have {
            anomalies += 1;
        }
    }
    anomalies += by_id.len() as u64;
    anomalies += (total as u64).abs_diff(4 * per_thread as u64);
    anomalies
}

/// A seal racing two recorders, many times: the sealed changeset's contents
/// never change after `seal` returned and match the `Ok(id)` results
/// exactly. Returns the number of anomalies.
fn seal_racing_two_recorders<S: ChangesetStore<u64>>(make: impl Fn() -> S) -> u64 {
    let mut anomalies = 0;
    for _ in 0..iterations(200) {
        let log = make();
        let below = log.start_changeset();
        let top = log.start_changeset();
        let sealed = AtomicBool::new(false);
        let results = run_concurrently(3, |t| {
            let mut out = Vec::new();
            if t == 0 {
                std::thread::yield_now();
                log.seal(top).unwrap();
                sealed.store(true, Ordering::Release);
                let snapshot = log.changes(top).unwrap();
                out.push((top, snapshot.len() as u64));
                // Keep watching: the sealed contents must not move.
                for _ in 0..50 {
                    if log.changes(top).unwrap() != snapshot {
                        out.push((top, u64::MAX));
                    }
                    std::thread::yield_now();
                }
            } else {
                for i in 0..200u64 {
                    let e = ((t as u64) << 32) | i;
                    let after_seal = sealed.load(Ordering::Acquire);
                    let id = log.record_change(e).unwrap();
                    if after_seal && id == top {
                        out.push((top, u64::MAX - 1));
                    }
                    out.push((id, e));
                }
            }
            out
        });
        let snapshot_len = results[0][0].1;
        anomalies += results[0][1..].len() as u64;
        // A record that started after `seal` returned and still got `top`.
        anomalies += results[1..]
            .iter()
            .flatten()
            .filter(|&&(_, e)| e == u64::MAX - 1)
            .count() as u64;
        let top_now = log.changes(top).unwrap();
        anomalies += (top_now.len() as u64).abs_diff(snapshot_len);
        for (id, want) in [(top, top_now), (below, log.changes(below).unwrap())] {
            let mut want_sorted: Vec<u64> = results[1..]
                .iter()
                .flatten()
                .filter(|&&(i, e)| i == id && e < u64::MAX - 1)
                .map(|&(_, e)| e)
                .collect();
            let mut have = want;
            want_sorted.sort_unstable();
            have.sort_unstable();
            if want_sorted != have {
                anomalies += 1;
            }
        }
    }
    anomalies
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => Just(Op::Start),
        6 => (0u32..1000).prop_map(Op::Record),
        2 => (0u64..10).prop_map(Op::Seal),
        2 => (0u64..10).prop_map(Op::Changes),
        1 => Just(Op::Active),
        1 => (0u64..10).prop_map(Op::Take),
    ];
    proptest::collection::vec(op, 0..80)
}

fn matches_model<S: ChangesetStore<u32>>(log: &S, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        prop_assert_eq!(apply(log, op), model.apply(op), "op {:?}", op);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Recorders, `take`, memory.

/// Entries of recorder `r` (tagged `r << 32 | i`) across `ids` (in start
/// order): they must read back as `0..n`, in order — each changeset holds a
/// run of them, and later changesets later runs.
fn recorder_sequence<S: ChangesetStore<u64> + ?Sized>(
    log: &S,
    ids: &[ChangesetId],
    r: u64,
) -> Vec<u64> {
    ids.iter()
        .flat_map(|&id| log.changes(id).unwrap_or_default())
        .filter(|e| e >> 32 == r)
        .map(|e| e & 0xffff_ffff)
        .collect()
}

/// Two recorders, each handed from thread to thread every few records (a
/// migrating task, deterministically), while a rotator starts and seals
/// changesets and plain `record_change` threads add noise: each recorder's
/// entries read back in its order, none lost or duplicated.
fn recorders_keep_order_across_threads<S: ChangesetStore<u64> + 'static>(log: S) {
    let log = Arc::new(log);
    let first = log.start_changeset();
    let n = iterations(4_000) as u64;
    let done = Arc::new(AtomicU64::new(0));
    let rotator = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut ids = vec![first];
            while done.load(Ordering::Acquire) < 2 {
                ids.push(log.start_changeset());
                log.seal(ids[ids.len() - 2]).unwrap();
                std::thread::yield_now();
            }
            ids
        })
    };
    let recorders: Vec<_> = (1..=2u64)
        .map(|r| {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut recorder = Recorder::new(log.clone());
                let mut i = 0;
                while i < n {
                    // A new thread for each hop.
                    (recorder, i) = std::thread::spawn(move || {
                        for _ in 0..7 {
                            if i < n {
                                recorder.record(r << 32 | i).unwrap();
                                i += 1;
                            }
                        }
                        (recorder, i)
                    })
                    .join()
                    .unwrap();
                    log.record_change(99 << 32 | i).unwrap();
                }
                done.fetch_add(1, Ordering::Release);
            })
        })
        .collect();
    for t in recorders {
        t.join().unwrap();
    }
    let ids = rotator.join().unwrap();
    for r in 1..=2 {
        assert_eq!(
            recorder_sequence(&*log, &ids, r),
            (0..n).collect::<Vec<_>>()
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Tasks on a 2-worker runtime record `n` entries each through `record`,
/// yielding between records and now and then waiting for a wake-up from a
/// plain thread (so the task resumes on whichever worker is free).
/// Returns the task-ordered sequences read back and how many times the
/// tasks changed threads between two records.
fn migrating_tasks<S: ChangesetStore<u64> + 'static>(
    log: Arc<S>,
    tasks: u64,
    n: u64,
    with_recorder: bool,
) -> (Vec<Vec<u64>>, usize) {
    let id = log.start_changeset();
    let rt = runtime();
    let hops: usize = rt.block_on(async {
        let handles: Vec<_> = (1..=tasks)
            .map(|r| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut recorder = Recorder::new(log.clone());
                    let mut hops = 0;
                    let mut last = std::thread::current().id();
                    for i in 0..n {
                        let e = r << 32 | i;
                        if with_recorder {
                            recorder.record(e).unwrap();
                        } else {
                            log.record_change(e).unwrap();
                        }
                        if i % 16 == 0 {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            std::thread::spawn(move || tx.send(()).unwrap());
                            rx.await.unwrap();
                        } else {
                            tokio::task::yield_now().await;
                        }
                        let now = std::thread::current().id();
                        hops += usize::from(now != last);
                        last = now;
                    }
                    hops
                })
            })
            .collect();
        let mut hops = 0;
        for h in handles {
            hops += h.await.unwrap();
        }
        hops
    });
    log.seal(id).unwrap();
    let seqs = (1..=tasks)
        .map(|r| recorder_sequence(&*log, &[id], r))
        .collect();
    (seqs, hops)
}

/// A tokio task that moves between worker threads keeps its recorder's
/// order.
fn recorder_in_migrating_tasks<S: ChangesetStore<u64> + 'static>(log: S) {
    let n = iterations(2_000) as u64;
    let (seqs, hops) = migrating_tasks(Arc::new(log), 3, n, true);
    for seq in seqs {
        assert_eq!(seq, (0..n).collect::<Vec<_>>());
    }
    // (Not asserted: whether the scheduler moved the tasks this time; the
    // racy check below asserts that it does, across attempts.)
    let _ = hops;
}

/// A task's recorder cancelled at every `.await` of its life (by `select!`,
/// `timeout` and `abort`): every record that returned `Ok` is in the
/// changeset once, in order, and the log goes on (seal, take, a new
/// recorder).
fn recorder_cancelled_at_every_await<S: ChangesetStore<u64> + 'static>(make: impl Fn() -> S) {
    let rt = runtime();
    for stop in [0u64, 1, 5, 31, 32, 33, 40] {
        for how in 0..3 {
            let log = Arc::new(make());
            let id = log.start_changeset();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let task = {
                let log = log.clone();
                async move {
                    let mut recorder = Recorder::new(log);
                    for i in 0..50u64 {
                        recorder.record(i).unwrap();
                        tokio::task::yield_now().await;
                        if i == stop {
                            tx.send(i).unwrap();
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            rt.block_on(async {
                match how {
                    0 => tokio::select! {
                        () = task => panic!("parks at {stop}"),
                        got = rx.recv() => assert_eq!(got, Some(stop)),
                    },
                    1 => {
                        let out = tokio::time::timeout(Duration::from_millis(20), task).await;
                        assert!(out.is_err());
                        assert_eq!(rx.recv().await, Some(stop));
                    }
                    _ => {
                        let handle = tokio::spawn(task);
                        assert_eq!(rx.recv().await, Some(stop));
                        handle.abort();
                        assert!(handle.await.unwrap_err().is_cancelled());
                    }
                }
            });
            let want: Vec<u64> = (0..=stop).collect();
            assert_eq!(
                log.changes(id),
                Some(want.clone()),
                "stop {stop}, how {how}"
            );
            let mut again = Recorder::new(log.clone());
            assert_eq!(again.record(1_000), Ok(id));
            log.seal(id).unwrap();
            let mut all = want;
            all.push(1_000);
            assert_eq!(log.take(id), Ok(all));
            assert!(log.is_empty());
        }
    }
}

/// `take` hands a sealed changeset's entries over and frees it; unknown,
/// open and already taken ids are typed errors that change nothing.
fn take_frees<S: ChangesetStore<u32>>(log: S) {
    let ghost = ChangesetId::from_raw(12_345);
    assert_eq!(
        log.take(ghost),
        Err(ChangesetError::UnknownChangeset(ghost))
    );
    let a = log.start_changeset();
    let mut recorder = Recorder::new(&log);
    recorder.record(1).unwrap();
    assert_eq!(log.take(a), Err(ChangesetError::StillOpen(a)));
    assert_eq!(log.changes(a), Some(vec![1]));
    log.seal(a).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log.take(a), Ok(vec![1]));
    assert_eq!(log.take(a), Err(ChangesetError::UnknownChangeset(a)));
    assert_eq!(log.changes(a), None);
    assert!(log.is_empty());
    assert_eq!(recorder.record(2), Err(ChangesetError::NoActiveChangeset));
}

/// `total` distinct changesets through start, records (a recorder and
/// `record_change`), seal and take, from two threads: the store keeps
/// nothing afterwards.
fn churn_returns_to_empty<S: ChangesetStore<u64>>(log: S, total: u64) {
    let total = if cfg!(miri) { 200 } else { total };
    run_concurrently(2, |t| {
        let mut recorder = Recorder::new(&log);
        for i in 0..total / 2 {
            let id = log.start_changeset();
            let e = (t as u64) << 32 | i;
            // The other thread's changeset may be the latest: either is fine.
            let into = recorder.record(e).unwrap();
            if i % 8 == 0 {
                log.record_change(e).unwrap();
            }
            log.seal(id).unwrap();
            let taken = log.take(id).unwrap();
            assert!(taken.len() <= 4);
            if into == id {
                assert!(taken.contains(&e));
            }
        }
    });
    // Changesets sealed while the other thread's entries went into them
    // are taken by their starters too, so nothing is left.
    assert!(log.active().is_empty());
    assert_eq!(log.len(), 0);
}

macro_rules! contract_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn sequential() {
                sequential_contract($make);
            }

            #[test]
            fn start_while_four_record() {
                assert_eq!(start_while_recording($make), 0);
            }

            #[test]
            fn seal_races_two_recorders() {
                assert_eq!(seal_racing_two_recorders(|| $make), 0);
            }

            #[test]
            fn seal_race_rotating() {
                let anomalies = seal_race(&$make, 4, iterations(5_000));
                assert_eq!(anomalies.total(), 0, "{anomalies:?}");
            }

            #[test]
            fn recorders_keep_order_across_threads() {
                super::recorders_keep_order_across_threads($make);
            }

            #[test]
            #[cfg_attr(miri, ignore = "tokio's multi-thread runtime")]
            fn recorder_in_migrating_tasks() {
                super::recorder_in_migrating_tasks($make);
            }

            #[test]
            #[cfg_attr(miri, ignore = "tokio's multi-thread runtime")]
            fn recorder_cancelled_at_every_await() {
                super::recorder_cancelled_at_every_await(|| $make);
            }

            #[test]
            fn take_frees() {
                super::take_frees($make);
            }

            #[test]
            fn churn_returns_to_empty() {
                super::churn_returns_to_empty($make, 100_000);
            }

            proptest! {
                #[test]
                fn proptest_vs_model(ops in ops()) {
                    matches_model(&$make, &ops)?;
                }
            }
        }
    };
}

contract_tests!(lock_free, raceless::ChangesetLog::new());
contract_tests!(
    lock_free_one_stripe,
    raceless::ChangesetLog::with_stripes(1)
);
contract_tests!(
    std_mutex,
    raceless::baseline::MutexChangesets::<_, raceless::baseline::StdMutex>::new()
);
contract_tests!(
    parking_lot,
    raceless::baseline::MutexChangesets::<_, raceless::baseline::ParkingLotMutex>::new()
);

/// The checks can fail: the racy variant (read the latest id, yield, then
/// append in a separate step) records into sealed changesets.
#[test]
fn racy_variant_is_caught() {
    let n = hunt(10, || {
        seal_race(&RacyChangesets::new(), 4, iterations(2_000)).total()
    });
    assert!(n > 0, "the seal race missed the racy variant");
    let n = hunt(10, || seal_racing_two_recorders(RacyChangesets::new));
    assert!(n > 0, "two recorders racing a seal missed the racy variant");
}

/// The memory rule at scale: 10^6 distinct changesets through the
/// lock-free log leave nothing behind.
#[test]
fn churn_a_million_changesets() {
    churn_returns_to_empty(raceless::ChangesetLog::with_stripes(2), 1_000_000);
}

/// The recorder test can fail: a migrating task that records through
/// `record_change` (the recording thread's stripe and lease) reads back out
/// of order once the scheduler moved it.
#[test]
#[cfg_attr(miri, ignore = "tokio's multi-thread runtime")]
fn thread_lease_reorders_a_migrating_task() {
    let n = iterations(2_000) as u64;
    let mut moved = 0;
    let broken = hunt(10, || {
        let log = Arc::new(raceless::ChangesetLog::<u64>::with_stripes(8));
        let (seqs, hops) = migrating_tasks(log, 3, n, false);
        moved += hops;
        seqs.iter()
            .filter(|seq| **seq != (0..n).collect::<Vec<_>>())
            .count() as u64
    });
    assert!(moved > 0, "the scheduler never moved a task");
    assert!(
        broken > 0,
        "record_change from a migrating task kept its order"
    );
}

/// The seed's `IndexError`: records racing a log that is mostly empty
/// return `Err(NoActiveChangeset)` or `Ok`, never panic.
#[test]
fn never_panics_on_empty_log_under_concurrency() {
    let log = raceless::ChangesetLog::<u64>::new();
    let results = run_concurrently(4, |t| {
        let mut errs = 0;
        for i in 0..iterations(2_000) {
            if t == 0 && i % 10 == 0 {
                let id = log.start_changeset();
                let _ = log.seal(id);
            } else if log.record_change(i as u64).is_err() {
                errs += 1;
            }
        }
        errs
    });
    assert!(results.iter().sum::<usize>() <= 4 * iterations(2_000));
}

/// The lock-free log's per-thread leases: threads alternating between two
/// logs (each switch drops the lease) while a third thread rotates both —
/// every `Ok(id)` entry is in `changes(id)` exactly once, and sealed
/// contents are final.
#[test]
fn leases_across_two_logs() {
    let logs = [
        raceless::ChangesetLog::<u64>::new(),
        raceless::ChangesetLog::<u64>::new(),
    ];
    for log in &logs {
        log.start_changeset();
    }
    let done = AtomicU64::new(0);
    let results = run_concurrently(3, |t| {
        let mut out = Vec::new();
        if t == 0 {
            let mut round = 0u64;
            while done.load(Ordering::Acquire) < 2 {
                let log = &logs[(round % 2) as usize];
                let old = log.active()[0];
                log.start_changeset();
                log.seal(old).unwrap();
                out.push((round % 2, old, log.changes(old).unwrap().len() as u64));
                round += 1;
                std::thread::yield_now();
            }
        } else {
            for i in 0..iterations(20_000) as u64 {
                let which = (i / 3) % 2;
                let e = ((t as u64) << 32) | i;
                let id = logs[which as usize].record_change(e).unwrap();
                out.push((which, id, e));
            }
            done.fetch_add(1, Ordering::Release);
        }
        out
    });
    for (which, id, len) in &results[0] {
        let now = logs[*which as usize].changes(*id).unwrap();
        assert_eq!(now.len() as u64, *len, "sealed contents changed");
    }
    let mut want: HashMap<(u64, ChangesetId), Vec<u64>> = HashMap::new();
    for &(which, id, e) in results[1..].iter().flatten() {
        want.entry((which, id)).or_default().push(e);
    }
    let mut total = 0;
    for ((which, id), mut want) in want {
        let mut have = logs[which as usize].changes(id).unwrap();
        total += have.len();
        want.sort_unstable();
        have.sort_unstable();
        assert_eq!(have, want, "log {which} {id}");
    }
    assert_eq!(total, 2 * iterations(20_000));
}

#[test]
fn workloads_run() {
    let defs = raceless_harness::changeset::workloads()
        .into_iter()
        .chain(raceless_harness::changeset::async_workloads());
    raceless_harness::workload::run_every_row(defs, 400);
}
