//! loom models of the breaker's races, through the public API (the map and
//! the listener list are the `sync` shim's loom stand-ins).
//!
//! ```sh
//! RUSTFLAGS="--cfg raceless_loom" LOOM_MAX_PREEMPTIONS=2 \
//!   CARGO_TARGET_DIR=target/loom cargo test --release --test loom_breaker
//! ```
#![cfg(raceless_loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use raceless::breaker::{BreakerEvent, BreakerHandle, CircuitBreaker, State};
use raceless::clock::ManualClock;

/// Counts the `to: Open` events a breaker reports (a `std` atomic: read
/// after the threads are joined, not part of the model).
fn count_openings(b: &CircuitBreaker) -> std::sync::Arc<AtomicUsize> {
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    b.on_event(move |e| {
        if matches!(
            e,
            BreakerEvent::StateChanged {
                to: State::Open,
                ..
            }
        ) {
            m.fetch_add(1, Ordering::Relaxed);
        }
    });
    n
}

/// Two failures race to the threshold of 2: both are counted, the name
/// opens, the opening is reported exactly once, and an observer never sees
/// the count at the threshold on a closed name. Both failures take the
/// `fetch_add` fast path; without a cool-down nothing else is written.
#[test]
fn failures_reaching_the_threshold_open_once() {
    loom::model(|| {
        threshold_race(
            CircuitBreaker::builder()
                .failure_threshold(2)
                .without_cool_down()
                .build()
                .unwrap(),
        )
    });
}

/// The same race with a cool-down: the opening thread also stamps it.
#[test]
fn failures_reaching_the_threshold_open_once_cas_path() {
    loom::model(|| {
        threshold_race(
            CircuitBreaker::builder()
                .failure_threshold(2)
                .cool_down(Duration::from_secs(1))
                .clock(ManualClock::new())
                .build()
                .unwrap(),
        )
    });
}

fn threshold_race(b: CircuitBreaker) {
    {
        let openings = count_openings(&b);
        let h = b.handle("x");
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                thread::spawn(move || h.record_failure())
            })
            .collect();
        let f = h.failures();
        assert!(
            f < 2 || h.is_open(),
            "count {f} at the threshold while closed"
        );
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(h.failures(), 2);
        assert!(h.is_open());
        assert_eq!(h.times_opened(), 1);
        assert_eq!(openings.load(Ordering::Relaxed), 1);
    }
}

/// Two first writers of an unknown name race on the map's entry API: one
/// slot, both failures counted.
#[test]
fn first_writers_share_one_slot() {
    loom::model(|| {
        let b = Arc::new(CircuitBreaker::new(5).unwrap());
        let other = {
            let b = b.clone();
            thread::spawn(move || b.record_failure("new"))
        };
        b.record_failure("new");
        other.join().unwrap();
        assert_eq!(b.failures("new"), 2);
    });
}

/// A success and a failure race on a name one failure short of the
/// threshold: either order is a valid outcome, and the name is always
/// consistent (open exactly when its count reached the threshold).
#[test]
fn success_vs_failure() {
    loom::model(|| {
        let b = CircuitBreaker::new(2).unwrap();
        let h = b.handle("x");
        h.record_failure();
        let s = {
            let h = h.clone();
            thread::spawn(move || h.record_success())
        };
        h.record_failure();
        s.join().unwrap();
        let outcome = (h.failures(), h.is_open(), h.times_opened());
        // success then failure: (1, closed, never opened);
        // failure then success: opened once, then closed with 0.
        assert!(
            outcome == (1, false, 0) || outcome == (0, false, 1),
            "{outcome:?}"
        );
    });
}

/// `reset_all` races with a failure on one of the names it resets, while an
/// observer reads two names: it never sees the later-read name still open
/// after seeing the earlier-read one reset, and the racing failure lands
/// either before the reset (wiped) or after it (counted from zero).
#[test]
fn reset_all_vs_failure() {
    loom::model(|| {
        let b = Arc::new(CircuitBreaker::new(2).unwrap());
        let (a, c) = (b.handle("a"), b.handle("c"));
        for _ in 0..2 {
            a.record_failure();
            c.record_failure();
        }
        let resetter = {
            let b = b.clone();
            thread::spawn(move || b.reset_all())
        };
        let failer = {
            let a = a.clone();
            thread::spawn(move || a.record_failure())
        };
        let c_open = c.is_open();
        let a_open = a.is_open();
        // a can only be open before the reset (nothing re-opens it: one
        // failure after the reset is below the threshold).
        assert!(c_open || !a_open, "saw c reset but a not yet");
        resetter.join().unwrap();
        failer.join().unwrap();
        assert!(!a.is_open() && !c.is_open());
        assert!(a.failures() <= 1, "{}", a.failures());
        assert_eq!(c.failures(), 0);
    });
}

/// A breaker whose name "x" has opened and cooled down: the next permit
/// is the half-open trial. (The breaker is returned to keep it alive.)
fn half_open() -> (CircuitBreaker, BreakerHandle) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .failure_threshold(1)
        .cool_down(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    let h = b.handle("x");
    h.record_failure();
    clock.advance(Duration::from_secs(10));
    (b, h)
}

/// Runs `contend` (true if it won the trial) on this thread and another:
/// exactly one of them wins.
fn exactly_one_wins_the_trial(h: &BreakerHandle, contend: fn(BreakerHandle) -> bool) {
    let other = {
        let h = h.clone();
        thread::spawn(move || contend(h))
    };
    let mine = contend(h.clone());
    let theirs = other.join().unwrap();
    assert!(mine ^ theirs, "trials won: {mine} {theirs}");
}

/// Two contenders for the half-open trial: exactly one wins it.
#[test]
fn one_trial_for_two_contenders() {
    loom::model(|| {
        let (_b, h) = half_open();
        // Each contender reports whether it won the trial, then resolves its
        // permit as a success (an ordinary permit if it came after the
        // winner closed the name).
        let contend = |h: BreakerHandle| {
            h.try_acquire().is_some_and(|p| {
                let trial = p.is_trial();
                p.success();
                trial
            })
        };
        exactly_one_wins_the_trial(&h, contend);
        assert_eq!(h.state(), State::Closed);
    });
}

/// A trial permit dropped unresolved (a cancelled call) races with a new
/// caller: at most one trial is out at a time, the drop records nothing
/// (no re-opening), and the place it frees is offered again at once.
#[test]
fn cancelled_trial_vs_new_caller() {
    loom::model(|| {
        let (_b, h) = half_open();
        let other = {
            let h = h.clone();
            thread::spawn(move || {
                // Dropped at the end of the statement: released.
                h.try_acquire().is_some_and(|p| p.is_trial())
            })
        };
        let mine = h.try_acquire();
        let theirs = other.join().unwrap();
        match mine {
            Some(p) => {
                assert!(p.is_trial());
                p.success();
                assert_eq!(h.state(), State::Closed);
            }
            None => {
                assert!(theirs, "the only way to be refused is a trial out");
                // The other's trial was released: offered again at once.
                assert_eq!(h.state(), State::HalfOpen);
                assert!(h.try_acquire().is_some_and(|p| p.is_trial()));
            }
        }
        assert_eq!(h.times_opened(), 1, "a released trial is no failure");
    });
}

/// A call admitted while the name was closed finishes with a success while
/// another thread's failure opens the name: the late success must not close
/// it (it was admitted in a state that is gone).
#[test]
fn late_success_vs_opening() {
    loom::model(|| {
        let clock = ManualClock::new();
        let b = CircuitBreaker::builder()
            .failure_threshold(1)
            .clock(clock)
            .build()
            .unwrap();
        let h = b.handle("x");
        let permit = h.try_acquire().unwrap();
        let reporter = thread::spawn(move || permit.success());
        h.record_failure();
        reporter.join().unwrap();
        assert_eq!(h.state(), State::Open, "a stale success closed the name");
        assert_eq!(h.times_opened(), 1);
    });
}

/// A call admitted while closed fails late, racing a half-open trial that
/// closes the name again: the late failure belongs to the closed phase
/// before the opening and must not re-open the name.
#[test]
fn late_failure_vs_running_trial() {
    loom::model(|| {
        let clock = ManualClock::new();
        let b = CircuitBreaker::builder()
            .failure_threshold(1)
            .cool_down(Duration::from_secs(10))
            .clock(clock.clone())
            .build()
            .unwrap();
        let h = b.handle("x");
        let late = h.try_acquire().unwrap();
        h.record_failure(); // opens
        clock.advance(Duration::from_secs(10));
        let reporter = thread::spawn(move || late.failure());
        let trial = h.try_acquire().unwrap();
        assert!(trial.is_trial());
        trial.success();
        reporter.join().unwrap();
        assert_eq!(
            h.state(),
            State::Closed,
            "a stale failure re-opened the name"
        );
        assert_eq!(h.times_opened(), 1);
    });
}

/// Rate mode, a window of 2 that opens at 100 % failures; name "x" holds
/// two successes.
fn window_of_two_successes() -> CircuitBreaker {
    let b = CircuitBreaker::builder()
        .sliding_window(2)
        .failure_rate_threshold(100.0)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    b.record_success("x");
    b.record_success("x");
    b
}

/// Rate mode, window of 2 full of successes, 100 %: two failures recorded at
/// once each evict one success. Both are counted and both successes leave,
/// whatever the interleaving: the name opens, exactly once.
#[test]
fn two_recorders_at_the_windows_edge() {
    loom::model(|| {
        let b = window_of_two_successes();
        let openings = count_openings(&b);
        let h = b.handle("x");
        let permits = [h.try_acquire().unwrap(), h.try_acquire().unwrap()];
        let [a, c] = permits;
        let other = thread::spawn(move || a.failure());
        c.failure();
        other.join().unwrap();
        assert_eq!(h.state(), State::Open, "an outcome was lost");
        assert_eq!(openings.load(Ordering::Relaxed), 1);
        assert_eq!(h.times_opened(), 1);
    });
}

/// Rate mode, window of 2 holding two successes, 100 %: a failure ends on
/// the main thread while another thread reads the failure count and then
/// ends two successes. If the read saw the failure, it was recorded first, so
/// the second success evicts it — an outcome another thread recorded and
/// may not have put in its ring cell yet (the evictor helps it there
/// first): the window ends empty of failures. Fails (reads 1) when the
/// help step is left out.
#[test]
fn evicting_an_outcome_still_on_its_way_to_the_ring() {
    loom::model(|| {
        let b = window_of_two_successes();
        let h = b.handle("x");
        let [a, s1, s2] = [(); 3].map(|()| h.try_acquire().unwrap());
        let h2 = h.clone();
        let reader = thread::spawn(move || {
            let seen_first = h2.failures();
            s1.success();
            s2.success();
            seen_first
        });
        a.failure();
        let seen_first = reader.join().unwrap();
        assert_eq!(h.state(), State::Closed, "never two failures in a row");
        if seen_first == 1 {
            assert_eq!(h.failures(), 0, "the failure left the window");
        }
    });
}

/// Rate mode, window of 2 holding two successes, 100 %: a success ends on
/// another thread that read the word while a failure was the latest outcome
/// and may reach that failure's cell only after the window recorded past
/// it and put a later failure in the same cell (a window of 2: every other
/// outcome shares it). The late helper must not put the earlier failure
/// over the later one, or that failure would leave the window counted as a
/// success: the last two outcomes are successes, so the window ends empty
/// of failures. Fails (reads 1) when the help step replaces any other tag.
#[test]
fn a_late_helper_vs_a_later_failure_in_its_cell() {
    loom::model(|| {
        let b = window_of_two_successes();
        let h = b.handle("x");
        let end = |failed: bool| {
            let p = h.try_acquire().unwrap();
            if failed {
                p.failure();
            } else {
                p.success();
            }
        };
        end(true);
        let late = h.try_acquire().unwrap();
        let helper = thread::spawn(move || late.success());
        end(false);
        end(true);
        end(false);
        helper.join().unwrap();
        end(false);
        end(false);
        assert_eq!(h.state(), State::Closed, "never two failures in a row");
        assert_eq!(h.failures(), 0, "the failures left the window");
    });
}
