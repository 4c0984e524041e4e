//! The audit log: a bounded record of the newest events, written without a
//! lock.
//!
//! # Protocol
//!
//! Every logged event takes a sequence number `seq` from one `fetch_add` on
//! `next`. Sequence numbers are grouped into *pages* of `capacity`: page
//! `seq / capacity`, slot `seq % capacity` (spread over cache lines by a
//! stride, below). A page is an array of write-once cells
//! ([`SetOnce`](crate::sync::SetOnce), i.e. `std::sync::OnceLock`), so each
//! slot is written exactly once, by the one emitter that drew its `seq`:
//! no two writers ever meet on a slot and `set` never waits.
//!
//! The ring is a *window* of two pages, the current one and the one before
//! it, held in an `ArcSwap` (RCU):
//!
//! ```text
//! record(event, deliver):                        # on every emit
//!     seq = next.fetch_add(1, Relaxed)
//!     rec = Record { seq, event }                # the event is moved, not copied
//!     p = seq / capacity
//!     loop:
//!         w = window.load()
//!         if w.current.number >= p: break
//!         window.compare_and_swap(w, w advanced to p)   # first emitter of page p
//!     if w has page p: slot = w.page(p).slot(seq); slot.set(rec); deliver(&slot.get().event)
//!     else: deliver(&rec.event)   # p is two pages behind: not among the newest `capacity`
//!
//! advanced to p:  current = new page p,
//!                 previous = old current if it is page p − 1, else a new page p − 1
//!
//! snapshot():
//!     w = window.load(); collect every set slot of w.previous and w.current
//!     sort by seq, keep the last `capacity`, clone the events out
//! ```
//!
//! A page is allocated once per `capacity` events (by whoever first needs
//! it) and dropped, with the events it holds, once the window has moved two
//! pages past it and no reader holds it: the log holds at most
//! `2 × capacity` events and returns at most `capacity`.
//!
//! The slots hold the records themselves, moved in by their only writer:
//! no allocation per event (the window's page is one allocation per
//! `capacity` events), and the emit path hands the handlers the event where
//! it lies in the slot, under the window guard it already holds. Nothing
//! here stores a pointer as an integer. (Session 1's ring swapped records
//! through `crossbeam_utils::atomic::AtomicCell<Option<Arc<_>>>`, which
//! transmutes the pointer to an integer and back; Miri rightly reported the
//! lost provenance as undefined behaviour.) arc-swap cells per slot would
//! also be sound but make every write walk all threads' debt lists, which
//! measured 3–5× slower than a `Mutex<VecDeque>` on the emit path (see
//! `docs/bus.md`); here arc-swap is written once per page.
//!
//! # Guarantees and why they hold
//!
//! Let `N` be the number of sequence numbers handed out.
//!
//! - **One object per page.** The window's current page number only grows
//!   (every install raises it). An install of page `p` creates page
//!   `p − 1` only when the current page is older than `p − 1`, so page
//!   `p − 1` was never in any window before: each page number gets exactly
//!   one page object while it is in the window, and never returns after
//!   leaving it.
//! - **Never over capacity**: the snapshot keeps at most `capacity` records.
//! - **None twice**: sequence numbers are unique, each record is set into
//!   one slot of one page once, and a snapshot reads each slot of each of
//!   its two pages once.
//! - **None torn**: a record is immutable and published by `OnceLock::set`,
//!   whose completion is a release that the reader's `get` acquires.
//! - **Keeps the newest.** An emitter of page `p` loads windows until the
//!   current page is at least `p`; the window then holds page `p` (as
//!   current, or previous when the current is `p + 1`) unless the current
//!   is `p + 2` or more — but then someone drew a `seq ≥ (p + 2)·capacity`,
//!   so this event is not among the newest `capacity` and may be dropped.
//!   Once every emit has returned, the window's pages are `q − 1` and `q`
//!   with `q = (N − 1) / capacity`, they contain every `seq` in
//!   `N − capacity .. N` (by the above and uniqueness of page objects), and
//!   a snapshot returns exactly those: the newest `capacity` events.
//! - **One thread's surviving events keep their order**: one thread's
//!   `fetch_add`s on `next` are ordered in `next`'s modification order in
//!   program order (read-modify-write coherence), so its later event has a
//!   larger `seq`, and the snapshot sorts by `seq`.
//! - **Lock-free**: a `set` never waits (one writer per slot); the install
//!   loop retries only when another install succeeded, each of which raises
//!   the current page.
//!
//! A snapshot taken while emits run is consistent per record, not across
//! records: it can miss an event whose emitter has drawn its `seq` but not
//! set it yet, and show an older one that such an event would evict. Each
//! guarantee above still holds for every snapshot.
//!
//! # Orderings
//!
//! `next.fetch_add` is `Relaxed`: only its atomicity (uniqueness) and
//! per-location coherence (per-thread monotonicity) are used; it publishes
//! nothing. Pages are published by arc-swap's compare-and-swap and acquired
//! by its load (a page is fully built before it is installed); records by
//! `OnceLock` (release on `set`, acquire on `get`).

use crate::sync::{Arc, ArcSwap, AtomicU64, CachePadded, Guard, Ordering, SetOnce};

/// One logged event and its sequence number.
pub(crate) struct Record<E> {
    seq: u64,
    event: E,
}

/// The write-once slots of the sequence numbers
/// `number · capacity .. (number + 1) · capacity`.
struct Page<E> {
    number: u64,
    slots: Box<[SetOnce<Record<E>>]>,
}

impl<E> Page<E> {
    fn new(number: u64, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            number,
            slots: (0..capacity).map(|_| SetOnce::new()).collect(),
        })
    }
}

/// What the ring currently holds: the newest page and the one before it.
struct Window<E> {
    current: Arc<Page<E>>,
    /// Page `current.number − 1` (`None` only while the current page is 0).
    previous: Option<Arc<Page<E>>>,
}

impl<E> Window<E> {
    /// The page numbered `number`, if it is in the window.
    fn page(&self, number: u64) -> Option<&Page<E>> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|page| page.number == number)
            .map(|page| &**page)
    }

    /// The window whose current page is `number` (newer than ours): ours
    /// carried over as its previous page if it is `number − 1`, a new page
    /// otherwise.
    fn advanced_to(&self, number: u64, capacity: usize) -> Self {
        let previous = if self.current.number + 1 == number {
            Arc::clone(&self.current)
        } else {
            Page::new(number - 1, capacity)
        };
        Self {
            current: Page::new(number, capacity),
            previous: Some(previous),
        }
    }
}

/// A bounded, lock-free log keeping the newest `capacity` events.
pub(crate) struct AuditRing<E> {
    /// The next sequence number. Padded: every emit increments it.
    next: CachePadded<AtomicU64>,
    /// The two newest pages; `None` when the log is disabled.
    window: Option<ArcSwap<Window<E>>>,
    capacity: usize,
    /// Spreads consecutive sequence numbers over cache lines: the slot of
    /// `seq` in its page is `(seq % capacity) * stride % capacity`, a
    /// bijection since `stride` is coprime with `capacity`. Emitters
    /// running side by side then write different lines instead of
    /// neighbouring cells.
    stride: u64,
}

/// The smallest stride at least 17 (more than the 8 cells of a 128-byte
/// line) coprime with `capacity`; 1 for rings too small to spread.
fn stride_for(capacity: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if capacity <= 32 {
        return 1;
    }
    (17..capacity).find(|&k| gcd(k, capacity) == 1).unwrap_or(1)
}

impl<E> AuditRing<E> {
    /// A ring of `capacity` events; 0 disables logging.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            next: CachePadded::new(AtomicU64::new(0)),
            window: (capacity > 0).then(|| {
                ArcSwap::from_value(Window {
                    current: Page::new(0, capacity),
                    previous: None,
                })
            }),
            capacity,
            stride: stride_for(capacity as u64),
        }
    }

    /// The capacity given at construction.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Logs `event` (moved, never cloned) and runs `deliver` on it as it
    /// sits in the log (the emit path calls the handlers there).
    pub(crate) fn record<R: Default>(&self, event: E, deliver: impl FnOnce(&E) -> R) -> R {
        let Some(cell) = &self.window else {
            return deliver(&event);
        };
        // Relaxed: see the module docs (uniqueness and per-thread order only).
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.place(cell, seq, event, deliver)
    }

    /// Puts `event` under sequence number `seq` in the window `cell` and
    /// delivers it.
    fn place<R: Default>(
        &self,
        cell: &ArcSwap<Window<E>>,
        seq: u64,
        event: E,
        deliver: impl FnOnce(&E) -> R,
    ) -> R {
        let record = Record { seq, event };
        let window = self.window_for(cell, seq);
        match self.slot(&window, seq) {
            // The only writer of this slot: `set` succeeds and never waits.
            Some(slot) => match slot.set(record) {
                Ok(()) => match slot.get() {
                    Some(stored) => deliver(&stored.event),
                    // Unreachable: `get` after a successful `set` is `Some`.
                    None => R::default(),
                },
                // Unreachable (one writer per slot); deliver it unlogged.
                Err(record) => deliver(&record.event),
            },
            // Two pages behind: not among the newest `capacity`.
            None => deliver(&record.event),
        }
    }

    /// A window holding the page of `seq` unless that page is already two
    /// behind, installing the page first if needed (see the module docs).
    fn window_for(&self, cell: &ArcSwap<Window<E>>, seq: u64) -> Guard<Window<E>> {
        let number = seq / self.capacity as u64;
        loop {
            let window = cell.load();
            if window.current.number >= number {
                return window;
            }
            // Whether this install or a concurrent one wins, the current
            // page has grown; load again.
            cell.compare_and_swap(&window, Arc::new(window.advanced_to(number, self.capacity)));
        }
    }

    /// The slot of `seq` in `window`, if its page is there.
    fn slot<'w>(&self, window: &'w Window<E>, seq: u64) -> Option<&'w SetOnce<Record<E>>> {
        let capacity = self.capacity as u64;
        // `… % capacity < capacity == slots.len()`: always in bounds. The
        // product fits in u64 unless the capacity is beyond 2³²; then u128.
        let index = match (seq % capacity).checked_mul(self.stride) {
            Some(spread) => spread % capacity,
            None => {
                (u128::from(seq % capacity) * u128::from(self.stride) % u128::from(capacity)) as u64
            }
        } as usize;
        window.page(seq / capacity)?.slots.get(index)
    }

    /// The logged events, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<E>
    where
        E: Clone,
    {
        let Some(cell) = &self.window else {
            return Vec::new();
        };
        // A full `Arc` rather than a guard: the scan is long, and arc-swap
        // guards are meant to be short-lived.
        let window = cell.load_full();
        let mut records: Vec<&Record<E>> = std::iter::once(&window.current)
            .chain(&window.previous)
            .flat_map(|page| page.slots.iter().filter_map(SetOnce::get))
            .collect();
        records.sort_unstable_by_key(|r| r.seq);
        let older = records.len().saturating_sub(self.capacity);
        records[older..].iter().map(|r| r.event.clone()).collect()
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

    fn late(ring: &AuditRing<u64>, seq: u64) {
        let cell = ring.window.as_ref().expect("an enabled ring");
        ring.place(cell, seq, seq, |_| ());
    }

    #[test]
    fn a_late_writer_lands_in_the_previous_page_or_is_too_old() {
        let ring = AuditRing::new(2);
        // Sequence numbers 1 and 2 are drawn, but their emitters are late.
        for seq in [0, 3, 4] {
            late(&ring, seq);
        }
        // Window: pages 1 (seq 2, 3) and 2 (seq 4, 5). Seq 2 still lands in
        // page 1; seq 1 (page 0) is too old to be among the newest two.
        late(&ring, 2);
        late(&ring, 1);
        assert_eq!(ring.snapshot(), vec![3, 4]);
        late(&ring, 5);
        assert_eq!(ring.snapshot(), vec![4, 5]);
    }

    #[test]
    fn an_emitter_that_skips_a_page_creates_the_one_before() {
        let ring = AuditRing::new(2);
        // Seq 6 (page 3) installs pages 2 and 3 over page 0; seq 5 (page 2)
        // is still kept.
        late(&ring, 6);
        late(&ring, 5);
        assert_eq!(ring.snapshot(), vec![5, 6]);
    }

    #[test]
    fn stride_is_a_bijection() {
        for capacity in [1_u64, 7, 32, 33, 64, 100, 1024, 1155] {
            let stride = stride_for(capacity);
            let mut hit = vec![false; capacity as usize];
            for i in 0..capacity {
                hit[(i * stride % capacity) as usize] = true;
            }
            assert!(hit.iter().all(|&h| h), "capacity {capacity}");
        }
        let ring = AuditRing::new(100);
        for i in 0..250 {
            ring.record(i, |_| ());
        }
        assert_eq!(ring.snapshot(), (150..250).collect::<Vec<_>>());
    }

    /// Three emitters and a reader on a small ring (short under Miri, which
    /// checks the pointer handling): snapshots never exceed the capacity or
    /// repeat an event, and once quiet each thread's logged events are the
    /// last ones it emitted, in order.
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

    #[test]
    fn disabled_ring_logs_nothing() {
        let ring = AuditRing::new(0);
        assert_eq!(ring.record("x", |e| *e), "x");
        assert!(ring.snapshot().is_empty());
    }
}

/// loom models of the ring itself, where the sequence numbers are visible.
/// (`tests/loom_bus.rs` models it through the public API.)
#[cfg(all(test, raceless_loom))]
mod loom_models {
    use super::*;

    /// Records `event` and returns the sequence number it drew.
    fn record(ring: &AuditRing<u32>, event: u32) -> u64 {
        let seq = ring.next.fetch_add(1, Ordering::Relaxed);
        let cell = ring.window.as_ref().expect("an enabled ring");
        ring.place(cell, seq, event, |_| ());
        seq
    }

    /// Capacity 1, so every event opens a page. After one event, two
    /// threads record one each: their page installs race, and the one that
    /// drew the newer number may lose the compare-and-swap to the older
    /// one's page. Whatever the interleaving, the final log is the event
    /// with the largest sequence number.
    #[test]
    fn racing_page_installs_keep_the_newest() {
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

    /// A snapshot racing an emit that opens a new page (capacity 2, page 0
    /// full): it shows the two newest events before or after the emit,
    /// never a duplicated one (with capacity 1 the truncation to the newest
    /// would hide a page read twice).
    #[test]
    fn snapshot_during_a_page_change() {
        loom::model(|| {
            let ring = Arc::new(AuditRing::new(2));
            record(&ring, 0);
            record(&ring, 1);
            let emitter = {
                let ring = ring.clone();
                loom::thread::spawn(move || {
                    record(&ring, 2);
                })
            };
            let seen = ring.snapshot();
            assert!(seen == [0, 1] || seen == [1, 2], "{seen:?}");
            emitter.join().unwrap();
            assert_eq!(ring.snapshot(), vec![1, 2]);
        });
    }
}
