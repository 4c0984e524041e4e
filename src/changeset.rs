//! `changeset` — changes recorded into the latest open changeset (seed:
//! cleveragents #7120).
//!
//! A [`ChangesetLog`] belongs to one plan execution. [`start_changeset`]
//! opens a new changeset on top of the open ones; [`record_change`] appends
//! an entry to the most recently started changeset that is still open;
//! [`seal`] closes one; [`changes`] reads any changeset (open or sealed) by
//! id; [`active`] lists the open ones, newest first.
//!
//! The seed read "the latest id" and appended to it in a second step, so a
//! change could land in a changeset that was no longer the latest (or no
//! longer open), and an empty list could raise `IndexError` between the
//! check and the read. Here every operation is a single linearizable step:
//! no entry is lost, duplicated, or recorded into a changeset after its
//! `seal` returned. Recording is lock-free; `start_changeset`, `seal`,
//! `take` and the first `changes` of a changeset also take a shard lock of
//! the id map (a short critical section with no user code); later reads of
//! a sealed changeset come from a lock-free read cache.
//!
//! ```
//! use raceless::changeset::{ChangesetError, ChangesetLog};
//!
//! let log = ChangesetLog::new();
//! assert_eq!(log.record_change("x"), Err(ChangesetError::NoActiveChangeset));
//! let a = log.start_changeset();
//! let b = log.start_changeset();
//! assert_eq!(log.record_change("into b"), Ok(b));
//! log.seal(b).unwrap();
//! assert_eq!(log.record_change("into a"), Ok(a));
//! assert_eq!(log.changes(b), Some(vec!["into b"]));
//! assert_eq!(log.active(), vec![a]);
//! ```
//!
//! # The protocol
//!
//! (Also in `docs/changeset.md`.)
//!
//! **Structure.** The open changesets form an RCU *root* (`ArcSwap<Root>`):
//! an immutable `Vec` of open changesets, oldest first, with a *version*
//! bumped by every change. `start_changeset` and `seal` are *transitions*:
//! they compute a new root and install it with one compare-and-swap. Every
//! changeset (open or sealed) is also kept by id in a [`ShardedMap`] so that
//! the apply phase can read it after sealing.
//!
//! Each changeset's entries live in `S` cache-padded *stripes* (a power of
//! two, by default a few per CPU); a recording thread always uses the same
//! stripe (a thread-local hint), so concurrent recorders touch different
//! cache lines. A stripe has one 64-bit *word* `(version: u32, count: u32)`
//! geometrically growing chunks of slots, and its entries in a
//! `boxcar::Vec<C>` (append-only; a push publishes its value with a release
//! store). A slot is one atomic state: `EMPTY`, then `WRITTEN(j)` (its entry
//! is `values[j]` of the stripe) or `CANCELLED`; the first slot of every
//! reservation also carries a `START` flag.
//!
//! **record_change.** Load the root (version `v`, top `T`); in `T`'s stripe,
//! mark slot `n` `START` (a compare-and-swap `EMPTY → START`: `n` is the
//! first slot of whichever reservation moves the count past it), then
//! compare-and-swap the word from `(w, n)` to `(v, n + k)` provided `w` is
//! not newer than `v` — this reserves slots `n..n + k` (`k` = 32, or
//! twice the thread's previous reservation if it used that one up, at
//! most 256: a thread's *lease*: its next records use the rest without
//! touching the root or the word); push the entry into the stripe's `values` (index
//! `j`); then *commit*: compare-and-swap slot `n`'s state
//! `EMPTY → WRITTEN(j)` (keeping `START`). A lease's slots are committed
//! by its holder alone, in order, and the lease ends at its first failed
//! commit. If the word is
//! newer than `v` (our root is stale) or the commit finds the slot
//! `CANCELLED`, drop the lease and retry from a fresh root with the same
//! entry. No top: `Err(NoActiveChangeset)`. Leased slots never used stay
//! `EMPTY` until a close cancels them; readers skip them.
//!
//! **Transitions.** A transition that does not change the top (sealing a
//! changeset below it) just swaps the root `v → v + 1`. One that changes the
//! top (`start` always, once something is open; `seal` of the top) swaps in
//! a *pending* root first: version `v + 1`, still the old open list, and the
//! root to install next. Whoever loads a pending root — the transition
//! itself, a recorder, another transition — *helps*: it *closes* the old top
//! `T` for `v + 1` — on every stripe it raises the word's version to at
//! least `v + 1`, so no recorder holding a root `≤ v` can reserve in `T`
//! again, and reads the count `n`; then it cancels, in every lease below
//! `n`, the first slot that is still `EMPTY` (reserved, not committed) and
//! skips the rest of that lease up to the next `START`: its holder stops
//! at that slot, so nothing after it is ever committed. The scan starts
//! at the stripe's `settled` hint (every slot below it is known to be
//! final: raised by closes, and by a recorder whose lease right above it
//! is used up, each slot of it committed) — and finally swaps the pending
//! root for its successor. Closing is idempotent, so helpers may overlap; no
//! thread ever waits for the one that started the transition.
//!
//! **Linearization points.**
//! - `start_changeset`, `seal` (when it removes the changeset): the
//!   compare-and-swap that installs the new (non-pending) root.
//! - `record_change` returning `Ok(id)`: the commit compare-and-swap. *Claim:*
//!   at that instant `id` is still the latest open changeset. Suppose the
//!   top changed before the commit, and take the first top-changing
//!   transition after the recorder's root load: it starts from a root `u ≥ v`
//!   whose top is `T`, and a helper closed `T`'s stripe for `u + 1` before
//!   the final root swap. If the close came first in the word's
//!   modification order, our reservation would have read a version newer
//!   than `v` and failed; so our reservation came first, the close read a
//!   count above our slot, and its scan met our slot before the root swap:
//!   it either cancelled it (our commit fails), found it `WRITTEN` (our
//!   commit came first), or skipped it because an earlier slot of our
//!   lease was `CANCELLED` (our commit of that slot failed, so we never
//!   commit this one; the scan resumes at the next `START`, which it sees:
//!   the mark is set before the reservation that counts it). Either way,
//!   contradiction.
//! - `record_change` returning `Err(NoActiveChangeset)`: the root load that
//!   saw no open changeset.
//! - `active`: the root load. `changes` of a sealed changeset: any point
//!   after the seal (the contents are final: every slot below every
//!   stripe's final count is `WRITTEN` or `CANCELLED` before the seal's root
//!   swap, and no reservation can succeed after the close). The first
//!   `changes` that sees `sealed` and then a root without the changeset
//!   keeps a copy of those final contents (`frozen`) and puts the changeset
//!   into the log's *read cache* (64 `ArcSwapOption` slots, direct-mapped by
//!   id); later reads load that slot (arc-swap records the borrow in the
//!   reading thread's own slot: no lock word, no reference count, no store
//!   to a line other readers share) and clone the frozen copy. Why that
//!   test suffices:
//!   `sealed` is only set by a seal that found the changeset in a root, so
//!   a root loaded after it (acquire) that lacks it is one its removal
//!   installed or a later one; a top is only removed by the swap that
//!   follows its close, and a changeset below the top was closed when it
//!   stopped being the top.
//! - `take`: the compare-and-swap `false → true` of the changeset's `taken`
//!   flag (exactly one of concurrent takes wins it); it then leaves the id
//!   map and the read cache. Every reader that still finds it (a map lookup
//!   or a cache hit) loads `taken` (acquire) and answers as for an unknown
//!   id, as do `seal` and `is_open`.
//! - `changes` of an open changeset is *not* an atomic snapshot: it returns
//!   every entry committed before the call began, plus possibly some
//!   committed during it.
//!
//! **Orderings.**
//! - Root: arc-swap's loads and compare-and-swaps (acquire/release and
//!   stronger), so a recorder sees the changesets a root points to, and a
//!   helper's close happens before the root swap that follows it.
//! - Stripe word: the proof only uses the modification order of this single
//!   location (every update is a read-modify-write, and versions only grow),
//!   except for the `START` marks: the reservation is a `Release`
//!   compare-and-swap after its `Relaxed` mark of slot `n`, and the close's
//!   update (`AcqRel`; or its `Acquire` load when another helper closed
//!   first: every later update is a read-modify-write, so it continues
//!   the reservation's release sequence) reads a count past `n`, so its
//!   scan finds the mark.
//! - Slot commit: `Release` (success); the push of the entry is sequenced
//!   before it, so whoever reads `WRITTEN(j)` with `Acquire` finds
//!   `values[j]` published (boxcar's own acquire load of the entry's flag
//!   agrees). The cancel scan reads the state with `Acquire`, so a commit it
//!   observes happens before its root swap, and so before any reader that
//!   loads the new root.
//! - `settled`: raised with `fetch_max(Release)` by a close after its scan
//!   and by a recorder after the last commit of its used-up lease (both
//!   sequenced after the slots they claim became final); a close loads it
//!   `Acquire` before its scan, so it happens after those commits. The
//!   recorder's check of the old value is `Relaxed`: the hint only grows,
//!   and any value is already such a claim.
//! - Readers load the word count and each state with `Acquire`.
//! - `taken`: set by a `AcqRel` compare-and-swap, loaded `Acquire` by
//!   every reader that found the changeset; a reader that loads `false`
//!   linearizes before the take (the contents it returns are final).
//! - Read cache: arc-swap's loads and stores (a cache hit sees the
//!   changeset's frozen copy: the store that installed it follows the
//!   `frozen` set in program order). A reader that installs a changeset
//!   loads `taken` after its store and clears the slot if it was taken
//!   meanwhile, so a taken changeset stays cached only when that load and
//!   the take's clear miss each other; the `taken` check on every hit
//!   keeps the answer right either way.
//! - Ids: `Relaxed` `fetch_add`, only uniqueness matters.
//!
//! **Waiting.** None on the record/start/seal protocol: a recorder that
//! finds its stripe closed reloads the root, which has moved on (or is
//! pending, and it helps). The only blocking
//! primitive underneath is `OnceLock::set` of a chunk of slot states when
//! two threads of one stripe allocate the same chunk at once: the critical
//! section is a pointer store (boxcar allocates its buckets with a
//! compare-and-swap). A slot is only ever committed by the one thread that
//! reserved it.
//!
//! **Memory.** Sealed changesets stay readable until the log is dropped or
//! they are taken out with [`take`], which returns their entries and frees
//! them (moved out when no other thread's lease or root guard still holds
//! the changeset, else cloned). A sealed changeset read with [`changes`]
//! also keeps the frozen copy of its entries (twice the memory of its
//! entries, for reads that cost one `Vec` clone) and sits in a read-cache
//! slot until `take` clears it or another changeset's read replaces it (a
//! read racing with the `take` can leave a taken changeset in its slot,
//! unreadable, until the slot is reused: at most 64 per log). An entry
//! whose commit was cancelled stays in its stripe's `values` (it was cloned
//! back to the recorder, which retried) until the changeset is freed. Limits: 2³¹ − 2 reservations per stripe of one changeset
//! (`Err(CapacityExceeded)`); versions are compared with serial-number
//! arithmetic, so a recorder may be at most 2³¹ transitions stale.
//!
//! **Async code** records through a [`Recorder`]: it keeps its own stripe
//! and lease instead of the thread's, so a task's entries keep its order
//! even though the task moves between threads, and a task holding recorders
//! of several logs keeps a lease in each.
//!
//! [`start_changeset`]: ChangesetLog::start_changeset
//! [`record_change`]: ChangesetLog::record_change
//! [`seal`]: ChangesetLog::seal
//! [`changes`]: ChangesetLog::changes
//! [`active`]: ChangesetLog::active
//! [`take`]: ChangesetLog::take
//! [`ShardedMap`]: https://docs.rs/dashmap

use std::fmt;
use std::sync::OnceLock;

use crate::sync::ShardedMap;
use crate::sync::{
    Arc, ArcSwap, ArcSwapOption, AtomicBool, AtomicU32, AtomicU64, CachePadded, Ordering, SetOnce,
};

/// The id of a changeset, unique within its [`ChangesetLog`].
///
/// Ids increase in the order of non-overlapping `start_changeset` calls.
///
/// ```
/// use raceless::changeset::ChangesetId;
/// let id = ChangesetId::from_raw(7);
/// assert_eq!(id.raw(), 7);
/// assert_eq!(id.to_string(), "changeset#7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangesetId(u64);

impl ChangesetId {
    /// The id with the raw value `raw` (for persisting and restoring ids;
    /// an id no log handed out is simply unknown to it).
    ///
    /// ```
    /// use raceless::changeset::{ChangesetId, ChangesetLog};
    /// let log = ChangesetLog::<u8>::new();
    /// assert_eq!(log.changes(ChangesetId::from_raw(99)), None);
    /// ```
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value of this id.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::<u8>::new();
    /// assert_eq!(log.start_changeset().raw(), 1);
    /// ```
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ChangesetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "changeset#{}", self.0)
    }
}

/// Why a changeset operation failed. The state is untouched in every case.
///
/// ```
/// use raceless::changeset::{ChangesetError, ChangesetId, ChangesetLog};
/// let log = ChangesetLog::<u8>::new();
/// assert_eq!(log.record_change(1), Err(ChangesetError::NoActiveChangeset));
/// let ghost = ChangesetId::from_raw(42);
/// assert_eq!(log.seal(ghost), Err(ChangesetError::UnknownChangeset(ghost)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ChangesetError {
    /// `record_change` found no open changeset (the seed's "No active
    /// changeset. Call start_changeset() first.").
    #[error("no active changeset: call start_changeset() first")]
    NoActiveChangeset,
    /// No changeset with this id exists in this log (never started, or
    /// already taken).
    #[error("unknown changeset {0}")]
    UnknownChangeset(ChangesetId),
    /// `take` was called on a changeset that is still open.
    #[error("{0} is still open")]
    StillOpen(ChangesetId),
    /// One stripe of the changeset holds 2³¹ − 2 entries already.
    #[error("{0} is full")]
    CapacityExceeded(ChangesetId),
}

/// The operations of a changeset log, implemented by the lock-free
/// [`ChangesetLog`] and by `baseline::MutexChangesets` (feature `baselines`),
/// so that tests and benchmarks are written once.
///
/// ```
/// use raceless::changeset::{ChangesetLog, ChangesetStore};
///
/// fn record_two<S: ChangesetStore<u32>>(log: &S) -> Vec<u32> {
///     let id = log.start_changeset();
///     log.record_change(1).unwrap();
///     log.record_change(2).unwrap();
///     log.seal(id).unwrap();
///     log.take(id).unwrap()
/// }
/// assert_eq!(record_two(&ChangesetLog::new()), vec![1, 2]);
/// ```
pub trait ChangesetStore<C>: Send + Sync {
    /// Opens a new changeset on top of the open ones and returns its id.
    fn start_changeset(&self) -> ChangesetId;
    /// Appends `entry` to the most recently started changeset that is still
    /// open and returns its id; `Err(NoActiveChangeset)` if none is open.
    fn record_change(&self, entry: C) -> Result<ChangesetId, ChangesetError>;
    /// Seals `id`: once this returns, no entry is ever added to it. Sealing
    /// a sealed changeset is a no-op (`Ok`); an unknown id is
    /// `Err(UnknownChangeset)`.
    fn seal(&self, id: ChangesetId) -> Result<(), ChangesetError>;
    /// The entries of `id` in record order (per recording thread), or `None`
    /// for an unknown id.
    fn changes(&self, id: ChangesetId) -> Option<Vec<C>>;
    /// The open changesets, newest first.
    fn active(&self) -> Vec<ChangesetId>;
    /// Removes the sealed changeset `id` and returns its entries, freeing
    /// it; `Err(StillOpen)` if it is open, `Err(UnknownChangeset)` if
    /// unknown (or already taken).
    fn take(&self, id: ChangesetId) -> Result<Vec<C>, ChangesetError>;
    /// How many changesets the store keeps: the open ones and the sealed
    /// ones not yet taken (everything else is freed).
    fn len(&self) -> usize;
    /// Whether the store keeps no changeset.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Records `entry` for a [`Recorder`], which owns `lease` (the slots it
    /// reserved earlier, if the store uses any). The default forwards to
    /// [`record_change`](Self::record_change), which keeps a recorder's
    /// order in any store whose order is its commit order (a recorder's
    /// records never overlap: it records through `&mut self`).
    fn record_leased(
        &self,
        lease: &mut RecorderLease<C>,
        entry: C,
    ) -> Result<ChangesetId, ChangesetError> {
        let _ = lease;
        self.record_change(entry)
    }
}

/// Records into a changeset store for one task (or any one owner), keeping
/// the order in which *it* recorded: its entries appear in
/// [`changes`](ChangesetStore::changes) / [`take`](ChangesetStore::take)
/// in its recording order, whatever threads it ran on (a tokio task moves
/// between worker threads at every `.await`).
///
/// In a [`ChangesetLog`] a recorder keeps its own stripe and its own lease
/// (a run of reserved slots) instead of the recording thread's: its
/// reservations in a stripe are increasing slot ranges, and readers read a
/// stripe in slot order. Entries of different recorders (and threads) are
/// grouped by stripe and lease, as for [`ChangesetLog::record_change`].
/// Recorders of different logs held by one task each keep their lease, so
/// alternating between logs reserves nothing extra (so do a thread's
/// leases of `record_change`, one per log; a recorder's lease also follows
/// the task from thread to thread).
///
/// `L` is how the recorder holds its store: an `Arc` (the default; then the
/// recorder is `Send + 'static` and can live in a spawned task) or a plain
/// reference. Recording is non-blocking and takes `&mut self` (one
/// recorder, one sequence).
///
/// # Drop rule
///
/// Dropping a recorder (at any `.await`, or with its task) loses nothing:
/// every `record` that returned `Ok` is committed. Its unused leased slots
/// stay empty (readers skip them) until the changeset's next close cancels
/// them; until the recorder is dropped or records into another changeset,
/// its lease keeps the changeset it leased from alive in memory (so a
/// [`take`](ChangesetLog::take) meanwhile clones the entries instead of
/// moving them).
///
/// ```
/// use raceless::changeset::{ChangesetLog, Recorder};
/// use std::sync::Arc;
///
/// let log = Arc::new(ChangesetLog::new());
/// let id = log.start_changeset();
/// let mut recorder = Recorder::new(Arc::clone(&log));
/// for i in 0..100 {
///     assert_eq!(recorder.record(i), Ok(id));
/// }
/// drop(recorder);
/// log.seal(id).unwrap();
/// assert_eq!(log.take(id).unwrap(), (0..100).collect::<Vec<_>>());
/// ```
pub struct Recorder<C, L = std::sync::Arc<ChangesetLog<C>>> {
    store: L,
    lease: RecorderLease<C>,
}

/// A [`Recorder`]'s own reservation state, handed to
/// [`ChangesetStore::record_leased`]. Opaque: only [`ChangesetLog`] uses
/// what is inside (a run of reserved slots and the recorder's stripe).
///
/// ```
/// use raceless::changeset::{ChangesetLog, ChangesetStore, RecorderLease};
///
/// let log = ChangesetLog::new();
/// let id = log.start_changeset();
/// let mut lease = RecorderLease::default();
/// assert_eq!(log.record_leased(&mut lease, "x"), Ok(id));
/// ```
pub struct RecorderLease<C> {
    held: Option<OwnLease<C>>,
    stripe: usize,
}

/// Slots `next..end` of the recorder's stripe in `set` (a changeset of the
/// log `log`), reserved by one recorder.
struct OwnLease<C> {
    log: u64,
    set: Arc<Changeset<C>>,
    slots: LeasedSlots,
}

impl<C> Default for RecorderLease<C> {
    fn default() -> Self {
        Self {
            held: None,
            stripe: recorder_stripe(),
        }
    }
}

impl<C> fmt::Debug for RecorderLease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecorderLease")
            .field("stripe", &self.stripe)
            .field(
                "slots_left",
                &self.held.as_ref().map_or(0, |l| l.slots.left()),
            )
            .finish()
    }
}

/// A recorder's stripe hint: recorders are spread round-robin (any value
/// is correct; under loom there is one stripe).
fn recorder_stripe() -> usize {
    #[cfg(not(raceless_loom))]
    {
        // A std atomic, not part of the protocol. Relaxed: any value will do.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(raceless_loom)]
    0
}

impl<C, L, S> Recorder<C, L>
where
    L: std::ops::Deref<Target = S>,
    S: ChangesetStore<C> + ?Sized,
{
    /// A recorder into `store` (an `Arc` of it, or a reference).
    ///
    /// ```
    /// use raceless::changeset::{ChangesetLog, Recorder};
    /// let log = ChangesetLog::new();
    /// let id = log.start_changeset();
    /// let mut recorder = Recorder::new(&log);
    /// assert_eq!(recorder.record('a'), Ok(id));
    /// ```
    pub fn new(store: L) -> Self {
        Self {
            store,
            lease: RecorderLease::default(),
        }
    }

    /// Appends `entry` to the most recently started changeset that is still
    /// open (as [`ChangesetStore::record_change`]), after every entry this
    /// recorder recorded before. Non-blocking (lock-free in a
    /// [`ChangesetLog`]).
    ///
    /// # Errors
    /// [`ChangesetError::NoActiveChangeset`] if no changeset is open;
    /// [`ChangesetError::CapacityExceeded`] if the stripe is full.
    ///
    /// ```
    /// use raceless::changeset::{ChangesetError, ChangesetLog, Recorder};
    /// let log = ChangesetLog::new();
    /// let mut recorder = Recorder::new(&log);
    /// assert_eq!(recorder.record(1), Err(ChangesetError::NoActiveChangeset));
    /// ```
    // Inlined down to the lease's commit, as `record_change` is: a call
    // returning the 16-byte `Result` through memory stalls the caller.
    #[inline(always)]
    pub fn record(&mut self, entry: C) -> Result<ChangesetId, ChangesetError> {
        self.store.record_leased(&mut self.lease, entry)
    }

    /// The store this recorder records into.
    ///
    /// ```
    /// use raceless::changeset::{ChangesetLog, Recorder};
    /// let log = ChangesetLog::<u8>::new();
    /// let recorder = Recorder::new(&log);
    /// assert!(recorder.store().active().is_empty());
    /// ```
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<C, L: fmt::Debug> fmt::Debug for Recorder<C, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Slots and stripes.

/// A slot's state: `EMPTY` (reserved or not yet reserved), `CANCELLED` (by
/// a close, never to be written), or `WRITTEN_BASE + j`: committed, its
/// entry is `values[j]` of the slot's stripe; with the [`START`] flag on
/// the first slot of every reservation.
const EMPTY: u32 = 0;
const CANCELLED: u32 = 1;
const WRITTEN_BASE: u32 = 2;
/// Marks the first slot of a reservation (a lease), set before the
/// reservation's compare-and-swap and kept by the commit and the cancel of
/// that slot: a close cancels only the first uncommitted slot of each
/// lease and skips the rest of it up to the next `START` (see
/// [`Stripe::close`]).
const START: u32 = 1 << 31;
/// Most slots a stripe of one changeset reserves, so that every entry
/// index `j` (at most one push per reserved slot) fits in a state
/// `WRITTEN_BASE + j` below [`START`].
const MAX_SLOTS: u32 = START - WRITTEN_BASE;

/// log2 of the first chunk's length; chunk `k` holds `FIRST << k` slots.
/// Small under loom, to keep the number of modelled atomics low.
const FIRST_BITS: u32 = if cfg!(raceless_loom) { 1 } else { 5 };
const FIRST: u64 = 1 << FIRST_BITS;
/// Enough chunks for every index below `u32::MAX`.
const CHUNKS: usize = (33 - FIRST_BITS) as usize;

/// The chunk and the offset in it of slot `index`.
fn locate(index: u32) -> (usize, usize) {
    let j = u64::from(index) + FIRST;
    let k = 63 - j.leading_zeros() - FIRST_BITS;
    (k as usize, (j - (FIRST << k)) as usize)
}

fn chunk_start(k: usize) -> u64 {
    FIRST * ((1 << k) - 1)
}

/// For the chunks that hold some of the slots `0..count`: each chunk's
/// number and how many of those slots it holds (at most its length).
fn chunks_below(count: u32) -> impl Iterator<Item = (usize, usize)> {
    let count = u64::from(count);
    (0..CHUNKS)
        .map(|k| (k, chunk_start(k)))
        .take_while(move |&(_, start)| start < count)
        .map(move |(k, start)| (k, ((count - start) as usize).min((FIRST << k) as usize)))
}

fn pack(version: u32, count: u32) -> u64 {
    (u64::from(version) << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Whether version `a` is newer than `b` (serial-number arithmetic).
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The index in `values` of a slot state that is `WRITTEN`.
fn written(state: u32) -> Option<usize> {
    (state & !START)
        .checked_sub(WRITTEN_BASE)
        .map(|j| j as usize)
}

/// Why an append did not commit.
enum Missed<C> {
    /// Retry from a fresh root with the entry handed back.
    Retry(C),
    /// The stripe is full.
    Full,
}

struct Stripe<C> {
    /// `(version, count)`: see the module docs.
    word: AtomicU64,
    /// Every slot below this is `WRITTEN` or `CANCELLED`: a hint that lets a
    /// close scan only the slots above it. Raised by every close, and by a
    /// recorder that used up a lease right above it (see
    /// [`settle`](Self::settle)), so with one recorder per stripe a close
    /// scans at most that recorder's current lease.
    settled: AtomicU32,
    /// Whether every entry committed so far went into the slot of its own
    /// index (`values[j]` in slot `j`): cleared by a commit into another
    /// slot. Together with [`orphans`](Self::orphans) it lets the sole
    /// owner move the committed entries out as a prefix of `values`
    /// without walking the slots. Relaxed: only that owner reads it, after
    /// `Arc`'s unique-ownership handover.
    in_order: AtomicBool,
    /// Pushes whose commit failed (their slot was cancelled first: an
    /// *orphan* entry, referenced by no slot), and the lowest index of
    /// one (`u32::MAX`: none). When every orphan sits above every
    /// committed entry — the usual case: a recorder's first record after
    /// a close finds its leased slot cancelled, and nothing commits into
    /// a closed stripe — and `in_order` holds, the committed entries are
    /// exactly `values[..count − orphans]`. Relaxed, as `in_order`.
    orphans: AtomicU32,
    lowest_orphan: AtomicU32,
    /// The slots' states, in geometrically growing chunks.
    chunks: [OnceLock<Box<[AtomicU32]>>; CHUNKS],
    /// The entries: a slot's reserver pushes its entry here, then commits
    /// the slot with the entry's index. `boxcar::Vec::push` is the
    /// publication (index by `fetch_add`, value written in place, then a
    /// release store; zeroed buckets from the allocator): the cheapest
    /// safe write-once storage of a generic value we measured. An entry
    /// whose slot was cancelled stays here unreferenced until the
    /// changeset is freed.
    values: boxcar::Vec<C>,
}

impl<C: Clone> Stripe<C> {
    fn new() -> Self {
        let stripe = Self {
            word: AtomicU64::new(0),
            settled: AtomicU32::new(0),
            in_order: AtomicBool::new(true),
            orphans: AtomicU32::new(0),
            lowest_orphan: AtomicU32::new(u32::MAX),
            chunks: std::array::from_fn(|_| OnceLock::new()),
            values: boxcar::Vec::new(),
        };
        // loom cannot see the `OnceLock` that publishes a chunk, so it would
        // flag the chunk's slot atomics as created without synchronization:
        // under loom the first chunks (14 slots) exist from the start, and
        // loom checks the protocol on them. Chunk publication itself is
        // std's `OnceLock` contract.
        #[cfg(raceless_loom)]
        for index in [0, 2, 6] {
            stripe.slot(index);
        }
        stripe
    }

    /// Chunk `k`, allocating it if needed.
    fn chunk(&self, k: usize) -> &[AtomicU32] {
        match self.chunks[k].get() {
            Some(c) => c,
            None => self.alloc_chunk(k),
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_chunk(&self, k: usize) -> &[AtomicU32] {
        let fresh: Box<[AtomicU32]> = (0..(FIRST << k)).map(|_| AtomicU32::new(EMPTY)).collect();
        // Losing the race drops `fresh`; either way the cell is set.
        let _ = self.chunks[k].set(fresh);
        self.chunks[k]
            .get()
            .unwrap_or_else(|| unreachable!("chunk set above"))
    }

    /// The slot `index`, allocating its chunk if needed.
    #[inline]
    fn slot(&self, index: u32) -> &AtomicU32 {
        let (k, off) = locate(index);
        &self.chunk(k)[off]
    }

    /// Reserves up to `want` consecutive slots for a recorder holding root
    /// version `version`; returns the first index and how many it got.
    fn reserve(&self, version: u32, want: u32) -> Result<(u32, u32), Missed<()>> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let (w, n) = unpack(word);
            if newer(w, version) {
                // Closed for our root, or our root is stale.
                return Err(Missed::Retry(()));
            }
            let got = want.min(MAX_SLOTS.saturating_sub(n));
            if got == 0 {
                return Err(Missed::Full);
            }
            // Slot `n` starts whichever reservation moves the count past
            // it (ours, or a racing one's): mark it before the count does.
            // Failure: marked already, or committed or cancelled with the
            // mark. Relaxed: published by the release below.
            let _ =
                self.slot(n)
                    .compare_exchange(EMPTY, START, Ordering::Relaxed, Ordering::Relaxed);
            // Release: a close whose read-modify-write of the word reads a
            // count past `n` (acquire) then finds slot `n` marked. The
            // rest of the proof only uses this location's modification
            // order.
            match self.word.compare_exchange_weak(
                word,
                pack(version, n + got),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok((n, got)),
                Err(now) => word = now,
            }
        }
    }

    /// Writes `entry` into the reserved slot `index` and commits it; hands
    /// the entry back if a close cancelled the slot first.
    ///
    /// The push comes first and the slot is looked up after it: no load
    /// of the slot before the push (a check for `CANCELLED` there put the
    /// lease → changeset → stripe → chunk → slot chain of loads in front
    /// of the push's locked `fetch_add`, on every record); the chunk
    /// lookup then overlaps the rest of the push. A slot cancelled before
    /// the push costs a push and a clone back (an orphan entry), once per
    /// lease and close.
    ///
    /// `first`: whether `index` is the first slot of its reservation (its
    /// state is `EMPTY | START`, and keeps the flag).
    #[inline]
    fn commit(&self, index: u32, entry: C, first: bool) -> Result<(), C> {
        let mark = if first { START } else { EMPTY };
        // The push happens before the commit below (program order, and the
        // commit is a release), so a reader that loads the committed state
        // with acquire finds the entry published.
        let j = self.values.push(entry);
        match self.slot(index).compare_exchange(
            mark,
            // `j` < MAX_SLOTS: at most one push per reserved slot.
            (WRITTEN_BASE + j as u32) | mark,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                if j != index as usize {
                    self.in_order.store(false, Ordering::Relaxed);
                }
                Ok(())
            }
            // Cancelled by a close first: a copy back (once per lease and
            // close).
            Err(_) => Err(self.orphan(j)),
        }
    }

    /// Notes `values[j]`, which this thread pushed, as an orphan (its
    /// slot was cancelled) and returns a clone of it.
    #[cold]
    #[inline(never)]
    fn orphan(&self, j: usize) -> C {
        self.orphans.fetch_add(1, Ordering::Relaxed);
        self.lowest_orphan.fetch_min(j as u32, Ordering::Relaxed);
        self.entry(j)
    }

    /// A clone of `values[j]`, which this thread pushed.
    #[cold]
    fn entry(&self, j: usize) -> C {
        match self.values.get(j) {
            Some(entry) => entry.clone(),
            None => unreachable!("pushed by this thread"),
        }
    }

    /// Advances `settled` over a lease that is used up: slots
    /// `from..end`, reserved together by the caller, were all committed by
    /// it. If every slot below `from` is settled, so is every slot below
    /// `end` now, and a close of this stripe scans only the slots reserved
    /// after them (with one recorder per stripe, at most its current
    /// lease) instead of the whole stripe. Otherwise (another recorder's
    /// lease below `from` is not used up yet) the hint stays, and the
    /// close scans from it.
    ///
    /// Orderings: the commits of `from..end` are sequenced before the
    /// `Release` `fetch_max`, so a close that loads `settled ≥ end` with
    /// `Acquire` happens after them, as after the closes and recorders
    /// that settled the slots below `from` (an RMW continues their release
    /// sequences). The load may be `Relaxed`: `settled` only grows, and a
    /// value `≥ from` is already such a claim for the slots below it.
    #[cold]
    #[inline(never)]
    fn settle(&self, from: u32, end: u32) {
        if self.settled.load(Ordering::Relaxed) >= from {
            self.settled.fetch_max(end, Ordering::Release);
        }
    }

    /// Closes this stripe for recorders holding a root older than
    /// `version`, then settles every reserved slot (cancels the uncommitted
    /// ones).
    fn close(&self, version: u32) {
        let mut word = self.word.load(Ordering::Acquire);
        let count = loop {
            let (w, n) = unpack(word);
            if !newer(version, w) {
                break n;
            }
            match self.word.compare_exchange_weak(
                word,
                pack(version, n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break n,
                Err(now) => word = now,
            }
        };
        let from = self.settled.load(Ordering::Acquire);
        // Chunk by chunk over `[from, count)`, cancelling only the first
        // uncommitted slot of each lease. A lease's slots are committed by
        // its one holder, in order, and it stops at its first failed
        // commit; so once a slot of a lease is `CANCELLED`, nothing after
        // it in that lease is ever committed, and the scan skips to the
        // next lease's first slot (`START`, marked before its reservation
        // was counted, which our word update above read with acquire).
        // `from` is a lease boundary (a count, or the end of a used-up
        // lease), so the scan starts live.
        let mut dead = false;
        let mut index = u64::from(from);
        while index < u64::from(count) {
            let (k, off) = locate(index as u32);
            let start = chunk_start(k);
            let chunk = self.chunk(k);
            let end = ((u64::from(count) - start) as usize).min(chunk.len());
            for slot in &chunk[off..end] {
                let state = slot.load(Ordering::Acquire);
                if state & START != 0 {
                    dead = false;
                }
                if dead {
                    continue;
                }
                dead = match state & !START {
                    // Failure (its holder committed first) is what we want
                    // too; Acquire makes that commit happen before our root
                    // swap.
                    EMPTY => slot
                        .compare_exchange(
                            state,
                            CANCELLED | (state & START),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .map_or_else(|now| now & !START == CANCELLED, |_| true),
                    CANCELLED => true,
                    _ => false,
                };
            }
            index = start + chunk.len() as u64;
        }
        self.settled.fetch_max(count, Ordering::Release);
    }

    /// Appends the committed entries, in slot order.
    fn collect_into(&self, out: &mut Vec<C>) {
        let (_, count) = unpack(self.word.load(Ordering::Acquire));
        for (k, len) in chunks_below(count) {
            // An unallocated chunk has no committed slot yet.
            let Some(chunk) = self.chunks[k].get() else {
                continue;
            };
            for slot in &chunk[..len] {
                if let Some(j) = written(slot.load(Ordering::Acquire)) {
                    if let Some(v) = self.values.get(j) {
                        out.push(v.clone());
                    }
                }
            }
        }
    }

    /// [`collect_into`](Self::collect_into) for the sole owner of a final
    /// changeset: moves the entries out instead of cloning them.
    fn drain_into(&mut self, out: &mut Vec<C>) {
        let values = std::mem::take(&mut self.values);
        let (_, count) = unpack(self.word.load(Ordering::Relaxed));
        let committed = || {
            chunks_below(count)
                .filter_map(|(k, len)| self.chunks[k].get().map(|chunk| &chunk[..len]))
                .flatten()
                .filter_map(|s| written(s.load(Ordering::Relaxed)))
        };
        // Sole owner: every push has completed, so `values` is dense and
        // its iterator yields `values[0], values[1], …`. The committed
        // slots, in slot order, hold a prefix `values[..n]` of it when
        // every commit went into the slot of its own index and every
        // orphan sits above every commit (`in_order` and `lowest_orphan ≥
        // n`, `n` = pushes − orphans: the `n` committed indices and the
        // orphans' are then `0..n` and `n..`; the usual case, one writer
        // per stripe; no walk), or, checked by walking the slots, when the
        // committed indices in slot order are `0, 1, …, n − 1`: then move
        // that prefix out at once (the orphans after it are dropped).
        let pushed = values.count();
        let mut n = pushed.saturating_sub(self.orphans.load(Ordering::Relaxed) as usize);
        let prefix = (self.in_order.load(Ordering::Relaxed)
            && self.lowest_orphan.load(Ordering::Relaxed) as usize >= n)
            || {
                n = 0;
                committed().all(|j| {
                    n += 1;
                    j == n - 1
                })
            };
        if prefix {
            out.extend(values.into_iter().take(n));
            return;
        }
        let mut values: Vec<Option<C>> = values.into_iter().map(Some).collect();
        out.extend(committed().filter_map(|j| values.get_mut(j).and_then(Option::take)));
    }
}

struct Changeset<C> {
    id: ChangesetId,
    /// Set by a seal before its root swap removes this changeset: a
    /// changeset that is neither in the root nor sealed has not been
    /// published yet.
    sealed: AtomicBool,
    /// Set by the one `take` that removes this changeset (its
    /// linearization point), before it leaves the id map: a reader that
    /// still finds it (in the map or the read cache) answers as for an
    /// unknown id.
    taken: AtomicBool,
    stripes: Box<[CachePadded<Stripe<C>>]>,
    /// The final entries, filled by the first `changes` that finds this
    /// changeset sealed and out of the root (so its contents are final);
    /// later reads clone it instead of walking the stripes.
    frozen: SetOnce<Vec<C>>,
}

impl<C: Clone> Changeset<C> {
    fn new(id: ChangesetId, stripes: usize) -> Self {
        Self {
            id,
            sealed: AtomicBool::new(false),
            taken: AtomicBool::new(false),
            stripes: (0..stripes)
                .map(|_| CachePadded::new(Stripe::new()))
                .collect(),
            frozen: SetOnce::new(),
        }
    }

    fn close(&self, version: u32) {
        for stripe in self.stripes.iter() {
            stripe.close(version);
        }
    }

    /// A copy of the frozen entries, if a read made them.
    fn frozen_copy(&self) -> Option<Vec<C>> {
        self.frozen.get().cloned()
    }

    /// The entries of a changeset known to be final: the frozen copy if a
    /// read made one.
    fn final_entries(&self) -> Vec<C> {
        self.frozen_copy().unwrap_or_else(|| self.entries())
    }

    fn entries(&self) -> Vec<C> {
        let mut out = Vec::with_capacity(self.reserved());
        for stripe in self.stripes.iter() {
            stripe.collect_into(&mut out);
        }
        out
    }

    /// [`final_entries`](Self::final_entries) of a changeset nobody else
    /// holds any more: the entries are moved out, not cloned (`take` of a
    /// large changeset costs no copy, as for a `Vec` behind a mutex).
    fn into_final_entries(mut self) -> Vec<C> {
        if let Some(frozen) = self.frozen.take() {
            return frozen;
        }
        let mut out = Vec::with_capacity(self.reserved());
        for stripe in self.stripes.iter_mut() {
            stripe.drain_into(&mut out);
        }
        out
    }

    /// An upper bound of the entries (reserved slots), so that a `Vec` for
    /// them is allocated once.
    fn reserved(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| unpack(s.word.load(Ordering::Relaxed)).1 as usize)
            .sum()
    }
}

struct Root<C> {
    version: u64,
    /// Open changesets, oldest first: the last one is the latest. For a
    /// pending root, still the list before the transition (the abstract
    /// state does not change until `then` is installed).
    open: Vec<Arc<Changeset<C>>>,
    /// `Some` for a *pending* root: a top-changing transition in progress.
    /// Anyone who loads it helps: closes `open.last()` for `version`, then
    /// swaps this root for `then`.
    then: Option<Arc<Root<C>>>,
}

enum Lookup<C> {
    Unknown,
    Open,
    Sealed(Arc<Changeset<C>>),
}

/// The thread's stripe hint: threads are numbered round-robin on first use.
#[cfg(not(raceless_loom))]
fn stripe_hint() -> usize {
    use std::cell::Cell;
    // A std atomic on purpose: this only spreads threads over stripes and is
    // not part of the protocol (any value is correct). Relaxed: uniqueness
    // is not even needed.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local!(static HINT: Cell<usize> = const { Cell::new(usize::MAX) });
    HINT.with(|h| match h.get() {
        usize::MAX => {
            let v = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & (usize::MAX >> 1);
            h.set(v);
            v
        }
        v => v,
    })
}

/// Under loom every thread shares one stripe (the contended case).
#[cfg(raceless_loom)]
fn stripe_hint() -> usize {
    0
}

/// Slots a recorder reserves at once when its previous lease was not used
/// up (its first record into a log or changeset; a light recorder). Under
/// loom, 2 and the threads' leases are left out: every reservation then
/// leaves an unused `EMPTY` slot that closes must cancel and readers must
/// skip, which loom checks.
const LEASE: u32 = if cfg!(raceless_loom) { 2 } else { 32 };
/// Most slots one reservation takes. A recorder that used up its lease
/// reserves twice as many next time, up to this: a thread that records
/// all the time pays one stripe compare-and-swap, root load and lease
/// update per 256 records (about 4% of a one-thread record at 32), while
/// one that records a few entries per changeset leaves at most
/// `LEASE − 1` reserved slots unused in each (which a close cancels, a
/// reader skips and `take` counts in the returned `Vec`'s capacity).
const LEASE_MAX: u32 = if cfg!(raceless_loom) { 2 } else { 256 };

/// The size of the next reservation after a lease of `size` slots that
/// was used up: twice as many, within `LEASE..=LEASE_MAX`.
fn grown_lease(size: u32) -> u32 {
    size.saturating_mul(2).clamp(LEASE, LEASE_MAX)
}

/// The slots of one reservation in one stripe, held by a lease (a
/// thread's or a [`Recorder`]'s): `from..next` are committed by the
/// holder, in order, `next..end` are its to use. Both kinds of lease
/// record through [`commit_next`](Self::commit_next), so both raise the
/// stripe's `settled` hint when used up and end at their first cancelled
/// slot, as [`Stripe::close`] relies on.
#[derive(Clone, Copy)]
struct LeasedSlots {
    from: u32,
    next: u32,
    end: u32,
}

impl LeasedSlots {
    /// The rest `next..end` of a reservation whose first slot, `next − 1`,
    /// the reserving record committed.
    fn after_first(next: u32, end: u32) -> Self {
        Self {
            from: next - 1,
            next,
            end,
        }
    }

    /// Slots still to use.
    fn left(&self) -> u32 {
        self.end - self.next
    }

    /// The size of the holder's next reservation: grown if this one was
    /// used up (every slot committed), else [`LEASE`].
    fn next_reservation(&self) -> u32 {
        if self.left() == 0 {
            grown_lease(self.end - self.from)
        } else {
            LEASE
        }
    }

    /// Commits `entry` into the next slot (there must be one) of
    /// `stripe`, this lease's stripe; raises the stripe's `settled` hint
    /// if that used the lease up. A cancelled slot ends the lease (the
    /// changeset was closed) without counting as used up, and hands the
    /// entry back.
    #[inline(always)]
    fn commit_next<C: Clone>(&mut self, stripe: &Stripe<C>, entry: C) -> Result<(), C> {
        let index = self.next;
        self.next += 1;
        match stripe.commit(index, entry, false) {
            Ok(()) => {
                if self.next == self.end {
                    stripe.settle(self.from, self.end);
                }
                Ok(())
            }
            Err(back) => {
                self.from = self.end;
                self.next = self.end;
                Err(back)
            }
        }
    }
}

/// A process-wide id per log, for matching a [`Recorder`]'s lease to its log. A
/// std atomic on purpose: not part of the protocol (loom never sees it).
fn next_log_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A thread's *lease*: the rest of the slots its last reservation got, in
/// one stripe of one changeset. Recording into a leased slot is just the
/// commit; the proof is unchanged (the slots were reserved under a root
/// where that changeset was the top, and any close since has cancelled
/// them, so a successful commit is still into the latest open changeset).
/// A lease pins its changeset in memory until the thread records into the
/// same log again (or the log is dropped); leased slots that are never used
/// stay `EMPTY` until a close cancels them, and readers skip them.
///
/// Each log keeps its threads' leases in a `thread_local::ThreadLocal`
/// (one cell per thread that recorded into it, updated in place), so the
/// fast path is a lookup by thread id, a `RefCell` borrow and the commit:
/// no type check (a lease behind one `thread_local!` for every log and
/// entry type would need a `dyn Any` downcast per record, whose virtual
/// `type_id` call and 16-byte result read back through memory cost about a
/// quarter of a one-thread record).
#[cfg(not(raceless_loom))]
mod lease {
    use super::{Arc, CachePadded, Changeset, ChangesetId, LeasedSlots, LEASE};
    use std::cell::RefCell;
    use thread_local::ThreadLocal;

    pub(super) struct Lease<C> {
        set: Arc<Changeset<C>>,
        stripe: usize,
        slots: LeasedSlots,
    }

    /// A log's leases, one per thread that recorded into it. Each cell is
    /// cache-padded: `ThreadLocal` keeps the cells of neighbouring thread
    /// ids side by side, and every record writes its own cell (the borrow
    /// flag, the next slot).
    pub(super) type Leases<C> = ThreadLocal<CachePadded<RefCell<Option<Lease<C>>>>>;

    /// Keeps slots `next..end` of `set`'s stripe `stripe` for this thread's
    /// next records into the log of `leases`, replacing its previous lease.
    pub(super) fn store<C: Send + Sync>(
        leases: &Leases<C>,
        set: &Arc<Changeset<C>>,
        stripe: usize,
        next: u32,
        end: u32,
    ) {
        if next >= end {
            return;
        }
        // Borrowed: a reentrant call (from `C::clone` or `C::drop` during a
        // commit, or a changeset dropped below) keeps no lease.
        let Ok(mut held) = leases.get_or_default().try_borrow_mut() else {
            return;
        };
        match held.as_mut() {
            Some(lease) => {
                if !Arc::ptr_eq(&lease.set, set) {
                    lease.set = Arc::clone(set);
                }
                lease.stripe = stripe;
                lease.slots = LeasedSlots::after_first(next, end);
            }
            None => {
                *held = Some(Lease {
                    set: Arc::clone(set),
                    stripe,
                    slots: LeasedSlots::after_first(next, end),
                });
            }
        }
    }

    /// Drops this thread's lease if it is on `set` (so that a `take` of a
    /// sealed `set` can own it).
    pub(super) fn forget<C: Send + Sync>(leases: &Leases<C>, set: &Arc<Changeset<C>>) {
        let Some(Ok(mut held)) = leases.get().map(|cell| cell.try_borrow_mut()) else {
            return;
        };
        if held
            .as_ref()
            .is_some_and(|lease| Arc::ptr_eq(&lease.set, set))
        {
            // The caller still holds `set`, so this drops no changeset (no
            // entry's `Drop` runs under the borrow).
            *held = None;
        }
    }

    /// Records `entry` into this thread's lease, if it has one that is
    /// still good; otherwise hands the entry back with the size of the
    /// thread's next reservation (grown if this lease was used up).
    #[inline(always)]
    pub(super) fn record<C: Clone + Send + Sync>(
        leases: &Leases<C>,
        entry: C,
    ) -> Result<ChangesetId, (C, u32)> {
        // Borrowed: a reentrant call (from `C::clone` or `C::drop` during a
        // commit) takes the slow path.
        let Some(Ok(mut held)) = leases.get().map(|cell| cell.try_borrow_mut()) else {
            return Err((entry, LEASE));
        };
        let Some(lease) = held.as_mut() else {
            return Err((entry, LEASE));
        };
        if lease.slots.left() == 0 {
            return Err((entry, lease.slots.next_reservation()));
        }
        match lease
            .slots
            .commit_next(&lease.set.stripes[lease.stripe], entry)
        {
            Ok(()) => Ok(lease.set.id),
            Err(back) => Err((back, LEASE)),
        }
    }
}

/// Slots of a log's read cache (direct-mapped by id: consecutive ids never
/// share a slot). Under loom, 2.
const READ_CACHE: usize = if cfg!(raceless_loom) { 2 } else { 64 };

fn default_stripes() -> usize {
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cpus * 4).next_power_of_two().clamp(4, 64)
}

// ---------------------------------------------------------------------------
// The log.

/// The changesets of one plan execution: changes are recorded into the most
/// recently started changeset that is still open. Lock-free: see the
/// [module docs](self) for the protocol.
///
/// ```
/// use raceless::changeset::ChangesetLog;
/// use std::sync::Arc;
///
/// let log = Arc::new(ChangesetLog::new());
/// let id = log.start_changeset();
/// let workers: Vec<_> = (0..4)
///     .map(|t| {
///         let log = Arc::clone(&log);
///         std::thread::spawn(move || {
///             for i in 0..100 {
///                 assert_eq!(log.record_change((t, i)), Ok(id));
///             }
///         })
///     })
///     .collect();
/// for w in workers {
///     w.join().unwrap();
/// }
/// log.seal(id).unwrap();
/// assert_eq!(log.changes(id).unwrap().len(), 400);
/// ```
pub struct ChangesetLog<C: Send + Sync> {
    root: ArcSwap<Root<C>>,
    sets: ShardedMap<ChangesetId, Arc<Changeset<C>>>,
    /// Sealed changesets whose contents are final and frozen, by id modulo
    /// [`READ_CACHE`]: `changes` of such a changeset loads its slot (no
    /// lock, no reference count, no write to a shared line) instead of
    /// looking it up in `sets`.
    read_cache: Box<[ArcSwapOption<Changeset<C>>]>,
    next_id: AtomicU64,
    stripes: usize,
    /// Identifies this log in a [`Recorder`]'s lease.
    log_id: u64,
    /// The threads' leases on this log (see [`lease`]).
    #[cfg(not(raceless_loom))]
    leases: lease::Leases<C>,
}

impl<C: Clone + Send + Sync + 'static> Default for ChangesetLog<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Send + Sync> fmt::Debug for ChangesetLog<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self.root.load();
        f.debug_struct("ChangesetLog")
            .field(
                "active",
                &root.open.iter().rev().map(|c| c.id).collect::<Vec<_>>(),
            )
            .field("stripes", &self.stripes)
            .finish()
    }
}

impl<C: Clone + Send + Sync + 'static> ChangesetLog<C> {
    /// An empty log with the default number of stripes (a few per CPU).
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::<String>::new();
    /// assert!(log.active().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_stripes(default_stripes())
    }

    /// An empty log whose changesets spread concurrent recorders over
    /// `stripes` cache lines (rounded up to a power of two, at least 1).
    /// More stripes: less contention, more memory per changeset (about
    /// 1 KiB per stripe). Entries of different stripes are not ordered with
    /// each other; one thread always records into one stripe.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::with_stripes(1);
    /// let id = log.start_changeset();
    /// log.record_change(1).unwrap();
    /// log.record_change(2).unwrap();
    /// assert_eq!(log.changes(id), Some(vec![1, 2]));
    /// ```
    pub fn with_stripes(stripes: usize) -> Self {
        Self {
            root: ArcSwap::from_value(Root {
                version: 0,
                open: Vec::new(),
                then: None,
            }),
            sets: ShardedMap::new(),
            read_cache: (0..READ_CACHE).map(|_| ArcSwapOption::empty()).collect(),
            next_id: AtomicU64::new(1),
            log_id: next_log_id(),
            #[cfg(not(raceless_loom))]
            leases: lease::Leases::new(),
            stripes: stripes.max(1).next_power_of_two(),
        }
    }

    /// A [`Recorder`] into this log, holding an `Arc` of it (so it is
    /// `Send + 'static`, for a spawned task). `Recorder::new(&log)` makes
    /// one that borrows the log instead.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// use std::sync::Arc;
    /// let log = Arc::new(ChangesetLog::new());
    /// let id = log.start_changeset();
    /// let mut recorder = log.recorder();
    /// std::thread::spawn(move || recorder.record("from elsewhere").unwrap()).join().unwrap();
    /// assert_eq!(log.changes(id), Some(vec!["from elsewhere"]));
    /// ```
    pub fn recorder(self: &std::sync::Arc<Self>) -> Recorder<C> {
        Recorder::new(std::sync::Arc::clone(self))
    }

    /// Opens a new changeset on top of the open ones and returns its id;
    /// from the root swap on (its linearization point), changes go to it.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::<u8>::new();
    /// let a = log.start_changeset();
    /// let b = log.start_changeset();
    /// assert_ne!(a, b);
    /// assert_eq!(log.active(), vec![b, a]);
    /// ```
    pub fn start_changeset(&self) -> ChangesetId {
        // Relaxed: only uniqueness matters.
        let id = ChangesetId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let set = Arc::new(Changeset::new(id, self.stripes));
        // Known by id before it is published, so a seal or read that learns
        // the id from `active()` finds it.
        self.sets.insert(id, Arc::clone(&set));
        self.transition(|open| {
            let mut next = Vec::with_capacity(open.len() + 1);
            next.extend(open.iter().cloned());
            next.push(Arc::clone(&set));
            Some(next)
        });
        tracing::debug!(%id, "changeset started");
        id
    }

    /// Records `entry` into the most recently started changeset that is
    /// still open and returns its id, or `Err(NoActiveChangeset)` if none
    /// is open. Never waits and never panics.
    ///
    /// ```
    /// use raceless::changeset::{ChangesetError, ChangesetLog};
    /// let log = ChangesetLog::new();
    /// assert_eq!(log.record_change('a'), Err(ChangesetError::NoActiveChangeset));
    /// let id = log.start_changeset();
    /// assert_eq!(log.record_change('a'), Ok(id));
    /// ```
    #[inline(always)]
    pub fn record_change(&self, entry: C) -> Result<ChangesetId, ChangesetError> {
        // The lease fast path is inlined into the caller: a call returning
        // the 16-byte `Result` through memory cost a store-forwarding stall
        // in the caller on every record.
        #[cfg(not(raceless_loom))]
        let (entry, want) = match lease::record(&self.leases, entry) {
            Ok(id) => return Ok(id),
            Err(back) => back,
        };
        #[cfg(raceless_loom)]
        let want = LEASE;
        self.record_reserving(entry, want)
    }

    /// `record_change` without a usable lease: reserve `want` slots from
    /// the root.
    #[inline(never)]
    fn record_reserving(&self, entry: C, want: u32) -> Result<ChangesetId, ChangesetError> {
        #[cfg(not(raceless_loom))]
        let leases = &self.leases;
        self.reserve_and_commit(entry, stripe_hint(), want, |_top, _at, _next, _end| {
            #[cfg(not(raceless_loom))]
            lease::store(leases, _top, _at, _next, _end);
        })
    }

    /// Records for a [`Recorder`]: into its own lease while it lasts (its
    /// next slot; a cancelled slot ends the lease), else a fresh
    /// reservation in the recorder's stripe, whose rest becomes its lease.
    /// The recorder's slots in a stripe are increasing, and a stripe is
    /// read in slot order, so its entries keep its order. The lease's
    /// commit is inlined into the caller, the reservation is not.
    #[inline(always)]
    fn record_for(
        &self,
        own: &mut RecorderLease<C>,
        entry: C,
    ) -> Result<ChangesetId, ChangesetError> {
        let mut entry = entry;
        if let Some(lease) = &mut own.held {
            // (A lease handed to another log than its own is not used.)
            if lease.slots.left() > 0 && lease.log == self.log_id {
                // The lease's stripe is `own.stripe` masked for its set.
                let stripe = &lease.set.stripes[own.stripe & (lease.set.stripes.len() - 1)];
                match lease.slots.commit_next(stripe, entry) {
                    Ok(()) => return Ok(lease.set.id),
                    // Closed under us: the lease is over; retry below.
                    Err(back) => entry = back,
                }
            }
        }
        self.record_for_reserving(own, entry)
    }

    /// [`record_for`](Self::record_for) without a usable lease.
    #[inline(never)]
    fn record_for_reserving(
        &self,
        own: &mut RecorderLease<C>,
        entry: C,
    ) -> Result<ChangesetId, ChangesetError> {
        let held = &mut own.held;
        let want = match held {
            Some(lease) if lease.log == self.log_id => lease.slots.next_reservation(),
            _ => LEASE,
        };
        self.reserve_and_commit(entry, own.stripe, want, |top, _at, next, end| {
            *held = (next < end).then(|| OwnLease {
                log: self.log_id,
                set: Arc::clone(top),
                slots: LeasedSlots::after_first(next, end),
            });
        })
    }

    /// The reserving path of `record_change` and of a [`Recorder`]: from
    /// the root, reserve `want` slots in stripe `hint` of the top, commit
    /// `entry` into the first, and hand the rest to `keep` (changeset,
    /// stripe, next slot, end); retry on a stale root or a cancelled slot.
    #[inline]
    fn reserve_and_commit(
        &self,
        entry: C,
        hint: usize,
        want: u32,
        keep: impl FnOnce(&Arc<Changeset<C>>, usize, u32, u32),
    ) -> Result<ChangesetId, ChangesetError> {
        let mut entry = entry;
        loop {
            let root = self.root.load();
            if root.then.is_some() {
                self.help(&root);
                continue;
            }
            let Some(top) = root.open.last() else {
                return Err(ChangesetError::NoActiveChangeset);
            };
            let at = hint & (top.stripes.len() - 1);
            let (index, got) = match top.stripes[at].reserve(root.version as u32, want) {
                Ok(reserved) => reserved,
                Err(Missed::Retry(())) => continue,
                Err(Missed::Full) => return Err(ChangesetError::CapacityExceeded(top.id)),
            };
            match top.stripes[at].commit(index, entry, true) {
                Ok(()) => {
                    keep(top, at, index + 1, index + got);
                    return Ok(top.id);
                }
                Err(back) => entry = back,
            }
        }
    }

    /// Seals `id`: from its root swap on, no entry is ever added to it, and
    /// every `record_change` that returned `Ok(id)` is in `changes(id)`.
    /// Sealing a sealed changeset is a no-op; an unknown id is
    /// `Err(UnknownChangeset)`.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::new();
    /// let a = log.start_changeset();
    /// log.record_change(1).unwrap();
    /// log.seal(a).unwrap();
    /// log.seal(a).unwrap(); // no-op
    /// assert!(log.record_change(2).is_err());
    /// assert_eq!(log.changes(a), Some(vec![1]));
    /// ```
    pub fn seal(&self, id: ChangesetId) -> Result<(), ChangesetError> {
        let Some(set) = self.sets.get(&id) else {
            return Err(ChangesetError::UnknownChangeset(id));
        };
        if set.taken.load(Ordering::Acquire) {
            return Err(ChangesetError::UnknownChangeset(id));
        }
        let mut published = true;
        let removed = self.transition(|open| {
            match open.iter().position(|c| c.id == id) {
                Some(at) => {
                    // Before the root swap: once it is out of the root, it
                    // reads as sealed.
                    set.sealed.store(true, Ordering::Release);
                    let mut next = open.to_vec();
                    next.remove(at);
                    Some(next)
                }
                None => {
                    published = set.sealed.load(Ordering::Acquire);
                    None
                }
            }
        });
        if removed {
            tracing::debug!(%id, "changeset sealed");
        }
        if published {
            Ok(())
        } else {
            // Not started yet (its start is still in flight): unknown so far.
            Err(ChangesetError::UnknownChangeset(id))
        }
    }

    /// The entries of changeset `id`, in record order per recording thread
    /// (entries of one thread keep their order; entries of different
    /// threads are grouped by stripe and lease), or `None` for an unknown
    /// id. Exact and final once
    /// the changeset is sealed; for an open one, it holds at least every
    /// entry recorded before the call.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::new();
    /// let id = log.start_changeset();
    /// log.record_change("a").unwrap();
    /// log.record_change("b").unwrap();
    /// assert_eq!(log.changes(id), Some(vec!["a", "b"]));
    /// ```
    pub fn changes(&self, id: ChangesetId) -> Option<Vec<C>> {
        // Fast path: a sealed, frozen changeset from the read cache. The
        // guard records its borrow in a slot of this thread (no reference
        // count on the changeset, no lock word), so readers of one sealed
        // changeset write no line they share.
        {
            let cached = self.cache_slot(id).load();
            if let Some(set) = cached.as_ref().filter(|set| set.id == id) {
                if set.taken.load(Ordering::Acquire) {
                    return None;
                }
                if let Some(frozen) = set.frozen.get() {
                    return Some(frozen.clone());
                }
            }
        }
        let set = self.sets.get(&id)?;
        if set.taken.load(Ordering::Acquire) {
            return None;
        }
        if let Some(frozen) = set.frozen_copy() {
            self.remember(&set);
            return Some(frozen);
        }
        // Open or sealed both read the entries, so the root is only needed
        // to tell a not-yet-published changeset (neither sealed nor in the
        // root) apart, and a sealed one that is final (out of the root: the
        // seal's close is done) from one whose seal is still in flight. The
        // second `sealed` load covers a seal that removed it between the
        // first load and the root load (the flag is set before that removal).
        let sealed = set.sealed.load(Ordering::Acquire);
        let in_root = self.root.load().open.iter().any(|c| c.id == id);
        if !(sealed || in_root || set.sealed.load(Ordering::Acquire)) {
            return None;
        }
        let entries = set.entries();
        // Sealed before the root load and not in it: final, keep a copy.
        // Losing a race to set it only drops our copy (equal contents).
        if sealed && !in_root {
            let _ = set.frozen.set(entries.clone());
            self.remember(&set);
        }
        Some(entries)
    }

    fn cache_slot(&self, id: ChangesetId) -> &ArcSwapOption<Changeset<C>> {
        &self.read_cache[id.0 as usize & (READ_CACHE - 1)]
    }

    /// Puts the frozen changeset `set` into its read-cache slot (replacing
    /// whatever was there). A `take` of `set` that cleared the slot before
    /// this store would leave it there: the check after the store undoes
    /// that; a slot that still ends up holding a taken changeset answers
    /// `None` (`taken` is checked on every hit) and pins that one
    /// changeset's memory until the slot is reused.
    fn remember(&self, set: &Arc<Changeset<C>>) {
        let slot = self.cache_slot(set.id);
        if slot.load().as_ref().is_some_and(|c| Arc::ptr_eq(c, set)) {
            return;
        }
        let mine = Some(Arc::clone(set));
        slot.store(mine.clone());
        if set.taken.load(Ordering::Acquire) {
            let _ = slot.compare_and_swap(&mine, None);
        }
    }

    /// Clears `set`'s read-cache slot if it holds `set`.
    fn forget_cached(&self, set: &Arc<Changeset<C>>) {
        let slot = self.cache_slot(set.id);
        let current = slot.load_full();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, set)) {
            let _ = slot.compare_and_swap(&current, None);
        }
    }

    /// The open changesets, newest first (one atomic snapshot).
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::<u8>::new();
    /// let a = log.start_changeset();
    /// let b = log.start_changeset();
    /// let c = log.start_changeset();
    /// log.seal(b).unwrap();
    /// assert_eq!(log.active(), vec![c, a]);
    /// ```
    pub fn active(&self) -> Vec<ChangesetId> {
        self.root.load().open.iter().rev().map(|c| c.id).collect()
    }

    /// Whether `id` is open: `Some(true)` open, `Some(false)` sealed,
    /// `None` unknown.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::<u8>::new();
    /// let a = log.start_changeset();
    /// assert_eq!(log.is_open(a), Some(true));
    /// log.seal(a).unwrap();
    /// assert_eq!(log.is_open(a), Some(false));
    /// ```
    pub fn is_open(&self, id: ChangesetId) -> Option<bool> {
        match self.lookup(id) {
            Lookup::Unknown => None,
            Lookup::Open => Some(true),
            Lookup::Sealed(_) => Some(false),
        }
    }

    /// Removes the sealed changeset `id` and returns its entries, freeing
    /// it (`changes(id)` is `None` afterwards). `Err(StillOpen)` for an open
    /// changeset, `Err(UnknownChangeset)` for an unknown or already taken
    /// one. Of two concurrent `take`s of one id, exactly one succeeds.
    ///
    /// ```
    /// use raceless::changeset::{ChangesetError, ChangesetLog};
    /// let log = ChangesetLog::new();
    /// let a = log.start_changeset();
    /// log.record_change(5).unwrap();
    /// assert_eq!(log.take(a), Err(ChangesetError::StillOpen(a)));
    /// log.seal(a).unwrap();
    /// assert_eq!(log.take(a), Ok(vec![5]));
    /// assert_eq!(log.changes(a), None);
    /// ```
    pub fn take(&self, id: ChangesetId) -> Result<Vec<C>, ChangesetError> {
        let set = match self.lookup(id) {
            Lookup::Unknown => return Err(ChangesetError::UnknownChangeset(id)),
            Lookup::Open => return Err(ChangesetError::StillOpen(id)),
            Lookup::Sealed(set) => set,
        };
        // The linearization point: of concurrent takes exactly one sets the
        // flag; from then on every reader that still finds the changeset
        // (in the map or the read cache) answers as for an unknown id.
        if set
            .taken
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ChangesetError::UnknownChangeset(id));
        }
        drop(self.sets.remove(&id));
        self.forget_cached(&set);
        // Sealed contents are final, so reading after removal is exact.
        // Out of the map, the cache and the root, the changeset is usually
        // held by nobody else (this thread's own lease on it is dropped
        // first): then its entries are moved out. Another thread's lease or
        // a reader's guard may still hold it for a moment: then they are
        // cloned.
        #[cfg(not(raceless_loom))]
        lease::forget(&self.leases, &set);
        Ok(match Arc::try_unwrap(set) {
            Ok(owned) => owned.into_final_entries(),
            Err(shared) => shared.final_entries(),
        })
    }

    /// How many changesets the log keeps: the open ones and the sealed
    /// ones not yet [`take`](Self::take)n. Taking a changeset frees it (its
    /// memory goes when the last lease or reader holding it lets go). A
    /// sum over the id map's shards, one at a time: exact when no start or
    /// take is in flight.
    ///
    /// ```
    /// use raceless::changeset::ChangesetLog;
    /// let log = ChangesetLog::<u8>::new();
    /// let a = log.start_changeset();
    /// assert_eq!(log.len(), 1);
    /// log.seal(a).unwrap();
    /// assert_eq!(log.len(), 1); // sealed, kept for the apply phase
    /// log.take(a).unwrap();
    /// assert!(log.is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether the log keeps no changeset.
    ///
    /// ```
    /// assert!(raceless::changeset::ChangesetLog::<u8>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, id: ChangesetId) -> Lookup<C> {
        let Some(set) = self.sets.get(&id) else {
            return Lookup::Unknown;
        };
        if set.taken.load(Ordering::Acquire) {
            Lookup::Unknown
        } else if self.root.load().open.iter().any(|c| c.id == id) {
            Lookup::Open
        } else if set.sealed.load(Ordering::Acquire) {
            Lookup::Sealed(set)
        } else {
            // Its start has not reached its root swap yet.
            Lookup::Unknown
        }
    }

    /// Installs the root computed by `next` from the current open list;
    /// `next` returning `None` means no change. Returns whether this call
    /// made the change.
    ///
    /// A change of the top goes through a pending root (see [`Root::then`]):
    /// the old top must be closed before the new root is installed, and
    /// whoever meets the pending root finishes that, so nobody waits for
    /// the thread that started the transition.
    fn transition(
        &self,
        mut next: impl FnMut(&[Arc<Changeset<C>>]) -> Option<Vec<Arc<Changeset<C>>>>,
    ) -> bool {
        loop {
            let current = self.root.load_full();
            if current.then.is_some() {
                self.help(&current);
                continue;
            }
            let Some(open) = next(&current.open) else {
                return false;
            };
            let version = current.version.wrapping_add(1);
            let top_changes = match (current.open.last(), open.last()) {
                (Some(old), Some(new)) => !Arc::ptr_eq(old, new),
                (Some(_), None) => true,
                (None, _) => false,
            };
            let done = Arc::new(Root {
                version,
                open,
                then: None,
            });
            let new = if top_changes {
                Arc::new(Root {
                    version,
                    open: current.open.clone(),
                    then: Some(done),
                })
            } else {
                done
            };
            let previous = self.root.compare_and_swap(&current, Arc::clone(&new));
            if Arc::ptr_eq(&previous, &current) {
                if new.then.is_some() {
                    self.help(&new);
                }
                return true;
            }
        }
    }

    /// Completes the pending root `pending`: closes its top for its version,
    /// then installs its successor (a no-op if someone already did).
    fn help(&self, pending: &Arc<Root<C>>) {
        let Some(then) = &pending.then else { return };
        if let Some(top) = pending.open.last() {
            top.close(pending.version as u32);
        }
        // Only a helper of `pending` ever swaps it out, so failure means
        // `then` is installed already.
        let _ = self.root.compare_and_swap(pending, Arc::clone(then));
    }
}

impl<C: Clone + Send + Sync + 'static> ChangesetStore<C> for ChangesetLog<C> {
    fn start_changeset(&self) -> ChangesetId {
        ChangesetLog::start_changeset(self)
    }
    // Inlined with the lease fast path, so that a caller through the
    // trait gets the result in registers, not through memory.
    #[inline(always)]
    fn record_change(&self, entry: C) -> Result<ChangesetId, ChangesetError> {
        ChangesetLog::record_change(self, entry)
    }
    fn seal(&self, id: ChangesetId) -> Result<(), ChangesetError> {
        ChangesetLog::seal(self, id)
    }
    fn changes(&self, id: ChangesetId) -> Option<Vec<C>> {
        ChangesetLog::changes(self, id)
    }
    fn active(&self) -> Vec<ChangesetId> {
        ChangesetLog::active(self)
    }
    fn take(&self, id: ChangesetId) -> Result<Vec<C>, ChangesetError> {
        ChangesetLog::take(self, id)
    }
    fn len(&self) -> usize {
        ChangesetLog::len(self)
    }
    // Inlined with the lease's commit (see `record_change`).
    #[inline(always)]
    fn record_leased(
        &self,
        lease: &mut RecorderLease<C>,
        entry: C,
    ) -> Result<ChangesetId, ChangesetError> {
        self.record_for(lease, entry)
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    /// Two recorders in one stripe interleave their pushes, so entries sit
    /// in `values` out of slot order: the sole owner's `take` must give
    /// them in slot order (each recorder's run in turn), not push order.
    #[test]
    fn take_keeps_slot_order_when_pushes_interleave() {
        let log = ChangesetLog::with_stripes(1);
        let id = log.start_changeset();
        let mut a = Recorder::new(&log);
        let mut b = Recorder::new(&log);
        for i in 0..4 {
            a.record(("a", i)).unwrap();
            b.record(("b", i)).unwrap();
        }
        drop((a, b));
        log.seal(id).unwrap();
        let want: Vec<_> = (0..4)
            .map(|i| ("a", i))
            .chain((0..4).map(|i| ("b", i)))
            .collect();
        assert_eq!(log.take(id).unwrap(), want);
    }

    #[test]
    fn locate_covers_every_index_once() {
        let mut expect = (0usize, 0usize);
        for i in 0..10_000u32 {
            let (k, off) = locate(i);
            assert_eq!((k, off), expect, "index {i}");
            assert_eq!(chunk_start(k) + off as u64, u64::from(i));
            expect = if off + 1 == (FIRST << k) as usize {
                (k + 1, 0)
            } else {
                (k, off + 1)
            };
        }
        assert!(locate(u32::MAX - 1).0 < CHUNKS);
    }

    /// An entry that counts its clones.
    #[derive(Debug)]
    struct Counted(u32, std::sync::Arc<AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.1.fetch_add(1, Ordering::Relaxed);
            Self(self.0, self.1.clone())
        }
    }

    fn values(entries: &[Counted]) -> Vec<u32> {
        let mut v: Vec<u32> = entries.iter().map(|c| c.0).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn take_moves_the_entries_out_when_nobody_else_holds_the_changeset() {
        let clones = std::sync::Arc::new(AtomicUsize::new(0));
        let log = ChangesetLog::with_stripes(2);
        let id = log.start_changeset();
        for i in 0..100 {
            assert_eq!(log.record_change(Counted(i, clones.clone())), Ok(id));
        }
        log.seal(id).unwrap();
        let taken = log.take(id).unwrap();
        assert_eq!(values(&taken), (0..100).collect::<Vec<_>>());
        assert_eq!(clones.load(Ordering::Relaxed), 0, "moved, not cloned");
    }

    /// A record whose leased slot a close cancelled pushes its entry into
    /// the closed changeset before it finds out (an orphan, cloned back
    /// and recorded into the new top): `take` of the closed changeset
    /// still returns exactly its committed entries, in order, and moves
    /// them (the orphan sits above them), and the orphan is dropped.
    #[test]
    fn take_moves_the_committed_prefix_past_an_orphan() {
        let clones = std::sync::Arc::new(AtomicUsize::new(0));
        let live = std::sync::Arc::new(AtomicUsize::new(0));
        let log = ChangesetLog::with_stripes(1);
        let a = log.start_changeset();
        for i in 0..10 {
            assert_eq!(
                log.record_change((Counted(i, clones.clone()), Live::new(&live))),
                Ok(a)
            );
        }
        let b = log.start_changeset();
        // The lease's next slot in `a` is cancelled: pushed, cloned back.
        assert_eq!(
            log.record_change((Counted(10, clones.clone()), Live::new(&live))),
            Ok(b)
        );
        assert_eq!(clones.load(Ordering::Relaxed), 1, "the orphan's clone back");
        log.seal(a).unwrap();
        let taken = log.take(a).unwrap();
        let got: Vec<u32> = taken.iter().map(|(c, _)| c.0).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "in order, no orphan");
        assert_eq!(clones.load(Ordering::Relaxed), 1, "moved, not cloned");
        drop(taken);
        // What is left: the entry recorded into `b` (the orphan is gone).
        assert_eq!(live.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn take_clones_while_another_threads_lease_pins_the_changeset() {
        let clones = std::sync::Arc::new(AtomicUsize::new(0));
        let log = ChangesetLog::with_stripes(2);
        let id = log.start_changeset();
        let (recorded, wait) = mpsc::channel();
        let (release, hold) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let (log, theirs) = (&log, clones.clone());
            s.spawn(move || {
                log.record_change(Counted(7, theirs)).unwrap();
                recorded.send(()).unwrap();
                // Keeps its lease on `id` until the take is done.
                hold.recv().unwrap();
            });
            wait.recv().unwrap();
            log.record_change(Counted(8, clones.clone())).unwrap();
            log.seal(id).unwrap();
            let taken = log.take(id).unwrap();
            release.send(()).unwrap();
            assert_eq!(values(&taken), [7, 8], "exact contents either way");
            assert_eq!(clones.load(Ordering::Relaxed), 2, "cloned, not moved");
        });
    }

    /// A thread that uses up its leases reserves twice as many slots each
    /// time, up to `LEASE_MAX`; one that records a few entries per
    /// changeset keeps reserving `LEASE` (its cancelled lease does not
    /// count as used up).
    #[test]
    fn leases_grow_while_used_up_and_not_otherwise() {
        let log = ChangesetLog::<u32>::with_stripes(1);
        let reserved = |id| log.sets.get(&id).unwrap().reserved();
        for _ in 0..3 {
            let id = log.start_changeset();
            log.record_change(0).unwrap();
            assert_eq!(reserved(id), LEASE as usize, "a light recorder");
        }
        let id = log.start_changeset();
        let mut size = LEASE;
        let mut total = 0;
        for _ in 0..6 {
            for _ in 0..size {
                log.record_change(1).unwrap();
            }
            total += size as usize;
            assert_eq!(reserved(id), total, "leases used up exactly");
            size = grown_lease(size);
        }
        assert_eq!(size, LEASE_MAX);
        log.record_change(2).unwrap();
        assert_eq!(reserved(id), total + LEASE_MAX as usize);
        let mut recorder = Recorder::new(&log);
        let id = log.start_changeset();
        for _ in 0..LEASE + 2 * LEASE + 1 {
            recorder.record(3).unwrap();
        }
        assert_eq!(
            reserved(id),
            (LEASE + 2 * LEASE + 4 * LEASE) as usize,
            "a recorder's too"
        );
    }

    /// One task alternating between two logs: its two recorders each keep
    /// their lease (one reservation per up to `LEASE_MAX` records), and so does the
    /// thread's lease of `record_change` (one per log).
    #[test]
    fn recorders_alternating_two_logs_burn_no_reservation() {
        let logs = [
            ChangesetLog::<u32>::with_stripes(1),
            ChangesetLog::<u32>::with_stripes(1),
        ];
        let ids = logs.each_ref().map(|log| log.start_changeset());
        let mut recorders = logs.each_ref().map(Recorder::new);
        // Miri runs this at interpreter speed: fewer rounds, same checks.
        let n: u32 = if cfg!(miri) { 40 } else { 1_000 };
        for i in 0..n {
            for (r, id) in recorders.iter_mut().zip(ids) {
                assert_eq!(r.record(i), Ok(id));
            }
        }
        for (log, id) in logs.iter().zip(ids) {
            let reserved = log.sets.get(&id).unwrap().reserved();
            assert!(
                reserved <= n as usize + LEASE_MAX as usize,
                "{reserved} slots"
            );
            assert_eq!(log.changes(id).unwrap(), (0..n).collect::<Vec<_>>());
        }
        // The thread's lease of `record_change`: one per log, kept too.
        let ids = logs.each_ref().map(|log| log.start_changeset());
        for i in 0..n {
            for log in &logs {
                log.record_change(i).unwrap();
            }
        }
        for (log, id) in logs.iter().zip(ids) {
            let reserved = log.sets.get(&id).unwrap().reserved();
            assert!(
                reserved <= n as usize + LEASE_MAX as usize,
                "{reserved} slots"
            );
            assert_eq!(log.changes(id).unwrap(), (0..n).collect::<Vec<_>>());
        }
    }

    /// A recorder handed from thread to thread (as a task migrates) keeps
    /// its order; a lease handed to another log is not used there.
    #[test]
    fn recorder_keeps_order_across_threads_and_logs() {
        let log = std::sync::Arc::new(ChangesetLog::<u32>::with_stripes(4));
        let id = log.start_changeset();
        let mut recorder = log.recorder();
        for hop in 0..8u32 {
            recorder = std::thread::spawn(move || {
                for i in 0..40 {
                    recorder.record(hop * 40 + i).unwrap();
                }
                recorder
            })
            .join()
            .unwrap();
            log.record_change(1_000_000 + hop).unwrap();
        }
        let mine: Vec<u32> = log
            .changes(id)
            .unwrap()
            .into_iter()
            .filter(|&e| e < 1_000_000)
            .collect();
        assert_eq!(mine, (0..320).collect::<Vec<_>>());
        let other = ChangesetLog::<u32>::with_stripes(4);
        assert_eq!(
            other.record_leased(&mut recorder.lease, 7),
            Err(ChangesetError::NoActiveChangeset)
        );
    }

    /// An entry that counts the live copies of itself.
    struct Live(std::sync::Arc<AtomicUsize>);

    impl Live {
        fn new(count: &std::sync::Arc<AtomicUsize>) -> Self {
            count.fetch_add(1, Ordering::Relaxed);
            Self(count.clone())
        }
    }

    impl Clone for Live {
        fn clone(&self) -> Self {
            Self::new(&self.0)
        }
    }

    impl Drop for Live {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `take` frees: after 10,000 changesets went through start, records
    /// (a recorder, `record_change`, and reads that freeze a copy), seal
    /// and take, and the taken entries were dropped, no entry is alive —
    /// not in a slot, a frozen copy, a lease or a cancelled slot — once the
    /// recorder is dropped, while the log itself lives on.
    #[test]
    fn taken_changesets_free_their_entries() {
        let live = std::sync::Arc::new(AtomicUsize::new(0));
        let log = ChangesetLog::<Live>::with_stripes(2);
        let mut recorder = Recorder::new(&log);
        for i in 0..if cfg!(miri) { 20 } else { 10_000 } {
            let id = log.start_changeset();
            for _ in 0..3 {
                recorder.record(Live::new(&live)).unwrap();
            }
            log.record_change(Live::new(&live)).unwrap();
            log.seal(id).unwrap();
            if i % 2 == 0 {
                drop(log.changes(id)); // leaves a frozen copy behind
            }
            assert_eq!(log.take(id).unwrap().len(), 4);
        }
        assert!(log.is_empty());
        drop(recorder);
        // The thread's own lease was dropped by `take`.
        assert_eq!(live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn recorders_are_send_and_static() {
        fn check<T: Send + 'static>(_: &T) {}
        let log = std::sync::Arc::new(ChangesetLog::<String>::new());
        check(&log.recorder());
        #[cfg(feature = "baselines")]
        check(&Recorder::new(std::sync::Arc::new(
            crate::baseline::MutexChangesets::<String>::new(),
        )));
    }

    #[test]
    fn serial_versions() {
        assert!(newer(1, 0));
        assert!(!newer(0, 0));
        assert!(newer(0, u32::MAX));
        assert!(!newer(u32::MAX, 0));
    }
}
