//! Tests of the `breaker` component: seed semantics, proptest against the
//! sequential model and stress checks — written once over the `Breaker`
//! trait and run on the lock-free breaker and both mutex baselines — plus
//! the lock-free extensions (builder, half-open, events, metrics, handles)
//! and the executor.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use raceless::baseline::{MutexBreaker, ParkingLotMutex, ShardedBreaker, StdMutex};
use raceless::breaker::{
    Breaker, BreakerError, BreakerEvent, CallOutcome, CircuitBreaker, Outcome,
    ParallelStrategyExecutor, State,
};
use raceless::clock::ManualClock;
use raceless_harness::breaker::{self as h, Model, Op, RacyBreaker};
use raceless_harness::model::SequentialSpec;
use raceless_harness::threads::{hunt, iterations, run_concurrently};

/// Tests written once over the trait, instantiated per implementation.
macro_rules! trait_tests {
    ($($module:ident => $make:expr;)*) => {$(
        mod $module {
            use super::*;

            fn make(threshold: u32) -> impl Breaker {
                let make: fn(u32) -> Result<_, BreakerError> = $make;
                make(threshold).expect("valid threshold")
            }

            #[test]
            fn seed_semantics() {
                seed_semantics_on(&make(3));
            }

            #[test]
            fn zero_threshold_is_an_error() {
                let make: fn(u32) -> Result<_, BreakerError> = $make;
                assert_eq!(make(0).err(), Some(BreakerError::ZeroThreshold));
            }

            #[test]
            fn empty_name_is_a_valid_key() {
                empty_name_on(&make(1));
            }

            #[test]
            fn no_lost_increments_on_a_hot_name() {
                let b = make(u32::MAX);
                assert_eq!(h::lost_increments(&b, 8, iterations(2_000) as u32, true), 0);
            }

            #[test]
            fn no_lost_increments_on_private_names() {
                let b = make(u32::MAX);
                assert_eq!(h::lost_increments(&b, 8, iterations(2_000) as u32, false), 0);
            }

            #[test]
            fn threshold_and_open_are_one_step() {
                assert_eq!(h::threshold_anomalies(make, 8, iterations(200)), 0);
            }

            #[test]
            fn reset_all_is_linearizable() {
                assert_eq!(h::torn_reset_alls(make, 8, iterations(200)), 0);
            }

            #[test]
            fn late_successes_never_close_an_open_name() {
                assert_eq!(h::stale_closes(|| make(1), 8, iterations(100)), 0);
            }

            #[test]
            fn successes_and_failures_leave_a_consistent_name() {
                assert_eq!(h::inconsistent_after_mixed(make, 8, iterations(100)), 0);
            }

            proptest! {
                #[test]
                fn matches_the_sequential_model(
                    threshold in 1u32..4,
                    ops in proptest::collection::vec(op_strategy(), 1..60),
                ) {
                    let b = make(threshold);
                    let mut model = Model::new(threshold);
                    for op in &ops {
                        prop_assert_eq!(h::apply(&b, op), model.apply(op), "op {:?}", op);
                    }
                }
            }
        }
    )*};
}

trait_tests! {
    lock_free => CircuitBreaker::new;
    std_mutex => MutexBreaker::<StdMutex>::new;
    parking_lot => MutexBreaker::<ParkingLotMutex>::new;
    sharded_mutex => ShardedBreaker::new;
}

fn seed_semantics_on(b: &dyn Breaker) {
    // threshold 3
    assert!(!b.is_open("s"));
    assert_eq!(b.failures("s"), 0);
    b.record_failure("s");
    b.record_failure("s");
    assert!(!b.is_open("s"));
    assert!(b.admit("s"));
    b.record_failure("s");
    assert!(b.is_open("s"));
    assert!(!b.admit("s"));
    b.record_failure("s"); // keeps counting while open; not a new opening
    assert_eq!(b.failures("s"), 4);
    assert_eq!(b.times_opened("s"), 1);
    // A success zeroes and closes.
    b.record_success("s");
    assert!(!b.is_open("s"));
    assert_eq!(b.failures("s"), 0);
    // Failures must be consecutive.
    b.record_failure("s");
    b.record_failure("s");
    b.record_success("s");
    b.record_failure("s");
    assert!(!b.is_open("s"));
    // reset closes one name, reset_all closes all.
    for n in ["a", "b"] {
        for _ in 0..3 {
            b.record_failure(n);
        }
    }
    b.reset("a");
    assert!(!b.is_open("a") && b.is_open("b"));
    b.record_failure("a");
    b.reset_all();
    assert!(!b.is_open("a") && !b.is_open("b"));
    assert_eq!(
        (b.failures("a"), b.failures("b"), b.failures("s")),
        (0, 0, 0)
    );
    // After a reset_all names count from zero again.
    b.record_failure("b");
    assert_eq!(b.failures("b"), 1);
    // Unknown names: closed, zero, resets are no-ops.
    b.reset("unknown");
    assert!(!b.is_open("unknown"));
    assert_eq!(b.times_opened("unknown"), 0);
}

fn empty_name_on(b: &dyn Breaker) {
    b.record_failure("");
    assert!(b.is_open(""));
    assert!(!b.is_open(" "));
    assert_eq!(b.failures(""), 1);
    b.record_success("");
    assert!(!b.is_open(""));
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let name = prop_oneof![Just(""), Just("a"), Just("b")].prop_map(String::from);
    prop_oneof![
        4 => name.clone().prop_map(Op::RecordFailure),
        2 => name.clone().prop_map(Op::RecordSuccess),
        2 => name.clone().prop_map(Op::IsOpen),
        2 => name.clone().prop_map(Op::Failures),
        1 => name.clone().prop_map(Op::Reset),
        1 => Just(Op::ResetAll),
        1 => name.clone().prop_map(Op::TimesOpened),
        1 => name.prop_map(Op::Admit),
    ]
}

// ---------------------------------------------------------------------------
// The checks can fail: they catch the seed's racy breaker.
// ---------------------------------------------------------------------------

#[test]
fn the_stress_checks_catch_the_racy_breaker() {
    let lost = hunt(10, || {
        h::lost_increments(&RacyBreaker::new(u32::MAX), 8, 500, true)
    });
    assert!(lost > 0, "lost increments not caught");
    assert!(
        hunt(10, || h::threshold_anomalies(RacyBreaker::new, 8, 200)) > 0,
        "threshold/open anomalies not caught"
    );
    assert!(
        hunt(10, || h::torn_reset_alls(RacyBreaker::new, 8, 200)) > 0,
        "torn reset_all not caught"
    );
    assert!(
        hunt(10, || h::stale_closes(|| RacyBreaker::new(1), 8, 50)) > 0,
        "a stale success closing an open name not caught"
    );
}

#[test]
fn the_reproduction_loses_on_racy_only() {
    let repro = h::reproduction();
    assert!(hunt(10, || (repro.racy)(4, 5)) > 0);
    assert_eq!((repro.lock_free)(4, 5), 0);
}

#[test]
fn workloads_run() {
    raceless_harness::workload::run_every_row(h::workloads(), 500);
}

// ---------------------------------------------------------------------------
// Lock-free extensions
// ---------------------------------------------------------------------------

fn with_cool_down(threshold: u32, secs: u64) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .failure_threshold(threshold)
        .cool_down(Duration::from_secs(secs))
        .clock(clock.clone())
        .build()
        .unwrap();
    (b, clock)
}

/// A recorded event, without the wall-clock `open_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Change(String, State, State),
    AllReset(u64),
}

fn recorded_events(b: &CircuitBreaker) -> Arc<Mutex<Vec<Ev>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    b.on_event(move |e| {
        let e = match e {
            BreakerEvent::StateChanged { name, from, to, .. } => {
                Ev::Change(name.to_string(), *from, *to)
            }
            BreakerEvent::AllReset { resets } => Ev::AllReset(*resets),
            _ => unreachable!(),
        };
        sink.lock().unwrap().push(e)
    });
    events
}

fn change(name: &str, from: State, to: State) -> Ev {
    Ev::Change(name.into(), from, to)
}

#[test]
fn builder_defaults_and_errors() {
    let b = CircuitBreaker::builder().build().unwrap();
    assert_eq!(b.failure_threshold(), 3);
    assert_eq!(
        b.cool_down(),
        Some(Duration::from_secs(60)),
        "a real breaker cools down"
    );
    let seed = CircuitBreaker::builder()
        .without_cool_down()
        .build()
        .unwrap();
    assert_eq!(seed.cool_down(), None);
    let bad = |b: raceless::breaker::BreakerBuilder| b.build().err();
    let builder = CircuitBreaker::builder;
    assert_eq!(
        bad(builder().sliding_window(0)),
        Some(BreakerError::InvalidWindow(0))
    );
    assert_eq!(
        bad(builder().sliding_window(10_001)),
        Some(BreakerError::InvalidWindow(10_001))
    );
    assert_eq!(
        bad(builder().sliding_window(10).failure_rate_threshold(0.0)),
        Some(BreakerError::InvalidRate)
    );
    assert_eq!(
        bad(builder()
            .sliding_window(10)
            .failure_rate_threshold(f32::NAN)),
        Some(BreakerError::InvalidRate)
    );
    assert_eq!(
        bad(builder().half_open_calls(0)),
        Some(BreakerError::InvalidHalfOpenCalls(0))
    );
    assert_eq!(
        bad(builder().half_open_calls(1_001)),
        Some(BreakerError::InvalidHalfOpenCalls(1_001))
    );
    assert_eq!(
        CircuitBreaker::builder().failure_threshold(0).build().err(),
        Some(BreakerError::ZeroThreshold)
    );
    assert_eq!(
        CircuitBreaker::builder()
            .cool_down(Duration::MAX)
            .build()
            .unwrap()
            .cool_down(),
        Some(Duration::from_micros(u64::MAX))
    );
    assert!(format!("{b:?}").contains("CircuitBreaker"));
}

#[test]
fn without_cool_down_an_open_name_stays_open() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .failure_threshold(1)
        .without_cool_down()
        .clock(clock.clone())
        .build()
        .unwrap();
    b.record_failure("x");
    clock.advance(Duration::from_secs(1_000_000));
    assert!(b.try_acquire("x").is_none());
    assert_eq!(b.acquire("x").unwrap_err().retry_after, None);
    assert_eq!(b.retry_after("x"), None);
    assert!(!Breaker::admit(&b, "x"));
    assert_eq!(b.state("x"), State::Open);
}

#[test]
fn half_open_trial_success_closes() {
    let (b, clock) = with_cool_down(2, 10);
    let events = recorded_events(&b);
    b.record_failure("x");
    let ordinary = b.try_acquire("x").expect("closed: admitted");
    assert!(!ordinary.is_trial());
    ordinary.failure(); // the second failure opens
    assert_eq!(b.state("x"), State::Open);
    clock.advance(Duration::from_secs(9));
    assert!(b.try_acquire("x").is_none(), "still cooling down");
    clock.advance(Duration::from_secs(1));
    let trial = b.try_acquire("x").expect("cool-down elapsed");
    assert!(trial.is_trial());
    assert_eq!(trial.name(), "x");
    assert_eq!(b.state("x"), State::HalfOpen);
    assert!(b.is_open("x"));
    assert!(b.try_acquire("x").is_none(), "one trial at a time");
    trial.success();
    assert_eq!(b.state("x"), State::Closed);
    assert_eq!(b.failures("x"), 0);
    assert_eq!(
        *events.lock().unwrap(),
        [
            change("x", State::Closed, State::Open),
            change("x", State::Open, State::HalfOpen),
            change("x", State::HalfOpen, State::Closed),
        ]
    );
}

#[test]
fn half_open_trial_failure_reopens_and_restarts_the_cool_down() {
    let (b, clock) = with_cool_down(1, 10);
    b.record_failure("x");
    clock.advance(Duration::from_secs(10));
    b.try_acquire("x").unwrap().failure();
    assert_eq!(b.state("x"), State::Open);
    assert_eq!(b.failures("x"), 1, "re-opened at the threshold");
    assert_eq!(b.times_opened("x"), 2);
    clock.advance(Duration::from_secs(5));
    assert!(b.try_acquire("x").is_none());
    clock.advance(Duration::from_secs(5));
    assert!(b.try_acquire("x").unwrap().is_trial());
}

#[test]
fn a_dropped_trial_permit_is_offered_again_at_once() {
    let (b, clock) = with_cool_down(1, 10);
    b.record_failure("x");
    clock.advance(Duration::from_secs(10));
    drop(b.try_acquire("x").unwrap());
    assert_eq!(b.state("x"), State::HalfOpen, "released, not failed");
    assert_eq!(b.times_opened("x"), 1);
    let trial = b
        .try_acquire("x")
        .expect("the trial is offered again at once");
    assert!(trial.is_trial());
    trial.success();
    assert_eq!(b.state("x"), State::Closed);
    // A trial abandoned by a panic is the same.
    b.record_failure("y");
    clock.advance(Duration::from_secs(10));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _trial = b.try_acquire("y").unwrap();
        panic!("probe crashed");
    }));
    assert!(r.is_err());
    assert!(b.try_acquire("y").unwrap().is_trial());
}

#[test]
fn a_forgotten_trial_round_is_presumed_lost_after_a_cool_down() {
    let (b, clock) = with_cool_down(1, 10);
    b.record_failure("x");
    clock.advance(Duration::from_secs(10));
    std::mem::forget(b.try_acquire("x").unwrap());
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        b.acquire("x").unwrap_err().retry_after,
        Some(Duration::from_secs(1))
    );
    clock.advance(Duration::from_secs(1));
    let trial = b.try_acquire("x").expect("a new round");
    trial.success();
    assert_eq!(b.state("x"), State::Closed);
}

#[test]
fn a_dropped_ordinary_permit_records_nothing() {
    let b = CircuitBreaker::new(1).unwrap();
    drop(b.try_acquire("x").unwrap());
    assert_eq!(b.failures("x"), 0);
    assert!(!b.is_open("x"));
}

#[test]
fn exactly_one_of_many_contenders_wins_the_trial() {
    for _ in 0..iterations(50) {
        let (b, clock) = with_cool_down(1, 1);
        b.record_failure("x");
        clock.advance(Duration::from_secs(1));
        let winners = run_concurrently(8, |_| b.try_acquire("x").map(std::mem::forget).is_some());
        assert_eq!(winners.iter().filter(|w| **w).count(), 1);
    }
}

#[test]
fn wall_clock_steps_do_not_move_the_cool_down() {
    let (b, clock) = with_cool_down(1, 10);
    clock.advance(Duration::from_secs(3600));
    b.record_failure("x");
    clock.set(ManualClock::start()); // the wall clock an hour back
    assert!(b.try_acquire("x").is_none());
    clock.set(ManualClock::start() + Duration::from_secs(86_400)); // a day ahead
    assert!(
        b.try_acquire("x").is_none(),
        "a wall-clock step is not time passing"
    );
    clock.advance(Duration::from_secs(10));
    assert!(b.try_acquire("x").is_some(), "monotonic time decides");
}

#[test]
fn a_success_during_a_trial_closes_and_the_late_trial_does_not_count() {
    let (b, clock) = with_cool_down(1, 10);
    b.record_failure("x");
    clock.advance(Duration::from_secs(10));
    let trial = b.try_acquire("x").unwrap();
    b.record_success("x"); // the seed's name-level success closes
    assert_eq!(b.state("x"), State::Closed);
    trial.failure(); // its round is over: ignored
    assert_eq!(b.state("x"), State::Closed);
    assert_eq!(b.failures("x"), 0);
}

#[test]
fn events_report_each_change_once_and_survive_a_panicking_listener() {
    let b = CircuitBreaker::new(2).unwrap();
    b.on_event(|_| panic!("listener bug"));
    let events = recorded_events(&b);
    b.record_failure("x");
    b.record_failure("x");
    b.record_failure("x");
    b.record_success("x");
    b.record_success("x");
    b.record_failure("y");
    b.record_failure("y");
    b.reset("y");
    b.reset_all();
    assert_eq!(
        *events.lock().unwrap(),
        [
            change("x", State::Closed, State::Open),
            change("x", State::Open, State::Closed),
            change("y", State::Closed, State::Open),
            change("y", State::Open, State::Closed),
            Ev::AllReset(1),
        ]
    );
}

#[test]
fn a_listener_may_call_back_into_the_breaker() {
    let b = Arc::new(CircuitBreaker::new(1).unwrap());
    let inner = Arc::downgrade(&b);
    b.on_event(move |e| {
        if let (
            Some(b),
            BreakerEvent::StateChanged {
                name,
                to: State::Open,
                ..
            },
        ) = (inner.upgrade(), e)
        {
            if &**name != "x" {
                return;
            }
            // Touches the same name and the map: no lock is held here.
            assert!(b.is_open(name));
            b.record_success(name);
            b.record_failure("other");
        }
    });
    b.record_failure("x");
    assert!(!b.is_open("x"));
    assert!(b.is_open("other"));
}

#[test]
fn open_is_reported_exactly_once_under_contention() {
    for _ in 0..iterations(50) {
        let b = CircuitBreaker::new(8).unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let n = opened.clone();
        b.on_event(move |e| {
            if matches!(
                e,
                BreakerEvent::StateChanged {
                    to: State::Open,
                    ..
                }
            ) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        let h = b.handle("hot");
        run_concurrently(8, |_| {
            for _ in 0..4 {
                h.record_failure();
            }
        });
        assert_eq!(opened.load(Ordering::Relaxed), 1);
        assert_eq!(b.failures("hot"), 32);
    }
}

#[test]
fn metrics_snapshot() {
    let b = CircuitBreaker::builder()
        .failure_threshold(2)
        .track_totals(true)
        .build()
        .unwrap();
    b.record_failure("b");
    b.record_failure("b");
    b.record_failure("b");
    b.record_success("a");
    b.record_failure("a");
    b.reset_all();
    b.record_failure("b");
    let m = b.metrics();
    assert_eq!(m.len(), 2);
    assert_eq!(&*m[0].name, "a");
    assert_eq!(
        (m[0].total_successes, m[0].total_failures),
        (Some(1), Some(1))
    );
    assert_eq!(m[0].consecutive_failures, 0, "reset_all zeroed it");
    assert_eq!(&*m[1].name, "b");
    assert_eq!(m[1].state, State::Closed);
    assert_eq!(m[1].consecutive_failures, 1);
    assert_eq!(m[1].times_opened, 1);
    assert_eq!(m[1].total_failures, Some(4), "totals survive reset_all");
    // Without track_totals the totals are absent.
    let b = CircuitBreaker::new(2).unwrap();
    b.record_failure("x");
    assert_eq!(b.metrics()[0].total_failures, None);
}

#[test]
fn handles_share_state_with_the_breaker() {
    let b = CircuitBreaker::new(2).unwrap();
    let h = b.handle("x");
    assert_eq!(h.name(), "x");
    h.record_failure();
    b.record_failure("x");
    assert!(h.is_open());
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.times_opened(), 1);
    b.reset_all();
    assert!(!h.is_open());
    assert_eq!(h.failures(), 0);
    h.record_failure();
    h.record_success();
    h.reset();
    assert_eq!(b.failures("x"), 0);
    assert!(format!("{h:?}").contains("\"x\""));
}

#[test]
fn reading_an_unknown_name_does_not_remember_it() {
    let b = CircuitBreaker::new(1).unwrap();
    assert!(!b.is_open("ghost"));
    assert_eq!(b.failures("ghost"), 0);
    assert_eq!(b.state("ghost"), State::Closed);
    b.reset("ghost");
    assert!(b.metrics().is_empty());
}

#[test]
fn an_open_name_keeps_counting() {
    // (Saturation at u32::MAX is a unit test beside the state word.)
    let b = CircuitBreaker::new(1).unwrap();
    let h = b.handle("x");
    for _ in 0..10_000 {
        h.record_failure();
    }
    assert_eq!(h.failures(), 10_000);
    assert!(h.is_open());
}

// ---------------------------------------------------------------------------
// Executor
// ---------------------------------------------------------------------------

type Job = Box<dyn FnOnce() -> Result<u32, String> + Send>;

#[test]
fn executor_runs_skips_and_records() {
    let b = Arc::new(CircuitBreaker::new(2).unwrap());
    let ex = ParallelStrategyExecutor::new(b.clone(), 4).unwrap();
    assert_eq!(ex.max_workers(), 4);
    let run = |ex: &ParallelStrategyExecutor| {
        ex.execute(vec![
            ("ok", Box::new(|| Ok(1u32)) as Job),
            ("err", Box::new(|| Err("bad".to_string()))),
            ("panics", Box::new(|| panic!("strategy bug"))),
        ])
    };
    let first = run(&ex);
    assert_eq!(first[0], ("ok", Outcome::Succeeded(1)));
    assert_eq!(first[1], ("err", Outcome::Failed("bad".into())));
    assert_eq!(first[2].1, Outcome::Panicked("strategy bug".into()));
    let second = run(&ex);
    assert!(second.iter().all(|(_, o)| !matches!(o, Outcome::Skipped)));
    // Both failing names reached the threshold of 2: skipped now.
    let third = run(&ex);
    assert_eq!(third[0].1, Outcome::Succeeded(1));
    assert_eq!(third[1].1, Outcome::Skipped);
    assert_eq!(third[2].1, Outcome::Skipped);
    assert_eq!(b.failures("err"), 2);
    assert!(ex.execute(Vec::<(&str, Job)>::new()).is_empty());
    assert_eq!(
        ParallelStrategyExecutor::new(b, 0)
            .err()
            .map(|e| e.to_string()),
        Some("max_workers must be at least 1".into())
    );
}

#[test]
fn executor_respects_max_workers() {
    let b = Arc::new(CircuitBreaker::new(1).unwrap());
    let ex = ParallelStrategyExecutor::new(b, 2).unwrap();
    let running = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let jobs: Vec<_> = (0..8)
        .map(|i| {
            let (running, peak) = (&running, &peak);
            (format!("s{i}"), move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::yield_now();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(i)
            })
        })
        .collect();
    let out = ex.execute(jobs);
    assert_eq!(out.len(), 8);
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, (_, o))| *o == Outcome::Succeeded(i)));
    assert!(peak.load(Ordering::SeqCst) <= 2);
}

#[test]
fn executor_runs_the_half_open_trial() {
    let (b, clock) = with_cool_down(1, 10);
    let b = Arc::new(b);
    let ex = ParallelStrategyExecutor::new(b.clone(), 2).unwrap();
    b.record_failure("x");
    assert_eq!(
        ex.execute(vec![("x", || Ok::<_, ()>(1))])[0].1,
        Outcome::Skipped
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        ex.execute(vec![("x", || Ok::<_, ()>(1))])[0].1,
        Outcome::Succeeded(1)
    );
    assert_eq!(b.state("x"), State::Closed);
}

/// Concurrent `execute` calls from many threads keep exact counts, on every
/// implementation.
fn executor_counts_exactly<B: Breaker + 'static>(b: B) {
    let b = Arc::new(b);
    let ex = ParallelStrategyExecutor::new(b.clone(), 4).unwrap();
    let rounds = iterations(50);
    run_concurrently(8, |_| {
        for _ in 0..rounds {
            let out = ex.execute(vec![
                ("flaky", Box::new(|| Err("x".to_string())) as Job),
                ("crashy", Box::new(|| panic!("x"))),
                ("fine", Box::new(|| Ok(0u32))),
            ]);
            assert!(out.iter().all(|(_, o)| !matches!(o, Outcome::Skipped)));
        }
    });
    let expected = (8 * rounds) as u32;
    assert_eq!(b.failures("flaky"), expected);
    assert_eq!(b.failures("crashy"), expected);
    assert_eq!(b.failures("fine"), 0);
}

#[test]
fn executor_counts_exactly_on_every_implementation() {
    executor_counts_exactly(CircuitBreaker::new(u32::MAX).unwrap());
    executor_counts_exactly(MutexBreaker::<StdMutex>::new(u32::MAX).unwrap());
    executor_counts_exactly(MutexBreaker::<ParkingLotMutex>::new(u32::MAX).unwrap());
    executor_counts_exactly(ShardedBreaker::new(u32::MAX).unwrap());
}

#[test]
fn all_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CircuitBreaker>();
    send_sync::<raceless::breaker::BreakerHandle>();
    send_sync::<raceless::breaker::Permit>();
    send_sync::<MutexBreaker<StdMutex>>();
    send_sync::<MutexBreaker<ParkingLotMutex>>();
    send_sync::<ShardedBreaker>();
    send_sync::<ParallelStrategyExecutor>();
    send_sync::<BreakerEvent>();
}

// ---------------------------------------------------------------------------
// The 0.2 rules (cool-down, trials, rate mode, epochs) against the mutex
// reference: random operations, permits held across them and ended late.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum RuleOp {
    Failure(usize),
    Success(usize),
    Reset(usize),
    ResetAll,
    Remove(usize),
    Admit(usize),
    /// End the held ticket at this index (modulo how many are held).
    End(usize, CallOutcome),
    Advance(u64),
}

fn rule_op() -> impl Strategy<Value = RuleOp> {
    let name = 0usize..2;
    let outcome = prop_oneof![
        Just(CallOutcome::Success),
        Just(CallOutcome::Failure),
        Just(CallOutcome::Released)
    ];
    prop_oneof![
        3 => name.clone().prop_map(RuleOp::Failure),
        1 => name.clone().prop_map(RuleOp::Success),
        1 => name.clone().prop_map(RuleOp::Reset),
        1 => Just(RuleOp::ResetAll),
        1 => name.clone().prop_map(RuleOp::Remove),
        5 => name.prop_map(RuleOp::Admit),
        5 => (0usize..8, outcome).prop_map(|(i, o)| RuleOp::End(i, o)),
        3 => (0u64..8).prop_map(RuleOp::Advance),
    ]
}

/// Drives the lock-free breaker and the mutex reference built from the
/// same builder with the same operations, comparing every answer.
fn matches_the_reference(
    builder: raceless::breaker::BreakerBuilder,
    ops: &[RuleOp],
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let builder = builder.clock(clock.clone());
    let lf = builder.clone().build().unwrap();
    let reference = MutexBreaker::<StdMutex>::from_builder(builder).unwrap();
    let names = ["x", "y"];
    let mut held = Vec::new();
    for op in ops {
        match *op {
            RuleOp::Failure(i) => {
                Breaker::record_failure(&lf, names[i]);
                reference.record_failure(names[i]);
            }
            RuleOp::Success(i) => {
                Breaker::record_success(&lf, names[i]);
                reference.record_success(names[i]);
            }
            RuleOp::Reset(i) => {
                Breaker::reset(&lf, names[i]);
                reference.reset(names[i]);
            }
            RuleOp::ResetAll => {
                Breaker::reset_all(&lf);
                reference.reset_all();
            }
            RuleOp::Remove(i) => {
                prop_assert_eq!(Breaker::remove(&lf, names[i]), reference.remove(names[i]));
            }
            RuleOp::Admit(i) => {
                let a = Breaker::admit_call(&lf, names[i]);
                let b = reference.admit_call(names[i]);
                prop_assert_eq!(a.is_ok(), b.is_ok(), "{:?}", op);
                match (a, b) {
                    (Ok(a), Ok(b)) => held.push((i, a, b)),
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    _ => unreachable!(),
                }
            }
            RuleOp::End(j, outcome) => {
                if !held.is_empty() {
                    let (i, a, b) = held.remove(j % held.len());
                    Breaker::end_call(&lf, names[i], a, outcome);
                    reference.end_call(names[i], b, outcome);
                }
            }
            RuleOp::Advance(s) => clock.advance(Duration::from_secs(s)),
        }
        for name in names {
            prop_assert_eq!(
                Breaker::state(&lf, name),
                reference.state(name),
                "{} after {:?}",
                name,
                op
            );
            prop_assert_eq!(
                Breaker::failures(&lf, name),
                reference.failures(name),
                "{} after {:?}",
                name,
                op
            );
            prop_assert_eq!(
                Breaker::times_opened(&lf, name),
                reference.times_opened(name)
            );
            prop_assert_eq!(Breaker::retry_after(&lf, name), reference.retry_after(name));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn consecutive_mode_matches_the_reference(
        threshold in 1u32..4,
        cool_down in 0u64..6,
        trials in 1u32..3,
        ops in proptest::collection::vec(rule_op(), 1..80),
    ) {
        let builder = CircuitBreaker::builder()
            .failure_threshold(threshold)
            .cool_down(Duration::from_secs(cool_down))
            .half_open_calls(trials);
        matches_the_reference(builder, &ops)?;
    }

    #[test]
    fn rate_mode_matches_the_reference(
        window in 1u32..6,
        minimum in 1u32..6,
        percent in prop_oneof![Just(25.0f32), Just(50.0), Just(66.0), Just(100.0)],
        cool_down in 0u64..6,
        trials in 1u32..4,
        ops in proptest::collection::vec(rule_op(), 1..80),
    ) {
        let builder = CircuitBreaker::builder()
            .sliding_window(window)
            .minimum_calls(minimum)
            .failure_rate_threshold(percent)
            .cool_down(Duration::from_secs(cool_down))
            .half_open_calls(trials);
        matches_the_reference(builder, &ops)?;
    }

    #[test]
    fn without_cool_down_matches_the_reference(
        threshold in 1u32..4,
        ops in proptest::collection::vec(rule_op(), 1..60),
    ) {
        let builder = CircuitBreaker::builder().failure_threshold(threshold).without_cool_down();
        matches_the_reference(builder, &ops)?;
    }
}

/// Rate mode: a window of 4 opening at 75 % records a failure, then 256
/// `reset_all`s bring the word's 8 generation bits back to the same value
/// with the same (fresh) epoch, so the failure left in ring cell 0 would
/// carry the tag of the new window's outcome 0 if the tag kept only those 8
/// bits. Outcomes 0–3 of the new window are S F F S and outcome 4 fails: 3
/// failures of the last 4 open the name (reading the stale failure as
/// outcome 0 evicts a failure and counts 2).
#[test]
fn a_window_does_not_read_an_older_windows_failures() {
    let b = CircuitBreaker::builder()
        .sliding_window(4)
        .minimum_calls(4)
        .failure_rate_threshold(75.0)
        .build()
        .unwrap();
    b.record_failure("x");
    for _ in 0..256 {
        b.reset_all();
    }
    assert_eq!(b.failures("x"), 0);
    for failed in [false, true, true, false] {
        if failed {
            b.record_failure("x");
        } else {
            b.record_success("x");
        }
    }
    assert_eq!(b.state("x"), State::Closed);
    b.record_failure("x");
    assert_eq!(b.state("x"), State::Open, "3 of the last 4 failed");
}
