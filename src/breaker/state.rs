//! The per-name state word and the lock-free protocol on it.
//!
//! # Layout
//!
//! Each name owns one [`AtomicU64`] (in a [`CachePadded`] [`Slot`], so two
//! hot names never share a cache line):
//!
//! ```text
//!  63                          34   33    32                                 0
//! +------------------------------+-------+-----------------------------------+
//! |  generation (low 30 bits)    | trial |  consecutive failures (33 bits)   |
//! +------------------------------+-------+-----------------------------------+
//! ```
//!
//! The failure field is one bit wider than the `u32` count it reports: a
//! value at or above `u32::MAX` reads as `u32::MAX` (saturated). The extra
//! bit is headroom for the `fetch_add` fast path (below): a CAS never raises
//! the field past `u32::MAX`, and each thread has at most one `fetch_add` in
//! flight that was admitted while the field was below `u32::MAX`, so the
//! field stays below `u32::MAX + threads < 2³³` and never carries into the
//! trial bit.
//!
//! The state is a pure function of the word and the threshold:
//!
//! | trial | count            | state                                          |
//! |-------|------------------|------------------------------------------------|
//! | 1     | (≥ threshold)    | [`State::HalfOpen`]: one trial permit is out   |
//! | 0     | ≥ threshold      | [`State::Open`]                                |
//! | 0     | < threshold      | [`State::Closed`]                              |
//!
//! "Open" is *defined* as "the count reached the threshold", so the failure
//! that brings the count to the threshold and the name opening are the same
//! compare-and-swap: no observer can see the count at or past the threshold
//! on a closed name, and exactly one successful CAS moves the count from
//! `threshold - 1` to `threshold` — that CAS's thread reports the opening.
//!
//! # Generations: `reset_all` in O(1)
//!
//! The breaker holds one global generation counter (a `u64`). `reset_all` is
//! a single `fetch_add` on it. A word whose generation bits differ from the
//! low 30 bits of the current global generation is **stale**: it was written
//! before the latest `reset_all` and reads as the fresh state (closed, zero
//! failures). Writers rebase lazily: a CAS loop loads the word, then the
//! global generation `g`; it interprets the word as live if its generation
//! equals `g`, as fresh otherwise, and installs its result tagged with `g`.
//!
//! The global generation is always loaded *after* the word. The word was
//! written by a thread that had read its generation from the global counter
//! before its (Release) CAS; our Acquire load of the word makes that read
//! happen-before our load of the global counter, so by read-read coherence we
//! read that generation or a later one. Hence a word's generation is never
//! ahead of the `g` we load, and a simple inequality means "stale". For the
//! same reason the generations stored in a word only grow (in its
//! modification order).
//!
//! Generation bits wrap after 2³⁰ `reset_all` calls. So that a word
//! untouched for that long cannot come back to life, every 2²⁹-th
//! `reset_all` sweeps the names and rebases stale words to the current
//! generation (a CAS per word that does not change the abstract state, since
//! a stale word already reads as fresh). Between two sweeps no word falls
//! more than 2²⁹ + (resets during one sweep) generations behind.
//!
//! # The `fetch_add` fast path
//!
//! Without a cool-down there are no trials and no opening stamps, so a
//! failure is just "count + 1" — and since *open* is defined by the count,
//! `fetch_add(1)` on the word is the whole operation, opening included: the
//! one `fetch_add` that returns a count of `threshold - 1` opened the name.
//! It is taken when the word, loaded first, is live (generation check as
//! usual) and its field is below `u32::MAX`; otherwise the CAS loop runs
//! (stale words are rebased by CAS, saturation is a CAS that writes nothing).
//! The value `fetch_add` returns is interpreted at its *own* generation: it
//! is at least that of the word we checked (generations only grow in a
//! word), which was current after our operation began, so the reset that
//! would make it stale, if any, happened inside our interval — we linearize
//! just before it, exactly like a late CAS below.
//!
//! # Linearization points
//!
//! - Reads (`is_open`, `failures`, `state`) linearize at their load of the
//!   word: a closed or zero word answers without looking at the generation
//!   (stale or live, it reads closed/zero); otherwise the generation load
//!   that follows decides. If the word was live at the load and a
//!   `reset_all` came before the generation load, the read linearizes just
//!   after that `reset_all` (inside the read's interval), where the fresh
//!   state it reports is the true one.
//! - Writes (CAS loops) linearize at their successful CAS if the global
//!   generation still equals the `g` they tagged the word with. If a
//!   `reset_all` moved the generation past `g` between their load of `g` and
//!   their CAS, they linearize immediately before that `reset_all` (which lies
//!   inside their interval): their effect is on the pre-reset state and is
//!   wiped by the reset, exactly what readers see, since the word they wrote
//!   is stale. All such late writes of generation `g` form one chain of CASes
//!   in the word's modification order, so they are ordered among themselves.
//! - A write whose function decides "no change" (e.g. a success on a name
//!   that is already closed with no failures) writes nothing and linearizes
//!   like a read.
//! - `reset_all` linearizes at its `fetch_add` on the global generation.
//!
//! # Orderings
//!
//! - Word: loads `Acquire`, successful CAS `AcqRel`, failed CAS `Acquire`.
//!   Release/Acquire carries (a) the cool-down stamp written before an
//!   opening CAS and (b) the generation the writer read, which the coherence
//!   argument above needs.
//! - Global generation: `fetch_add` `AcqRel`, loads `Acquire`. The counter
//!   publishes no data; the argument above only needs coherence plus the
//!   word's Release/Acquire, and `Acquire` keeps every "saw generation `G`"
//!   event ordered after the `reset_all` that wrote `G`.
//! - Cool-down stamp (`opened_at`): `fetch_max` `Relaxed` *before* the CAS
//!   that opens (published by that CAS's Release), loaded `Relaxed` after an
//!   `Acquire` load of the word that showed the opening.
//! - Statistics (`times_opened`, totals): `Relaxed` read-modify-writes. Each
//!   one is exact (an RMW never loses an update); they publish nothing and
//!   are read as statistics, so no ordering with the word is promised.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::SharedClock;
use crate::listener::Listeners;
use crate::sync::{AtomicU64, CachePadded, Ordering};

use super::BreakerEvent;

/// The state of one name.
///
/// ```
/// use raceless::breaker::{CircuitBreaker, State};
///
/// let breaker = CircuitBreaker::new(1)?;
/// assert_eq!(breaker.state("db"), State::Closed);
/// breaker.record_failure("db");
/// assert_eq!(breaker.state("db"), State::Open);
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum State {
    /// Calls run; failures are counted.
    Closed,
    /// The name reached its failure threshold: calls are rejected. With a
    /// cool-down configured, [`try_acquire`](super::CircuitBreaker::try_acquire)
    /// hands out one trial permit once it has elapsed.
    Open,
    /// A trial permit is out; its outcome closes or re-opens the name.
    HalfOpen,
}

const COUNT_MASK: u64 = (1 << 33) - 1;
const TRIAL: u64 = 1 << 33;
const GEN_SHIFT: u32 = 34;
/// The generation bits a word keeps (30).
pub(crate) const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;
/// Every `SWEEP_EVERY`-th `reset_all` rebases stale words (half the wrap).
pub(crate) const SWEEP_EVERY: u64 = 1 << 29;
/// The saturated count.
const SATURATED: u64 = u32::MAX as u64;

/// One decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl Word {
    /// Closed, zero failures, tagged with generation `g`.
    #[inline]
    pub(crate) fn fresh(g: u64) -> Self {
        Word((g & GEN_MASK) << GEN_SHIFT)
    }
    #[inline]
    fn with(self, count: u32, trial: bool) -> Self {
        Word((self.0 & !(COUNT_MASK | TRIAL)) | u64::from(count) | if trial { TRIAL } else { 0 })
    }
    /// The consecutive failures (the field, saturated at `u32::MAX`).
    #[inline]
    pub(crate) fn count(self) -> u32 {
        (self.0 & COUNT_MASK).min(SATURATED) as u32
    }
    #[inline]
    pub(crate) fn trial(self) -> bool {
        self.0 & TRIAL != 0
    }
    #[inline]
    pub(crate) fn generation(self) -> u64 {
        self.0 >> GEN_SHIFT
    }
    /// Whether the word belongs to global generation `g`.
    #[inline]
    fn is_live(self, g: u64) -> bool {
        self.generation() == g & GEN_MASK
    }
    /// The word as it reads under global generation `g`: itself if live,
    /// the fresh state otherwise.
    #[inline]
    fn under(self, g: u64) -> Self {
        if self.is_live(g) {
            self
        } else {
            Self::fresh(g)
        }
    }
    /// The state this word encodes (a live word).
    #[inline]
    pub(crate) fn state(self, threshold: u32) -> State {
        if self.trial() {
            State::HalfOpen
        } else if self.count() >= threshold {
            State::Open
        } else {
            State::Closed
        }
    }
    /// Whether this word reads as closed with zero failures whatever its
    /// generation (live or stale), so a reader needs no generation check.
    #[inline]
    fn is_pristine(self) -> bool {
        self.0 & (COUNT_MASK | TRIAL) == 0
    }
}

/// What the breaker shares with its handles and permits.
pub(crate) struct Shared {
    pub(crate) threshold: u32,
    /// Nanoseconds; `None`: no half-open (the seed's behaviour).
    pub(crate) cool_down: Option<u64>,
    pub(crate) clock: SharedClock,
    pub(crate) track_totals: bool,
    /// The global generation; `reset_all` bumps it. Its own cache line: it
    /// is read by every non-trivial operation and written only by
    /// `reset_all`.
    pub(crate) generation: CachePadded<AtomicU64>,
    pub(crate) listeners: Listeners<BreakerEvent>,
}

impl Shared {
    pub(crate) fn now_nanos(&self) -> u64 {
        to_nanos(self.clock.now())
    }

    /// Calls the listeners with `event` (nothing is held here).
    #[inline]
    pub(crate) fn emit(&self, event: impl FnOnce() -> BreakerEvent) {
        if !self.listeners.is_empty() {
            self.listeners.notify(&event());
        }
    }
}

pub(crate) fn to_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A state change made by one operation, reported by its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
}

/// The operation needs the time and was given none: the caller reads the
/// clock with nothing held and calls again. Nothing was written.
#[derive(Debug)]
pub(crate) struct NeedsClock;

/// What a successful `acquire` handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The name is closed: an ordinary call.
    Closed,
    /// This caller won the half-open trial.
    Trial,
}

/// The state of one name: the state word plus its cool-down stamp and
/// statistics, on their own cache line(s).
pub(crate) struct Slot {
    word: AtomicU64,
    /// Clock time (ns since the Unix epoch) of the latest opening; only
    /// grows (`fetch_max`) except when the clock is seen to step backwards.
    opened_at: AtomicU64,
    times_opened: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    /// The name, for events and metrics (a `std` `Arc`: `str` is unsized).
    pub(crate) name: std::sync::Arc<str>,
}

impl Slot {
    pub(crate) fn new(name: std::sync::Arc<str>, generation: u64) -> CachePadded<Self> {
        CachePadded::new(Slot {
            word: AtomicU64::new(Word::fresh(generation).0),
            opened_at: AtomicU64::new(0),
            times_opened: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            name,
        })
    }

    /// The word as it reads now. Linearizes at the word load (see the module
    /// docs).
    #[inline]
    pub(crate) fn load(&self, shared: &Shared) -> Word {
        let raw = Word(self.word.load(Ordering::Acquire));
        if raw.is_pristine() {
            return raw;
        }
        raw.under(shared.generation.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn is_open(&self, shared: &Shared) -> bool {
        // The common case on a healthy name: one Acquire load, no write.
        let raw = Word(self.word.load(Ordering::Acquire));
        if !raw.trial() && raw.count() < shared.threshold {
            return false; // closed whether live or stale
        }
        raw.is_live(shared.generation.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn failures(&self, shared: &Shared) -> u32 {
        self.load(shared).count()
    }

    #[inline]
    pub(crate) fn state(&self, shared: &Shared) -> State {
        self.load(shared).state(shared.threshold)
    }

    pub(crate) fn times_opened(&self) -> u64 {
        self.times_opened.load(Ordering::Relaxed)
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.successes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// The CAS loop every write uses: `f` maps the live word (tagged with the
    /// current generation) to the new word, or `None` for "no change"
    /// (nothing is written). Returns `(before, after)` as installed.
    #[inline]
    fn update<E>(
        &self,
        shared: &Shared,
        mut f: impl FnMut(Word) -> Result<Option<Word>, E>,
    ) -> Result<(Word, Word), E> {
        let mut raw = self.word.load(Ordering::Acquire);
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            let current = Word(raw).under(g);
            let Some(new) = f(current)? else {
                return Ok((current, current));
            };
            match self
                .word
                .compare_exchange_weak(raw, new.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok((current, new)),
                Err(actual) => raw = actual,
            }
        }
    }

    /// Counts one failure. Opens the name when the count reaches the
    /// threshold (in the same CAS), re-opens a half-open one. With a
    /// cool-down, an opening needs the time: `now` (ns) or `Err(NeedsClock)`.
    #[inline]
    pub(crate) fn record_failure(
        &self,
        shared: &Shared,
        now: Option<u64>,
    ) -> Result<Option<Transition>, NeedsClock> {
        let threshold = shared.threshold;
        if let Some(t) = self.record_failure_fast(shared) {
            return Ok(t);
        }
        let (before, after) = self.update(shared, |w| {
            if w.count() == u32::MAX && !w.trial() {
                return Ok(None); // saturated and open: nothing changes
            }
            let count = w.count().saturating_add(1);
            let opens = w.trial() || (w.count() < threshold && count >= threshold);
            if opens && shared.cool_down.is_some() {
                // The stamp goes in before the CAS that opens, so whoever
                // sees the name open (Acquire) sees a stamp at least this
                // recent. fetch_max: a slow racer cannot move it back.
                let now = now.ok_or(NeedsClock)?;
                self.opened_at.fetch_max(now, Ordering::Relaxed);
            }
            Ok(Some(w.with(count, false)))
        })?;
        if shared.track_totals {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(self.transition(before, after, threshold))
    }

    /// The `fetch_add` fast path (see the module docs): `None` when it does
    /// not apply (cool-down configured, trial out, stale word, saturated
    /// field), and then nothing was written.
    #[inline]
    fn record_failure_fast(&self, shared: &Shared) -> Option<Option<Transition>> {
        if shared.cool_down.is_some() {
            return None;
        }
        let w = Word(self.word.load(Ordering::Acquire));
        if w.trial()
            || w.0 & COUNT_MASK >= SATURATED
            || !w.is_live(shared.generation.load(Ordering::Acquire))
        {
            return None;
        }
        // AcqRel: Acquire for the same reasons as a CAS reading the word;
        // Release so later readers of the word inherit our generation read.
        let before = Word(self.word.fetch_add(1, Ordering::AcqRel));
        let after = Word(before.0 + 1);
        if shared.track_totals {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        Some(self.transition(before, after, shared.threshold))
    }

    /// A success: zero failures, closed.
    #[inline]
    pub(crate) fn record_success(&self, shared: &Shared) -> Option<Transition> {
        if shared.track_totals {
            self.successes.fetch_add(1, Ordering::Relaxed);
        }
        self.close(shared)
    }

    /// Closes the name and zeroes its count (success and `reset`).
    #[inline]
    pub(crate) fn close(&self, shared: &Shared) -> Option<Transition> {
        let result = self.update(shared, |w| {
            Ok::<_, Infallible>(if w.count() == 0 && !w.trial() {
                None // already closed with no failures: no write
            } else {
                Some(w.with(0, false))
            })
        });
        let (before, after) = match result {
            Ok(words) => words,
            Err(never) => match never {},
        };
        self.transition(before, after, shared.threshold)
    }

    /// Asks to run a call: `Closed` on a closed name; on an open one whose
    /// cool-down has elapsed, `Trial` for exactly one caller (the CAS from
    /// open to half-open); otherwise `None`. Needs the time only for an open
    /// name with a cool-down.
    pub(crate) fn acquire(
        &self,
        shared: &Shared,
        now: Option<u64>,
    ) -> Result<Option<(Admission, Option<Transition>)>, NeedsClock> {
        let threshold = shared.threshold;
        let mut admission = None;
        let (before, after) = self.update(shared, |w| {
            admission = None;
            match w.state(threshold) {
                State::Closed => {
                    admission = Some(Admission::Closed);
                    Ok(None)
                }
                State::HalfOpen => Ok(None),
                State::Open => {
                    let Some(cool_down) = shared.cool_down else {
                        return Ok(None);
                    };
                    let now = now.ok_or(NeedsClock)?;
                    // Acquire on the word (in `update`) ordered this load
                    // after the stamp written before the opening CAS.
                    let opened = self.opened_at.load(Ordering::Relaxed);
                    if now < opened {
                        // The clock stepped backwards past the opening:
                        // restart the cool-down from now rather than wait
                        // for the clock to catch up.
                        self.opened_at.fetch_min(now, Ordering::Relaxed);
                        return Ok(None);
                    }
                    if now - opened < cool_down {
                        return Ok(None);
                    }
                    admission = Some(Admission::Trial);
                    Ok(Some(w.with(w.count(), true)))
                }
            }
        })?;
        Ok(admission.map(|a| (a, self.transition(before, after, threshold))))
    }

    /// Resolves a state change into a report (and counts openings).
    #[inline]
    fn transition(&self, before: Word, after: Word, threshold: u32) -> Option<Transition> {
        let (from, to) = (before.state(threshold), after.state(threshold));
        if from == to {
            return None;
        }
        if to == State::Open {
            self.times_opened.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(name = %self.name, ?from, ?to, "breaker state change");
        Some(Transition { from, to })
    }

    /// Rebases a stale word to generation `g` (the periodic sweep). Does not
    /// change the abstract state: a stale word reads as fresh.
    pub(crate) fn rebase(&self, shared: &Shared) {
        let raw = self.word.load(Ordering::Acquire);
        let g = shared.generation.load(Ordering::Acquire);
        if !Word(raw).is_live(g) {
            // A failed CAS means another thread wrote the word, rebasing it.
            let _ = self.word.compare_exchange(
                raw,
                Word::fresh(g).0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::*;

    #[test]
    fn word_fields_round_trip() {
        let w = Word::fresh(5).with(u32::MAX, true);
        assert_eq!(w.count(), u32::MAX);
        // Fast-path headroom above u32::MAX reads saturated, no carry.
        let over = Word(Word::fresh(5).with(u32::MAX, false).0 + 7);
        assert_eq!(
            (over.count(), over.trial(), over.generation()),
            (u32::MAX, false, 5)
        );
        assert!(w.trial());
        assert_eq!(w.generation(), 5);
        assert_eq!(w.state(3), State::HalfOpen);
        let w = w.with(2, false);
        assert_eq!((w.count(), w.trial(), w.generation()), (2, false, 5));
        assert_eq!(w.state(3), State::Closed);
        assert_eq!(w.with(3, false).state(3), State::Open);
        assert_eq!(Word::fresh(GEN_MASK + 1).generation(), 0);
    }

    fn shared(threshold: u32) -> Shared {
        Shared {
            threshold,
            cool_down: None,
            clock: crate::clock::system_clock(),
            track_totals: false,
            generation: CachePadded::new(AtomicU64::new(0)),
            listeners: Listeners::new(),
        }
    }

    #[test]
    fn failures_saturate_at_u32_max() {
        let shared = shared(3);
        let slot = Slot::new("x".into(), 0);
        slot.word.store(
            Word::fresh(0).with(u32::MAX - 1, false).0,
            Ordering::Relaxed,
        );
        slot.record_failure(&shared, None).unwrap();
        slot.record_failure(&shared, None).unwrap();
        assert_eq!(slot.failures(&shared), u32::MAX);
        assert_eq!(slot.state(&shared), State::Open);
        assert_eq!(
            slot.load(&shared).generation(),
            0,
            "no carry into the generation"
        );
    }

    #[test]
    fn the_sweep_rebases_stale_words_only() {
        let shared = shared(1);
        let stale = Slot::new("stale".into(), 0);
        stale.record_failure(&shared, None).unwrap();
        let live = Slot::new("live".into(), 0);
        shared.generation.store(SWEEP_EVERY, Ordering::Relaxed);
        live.record_failure(&shared, None).unwrap();
        stale.rebase(&shared);
        live.rebase(&shared);
        let g = SWEEP_EVERY & GEN_MASK;
        assert_eq!(Word(stale.word.load(Ordering::Relaxed)), Word::fresh(g));
        assert_eq!(live.load(&shared).count(), 1);
        // Without the sweep, 2^30 resets later the stale word would be back.
        shared.generation.store(GEN_MASK + 1, Ordering::Relaxed);
        assert!(!stale.is_open(&shared));
    }

    #[test]
    fn stale_words_read_fresh() {
        let w = Word::fresh(1).with(9, false);
        assert_eq!(w.under(1), w);
        assert_eq!(w.under(2), Word::fresh(2));
        // Equality is on the low 30 bits.
        assert_eq!(w.under(1 + GEN_MASK + 1), w);
    }
}
