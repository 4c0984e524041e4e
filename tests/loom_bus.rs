//! loom models of the bus's races, through the public API (the sync shim
//! turns the bus's atomics, `Arc`s, arc-swap cells and sharded map into loom
//! types and stand-ins).
//!
//! Run with
//! `RUSTFLAGS="--cfg raceless_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release --test loom_bus`.
#![cfg(raceless_loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use raceless::bus::{Event, EventBus, RecvError, TryRecvError};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    kind: u8,
    n: u32,
}

impl Event for Ev {
    type Kind = u8;
    fn kind(&self) -> u8 {
        self.kind
    }
}

fn ev(kind: u8, n: u32) -> Ev {
    Ev { kind, n }
}

/// After `subscribe` returns, an emit that starts later delivers to the
/// handler; one that races with it delivers at most once.
#[test]
fn emit_vs_subscribe() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let subscribed = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let subscriber = {
            let (bus, subscribed, calls) = (bus.clone(), subscribed.clone(), calls.clone());
            thread::spawn(move || {
                bus.subscribe(1, move |_| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                });
                subscribed.store(true, Ordering::Release);
            })
        };
        let started_after = subscribed.load(Ordering::Acquire);
        let report = bus.emit(ev(1, 0));
        assert!(report.delivered <= 1);
        if started_after {
            assert_eq!(report.delivered, 1, "emit started after subscribe returned");
        }
        subscriber.join().unwrap();
        assert_eq!(bus.emit(ev(1, 1)).delivered, 1);
        assert_eq!(calls.load(Ordering::Relaxed), report.delivered + 1);
    });
}

/// After `unsubscribe` returns true, an emit that starts later does not
/// call the handler; the second unsubscribe returns false.
#[test]
fn emit_vs_unsubscribe() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let id = bus.subscribe(1, |_| Ok(()));
        let unsubscribed = Arc::new(AtomicBool::new(false));
        let remover = {
            let (bus, unsubscribed) = (bus.clone(), unsubscribed.clone());
            thread::spawn(move || {
                assert!(bus.unsubscribe(id));
                unsubscribed.store(true, Ordering::Release);
            })
        };
        let started_after = unsubscribed.load(Ordering::Acquire);
        let report = bus.emit(ev(1, 0));
        if started_after {
            assert_eq!(
                report.delivered, 0,
                "emit started after unsubscribe returned"
            );
        }
        remover.join().unwrap();
        assert_eq!(bus.emit(ev(1, 1)).delivered, 0);
        assert!(!bus.unsubscribe(id));
    });
}

/// Two concurrent subscribes to one (new) kind: neither is lost, even
/// though both race to create the kind's entry.
#[test]
fn two_subscribes_to_one_kind() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let other = {
            let bus = bus.clone();
            thread::spawn(move || bus.subscribe(1, |_| Ok(())))
        };
        let mine = bus.subscribe(1, |_| Ok(()));
        let theirs = other.join().unwrap();
        assert_ne!(mine, theirs);
        assert_eq!(bus.subscriber_count(&1), 2);
        assert_eq!(bus.emit(ev(1, 0)).delivered, 2);
    });
}

/// A subscribe to one kind racing an unsubscribe from another: both
/// replace the one snapshot of every kind, and neither change is lost (a
/// loser of the compare-and-swap rebuilds from the winner's snapshot); the
/// first kind's counters survive the copies.
#[test]
fn subscribe_and_unsubscribe_of_different_kinds() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let id = bus.subscribe(1, |_| Ok(()));
        bus.subscribe(1, |_| Ok(()));
        assert_eq!(bus.emit(ev(1, 0)).delivered, 2);
        let other = {
            let bus = bus.clone();
            thread::spawn(move || bus.subscribe(2, |_| Ok(())))
        };
        assert!(bus.unsubscribe(id));
        other.join().unwrap();
        assert_eq!(bus.subscriber_count(&1), 1);
        assert_eq!(bus.subscriber_count(&2), 1);
        assert_eq!(bus.delivery_stats(&1).delivered, 2);
    });
}

/// Two concurrent unsubscribes of one id: exactly one wins.
#[test]
fn two_unsubscribes_of_one_id() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let id = bus.subscribe(1, |_| Ok(()));
        let other = {
            let bus = bus.clone();
            thread::spawn(move || bus.unsubscribe(id))
        };
        let mine = bus.unsubscribe(id);
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "exactly one unsubscribe succeeds");
        assert_eq!(bus.subscriber_count(&1), 0);
    });
}

/// The audit log with two emitters (one emitting twice) and capacity 2,
/// each on its own stripe (loom's clock is a counter, so the stamps follow
/// the interleaving): never over capacity, none twice, one thread's events
/// in order, and once both are done the log holds exactly the two newest
/// by stamp.
#[test]
fn audit_ring_two_emitters() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(2));
        let other = {
            let bus = bus.clone();
            thread::spawn(move || {
                bus.emit(ev(1, 0));
                bus.emit(ev(1, 1));
            })
        };
        bus.emit(ev(2, 0));
        let during = bus.audit_log();
        assert!(during.len() <= 2);
        assert!(during.windows(2).all(|w| w[0] != w[1]));
        other.join().unwrap();
        let log = bus.audit_log();
        assert_eq!(log.len(), 2);
        assert_ne!(log[0], log[1]);
        // The two newest of A0 < A1 (program order) and B0, by stamp:
        // B0 first ⇒ [A0, A1]; otherwise A1 and B0 in either order.
        let ones: Vec<u32> = log.iter().filter(|e| e.kind == 1).map(|e| e.n).collect();
        assert!(ones == [0, 1] || ones == [1], "{log:?}");
    });
}

/// A reader merges the stripes while an emitter writes twice with
/// capacity 1 (every event opens a new page of its stripe): every snapshot
/// has at most one event, and once both are done the log holds the newest.
#[test]
fn audit_ring_reader_and_emitter() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(1));
        let reader = {
            let bus = bus.clone();
            thread::spawn(move || bus.audit_log())
        };
        bus.emit(ev(1, 0));
        bus.emit(ev(1, 1));
        let seen = reader.join().unwrap();
        assert!(seen.len() <= 1);
        assert_eq!(bus.audit_log(), vec![ev(1, 1)], "the newest event was lost");
    });
}

// ---------------------------------------------------------------------------
// 0.2: channels, owned guards, kind reclamation

/// A receiver waiting in `recv` is woken by an emit that races its
/// register-then-recheck: no lost wake-up (loom reports a deadlock if the
/// waiting thread can sleep with the event queued).
#[test]
fn recv_is_woken_by_emit() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let mut rx = bus.subscribe_channel(1, 1).unwrap();
        let emitter = {
            let bus = bus.clone();
            thread::spawn(move || assert_eq!(bus.emit(ev(1, 0)).delivered, 1))
        };
        assert_eq!(loom::future::block_on(rx.recv()), Ok(ev(1, 0)));
        emitter.join().unwrap();
    });
}

/// A receiver waiting in `recv` on a channel of capacity 1 while two
/// emitters push: the second push can find the queue full and evict, and
/// wakes only if its lag count is the first unreported one, yet the
/// receiver is never left asleep with its events unaccounted for (loom
/// reports a deadlock if it is): it gets both events, or one and a lag of
/// one. Fails (deadlock) when evicting pushes never wake — the receiver
/// takes the new event and sleeps before the eviction's unit is added —
/// and when a push that does not evict skips its wake.
#[test]
fn evicting_pushes_lose_no_wake_up() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let mut rx = bus.subscribe_channel(1, 1).unwrap();
        let emitters: Vec<_> = (0..2)
            .map(|n| {
                let bus = bus.clone();
                thread::spawn(move || assert_eq!(bus.emit(ev(1, n)).delivered, 1))
            })
            .collect();
        let mut accounted = 0;
        while accounted < 2 {
            match loom::future::block_on(rx.recv()) {
                Ok(_) => accounted += 1,
                Err(RecvError::Lagged(n)) => accounted += n,
                Err(other) => panic!("the bus is alive: {other:?}"),
            }
        }
        for emitter in emitters {
            emitter.join().unwrap();
        }
    });
}

/// Dropping the bus wakes a receiver waiting in `recv` on another thread
/// with `Closed` (after the event queued before), and the receiver does
/// not keep the bus alive.
#[test]
fn bus_drop_wakes_recv() {
    loom::model(|| {
        let bus = EventBus::<Ev>::new(0);
        let mut rx = bus.subscribe_channel(1, 2).unwrap();
        bus.emit(ev(1, 0));
        let consumer = thread::spawn(move || {
            let first = loom::future::block_on(rx.recv());
            let second = loom::future::block_on(rx.recv());
            (first, second)
        });
        drop(bus);
        let (first, second) = consumer.join().unwrap();
        assert_eq!(first, Ok(ev(1, 0)));
        assert_eq!(second, Err(RecvError::Closed));
    });
}

/// Two emitters (three events) into a channel of capacity 1 while the
/// receiver takes events: the events received plus the `Lagged` counts
/// equal the events emitted, exactly.
#[test]
fn lag_count_is_exact() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let mut rx = bus.subscribe_channel(1, 1).unwrap();
        let a = {
            let bus = bus.clone();
            thread::spawn(move || {
                bus.emit(ev(1, 0));
                bus.emit(ev(1, 1));
            })
        };
        let b = {
            let bus = bus.clone();
            thread::spawn(move || {
                bus.emit(ev(1, 2));
            })
        };
        let (mut received, mut lagged) = (0_u64, 0_u64);
        let mut take = |rx: &mut raceless::bus::Receiver<Ev>| match rx.try_recv() {
            Ok(_) => {
                received += 1;
                true
            }
            Err(TryRecvError::Lagged(n)) => {
                lagged += n;
                true
            }
            Err(_) => false,
        };
        take(&mut rx);
        a.join().unwrap();
        b.join().unwrap();
        while take(&mut rx) {}
        assert_eq!(received + lagged, 3, "received {received}, lagged {lagged}");
        assert!(received >= 1);
    });
}

/// A receiver dropped while another thread subscribes a second receiver to
/// the same kind and emits: an emit that starts after the drop returned
/// does not reach the dropped receiver, the second receiver is never lost
/// (the drop's unsubscribe and the subscribe both replace the kind's
/// snapshot), and afterwards only it is subscribed (loom also checks that
/// the dropped queue, with any event pushed into it, is freed).
#[test]
fn receiver_drop_vs_emit() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let rx = bus.subscribe_channel(1, 1).unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let dropper = {
            let dropped = dropped.clone();
            thread::spawn(move || {
                drop(rx);
                dropped.store(true, Ordering::Release);
            })
        };
        let mut second = bus.subscribe_channel(1, 1).unwrap();
        let started_after = dropped.load(Ordering::Acquire);
        let report = bus.emit(ev(1, 0));
        assert!(report.delivered >= 1 && report.delivered <= 2);
        if started_after {
            assert_eq!(
                report.delivered, 1,
                "emit started after the receiver was dropped"
            );
        }
        assert_eq!(
            second.try_recv(),
            Ok(ev(1, 0)),
            "the second receiver was lost"
        );
        dropper.join().unwrap();
        assert_eq!(bus.subscriber_count(&1), 1);
        assert_eq!(bus.kind_count(), 1);
        drop(second);
        assert_eq!(bus.kind_count(), 0);
    });
}

/// An owned guard dropped on another thread while this one subscribes a
/// second handler to the same kind and emits: an emit that starts after
/// the drop returned does not call the dropped handler, the second handler
/// is never lost, and afterwards only it is subscribed.
#[test]
fn guard_drop_vs_emit() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let guard = {
            let calls = calls.clone();
            bus.subscribe_owned(1, move |_| {
                calls.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
        };
        let dropped = Arc::new(AtomicBool::new(false));
        let dropper = {
            let dropped = dropped.clone();
            thread::spawn(move || {
                drop(guard);
                dropped.store(true, Ordering::Release);
            })
        };
        let second = bus.subscribe_owned(1, |_| Ok(()));
        let started_after = dropped.load(Ordering::Acquire);
        let report = bus.emit(ev(1, 0));
        let dropped_calls = calls.load(Ordering::Relaxed);
        if started_after {
            assert_eq!(dropped_calls, 0, "emit started after the guard was dropped");
        }
        assert_eq!(
            report.delivered,
            1 + dropped_calls,
            "the second handler was lost"
        );
        dropper.join().unwrap();
        assert_eq!(bus.subscriber_count(&1), 1);
        drop(second);
        assert_eq!(bus.kind_count(), 0);
    });
}

/// The unsubscribe that reclaims a kind (its last subscriber leaves) races
/// a subscribe to the same kind: the new subscription is never lost with
/// the reclaimed entry.
#[test]
fn kind_reclamation_vs_subscribe() {
    loom::model(|| {
        let bus = Arc::new(EventBus::<Ev>::new(0));
        let old = bus.subscribe(1, |_| Ok(()));
        let subscriber = {
            let bus = bus.clone();
            thread::spawn(move || bus.subscribe(1, |_| Ok(())))
        };
        assert!(bus.unsubscribe(old));
        let new = subscriber.join().unwrap();
        assert_eq!(bus.subscriber_count(&1), 1);
        assert_eq!(bus.kind_count(), 1);
        assert_eq!(bus.emit(ev(1, 0)).delivered, 1);
        assert!(bus.unsubscribe(new));
        assert_eq!(bus.kind_count(), 0);
    });
}
