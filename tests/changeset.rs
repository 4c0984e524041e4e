//! The `changeset` contract, written once over `ChangesetStore` and run on
//! the lock-free log (default stripes and one stripe), the `std` mutex
//! baseline and the `parking_lot` baseline; plus the racy variant caught.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use proptest::prelude::*;
use raceless::changeset::{ChangesetError, ChangesetId, ChangesetStore};
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
