//! A per-thread cache of resolved names: the first level of name lookup
//! (see "Name lookup" in the module docs).
//!
//! Each thread keeps a small direct-mapped table of `(breaker id, name) →
//! slot`. A hit is a thread-local access, one hash and one string
//! comparison: no atomic read-modify-write, no shared line written, which is
//! what makes a lookup by name cheaper than even an uncontended mutex. It is
//! correct for the same reason as the snapshot: a name's slot is never
//! replaced while the name exists, so a cached slot is *the* slot (callers
//! treat one marked removed as a miss) and every operation still
//! linearizes on its word.
//!
//! Breaker ids come from a global counter and are never reused, so an entry
//! of a dropped breaker can never be hit; it only keeps its slot's memory
//! until the entry is overwritten or the thread exits (at most 128 slots per
//! thread).

#[cfg(not(raceless_loom))]
use std::cell::RefCell;
use std::hash::BuildHasher;

use super::state::Slot;
use super::SlotRef;

/// Sets per thread; each holds two entries (two-way associative, so two
/// hot names that hash alike do not evict each other).
const SETS: usize = 64;

/// A fresh breaker id. `Relaxed`: only uniqueness is needed (a
/// read-modify-write never returns one value twice).
pub(super) fn next_breaker_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The set of `name`. A fixed seed: a name chosen to collide can only
/// cost its owner cache misses.
#[inline]
pub(super) fn set_of(name: &str) -> usize {
    foldhash::fast::FixedState::default().hash_one(name) as usize % SETS
}

#[cfg(not(raceless_loom))]
struct Entry {
    breaker: u64,
    name: std::sync::Arc<str>,
    slot: SlotRef,
}

/// One set: two ways, the most recently inserted first.
#[cfg(not(raceless_loom))]
type Set = [Option<Entry>; 2];

#[cfg(not(raceless_loom))]
thread_local! {
    /// A fixed array (no lazy allocation, one indirection less than a `Vec`).
    static CACHE: RefCell<[Set; SETS]> = const { RefCell::new([const { [None, None] }; SETS]) };
}

/// Runs `f` on the cached slot of `name` in breaker `breaker`; `None` on
/// a miss (callers pass a copy of their closure and keep theirs).
#[cfg(not(raceless_loom))]
#[inline]
pub(super) fn with<R>(
    breaker: u64,
    set: usize,
    name: &str,
    f: impl FnOnce(&Slot) -> R,
) -> Option<R> {
    CACHE
        .try_with(|cache| {
            // `try_borrow`: `f` never re-enters, but a miss is always safe.
            let cache = cache.try_borrow().ok()?;
            let entry = cache
                .get(set)?
                .iter()
                .flatten()
                .find(|e| e.breaker == breaker && same_name(&e.name, name))?;
            Some(f(&entry.slot))
        })
        .ok()
        .flatten()
}

/// `a == b`, with names of 8 to 16 bytes compared inline as two
/// overlapping 8-byte loads straight from the slices (no `memcmp` call, no
/// copy into a buffer): a hit's comparison was a large part of a by-name
/// operation.
#[cfg(not(raceless_loom))]
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if !(8..=16).contains(&len) {
        return a == b;
    }
    let word = |s: &[u8], at: usize| s.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok());
    word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8)
}

/// Remembers `slot` as the slot of `name` in breaker `breaker`: it goes to
/// the first way of its set, the entry there moves to the second.
#[cfg(not(raceless_loom))]
#[cold]
pub(super) fn insert(breaker: u64, set: usize, name: &std::sync::Arc<str>, slot: &SlotRef) {
    let _ = CACHE.try_with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return;
        };
        if let Some(ways) = cache.get_mut(set) {
            ways[1] = ways[0].take();
            ways[0] = Some(Entry {
                breaker,
                name: name.clone(),
                slot: slot.clone(),
            });
        }
    });
}

/// Under loom the cache is off: loom runs its threads on one OS thread, so
/// a `thread_local!` would be shared by all of them, and the cache is only
/// an accelerator over the protocol loom checks.
#[cfg(raceless_loom)]
pub(super) fn with<R>(_: u64, _: usize, _: &str, _: impl FnOnce(&Slot) -> R) -> Option<R> {
    None
}

#[cfg(raceless_loom)]
pub(super) fn insert(_: u64, _: usize, _: &std::sync::Arc<str>, _: &SlotRef) {}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use super::same_name;
    use proptest::prelude::*;

    proptest! {
        /// The inline comparison agrees with `==` on every length, with
        /// pairs that differ only in one byte among them.
        #[test]
        fn same_name_is_string_equality(a in "[a-c]{0,24}", flip in any::<prop::sample::Index>()) {
            prop_assert!(same_name(&a, &a.clone()));
            if !a.is_empty() {
                let mut b = a.clone().into_bytes();
                let i = flip.index(b.len());
                b[i] = b'z';
                let b = String::from_utf8(b).unwrap();
                prop_assert!(!same_name(&a, &b));
            }
        }

        #[test]
        fn same_name_on_arbitrary_pairs(a in ".{0,20}", b in ".{0,20}") {
            prop_assert_eq!(same_name(&a, &b), a == b);
        }
    }
}
