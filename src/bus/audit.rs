//! The audit log: a bounded record of the newest events, written without a
//! lock and without a counter shared by all emitters.
//!
//! # Protocol
//!
//! The log is [`AUDIT_STRIPES`] *stripes*: one per thread (see
//! [`thread_stamp`]: a thread holds one of
//! [`AUDIT_OWNED_STRIPES`](crate::sync::AUDIT_OWNED_STRIPES) stripe indices
//! of its own, claimed on its first emit and given back when it exits),
//! plus [`AUDIT_SHARED_STRIPES`](crate::sync::AUDIT_SHARED_STRIPES) that
//! threads share while every index is held. Every record carries a
//! *stamp*: a clock reading (the time-stamp counter, through `quanta`),
//! raised to the thread's previous stamp so that one thread's stamps never
//! decrease. The log orders records by the key
//! `(stamp, stripe, position)` and keeps the newest `capacity` by that key.
//!
//! A stripe is the paged ring a single log would be, used by its own
//! thread: its `next` counter gives each record a *position* in the stripe
//! (dense, from 0), positions are grouped into *pages* of `capacity`
//! positions whose records are appended to the page's bounded append-only
//! vector ([`AppendVec`], i.e. `boxcar::Vec`, at most `capacity` pushes),
//! and the stripe holds a *window* of its two newest pages in an RCU cell:
//!
//! ```text
//! record(event, deliver):                         # on every emit
//!     (s, owned, stamp) = thread_stamp(clock)     # thread-local stripe, max(clock, last stamp)
//!     if owned: pos = next.load(Relaxed); next.store(pos + 1, Relaxed)   # its only writer
//!     else:     pos = stripe[s].next.fetch_add(1, Relaxed)               # a shared stripe
//!     rec = Record { stamp, pos, event }          # the event is moved, not copied
//!     p = pos / capacity
//!     if owned and this log's cell for the thread caches (stripe s, page p):
//!         page = cached                           # no window load (see "The owner's page cache")
//!     else:
//!         loop:
//!             w = stripe[s].window.load()         # arc-swap
//!             if w.current.number >= p: break
//!             window.compare_and_swap(w, w advanced to p)   # the first record of page p installs it
//!         page = w.page(p)                        # an owner caches it (with s)
//!     if page: i = page.records.push(rec); deliver(&page.records.get(i).event)
//!     else: deliver(&rec.event)                   # two pages behind (only when a stripe is shared)
//!
//! advanced to p:  current = new page p,
//!                 previous = old current if it is page p − 1, else a new page p − 1
//!
//! snapshot():
//!     for every stripe: w = window.load(); collect every published record of both pages
//!     sort by (stamp, stripe, pos), keep the last `capacity`, clone the events out
//! ```
//!
//! A stripe's pages are allocated when its first record needs them, so a
//! bus pays only for the stripes its emitting threads use: at most
//! `2 × capacity` events per stripe in use.
//!
//! # The owner's page cache
//!
//! Only the thread that holds a stripe index installs pages on that
//! stripe (shared stripes excepted), so the page it installed last stays
//! the stripe's current page until it installs the next one. Each log
//! keeps, per thread that wrote it as an owner, the stripe index and that
//! page (`pages`: a `thread_local::ThreadLocal`, found by thread id, one
//! cache-padded cell per thread, no type check): when the cached stripe is the
//! thread's stripe and the page holds the record's position, the owner
//! appends there without loading the window (an arc-swap read: two
//! read-modify-writes); otherwise it loads the window as above and caches
//! the page it finds. The page is moved out of the cell while the record
//! is delivered, so a reentrant emit on the same log finds no page and
//! loads the window.
//!
//! A cached page is the window's page object of that number: each page
//! number of a stripe has one page object while it is in the window
//! (below), and a page leaves the window only for a larger number, which
//! positions never come back to. So appending to a cached page that holds
//! the position is appending to the window's, whoever cached it: the
//! check needs no owner identity. That matters because `ThreadLocal`
//! hands the cell of an exited thread to the next thread that gets its
//! thread id; that thread may hold another stripe (the stripe check
//! misses) or the same one, advanced meanwhile by other owners (the
//! position check misses, positions only grow). The cache changes no
//! shared state and no ordering: it replaces a load whose result only
//! this thread could have changed. Under loom it is off.
//!
//! # Guarantees and why they hold
//!
//! - **None twice.** A stripe's positions are unique (an owned stripe has
//!   one writer at a time, and a new owner's claim acquires the previous
//!   owner's stores; a shared stripe draws them with `fetch_add`), each
//!   record is pushed into one page once, each page number has one page
//!   object while it is in its stripe's window (an install of page `p`
//!   creates page `p − 1` only when the current page is older than `p − 1`,
//!   so no window held it before), and a snapshot reads each record of
//!   each page it loaded once.
//! - **None torn.** A record is immutable once pushed; the push publishes
//!   it (a release store of its entry's flag) and `get` and iteration
//!   acquire it.
//! - **Never over capacity.** A snapshot keeps at most `capacity` records.
//! - **One thread's events keep their order.** A thread keeps its stripe
//!   index for its life, its stamps never decrease, and its records take
//!   increasing positions in its stripe (coherence on `next`: its own
//!   store, or its read-modify-write, is read by its next one; `Relaxed`
//!   suffices). So its later event has the larger key:
//!   a larger stamp, or the same stamp and a larger position.
//! - **The newest `capacity` by stamp, once quiescent.** Within a stripe
//!   held by one thread at a time, positions and keys agree: the owner's
//!   stamps never decrease, and a thread that claims an index given back by
//!   another starts from that thread's last stamp (whose records
//!   happen-before its own, through the claim). Let `r` be one of the
//!   `capacity` records with the largest keys. Every later position of its
//!   stripe has a larger key, so fewer than `capacity` positions follow
//!   `r`'s; an emitter of page `p` loads windows until the current page is
//!   at least `p` (or, as the owner, finds page `p` in its cache: the page
//!   it installed, still current) and appends its record to page `p`
//!   unless the current page has reached `p + 2` (`capacity + 1` positions later), so once every
//!   emit has returned, the stripe's window holds `r`. The snapshot sorts
//!   all windows by key and keeps the last `capacity`: exactly the newest.
//!   *Shared stripes* (used only while more than
//!   [`AUDIT_OWNED_STRIPES`](crate::sync::AUDIT_OWNED_STRIPES) threads hold
//!   an index at once) keep every guarantee above except this
//!   one: two threads whose emits overlap can take positions in one order
//!   and stamps in the other, and an event displaced that way by
//!   `capacity + 1` later positions of its stripe is missing from the log
//!   (an older one takes its place). One overlapping sharer cannot do that
//!   (it adds one later position); several can.
//! - *Thread teardown.* An emit from a thread-local destructor that runs
//!   after the thread's stripe state is gone uses the first shared stripe
//!   and the clock as it is: its place among the thread's earlier events
//!   then rests on the clock being monotonic across cores.
//! - **Lock-free.** A push never waits or allocates (a page gets at most
//!   `capacity` pushes, one per position, into buckets allocated with the
//!   page); the install loop
//!   retries only when another install on the stripe succeeded, each of
//!   which raises its current page.
//!
//! *Stamp order is not a global sequence.* Records of different threads are
//! ordered by their clock readings: events further apart than the clock's
//! cross-core skew (nanoseconds on an invariant TSC) are in real-time order;
//! closer ones may come in either order. A snapshot taken while emits run
//! is consistent per record, not across records: it can miss an event whose
//! emitter has taken its position but not pushed it yet, and show an older one
//! instead.
//!
//! # Orderings
//!
//! An owned stripe's `next` is advanced with a `Relaxed` load and store, a
//! shared stripe's with a `Relaxed` `fetch_add`: only unique positions
//! (one writer, or the read-modify-write's atomicity) and per-location
//! coherence (one thread's positions increase) are used; `next` publishes
//! nothing, and it stays on its stripe's cache line. Pages are
//! published by arc-swap's compare-and-swap and acquired by its load (a
//! page is fully built before it is installed); records by the page's
//! push (boxcar: a `Relaxed` `fetch_add` for the index, a release store of
//! the entry's flag after the write; `get` and iteration load it with
//! acquire). The owner's page cache is thread-local and orders nothing:
//! its page was acquired by a window load or built by this thread. The stripe-index claim is a
//! compare-and-swap with `Acquire`, its give-back a `fetch_and` with
//! `Release` (see [`thread_stamp`]). The clock reading synchronizes
//! nothing.
//!
//! # What `forbid(unsafe_code)` costs here
//!
//! A ring that overwrites its cells in place needs either a lock per cell,
//! an atomic pointer swap per write (`arc_swap` cells: every write walks
//! the readers' debt lists), or `unsafe` (a seqlock over `MaybeUninit`).
//! Append-only pages avoid all three at the price of one page allocation per
//! `capacity` records per stripe (and dropping the page two behind), and of
//! keeping up to `2 × capacity` records per stripe.

use crate::sync::{
    thread_stamp, AppendVec, Arc, ArcSwapOption, AtomicU64, CachePadded, GuardOption, Ordering,
    StampClock, ThreadStamp, AUDIT_STRIPES,
};

/// One logged event, its stamp and its position in its stripe.
pub(crate) struct Record<E> {
    stamp: u64,
    pos: u64,
    event: E,
}

/// The records of the positions
/// `number · capacity .. (number + 1) · capacity` of one stripe, in the
/// order their emitters appended them (at most `capacity`).
struct Page<E> {
    number: u64,
    /// Its positions: `number · capacity .. end`.
    first: u64,
    end: u64,
    records: AppendVec<Record<E>>,
}

impl<E> Page<E> {
    fn new(number: u64, capacity: usize) -> Arc<Self> {
        let first = number * capacity as u64;
        Arc::new(Self {
            number,
            first,
            end: first.saturating_add(capacity as u64),
            records: AppendVec::with_capacity(capacity),
        })
    }

    /// Whether `pos` is one of the page's positions (no division).
    #[inline]
    fn holds(&self, pos: u64) -> bool {
        self.first <= pos && pos < self.end
    }
}

/// What a stripe currently holds: its newest page and the one before it.
struct Window<E> {
    current: Arc<Page<E>>,
    /// Page `current.number − 1` (`None` only while the current page is 0).
    previous: Option<Arc<Page<E>>>,
}

impl<E> Window<E> {
    /// The page of position `pos`, if it is in the window.
    fn page(&self, pos: u64) -> Option<&Page<E>> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|page| page.holds(pos))
            .map(|page| &**page)
    }

    /// The window whose current page is `number`, after `old` (older, or
    /// none yet): `old`'s current page carried over as the previous one if
    /// it is `number − 1`, a new page otherwise.
    fn advanced_to(old: Option<&Self>, number: u64, capacity: usize) -> Self {
        let previous = match old {
            Some(old) if old.current.number + 1 == number => Some(Arc::clone(&old.current)),
            _ => number.checked_sub(1).map(|p| Page::new(p, capacity)),
        };
        Self {
            current: Page::new(number, capacity),
            previous,
        }
    }
}

/// One thread's part of the log.
struct Stripe<E> {
    /// The next position.
    next: AtomicU64,
    /// The two newest pages; `None` until the stripe's first record.
    window: ArcSwapOption<Window<E>>,
}

impl<E> Stripe<E> {
    /// The next position. `owned`: the caller is the stripe's only writer
    /// (it holds the stripe index), so a load and a store suffice; else a
    /// `fetch_add`. `Relaxed` either way: see the module docs.
    #[inline]
    fn take_position(&self, owned: bool) -> u64 {
        if owned {
            let pos = self.next.load(Ordering::Relaxed);
            self.next.store(pos + 1, Ordering::Relaxed);
            pos
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        }
    }
}

/// The owners' page caches of one log: per thread that wrote it, the
/// stripe index it wrote as owner and that stripe's page it installed or
/// found last (see "The owner's page cache" in the module docs). Each
/// cell is cache-padded: `ThreadLocal` keeps the cells of threads side by
/// side (thread ids 1 and 2 in one bucket, 3 to 6 in the next, ...), and
/// every owned emit writes its thread's cell.
#[cfg(not(raceless_loom))]
type PageCache<E> =
    thread_local::ThreadLocal<CachePadded<std::cell::Cell<Option<(usize, Arc<Page<E>>)>>>>;

/// A bounded, lock-free log keeping the newest `capacity` events by stamp.
pub(crate) struct AuditRing<E: Send + Sync> {
    /// One per stripe index (padded: each is written by its own thread);
    /// empty when the log is disabled.
    stripes: Box<[CachePadded<Stripe<E>>]>,
    capacity: usize,
    /// `None` when the log is disabled.
    clock: Option<StampClock>,
    /// Off under loom.
    #[cfg(not(raceless_loom))]
    pages: PageCache<E>,
}

impl<E: Send + Sync> AuditRing<E> {
    /// A ring of `capacity` events; 0 disables logging.
    pub(crate) fn new(capacity: usize) -> Self {
        let stripes = if capacity == 0 { 0 } else { AUDIT_STRIPES };
        Self {
            stripes: (0..stripes)
                .map(|_| {
                    CachePadded::new(Stripe {
                        next: AtomicU64::new(0),
                        window: ArcSwapOption::empty(),
                    })
                })
                .collect(),
            capacity,
            clock: (capacity > 0).then(StampClock::new),
            #[cfg(not(raceless_loom))]
            pages: PageCache::new(),
        }
    }

    /// The capacity given at construction.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Logs `event` (moved, never cloned) and runs `deliver` on it as it
    /// sits in the log (the emit path calls the handlers there).
    #[inline]
    pub(crate) fn record<R: Default>(&self, event: E, deliver: impl FnOnce(&E) -> R) -> R {
        let Some(clock) = &self.clock else {
            return deliver(&event);
        };
        let ThreadStamp {
            index,
            owned,
            stamp,
        } = thread_stamp(clock);
        let Some(stripe) = self.stripes.get(index) else {
            return deliver(&event);
        };
        let pos = stripe.take_position(owned);
        let record = Record { stamp, pos, event };
        if owned {
            self.place_owned(index, stripe, record, deliver)
        } else {
            self.place(stripe, record, deliver)
        }
    }

    /// [`place`](Self::place) for the owner of stripe `index`: the page
    /// this thread cached for this log, if it is stripe `index`'s page of
    /// the record's position, is that stripe's current page (see the module
    /// docs), so the window is not loaded.
    #[cfg(not(raceless_loom))]
    #[inline]
    fn place_owned<R: Default>(
        &self,
        index: usize,
        stripe: &Stripe<E>,
        record: Record<E>,
        deliver: impl FnOnce(&E) -> R,
    ) -> R {
        let cache = self.pages.get_or_default();
        // Moved out while the handlers run: a reentrant emit on this log
        // finds no page and loads the window.
        let page = match cache.take() {
            Some((cached, page)) if cached == index && page.holds(record.pos) => page,
            stale => {
                drop(stale);
                let number = record.pos / self.capacity as u64;
                let window = self.window_for(stripe, record.pos);
                match &*window {
                    Some(w) if w.current.number == number => Arc::clone(&w.current),
                    // Not for an owner (its positions are consecutive and
                    // it alone installs pages); placed through the window.
                    _ => return self.place(stripe, record, deliver),
                }
            }
        };
        let out = Self::append_and_deliver(&page, record, deliver);
        // Whatever a reentrant emit cached meanwhile is dropped after the
        // cell is updated.
        drop(cache.replace(Some((index, page))));
        out
    }

    /// Under loom the page cache is off.
    #[cfg(raceless_loom)]
    fn place_owned<R: Default>(
        &self,
        _index: usize,
        stripe: &Stripe<E>,
        record: Record<E>,
        deliver: impl FnOnce(&E) -> R,
    ) -> R {
        self.place(stripe, record, deliver)
    }

    /// Appends `record` to `page` (the page of its position) and delivers
    /// the stored event.
    #[inline]
    fn append_and_deliver<R: Default>(
        page: &Page<E>,
        record: Record<E>,
        deliver: impl FnOnce(&E) -> R,
    ) -> R {
        let index = page.records.push(record);
        match page.records.get(index) {
            Some(stored) => deliver(&stored.event),
            // Unreachable: a push's own value is published when it returns.
            None => R::default(),
        }
    }

    /// Puts `record` into its stripe's window and delivers its event.
    fn place<R: Default>(
        &self,
        stripe: &Stripe<E>,
        record: Record<E>,
        deliver: impl FnOnce(&E) -> R,
    ) -> R {
        let window = self.window_for(stripe, record.pos);
        match window.as_ref().and_then(|w| w.page(record.pos)) {
            Some(page) => Self::append_and_deliver(page, record, deliver),
            // Two pages behind: `capacity + 1` later positions exist.
            None => deliver(&record.event),
        }
    }

    /// A window holding the page of `pos` unless that page is already two
    /// behind, installing the page first if needed (see the module docs).
    fn window_for(&self, stripe: &Stripe<E>, pos: u64) -> GuardOption<Window<E>> {
        let number = pos / self.capacity as u64;
        loop {
            let window = stripe.window.load();
            if matches!(&*window, Some(w) if w.current.number >= number) {
                return window;
            }
            // Whether this install or a concurrent one wins, the current
            // page has grown; load again.
            let next = Window::advanced_to(window.as_deref(), number, self.capacity);
            stripe
                .window
                .compare_and_swap(&window, Some(Arc::new(next)));
        }
    }

    /// The logged events, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<E>
    where
        E: Clone,
    {
        // Full `Arc`s rather than guards: the scan is long, and arc-swap
        // guards are meant to be short-lived.
        let windows: Vec<(usize, Arc<Window<E>>)> = self
            .stripes
            .iter()
            .enumerate()
            .filter_map(|(i, stripe)| Some((i, stripe.window.load_full()?)))
            .collect();
        let mut records: Vec<(u64, usize, u64, &E)> = windows
            .iter()
            .flat_map(|(stripe, window)| {
                std::iter::once(&window.current)
                    .chain(&window.previous)
                    .flat_map(|page| page.records.iter())
                    .map(move |r| (r.stamp, *stripe, r.pos, &r.event))
            })
            .collect();
        let older = records.len().saturating_sub(self.capacity);
        if older > 0 {
            records
                .select_nth_unstable_by_key(older, |&(stamp, stripe, pos, _)| (stamp, stripe, pos));
        }
        let newest = &mut records[older..];
        newest.sort_unstable_by_key(|&(stamp, stripe, pos, _)| (stamp, stripe, pos));
        newest.iter().map(|&(.., event)| event.clone()).collect()
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_in_order() {
        let ring = AuditRing::new(3);
        for i in 0..10 {
            assert_eq!(ring.record(i, |e| *e), i);
        }
        assert_eq!(ring.snapshot(), vec![7, 8, 9]);
        assert_eq!(ring.capacity(), 3);
    }

    /// Places `event` at `pos` of stripe 0 with stamp `pos` (a late
    /// emitter: its position was drawn earlier).
    fn late(ring: &AuditRing<u64>, pos: u64) {
        let record = Record {
            stamp: pos,
            pos,
            event: pos,
        };
        ring.place(&ring.stripes[0], record, |_| ());
    }

    #[test]
    fn a_late_writer_lands_in_the_previous_page_or_is_too_old() {
        let ring = AuditRing::new(2);
        // Positions 1 and 2 are drawn, but their emitters are late.
        for pos in [0, 3, 4] {
            late(&ring, pos);
        }
        // Window: pages 1 (pos 2, 3) and 2 (pos 4, 5). Pos 2 still lands in
        // page 1; pos 1 (page 0) is too old to be among the newest two.
        late(&ring, 2);
        late(&ring, 1);
        assert_eq!(ring.snapshot(), vec![3, 4]);
        late(&ring, 5);
        assert_eq!(ring.snapshot(), vec![4, 5]);
    }

    #[test]
    fn an_emitter_that_skips_a_page_creates_the_one_before() {
        let ring = AuditRing::new(2);
        // Pos 6 (page 3) installs pages 2 and 3 into an empty stripe; pos 5
        // (page 2) is still kept.
        late(&ring, 6);
        late(&ring, 5);
        assert_eq!(ring.snapshot(), vec![5, 6]);
    }

    /// Records of several stripes are merged by stamp, whatever stripe
    /// they are in, and only the newest `capacity` are kept.
    #[test]
    fn stripes_merge_by_stamp() {
        let ring = AuditRing::new(3);
        let put = |stripe: usize, stamp: u64, pos: u64| {
            let record = Record {
                stamp,
                pos,
                event: stamp,
            };
            ring.place(&ring.stripes[stripe], record, |_| ());
        };
        put(0, 10, 0);
        put(1, 11, 0);
        put(0, 14, 1);
        put(2, 12, 0);
        put(1, 15, 1);
        put(2, 13, 1);
        assert_eq!(ring.snapshot(), vec![13, 14, 15]);
    }

    /// Three emitters and a reader on a small ring (short under Miri, which
    /// checks the pointer handling): snapshots never exceed the capacity or
    /// repeat an event, and once quiet each thread's logged events are the
    /// last ones it emitted, in order, and the log holds the newest by
    /// each thread's... stamps: its length is the capacity.
    #[test]
    fn concurrent_emitters_leave_the_newest() {
        let per_thread = if cfg!(miri) { 6 } else { 2_000 };
        let ring = AuditRing::new(5);
        std::thread::scope(|s| {
            for t in 0..3_u32 {
                let ring = &ring;
                s.spawn(move || (0..per_thread).for_each(|i| ring.record((t, i), |_| ())));
            }
            s.spawn(|| {
                for _ in 0..per_thread {
                    let log = ring.snapshot();
                    let mut unique = log.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    assert!(log.len() <= 5 && unique.len() == log.len(), "{log:?}");
                }
            });
        });
        let log = ring.snapshot();
        assert_eq!(log.len(), 5);
        for t in 0..3 {
            let mine: Vec<u32> = log.iter().filter(|e| e.0 == t).map(|e| e.1).collect();
            let suffix: Vec<u32> = (per_thread - mine.len() as u32..per_thread).collect();
            assert_eq!(mine, suffix, "thread {t} in {log:?}");
        }
    }

    /// One thread fills more than a page while other threads' events are
    /// older: the log is that thread's newest `capacity` (a stripe keeps a
    /// whole capacity's worth on its own).
    #[test]
    fn one_busy_thread_can_own_the_whole_log() {
        let ring = AuditRing::new(4);
        std::thread::scope(|s| {
            s.spawn(|| ring.record(100, |_| ()));
        });
        for i in 0..9 {
            ring.record(i, |_| ());
        }
        assert_eq!(ring.snapshot(), vec![5, 6, 7, 8]);
    }

    /// Threads that exit leave their page-cache cells behind, and
    /// `ThreadLocal` hands a cell to the next thread given the same thread
    /// id, which may hold the same stripe (advanced meanwhile by other
    /// owners) or another one: every round, one after another, a thread
    /// emits a different number of events (crossing pages or not), and
    /// the log is always exactly the newest, in order.
    #[test]
    fn cells_of_exited_threads_are_never_wrong() {
        let ring = AuditRing::new(3);
        let mut all = Vec::new();
        for round in 0..40_u32 {
            let events: Vec<u32> = (0..1 + round % 7).map(|i| round * 100 + i).collect();
            std::thread::scope(|s| {
                s.spawn(|| events.iter().for_each(|&e| ring.record(e, |_| ())));
            });
            all.extend(events);
            assert_eq!(
                ring.snapshot(),
                all[all.len() - 3.min(all.len())..],
                "round {round}"
            );
        }
    }

    #[test]
    fn disabled_ring_logs_nothing() {
        let ring = AuditRing::new(0);
        assert_eq!(ring.record("x", |e| *e), "x");
        assert!(ring.snapshot().is_empty());
    }
}

/// loom models of the ring itself, where stamps and positions are visible.
/// (`tests/loom_bus.rs` models it through the public API.) Under loom the
/// ring has three stripes: main and loom thread 1 own stripes 0 and 1,
/// later threads share stripe 2.
#[cfg(all(test, raceless_loom))]
mod loom_models {
    use super::*;

    /// Records `event` and returns its stamp.
    fn record(ring: &AuditRing<u32>, event: u32) -> u64 {
        let clock = ring.clock.as_ref().expect("an enabled ring");
        let at = thread_stamp(clock);
        let stripe = &ring.stripes[at.index];
        let pos = stripe.take_position(at.owned);
        let stamp = at.stamp;
        ring.place(stripe, Record { stamp, pos, event }, |_| ());
        stamp
    }

    /// Capacity 1, so every event opens a page. Main records one event,
    /// then two threads record one each: thread 1 on its own stripe,
    /// thread 2 on the shared one. The final log is the event with the
    /// largest stamp, whichever stripe it is in.
    #[test]
    fn racing_stripes_keep_the_newest() {
        loom::model(|| {
            let ring = Arc::new(AuditRing::new(1));
            record(&ring, 0);
            let spawn = |event: u32| {
                let ring = ring.clone();
                loom::thread::spawn(move || (record(&ring, event), event))
            };
            let (a, b) = (spawn(1), spawn(2));
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            assert_eq!(ring.snapshot(), vec![a.max(b).1]);
        });
    }

    /// Two threads share stripe 2 (loom threads 2 and 3) and emit at the
    /// same time, capacity 1, after main emitted on its own: the sharers'
    /// stamp and position orders may disagree, yet the event with the
    /// largest stamp is kept (the window keeps `capacity + 1` positions, so
    /// one overlapping sharer cannot push it out), and never twice.
    #[test]
    fn overlapping_emits_on_a_shared_stripe() {
        loom::model(|| {
            let ring = Arc::new(AuditRing::new(1));
            let s0 = record(&ring, 0);
            // Thread 1 takes the second owned stripe and does nothing.
            loom::thread::spawn(|| ()).join().unwrap();
            let spawn = |event: u32| {
                let ring = ring.clone();
                loom::thread::spawn(move || (record(&ring, event), event))
            };
            let (a, b) = (spawn(2), spawn(3));
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            let newest = [(s0, 0), a, b].into_iter().max().unwrap().1;
            assert_eq!(ring.snapshot(), vec![newest]);
        });
    }

    /// A snapshot racing emits on both stripes (capacity 2): it never shows
    /// an event twice or out of its thread's order, and once both are done
    /// it shows the two newest by stamp.
    #[test]
    fn snapshot_during_emits_on_two_stripes() {
        loom::model(|| {
            let ring = Arc::new(AuditRing::new(2));
            let s0 = record(&ring, 0);
            let emitter = {
                let ring = ring.clone();
                loom::thread::spawn(move || {
                    let a = record(&ring, 10);
                    let b = record(&ring, 11);
                    (a, b)
                })
            };
            let s1 = record(&ring, 1);
            let seen = ring.snapshot();
            assert!(seen.len() <= 2, "{seen:?}");
            for (x, y) in [(0, 1), (10, 11)] {
                let ix = seen.iter().position(|&e| e == x);
                let iy = seen.iter().position(|&e| e == y);
                if let (Some(ix), Some(iy)) = (ix, iy) {
                    assert!(ix < iy, "{seen:?}");
                }
            }
            let (a, b) = emitter.join().unwrap();
            let mut all = [(s0, 0), (s1, 1), (a, 10), (b, 11)];
            all.sort_unstable();
            let want: Vec<u32> = all[2..].iter().map(|&(_, e)| e).collect();
            assert_eq!(ring.snapshot(), want);
        });
    }
}
