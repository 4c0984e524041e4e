//! The audit log: a bounded ring of the newest events, written without a
//! lock.
//!
//! # Protocol
//!
//! Every logged event takes a sequence number `seq` from one `fetch_add` on
//! `next` and owns the slot `seq % capacity`. Each slot is an
//! [`ArcSwapOption`] of a `Record { seq, event }`. The emitter installs its
//! record with a compare-and-swap loop that only ever replaces an *older*
//! record (smaller `seq`): if the slot already holds a newer one, the
//! emitter's event has been overtaken by `capacity` later events and is not
//! logged at all. So a slot's `seq` only grows, and at any quiescent point
//! slot `i` holds the newest event whose `seq ≡ i (mod capacity)`, which
//! means the ring holds exactly the last `capacity` events.
//!
//! A reader loads every slot once and sorts the records by `seq`.
//!
//! # Guarantees and why they hold
//!
//! - **Never over capacity**: there are `capacity` slots and a reader takes
//!   at most one record from each.
//! - **None twice**: a record lives in exactly one slot (the one its `seq`
//!   names), is installed at most once and never copied to another slot;
//!   the reader loads each slot once.
//! - **None torn**: a record is immutable and published whole by the
//!   pointer swap; the reader holds an `Arc` of it while cloning the event.
//! - **Keeps the newest**: a slot's `seq` is monotonic (the CAS never
//!   installs an older record), so once all emits have returned, slot `i`
//!   holds the largest `seq ≡ i` handed out, i.e. one of the last
//!   `capacity` sequence numbers.
//! - **One thread's surviving events keep their order**: one thread's
//!   `fetch_add`s on `next` are ordered in `next`'s modification order in
//!   program order (read-modify-write coherence), so its later event has a
//!   larger `seq`, and the reader sorts by `seq`.
//!
//! # Orderings
//!
//! `next.fetch_add` is `Relaxed`: only its atomicity (uniqueness) and
//! per-location coherence (per-thread monotonicity) are used; it publishes
//! nothing. The record itself is published by the arc-swap
//! compare-and-swap, whose release/acquire pairs with the reader's load (in
//! arc-swap every pointer operation is `SeqCst`), so a reader that sees the
//! pointer sees the whole record.
//!
//! `compare_and_swap` compares pointers; the emitter holds an `Arc` of the
//! record it compared against, so that allocation cannot be freed and
//! reused under it (no ABA).
//!
//! A snapshot is consistent per slot, not across slots: a reader racing
//! with emitters can see an event next to an older one that a concurrent
//! emit is about to evict. Each of the guarantees above still holds for
//! every snapshot.

use std::ops::Deref;

use crate::sync::{Arc, ArcSwapOption, AtomicU64, CachePadded, Ordering};

/// One logged event and its sequence number.
pub(crate) struct Record<E> {
    seq: u64,
    event: E,
}

/// An emitted event as the emit path holds it while calling handlers: the
/// very record in the log (no copy), or the event itself if the log is
/// disabled.
pub(crate) enum Held<E> {
    /// Logged: shared with the ring.
    Logged(Arc<Record<E>>),
    /// Not logged (capacity 0).
    Unlogged(E),
}

impl<E> Deref for Held<E> {
    type Target = E;
    fn deref(&self) -> &E {
        match self {
            Held::Logged(record) => &record.event,
            Held::Unlogged(event) => event,
        }
    }
}

/// A bounded, lock-free ring keeping the newest `capacity` events.
pub(crate) struct AuditRing<E> {
    /// The next sequence number. Padded: every emit increments it.
    next: CachePadded<AtomicU64>,
    /// `capacity` slots; empty when the log is disabled.
    slots: Box<[ArcSwapOption<Record<E>>]>,
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl<E> AuditRing<E> {
    /// A ring of `capacity` slots; 0 disables logging.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            next: CachePadded::new(AtomicU64::new(0)),
            slots: (0..capacity).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// The capacity given at construction.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Logs `event` (moved, never cloned) and hands it back for delivery.
    pub(crate) fn record(&self, event: E) -> Held<E> {
        let capacity = self.slots.len() as u64;
        if capacity == 0 {
            return Held::Unlogged(event);
        }
        // Relaxed: see the module docs (uniqueness and per-thread order only).
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(Record { seq, event });
        // `seq % capacity < capacity == slots.len()`: always in bounds.
        if let Some(slot) = self.slots.get((seq % capacity) as usize) {
            let mut current = slot.load_full();
            loop {
                if current.as_ref().is_some_and(|c| c.seq > seq) {
                    // Overtaken by a newer event of this slot: ours is
                    // already out of the window of the newest `capacity`.
                    break;
                }
                let previous = slot.compare_and_swap(&current, Some(record.clone()));
                if same(&previous, &current) {
                    break;
                }
                current = previous;
            }
        }
        Held::Logged(record)
    }

    /// The logged events, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<E>
    where
        E: Clone,
    {
        let mut records: Vec<Arc<Record<E>>> = self
            .slots
            .iter()
            .filter_map(ArcSwapOption::load_full)
            .collect();
        records.sort_unstable_by_key(|r| r.seq);
        records.iter().map(|r| r.event.clone()).collect()
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_in_order() {
        let ring = AuditRing::new(3);
        for i in 0..10 {
            assert_eq!(*ring.record(i), i);
        }
        assert_eq!(ring.snapshot(), vec![7, 8, 9]);
        assert_eq!(ring.capacity(), 3);
    }

    #[test]
    fn disabled_ring_logs_nothing() {
        let ring = AuditRing::new(0);
        assert_eq!(*ring.record("x"), "x");
        assert!(ring.snapshot().is_empty());
    }
}
