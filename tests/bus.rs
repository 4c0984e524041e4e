//! The `bus` component's tests, written once over the `Bus` trait and run
//! on the lock-free bus, the `std` mutex baseline and the `parking_lot`
//! baseline; plus the proof that the checks catch the racy variant.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use raceless::baseline::{MutexBus, ParkingLotMutex, StdMutex};
use raceless::bus::{Bus, EmitReport, EventBus, SubscriptionId};
use raceless_harness::bus::{
    audit_anomalies, calls_after_unsubscribe, missed_after_subscribe, quiet_expected_panics,
    unsubscribe_races, Behavior, Driver, Model, Op, RacyBus, TestEvent, EXPECTED_PANIC, HOT_KIND,
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

macro_rules! bus_tests {
    ($($name:ident => $make:expr;)*) => {$(
        mod $name {
            use super::*;
            fn make(capacity: usize) -> impl Bus<TestEvent> + 'static {
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
