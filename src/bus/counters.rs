//! Per-kind delivery counters, striped so that emitting threads do not
//! fight over one cache line.
//!
//! Each kind has a small power-of-two array of cache-padded stripes; a
//! thread adds to the stripe its thread index picks, and a reader sums all
//! stripes. Every update is a `Relaxed` `fetch_add`: the counters are
//! statistics that order nothing else, and read-modify-writes never lose an
//! increment. A sum taken while emits run may miss the increments of emits
//! still in flight; once they have returned (and the reader synchronizes
//! with them, e.g. by joining the threads) the sum is exact.

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// Delivered and failed handler calls for one event kind.
///
/// ```
/// use raceless::bus::{Event, EventBus};
///
/// #[derive(Clone)]
/// struct Ping;
/// impl Event for Ping {
///     type Kind = ();
///     fn kind(&self) {}
/// }
///
/// let bus = EventBus::<Ping>::new(0);
/// bus.subscribe((), |_| Ok(()));
/// bus.subscribe((), |_| Err("nope".into()));
/// bus.emit(Ping);
/// bus.emit(Ping);
/// let stats = bus.delivery_stats(&());
/// assert_eq!((stats.delivered, stats.failed), (2, 2));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct KindStats {
    /// Handler calls that returned `Ok`.
    pub delivered: u64,
    /// Handler calls that returned `Err` or panicked.
    pub failed: u64,
}

struct Stripe {
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// Striped delivered/failed counters.
pub(crate) struct DeliveryCounters {
    stripes: Box<[CachePadded<Stripe>]>,
}

/// The number of stripes for this machine: four times the cores, 4 to 64.
/// Thread indices are handed out round-robin, so up to that many emitting
/// threads each get a stripe of their own; with twice the cores, 8
/// threads on 2 cores shared 4 stripes in pairs, and a pair running on
/// both cores at once moved its stripe's line between them on every emit
/// (`bus/emit-stalled-channel`, 8 threads, 7 alternated runs: lock-free ÷
/// parking_lot 0.77 with 2× and 1.03 with 4×, medians of the paired
/// medians). A kind's counters then take 8 lines here, 64 at most.
pub(crate) fn stripe_count() -> usize {
    (std::thread::available_parallelism().map_or(4, |n| n.get()) * 4)
        .next_power_of_two()
        .clamp(4, 64)
}

/// A small per-thread index, handed out round-robin on a thread's first
/// use. A plain `std` atomic even under loom: it only spreads threads over
/// stripes and is not part of any protocol.
#[inline]
fn thread_index() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, StdOrdering::Relaxed);
    }
    INDEX.try_with(|i| *i).unwrap_or(0)
}

impl DeliveryCounters {
    /// `stripes` must be a power of two (see [`stripe_count`]).
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1))
                .map(|_| {
                    CachePadded::new(Stripe {
                        delivered: AtomicU64::new(0),
                        failed: AtomicU64::new(0),
                    })
                })
                .collect(),
        }
    }

    /// Adds one emit's outcome.
    #[inline]
    pub(crate) fn add(&self, delivered: usize, failed: usize) {
        if delivered == 0 && failed == 0 {
            return;
        }
        let mask = self.stripes.len() - 1;
        if let Some(stripe) = self.stripes.get(thread_index() & mask) {
            if delivered > 0 {
                stripe
                    .delivered
                    .fetch_add(delivered as u64, Ordering::Relaxed);
            }
            if failed > 0 {
                stripe.failed.fetch_add(failed as u64, Ordering::Relaxed);
            }
        }
    }

    /// The sums over all stripes.
    pub(crate) fn totals(&self) -> KindStats {
        self.stripes
            .iter()
            .fold(KindStats::default(), |acc, s| KindStats {
                delivered: acc.delivered + s.delivered.load(Ordering::Relaxed),
                failed: acc.failed + s.failed.load(Ordering::Relaxed),
            })
    }
}
