//! loom models of the `changeset` races, through the public API (one stripe:
//! every thread contends on the same stripe word).
//!
//! ```text
//! RUSTFLAGS="--cfg raceless_loom" LOOM_MAX_PREEMPTIONS=2 \
//!   CARGO_TARGET_DIR=target/loom cargo test --release --test loom_changeset
//! ```
#![cfg(raceless_loom)]

use loom::sync::Arc;
use loom::thread;
use raceless::changeset::{ChangesetId, ChangesetLog, Recorder};

/// A one-stripe log with two open changesets, `below` and `top`, and a
/// thread that seals `top` and returns `changes(top)` read right after.
fn sealing_the_top() -> (
    Arc<ChangesetLog<u32>>,
    ChangesetId,
    ChangesetId,
    thread::JoinHandle<Vec<u32>>,
) {
    let log = Arc::new(ChangesetLog::<u32>::with_stripes(1));
    let below = log.start_changeset();
    let top = log.start_changeset();
    let sealer = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            log.seal(top).unwrap();
            log.changes(top).unwrap()
        })
    };
    (log, below, top, sealer)
}

/// record vs start: the entry lands in a changeset that was open and the
/// latest at the record's linearization point. If it lands in the old
/// changeset `a`, the record linearized before `start(b)`, so a read of `a`
/// after `start(b)` returned must already hold it (the seed's bug: the
/// entry shows up in `a` later, after `b` was the latest).
#[test]
fn record_vs_start() {
    loom::model(|| {
        let log = Arc::new(ChangesetLog::<u32>::with_stripes(1));
        let a = log.start_changeset();
        let starter = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let b = log.start_changeset();
                (b, log.changes(a).unwrap())
            })
        };
        let got = log.record_change(7).unwrap();
        let (b, a_after_start) = starter.join().unwrap();
        let in_a = log.changes(a).unwrap();
        let in_b = log.changes(b).unwrap();
        if got == a {
            assert_eq!(in_a, vec![7]);
            assert!(in_b.is_empty());
            assert_eq!(
                a_after_start,
                vec![7],
                "recorded into a after b was the latest"
            );
        } else {
            assert_eq!(got, b);
            assert_eq!(in_b, vec![7]);
            assert!(in_a.is_empty());
            assert!(a_after_start.is_empty());
        }
        assert_eq!(log.active(), vec![b, a]);
    });
}

/// record vs seal: never into a sealed changeset, never lost. The recorder
/// lands either in `top` before the seal takes effect (then `changes(top)`
/// read right after `seal` returned holds it, and stays so) or in `below`.
#[test]
fn record_vs_seal() {
    loom::model(|| {
        let (log, below, top, sealer) = sealing_the_top();
        let got = log.record_change(7).unwrap();
        let top_at_seal = sealer.join().unwrap();
        let top_now = log.changes(top).unwrap();
        let below_now = log.changes(below).unwrap();
        assert_eq!(
            top_now, top_at_seal,
            "sealed contents changed after seal returned"
        );
        if got == top {
            assert_eq!(top_now, vec![7]);
            assert!(below_now.is_empty());
        } else {
            assert_eq!(got, below);
            assert_eq!(below_now, vec![7]);
            assert!(top_now.is_empty());
        }
        assert_eq!(log.active(), vec![below]);
    });
}

/// Two recorders on one stripe against a seal of the only changeset: each
/// either lands before the seal (and is in the sealed contents) or gets
/// `NoActiveChangeset`; nothing is added after the seal.
#[test]
fn two_records_vs_seal() {
    loom::model(|| {
        let log = Arc::new(ChangesetLog::<u32>::with_stripes(1));
        let only = log.start_changeset();
        let other = {
            let log = Arc::clone(&log);
            thread::spawn(move || log.record_change(1).ok())
        };
        let sealer = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                log.seal(only).unwrap();
                log.changes(only).unwrap()
            })
        };
        let mine = log.record_change(2).ok();
        let theirs = other.join().unwrap();
        let at_seal = sealer.join().unwrap();
        let mut now = log.changes(only).unwrap();
        assert_eq!(now, at_seal);
        let mut want: Vec<u32> = [(theirs, 1), (mine, 2)]
            .into_iter()
            .filter(|(r, _)| *r == Some(only))
            .map(|(_, e)| e)
            .collect();
        want.sort_unstable();
        now.sort_unstable();
        assert_eq!(now, want);
    });
}

/// A recorder (its own lease: 2 slots under loom, so its third record
/// reserves again) against a seal of the top changeset: the top holds a
/// prefix of the recorder's entries, the changeset below the rest, in
/// order; nothing lost, nothing added after the seal returned.
#[test]
fn recorder_vs_seal() {
    loom::model(|| {
        let (log, below, top, sealer) = sealing_the_top();
        let mut recorder = Recorder::new(Arc::clone(&log));
        let got: Vec<_> = (1..=3).map(|e| recorder.record(e).unwrap()).collect();
        let top_at_seal = sealer.join().unwrap();
        let in_top = log.changes(top).unwrap();
        let in_below = log.changes(below).unwrap();
        assert_eq!(in_top, top_at_seal, "sealed contents changed");
        let k = got.iter().take_while(|&&id| id == top).count();
        assert!(got[k..].iter().all(|&id| id == below), "{got:?}");
        assert_eq!(in_top, (1..=k as u32).collect::<Vec<_>>());
        assert_eq!(in_below, (k as u32 + 1..=3).collect::<Vec<_>>());
    });
}

/// Two recorders sharing the one stripe against a seal: each records
/// twice, so each uses up its lease (2 slots under loom) and may advance
/// the stripe's `settled` hint past it, which lets the seal's close skip
/// those slots. A lease that is used up while another recorder's lease
/// below it is not must leave the hint alone: the close has to cancel (or
/// find committed) the other's slots, or that recorder would commit into
/// the sealed changeset after the seal returned.
#[test]
fn recorders_sharing_a_stripe_vs_seal() {
    loom::model(|| {
        let (log, below, top, sealer) = sealing_the_top();
        let other = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut recorder = Recorder::new(log);
                [recorder.record(3).unwrap(), recorder.record(4).unwrap()]
            })
        };
        let mut recorder = Recorder::new(Arc::clone(&log));
        let mine = [recorder.record(1).unwrap(), recorder.record(2).unwrap()];
        let theirs = other.join().unwrap();
        let top_at_seal = sealer.join().unwrap();
        let mut in_top = log.changes(top).unwrap();
        assert_eq!(in_top, top_at_seal, "sealed contents changed");
        let mut want: Vec<u32> = mine
            .iter()
            .zip([1, 2])
            .chain(theirs.iter().zip([3, 4]))
            .filter(|(&id, _)| id == top)
            .map(|(_, e)| e)
            .collect();
        let in_below = log.changes(below).unwrap();
        assert_eq!(in_top.len() + in_below.len(), 4, "lost or duplicated");
        want.sort_unstable();
        in_top.sort_unstable();
        assert_eq!(in_top, want);
    });
}

/// A recorder against a start: entries recorded before the new changeset
/// became the latest are in the old one (and visible in a read right
/// after `start` returned), the rest in the new one, in order.
#[test]
fn recorder_vs_start() {
    loom::model(|| {
        let log = Arc::new(ChangesetLog::<u32>::with_stripes(1));
        let a = log.start_changeset();
        let starter = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let b = log.start_changeset();
                (b, log.changes(a).unwrap())
            })
        };
        let mut recorder = Recorder::new(Arc::clone(&log));
        let got: Vec<_> = (1..=3).map(|e| recorder.record(e).unwrap()).collect();
        let (b, a_after_start) = starter.join().unwrap();
        let k = got.iter().take_while(|&&id| id == a).count();
        assert!(got[k..].iter().all(|&id| id == b), "{got:?}");
        let in_a = log.changes(a).unwrap();
        assert_eq!(in_a, (1..=k as u32).collect::<Vec<_>>());
        assert_eq!(
            log.changes(b).unwrap(),
            (k as u32 + 1..=3).collect::<Vec<_>>()
        );
        // Every record that went to `a` linearized before the start, so
        // a read right after `start` returned already holds it.
        assert_eq!(
            a_after_start, in_a,
            "recorded into a after b was the latest"
        );
    });
}

/// take vs the first read of a sealed changeset: the read freezes the
/// contents and puts the changeset into the log's read cache while `take`
/// removes it (the take's flag CAS is its linearization point, then it
/// leaves the id map and the cache). The read answers the whole contents
/// or `None`; once `take` returned, every later read, seal, `is_open` and
/// `take` of the id answers as for an unknown id, even if the reader's
/// cache store came after the take cleared the slot.
#[test]
fn take_vs_first_read() {
    loom::model(|| {
        let log = Arc::new(ChangesetLog::<u32>::with_stripes(1));
        let a = log.start_changeset();
        log.record_change(1).unwrap();
        log.seal(a).unwrap();
        let taker = {
            let log = Arc::clone(&log);
            thread::spawn(move || log.take(a))
        };
        let read = log.changes(a);
        assert!(read.is_none() || read == Some(vec![1]), "{read:?}");
        assert_eq!(taker.join().unwrap(), Ok(vec![1]));
        assert_eq!(log.changes(a), None, "read after take returned");
        assert_eq!(log.is_open(a), None);
        assert!(log.seal(a).is_err());
        assert!(log.take(a).is_err());
        assert!(log.is_empty());
    });
}
