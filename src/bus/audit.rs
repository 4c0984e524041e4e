//! The audit log: a bounded ring of the newest events, written without a
//! lock.
//!
//! # Protocol
//!
//! Every logged event takes a sequence number `seq` from one `fetch_add` on
//! `next` and belongs to the slot `seq % capacity`. A slot is one atomic
//! pointer cell (`crossbeam_utils::atomic::AtomicCell<Option<Arc<Record>>>`,
//! lock-free: a single atomic exchange) whose only operation is `swap`.
//! Records are *moved*, never copied, between the slot and the threads that
//! momentarily hold them, and every holder puts back the newer of what it
//! holds and what it finds:
//!
//! ```text
//! put_max(slot, carry):
//!     loop:
//!         old = slot.swap(carry)
//!         if old is None or old.seq < carry.seq: drop old; return   // old is evicted
//!         carry = old                                              // we displaced a newer one: put it back
//! ```
//!
//! An emitter calls `put_max` with its new record. In the common case the
//! slot holds the record from `capacity` events ago and one exchange is the
//! whole write. A reader takes each slot's record out (`swap(None)`), keeps
//! a clone of the `Arc` and puts it back with `put_max`, then sorts what it
//! collected by `seq`.
//!
//! arc-swap's `ArcSwapOption` would give the same guarantees with
//! compare-and-swap, but arc-swap makes every *write* pay the debts of all
//! threads' read slots (it is built for read-mostly cells); an audit ring
//! is written on every emit and read rarely, and measured 3–5× slower than
//! a `Mutex<VecDeque>` that way (see `docs/bus.md`).
//!
//! # Guarantees and why they hold
//!
//! - **Never over capacity**: there are `capacity` slots and a reader takes
//!   at most one record from each.
//! - **None twice**: a record is only ever moved (one `Arc` in the slot or
//!   in one thread's hand, never both), into the one slot its `seq` names;
//!   a reader visits each slot once and sequence numbers are unique.
//! - **None torn**: a record is immutable and moved whole by the pointer
//!   exchange (`AcqRel`: the release publishes its contents, the taker's
//!   acquire sees them).
//! - **Keeps the newest**: a record is dropped only by a thread that holds
//!   a strictly newer record of the same slot, which it goes on to put
//!   back. So the newest record ever given to a slot is always in the slot
//!   or in some thread's hand, and once every emit and read has returned,
//!   slot `i` holds the largest `seq ≡ i (mod capacity)` handed out: the
//!   ring holds exactly the last `capacity` events.
//! - **One thread's surviving events keep their order**: one thread's
//!   `fetch_add`s on `next` are ordered in `next`'s modification order in
//!   program order (read-modify-write coherence), so its later event has a
//!   larger `seq`, and the reader sorts by `seq`.
//! - **Lock-free**: `put_max` terminates — each iteration strictly raises
//!   the `seq` carried, and only the finitely many records concurrently
//!   written to the slot can be met.
//!
//! A snapshot is consistent per record, not across slots: while emits or
//! other reads run, a record can be momentarily out of its slot (held by a
//! reader or displaced by a late emitter), so a snapshot can miss an event
//! or show one that an in-flight emit is about to evict. Each guarantee
//! above still holds for every snapshot, and once the ring is quiescent a
//! snapshot is exactly the newest `capacity` events.
//!
//! # Orderings
//!
//! `next.fetch_add` is `Relaxed`: only its atomicity (uniqueness) and
//! per-location coherence (per-thread monotonicity) are used; it publishes
//! nothing. Records are published and taken by the `AcqRel` exchange on
//! the slot.

use std::ops::Deref;

use crate::sync::{Arc, AtomicU64, CachePadded, Ordering};

/// One slot: an atomic `Option<Arc<T>>` whose only operation is `swap`.
#[cfg(not(raceless_loom))]
struct Slot<T>(crossbeam_utils::atomic::AtomicCell<Option<Arc<T>>>);

#[cfg(not(raceless_loom))]
impl<T> Slot<T> {
    fn empty() -> Self {
        Self(crossbeam_utils::atomic::AtomicCell::new(None))
    }
    fn swap(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
        self.0.swap(value)
    }
}

/// Stand-in under loom: an exchange made atomic by a loom mutex (loom
/// models `AtomicCell`'s contract, one atomic exchange, not its internals).
#[cfg(raceless_loom)]
struct Slot<T>(loom::sync::Mutex<Option<Arc<T>>>);

#[cfg(raceless_loom)]
impl<T> Slot<T> {
    fn empty() -> Self {
        Self(loom::sync::Mutex::new(None))
    }
    fn swap(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, value)
    }
}

impl<T: HasSeq> Slot<T> {
    /// Puts `carry` into the slot, keeping the newer record whenever two
    /// meet (see the module docs).
    fn put_max(&self, mut carry: Arc<T>) {
        loop {
            let seq = carry.seq();
            match self.swap(Some(carry)) {
                None => return,
                // `<=`: sequence numbers are unique, but a loop must end anyway.
                Some(old) if old.seq() <= seq => return, // `old` is evicted
                Some(newer) => carry = newer,            // put the newer one back
            }
        }
    }
}

trait HasSeq {
    fn seq(&self) -> u64;
}

/// One logged event and its sequence number.
pub(crate) struct Record<E> {
    seq: u64,
    event: E,
}

impl<E> HasSeq for Record<E> {
    fn seq(&self) -> u64 {
        self.seq
    }
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
    slots: Box<[Slot<Record<E>>]>,
    /// Spreads consecutive sequence numbers over cache lines: the slot of
    /// `seq` is `(seq % capacity) * stride % capacity`, a bijection since
    /// `stride` is coprime with `capacity`. Emitters running side by side
    /// then write different lines instead of neighbouring pointers.
    stride: u64,
}

/// The smallest stride at least 17 (more than the 16 pointers of a
/// 128-byte line) coprime with `capacity`; 1 for rings too small to spread.
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
    /// A ring of `capacity` slots; 0 disables logging.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            next: CachePadded::new(AtomicU64::new(0)),
            slots: (0..capacity).map(|_| Slot::empty()).collect(),
            stride: stride_for(capacity as u64),
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
        // `… % capacity < capacity == slots.len()`: always in bounds. The
        // slot is a bijective function of `seq % capacity`, which is all
        // the protocol needs.
        // In u128: the product cannot overflow whatever the capacity.
        let index =
            (u128::from(seq % capacity) * u128::from(self.stride) % u128::from(capacity)) as usize;
        if let Some(slot) = self.slots.get(index) {
            slot.put_max(record.clone());
        }
        Held::Logged(record)
    }

    /// The logged events, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<E>
    where
        E: Clone,
    {
        let mut records: Vec<Arc<Record<E>>> = Vec::with_capacity(self.slots.len());
        for slot in self.slots.iter() {
            if let Some(record) = slot.swap(None) {
                records.push(record.clone());
                slot.put_max(record);
            }
        }
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
    fn slots_are_lock_free() {
        assert!(crossbeam_utils::atomic::AtomicCell::<
            Option<Arc<Record<String>>>,
        >::is_lock_free());
    }

    #[test]
    fn a_late_writer_never_evicts_a_newer_record() {
        let ring = AuditRing::new(1);
        ring.record(0);
        ring.record(1);
        // A record older than the one in the slot (as a late emitter's
        // would be) is dropped; the newer one is put back.
        if let Some(slot) = ring.slots.first() {
            slot.put_max(Arc::new(Record { seq: 0, event: 0 }));
        }
        assert_eq!(ring.snapshot(), vec![1]);
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
            ring.record(i);
        }
        assert_eq!(ring.snapshot(), (150..250).collect::<Vec<_>>());
    }

    #[test]
    fn disabled_ring_logs_nothing() {
        let ring = AuditRing::new(0);
        assert_eq!(*ring.record("x"), "x");
        assert!(ring.snapshot().is_empty());
    }
}
