//! The per-name state word and the lock-free protocol on it.
//!
//! # Layout
//!
//! Each name owns one [`AtomicU64`] (in a [`CachePadded`] [`Slot`], so two
//! hot names never share a cache line):
//!
//! ```text
//!  63      56 55   54 53          40 39                                      0
//! +----------+-------+-------------+-----------------------------------------+
//! | gen (8)  | phase |  epoch (14) |                 data (40)               |
//! +----------+-------+-------------+-----------------------------------------+
//! ```
//!
//! - **phase**: `COUNTING` (0), `OPEN` (1, rate mode only) or `HALF_OPEN` (2).
//! - **data** depends on the phase and the mode:
//!
//! | phase       | consecutive mode (default)               | rate mode (`sliding_window(n)`)        |
//! |-------------|------------------------------------------|----------------------------------------|
//! | `COUNTING`  | consecutive failures; **open** once ≥ threshold | window: seq (24) · full · last · failures (14) |
//! | `OPEN`      | —                                        | 0 (the window is discarded)            |
//! | `HALF_OPEN` | trials: admitted (10) · succeeded (10) · failed (10) | same                       |
//!
//! In consecutive mode "open" is *defined* as "the count reached the
//! threshold", so the failure that brings the count to the threshold and the
//! name opening are the same atomic step (a CAS, or the `fetch_add` fast
//! path below): no observer can see the count at or past the threshold on a
//! closed name, and exactly one step moves the count from `threshold - 1` to
//! `threshold` — its thread reports the opening.
//!
//! # Epochs: outcomes count only in the state they were admitted in
//!
//! The epoch changes whenever the name leaves the open or half-open state
//! (to half-open, to closed, or back to open from half-open) and on every
//! `reset` or successful close. A [`Permit`](super::Permit) carries the
//! epoch (and the global generation, below) it was admitted in, and its
//! outcome is applied by a CAS that *checks* them: a call admitted while the
//! name was closed counts only while it is still closed in that epoch, and
//! a half-open trial only while that trial round runs. So a late success
//! cannot close a name that opened after the call was admitted, and a late
//! failure cannot re-open a name that a trial round has since closed. The
//! opening of a closed name keeps its epoch (the phase or the count says it
//! is open, which the closed permits' check also tests), so the `fetch_add`
//! fast path can open a name.
//!
//! The epoch has 14 bits: a permit that stays out while its name changes
//! state 16 384 times could be mistaken for a current one. With the default
//! cool-down (60 s) that is more than four days of a single call.
//!
//! # Generations: `reset_all` in O(1)
//!
//! The breaker holds one global generation counter (a `u64`). `reset_all` is
//! a single `fetch_add` on it. A word whose generation bits differ from the
//! low 8 bits of the current global generation is **stale**: it was written
//! before the latest `reset_all` and reads as the fresh state (closed, zero
//! failures). Writers rebase lazily: a CAS loop loads the word, then the
//! global generation `g`; it interprets the word as live if its generation
//! equals `g`, as fresh otherwise, and installs its result tagged with `g`.
//! A permit admitted before a `reset_all` carries the old generation, so
//! its outcome is ignored like that of an earlier epoch.
//!
//! The global generation is always loaded *after* the word. The word was
//! written by a thread that had read its generation from the global counter
//! before its (Release) CAS; our Acquire load of the word makes that read
//! happen-before our load of the global counter, so by read-read coherence we
//! read that generation or a later one. Hence a word's generation is never
//! ahead of the `g` we load, and a simple inequality means "stale".
//!
//! Generation bits wrap after 2⁸ `reset_all` calls. So that a word
//! untouched for that long cannot come back to life, every 2⁷-th
//! `reset_all` sweeps the names and rebases stale words to the current
//! generation (a CAS per word that does not change the abstract state): an
//! amortized cost of one word per 128 names and `reset_all`.
//!
//! # The `fetch_add` fast path
//!
//! In consecutive mode a failure recorded by name on a counting word is just
//! "count + 1", opening included, so `fetch_add(1)` is the whole operation:
//! the one `fetch_add` that returns a count of `threshold - 1` opened the
//! name, and then stamps the opening (below). It is taken when the word,
//! loaded first, is live, counting and below [`SATURATED`]; each thread has
//! at most one `fetch_add` in flight admitted below it, so the field stays
//! below `SATURATED + threads < 2⁴⁰` and never carries into the epoch. The
//! value `fetch_add` returns is interpreted at its own generation, like a
//! late CAS (below).
//!
//! # Rate mode: the sliding window
//!
//! With `sliding_window(n)` a closed name keeps its window *in the word*:
//! `seq`, the number of outcomes recorded in this window (modulo `M`, the
//! largest multiple of `n` below 2²⁴); `full`, whether `n` were ever
//! recorded (then the window holds `n`, else `seq`); the number of
//! `failures` among them; and `last`, whether the latest outcome (number
//! `seq - 1`) failed. A ring of `n` cells beside the word holds the
//! failures: a failed outcome `k` puts its tag `(generation, epoch, k)` in
//! cell `k % n`; a success writes no cell, so outcome `k` failed iff cell
//! `k % n` holds `k`'s tag (a cell holds at most one tag; an older one, an
//! empty cell or another window's tag all read "succeeded"). The latest
//! outcome's failure may still be on its way to its cell. Invariant: while
//! the word reads `seq`, every earlier failure still in the window is in
//! its cell.
//!
//! Recording an outcome of a call admitted in epoch `e` is one CAS loop:
//!
//! 1. Load the word; if it is no longer counting in epoch `e`, the outcome
//!    is ignored.
//! 2. **Help**: if the latest outcome (`seq - 1`) failed (`last`), make
//!    sure its tag is in its cell (a CAS that replaces only an earlier
//!    outcome's tag, an empty cell or a cell of another window). After a
//!    success there is nothing to help.
//! 3. **Evict**: if the window is full, the outcome leaving it is number
//!    `seq - n`: it failed iff cell `seq % n` holds its tag (for `n = 1`
//!    it is `last`).
//! 4. **Add, evict and judge in one CAS**: `seq + 1`, `last` = this
//!    outcome, `failures` + this − the evicted one; if the new window
//!    trips the threshold (at least `minimum_calls` outcomes and the failure
//!    rate reached) the same CAS opens the name instead (the window is
//!    discarded). Then, if this outcome failed, put its tag in its cell, so
//!    that the next recorder usually finds it there (step 2 is then one
//!    load).
//!
//! Step 2 keeps the invariant: the word moves from `seq` to `seq + 1` only
//! after a failed outcome `seq - 1` is in its cell, and a tag is replaced
//! only by a later outcome's, which is put there only once the word reads
//! past `seq - 1 + n`, after `seq - 1` left the window. So the CAS of step
//! 4 is the whole operation: the window it installs is exactly the
//! sequential window (append, drop the oldest beyond `n`, judge), and a
//! stale load fails the CAS. The loop is lock-free: a retry follows another
//! thread's successful CAS on the word. The common call — a success that
//! evicts a success — writes only the word: the cell it reads is written
//! once per failure, so its line stays shared in every core's cache.
//!
//! A tag keeps 24 bits of the global generation (the word keeps 8), so a
//! failure an older window left in a cell reads as that window's until
//! 2²⁴ `reset_all`s have passed; within a generation the epoch tells windows
//! apart as it does for permits.
//!
//! **Limit (bounded tags).** Tags are compared modulo `M`: a helper that
//! sleeps between its load of a cell and its CAS on it while the same
//! window records `M / 2` (at least 2²²) outcomes could take a later
//! failure for an earlier one and put its own over it, and that failure
//! then leaves the window as a success: the failure count of that window
//! may be one too low. Like the epoch's wrap, this needs one thread
//! stalled for millions of operations.
//!
//! # Half-open
//!
//! With a cool-down, the first caller after it elapsed moves the name from
//! open to half-open (CAS, new epoch) and gets the first trial permit; up to
//! `half_open_calls` trials are admitted (each a CAS on the admitted count).
//! A dropped trial permit gives its place back (admitted − 1), so the trial
//! is offered again at once. The trial outcomes decide: in consecutive mode
//! a failed trial re-opens the name and `half_open_calls` successes close
//! it; in rate mode, once every trial has reported, the name re-opens if
//! their failure rate reaches the threshold and closes otherwise. A trial
//! round whose permits have all been handed out and that is still undecided
//! a cool-down after it began is presumed lost (a forgotten permit, a hung
//! call): the next caller starts a new round (new epoch), so nothing wedges
//! a name half-open.
//!
//! # Stamps
//!
//! The monotonic time an open or half-open phase began is kept beside the
//! word as `generation (8) · epoch (14) · microseconds (42)`, written by the
//! one thread whose step created that phase, right after that step. A
//! reader uses a stamp only if its generation and epoch bits are the
//! word's: until then the phase counts as just begun (a caller is rejected
//! with the full cool-down as `retry_after`). The writer replaces a stamp
//! only if it is not newer (same generation bits, epoch ahead by less than
//! 2¹³), so a slow writer never overwrites a newer phase's stamp. Times are
//! compared modulo 2⁴² µs (50 days): a phase left untouched for longer may
//! wait one more cool-down.
//!
//! # Linearization points
//!
//! - Reads (`is_open`, `failures`, `state`) linearize at their load of the
//!   word: a pristine word answers without looking at the generation;
//!   otherwise the generation load that follows decides. If the word was
//!   live at the load and a `reset_all` came before the generation load, the
//!   read linearizes just after that `reset_all`.
//! - Writes (CAS loops) linearize at their successful CAS if the global
//!   generation still equals the `g` they tagged the word with; otherwise
//!   immediately before the `reset_all` that moved it (which lies inside
//!   their interval): their effect is wiped by the reset, as readers see.
//! - A write whose function decides "no change" writes nothing and
//!   linearizes at its load, like a read.
//! - An outcome in rate mode linearizes at its CAS of step 4 (add, evict,
//!   judge); helping (step 2) changes no abstract state.
//! - `reset_all` linearizes at its `fetch_add` on the global generation.
//!
//! # Orderings
//!
//! - Word: loads `Acquire`, successful CAS `AcqRel`, failed CAS `Acquire`.
//!   Release/Acquire carries the generation the writer read, which the
//!   coherence argument above needs.
//! - Global generation: `fetch_add` `AcqRel`, loads `Acquire`.
//! - Ring cells: loads `Acquire`, CAS `AcqRel`. A failure is put (step 2)
//!   before the word CAS that moves `seq` past it (`AcqRel`, so the put
//!   happens-before every later load of that word, through the word's chain
//!   of read-modify-writes); an evictor that loads the word `Acquire` and
//!   then the cell therefore reads the put outcome or a later one.
//! - Stamps: `Relaxed` loads and CAS. A stamp is one word that names its
//!   own epoch, so a reader needs no ordering with the word to tell whether
//!   it belongs to the phase it saw; a stale stamp is never used.
//! - Statistics (`times_opened`, `rejected`, totals): `Relaxed`
//!   read-modify-writes. Each one is exact (an RMW never loses an update);
//!   they publish nothing and are read as statistics.

use std::time::Duration;

use crate::clock::SharedClock;
use crate::listener::Listeners;
use crate::sync::{AtomicBool, AtomicU64, CachePadded, Ordering};
use crossbeam_utils::Backoff;

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
    /// Calls run; outcomes are counted.
    Closed,
    /// The name reached its failure threshold: calls are rejected. With a
    /// cool-down, the first caller after it elapsed starts a half-open trial.
    Open,
    /// Trial calls are out; their outcomes close or re-open the name.
    HalfOpen,
}

const DATA_BITS: u32 = 40;
const DATA_MASK: u64 = (1 << DATA_BITS) - 1;
const EPOCH_SHIFT: u32 = DATA_BITS;
const EPOCH_BITS: u32 = 14;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const PHASE_SHIFT: u32 = EPOCH_SHIFT + EPOCH_BITS;
const PHASE_MASK: u64 = 3;
const GEN_SHIFT: u32 = PHASE_SHIFT + 2;
/// The generation bits a word keeps (8).
pub(crate) const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;
/// Every `SWEEP_EVERY`-th `reset_all` rebases stale words (half the wrap).
pub(crate) const SWEEP_EVERY: u64 = 1 << (64 - GEN_SHIFT - 1);
/// The consecutive-failure count saturates here (2³¹ − 1); the field
/// above it is headroom for `fetch_add`s in flight.
pub(crate) const SATURATED: u32 = (1 << 31) - 1;
/// The largest `sliding_window` (the window's failure count is a 14-bit
/// field).
pub(crate) const MAX_WINDOW: u32 = 10_000;
/// The largest `half_open_calls` (10-bit trial counters).
pub(crate) const MAX_HALF_OPEN_CALLS: u32 = 1_000;

const COUNTING: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

const TRIAL_BITS: u32 = 10;
const TRIAL_MASK: u64 = (1 << TRIAL_BITS) - 1;

/// One decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl Word {
    /// Closed, zero failures, epoch 0, tagged with generation `g`.
    #[inline]
    pub(crate) fn fresh(g: u64) -> Self {
        Word((g & GEN_MASK) << GEN_SHIFT)
    }
    #[inline]
    fn data(self) -> u64 {
        self.0 & DATA_MASK
    }
    #[inline]
    pub(crate) fn epoch(self) -> u64 {
        (self.0 >> EPOCH_SHIFT) & EPOCH_MASK
    }
    #[inline]
    fn phase(self) -> u64 {
        (self.0 >> PHASE_SHIFT) & PHASE_MASK
    }
    #[inline]
    pub(crate) fn generation(self) -> u64 {
        self.0 >> GEN_SHIFT
    }
    /// The same generation, with `phase`, `epoch` and `data`.
    #[inline]
    fn with(self, phase: u64, epoch: u64, data: u64) -> Self {
        Word(
            (self.0 & (GEN_MASK << GEN_SHIFT))
                | (phase << PHASE_SHIFT)
                | ((epoch & EPOCH_MASK) << EPOCH_SHIFT)
                | (data & DATA_MASK),
        )
    }
    /// The same phase and epoch with new data.
    #[inline]
    fn with_data(self, data: u64) -> Self {
        Word((self.0 & !DATA_MASK) | (data & DATA_MASK))
    }
    /// The next phase, in the next epoch.
    #[inline]
    fn next(self, phase: u64, data: u64) -> Self {
        self.with(phase, self.epoch() + 1, data)
    }
    /// The consecutive failures (consecutive mode, counting phase).
    #[inline]
    pub(crate) fn count(self) -> u32 {
        self.data().min(u64::from(SATURATED)) as u32
    }
    /// Whether the word belongs to global generation `g`.
    #[inline]
    fn is_live(self, g: u64) -> bool {
        self.generation() == g & GEN_MASK
    }
    /// The word as it reads under global generation `g`.
    #[inline]
    fn under(self, g: u64) -> Self {
        if self.is_live(g) {
            self
        } else {
            Self::fresh(g)
        }
    }
    /// Whether this word reads the same in every generation (closed,
    /// nothing counted, epoch 0), so a reader needs no generation check.
    #[inline]
    fn is_pristine(self) -> bool {
        self.0 & !(GEN_MASK << GEN_SHIFT) == 0
    }
}

/// A rate-mode window (see "Rate mode"): `seq (24) · full · last · failures (14)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Window {
    /// Outcomes recorded in this window, modulo [`RateConfig::seq_modulus`].
    seq: u64,
    /// Whether `n` outcomes were ever recorded (the window holds `n`).
    full: bool,
    /// Whether the latest outcome (number `seq - 1`) failed: it may not be
    /// in the ring yet.
    last_failed: bool,
    /// Failures among the outcomes in the window.
    failures: u64,
}

const WINDOW_FAILURE_BITS: u32 = 14;
const WINDOW_SEQ_SHIFT: u32 = WINDOW_FAILURE_BITS + 2;
const WINDOW_SEQ_BITS: u32 = DATA_BITS - WINDOW_SEQ_SHIFT;
/// The outcome-number bits of a ring cell (after its two flag bits).
const SEQ_MASK: u64 = (1 << WINDOW_SEQ_BITS) - 1;

impl Window {
    #[inline]
    fn of(data: u64) -> Self {
        Window {
            seq: data >> WINDOW_SEQ_SHIFT,
            full: data >> (WINDOW_FAILURE_BITS + 1) & 1 != 0,
            last_failed: data >> WINDOW_FAILURE_BITS & 1 != 0,
            failures: data & ((1 << WINDOW_FAILURE_BITS) - 1),
        }
    }
    #[inline]
    fn data(self) -> u64 {
        self.seq << WINDOW_SEQ_SHIFT
            | u64::from(self.full) << (WINDOW_FAILURE_BITS + 1)
            | u64::from(self.last_failed) << WINDOW_FAILURE_BITS
            | self.failures
    }
    /// The number of outcomes in the window.
    #[inline]
    fn calls(self, n: u64) -> u64 {
        if self.full {
            n
        } else {
            self.seq
        }
    }
}

/// A half-open round's three counters.
#[inline]
fn trials(data: u64) -> (u64, u64, u64) {
    (
        data & TRIAL_MASK,
        (data >> TRIAL_BITS) & TRIAL_MASK,
        (data >> (2 * TRIAL_BITS)) & TRIAL_MASK,
    )
}
#[inline]
fn trials_data(admitted: u64, succeeded: u64, failed: u64) -> u64 {
    admitted | (succeeded << TRIAL_BITS) | (failed << (2 * TRIAL_BITS))
}

/// Rate-mode configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateConfig {
    pub(crate) window: u32,
    /// Outcome numbers wrap here: the largest multiple of `window` that
    /// fits the word's 24-bit sequence field.
    pub(crate) seq_modulus: u64,
    /// `⌈2⁴⁰ / window⌉`: `k % window` without a division (see `cell_of`).
    reciprocal: u64,
    pub(crate) minimum_calls: u32,
    /// The failure-rate threshold in basis points (1/100 of a percent).
    pub(crate) rate_bp: u64,
}

impl RateConfig {
    pub(crate) fn new(window: u32, minimum_calls: u32, rate_bp: u64) -> Self {
        let n = u64::from(window);
        RateConfig {
            window,
            seq_modulus: (1 << WINDOW_SEQ_BITS) / n * n,
            reciprocal: (1u64 << 40).div_ceil(n),
            minimum_calls,
            rate_bp,
        }
    }

    /// The ring cell of outcome number `k` (`k % window`). A multiply and
    /// a shift: with `k < 2²⁴` and `window < 2¹⁴`, `⌈2⁴⁰ / window⌉` is
    /// exact (its error times `k` stays below 2⁴⁰).
    #[inline]
    fn cell_of(&self, k: u64) -> usize {
        let n = u64::from(self.window);
        (k - ((k * self.reciprocal) >> 40) * n) as usize
    }

    /// Outcome number `k + 1`, wrapped.
    #[inline]
    fn after(&self, k: u64) -> u64 {
        if k + 1 == self.seq_modulus {
            0
        } else {
            k + 1
        }
    }

    /// Outcome number `k - d` (`d <= window`), wrapped.
    #[inline]
    fn before(&self, k: u64, d: u64) -> u64 {
        if k >= d {
            k - d
        } else {
            k + self.seq_modulus - d
        }
    }

    /// Whether outcome number `a` comes before `b` (wrapped: less than
    /// half the numbers behind it).
    #[inline]
    fn precedes(&self, a: u64, b: u64) -> bool {
        let behind = if b >= a {
            b - a
        } else {
            b + self.seq_modulus - a
        };
        behind != 0 && behind < self.seq_modulus / 2
    }

    /// Whether `failed` of a round's `trials` trip the threshold (a trial
    /// round is judged whole, whatever `minimum_calls`).
    #[inline]
    pub(crate) fn trial_trips(&self, trials: u64, failed: u64) -> bool {
        failed * 10_000 >= self.rate_bp * trials
    }

    /// Whether `failures` out of `calls` trips the threshold.
    #[inline]
    pub(crate) fn trips(&self, calls: u64, failures: u64) -> bool {
        calls > 0
            && calls >= u64::from(self.minimum_calls)
            && failures * 10_000 >= self.rate_bp * calls
    }
}

/// What the breaker shares with its handles and permits.
pub(crate) struct Shared {
    pub(crate) threshold: u32,
    /// Microseconds; `None`: no half-open (the seed's behaviour).
    pub(crate) cool_down: Option<u64>,
    pub(crate) rate: Option<RateConfig>,
    pub(crate) half_open_calls: u32,
    pub(crate) clock: SharedClock,
    pub(crate) track_totals: bool,
    /// The global generation; `reset_all` bumps it. Its own cache line: it
    /// is read by every non-trivial operation and written only by
    /// `reset_all`.
    pub(crate) generation: CachePadded<AtomicU64>,
    pub(crate) listeners: Listeners<BreakerEvent>,
}

impl Shared {
    /// Monotonic microseconds of the breaker's clock.
    #[inline]
    pub(crate) fn now_micros(&self) -> u64 {
        micros(self.clock.monotonic())
    }

    /// The state a live word encodes.
    #[inline]
    pub(crate) fn state_of(&self, w: Word) -> State {
        match w.phase() {
            HALF_OPEN => State::HalfOpen,
            OPEN => State::Open,
            _ if self.rate.is_none() && w.data() >= u64::from(self.threshold) => State::Open,
            _ => State::Closed,
        }
    }

    /// Calls the listeners with `event` (nothing is held here).
    #[inline]
    pub(crate) fn emit(&self, event: impl FnOnce() -> BreakerEvent) {
        if !self.listeners.is_empty() {
            self.listeners.notify(&event());
        }
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A state change made by one operation, reported by its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
}

/// The state a call was admitted in, carried by its permit: the global
/// generation (low 48 bits), the epoch and whether it is a trial, packed in
/// one word (a by-name call passes it through nested closures; one `u64`
/// moves as one register, where a struct with a `bool` was copied in pieces
/// that stalled store forwarding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ticket(u64);

const TICKET_GEN_MASK: u64 = (1 << 48) - 1;

impl Ticket {
    #[inline]
    pub(crate) fn new(generation: u64, epoch: u64, trial: bool) -> Self {
        Ticket(
            ((generation & TICKET_GEN_MASK) << 16) | ((epoch & EPOCH_MASK) << 1) | u64::from(trial),
        )
    }
    #[inline]
    pub(crate) fn trial(self) -> bool {
        self.0 & 1 != 0
    }
    #[inline]
    fn epoch(self) -> u64 {
        (self.0 >> 1) & EPOCH_MASK
    }
    /// Whether it was admitted under global generation `g` and epoch
    /// `epoch` (compared on the bits it keeps).
    #[inline]
    pub(crate) fn admitted_in(self, g: u64, epoch: u64) -> bool {
        self.0 >> 1 == Ticket::new(g, epoch, false).0 >> 1
    }
}

/// What a call's end reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Success,
    Failure,
    /// Cancelled or dropped: nothing is recorded; a trial's place is freed.
    Released,
}

/// Why `acquire` refused: how long until a trial may run (`None`: not
/// before a success or reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) retry_after: Option<Duration>,
}

/// The state of one name: the state word plus its stamp, window and
/// statistics, on their own cache line(s).
pub(crate) struct Slot {
    word: AtomicU64,
    /// `epoch · micros` of the latest open or half-open phase (see "Stamps").
    stamp: AtomicU64,
    times_opened: AtomicU64,
    rejected: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    /// Rate mode: the ring of the window's failures (see "Rate mode").
    ring: Box<[AtomicU64]>,
    /// Set once the name was removed from its breaker: lookups that still
    /// find this slot in a cache treat it as absent.
    removed: AtomicBool,
    /// Unique among all slots ever made (a by-name call's ticket names its
    /// slot, so that a removed and re-created name does not take it).
    id: u64,
    /// The name, for events and metrics (a `std` `Arc`: `str` is unsized).
    pub(crate) name: std::sync::Arc<str>,
}

/// A fresh slot id. `Relaxed`: only uniqueness is needed.
fn next_slot_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A stamp is `generation (8) · epoch (14) · microseconds (42)`.
const STAMP_SHIFT: u32 = 42;
const STAMP_TIME_MASK: u64 = (1 << STAMP_SHIFT) - 1;
const STAMP_TAG_MASK: u64 = (1 << (64 - STAMP_SHIFT)) - 1;

/// The tag a stamp of phase `w` carries.
#[inline]
fn stamp_tag(w: Word) -> u64 {
    ((w.generation() & 0xff) << EPOCH_BITS) | w.epoch()
}

/// The ring-cell tag of failed outcome number `seq` of the window of
/// `ticket`: `generation (24) · epoch (14) · outcome number (24) · present
/// · failed` (an empty cell is 0). The tag keeps 24 bits of the global
/// generation (the word keeps 8): a failure left in a cell by a window
/// 2⁸ `reset_all`s older must not read as the same window's.
#[inline]
fn failure_tag(ticket: Ticket, seq: u64) -> u64 {
    let window = ((ticket.0 >> 16) & TAG_GEN_MASK) << EPOCH_BITS | ticket.epoch();
    window << (WINDOW_SEQ_BITS + 2) | seq << 2 | 3
}

/// The generation bits of a ring-cell tag: what the tag's 64 bits leave.
const TAG_GEN_MASK: u64 = (1 << (64 - EPOCH_BITS - WINDOW_SEQ_BITS - 2)) - 1;

impl Slot {
    pub(crate) fn new(
        name: std::sync::Arc<str>,
        generation: u64,
        shared: &Shared,
    ) -> CachePadded<Self> {
        let ring = match shared.rate {
            Some(r) => (0..r.window).map(|_| AtomicU64::new(0)).collect(),
            None => Box::default(),
        };
        CachePadded::new(Slot {
            word: AtomicU64::new(Word::fresh(generation).0),
            stamp: AtomicU64::new(0),
            times_opened: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ring,
            removed: AtomicBool::new(false),
            id: next_slot_id(),
            name,
        })
    }

    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Marks the slot removed (see `CircuitBreaker::remove`). `Release`:
    /// pairs with the `Acquire` in [`is_removed`](Self::is_removed), though
    /// the flag publishes nothing else; a lookup that misses the flag
    /// linearizes before the removal.
    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// The word as it reads now. Linearizes at the word load.
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
        if shared.state_of(raw) == State::Closed {
            return false; // closed whether live or stale
        }
        raw.is_live(shared.generation.load(Ordering::Acquire))
    }

    /// Consecutive failures (consecutive mode; the threshold while
    /// half-open), or the failures in the window (rate mode; the failed
    /// trials while half-open).
    #[inline]
    pub(crate) fn failures(&self, shared: &Shared) -> u32 {
        let w = self.load(shared);
        match (w.phase(), shared.rate) {
            (HALF_OPEN, None) => shared.threshold,
            (HALF_OPEN, Some(_)) => trials(w.data()).2 as u32,
            (OPEN, _) => 0,
            (_, None) => w.count(),
            (_, Some(_)) => Window::of(w.data()).failures as u32,
        }
    }

    #[inline]
    pub(crate) fn state(&self, shared: &Shared) -> State {
        shared.state_of(self.load(shared))
    }

    pub(crate) fn times_opened(&self) -> u64 {
        self.times_opened.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.successes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// The CAS loop every write uses: `f` maps the live word and the global
    /// generation to the new word, or `None` for "no change" (nothing is
    /// written). Returns `(before, after)` as installed.
    #[inline]
    fn update(
        &self,
        shared: &Shared,
        mut f: impl FnMut(Word, u64) -> Option<Word>,
    ) -> (Word, Word) {
        let mut raw = self.word.load(Ordering::Acquire);
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            let current = Word(raw).under(g);
            let Some(new) = f(current, g) else {
                return (current, current);
            };
            match self
                .word
                .compare_exchange_weak(raw, new.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (current, new),
                Err(actual) => raw = actual,
            }
        }
    }

    /// Counts a failure recorded by name (the seed's meaning): in
    /// consecutive mode count + 1, opening at the threshold; in rate mode an
    /// outcome of the current closed epoch; a half-open name re-opens.
    #[inline]
    pub(crate) fn record_failure(&self, shared: &Shared) -> Option<Transition> {
        if shared.track_totals {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if shared.rate.is_none() {
            if let Some(t) = self.record_failure_fast(shared) {
                return t;
            }
        }
        if shared.rate.is_some() {
            return self.record_by_name(shared, true);
        }
        let (before, after) = self.update(shared, |w, _| match w.phase() {
            HALF_OPEN => Some(reopen(w, shared)),
            OPEN => None,
            _ if w.data() >= u64::from(SATURATED) => None, // saturated (and open)
            _ => Some(w.with_data(w.data() + 1)),
        });
        self.transition(shared, before, after)
    }

    /// An outcome recorded by name in rate mode. It applies to the name as
    /// it is *now*: on a closed name it enters the current window, and if
    /// that window is gone before step 1 (a reset, an opening, a
    /// `reset_all`) it is tried again on the new state instead of being
    /// dropped (a by-name outcome has no admission to be stale against).
    /// On an open name a failure does nothing and a success closes it; on a
    /// half-open one a failure re-opens it and a success closes it. Each
    /// retry follows another thread's change of the word: lock-free.
    fn record_by_name(&self, shared: &Shared, failed: bool) -> Option<Transition> {
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            let w = self.load(shared);
            if w.phase() == COUNTING {
                match self.window_outcome(shared, Ticket::new(g, w.epoch(), false), failed) {
                    Some(t) => return t,
                    None => continue, // the window changed under us: again
                }
            }
            let (before, after) = self.update(shared, |w, _| match w.phase() {
                COUNTING => None, // closed again meanwhile: retried above
                HALF_OPEN if failed => Some(reopen(w, shared)),
                _ if failed => None, // open: a failure changes nothing
                _ => Some(w.next(COUNTING, 0)),
            });
            if before.phase() != COUNTING {
                return self.transition(shared, before, after);
            }
        }
    }

    /// The `fetch_add` fast path (see the module docs): `None` when it does
    /// not apply, and then nothing was written.
    #[inline]
    fn record_failure_fast(&self, shared: &Shared) -> Option<Option<Transition>> {
        let w = Word(self.word.load(Ordering::Acquire));
        if w.phase() != COUNTING
            || w.data() >= u64::from(SATURATED)
            || !w.is_live(shared.generation.load(Ordering::Acquire))
        {
            return None;
        }
        // AcqRel: Acquire for the same reasons as a CAS reading the word;
        // Release so later readers of the word inherit our generation read.
        let before = Word(self.word.fetch_add(1, Ordering::AcqRel));
        let after = Word(before.0 + 1);
        Some(self.transition(shared, before, after))
    }

    /// A success recorded by name (the seed's meaning): zero failures and
    /// closed, from any state; in rate mode a success outcome while closed.
    #[inline]
    pub(crate) fn record_success(&self, shared: &Shared) -> Option<Transition> {
        if shared.track_totals {
            self.successes.fetch_add(1, Ordering::Relaxed);
        }
        if shared.rate.is_some() {
            return self.record_by_name(shared, false);
        }
        self.close(shared)
    }

    /// Closes the name and zeroes its counts (a success by name, `reset`).
    /// The epoch moves on whenever the word changes, so permits of the
    /// closed phase before stop counting.
    #[inline]
    pub(crate) fn close(&self, shared: &Shared) -> Option<Transition> {
        let (before, after) = self.update(shared, |w, _| {
            if w.phase() == COUNTING && w.data() == 0 {
                None // already closed with nothing counted: no write
            } else {
                Some(w.next(COUNTING, 0))
            }
        });
        self.transition(shared, before, after)
    }

    /// The closed-name path of [`acquire`](Self::acquire): a ticket if the
    /// name is closed (two loads, no write, no clock), else `None` and
    /// nothing was done. Linearizes at the word load.
    #[inline]
    pub(crate) fn admit_closed(&self, shared: &Shared) -> Option<Ticket> {
        let raw = Word(self.word.load(Ordering::Acquire));
        let g = shared.generation.load(Ordering::Acquire);
        let w = raw.under(g);
        (shared.state_of(w) == State::Closed).then(|| Ticket::new(g, w.epoch(), false))
    }

    /// Asks to run a call: a closed ticket on a closed name; on an open one
    /// whose cool-down has elapsed, or a half-open one with room, a trial
    /// ticket; otherwise a refusal.
    pub(crate) fn acquire(&self, shared: &Shared) -> (Result<Ticket, Refusal>, Option<Transition>) {
        if let Some(ticket) = self.admit_closed(shared) {
            return (Ok(ticket), None);
        }
        let Some(cool_down) = shared.cool_down else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return (Err(Refusal { retry_after: None }), None);
        };
        let now = shared.now_micros();
        let mut outcome = Err(Refusal { retry_after: None });
        let (before, after) = self.update(shared, |w, g| {
            let (admitted, succeeded, failed) = trials(w.data());
            match shared.state_of(w) {
                State::Closed => {
                    outcome = Ok(Ticket::new(g, w.epoch(), false));
                    None
                }
                State::HalfOpen if admitted < u64::from(shared.half_open_calls) => {
                    outcome = Ok(Ticket::new(g, w.epoch(), true));
                    Some(w.with_data(trials_data(admitted + 1, succeeded, failed)))
                }
                // Open, or half-open with every trial out: once a cool-down
                // has passed since the phase began, a new trial round starts
                // (after an opening; or the round out is presumed lost).
                _ => match self.since(w, now) {
                    Some(elapsed) if elapsed >= cool_down => {
                        let next = w.next(HALF_OPEN, trials_data(1, 0, 0));
                        outcome = Ok(Ticket::new(g, next.epoch(), true));
                        Some(next)
                    }
                    elapsed => {
                        outcome = Err(remaining(cool_down, elapsed));
                        None
                    }
                },
            }
        });
        if before != after && after.phase() == HALF_OPEN && before.epoch() != after.epoch() {
            self.write_stamp(after, now);
        }
        if outcome.is_err() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        (outcome, self.transition(shared, before, after))
    }

    /// How long until a call on this name may run: `None` unless it is
    /// open (or half-open with every trial out) with a cool-down.
    pub(crate) fn retry_after(&self, shared: &Shared) -> Option<Duration> {
        let cool_down = shared.cool_down?;
        let w = self.load(shared);
        match shared.state_of(w) {
            State::Closed => None,
            State::HalfOpen if trials(w.data()).0 < u64::from(shared.half_open_calls) => None,
            _ => remaining(cool_down, self.since(w, shared.now_micros())).retry_after,
        }
    }

    /// Microseconds since the phase of `w` began, if its stamp is written.
    #[inline]
    fn since(&self, w: Word, now: u64) -> Option<u64> {
        let stamp = self.stamp.load(Ordering::Relaxed);
        (stamp >> STAMP_SHIFT == stamp_tag(w)).then(|| now.wrapping_sub(stamp) & STAMP_TIME_MASK)
    }

    /// Stamps the phase `w` began at `now`, unless a newer phase's stamp is
    /// already there (see "Stamps").
    fn write_stamp(&self, w: Word, now: u64) {
        let tag = stamp_tag(w);
        let new = (tag << STAMP_SHIFT) | (now & STAMP_TIME_MASK);
        let mut old = self.stamp.load(Ordering::Relaxed);
        loop {
            let old_tag = old >> STAMP_SHIFT;
            // Newer: same generation bits, epoch ahead by less than 2^13.
            let ahead = old_tag.wrapping_sub(tag) & STAMP_TAG_MASK;
            if old != 0 && old_tag != tag && ahead < (1 << (EPOCH_BITS - 1)) {
                return; // a newer phase of this generation stamped already
            }
            match self
                .stamp
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => old = actual,
            }
        }
    }

    /// Reports the end of a call admitted with `ticket`: applied only if the
    /// name is still in the phase and epoch the call was admitted in.
    /// `counted`: whether the totals were already counted (by-name calls).
    #[inline]
    pub(crate) fn end(
        &self,
        shared: &Shared,
        ticket: Ticket,
        end: End,
        counted: bool,
    ) -> Option<Transition> {
        // The common end of a call on a healthy name: a success of a closed
        // call where nothing is counted changes nothing, whatever the
        // epoch. One load; linearizes at it.
        if end == End::Success && !ticket.trial() && shared.rate.is_none() && !shared.track_totals {
            let raw = Word(self.word.load(Ordering::Acquire));
            if raw.phase() == COUNTING && raw.data() == 0 {
                return None;
            }
        }
        if !ticket.trial() && end == End::Released {
            return None;
        }
        self.end_slow(shared, ticket, end, counted)
    }

    #[inline(never)]
    fn end_slow(
        &self,
        shared: &Shared,
        ticket: Ticket,
        end: End,
        counted: bool,
    ) -> Option<Transition> {
        if shared.track_totals && !counted {
            match end {
                End::Success => self.successes.fetch_add(1, Ordering::Relaxed),
                End::Failure => self.failures.fetch_add(1, Ordering::Relaxed),
                End::Released => 0,
            };
        }
        if ticket.trial() {
            return self.end_trial(shared, ticket, end);
        }
        match (end, shared.rate) {
            (End::Released, _) => None,
            (_, Some(_)) => self
                .window_outcome(shared, ticket, end == End::Failure)
                .flatten(),
            (End::Failure, None) => {
                let (before, after) = self.update(shared, |w, g| {
                    (admitted_closed(shared, w, g, ticket) && w.data() < u64::from(SATURATED))
                        .then(|| w.with_data(w.data() + 1))
                });
                self.transition(shared, before, after)
            }
            (End::Success, None) => {
                let (before, after) = self.update(shared, |w, g| {
                    (admitted_closed(shared, w, g, ticket) && w.data() != 0).then(|| w.with_data(0))
                });
                self.transition(shared, before, after)
            }
        }
    }

    /// A trial's end (see "Half-open").
    fn end_trial(&self, shared: &Shared, ticket: Ticket, end: End) -> Option<Transition> {
        let k = u64::from(shared.half_open_calls);
        let (before, after) = self.update(shared, |w, g| {
            if !ticket.admitted_in(g, w.epoch()) || w.phase() != HALF_OPEN {
                return None; // a stale trial: its round is over
            }
            let (admitted, succeeded, failed) = trials(w.data());
            match end {
                End::Released => {
                    Some(w.with_data(trials_data(admitted.saturating_sub(1), succeeded, failed)))
                }
                End::Failure if shared.rate.is_none() => Some(reopen(w, shared)),
                _ => {
                    let (succeeded, failed) = match end {
                        End::Failure => (succeeded, failed + 1),
                        _ => (succeeded + 1, failed),
                    };
                    if succeeded + failed < k {
                        return Some(w.with_data(trials_data(admitted, succeeded, failed)));
                    }
                    Some(match shared.rate {
                        Some(r) if r.trial_trips(k, failed) => reopen(w, shared),
                        _ => w.next(COUNTING, 0),
                    })
                }
            }
        });
        self.transition(shared, before, after)
    }

    /// Records a closed-phase outcome in the window (rate mode; see "Rate
    /// mode"). `None` if the name is no longer closed in the ticket's epoch
    /// (the outcome is ignored), else the transition it caused.
    fn window_outcome(
        &self,
        shared: &Shared,
        ticket: Ticket,
        failed: bool,
    ) -> Option<Option<Transition>> {
        let rate = shared.rate?;
        let n = u64::from(rate.window);
        let mut raw = self.word.load(Ordering::Acquire);
        // Every recorder of a name CASes its one word: under contention a
        // failed CAS backs off (spins, doubling) before it retries, so the
        // word's line is not pulled back and forth on every attempt.
        let backoff = Backoff::new();
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            let w = Word(raw).under(g);
            if !admitted_closed(shared, w, g, ticket) {
                return None; // the window the call was admitted in is gone
            }
            let before = Window::of(w.data());
            // 1. The latest outcome into its cell if it failed (helping its
            //    recorder); a success has nothing to put.
            if before.last_failed && (before.seq > 0 || before.full) {
                let seq = rate.before(before.seq, 1);
                let at = &self.ring[rate.cell_of(seq)];
                self.put_failure(&rate, ticket, seq, at.load(Ordering::Acquire));
            }
            // 2. The outcome that leaves the window, if it is full: a
            //    failure iff its cell holds its failure tag. `found`: what
            //    our own outcome's cell holds.
            let mut found = None;
            let evicted = if !before.full {
                0
            } else if n == 1 {
                u64::from(before.last_failed)
            } else {
                let held = self.ring[rate.cell_of(before.seq)].load(Ordering::Acquire);
                found = Some(held);
                u64::from(held == failure_tag(ticket, rate.before(before.seq, n)))
            };
            let seq = rate.after(before.seq);
            let after = Window {
                seq,
                full: before.full || before.seq + 1 == n,
                last_failed: failed,
                failures: (before.failures + u64::from(failed)).saturating_sub(evicted),
            };
            // 3. Add, evict and judge in one CAS.
            let new = if rate.trips(after.calls(n), after.failures) {
                w.with(OPEN, w.epoch(), 0)
            } else {
                w.with_data(after.data())
            };
            match self
                .word
                .compare_exchange_weak(raw, new.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // A failure into its cell, so that the next recorder
                    // usually finds it there (its step 1 is then one load).
                    if failed && new.phase() == COUNTING {
                        let at = &self.ring[rate.cell_of(before.seq)];
                        let held = found.unwrap_or_else(|| at.load(Ordering::Acquire));
                        self.put_failure(&rate, ticket, before.seq, held);
                        return Some(None); // closed before and after
                    }
                    if new.phase() == COUNTING {
                        return Some(None); // closed before and after
                    }
                    return Some(self.transition(shared, w, new));
                }
                Err(actual) => {
                    backoff.spin();
                    raw = actual;
                }
            }
        }
    }

    /// Makes cell `seq % n` hold the failure tag of outcome `seq` of the
    /// ticket's window, unless it already holds it or a later outcome's
    /// (then the word has moved on too, and the caller's CAS fails).
    /// `found`: what the caller last read from the cell. Only an earlier
    /// outcome's tag, an empty cell or a cell of another window is
    /// replaced, so a late helper never takes a failure out of the window.
    #[inline]
    fn put_failure(&self, rate: &RateConfig, ticket: Ticket, seq: u64, mut found: u64) {
        let target = failure_tag(ticket, seq);
        let same_window = !((1 << (WINDOW_SEQ_BITS + 2)) - 1);
        let at = &self.ring[rate.cell_of(seq)];
        loop {
            let live = found & 2 != 0 && found & same_window == target & same_window;
            if found == target || (live && !rate.precedes((found >> 2) & SEQ_MASK, seq)) {
                return;
            }
            match at.compare_exchange(found, target, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => found = actual,
            }
        }
    }

    /// Resolves a state change into a report, counts and stamps openings.
    #[inline]
    fn transition(&self, shared: &Shared, before: Word, after: Word) -> Option<Transition> {
        let (from, to) = (shared.state_of(before), shared.state_of(after));
        if from == to {
            return None;
        }
        if to == State::Open {
            self.times_opened.fetch_add(1, Ordering::Relaxed);
            if shared.cool_down.is_some() {
                self.write_stamp(after, shared.now_micros());
            }
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

/// Whether a closed-phase ticket still applies to the live word `w`.
#[inline]
fn admitted_closed(shared: &Shared, w: Word, g: u64, ticket: Ticket) -> bool {
    ticket.admitted_in(g, w.epoch()) && shared.state_of(w) == State::Closed
}

/// The word of a name re-opened from half-open: consecutive mode counts
/// the threshold, rate mode an empty open phase; a new epoch either way.
#[inline]
fn reopen(w: Word, shared: &Shared) -> Word {
    match shared.rate {
        Some(_) => w.next(OPEN, 0),
        None => w.next(COUNTING, u64::from(shared.threshold)),
    }
}

/// The refusal for a phase `elapsed` µs old (unknown: just begun).
#[inline]
fn remaining(cool_down: u64, elapsed: Option<u64>) -> Refusal {
    let left = cool_down.saturating_sub(elapsed.unwrap_or(0));
    Refusal {
        retry_after: Some(Duration::from_micros(left)),
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::*;

    #[test]
    fn word_fields_round_trip() {
        let w = Word::fresh(5).with(HALF_OPEN, 9, trials_data(3, 2, 1));
        assert_eq!((w.phase(), w.epoch(), w.generation()), (HALF_OPEN, 9, 5));
        assert_eq!(trials(w.data()), (3, 2, 1));
        let window = Window {
            seq: (1 << WINDOW_SEQ_BITS) - 1,
            full: true,
            last_failed: true,
            failures: MAX_WINDOW.into(),
        };
        let w = w.next(COUNTING, window.data());
        assert_eq!(
            (w.phase(), w.epoch(), Window::of(w.data())),
            (COUNTING, 10, window)
        );
        // The epoch wraps inside its field.
        assert_eq!(Word::fresh(1).with(COUNTING, EPOCH_MASK + 3, 0).epoch(), 2);
        assert_eq!(Word::fresh(GEN_MASK + 1).generation(), 0);
        // Fast-path headroom above the saturation reads saturated.
        let over = Word::fresh(5).with_data(u64::from(SATURATED) + 7);
        assert_eq!(
            (over.count(), over.epoch(), over.generation()),
            (SATURATED, 0, 5)
        );
    }

    fn shared(threshold: u32) -> Shared {
        Shared {
            threshold,
            cool_down: None,
            rate: None,
            half_open_calls: 1,
            clock: crate::clock::system_clock(),
            track_totals: false,
            generation: CachePadded::new(AtomicU64::new(0)),
            listeners: Listeners::new(),
        }
    }

    #[test]
    fn cell_of_is_the_remainder() {
        for n in [1, 2, 3, 7, 100, 127, 1000, 4097, 9999, MAX_WINDOW] {
            let rate = RateConfig::new(n, n, 5000);
            let m = rate.seq_modulus;
            let step = if cfg!(miri) { 9_973 } else { 97 };
            for k in (0..m).step_by(step).chain([m - 1, m - 2, u64::from(n) - 1]) {
                assert_eq!(rate.cell_of(k) as u64, k % u64::from(n), "{k} % {n}");
            }
            assert_eq!(rate.after(m - 1), 0);
            assert_eq!(rate.before(0, u64::from(n)), m - u64::from(n));
        }
    }

    #[test]
    fn failures_saturate() {
        let shared = shared(3);
        let slot = Slot::new("x".into(), 0, &shared);
        slot.word.store(
            Word::fresh(0).with_data(u64::from(SATURATED) - 1).0,
            Ordering::Relaxed,
        );
        slot.record_failure(&shared);
        slot.record_failure(&shared);
        assert_eq!(slot.failures(&shared), SATURATED);
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
        let stale = Slot::new("stale".into(), 0, &shared);
        stale.record_failure(&shared);
        let live = Slot::new("live".into(), 0, &shared);
        shared.generation.store(SWEEP_EVERY, Ordering::Relaxed);
        live.record_failure(&shared);
        stale.rebase(&shared);
        live.rebase(&shared);
        let g = SWEEP_EVERY & GEN_MASK;
        assert_eq!(Word(stale.word.load(Ordering::Relaxed)), Word::fresh(g));
        assert_eq!(live.load(&shared).count(), 1);
        shared.generation.store(GEN_MASK + 1, Ordering::Relaxed);
        assert!(!stale.is_open(&shared));
    }

    #[test]
    fn stale_words_read_fresh() {
        let w = Word::fresh(1).with_data(9);
        assert_eq!(w.under(1), w);
        assert_eq!(w.under(2), Word::fresh(2));
        assert_eq!(w.under(1 + GEN_MASK + 1), w);
    }

    #[test]
    fn a_stamp_is_never_replaced_by_an_older_phase() {
        let shared = shared(1);
        let slot = Slot::new("x".into(), 0, &shared);
        let w = Word::fresh(0).with(OPEN, 5, 0);
        slot.write_stamp(w, 100);
        slot.write_stamp(Word::fresh(0).with(OPEN, 4, 0), 50);
        assert_eq!(slot.since(w, 130), Some(30));
        slot.write_stamp(Word::fresh(0).with(OPEN, 6, 0), 200);
        assert_eq!(slot.since(w, 300), None, "a newer phase's stamp");
    }
}
