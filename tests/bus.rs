//! The `bus` component's tests, written once over the `Bus` trait and run
//! on the lock-free bus, the `std` mutex baseline and the `parking_lot`
//! baseline; plus the proof that the checks catch the racy variant.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use raceless::baseline::{MutexBus, ParkingLotMutex, StdMutex};
use raceless::bus::{
    Bus, BusError, EmitReport, EventBus, OwnedBus, OwnedSubscription, Receiver, RecvError,
    SubscriptionId, TryRecvError, MAX_CHANNEL_CAPACITY,
};
use raceless_harness::bus::{
    audit_anomalies, calls_after_unsubscribe, churn_distinct_kinds, lag_accounting,
    missed_after_subscribe, quiet_expected_panics, unsubscribe_races, Behavior, Driver, KeyedEvent,
    Model, Op, RacyBus, TestEvent, EXPECTED_PANIC, HOT_KIND,
};
use raceless_harness::model::SequentialSpec;
use raceless_harness::threads::{hunt, iterations, run_concurrently};

type Seen = Arc<Mutex<Vec<(usize, TestEvent)>>>;

fn recorder<B: Bus<TestEvent>>(bus: &B, kind: u8, who: usize, seen: &Seen) -> SubscriptionId {
    let seen = seen.clone();
    bus.subscribe(kind, move |e: &TestEvent| {
        seen.lock().unwrap().push((who, *e));
        Ok(())
    })
}

fn delivery_by_kind<B: Bus<TestEvent>>(make: fn(usize) -> B) {
    let bus = make(0);
    let seen = Seen::default();
    recorder(&bus, 1, 0, &seen);
    recorder(&bus, 1, 1, &seen);
    recorder(&bus, 2, 2, &seen);
    let (a, b, c) = (
        TestEvent::new(1, 10),
        TestEvent::new(2, 20),
        TestEvent::new(3, 30),
    );
    assert_eq!(
        bus.emit(a),
        EmitReport {
            delivered: 2,
            failed: 0
        }
    );
    assert_eq!(
        bus.emit(b),
        EmitReport {
            delivered: 1,
            failed: 0
        }
    );
    assert_eq!(bus.emit(c), EmitReport::default());
    assert_eq!(*seen.lock().unwrap(), vec![(0, a), (1, a), (2, b)]);
    assert_eq!(bus.subscriber_count(&1), 2);
    assert_eq!(bus.subscriber_count(&2), 1);
    assert_eq!(bus.subscriber_count(&3), 0);
}

fn failure_isolation<B: Bus<TestEvent>>(make: fn(usize) -> B) {
    quiet_expected_panics();
    let bus = make(4);
    let seen = Seen::default();
    recorder(&bus, 1, 0, &seen);
    bus.subscribe(1, |_: &TestEvent| Err("handler error".into()));
    bus.subscribe(1, |_: &TestEvent| panic!("{}", EXPECTED_PANIC));
    recorder(&bus, 1, 3, &seen);
    let e = TestEvent::new(1, 7);
    for _ in 0..2 {
        assert_eq!(
            bus.emit(e),
            EmitReport {
                delivered: 2,
                failed: 2
            }
        );
    }
    assert_eq!(*seen.lock().unwrap(), vec![(0, e), (3, e), (0, e), (3, e)]);
    // The bus is intact: subscriptions and log still work.
    assert_eq!(bus.subscriber_count(&1), 4);
    assert_eq!(bus.audit_log(), vec![e, e]);
}

fn unsubscribe_finality<B: Bus<TestEvent>>(make: fn(usize) -> B) {
    let bus = make(0);
    let seen = Seen::default();
    let a = recorder(&bus, 1, 0, &seen);
    let b = recorder(&bus, 1, 1, &seen);
    assert!(bus.unsubscribe(a));
    assert!(!bus.unsubscribe(a), "second unsubscribe");
    assert!(
        !bus.unsubscribe(SubscriptionId::from_raw(u64::MAX)),
        "unknown id"
    );
    let e = TestEvent::new(1, 1);
    assert_eq!(bus.emit(e).delivered, 1);
    assert_eq!(*seen.lock().unwrap(), vec![(1, e)]);
    assert!(bus.unsubscribe(b));
    assert_eq!(bus.emit(e), EmitReport::default());
    assert_eq!(bus.subscriber_count(&1), 0);
}

fn scoped_subscription<B: Bus<TestEvent>>(make: fn(usize) -> B) {
    let bus = make(0);
    let e = TestEvent::new(1, 1);
    {
        let sub = bus.subscribe_scoped(1, |_: &TestEvent| Ok(()));
        assert_eq!(bus.emit(e).delivered, 1);
        let _ = sub.id();
    }
    assert_eq!(bus.emit(e).delivered, 0);
    let sub = bus.subscribe_scoped(1, |_: &TestEvent| Ok(()));
    assert!(sub.unsubscribe());
    let kept = bus.subscribe_scoped(1, |_: &TestEvent| Ok(())).detach();
    assert_eq!(bus.emit(e).delivered, 1);
    assert!(bus.unsubscribe(kept));
}

fn visibility_under_churn<B: Bus<TestEvent>>(make: fn(usize) -> B) {
    let bus = make(0);
    assert_eq!(missed_after_subscribe(&bus, 4, iterations(2000)), 0);
    assert_eq!(bus.subscriber_count(&HOT_KIND), 0);
}

fn finality_under_churn<B: Bus<TestEvent>>(make: fn(usize) -> B) {
    assert_eq!(calls_after_unsubscribe(&make(0), 4, iterations(2000)), 0);
    assert_eq!(unsubscribe_races(&make(0), 4, iterations(500)), 0);
}

fn audit_bounded_unique_ordered<B: Bus<TestEvent>>(make: fn(usize) -> B) {
    // Sequential: keeps the newest, oldest first.
    let bus = make(3);
    for i in 0..10 {
        bus.emit(TestEvent::new(0, i));
    }
    let payloads: Vec<u64> = bus.audit_log().iter().map(|e| e.payload).collect();
    assert_eq!(payloads, vec![7, 8, 9]);
    // Disabled.
    let bus = make(0);
    bus.emit(TestEvent::new(0, 0));
    assert!(bus.audit_log().is_empty());
    // Four concurrent emitters and a reader.
    for capacity in [1, 7, 64] {
        let found = audit_anomalies(&make(capacity), capacity, 4, iterations(5000));
        assert_eq!(found.total(), 0, "capacity {capacity}: {found:?}");
    }
}

fn reentrant_handlers<B: Bus<TestEvent> + 'static>(make: fn(usize) -> B) {
    let bus = Arc::new(make(16));
    let nested = Arc::new(AtomicUsize::new(0));
    {
        let nested = nested.clone();
        bus.subscribe(2, move |_: &TestEvent| {
            nested.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
    }
    let weak = Arc::downgrade(&bus);
    bus.subscribe(1, move |e: &TestEvent| {
        let bus = weak.upgrade().ok_or("bus gone")?;
        // Every operation on the same bus, from inside a handler.
        let id = bus.subscribe(3, |_: &TestEvent| Ok(()));
        let report = bus.emit(TestEvent::new(2, e.payload));
        assert_eq!(report.delivered, 1);
        assert!(bus.audit_log().len() <= 16);
        assert!(bus.subscriber_count(&3) >= 1);
        assert!(bus.unsubscribe(id));
        Ok(())
    });
    // A handler that unsubscribes itself.
    let own_id = Arc::new(Mutex::new(None::<SubscriptionId>));
    {
        let (weak, slot) = (Arc::downgrade(&bus), own_id.clone());
        let id = bus.subscribe(4, move |_: &TestEvent| {
            let bus = weak.upgrade().ok_or("bus gone")?;
            let id = slot.lock().unwrap().take().ok_or("already removed")?;
            assert!(bus.unsubscribe(id));
            Ok(())
        });
        *own_id.lock().unwrap() = Some(id);
    }
    let n = iterations(200);
    run_concurrently(2, |t| {
        for i in 0..n {
            let report = bus.emit(TestEvent::new(1, (t * 1000 + i) as u64));
            assert_eq!(
                report,
                EmitReport {
                    delivered: 1,
                    failed: 0
                }
            );
        }
    });
    assert_eq!(nested.load(Ordering::Relaxed), 2 * n);
    assert_eq!(bus.subscriber_count(&3), 0);
    assert_eq!(bus.emit(TestEvent::new(4, 0)).delivered, 1);
    assert_eq!(bus.emit(TestEvent::new(4, 0)).delivered, 0);
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let behavior = prop_oneof![
        6 => Just(Behavior::Succeed),
        1 => Just(Behavior::Fail),
        1 => Just(Behavior::Panic),
    ];
    prop_oneof![
        3 => (0..4u8, behavior).prop_map(|(kind, behavior)| Op::Subscribe { kind, behavior }),
        2 => (0..12usize).prop_map(Op::Unsubscribe),
        4 => (0..4u8, 0..1000u64).prop_map(|(k, p)| Op::Emit(TestEvent::new(k, p))),
        1 => Just(Op::AuditLog),
        1 => (0..4u8).prop_map(Op::SubscriberCount),
    ]
}

fn matches_model<B: Bus<TestEvent>>(make: fn(usize) -> B, capacity: usize, ops: &[Op]) {
    let mut model = Model::new(capacity);
    let mut driver = Driver::new(make(capacity));
    for (i, op) in ops.iter().enumerate() {
        assert_eq!(driver.apply(op), model.apply(op), "op #{i}: {op:?}");
    }
}

// ---------------------------------------------------------------------------
// 0.2: owned guards, channels, kind reclamation (generic over `OwnedBus`)

fn assert_send_static<T: Send + 'static>(_: &T) {}

fn owned_subscription<B: OwnedBus<TestEvent> + 'static>(make: fn(usize) -> B) {
    let bus = Arc::new(make(0));
    let e = TestEvent::new(1, 1);
    let guard = bus.subscribe_owned(1, |_: &TestEvent| Ok(()));
    assert_send_static(&guard);
    assert_eq!(bus.emit(e).delivered, 1);
    // Stored beside the bus, moved to another thread, dropped there.
    struct Holder<B> {
        _bus: Arc<B>,
        _sub: OwnedSubscription,
    }
    let holder = Holder {
        _bus: bus.clone(),
        _sub: guard,
    };
    std::thread::spawn(move || drop(holder)).join().unwrap();
    assert_eq!(bus.emit(e).delivered, 0);
    assert_eq!(
        bus.kind_count(),
        0,
        "the kind is reclaimed with its last subscriber"
    );
    // unsubscribe / detach.
    assert!(bus.subscribe_owned(1, |_: &TestEvent| Ok(())).unsubscribe());
    let kept = bus.subscribe_owned(1, |_: &TestEvent| Ok(())).detach();
    assert_eq!(bus.emit(e).delivered, 1);
    assert!(bus.unsubscribe(kept));
    // A guard outliving its bus: dropping it does nothing, and it did not
    // keep the bus alive.
    let late = bus.subscribe_owned(1, |_: &TestEvent| Ok(()));
    let weak = Arc::downgrade(&bus);
    drop(bus);
    assert!(weak.upgrade().is_none(), "the guard kept the bus alive");
    assert!(!late.unsubscribe());
}

fn channel_basics<B: OwnedBus<TestEvent> + 'static>(make: fn(usize) -> B) {
    let bus = make(0);
    assert_eq!(
        bus.subscribe_channel(1, 0).unwrap_err(),
        BusError::ZeroCapacity
    );
    assert_eq!(
        bus.subscribe_channel(1, MAX_CHANNEL_CAPACITY + 1)
            .unwrap_err(),
        BusError::CapacityTooLarge {
            requested: MAX_CHANNEL_CAPACITY + 1,
            max: MAX_CHANNEL_CAPACITY
        }
    );
    assert_eq!(bus.kind_count(), 0, "a refused channel leaves no trace");
    let mut rx = bus.subscribe_channel(1, 4).unwrap();
    assert_send_static(&rx);
    let _ = format!("{rx:?}");
    let seen = Seen::default();
    recorder(&bus, 1, 0, &seen);
    assert_eq!(bus.subscriber_count(&1), 2);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // A channel delivery counts in `delivered`, beside the handler's.
    for i in 0..10 {
        assert_eq!(bus.emit(TestEvent::new(1, i)).delivered, 2);
    }
    bus.emit(TestEvent::new(2, 99)); // another kind: not queued
    assert_eq!(
        seen.lock().unwrap().len(),
        10,
        "the handler saw every event"
    );
    // 10 into 4: the 6 oldest were dropped, reported once, then the 4 newest.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged(6)));
    for i in 6..10 {
        assert_eq!(rx.try_recv(), Ok(TestEvent::new(1, i)));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // Dropping the receiver unsubscribes it.
    drop(rx);
    assert_eq!(bus.subscriber_count(&1), 1);
    // Dropping the bus closes a receiver after it drained its queue.
    let mut rx = bus.subscribe_channel(3, 2).unwrap();
    bus.emit(TestEvent::new(3, 1));
    drop(bus);
    assert_eq!(rx.try_recv(), Ok(TestEvent::new(3, 1)));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(
        rx.blocking_recv(),
        Err(RecvError::Closed),
        "Closed is final"
    );
}

fn unsubscribe_closes_a_channel<B: OwnedBus<TestEvent>>(make: fn(usize) -> B) {
    let bus = make(0);
    let mut rx = bus.subscribe_channel(1, 2).unwrap();
    bus.emit(TestEvent::new(1, 1));
    assert!(bus.unsubscribe(rx.id()));
    bus.emit(TestEvent::new(1, 2));
    assert_eq!(rx.try_recv(), Ok(TestEvent::new(1, 1)));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    drop(rx); // its id is gone already: nothing else to do
    assert_eq!(bus.kind_count(), 0);
}

fn kinds_are_reclaimed<B: OwnedBus<TestEvent>>(make: fn(usize) -> B) {
    let bus = make(0);
    let a = bus.subscribe(1, |_: &TestEvent| Ok(()));
    let b = bus.subscribe(1, |_: &TestEvent| Ok(()));
    let rx = bus.subscribe_channel(2, 1).unwrap();
    assert_eq!(bus.kind_count(), 2);
    assert!(bus.unsubscribe(a));
    assert_eq!(bus.kind_count(), 2, "kind 1 still has a subscriber");
    assert!(bus.unsubscribe(b));
    assert_eq!(bus.kind_count(), 1);
    drop(rx);
    assert_eq!(bus.kind_count(), 0);
    // A reclaimed kind comes back on its next subscribe.
    let c = bus.subscribe(1, |_: &TestEvent| Ok(()));
    assert_eq!(bus.emit(TestEvent::new(1, 0)).delivered, 1);
    assert!(bus.unsubscribe(c));
    assert!(!bus.unsubscribe(a));
}

fn slow_consumer_lags_exactly<B: OwnedBus<TestEvent>>(make: fn(usize) -> B) {
    for (capacity, slowness) in [(1, 4), (8, 8), (64, 2)] {
        let r = lag_accounting(&make(0), 4, iterations(5000), capacity, slowness);
        assert_eq!(r.anomalies(), 0, "capacity {capacity}: {r:?}");
        assert!(r.received >= capacity as u64, "{r:?}");
    }
}

fn a_million_kinds_churn_through<B: OwnedBus<KeyedEvent>>(bus: B, kinds: usize) {
    let baseline = bus.kind_count();
    let _hold = bus.subscribe_owned(1, |_: &KeyedEvent| Ok(()));
    let threads = 4;
    assert_eq!(churn_distinct_kinds(&bus, threads, kinds / threads), 0);
    assert_eq!(bus.kind_count(), baseline + 1);
    assert_eq!(bus.audit_log().len(), 16);
    drop(_hold);
    assert_eq!(bus.kind_count(), baseline);
}

/// Many kinds live at once (4,096: dozens in every shard of the lock-free
/// bus, which keeps a shard's kinds in a list up to 8 and in a hash map
/// beyond): each emit reaches exactly its kind's handler, and after all
/// but four kinds are unsubscribed (the shards go back to lists) exactly
/// those four are left.
fn many_live_kinds<B: OwnedBus<KeyedEvent>>(bus: B) {
    const KINDS: u64 = 4096;
    let ids: Vec<SubscriptionId> = (0..KINDS)
        .map(|kind| {
            bus.subscribe(kind, move |e: &KeyedEvent| {
                if e.0 == kind {
                    Ok(())
                } else {
                    Err("delivered to another kind".into())
                }
            })
        })
        .collect();
    assert_eq!(bus.kind_count(), KINDS as usize);
    for kind in 0..KINDS {
        assert_eq!(
            bus.emit(KeyedEvent(kind)),
            EmitReport {
                delivered: 1,
                failed: 0
            }
        );
        assert_eq!(bus.subscriber_count(&kind), 1);
    }
    assert_eq!(bus.emit(KeyedEvent(KINDS)).delivered, 0);
    let kept = |kind: u64| kind % 1024 == 0;
    for (kind, id) in (0..KINDS).zip(ids) {
        if !kept(kind) {
            assert!(bus.unsubscribe(id));
        }
    }
    assert_eq!(bus.kind_count(), 4);
    for kind in 0..KINDS {
        let want = usize::from(kept(kind));
        assert_eq!(bus.emit(KeyedEvent(kind)).delivered, want);
        assert_eq!(bus.subscriber_count(&kind), want);
    }
}

#[test]
fn many_live_kinds_lock_free() {
    many_live_kinds(EventBus::<KeyedEvent>::new(0));
}

#[test]
fn many_live_kinds_std_mutex() {
    many_live_kinds(MutexBus::<KeyedEvent, StdMutex>::new(0));
}

/// Async consumers under a multi-thread tokio runtime.
mod tokio_tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap()
    }

    /// `recv` cancelled at its `.await` (by `timeout` and by a `select!`
    /// that a ready branch wins) loses no event and duplicates none.
    pub(super) fn recv_is_cancel_safe<B: OwnedBus<TestEvent> + 'static>(make: fn(usize) -> B) {
        let n = iterations(3000) as u64;
        runtime().block_on(async {
            let bus = Arc::new(make(0));
            let mut rx = bus.subscribe_channel(1, n as usize).unwrap();
            let emitter = {
                let bus = bus.clone();
                tokio::task::spawn_blocking(move || {
                    for i in 0..n {
                        assert_eq!(bus.emit(TestEvent::new(1, i)).delivered, 1);
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            };
            let (mut got, mut cancelled) = (Vec::new(), 0_u64);
            while (got.len() as u64) < n {
                let round = got.len() as u64 + cancelled;
                if round % 2 == 0 {
                    match tokio::time::timeout(Duration::from_micros(50), rx.recv()).await {
                        Ok(r) => got.push(r.unwrap().payload),
                        Err(_) => cancelled += 1,
                    }
                } else {
                    tokio::select! {
                        biased;
                        _ = std::future::ready(()), if round % 3 == 0 => cancelled += 1,
                        r = rx.recv() => got.push(r.unwrap().payload),
                        _ = tokio::task::yield_now() => cancelled += 1,
                    }
                }
            }
            emitter.await.unwrap();
            assert_eq!(got, (0..n).collect::<Vec<_>>());
            assert!(cancelled > 0, "no recv was cancelled");
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        });
    }

    /// A receiver and a guard moved into a task that is aborted at its
    /// `.await`: both unsubscribe, the kind is reclaimed, the bus works on.
    pub(super) fn aborted_task_unsubscribes<B: OwnedBus<TestEvent> + 'static>(
        make: fn(usize) -> B,
    ) {
        runtime().block_on(async {
            let bus = Arc::new(make(0));
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let task = {
                let mut rx = bus.subscribe_channel(1, 4).unwrap();
                let guard = bus.subscribe_owned(1, |_: &TestEvent| Ok(()));
                tokio::spawn(async move {
                    let _guard = guard;
                    let first = rx.recv().await;
                    ready_tx.send(first).unwrap();
                    rx.recv().await // cancelled here
                })
            };
            assert_eq!(bus.emit(TestEvent::new(1, 1)).delivered, 2);
            assert_eq!(ready_rx.await.unwrap(), Ok(TestEvent::new(1, 1)));
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            assert_eq!(bus.subscriber_count(&1), 0);
            assert_eq!(bus.kind_count(), 0);
            assert_eq!(bus.emit(TestEvent::new(1, 2)).delivered, 0);
        });
    }

    /// A panicking task drops its guard and receiver while unwinding.
    pub(super) fn panicking_task_unsubscribes<B: OwnedBus<TestEvent> + 'static>(
        make: fn(usize) -> B,
    ) {
        quiet_expected_panics();
        runtime().block_on(async {
            let bus = Arc::new(make(0));
            let rx = bus.subscribe_channel(1, 4).unwrap();
            let guard = bus.subscribe_owned(1, |_: &TestEvent| Ok(()));
            let task = tokio::spawn(async move {
                let (_rx, _guard) = (rx, guard);
                tokio::task::yield_now().await;
                panic!("{}", EXPECTED_PANIC);
            });
            assert!(task.await.unwrap_err().is_panic());
            assert_eq!(bus.kind_count(), 0);
        });
    }

    /// A receiver awaiting in a task does not keep the bus alive: dropping
    /// the last `Arc` wakes it with `Closed` after it drained its queue.
    pub(super) fn dropping_the_bus_wakes_receivers<B: OwnedBus<TestEvent> + 'static>(
        make: fn(usize) -> B,
    ) {
        runtime().block_on(async {
            let bus = Arc::new(make(0));
            let mut rx = bus.subscribe_channel(1, 4).unwrap();
            let mut blocking = bus.subscribe_channel(1, 4).unwrap();
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let first = rx.recv().await;
                started_tx.send(()).unwrap();
                (first, rx.recv().await, rx.recv().await)
            });
            let thread = tokio::task::spawn_blocking(move || {
                (blocking.blocking_recv(), blocking.blocking_recv())
            });
            bus.emit(TestEvent::new(1, 1));
            started_rx.await.unwrap();
            drop(bus); // the only strong handle
            let (first, second, third) = task.await.unwrap();
            assert_eq!(first, Ok(TestEvent::new(1, 1)));
            assert_eq!(second, Err(RecvError::Closed));
            assert_eq!(third, Err(RecvError::Closed));
            let (a, b) = thread.await.unwrap();
            assert_eq!(a, Ok(TestEvent::new(1, 1)));
            assert_eq!(b, Err(RecvError::Closed));
        });
    }

    /// A consumer task that never reads does not slow `emit` down: the
    /// emits all return at once with the delivery counted, and the
    /// consumer then sees `Lagged` with the exact number it missed, then
    /// the newest events.
    pub(super) fn stalled_consumer_never_blocks_emit<B: OwnedBus<TestEvent> + 'static>(
        make: fn(usize) -> B,
    ) {
        let n = iterations(20_000) as u64;
        runtime().block_on(async {
            let bus = Arc::new(make(0));
            let mut rx = bus.subscribe_channel(1, 16).unwrap();
            let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
            let consumer = tokio::spawn(async move {
                go_rx.await.unwrap(); // stalled until every emit returned
                let mut out = vec![rx.recv().await];
                while let Ok(e) = rx.try_recv() {
                    out.push(Ok(e));
                }
                out
            });
            let emitted = {
                let bus = bus.clone();
                tokio::task::spawn_blocking(move || {
                    (0..n)
                        .map(|i| bus.emit(TestEvent::new(1, i)).delivered)
                        .sum::<usize>()
                })
                .await
                .unwrap()
            };
            assert_eq!(emitted as u64, n, "every emit delivered to the channel");
            go_tx.send(()).unwrap();
            let out = consumer.await.unwrap();
            assert_eq!(out[0], Err(RecvError::Lagged(n - 16)));
            let kept: Vec<u64> = out[1..]
                .iter()
                .map(|r| r.as_ref().unwrap().payload)
                .collect();
            assert_eq!(kept, (n - 16..n).collect::<Vec<_>>());
        });
    }
}

macro_rules! bus_tests {
    ($($name:ident => $make:expr;)*) => {$(
        mod $name {
            use super::*;
            fn make(capacity: usize) -> impl OwnedBus<TestEvent> + 'static {
                $make(capacity)
            }
            #[test] fn delivery_by_kind() { super::delivery_by_kind(make) }
            #[test] fn failure_isolation() { super::failure_isolation(make) }
            #[test] fn unsubscribe_finality() { super::unsubscribe_finality(make) }
            #[test] fn scoped_subscription() { super::scoped_subscription(make) }
            #[test] fn visibility_under_churn() { super::visibility_under_churn(make) }
            #[test] fn finality_under_churn() { super::finality_under_churn(make) }
            #[test] fn audit_bounded_unique_ordered() { super::audit_bounded_unique_ordered(make) }
            #[test] fn reentrant_handlers() { super::reentrant_handlers(make) }
            #[test] fn owned_subscription() { super::owned_subscription(make) }
            #[test] fn channel_basics() { super::channel_basics(make) }
            #[test] fn unsubscribe_closes_a_channel() { super::unsubscribe_closes_a_channel(make) }
            #[test] fn kinds_are_reclaimed() { super::kinds_are_reclaimed(make) }
            #[test] fn slow_consumer_lags_exactly() { super::slow_consumer_lags_exactly(make) }
            #[test] fn recv_is_cancel_safe() { super::tokio_tests::recv_is_cancel_safe(make) }
            #[test] fn aborted_task_unsubscribes() { super::tokio_tests::aborted_task_unsubscribes(make) }
            #[test] fn panicking_task_unsubscribes() { super::tokio_tests::panicking_task_unsubscribes(make) }
            #[test] fn dropping_the_bus_wakes_receivers() { super::tokio_tests::dropping_the_bus_wakes_receivers(make) }
            #[test] fn stalled_consumer_never_blocks_emit() { super::tokio_tests::stalled_consumer_never_blocks_emit(make) }
            proptest! {
                #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 128 }))]
                #[test]
                fn matches_model(
                    capacity in 0..5usize,
                    ops in prop::collection::vec(op_strategy(), 0..60),
                ) {
                    super::matches_model(make, capacity, &ops);
                }
            }
        }
    )*};
}

bus_tests! {
    lock_free => EventBus::<TestEvent>::new;
    std_mutex => MutexBus::<TestEvent, StdMutex>::new;
    parking_lot => MutexBus::<TestEvent, ParkingLotMutex>::new;
}

/// The checks can fail: each catches the racy variant on its own (each hunt
/// is retried so one lucky schedule cannot make the test flaky).
mod racy_variant_is_caught {
    use super::*;

    #[test]
    fn missed_deliveries() {
        let n = hunt(10, || {
            missed_after_subscribe(&RacyBus::new(0), 4, iterations(2000))
        });
        assert!(n > 0, "the racy bus lost no delivery");
    }

    #[test]
    fn handler_calls_after_unsubscribe() {
        let n = hunt(10, || {
            calls_after_unsubscribe(&RacyBus::new(0), 4, iterations(2000))
        });
        assert!(n > 0, "the racy bus kept every unsubscribe final");
    }

    #[test]
    fn double_unsubscribes() {
        let n = hunt(10, || {
            unsubscribe_races(&RacyBus::new(0), 4, iterations(500))
        });
        assert!(
            n > 0,
            "the racy bus let exactly one unsubscribe of each id win"
        );
    }

    #[test]
    fn lost_lag_counts() {
        let n = hunt(10, || {
            raceless_harness::bus::racy_lag_accounting(4, iterations(5000), 1, 4).anomalies()
        });
        assert!(n > 0, "the racy channel counted every eviction");
    }

    #[test]
    fn audit_over_capacity() {
        let n = hunt(10, || {
            audit_anomalies(&RacyBus::new(4), 4, 4, iterations(5000)).over_capacity
        });
        assert!(n > 0, "the racy log never exceeded its capacity");
    }

    /// Sequentially the racy variant is correct: only concurrency breaks it.
    #[test]
    fn sequentially_it_matches_the_model() {
        super::matches_model(
            RacyBus::new,
            3,
            &[
                Op::Subscribe {
                    kind: 1,
                    behavior: Behavior::Succeed,
                },
                Op::Emit(TestEvent::new(1, 1)),
                Op::Unsubscribe(0),
                Op::Unsubscribe(0),
                Op::Emit(TestEvent::new(1, 2)),
                Op::AuditLog,
            ],
        );
    }
}

/// Beyond the trait: the lock-free bus's per-kind delivery counters are
/// exact once concurrent emits have returned.
#[test]
fn delivery_stats_are_exact_under_concurrency() {
    quiet_expected_panics();
    let bus = EventBus::<TestEvent>::new(8);
    bus.subscribe(1, |_| Ok(()));
    bus.subscribe(1, |_| Ok(()));
    bus.subscribe(1, |_| Err("no".into()));
    bus.subscribe(2, |_| panic!("{}", EXPECTED_PANIC));
    let n = iterations(2000);
    run_concurrently(4, |t| {
        for i in 0..n {
            bus.emit(TestEvent::new(1 + (i % 2) as u8, (t * n + i) as u64));
        }
    });
    let (one, two) = (bus.delivery_stats(&1), bus.delivery_stats(&2));
    // Kind 1 gets half of the 4·n emits, with two good handlers and one bad.
    assert_eq!((one.delivered, one.failed), (4 * n as u64, 2 * n as u64));
    assert_eq!((two.delivered, two.failed), (0, 2 * n as u64));
    assert_eq!(bus.delivery_stats(&9).delivered, 0);
    assert_eq!(bus.audit_capacity(), 8);
}

/// 0.2 memory rule: 10^6 distinct kinds pushed through the bus (a handler
/// guard and a channel each, one emit, both dropped), 4 threads at once;
/// the live kind count returns to its baseline.
#[test]
fn a_million_kinds_leave_no_entry_lock_free() {
    a_million_kinds_churn_through(EventBus::<KeyedEvent>::new(16), iterations(1_000_000));
}

#[test]
fn many_kinds_leave_no_entry_std_mutex() {
    a_million_kinds_churn_through(
        MutexBus::<KeyedEvent, StdMutex>::new(16),
        iterations(100_000),
    );
}

#[test]
fn receiver_and_guard_are_send_static() {
    fn send_static<T: Send + Sync + 'static>() {}
    send_static::<OwnedSubscription>();
    fn send_only<T: Send + 'static>() {}
    send_only::<Receiver<TestEvent>>();
}

#[test]
fn workloads_run() {
    raceless_harness::workload::run_every_row(raceless_harness::bus::workloads(), 400);
}
