//! `arcs` — at most one active storyline ("arc") per unordered agent pair.
//!
//! Rebuilt from RustChain's `DramaArcEngine` (PR #3239), whose `start_arc`
//! checked `pair in active_arcs` and inserted in a separate step: two
//! concurrent starts of one pair both won, the second overwrote the first
//! arc's start time, phase and event count, and the `Started` callback fired
//! twice. Its `end_arc` raced the same way (check, then delete: a `KeyError`
//! on a double end).
//!
//! [`ArcEngine`] keeps one slot of a sharded map (`dashmap`) per sorted pair.
//! The slot holds the arc's cell by value: immutable identity (token, kind,
//! start time) plus one `AtomicU64` packing all of its mutable state —
//! `[life: 2][phase: 3][events: 24][last progress − start, ms: 35]` —
//! always replaced whole. Every operation on a pair is one slot operation
//! of the map (two for a start with a hook: the claim and the publication
//! or rollback), whose per-shard lock is held for that operation only and
//! never across user code; no thread waits for another's hook or listener.
//!
//! One word makes every snapshot consistent (phase, count and time always
//! belong to the same event) and loses no concurrent event; the price is
//! range: the count saturates at [`MAX_EVENTS`] (16,777,215) and the
//! last-progress time is kept to the millisecond, up to about 397 days
//! after the start. (An `arc-swap` cell holding a `State` struct has no such
//! limits, but every arc-swap compare-and-swap walks all threads' debt
//! slots, which costs more than the mutex it would replace.)
//!
//! # Protocols and linearization points
//!
//! * **cells** are held in the map by value, and the map holds only live
//!   ones (`Starting` or `Active`): every move out of them is made inside
//!   the `remove_if` that unlinks the cell. Each cell has a token no other
//!   start draws, which the periodic sweep uses to act only on the very arc
//!   it judged.
//! * **who writes a state word**: only map operations on its slot, under
//!   the shard lock. Under the *read* lock (`progress`, a hook's
//!   publication), writers can overlap, so they compare-and-swap. Under the
//!   *write* lock (every unlink: end, expiry, completion, rollback) no
//!   other writer can run, so a load and a store are enough.
//! * **start** — `a == b` is [`ArcError::SamePair`]. Otherwise one `entry`
//!   call on the sorted pair decides the race under the shard lock: a vacant
//!   slot is claimed with our new cell; an occupied slot yields
//!   [`Start::AlreadyActive`] with that arc's snapshot. That `entry` call is
//!   the linearization point. With no start hook the cell is inserted
//!   already `Active`. With a hook, it is inserted `Starting` (a
//!   placeholder), the hook runs after the shard lock is released, and then
//!   the cell is published (`Starting → Active`, a compare-and-swap on its
//!   state under the shard read lock) or rolled back (`Starting → Aborted`
//!   inside the `remove_if` that unlinks it). A rolled-back start returns
//!   [`ArcError::Hook`] and leaves the pair free.
//! * **two-phase start** — [`ArcEngine::claim`] is the same claim with the
//!   cell inserted `Starting`, handed back as a [`Claim`] (which holds an
//!   `Arc` of the engine: `Send + 'static`); the caller awaits its own work
//!   (an `async` database insert), then [`Claim::publish`] runs the start
//!   hook if one is configured and publishes, exactly as a hooked start
//!   does (with a start hook, `start` *is* claim + publish on the borrowed
//!   engine). Dropping the claim unpublished — a cancelled future, an
//!   aborted or panicking task — rolls it back and frees the pair.
//! * **hot pairs** — a start that finds its pair taken (in the `entry`
//!   call above) moves the arc's cell, if still held by value, into an
//!   `Arc` held by the map's slot (copied under the write lock, where no
//!   one else can write its word), and puts a handle on it into the
//!   calling thread's own small table (16 entries, direct-mapped by the
//!   pair's hash). From then on that thread's starts of the pair first
//!   look there, with no lock, no atomic read-modify-write and no store to
//!   a line another thread reads, and if the cell's state word is live
//!   (`Starting`/`Active`), return [`Start::AlreadyActive`] from it; that
//!   `Acquire` load of the word is the linearization point (a cell leaves
//!   the live states only inside the `remove_if` that unlinks it, before a
//!   newer arc of the pair can be inserted, and a cell is never reused, so
//!   a live word is the pair's one live arc at that moment). A miss, or a
//!   word that is no longer live, takes the `entry` path. The tables are
//!   hints that nothing clears: readers trust only the word.
//! * **concurrent starters during the hook** get
//!   [`Start::AlreadyActive`] with the placeholder's snapshot, which is the
//!   winner's arc (same agents, kind, start time; phase `Initiation`, no
//!   events). They do not wait. `status`, `active`, `len`, `progress` and
//!   `end` only see *published* arcs: a pending arc is `None`/`NotFound`
//!   until its hook returns. If the hook then fails, those callers were told
//!   of an arc that never became active: `AlreadyActive` means "this pair is
//!   taken, or being taken, by another start".
//! * **progress** — under the shard read lock, a compare-and-swap loop on
//!   the cell's state: from `Active`, bump the event count, set the
//!   last-progress time and the phase. The successful compare-and-swap is
//!   the linearization point; no concurrent progress is lost because each
//!   one retries on the newest state. Moving to [`ArcPhase::Completed`]
//!   ends the arc, and is made like an end.
//! * **end** (and expiry in [`ArcEngine::process_all`], and completion) —
//!   `Active → Ended(reason)` on the cell, inside the write-locked
//!   `remove_if` of the pair's slot, so the win and the unlink are one map
//!   operation (its store is the linearization point): exactly one caller
//!   wins and reports [`ArcEvent::Ended`]; everyone else finds no active arc
//!   and gets [`ArcError::NotFound`]. Expiry acts only on the arc with the
//!   token the sweep found, and is measured on the clock's monotonic time
//!   ([`Clock::monotonic`]); so is an arc's age at each progress (shown as
//!   the start's wall time plus that age): a wall-clock step neither expires
//!   nor revives an arc.
//! * **status / active** read the map (one shard read lock, or each shard's
//!   in turn) and load each cell's state word once: every snapshot is one
//!   word, hence consistent per arc.
//!
//! # Memory orderings
//!
//! * The map's shard locks order the slot operations: a cell is fully built
//!   before it is inserted under the lock, so whoever finds it sees its
//!   immutable fields.
//! * State word: compare-and-swaps `AcqRel` (failure `Acquire`), stores
//!   `Release`, loads `Acquire`. The word carries all the mutable data
//!   itself, so single-location coherence already makes each transition
//!   atomic and linearizable; release/acquire adds that whoever sees a
//!   state also sees what its writer did before — a reader that sees a
//!   published arc sees the start hook's effects (e.g. its database row).
//! * Hot pairs: a thread reads only entries it put in its own table
//!   itself, after building the cell; the cell's word is read `Acquire`
//!   as above, so a lock-free taken check that sees a published arc sees
//!   the start hook's effects too. The flag that tells starts to look in
//!   the tables is `Relaxed`: it only ever goes from `false` to `true`,
//!   and a start that still reads `false` takes the locked path, which is
//!   always right.
//! * [`ArcEngine::len`] is the map's own count (it holds only live cells)
//!   minus a counter of cells whose start hook is still running. That
//!   counter moves only on the hook path, under the pair's shard lock, and
//!   is `Relaxed`: it publishes no data, and `len` visits the shards one at
//!   a time anyway. So the hook-less start and end touch no shared counter;
//!   `len` counts each pair at most once and is exact whenever no start or
//!   end is in flight.
//!
//! # Memory and progress
//!
//! The map holds one cell per pair with a published ([`len`](ArcEngine::len))
//! or claimed ([`pending`](ArcEngine::pending)) arc; a cell leaves the map
//! in the operation that ends it (end, completion, expiry, a failed hook,
//! a dropped claim), so the map keeps nothing per ended arc. (A thread's
//! hot-pair table may keep an ended arc's cell, with its agents and kind,
//! until that entry is overwritten or the engine is dropped: at most 16
//! per thread that started a taken pair.) Every operation is one or two
//! shard-locked map operations (or, for a start of a hot pair that is
//! taken, none: a look into the thread's own table) whose critical
//! sections run no user code beyond the data's `Hash`/`Eq`/`Clone` and no
//! I/O (`progress` is a compare-and-swap loop under a shard read lock);
//! `active`, `len` and `process_all` visit the shards in turn. Nothing
//! blocks beyond that; a synchronous start hook blocks only its caller,
//! and `claim` exists so that an async one blocks nobody.
//!
//! # Events
//!
//! `Started`, `Progressed` and `Ended` are delivered through
//! [`on_event`](ArcEngine::on_event) listeners exactly once each, by the
//! thread that won the transition, after the new state is visible and with
//! no internal guard held (listeners may call back into the engine). A
//! panicking listener is caught and logged; the engine and the other
//! listeners are unaffected.
//!
//! ```
//! use raceless::arcs::{ArcEngine, ArcKind, ArcPhase, EndReason, Start};
//! use std::time::Duration;
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct Rivalry;
//! impl ArcKind for Rivalry {
//!     fn expected_duration(&self) -> Duration { Duration::from_secs(7 * 86_400) }
//! }
//!
//! let engine = ArcEngine::<&str, Rivalry>::new();
//! assert!(matches!(engine.start("ada", "bob", Rivalry), Ok(Start::Started(_))));
//! // (b, a) is the same pair.
//! assert!(matches!(engine.start("bob", "ada", Rivalry), Ok(Start::AlreadyActive(_))));
//! let arc = engine.progress(&"ada", &"bob", ArcPhase::Escalation).unwrap();
//! assert_eq!(arc.events_triggered, 1);
//! engine.end(&"bob", &"ada", EndReason::Manual).unwrap();
//! assert!(engine.end(&"bob", &"ada", EndReason::Manual).is_err());
//! assert_eq!(engine.len(), 0);
//! ```

use std::fmt;
use std::hash::Hash;
use std::time::{Duration, SystemTime};

use crate::clock::{system_clock, Clock, SharedClock};
use crate::listener::{ListenerId, Listeners};
use crate::sync::{
    Arc, AtomicBool, AtomicU64, AtomicUsize, Entry, MapHasher, Ordering, ShardedMap, ThreadCache,
};
use crate::CallbackError;

/// A kind of arc; it gives the arc's expected duration. An arc still active
/// after twice that duration is expired by [`ArcEngine::process_all`].
///
/// ```
/// use raceless::arcs::ArcKind;
/// use std::time::Duration;
///
/// #[derive(Clone)]
/// struct Beef;
/// impl ArcKind for Beef {
///     fn expected_duration(&self) -> Duration { Duration::from_secs(10 * 86_400) }
/// }
/// assert_eq!(Beef.expected_duration().as_secs(), 864_000);
/// ```
pub trait ArcKind: Clone + Send + Sync + 'static {
    /// How long an arc of this kind is expected to last.
    fn expected_duration(&self) -> Duration;
}

/// The outcome of a successful [`ArcEngine::start`].
///
/// ```
/// use raceless::arcs::Start;
/// let s = Start::Started(7);
/// assert!(s.is_started());
/// assert_eq!(s.into_inner(), 7);
/// assert!(!Start::AlreadyActive(1).is_started());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Start<T> {
    /// This call started the arc.
    Started(T),
    /// The pair already had an active (or starting) arc: here it is,
    /// untouched.
    AlreadyActive(T),
}

impl<T> Start<T> {
    /// Whether this call started the arc.
    ///
    /// ```
    /// # use raceless::arcs::Start;
    /// assert!(Start::Started(()).is_started());
    /// ```
    pub fn is_started(&self) -> bool {
        matches!(self, Start::Started(_))
    }

    /// The arc, whichever way it was obtained.
    ///
    /// ```
    /// # use raceless::arcs::Start;
    /// assert_eq!(Start::AlreadyActive("x").into_inner(), "x");
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Start::Started(t) | Start::AlreadyActive(t) => t,
        }
    }
}

/// The outcome of a successful [`ArcEngine::claim`] (or
/// [`ArcRegistry::claim`]): the pair is ours to publish, or another start
/// holds it.
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcKind, Claimed};
/// use std::sync::Arc;
/// # #[derive(Clone, Debug, PartialEq)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
/// let engine = Arc::new(ArcEngine::<u8, K>::new());
/// let first = engine.claim(1, 2, K).unwrap();
/// assert!(first.is_claim());
/// let second = engine.claim(1, 2, K).unwrap();
/// assert!(!second.is_claim());
/// ```
#[derive(Debug)]
#[must_use = "dropping a `Claim` gives the pair back"]
pub enum Claimed<A, K> {
    /// This call claimed the pair; publish the claim to start the arc.
    Claim(Claim<A, K>),
    /// The pair already had an active (or claimed, or starting) arc: here
    /// it is, untouched.
    AlreadyActive(ArcSnapshot<A, K>),
}

impl<A, K> Claimed<A, K> {
    /// Whether this call claimed the pair.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, Claimed};
    /// # #[derive(Clone, Debug, PartialEq)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = std::sync::Arc::new(ArcEngine::<u8, K>::new());
    /// assert!(engine.claim(1, 2, K).unwrap().is_claim());
    /// ```
    pub fn is_claim(&self) -> bool {
        matches!(self, Claimed::Claim(_))
    }
}

/// A claimed, not yet published arc: the first half of a two-phase start
/// ([`ArcEngine::claim`]). While it lives, the pair is taken (other starts
/// and claims get `AlreadyActive` with [`snapshot`](Self::snapshot)) but the
/// arc is not active: `status`, `active`, `len`, `progress`, `end` and
/// `process_all` do not see it.
///
/// It holds an `Arc` of its registry, so it is `Send + 'static` (when the
/// agents and kind are) and can be held across `.await`s or moved into a
/// spawned task.
///
/// # Drop rule
///
/// [`publish`](Self::publish) makes the arc active and fires `Started`
/// once. Dropping the claim without publishing it — explicitly, through
/// [`abort`](Self::abort), or because the future holding it was cancelled at
/// an `.await`, or its task panicked — rolls the claim back: the pair is
/// free again at once, no event fires, and nothing of the arc is kept. The
/// rollback is one shard-locked map operation that runs no user code, so
/// `drop` never blocks an executor thread beyond that.
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcKind, Claimed};
/// use std::sync::Arc;
/// # #[derive(Clone, Debug, PartialEq)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
/// let engine = Arc::new(ArcEngine::<u8, K>::new());
/// let Claimed::Claim(claim) = engine.claim(1, 2, K).unwrap() else { unreachable!() };
/// drop(claim); // e.g. the database insert failed, or the request was cancelled
/// assert!(engine.claim(1, 2, K).unwrap().is_claim()); // the pair is free again
/// ```
#[must_use = "dropping a `Claim` gives the pair back"]
pub struct Claim<A, K> {
    registry: std::sync::Arc<dyn ClaimTarget<A, K>>,
    /// `None` once `publish` or `drop` took over (both consume the claim).
    snapshot: Option<ArcSnapshot<A, K>>,
    token: u64,
}

/// The registry side of a [`Claim`]: publication and rollback of the
/// claimed arc that the registry identifies by `token`. Implemented by
/// [`ArcEngine`] and the baseline; implement it to hand out [`Claim`]s
/// ([`Claim::new`]) from another [`ArcRegistry`].
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcKind, ClaimTarget};
/// # #[derive(Clone)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
/// fn is_target<T: ClaimTarget<u8, K>>() {}
/// is_target::<ArcEngine<u8, K>>();
/// ```
pub trait ClaimTarget<A, K>: Send + Sync {
    /// Runs the registry's start hook, if any, then publishes the arc with
    /// `token` and fires `Started` once; rolls back and returns
    /// [`ArcError::Hook`] if the hook fails. Called at most once per claim.
    fn publish_claimed(&self, snapshot: &ArcSnapshot<A, K>, token: u64) -> Result<(), ArcError>;
    /// Gives the pair back (the claim was dropped unpublished). Called at
    /// most once per claim, and never after `publish_claimed`.
    fn rollback_claimed(&self, agents: &(A, A), token: u64);
}

impl<A, K> Claim<A, K> {
    /// A claim of the arc `snapshot` (identified by `token` in `registry`),
    /// for [`ArcRegistry::claim`] implementations.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, Claim, Claimed};
    /// # #[derive(Clone, Debug, PartialEq)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// // Registries build claims with `Claim::new`; users get them from `claim`.
    /// let engine = std::sync::Arc::new(ArcEngine::<u8, K>::new());
    /// let Claimed::Claim(claim) = engine.claim(1, 2, K).unwrap() else { unreachable!() };
    /// let _: Claim<u8, K> = claim;
    /// ```
    pub fn new(
        registry: std::sync::Arc<dyn ClaimTarget<A, K>>,
        snapshot: ArcSnapshot<A, K>,
        token: u64,
    ) -> Self {
        Self {
            registry,
            snapshot: Some(snapshot),
            token,
        }
    }

    /// The claimed arc as it will be published: sorted agents, kind, start
    /// time (taken at the claim), phase `Initiation`, no events.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, ArcPhase, Claimed};
    /// # #[derive(Clone, Debug, PartialEq)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = std::sync::Arc::new(ArcEngine::<u8, K>::new());
    /// let Claimed::Claim(claim) = engine.claim(2, 1, K).unwrap() else { unreachable!() };
    /// assert_eq!(claim.snapshot().agents, (1, 2));
    /// assert_eq!(claim.snapshot().phase, ArcPhase::Initiation);
    /// ```
    pub fn snapshot(&self) -> &ArcSnapshot<A, K> {
        match &self.snapshot {
            Some(snapshot) => snapshot,
            None => unreachable!("only `publish` and `drop` take it, consuming the claim"),
        }
    }

    /// Publishes the arc: it becomes active and visible, and `Started`
    /// fires exactly once (after the change is visible, with no internal
    /// guard held). If the registry has a synchronous start hook, it runs
    /// first (with no guard held); if it fails, the claim is rolled back.
    /// Returns the arc as published. Progress: one shard-locked map
    /// operation.
    ///
    /// # Errors
    /// [`ArcError::Hook`] if the registry's start hook failed (the pair is
    /// free again).
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, Claimed};
    /// # #[derive(Clone, Debug, PartialEq)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = std::sync::Arc::new(ArcEngine::<u8, K>::new());
    /// let Claimed::Claim(claim) = engine.claim(1, 2, K).unwrap() else { unreachable!() };
    /// let arc = claim.publish().unwrap();
    /// assert_eq!(engine.len(), 1);
    /// assert_eq!(engine.status(&1, &2), Some(arc));
    /// ```
    pub fn publish(mut self) -> Result<ArcSnapshot<A, K>, ArcError> {
        // Taken first: if the hook fails, `publish_claimed` rolls back
        // itself, and `drop` must not roll back again.
        let Some(snapshot) = self.snapshot.take() else {
            unreachable!("only `publish` and `drop` take it, consuming the claim")
        };
        self.registry.publish_claimed(&snapshot, self.token)?;
        Ok(snapshot)
    }

    /// Gives the pair back without publishing (the same as dropping the
    /// claim).
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, Claimed};
    /// # #[derive(Clone, Debug, PartialEq)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = std::sync::Arc::new(ArcEngine::<u8, K>::new());
    /// let Claimed::Claim(claim) = engine.claim(1, 2, K).unwrap() else { unreachable!() };
    /// claim.abort();
    /// assert!(engine.claim(1, 2, K).unwrap().is_claim());
    /// ```
    pub fn abort(self) {
        drop(self);
    }
}

impl<A, K> Drop for Claim<A, K> {
    fn drop(&mut self) {
        if let Some(snapshot) = self.snapshot.take() {
            self.registry.rollback_claimed(&snapshot.agents, self.token);
        }
    }
}

impl<A: fmt::Debug, K: fmt::Debug> fmt::Debug for Claim<A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

/// The phase of an arc. Any phase may follow any other (the caller's model
/// decides); moving to [`ArcPhase::Completed`] ends the arc.
///
/// ```
/// use raceless::arcs::ArcPhase;
/// assert_eq!(ArcPhase::Climax.as_str(), "climax");
/// assert_eq!(ArcPhase::Resolution.to_string(), "resolution");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArcPhase {
    /// The arc has just begun.
    Initiation,
    /// Tension is building.
    Escalation,
    /// The peak of the conflict.
    Climax,
    /// Things are settling.
    Resolution,
    /// The arc is over (ends it).
    Completed,
}

impl ArcPhase {
    /// The phase's lower-case name.
    ///
    /// ```
    /// # use raceless::arcs::ArcPhase;
    /// assert_eq!(ArcPhase::Initiation.as_str(), "initiation");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ArcPhase::Initiation => "initiation",
            ArcPhase::Escalation => "escalation",
            ArcPhase::Climax => "climax",
            ArcPhase::Resolution => "resolution",
            ArcPhase::Completed => "completed",
        }
    }
}

impl fmt::Display for ArcPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an arc ended.
///
/// ```
/// use raceless::arcs::EndReason;
/// assert_ne!(EndReason::Manual, EndReason::Expired);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EndReason {
    /// Ended by [`ArcEngine::end`].
    Manual,
    /// Still active after twice its kind's expected duration
    /// ([`ArcEngine::process_all`]).
    Expired,
    /// Progressed to [`ArcPhase::Completed`].
    Completed,
}

/// A consistent copy of one arc's state.
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcKind, ArcPhase};
/// # use std::time::Duration;
/// # #[derive(Clone, Debug, PartialEq)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// let engine = ArcEngine::<u32, K>::new();
/// let arc = engine.start(2, 1, K).unwrap().into_inner();
/// assert_eq!(arc.agents, (1, 2)); // sorted
/// assert_eq!(arc.phase, ArcPhase::Initiation);
/// assert_eq!(arc.events_triggered, 0);
/// assert_eq!(arc.started_at, arc.last_progress);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArcSnapshot<A, K> {
    /// The pair, sorted (smaller agent first).
    pub agents: (A, A),
    /// The arc's kind.
    pub kind: K,
    /// The current phase.
    pub phase: ArcPhase,
    /// How many times the arc progressed.
    pub events_triggered: u64,
    /// When the arc started (by the engine's clock).
    pub started_at: SystemTime,
    /// When it last progressed (its start time if it never did).
    pub last_progress: SystemTime,
}

/// A change of an arc, delivered to [`ArcEngine::on_event`] listeners.
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcEvent, ArcKind};
/// use std::sync::{Arc, Mutex};
/// # use std::time::Duration;
/// # #[derive(Clone, Debug, PartialEq)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// let engine = ArcEngine::<u32, K>::new();
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// engine.on_event(move |e| log.lock().unwrap().push(matches!(e, ArcEvent::Started(_))));
/// engine.start(1, 2, K).unwrap();
/// assert_eq!(*seen.lock().unwrap(), vec![true]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArcEvent<A, K> {
    /// An arc started (published).
    Started(ArcSnapshot<A, K>),
    /// An arc progressed; the snapshot is its state right after.
    Progressed(ArcSnapshot<A, K>),
    /// An arc ended; the snapshot is its final state.
    Ended(ArcSnapshot<A, K>, EndReason),
}

/// The error a start hook returns (handed back in [`ArcError::Hook`]): the
/// crate's one callback error, [`CallbackError`].
///
/// ```
/// #[allow(deprecated)]
/// let e: raceless::arcs::HookError = "database is down".into();
/// assert_eq!(e.to_string(), "database is down");
/// ```
#[deprecated(
    since = "0.2.0",
    note = "use `raceless::CallbackError` (one error type for every callback)"
)]
pub type HookError = CallbackError;

/// The errors of the `arcs` component.
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcError, ArcKind};
/// # use std::time::Duration;
/// # #[derive(Clone)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// let engine = ArcEngine::<u32, K>::new();
/// assert!(matches!(engine.start(1, 1, K), Err(ArcError::SamePair)));
/// assert!(matches!(engine.end(&1, &2, raceless::arcs::EndReason::Manual), Err(ArcError::NotFound)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArcError {
    /// An agent cannot have an arc with itself.
    #[error("an arc needs two different agents")]
    SamePair,
    /// The pair has no active arc.
    #[error("no active arc between these agents")]
    NotFound,
    /// The start hook failed; the pair is free again.
    #[error("start hook failed: {0}")]
    Hook(#[source] CallbackError),
    /// A shared backend (the `redis` feature's `RedisArcs`) failed; its
    /// [`BackendError`](crate::backend::BackendError) says whether the
    /// outcome is unknown and whether the call may be repeated.
    #[error("{0}")]
    Backend(#[source] crate::backend::BackendError),
}

/// What one [`ArcEngine::process_all`] sweep did.
///
/// ```
/// use raceless::arcs::ProcessReport;
/// let r = ProcessReport::default();
/// assert_eq!((r.processed, r.progressed, r.completed, r.expired), (0, 0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProcessReport {
    /// Active arcs looked at.
    pub processed: usize,
    /// Arcs moved by the process hook.
    pub progressed: usize,
    /// Arcs the process hook completed.
    pub completed: usize,
    /// Arcs ended as [`EndReason::Expired`] by this sweep.
    pub expired: usize,
}

/// The operations of an arc registry, implemented by the lock-free
/// [`ArcEngine`] and by the mutex baseline
/// `baseline::MutexArcEngine` (feature `baselines`), so tests and
/// benchmarks are written once. See [`ArcEngine`]'s methods for the
/// semantics.
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcKind, ArcRegistry};
/// #[cfg(feature = "baselines")]
/// use raceless::baseline::MutexArcEngine;
/// # use std::time::Duration;
/// # #[derive(Clone)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// fn two_starts<R: ArcRegistry<u32, K>>(r: &R) -> usize {
///     (0..2).filter(|_| r.start(1, 2, K).unwrap().is_started()).count()
/// }
/// assert_eq!(two_starts(&ArcEngine::new()), 1);
/// #[cfg(feature = "baselines")]
/// assert_eq!(two_starts(&<MutexArcEngine<u32, K>>::new()), 1);
/// ```
pub trait ArcRegistry<A, K>: Send + Sync {
    /// A registry configured by `builder` (clock, hooks).
    //
    // For the test harness and generic tests (which build every
    // implementation from one builder); not part of the documented API nor
    // covered by semver.
    #[doc(hidden)]
    fn from_builder(builder: ArcEngineBuilder<A, K>) -> Self
    where
        Self: Sized;
    /// Starts an arc between `a` and `b` unless the pair has one.
    fn start(&self, a: A, b: A, kind: K) -> Result<Start<ArcSnapshot<A, K>>, ArcError>;
    /// Claims the pair for a two-phase start (see [`ArcEngine::claim`]).
    fn claim(self: &std::sync::Arc<Self>, a: A, b: A, kind: K) -> Result<Claimed<A, K>, ArcError>
    where
        Self: Sized;
    /// Records one event of the pair's arc and moves it to `phase`.
    fn progress(&self, a: &A, b: &A, phase: ArcPhase) -> Result<ArcSnapshot<A, K>, ArcError>;
    /// Ends the pair's arc.
    fn end(&self, a: &A, b: &A, reason: EndReason) -> Result<ArcSnapshot<A, K>, ArcError>;
    /// The pair's active arc.
    fn status(&self, a: &A, b: &A) -> Option<ArcSnapshot<A, K>>;
    /// Every active arc.
    fn active(&self) -> Vec<ArcSnapshot<A, K>>;
    /// How many arcs are active.
    fn len(&self) -> usize;
    /// Whether no arc is active.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// How many arcs are claimed but not yet published (claims alive,
    /// start hooks running).
    fn pending(&self) -> usize;
    /// Registers an event listener.
    fn on_event<F>(&self, listener: F) -> ListenerId
    where
        F: Fn(&ArcEvent<A, K>) + Send + Sync + 'static;
    /// Removes an event listener; `false` if it was not registered.
    fn remove_listener(&self, id: ListenerId) -> bool;
    /// The periodic sweep: expiry, then the process hook.
    fn process_all(&self) -> ProcessReport;
}

/// A start hook (the seed's database insert).
pub(crate) type StartHook<A, K> =
    std::sync::Arc<dyn Fn(&A, &A, &K) -> Result<(), CallbackError> + Send + Sync>;
/// A process hook: given an active arc, the phase to move it to, if any.
pub(crate) type ProcessHook<A, K> =
    std::sync::Arc<dyn Fn(&ArcSnapshot<A, K>) -> Option<ArcPhase> + Send + Sync>;

/// Configures an [`ArcEngine`].
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcKind, ArcPhase};
/// use raceless::clock::ManualClock;
/// # use std::time::Duration;
/// # #[derive(Clone)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// let engine = ArcEngine::<u32, K>::builder()
///     .clock(ManualClock::new())
///     .start_hook(|_a: &u32, _b: &u32, _k: &K| Ok(())) // e.g. a database insert
///     .process_hook(|arc| (arc.phase == ArcPhase::Initiation).then_some(ArcPhase::Escalation))
///     .build();
/// engine.start(1, 2, K).unwrap();
/// assert_eq!(engine.process_all().progressed, 1);
/// ```
pub struct ArcEngineBuilder<A, K> {
    pub(crate) clock: SharedClock,
    pub(crate) start_hook: Option<StartHook<A, K>>,
    pub(crate) process_hook: Option<ProcessHook<A, K>>,
}

impl<A, K> ArcEngineBuilder<A, K> {
    /// A builder with the system clock and no hooks.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcEngineBuilder, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine: ArcEngine<u8, K> = ArcEngineBuilder::new().build();
    /// assert!(engine.is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            clock: system_clock(),
            start_hook: None,
            process_hook: None,
        }
    }

    /// The clock that times starts, progress and expiry.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// use raceless::clock::ManualClock;
    /// let clock = ManualClock::new();
    /// let engine = ArcEngine::<u8, K>::builder().clock(clock.clone()).build();
    /// let arc = engine.start(1, 2, K).unwrap().into_inner();
    /// assert_eq!(arc.started_at, ManualClock::start());
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    /// A hook run exactly once per successful start, after the pair is
    /// claimed and before the arc is published, with no internal lock
    /// held. If it fails (or panics), the start is rolled back and returns
    /// [`ArcError::Hook`]. It is synchronous and blocks its caller: with
    /// [`ArcEngine::claim`] it runs inside [`Claim::publish`], so async
    /// code that awaits its own insert between `claim` and `publish`
    /// usually configures none.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcError, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::builder()
    ///     .start_hook(|_: &u8, _: &u8, _: &K| Err("database is down".into()))
    ///     .build();
    /// assert!(matches!(engine.start(1, 2, K), Err(ArcError::Hook(_))));
    /// assert!(engine.is_empty());
    /// ```
    pub fn start_hook(
        mut self,
        hook: impl Fn(&A, &A, &K) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.start_hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// A hook [`ArcEngine::process_all`] calls for each active,
    /// unexpired arc (with no internal lock held): `Some(phase)` progresses
    /// the arc to `phase`, `None` leaves it alone.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, ArcPhase};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { std::time::Duration::from_secs(60) } }
    /// let engine = ArcEngine::<u8, K>::builder()
    ///     .process_hook(|_| Some(ArcPhase::Completed))
    ///     .build();
    /// engine.start(1, 2, K).unwrap();
    /// assert_eq!(engine.process_all().completed, 1);
    /// assert!(engine.is_empty());
    /// ```
    pub fn process_hook(
        mut self,
        hook: impl Fn(&ArcSnapshot<A, K>) -> Option<ArcPhase> + Send + Sync + 'static,
    ) -> Self {
        self.process_hook = Some(std::sync::Arc::new(hook));
        self
    }
}

impl<A, K> ArcEngineBuilder<A, K> {
    /// The configured clock (for [`ArcRegistry`] implementations built
    /// from this builder).
    //
    // For the baseline and the test harness's implementations of
    // `ArcRegistry`; not part of the documented API nor covered by semver.
    #[doc(hidden)]
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngineBuilder, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// use raceless::clock::{Clock, ManualClock};
    /// let b = ArcEngineBuilder::<u8, K>::new().clock(ManualClock::new());
    /// assert_eq!(b.shared_clock().now(), ManualClock::start());
    /// ```
    pub fn shared_clock(&self) -> std::sync::Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Runs the configured start hook (`Ok` if there is none), for
    /// [`ArcRegistry`] implementations built from this builder.
    //
    // For the baseline and the test harness's implementations of
    // `ArcRegistry`; not part of the documented API nor covered by semver.
    #[doc(hidden)]
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngineBuilder, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let b = ArcEngineBuilder::<u8, K>::new();
    /// assert!(b.call_start_hook(&1, &2, &K).is_ok());
    /// ```
    pub fn call_start_hook(&self, a: &A, b: &A, kind: &K) -> Result<(), CallbackError> {
        match &self.start_hook {
            Some(hook) => run_start_hook(hook, a, b, kind),
            None => Ok(()),
        }
    }

    /// Runs the configured process hook (`None` if there is none), for
    /// [`ArcRegistry`] implementations built from this builder.
    //
    // For the baseline and the test harness's implementations of
    // `ArcRegistry`; not part of the documented API nor covered by semver.
    #[doc(hidden)]
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcEngineBuilder, ArcKind, ArcPhase};
    /// # #[derive(Clone, Debug, PartialEq)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let b = ArcEngineBuilder::<u8, K>::new().process_hook(|_| Some(ArcPhase::Climax));
    /// let arc = ArcEngine::<u8, K>::new().start(1, 2, K).unwrap().into_inner();
    /// assert_eq!(b.call_process_hook(&arc), Some(ArcPhase::Climax));
    /// ```
    pub fn call_process_hook(&self, arc: &ArcSnapshot<A, K>) -> Option<ArcPhase> {
        self.process_hook
            .as_ref()
            .and_then(|hook| run_process_hook(hook, arc))
    }
}

impl<A, K> ArcEngineBuilder<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    /// The lock-free engine.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::builder().build();
    /// assert_eq!(engine.len(), 0);
    /// ```
    pub fn build(self) -> ArcEngine<A, K> {
        ArcEngine::from_builder(self)
    }
}

impl<A, K> Default for ArcEngineBuilder<A, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A, K> fmt::Debug for ArcEngineBuilder<A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArcEngineBuilder")
            .field("start_hook", &self.start_hook.is_some())
            .field("process_hook", &self.process_hook.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs a start hook with no guard held; a panic in it is caught, logged
/// and turned into a [`CallbackError`] (so the start is rolled back and the
/// pair is not left claimed forever).
pub(crate) fn run_start_hook<A, K>(
    hook: &StartHook<A, K>,
    a: &A,
    b: &A,
    kind: &K,
) -> Result<(), CallbackError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(a, b, kind))).unwrap_or_else(
        |_| {
            tracing::warn!("arc start hook panicked; isolated");
            Err("the start hook panicked".into())
        },
    )
}

/// Runs a process hook with no guard held; a panic in it is caught, logged
/// and read as "leave the arc alone".
pub(crate) fn run_process_hook<A, K>(
    hook: &ProcessHook<A, K>,
    arc: &ArcSnapshot<A, K>,
) -> Option<ArcPhase> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(arc))).unwrap_or_else(|_| {
        tracing::warn!("arc process hook panicked; isolated");
        None
    })
}

/// The sorted pair, or `SamePair`.
pub(crate) fn pair_key<A: Ord + Clone>(a: &A, b: &A) -> Result<(A, A), ArcError> {
    match a.cmp(b) {
        std::cmp::Ordering::Less => Ok((a.clone(), b.clone())),
        std::cmp::Ordering::Greater => Ok((b.clone(), a.clone())),
        std::cmp::Ordering::Equal => Err(ArcError::SamePair),
    }
}

/// Whether an arc started at monotonic time `started` is strictly past
/// twice `kind`'s expected duration at monotonic time `now`.
pub(crate) fn is_expired<K: ArcKind>(kind: &K, started: Duration, now: Duration) -> bool {
    let limit = kind.expected_duration().saturating_mul(2);
    now.saturating_sub(started) > limit
}

/// An [`ArcEvent`] wrapped for the listener registry, whose `Debug` (used
/// only when logging a panicking listener) needs no `Debug` on `A` or `K`.
pub(crate) struct Note<A, K>(pub(crate) ArcEvent<A, K>);

impl<A, K> fmt::Debug for Note<A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, phase) = match &self.0 {
            ArcEvent::Started(s) => ("Started", s.phase),
            ArcEvent::Progressed(s) => ("Progressed", s.phase),
            ArcEvent::Ended(s, _) => ("Ended", s.phase),
        };
        write!(f, "ArcEvent::{what}(phase: {phase})")
    }
}

/// The event listeners of an arc registry (shared with the baseline).
pub(crate) struct EventSink<A, K> {
    listeners: Listeners<Note<A, K>>,
}

impl<A: 'static, K: 'static> EventSink<A, K> {
    pub(crate) fn new() -> Self {
        Self {
            listeners: Listeners::new(),
        }
    }

    pub(crate) fn add(&self, f: impl Fn(&ArcEvent<A, K>) + Send + Sync + 'static) -> ListenerId {
        self.listeners.add(move |n: &Note<A, K>| f(&n.0))
    }

    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        self.listeners.remove(id)
    }

    /// Delivers the event built by `make`, if anyone listens. Callers hold
    /// no guard.
    pub(crate) fn emit(&self, make: impl FnOnce() -> ArcEvent<A, K>) {
        if !self.listeners.is_empty() {
            self.listeners.notify(&Note(make()));
        }
    }
}

/// Where an arc is in its life (2 bits of the state word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Claimed by a start whose hook is still running (not yet visible).
    Starting = 0,
    /// Published.
    Active = 1,
    /// Ended (exactly one transition out of `Active` wins; the winner
    /// knows the reason).
    Ended = 2,
    /// Its start hook failed.
    Aborted = 3,
}

impl Life {
    /// `Starting` or `Active`: the arc holds its pair.
    #[inline]
    fn is_live(self) -> bool {
        matches!(self, Life::Starting | Life::Active)
    }
}

/// The largest event count an arc's state word holds; progress beyond it
/// is still recorded (phase, time, `Progressed` event) but
/// [`ArcSnapshot::events_triggered`] stays there.
///
/// ```
/// assert_eq!(raceless::arcs::MAX_EVENTS, 16_777_215);
/// ```
pub const MAX_EVENTS: u64 = (1 << EVENT_BITS) - 1;
/// The largest last-progress offset, in milliseconds after the start
/// (about 397 days); later progress reads as this offset.
const MAX_DELTA_MS: u64 = (1 << DELTA_BITS) - 1;
const DELTA_BITS: u32 = 35;
const EVENT_BITS: u32 = 24;
const PHASE_SHIFT: u32 = DELTA_BITS + EVENT_BITS; // 59
const LIFE_SHIFT: u32 = PHASE_SHIFT + 3; // 62

/// The mutable part of an arc, decoded from its one state word:
/// `[life: 2][phase: 3][events: 24][last progress − start, in ms: 35]`.
/// Being one word, it is read and replaced whole: every snapshot is
/// consistent, and a compare-and-swap loses no concurrent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    life: Life,
    phase: ArcPhase,
    events: u64,
    delta_ms: u64,
}

// `pack` and `unpack` are not generic: without `#[inline]` they are compiled
// once in this crate and *called* (with the `State` passed through memory)
// from the engine's methods, which are monomorphized in the user's crate.
impl State {
    #[inline]
    fn pack(self) -> u64 {
        ((self.life as u64) << LIFE_SHIFT)
            | ((self.phase as u64) << PHASE_SHIFT)
            | (self.events.min(MAX_EVENTS) << DELTA_BITS)
            | self.delta_ms.min(MAX_DELTA_MS)
    }

    #[inline]
    fn unpack(word: u64) -> Self {
        let life = match word >> LIFE_SHIFT {
            0 => Life::Starting,
            1 => Life::Active,
            2 => Life::Ended,
            _ => Life::Aborted,
        };
        let phase = match (word >> PHASE_SHIFT) & 0b111 {
            0 => ArcPhase::Initiation,
            1 => ArcPhase::Escalation,
            2 => ArcPhase::Climax,
            3 => ArcPhase::Resolution,
            _ => ArcPhase::Completed,
        };
        Self {
            life,
            phase,
            events: (word >> DELTA_BITS) & MAX_EVENTS,
            delta_ms: word & MAX_DELTA_MS,
        }
    }
}

/// One arc, held by value in the map under its pair: immutable identity
/// plus its state word.
struct Cell<K> {
    /// Tells this arc apart from every other arc of the same pair (see
    /// [`next_token`]): an operation that found the arc in one map call
    /// and acts on it in a later one (the periodic sweep) acts only if the
    /// pair still holds this very arc.
    token: u64,
    kind: K,
    /// The start by the wall clock (for snapshots only).
    started_at: SystemTime,
    /// The start by the clock's monotonic time: ages (the last-progress
    /// offset) and expiry are measured from it, so a wall-clock step
    /// neither expires nor revives an arc.
    started_mono: Duration,
    /// The packed [`State`], written only under its pair's shard lock:
    /// compare-and-swaps with `AcqRel` (on failure `Acquire`) under the
    /// read lock ([`Cell::transition`]), `Release` stores under the write
    /// lock ([`Cell::transition_exclusive`]); loads are `Acquire`. The word
    /// carries all the mutable data itself (single-location coherence
    /// makes each transition linearizable), and release/acquire adds that
    /// whoever sees a state also sees what its writer did before it —
    /// notably, a reader that sees a published arc sees the start hook's
    /// effects (e.g. its database row).
    word: AtomicU64,
}

/// A map slot: the arc's cell, by value, or, once a start found the pair
/// taken, moved into an `Arc` shared with the threads' [`HotArcs`] tables
/// (with a copy of the pair), so that their later starts of the pair can
/// see it is taken without the shard lock. Either way it is the one cell
/// of the arc.
enum Slot<A, K> {
    Inline(Cell<K>),
    Shared(Arc<HotArc<A, K>>),
}

impl<A, K> std::ops::Deref for Slot<A, K> {
    type Target = Cell<K>;
    #[inline(always)]
    fn deref(&self) -> &Cell<K> {
        match self {
            Slot::Inline(cell) => cell,
            Slot::Shared(hot) => &hot.cell,
        }
    }
}

/// A cell shared between the map and the hot-pair cache.
struct HotArc<A, K> {
    agents: (A, A),
    cell: Cell<K>,
}

/// A thread's entry for a hot pair: a handle on its [`HotArc`], behind a
/// trait object that is `Send + Sync` by declaration, so that the engine
/// type itself needs no `Send`/`Sync` bounds on `A` and `K` (the per-thread
/// storage requires them of what it holds); only the methods that put an
/// entry there, which have those bounds, build one. One virtual call per
/// lookup.
trait HotCell<A, K>: Send + Sync {
    fn arc(&self) -> &HotArc<A, K>;
}

impl<A: Send + Sync, K: Send + Sync> HotCell<A, K> for Arc<HotArc<A, K>> {
    #[inline]
    fn arc(&self) -> &HotArc<A, K> {
        self
    }
}

type HotEntry<A, K> = Box<dyn HotCell<A, K>>;

/// Entries of each thread's hot-pair table (direct-mapped by the pair's
/// hash). Under loom, 2.
const HOT_SLOTS: usize = if cfg!(raceless_loom) { 2 } else { 16 };

/// The hot-pair cache: per thread, the shared cells of pairs this thread
/// found taken, so that its later starts of them need no shard lock (see
/// "hot pairs" in the module docs).
struct HotArcs<A, K> {
    /// Boxed: `ThreadLocal` keeps its bucket table inline (about 500
    /// bytes), which would spread the engine's fields that every
    /// operation reads over many more lines.
    cache: Box<ThreadCache<HotEntry<A, K>>>,
    hasher: MapHasher,
    /// Set once, by the first cell moved into an `Arc`; until then a start
    /// does not look in the cache. `Relaxed`: a hint that only ever goes
    /// from `false` to `true`; a start that still reads `false` takes the
    /// shard-locked path, which is always right.
    in_use: AtomicBool,
}

impl<A, K> HotArcs<A, K>
where
    A: Eq + Hash + Clone + Send + Sync + 'static,
    K: Clone + Send + Sync + 'static,
{
    fn new() -> Self {
        Self {
            cache: Box::new(ThreadCache::new(HOT_SLOTS)),
            hasher: MapHasher::default(),
            in_use: AtomicBool::new(false),
        }
    }

    fn hash(&self, agents: &(A, A)) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(agents)
    }

    /// The lock-free half of a start: the snapshot of the live arc of
    /// `agents` if this thread's table holds it. Its linearization point is
    /// the `Acquire` load of the cell's state word that reads `Starting` or
    /// `Active`: a cell leaves those states only inside the `remove_if`
    /// that unlinks it, before any newer arc of the pair can be inserted,
    /// and a cell is never reused, so at that load it is the pair's one
    /// live arc. `None` on a miss or an ended cell.
    #[inline]
    fn taken(&self, agents: &(A, A)) -> Option<ArcSnapshot<A, K>> {
        if !self.in_use.load(Ordering::Relaxed) {
            return None;
        }
        self.cache.with(self.hash(agents), |hot| {
            let hot = hot.arc();
            if hot.agents != *agents {
                return None;
            }
            let state = hot.cell.state();
            state
                .life
                .is_live()
                .then(|| hot.cell.snapshot_of(&hot.agents, &state))
        })
    }

    /// Puts `hot` into this thread's table (after the shard lock: it may
    /// drop the entry it replaces, user data).
    fn remember(&self, hot: Arc<HotArc<A, K>>) {
        if !self.in_use.load(Ordering::Relaxed) {
            self.in_use.store(true, Ordering::Relaxed);
        }
        self.cache.put(self.hash(&hot.agents), Box::new(hot));
    }
}

/// A token no other start in this process draws: the thread's block (high
/// 24 bits, a fresh one every 2^40 starts) and the thread's own count. A
/// `std` atomic and thread-local even under loom: tokens only need to be
/// distinct, they synchronize nothing.
fn next_token() -> u64 {
    use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
    const BLOCK: u64 = 1 << 40;
    static BLOCKS: StdAtomicU64 = StdAtomicU64::new(1);
    thread_local! {
        static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    NEXT.try_with(|next| {
        let mut token = next.get();
        if token % BLOCK == 0 {
            token = BLOCKS.fetch_add(1, StdOrdering::Relaxed) * BLOCK;
        }
        next.set(token + 1);
        token
    })
    // During thread teardown: a fresh block for this one token.
    .unwrap_or_else(|_| BLOCKS.fetch_add(1, StdOrdering::Relaxed) * BLOCK)
}

/// The wall time of an arc's last progress: its start plus the state's
/// offset.
fn last_progress(started_at: SystemTime, delta_ms: u64) -> SystemTime {
    started_at + Duration::from_millis(delta_ms)
}

impl<K: Clone> Cell<K> {
    /// Whether this is the arc of `token` (any arc if `None`).
    fn is(&self, token: Option<u64>) -> bool {
        token.map_or(true, |t| self.token == t)
    }

    fn snapshot_of<A: Clone>(&self, agents: &(A, A), s: &State) -> ArcSnapshot<A, K> {
        self.snapshot_with(agents, s, last_progress(self.started_at, s.delta_ms))
    }

    /// [`snapshot_of`](Self::snapshot_of) with the last-progress time
    /// already known (a new arc's is its start: no time arithmetic).
    fn snapshot_with<A: Clone>(
        &self,
        agents: &(A, A),
        s: &State,
        last_progress: SystemTime,
    ) -> ArcSnapshot<A, K> {
        ArcSnapshot {
            agents: agents.clone(),
            kind: self.kind.clone(),
            phase: s.phase,
            events_triggered: s.events,
            started_at: self.started_at,
            last_progress,
        }
    }

    fn state(&self) -> State {
        State::unpack(self.word.load(Ordering::Acquire))
    }

    /// A copy of this cell, for a caller holding the shard *write* lock
    /// (moving a cell into the hot-pair cache): every writer of the word
    /// holds a shard lock, so the word cannot change meanwhile, and
    /// `Relaxed` is enough (the lock ordered every earlier write before
    /// this load).
    fn copied(&self) -> Self {
        Self {
            token: self.token,
            kind: self.kind.clone(),
            started_at: self.started_at,
            started_mono: self.started_mono,
            word: AtomicU64::new(self.word.load(Ordering::Relaxed)),
        }
    }

    /// Milliseconds of monotonic time from the start to `now`.
    fn delta_ms(&self, now: Duration) -> u64 {
        let d = now.saturating_sub(self.started_mono);
        d.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
            .min(MAX_DELTA_MS)
    }

    /// The current state, if the arc is published and not ended.
    fn active_state(&self) -> Option<State> {
        let s = self.state();
        (s.life == Life::Active).then_some(s)
    }

    /// Compare-and-swap loop, for a caller holding the shard *read* lock
    /// (`progress`, a hook's publication), which other writers may hold
    /// too: applies `f` to the newest state until its result is installed
    /// (returns it) or `f` declines (`None`). The successful
    /// compare-and-swap is the linearization point of the transition; a
    /// failed one means a concurrent writer won, and `f` is re-applied to
    /// its state, so no concurrent event is lost.
    fn transition(&self, f: impl Fn(&State) -> Option<State>) -> Option<State> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let next = f(&State::unpack(current))?.pack();
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(State::unpack(next)),
                Err(actual) => current = actual,
            }
        }
    }

    /// A load and a store, for a caller holding the shard *write* lock
    /// (the `remove_if` of every move out of `Starting`/`Active`): every
    /// write of a state word is made under its pair's shard lock, read or
    /// write, so the write lock excludes every other writer and nothing
    /// can come between the load and the store — a compare-and-swap would
    /// only pay for a race that cannot happen. The store is the
    /// linearization point. `Acquire`/`Release` like every other access to
    /// the word (so a reader needs no argument about the lock to trust
    /// what it loads); on x86 both are plain moves.
    fn transition_exclusive(&self, f: impl FnOnce(&State) -> Option<State>) -> Option<State> {
        let next = f(&self.state())?.pack();
        self.word.store(next, Ordering::Release);
        Some(State::unpack(next))
    }
}

// The steps of an arc's life, as pure functions of its state; each is
// `None` where it does not apply. The `Cell` methods above install them.
impl State {
    /// A `progress`: one more event, the phase, the last-progress time;
    /// `Completed` ends the arc. Only from `Active`.
    #[inline]
    fn progressed(&self, phase: ArcPhase, delta_ms: u64) -> Option<State> {
        (self.life == Life::Active).then_some(State {
            life: if phase == ArcPhase::Completed {
                Life::Ended
            } else {
                Life::Active
            },
            phase,
            events: (self.events + 1).min(MAX_EVENTS),
            delta_ms,
        })
    }

    /// `Active → Ended`: what `end`, expiry and their racers contend for.
    #[inline]
    fn ended(&self) -> Option<State> {
        self.moved(Life::Active, Life::Ended)
    }

    /// `Starting → Active`: a start hook succeeded.
    #[inline]
    fn published(&self) -> Option<State> {
        self.moved(Life::Starting, Life::Active)
    }

    /// `Starting → Aborted`: a start hook failed.
    #[inline]
    fn aborted(&self) -> Option<State> {
        self.moved(Life::Starting, Life::Aborted)
    }

    #[inline]
    fn moved(&self, from: Life, to: Life) -> Option<State> {
        (self.life == from).then_some(State { life: to, ..*self })
    }
}

/// At most one active arc per unordered agent pair, lock-free.
///
/// See the [module documentation](self) for the protocols. `A` is the
/// agent id, `K` the arc kind.
///
/// ```
/// use raceless::arcs::{ArcEngine, ArcKind, Start};
/// # use std::time::Duration;
/// # #[derive(Clone, Debug, PartialEq)] struct K;
/// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(1) } }
/// let engine = ArcEngine::<String, K>::new();
/// let first = engine.start("a".into(), "b".into(), K).unwrap();
/// let again = engine.start("b".into(), "a".into(), K).unwrap();
/// assert!(first.is_started() && !again.is_started());
/// assert_eq!(first.into_inner(), again.into_inner());
/// ```
pub struct ArcEngine<A, K> {
    map: ShardedMap<(A, A), Slot<A, K>>,
    /// Pairs that starts found taken, for a lock-free taken-pair check.
    hot: HotArcs<A, K>,
    /// Cells still `Starting` (their start hook is running), so that
    /// [`len`](Self::len) can be the map's own count minus these. Only a
    /// start with a hook touches it: the hook-less path keeps no shared
    /// counter. It moves under the pair's shard lock, with the cell's
    /// insertion, publication or unlink. `Relaxed`: it publishes no data,
    /// and `len` is a sum over shards taken one at a time anyway.
    starting: AtomicUsize,
    clock: SharedClock,
    start_hook: Option<StartHook<A, K>>,
    process_hook: Option<ProcessHook<A, K>>,
    events: EventSink<A, K>,
}

impl<A, K> fmt::Debug for ArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArcEngine")
            .field("active", &self.len())
            .finish_non_exhaustive()
    }
}

impl<A, K> Default for ArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn default() -> Self {
        Self::new()
    }
}

/// What the claiming `entry` call decided.
enum Decision<A, K> {
    /// We took the pair: the new arc's state and token, and the dead cell
    /// we displaced, if any, to be dropped outside the lock.
    Ours {
        snapshot: ArcSnapshot<A, K>,
        token: u64,
        dead: Option<Slot<A, K>>,
    },
    /// A live (starting or active) arc holds the pair; its state then,
    /// with its last-progress time still to be set: the start time plus
    /// `delta_ms` (the time arithmetic is done after the lock).
    Taken {
        snapshot: ArcSnapshot<A, K>,
        delta_ms: u64,
        unused: K,
        /// The pair's cell, if shared, to put into the hot-pair cache.
        hot: Option<Arc<HotArc<A, K>>>,
        /// The by-value cell that the shared one replaced in the map
        /// (dropped after the lock).
        replaced: Option<Slot<A, K>>,
    },
}

impl<A, K> ArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    /// An engine with the system clock and no hooks.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// assert!(ArcEngine::<u64, K>::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder (clock, start hook, process hook).
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u64, K>::builder().clock(raceless::clock::ManualClock::new()).build();
    /// # let _ = engine;
    /// ```
    pub fn builder() -> ArcEngineBuilder<A, K> {
        ArcEngineBuilder::new()
    }

    fn with_builder(b: ArcEngineBuilder<A, K>) -> Self {
        Self {
            map: ShardedMap::new(),
            hot: HotArcs::new(),
            starting: AtomicUsize::new(0),
            clock: b.clock,
            start_hook: b.start_hook,
            process_hook: b.process_hook,
            events: EventSink::new(),
        }
    }

    /// Starts an arc of `kind` between `a` and `b` (in either order) unless
    /// the pair already has one. Exactly one of any number of concurrent
    /// starts of a pair returns [`Start::Started`]; the others get
    /// [`Start::AlreadyActive`] with the winner's arc, which is never
    /// overwritten. With a start hook, concurrent starters during the hook
    /// get `AlreadyActive` with the pending arc (see the module docs).
    ///
    /// # Errors
    /// [`ArcError::SamePair`] if `a == b`; [`ArcError::Hook`] if the start
    /// hook failed (the pair is free again).
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, ArcError, Start};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// assert!(engine.start(1, 2, K).unwrap().is_started());
    /// assert!(!engine.start(2, 1, K).unwrap().is_started());
    /// assert!(matches!(engine.start(3, 3, K), Err(ArcError::SamePair)));
    /// ```
    pub fn start(&self, a: A, b: A, kind: K) -> Result<Start<ArcSnapshot<A, K>>, ArcError> {
        let pending = self.start_hook.is_some();
        let (snapshot, token) = match self.claim_slot(a, b, kind, pending)? {
            Ok(ours) => ours,
            Err(taken) => return Ok(Start::AlreadyActive(taken)),
        };
        if pending {
            // With a start hook, `start` is `claim` + `publish` on the
            // borrowed engine: the same two steps a `Claim` makes.
            self.publish_claim(&snapshot, token)?;
        } else {
            tracing::debug!("arc started");
            self.events.emit(|| ArcEvent::Started(snapshot.clone()));
        }
        Ok(Start::Started(snapshot))
    }

    /// Claims the pair for a two-phase start: the arc is reserved
    /// (`Starting`) but not yet visible; the caller does its own work — an
    /// `async` database insert, say — and then
    /// [`publish`es](Claim::publish) the claim, or drops it to give the pair
    /// back. Concurrent starts and claims of the pair meanwhile get
    /// `AlreadyActive` with the claimed arc's snapshot, exactly as during a
    /// synchronous start hook (see the module docs); `status`, `active`,
    /// `len`, `progress`, `end` and `process_all` do not see it until it is
    /// published.
    ///
    /// The [`Claim`] holds an `Arc` of the engine, so it is `Send + 'static`
    /// and can be held across `.await`s or moved into a spawned task.
    /// Progress: one shard-locked map operation (no user code in it).
    ///
    /// # Errors
    /// [`ArcError::SamePair`] if `a == b`.
    ///
    /// ```
    /// use raceless::arcs::{ArcEngine, ArcKind, Claimed};
    /// use std::sync::Arc;
    /// # #[derive(Clone, Debug, PartialEq)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = Arc::new(ArcEngine::<u8, K>::new());
    /// let Ok(Claimed::Claim(claim)) = engine.claim(1, 2, K) else { unreachable!() };
    /// // Taken while claimed, but not active yet.
    /// assert!(matches!(engine.claim(2, 1, K), Ok(Claimed::AlreadyActive(_))));
    /// assert!(engine.status(&1, &2).is_none());
    /// // ... await the database insert here ...
    /// let arc = claim.publish().unwrap();
    /// assert_eq!(engine.status(&1, &2), Some(arc));
    /// ```
    pub fn claim(
        self: &std::sync::Arc<Self>,
        a: A,
        b: A,
        kind: K,
    ) -> Result<Claimed<A, K>, ArcError> {
        Ok(match self.claim_slot(a, b, kind, true)? {
            Ok((snapshot, token)) => Claimed::Claim(Claim::new(
                std::sync::Arc::clone(self) as std::sync::Arc<dyn ClaimTarget<A, K>>,
                snapshot,
                token,
            )),
            Err(taken) => Claimed::AlreadyActive(taken),
        })
    }

    /// Step 2 of the start protocol: claims the pair with a new cell,
    /// `Starting` if `pending` (a start hook or a [`Claim`] will publish
    /// it), else `Active`. `Ok(Ok((snapshot, token)))` if we took it,
    /// `Ok(Err(snapshot))` with the live arc that holds it otherwise.
    #[inline]
    #[allow(clippy::type_complexity)]
    fn claim_slot(
        &self,
        a: A,
        b: A,
        kind: K,
        pending: bool,
    ) -> Result<Result<(ArcSnapshot<A, K>, u64), ArcSnapshot<A, K>>, ArcError> {
        let key = pair_key(&a, &b)?;
        // A hot pair's arc is found without the shard lock.
        if let Some(taken) = self.hot.taken(&key) {
            return Ok(Err(taken));
        }
        let initial = State {
            life: if pending {
                Life::Starting
            } else {
                Life::Active
            },
            phase: ArcPhase::Initiation,
            events: 0,
            delta_ms: 0,
        };
        // A new cell, built only once the pair is known to be free, so a
        // start of a taken pair reads no clock and draws no token.
        let fresh = |agents: &(A, A), kind: K| {
            let cell = Cell {
                token: next_token(),
                kind,
                started_at: self.clock.now(),
                started_mono: self.clock.monotonic(),
                word: AtomicU64::new(initial.pack()),
            };
            (cell.snapshot_with(agents, &initial, cell.started_at), cell)
        };
        // Linearization point of the start: the claim under the shard lock,
        // one map operation whether the pair is free or taken. The closure
        // runs our code, the clock, and the data's own trait impls (`Clone`
        // of the agents and the kind for the snapshot, as the map runs
        // their `Eq`), never a hook or a listener. A placeholder is counted
        // in `starting` under the shard lock. A displaced cell and an
        // unused kind are handed out of the closure, so that no drop of user
        // data happens under the shard lock.
        let decision = self.map.entry(
            key,
            #[inline(always)]
            |e| {
                let (snapshot, token, dead) = match e {
                    Entry::Vacant(v) => {
                        let (snapshot, cell) = fresh(v.key(), kind);
                        let token = cell.token;
                        v.insert(Slot::Inline(cell));
                        (snapshot, token, None)
                    }
                    Entry::Occupied(mut o) => {
                        let state = o.get().state();
                        if state.life.is_live() {
                            let cell = o.get();
                            let snapshot = cell.snapshot_with(o.key(), &state, cell.started_at);
                            let (hot, replaced) = match o.get() {
                                Slot::Shared(hot) => (Some(Arc::clone(hot)), None),
                                Slot::Inline(cell) => {
                                    let hot = Arc::new(HotArc {
                                        agents: o.key().clone(),
                                        cell: cell.copied(),
                                    });
                                    let inline = o.insert(Slot::Shared(Arc::clone(&hot)));
                                    (Some(hot), Some(inline))
                                }
                            };
                            return Decision::Taken {
                                snapshot,
                                delta_ms: state.delta_ms,
                                unused: kind,
                                hot,
                                replaced,
                            };
                        }
                        // Not reached: every move out of `Starting`/`Active`
                        // (end, expiry, completion, rollback) happens inside
                        // the `remove_if` that unlinks the cell. A dead cell
                        // would simply be replaced.
                        let (snapshot, cell) = fresh(o.key(), kind);
                        let token = cell.token;
                        (snapshot, token, Some(o.insert(Slot::Inline(cell))))
                    }
                };
                if pending {
                    self.starting.fetch_add(1, Ordering::Relaxed);
                }
                Decision::Ours {
                    snapshot,
                    token,
                    dead,
                }
            },
        );
        Ok(match decision {
            Decision::Taken {
                mut snapshot,
                delta_ms,
                unused,
                hot,
                replaced,
            } => {
                drop((unused, replaced));
                if let Some(hot) = hot {
                    self.hot.remember(hot);
                }
                snapshot.last_progress = last_progress(snapshot.started_at, delta_ms);
                Err(snapshot)
            }
            Decision::Ours {
                snapshot,
                token,
                dead,
            } => {
                drop(dead);
                Ok((snapshot, token))
            }
        })
    }

    /// Step 4 of the start protocol, for a start hook and for
    /// [`Claim::publish`] alike: runs the start hook (if any) with no guard
    /// held, then publishes the claimed cell (`Starting → Active`, a
    /// compare-and-swap under the shard read lock) and tells the listeners
    /// `Started` — or, if the hook failed, rolls the claim back and returns
    /// [`ArcError::Hook`].
    fn publish_claim(&self, snapshot: &ArcSnapshot<A, K>, token: u64) -> Result<(), ArcError> {
        let agents = &snapshot.agents;
        if let Some(hook) = &self.start_hook {
            // The hook runs with no guard held; the placeholder keeps the
            // pair claimed meanwhile. Only the claim's owner moves its cell
            // out of `Starting`, and nobody else removes or replaces a
            // `Starting` cell, so it is still ours below (the token check
            // is the belt to that brace).
            if let Err(e) = run_start_hook(hook, &agents.0, &agents.1, &snapshot.kind) {
                self.rollback_claim(agents, token);
                tracing::warn!(error = %e, "arc start hook failed; start rolled back");
                return Err(ArcError::Hook(e));
            }
        }
        self.map.read(agents, |cell| {
            if cell.token == token && cell.transition(State::published).is_some() {
                self.starting.fetch_sub(1, Ordering::Relaxed);
            }
        });
        tracing::debug!("arc started");
        self.events.emit(|| ArcEvent::Started(snapshot.clone()));
        Ok(())
    }

    /// Rolls a claim back: `Starting → Aborted` and the unlink, in one map
    /// operation (`starting -= 1` there). The pair is free again.
    fn rollback_claim(&self, agents: &(A, A), token: u64) {
        self.unlink_if(agents, Some(token), |_, s| s.aborted());
    }

    /// Records one event of the pair's arc: atomically bumps its event
    /// count, sets its last-progress time to now and its phase to `phase`.
    /// Moving to [`ArcPhase::Completed`] ends the arc
    /// ([`EndReason::Completed`]; listeners get `Progressed`, then `Ended`).
    /// Returns the arc's state right after.
    ///
    /// # Errors
    /// [`ArcError::NotFound`] if the pair has no published active arc;
    /// [`ArcError::SamePair`] if `a == b`.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, ArcPhase};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// engine.start(1, 2, K).unwrap();
    /// assert_eq!(engine.progress(&2, &1, ArcPhase::Climax).unwrap().events_triggered, 1);
    /// assert_eq!(engine.progress(&1, &2, ArcPhase::Completed).unwrap().phase, ArcPhase::Completed);
    /// assert!(engine.status(&1, &2).is_none());
    /// ```
    pub fn progress(&self, a: &A, b: &A, phase: ArcPhase) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = pair_key(a, b)?;
        self.progress_arc(&key, None, phase)
    }

    /// Progresses the arc of `agents` — with `token`, only if the pair
    /// still holds that very arc.
    fn progress_arc(
        &self,
        agents: &(A, A),
        token: Option<u64>,
        phase: ArcPhase,
    ) -> Result<ArcSnapshot<A, K>, ArcError> {
        // Ages run on monotonic time: the last-progress time is the start's
        // wall-clock time plus the monotonic time elapsed since.
        let now = self.clock.monotonic();
        if phase == ArcPhase::Completed {
            // Completing ends the arc: the move
            // `Active → Ended(Completed)` and the unlink are one map
            // operation, as for `end`.
            let snapshot = self
                .unlink_if(agents, token, |cell, s| {
                    s.progressed(phase, cell.delta_ms(now))
                })
                .ok_or(ArcError::NotFound)?;
            self.events.emit(|| ArcEvent::Progressed(snapshot.clone()));
            tracing::debug!("arc completed");
            self.events
                .emit(|| ArcEvent::Ended(snapshot.clone(), EndReason::Completed));
            return Ok(snapshot);
        }
        // Under the shard read lock: the compare-and-swap (the
        // linearization point) and the snapshot.
        let snapshot = self
            .map
            .read(
                agents,
                #[inline(always)]
                |cell| {
                    if !cell.is(token) {
                        return None;
                    }
                    let delta_ms = cell.delta_ms(now);
                    let next = cell.transition(|s| s.progressed(phase, delta_ms))?;
                    Some(cell.snapshot_of(agents, &next))
                },
            )
            .flatten()
            .ok_or(ArcError::NotFound)?;
        self.events.emit(|| ArcEvent::Progressed(snapshot.clone()));
        Ok(snapshot)
    }

    /// Every move out of `Starting`/`Active` (end, expiry, completion,
    /// rollback): under the shard write lock, applies `step` to the arc of
    /// `agents` (with `token`, only to that very arc) and, if it applied,
    /// unlinks the cell (and counts a rolled-back one out of `starting`),
    /// all in one map operation; only our code runs there. The snapshot of
    /// the state it installed, taken after the lock, where the cell is
    /// dropped.
    fn unlink_if(
        &self,
        agents: &(A, A),
        token: Option<u64>,
        step: impl FnOnce(&Cell<K>, &State) -> Option<State>,
    ) -> Option<ArcSnapshot<A, K>> {
        let mut last = None;
        let (agents, cell) = self.map.remove_if(
            agents,
            #[inline(always)]
            |_, cell| {
                if cell.is(token) {
                    last = cell.transition_exclusive(|s| step(cell, s));
                }
                if matches!(last, Some(s) if s.life == Life::Aborted) {
                    self.starting.fetch_sub(1, Ordering::Relaxed);
                }
                last.is_some()
            },
        )?;
        Some(cell.snapshot_of(&agents, &last?))
    }

    /// Ends the arc of `agents` — with `token`, only if the pair still
    /// holds that very arc: the move `Active → Ended` (the linearization
    /// point) in [`unlink_if`](Self::unlink_if). `None` if
    /// there is no such active arc (another transition ended it first).
    fn end_arc(
        &self,
        agents: &(A, A),
        token: Option<u64>,
        reason: EndReason,
    ) -> Option<ArcSnapshot<A, K>> {
        let snapshot = self.unlink_if(agents, token, |_, s| s.ended())?;
        // Log and tell the listeners outside every guard.
        tracing::debug!(?reason, "arc ended");
        self.events
            .emit(|| ArcEvent::Ended(snapshot.clone(), reason));
        Some(snapshot)
    }

    /// Ends the pair's arc. Exactly one of any number of concurrent `end`s
    /// (and expiries, and completions) wins; the others get
    /// [`ArcError::NotFound`]. Returns the arc's final state.
    ///
    /// # Errors
    /// [`ArcError::NotFound`] if the pair has no published active arc;
    /// [`ArcError::SamePair`] if `a == b`.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, ArcError, EndReason};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// engine.start(1, 2, K).unwrap();
    /// assert!(engine.end(&1, &2, EndReason::Manual).is_ok());
    /// assert!(matches!(engine.end(&2, &1, EndReason::Manual), Err(ArcError::NotFound)));
    /// ```
    pub fn end(&self, a: &A, b: &A, reason: EndReason) -> Result<ArcSnapshot<A, K>, ArcError> {
        let key = pair_key(a, b)?;
        self.end_arc(&key, None, reason).ok_or(ArcError::NotFound)
    }

    /// The pair's published, active arc (`None` for `a == b`).
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// assert!(engine.status(&1, &2).is_none());
    /// engine.start(1, 2, K).unwrap();
    /// assert_eq!(engine.status(&2, &1).unwrap().agents, (1, 2));
    /// ```
    pub fn status(&self, a: &A, b: &A) -> Option<ArcSnapshot<A, K>> {
        let key = pair_key(a, b).ok()?;
        self.map
            .read(
                &key,
                #[inline(always)]
                |cell| {
                    let state = cell.active_state()?;
                    Some(cell.snapshot_of(&key, &state))
                },
            )
            .flatten()
    }

    /// Every published, active arc, each snapshot consistent on its own
    /// (the map is read shard by shard; never fails under concurrent
    /// mutation).
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// engine.start(1, 2, K).unwrap();
    /// engine.start(3, 4, K).unwrap();
    /// assert_eq!(engine.active().len(), 2);
    /// ```
    pub fn active(&self) -> Vec<ArcSnapshot<A, K>> {
        self.arcs()
            .into_iter()
            .map(|(_, _, snapshot)| snapshot)
            .collect()
    }

    /// Every published, active arc with its token and monotonic start,
    /// read shard by shard: each snapshot is taken under its shard's read
    /// lock (our code and the data's `Clone`); everything else happens
    /// after.
    fn arcs(&self) -> Vec<(u64, Duration, ArcSnapshot<A, K>)> {
        let mut arcs = Vec::with_capacity(self.map.len());
        self.map.for_each(|agents, cell| {
            if let Some(state) = cell.active_state() {
                arcs.push((
                    cell.token,
                    cell.started_mono,
                    cell.snapshot_of(agents, &state),
                ));
            }
        });
        arcs
    }

    /// How many arcs are published and active: the map's own count (it
    /// holds only live cells) minus the cells whose start hook is still
    /// running. Like `DashMap::len`, it visits the shards one at a time
    /// (a metrics call, not a hot-path one): exact whenever no start or
    /// end is in flight; meanwhile it may count or miss an arc that is
    /// finishing its start or its end, but it counts each pair at most
    /// once, so it never exceeds the number of pairs that hold an arc.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// engine.start(1, 2, K).unwrap();
    /// assert_eq!(engine.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.map
            .len()
            .saturating_sub(self.starting.load(Ordering::Relaxed))
    }

    /// How many arcs are claimed and not yet published: live [`Claim`]s
    /// and starts whose hook is running. With [`len`](Self::len), this is
    /// everything the engine keeps (each a cell in the map), so both are
    /// 0 once every arc ended and every claim was published or dropped.
    /// Like `len`, exact whenever no start or end is in flight.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = std::sync::Arc::new(ArcEngine::<u8, K>::new());
    /// let claim = engine.claim(1, 2, K).unwrap();
    /// assert_eq!((engine.len(), engine.pending()), (0, 1));
    /// drop(claim);
    /// assert_eq!((engine.len(), engine.pending()), (0, 0));
    /// ```
    pub fn pending(&self) -> usize {
        self.starting.load(Ordering::Relaxed)
    }

    /// Whether no arc is active.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// assert!(ArcEngine::<u8, K>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a listener for [`ArcEvent`]s. It is called once per event,
    /// after the change is visible, with no internal guard held (it may
    /// call the engine); a panic in it is caught and logged.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind, ArcEvent};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// let id = engine.on_event(|e| if let ArcEvent::Started(arc) = e { println!("{:?}", arc.agents) });
    /// assert!(engine.remove_listener(id));
    /// ```
    pub fn on_event(
        &self,
        listener: impl Fn(&ArcEvent<A, K>) + Send + Sync + 'static,
    ) -> ListenerId {
        self.events.add(listener)
    }

    /// Removes a listener; `false` if it was not registered.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> std::time::Duration { Default::default() } }
    /// let engine = ArcEngine::<u8, K>::new();
    /// let id = engine.on_event(|_| {});
    /// assert!(engine.remove_listener(id));
    /// assert!(!engine.remove_listener(id));
    /// ```
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.events.remove(id)
    }

    /// The periodic sweep, timed by the engine's clock. Walks a snapshot of
    /// the arcs: each active arc past twice its kind's expected duration is
    /// ended with [`EndReason::Expired`] (exactly once, even racing
    /// [`end`](Self::end): both make the same move out of `Active`, in the
    /// map operation that unlinks the arc);
    /// the process hook, if any, is asked about each other active arc and
    /// its answer applied with [`progress`](Self::progress) semantics to
    /// that very arc.
    ///
    /// ```
    /// # use raceless::arcs::{ArcEngine, ArcKind};
    /// # use std::time::Duration;
    /// # #[derive(Clone)] struct K;
    /// # impl ArcKind for K { fn expected_duration(&self) -> Duration { Duration::from_secs(60) } }
    /// use raceless::clock::ManualClock;
    /// let clock = ManualClock::new();
    /// let engine = ArcEngine::<u8, K>::builder().clock(clock.clone()).build();
    /// engine.start(1, 2, K).unwrap();
    /// clock.advance(Duration::from_secs(121));
    /// let report = engine.process_all();
    /// assert_eq!((report.processed, report.expired), (1, 1));
    /// assert!(engine.is_empty());
    /// ```
    pub fn process_all(&self) -> ProcessReport {
        let now = self.clock.monotonic();
        let mut report = ProcessReport::default();
        for (token, started, snapshot) in self.arcs() {
            report.processed += 1;
            if is_expired(&snapshot.kind, started, now) {
                if self
                    .end_arc(&snapshot.agents, Some(token), EndReason::Expired)
                    .is_some()
                {
                    report.expired += 1;
                }
                continue;
            }
            if let Some(hook) = &self.process_hook {
                if let Some(phase) = run_process_hook(hook, &snapshot) {
                    if self
                        .progress_arc(&snapshot.agents, Some(token), phase)
                        .is_ok()
                    {
                        report.progressed += 1;
                        if phase == ArcPhase::Completed {
                            report.completed += 1;
                        }
                    }
                }
            }
        }
        report
    }
}

impl<A, K> ClaimTarget<A, K> for ArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn publish_claimed(&self, snapshot: &ArcSnapshot<A, K>, token: u64) -> Result<(), ArcError> {
        self.publish_claim(snapshot, token)
    }
    fn rollback_claimed(&self, agents: &(A, A), token: u64) {
        self.rollback_claim(agents, token);
    }
}

impl<A, K> ArcRegistry<A, K> for ArcEngine<A, K>
where
    A: Eq + Hash + Ord + Clone + Send + Sync + 'static,
    K: ArcKind,
{
    fn from_builder(builder: ArcEngineBuilder<A, K>) -> Self {
        Self::with_builder(builder)
    }
    fn start(&self, a: A, b: A, kind: K) -> Result<Start<ArcSnapshot<A, K>>, ArcError> {
        ArcEngine::start(self, a, b, kind)
    }
    fn claim(self: &std::sync::Arc<Self>, a: A, b: A, kind: K) -> Result<Claimed<A, K>, ArcError> {
        ArcEngine::claim(self, a, b, kind)
    }
    fn progress(&self, a: &A, b: &A, phase: ArcPhase) -> Result<ArcSnapshot<A, K>, ArcError> {
        ArcEngine::progress(self, a, b, phase)
    }
    fn end(&self, a: &A, b: &A, reason: EndReason) -> Result<ArcSnapshot<A, K>, ArcError> {
        ArcEngine::end(self, a, b, reason)
    }
    fn status(&self, a: &A, b: &A) -> Option<ArcSnapshot<A, K>> {
        ArcEngine::status(self, a, b)
    }
    fn active(&self) -> Vec<ArcSnapshot<A, K>> {
        ArcEngine::active(self)
    }
    fn len(&self) -> usize {
        ArcEngine::len(self)
    }
    fn pending(&self) -> usize {
        ArcEngine::pending(self)
    }
    fn on_event<F>(&self, listener: F) -> ListenerId
    where
        F: Fn(&ArcEvent<A, K>) + Send + Sync + 'static,
    {
        ArcEngine::on_event(self, listener)
    }
    fn remove_listener(&self, id: ListenerId) -> bool {
        ArcEngine::remove_listener(self, id)
    }
    fn process_all(&self) -> ProcessReport {
        ArcEngine::process_all(self)
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips_and_saturates() {
        let lives = [Life::Starting, Life::Active, Life::Ended, Life::Aborted];
        let phases = [
            ArcPhase::Initiation,
            ArcPhase::Escalation,
            ArcPhase::Climax,
            ArcPhase::Resolution,
            ArcPhase::Completed,
        ];
        for life in lives {
            for phase in phases {
                for (events, delta_ms) in [
                    (0, 0),
                    (1, 1),
                    (MAX_EVENTS, MAX_DELTA_MS),
                    (12_345, 86_400_000),
                ] {
                    let s = State {
                        life,
                        phase,
                        events,
                        delta_ms,
                    };
                    assert_eq!(State::unpack(s.pack()), s);
                }
                let s = State {
                    life,
                    phase,
                    events: u64::MAX,
                    delta_ms: u64::MAX,
                };
                let back = State::unpack(s.pack());
                assert_eq!((back.life, back.phase), (life, phase));
                assert_eq!((back.events, back.delta_ms), (MAX_EVENTS, MAX_DELTA_MS));
            }
        }
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        #[derive(Clone)]
        struct K;
        impl ArcKind for K {
            fn expected_duration(&self) -> Duration {
                Duration::ZERO
            }
        }
        check::<ArcEngine<String, K>>();
        #[cfg(feature = "baselines")]
        check::<crate::baseline::MutexArcEngine<String, K>>();
    }

    #[test]
    fn last_progress_is_kept_to_the_millisecond() {
        #[derive(Clone)]
        struct K;
        impl ArcKind for K {
            fn expected_duration(&self) -> Duration {
                Duration::from_secs(60)
            }
        }
        let clock = crate::clock::ManualClock::new();
        let engine = ArcEngine::<u8, K>::builder().clock(clock.clone()).build();
        let start = engine.start(1, 2, K).unwrap().into_inner().started_at;
        clock.advance(Duration::from_micros(2_500));
        let arc = engine.progress(&1, &2, ArcPhase::Climax).unwrap();
        assert_eq!(arc.last_progress, start + Duration::from_millis(2));
        // Ages run on monotonic time: a wall-clock step back does not move
        // the last-progress time (the start's wall time + monotonic age).
        clock.set(start - Duration::from_secs(5));
        let arc = engine.progress(&1, &2, ArcPhase::Climax).unwrap();
        assert_eq!(arc.last_progress, start + Duration::from_millis(2));
    }
}
