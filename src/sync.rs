//! The synchronization primitives our protocols are built on, switchable to
//! [loom] for model checking.
//!
//! Every lock-free protocol in this crate imports its atomics, `Arc`, sharded
//! map and RCU cells from here, never from `std`, `dashmap`, `arc-swap` or
//! `sdd` directly. Under `--cfg raceless_loom` the same names resolve to
//! loom's atomics and `Arc`, and to small stand-ins for the third-party
//! structures:
//!
//! | name here        | normal build                      | `cfg(raceless_loom)`                  |
//! |------------------|-----------------------------------|---------------------------------------|
//! | atomics, `Arc`   | `std::sync`                       | `loom::sync`                          |
//! | [`ShardedMap`]   | `dashmap::DashMap`                | a loom `RwLock<HashMap>`              |
//! | [`ArcSwap`]      | `arc_swap::ArcSwap`               | a loom `RwLock<Arc<T>>`               |
//! | [`ArcSwapOption`]| `arc_swap::ArcSwapOption`         | a loom `RwLock<Option<Arc<T>>>`       |
//! | [`EpochCell`]    | `sdd::AtomicShared` (epoch-reclaimed, a mark in its tag bits) | a loom `RwLock<(Arc<T>, bool)>` |
//! | [`SetOnce`]      | `std::sync::OnceLock`             | a `OnceLock` + loom `AtomicBool` flag |
//! | [`AppendVec`]    | `boxcar::Vec` (bounded use)       | `SetOnce` cells + a loom index counter |
//! | [`ThreadCache`]  | a table per thread (`thread_local::ThreadLocal`) | one table for all threads, behind a loom `Mutex` |
//!
//! The stand-ins implement exactly the documented contract of the real
//! structures (each map operation and each cell operation is atomic and
//! linearizable; `compare_and_swap` compares pointers), so loom explores
//! *our* protocol on top of that contract instead of re-checking the crates'
//! internals.
//!
//! The map is only reachable through closures (`entry`, `read`), so no
//! `DashMap` guard can escape and be held across another call on the same
//! map — DashMap's documented deadlocks (its issues #74, #151, #369) are
//! ruled out by construction. Closures passed to it must not touch the map
//! again and must not run user code.
//!
//! [loom]: https://docs.rs/loom

#![allow(dead_code, unused_imports)] // not every component uses every primitive

use std::borrow::Borrow;
use std::hash::Hash;

#[cfg(not(raceless_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc,
};

#[cfg(raceless_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc,
};

pub(crate) use crossbeam_utils::CachePadded;

/// The hasher of every [`ShardedMap`]: foldhash is several times faster than
/// SipHash on short keys and still seeded per map, so keys chosen by an
/// outside client cannot be aimed at one shard.
pub(crate) type MapHasher = foldhash::fast::RandomState;

/// A view of one map slot, valid while the shard lock is held (inside the
/// closure passed to [`ShardedMap::entry`]).
pub(crate) enum Entry<'a, K, V> {
    /// The key is present.
    Occupied(OccupiedEntry<'a, K, V>),
    /// The key is absent.
    Vacant(VacantEntry<'a, K, V>),
}

#[cfg(not(raceless_loom))]
mod imp {
    use super::*;

    pub(crate) struct OccupiedEntry<'a, K, V>(dashmap::mapref::entry::OccupiedEntry<'a, K, V>);
    pub(crate) struct VacantEntry<'a, K, V>(dashmap::mapref::entry::VacantEntry<'a, K, V>);

    impl<K: Eq + Hash, V> OccupiedEntry<'_, K, V> {
        pub(crate) fn key(&self) -> &K {
            self.0.key()
        }
        pub(crate) fn get(&self) -> &V {
            self.0.get()
        }
        pub(crate) fn get_mut(&mut self) -> &mut V {
            self.0.get_mut()
        }
        pub(crate) fn insert(&mut self, value: V) -> V {
            self.0.insert(value)
        }
        pub(crate) fn remove(self) -> V {
            self.0.remove()
        }
    }

    impl<K: Eq + Hash, V> VacantEntry<'_, K, V> {
        pub(crate) fn key(&self) -> &K {
            self.0.key()
        }
        pub(crate) fn insert(self, value: V) {
            self.0.insert(value);
        }
    }

    /// A concurrent hash map sharded by key (`dashmap::DashMap`).
    pub(crate) struct ShardedMap<K, V> {
        inner: dashmap::DashMap<K, V, MapHasher>,
    }

    /// The fewest shards a [`ShardedMap`] has. DashMap's default is 4 ×
    /// the available parallelism (8 on a 2-core machine). Our users run
    /// more threads than cores: a thread preempted inside a shard lock makes
    /// every thread that hashes to that shard spin and then park until it
    /// runs again, and how often that happens scales with 1 / shards. At 8
    /// threads on 2 cores the 1,000-pair arcs cycle fell into such convoys
    /// (8–10 M instead of 15–18 M ops/s) in 3 of 6 runs with 8 shards and
    /// in none of 6 with 64 (`docs/arcs.md`); one thread is unaffected. An
    /// empty shard costs one cache-padded lock word and an empty table.
    ///
    /// Not under Miri: there every map walk (`len`, `for_each`, `retain`)
    /// and every construction visits each shard at interpreter speed, and
    /// the shard count does not change what Miri checks (our protocol on
    /// DashMap's per-key contract), so Miri keeps DashMap's default.
    const MIN_SHARDS: usize = if cfg!(miri) { 1 } else { 64 };

    /// DashMap's default shard count, but at least [`MIN_SHARDS`] (a power
    /// of two either way, as DashMap requires).
    fn shard_amount() -> usize {
        static AMOUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *AMOUNT.get_or_init(|| {
            let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
            (parallelism * 4).next_power_of_two().max(MIN_SHARDS)
        })
    }

    impl<K: Eq + Hash, V> ShardedMap<K, V> {
        pub(crate) fn new() -> Self {
            Self {
                inner: dashmap::DashMap::with_hasher_and_shard_amount(
                    MapHasher::default(),
                    shard_amount(),
                ),
            }
        }

        /// Runs `f` on the slot of `key` with its shard write-locked.
        ///
        /// `entry`, `read` and `remove_if` are `#[inline(always)]`: a
        /// caller's closure result (a snapshot, say) then stays in
        /// registers instead of going through the stack, where narrow
        /// stores read back by wide loads stall (`docs/arcs.md`,
        /// Performance).
        #[inline(always)]
        pub(crate) fn entry<R>(&self, key: K, f: impl FnOnce(Entry<'_, K, V>) -> R) -> R {
            match self.inner.entry(key) {
                dashmap::mapref::entry::Entry::Occupied(e) => f(Entry::Occupied(OccupiedEntry(e))),
                dashmap::mapref::entry::Entry::Vacant(e) => f(Entry::Vacant(VacantEntry(e))),
            }
        }

        /// Runs `f` on the value of `key` with its shard read-locked.
        #[inline(always)]
        pub(crate) fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.inner.get(key).map(|r| f(r.value()))
        }

        /// Removes `key` if `pred` holds for its value, atomically.
        #[inline(always)]
        pub(crate) fn remove_if<Q>(
            &self,
            key: &Q,
            pred: impl FnOnce(&K, &V) -> bool,
        ) -> Option<(K, V)>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.inner.remove_if(key, pred)
        }

        pub(crate) fn remove<Q>(&self, key: &Q) -> Option<(K, V)>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.inner.remove(key)
        }

        pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
            self.inner.insert(key, value)
        }

        pub(crate) fn len(&self) -> usize {
            self.inner.len()
        }

        /// Calls `f` on every entry, one shard read-locked at a time. Not a
        /// consistent snapshot across shards; `f` must not touch the map.
        pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
            for r in self.inner.iter() {
                f(r.key(), r.value());
            }
        }

        /// Keeps only the entries for which `f` returns true, one shard
        /// write-locked at a time; `f` must not touch the map.
        pub(crate) fn retain(&self, f: impl FnMut(&K, &mut V) -> bool) {
            self.inner.retain(f)
        }
    }

    /// An RCU cell holding an `Arc<T>` (`arc_swap::ArcSwap`).
    pub(crate) struct ArcSwap<T>(arc_swap::ArcSwap<T>);

    /// A read guard of an [`ArcSwap`]: derefs to the `Arc<T>` it loaded.
    pub(crate) type Guard<T> = arc_swap::Guard<Arc<T>>;

    impl<T> ArcSwap<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            Self(arc_swap::ArcSwap::new(value))
        }
        pub(crate) fn from_value(value: T) -> Self {
            Self::new(Arc::new(value))
        }
        /// A cheap, short-lived read (no reference-count traffic on the fast path).
        pub(crate) fn load(&self) -> Guard<T> {
            self.0.load()
        }
        pub(crate) fn load_full(&self) -> Arc<T> {
            self.0.load_full()
        }
        pub(crate) fn store(&self, value: Arc<T>) {
            self.0.store(value)
        }
        pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
            self.0.swap(value)
        }
        /// Installs `new` if the cell still holds `current` (pointer
        /// equality); returns the value it held, so success is
        /// `Arc::ptr_eq(&returned, current)`.
        pub(crate) fn compare_and_swap(&self, current: &Arc<T>, new: Arc<T>) -> Arc<T> {
            arc_swap::Guard::into_inner(self.0.compare_and_swap(current, new))
        }
        /// Read-copy-update: retries `f` on the latest value until its result
        /// is installed; returns the value `f` was last applied to.
        pub(crate) fn rcu(&self, f: impl FnMut(&Arc<T>) -> Arc<T>) -> Arc<T> {
            self.0.rcu(f)
        }
    }

    /// An RCU cell holding an `Option<Arc<T>>` (`arc_swap::ArcSwapOption`).
    pub(crate) struct ArcSwapOption<T>(arc_swap::ArcSwapOption<T>);

    /// A read guard of an [`ArcSwapOption`]: derefs to the `Option<Arc<T>>`
    /// it loaded.
    pub(crate) type GuardOption<T> = arc_swap::Guard<Option<Arc<T>>>;

    impl<T> ArcSwapOption<T> {
        pub(crate) fn new(value: Option<Arc<T>>) -> Self {
            Self(arc_swap::ArcSwapOption::new(value))
        }
        /// A cheap, short-lived read: on the fast path no reference-count
        /// update and no write to a line other threads share (arc-swap
        /// records the borrow in a slot of the calling thread).
        pub(crate) fn load(&self) -> GuardOption<T> {
            self.0.load()
        }
        pub(crate) fn empty() -> Self {
            Self(arc_swap::ArcSwapOption::empty())
        }
        pub(crate) fn load_full(&self) -> Option<Arc<T>> {
            self.0.load_full()
        }
        pub(crate) fn store(&self, value: Option<Arc<T>>) {
            self.0.store(value)
        }
        pub(crate) fn swap(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
            self.0.swap(value)
        }
        /// Installs `new` if the cell still holds `current` (pointer
        /// equality, `None` equal to `None`); returns the value it held.
        pub(crate) fn compare_and_swap(
            &self,
            current: &Option<Arc<T>>,
            new: Option<Arc<T>>,
        ) -> Option<Arc<T>> {
            arc_swap::Guard::into_inner(self.0.compare_and_swap(current, new))
        }
        pub(crate) fn rcu(
            &self,
            f: impl FnMut(&Option<Arc<T>>) -> Option<Arc<T>>,
        ) -> Option<Arc<T>> {
            self.0.rcu(f)
        }
    }

    /// An epoch pin (`sdd::Guard`): while it lives, no value loaded from
    /// an [`EpochCell`] under it is reclaimed, so a [`Loaded`] reference
    /// stays valid and its address cannot be reused (no ABA for a
    /// compare-and-swap against it). Pinning costs one thread-local
    /// exchange; nothing shared is written. Hold it only for a few steps,
    /// never across user code (it holds back reclamation).
    pub(crate) struct Pin(sdd::Guard);

    impl Pin {
        #[inline]
        pub(crate) fn new() -> Self {
            Self(sdd::Guard::new())
        }
    }

    /// A value loaded from an [`EpochCell`], valid while its [`Pin`] lives:
    /// the pointer (for a compare-and-swap) and the reference.
    pub(crate) struct Loaded<'g, T> {
        ptr: sdd::Ptr<'g, T>,
        value: &'g T,
    }

    impl<T> std::ops::Deref for Loaded<'_, T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            self.value
        }
    }

    impl<T> Loaded<'_, T> {
        /// Whether the cell held this value *marked* ([`EpochCell::mark`]).
        #[inline]
        pub(crate) fn marked(&self) -> bool {
            self.ptr.tag() != sdd::Tag::None
        }
    }

    /// A reference-counted value for an [`EpochCell`] (`sdd::Shared`):
    /// freed when the last owner drops it and no pin can still see it.
    pub(crate) struct Owned<T>(sdd::Shared<T>);

    impl<T: 'static> Owned<T> {
        #[inline]
        pub(crate) fn new(value: T) -> Self {
            Self(sdd::Shared::new(value))
        }
    }

    impl<T> Clone for Owned<T> {
        #[inline]
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    impl<T> std::ops::Deref for Owned<T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            &self.0
        }
    }

    /// An atomic pointer to an immutable shared value, never null, whose
    /// replaced values are reclaimed by epochs (`sdd::AtomicShared`, used
    /// through its safe API only).
    ///
    /// A load is one atomic load under a [`Pin`] (no reference-count or
    /// shared write); a compare-and-swap is one `compare_exchange` of the
    /// pointer. Unlike arc-swap, a write never visits the readers' state:
    /// the replaced value is retired to the writer's thread-local collector
    /// and freed once every thread has left the epochs that could see it.
    ///
    /// Orderings: every load and compare-and-swap is `SeqCst`. Publication
    /// needs only `Release` on the successful compare-and-swap and `Acquire`
    /// on the load (whatever happened before a publishing CAS — the value's
    /// construction, a registration — is visible to whoever loads the
    /// value); `SeqCst` puts all operations on all cells in one total order,
    /// which the linearization arguments of the callers use, and costs the
    /// same instructions as `Acquire`/`AcqRel` on x86-64 (a plain load, a
    /// `lock cmpxchg`) and AArch64 (`ldar`, a release-acquire CAS).
    pub(crate) struct EpochCell<T>(sdd::AtomicShared<T>);

    impl<T: 'static> EpochCell<T> {
        #[inline]
        pub(crate) fn new(value: T) -> Self {
            Self(sdd::AtomicShared::new(value))
        }
    }

    impl<T> EpochCell<T> {
        /// The current value, valid while `pin` lives.
        #[inline]
        pub(crate) fn load<'g>(&self, pin: &'g Pin) -> Loaded<'g, T> {
            let ptr = self.0.load(Ordering::SeqCst, &pin.0);
            match ptr.as_ref() {
                Some(value) => Loaded { ptr, value },
                // Every constructor and every write stores a value.
                None => unreachable!("an EpochCell is never empty"),
            }
        }

        /// Whether the cell's value is marked ([`EpochCell::mark`]): one
        /// `SeqCst` load of the cell's word, no pin and no access to the
        /// value (`sdd::AtomicShared::tag`). A mark is removed only by
        /// installing a new value, so `true` says the cell held a marked
        /// value at that load.
        #[inline]
        pub(crate) fn marked(&self) -> bool {
            self.0.tag(Ordering::SeqCst) != sdd::Tag::None
        }

        /// An owned handle of the current value (a reference-count
        /// increment), and whether it is marked ([`EpochCell::mark`]).
        #[inline]
        pub(crate) fn load_owned(&self) -> (Owned<T>, bool) {
            let guard = sdd::Guard::new();
            loop {
                let ptr = self.0.load(Ordering::SeqCst, &guard);
                if ptr.is_null() {
                    unreachable!("an EpochCell is never empty");
                }
                // `None` only if the value was replaced and released since
                // the load: read the new one.
                if let Some(value) = ptr.get_shared() {
                    return (Owned(value), ptr.tag() != sdd::Tag::None);
                }
            }
        }

        /// Marks the cell if it still holds `current` unmarked: one
        /// compare-and-swap of the cell's word (the pointer and its tag bits,
        /// `sdd::Tag::First`), no allocation; `true` if it marked. The value
        /// stays; a mark is never removed, and a marked value leaves the cell
        /// only through [`compare_exchange`](Self::compare_exchange) or
        /// [`swap`](Self::swap), which install a new value unmarked. So a
        /// cell's word never returns to a (pointer, mark) pair it left while
        /// a pin keeps the pointer allocated: the mark, like a new value, is
        /// a change that every compare-and-swap against the old word sees.
        #[inline]
        pub(crate) fn mark<'g>(&self, current: &Loaded<'g, T>, _pin: &'g Pin) -> bool {
            if current.marked() {
                return false;
            }
            let expected = current.ptr;
            // One `compare_exchange_weak` loop of the word (`fetch_update`),
            // which sets the tag only while the word equals `expected`
            // (pointer and tag): a compare-and-swap. `SeqCst` like every
            // other cell operation.
            self.0.update_tag_if(
                sdd::Tag::First,
                |now| now == expected,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
        }

        /// Installs `new` if the cell still holds `current` (pointer
        /// identity): `Ok` with the installed value, or `Err` with `new`
        /// handed back and the value the cell holds. The replaced value is
        /// released (freed once no pin can see it).
        #[inline]
        pub(crate) fn compare_exchange<'g>(
            &self,
            current: Loaded<'g, T>,
            new: Owned<T>,
            pin: &'g Pin,
        ) -> Result<Loaded<'g, T>, (Owned<T>, Loaded<'g, T>)> {
            match self.0.compare_exchange(
                current.ptr,
                (Some(new.0), sdd::Tag::None),
                Ordering::SeqCst,
                Ordering::SeqCst,
                &pin.0,
            ) {
                Ok((_replaced, ptr)) => match ptr.as_ref() {
                    Some(value) => Ok(Loaded { ptr, value }),
                    None => unreachable!("an EpochCell is never empty"),
                },
                Err((new, ptr)) => match (new, ptr.as_ref()) {
                    (Some(new), Some(value)) => Err((Owned(new), Loaded { ptr, value })),
                    _ => unreachable!("an EpochCell is never empty"),
                },
            }
        }

        /// Installs `new` unconditionally; returns the value it replaced.
        #[inline]
        pub(crate) fn swap(&self, new: Owned<T>) -> Owned<T> {
            match self.0.swap((Some(new.0), sdd::Tag::None), Ordering::SeqCst) {
                (Some(old), _) => Owned(old),
                (None, _) => unreachable!("an EpochCell is never empty"),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn maps_have_at_least_min_shards_and_a_power_of_two() {
            let shards = shard_amount();
            // DashMap asserts a power of two: a map must build.
            assert!(shards >= MIN_SHARDS && shards.is_power_of_two(), "{shards}");
            ShardedMap::<u32, u32>::new().entry(1, |e| {
                if let Entry::Vacant(v) = e {
                    v.insert(2);
                }
            });
        }
    }
}

#[cfg(raceless_loom)]
mod imp {
    use super::*;
    use loom::sync::RwLock;
    use std::collections::hash_map;
    use std::collections::HashMap;

    pub(crate) struct OccupiedEntry<'a, K, V>(hash_map::OccupiedEntry<'a, K, V>);
    pub(crate) struct VacantEntry<'a, K, V>(hash_map::VacantEntry<'a, K, V>);

    impl<K: Eq + Hash, V> OccupiedEntry<'_, K, V> {
        pub(crate) fn key(&self) -> &K {
            self.0.key()
        }
        pub(crate) fn get(&self) -> &V {
            self.0.get()
        }
        pub(crate) fn get_mut(&mut self) -> &mut V {
            self.0.get_mut()
        }
        pub(crate) fn insert(&mut self, value: V) -> V {
            self.0.insert(value)
        }
        pub(crate) fn remove(self) -> V {
            self.0.remove()
        }
    }

    impl<K: Eq + Hash, V> VacantEntry<'_, K, V> {
        pub(crate) fn key(&self) -> &K {
            self.0.key()
        }
        pub(crate) fn insert(self, value: V) {
            self.0.insert(value);
        }
    }

    /// Stand-in for `DashMap`: one loom `RwLock` over a `HashMap`, which
    /// gives every operation the atomicity DashMap documents per key.
    /// (A fixed hasher: loom replays executions, and iteration order must
    /// not change between them.)
    pub(crate) struct ShardedMap<K, V> {
        inner: RwLock<HashMap<K, V, foldhash::fast::FixedState>>,
    }

    impl<K: Eq + Hash, V> ShardedMap<K, V> {
        pub(crate) fn new() -> Self {
            Self {
                inner: RwLock::new(HashMap::default()),
            }
        }

        pub(crate) fn entry<R>(&self, key: K, f: impl FnOnce(Entry<'_, K, V>) -> R) -> R {
            let mut map = self.inner.write().unwrap();
            match map.entry(key) {
                hash_map::Entry::Occupied(e) => f(Entry::Occupied(OccupiedEntry(e))),
                hash_map::Entry::Vacant(e) => f(Entry::Vacant(VacantEntry(e))),
            }
        }

        pub(crate) fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.inner.read().unwrap().get(key).map(f)
        }

        pub(crate) fn remove_if<Q>(
            &self,
            key: &Q,
            pred: impl FnOnce(&K, &V) -> bool,
        ) -> Option<(K, V)>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let mut map = self.inner.write().unwrap();
            let keep = match map.get_key_value(key) {
                Some((k, v)) => !pred(k, v),
                None => true,
            };
            if keep {
                None
            } else {
                map.remove_entry(key)
            }
        }

        pub(crate) fn remove<Q>(&self, key: &Q) -> Option<(K, V)>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.inner.write().unwrap().remove_entry(key)
        }

        pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
            self.inner.write().unwrap().insert(key, value)
        }

        pub(crate) fn len(&self) -> usize {
            self.inner.read().unwrap().len()
        }

        pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
            for (k, v) in self.inner.read().unwrap().iter() {
                f(k, v);
            }
        }

        pub(crate) fn retain(&self, mut f: impl FnMut(&K, &mut V) -> bool) {
            self.inner.write().unwrap().retain(|k, v| f(k, v))
        }
    }

    /// Stand-in for `ArcSwap`: a loom `RwLock<Arc<T>>`; each operation is
    /// atomic, as arc-swap documents, and `compare_and_swap` compares pointers.
    pub(crate) struct ArcSwap<T>(RwLock<Arc<T>>);

    /// A read guard of an [`ArcSwap`]: derefs to the `Arc<T>` it loaded.
    pub(crate) struct Guard<T>(Arc<T>);

    impl<T> std::ops::Deref for Guard<T> {
        type Target = Arc<T>;
        fn deref(&self) -> &Arc<T> {
            &self.0
        }
    }

    impl<T> ArcSwap<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            Self(RwLock::new(value))
        }
        pub(crate) fn from_value(value: T) -> Self {
            Self::new(Arc::new(value))
        }
        pub(crate) fn load(&self) -> Guard<T> {
            Guard(self.load_full())
        }
        pub(crate) fn load_full(&self) -> Arc<T> {
            self.0.read().unwrap().clone()
        }
        pub(crate) fn store(&self, value: Arc<T>) {
            *self.0.write().unwrap() = value;
        }
        pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
            std::mem::replace(&mut *self.0.write().unwrap(), value)
        }
        pub(crate) fn compare_and_swap(&self, current: &Arc<T>, new: Arc<T>) -> Arc<T> {
            let mut slot = self.0.write().unwrap();
            let previous = slot.clone();
            if Arc::ptr_eq(&previous, current) {
                *slot = new;
            }
            previous
        }
        pub(crate) fn rcu(&self, mut f: impl FnMut(&Arc<T>) -> Arc<T>) -> Arc<T> {
            // Same shape as arc-swap's rcu: load, compute outside the cell,
            // compare-and-swap, retry on interference.
            let mut current = self.load_full();
            loop {
                let new = f(&current);
                let previous = self.compare_and_swap(&current, new);
                if Arc::ptr_eq(&previous, &current) {
                    return current;
                }
                current = previous;
            }
        }
    }

    /// Stand-in for the epoch pin: nothing to pin (the stand-in's loaded
    /// values are `Arc`s, which keep them alive and their addresses unused).
    pub(crate) struct Pin(());

    impl Pin {
        pub(crate) fn new() -> Self {
            Self(())
        }
    }

    /// A value loaded from the stand-in [`EpochCell`]: an `Arc` of it and
    /// its mark.
    pub(crate) struct Loaded<'g, T> {
        value: Arc<T>,
        marked: bool,
        _pin: std::marker::PhantomData<&'g Pin>,
    }

    impl<T> std::ops::Deref for Loaded<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.value
        }
    }

    impl<T> Loaded<'_, T> {
        pub(crate) fn marked(&self) -> bool {
            self.marked
        }
    }

    /// Stand-in for `sdd::Shared`: a loom `Arc`.
    pub(crate) struct Owned<T>(Arc<T>);

    impl<T: 'static> Owned<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(Arc::new(value))
        }
    }

    impl<T> Clone for Owned<T> {
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    impl<T> std::ops::Deref for Owned<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    /// Stand-in for the epoch cell (`sdd::AtomicShared`): a loom
    /// `RwLock<(Arc<T>, bool)>`, the value and its mark. Each operation is
    /// atomic and the compare-and-swaps compare the pointer and the mark,
    /// the contract of the real cell (pointer and tag in one word) with
    /// `SeqCst` operations.
    pub(crate) struct EpochCell<T>(RwLock<(Arc<T>, bool)>);

    impl<T: 'static> EpochCell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(RwLock::new((Arc::new(value), false)))
        }
    }

    impl<T> EpochCell<T> {
        pub(crate) fn load<'g>(&self, _pin: &'g Pin) -> Loaded<'g, T> {
            let slot = self.0.read().unwrap();
            Loaded {
                value: slot.0.clone(),
                marked: slot.1,
                _pin: std::marker::PhantomData,
            }
        }
        pub(crate) fn marked(&self) -> bool {
            self.0.read().unwrap().1
        }
        pub(crate) fn load_owned(&self) -> (Owned<T>, bool) {
            let slot = self.0.read().unwrap();
            (Owned(slot.0.clone()), slot.1)
        }
        pub(crate) fn mark<'g>(&self, current: &Loaded<'g, T>, _pin: &'g Pin) -> bool {
            let mut slot = self.0.write().unwrap();
            if Arc::ptr_eq(&slot.0, &current.value) && !slot.1 && !current.marked {
                slot.1 = true;
                true
            } else {
                false
            }
        }
        pub(crate) fn compare_exchange<'g>(
            &self,
            current: Loaded<'g, T>,
            new: Owned<T>,
            _pin: &'g Pin,
        ) -> Result<Loaded<'g, T>, (Owned<T>, Loaded<'g, T>)> {
            let mut slot = self.0.write().unwrap();
            if Arc::ptr_eq(&slot.0, &current.value) && slot.1 == current.marked {
                *slot = (new.0.clone(), false);
                Ok(Loaded {
                    value: new.0,
                    marked: false,
                    _pin: std::marker::PhantomData,
                })
            } else {
                Err((
                    new,
                    Loaded {
                        value: slot.0.clone(),
                        marked: slot.1,
                        _pin: std::marker::PhantomData,
                    },
                ))
            }
        }
        pub(crate) fn swap(&self, new: Owned<T>) -> Owned<T> {
            Owned(std::mem::replace(&mut *self.0.write().unwrap(), (new.0, false)).0)
        }
    }

    /// Stand-in for `ArcSwapOption`: a loom `RwLock<Option<Arc<T>>>`.
    pub(crate) struct ArcSwapOption<T>(RwLock<Option<Arc<T>>>);

    fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// A read guard of an [`ArcSwapOption`]: derefs to the `Option<Arc<T>>`
    /// it loaded.
    pub(crate) struct GuardOption<T>(Option<Arc<T>>);

    impl<T> std::ops::Deref for GuardOption<T> {
        type Target = Option<Arc<T>>;
        fn deref(&self) -> &Option<Arc<T>> {
            &self.0
        }
    }

    impl<T> ArcSwapOption<T> {
        pub(crate) fn new(value: Option<Arc<T>>) -> Self {
            Self(RwLock::new(value))
        }
        pub(crate) fn load(&self) -> GuardOption<T> {
            GuardOption(self.load_full())
        }
        pub(crate) fn empty() -> Self {
            Self::new(None)
        }
        pub(crate) fn load_full(&self) -> Option<Arc<T>> {
            self.0.read().unwrap().clone()
        }
        pub(crate) fn store(&self, value: Option<Arc<T>>) {
            *self.0.write().unwrap() = value;
        }
        pub(crate) fn swap(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
            std::mem::replace(&mut *self.0.write().unwrap(), value)
        }
        pub(crate) fn compare_and_swap(
            &self,
            current: &Option<Arc<T>>,
            new: Option<Arc<T>>,
        ) -> Option<Arc<T>> {
            let mut slot = self.0.write().unwrap();
            let previous = slot.clone();
            if same(&previous, current) {
                *slot = new;
            }
            previous
        }
        pub(crate) fn rcu(
            &self,
            mut f: impl FnMut(&Option<Arc<T>>) -> Option<Arc<T>>,
        ) -> Option<Arc<T>> {
            let mut current = self.load_full();
            loop {
                let new = f(&current);
                let previous = self.compare_and_swap(&current, new);
                if same(&previous, &current) {
                    return current;
                }
                current = previous;
            }
        }
    }
}

pub(crate) use imp::{
    ArcSwap, ArcSwapOption, Guard, GuardOption, OccupiedEntry, ShardedMap, VacantEntry,
};
pub(crate) use imp::{EpochCell, Loaded, Owned, Pin};

/// A write-once cell (`std::sync::OnceLock`): `set` succeeds for the first
/// caller only; `get` sees the value once a `set` has completed
/// (release/acquire). Used where each cell has exactly one writer, so `set`
/// never waits.
#[cfg(not(raceless_loom))]
pub(crate) struct SetOnce<T>(std::sync::OnceLock<T>);

#[cfg(not(raceless_loom))]
impl<T> SetOnce<T> {
    pub(crate) fn new() -> Self {
        Self(std::sync::OnceLock::new())
    }
    /// Stores `value` unless the cell is already set (then hands it back).
    pub(crate) fn set(&self, value: T) -> Result<(), T> {
        self.0.set(value)
    }
    /// The value, if set.
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.get()
    }
    /// Moves the value out (the cell is owned: no other thread sees it).
    pub(crate) fn take(&mut self) -> Option<T> {
        self.0.take()
    }
}

/// Stand-in under loom: the value in a std `OnceLock`, its publication
/// through a loom `AtomicBool` (set after the value with `Release`, read
/// with `Acquire` before it), so loom sees — and explores — exactly the
/// contract's synchronization.
#[cfg(raceless_loom)]
pub(crate) struct SetOnce<T> {
    value: std::sync::OnceLock<T>,
    published: AtomicBool,
}

#[cfg(raceless_loom)]
impl<T> SetOnce<T> {
    pub(crate) fn new() -> Self {
        Self {
            value: std::sync::OnceLock::new(),
            published: AtomicBool::new(false),
        }
    }
    pub(crate) fn set(&self, value: T) -> Result<(), T> {
        self.value.set(value)?;
        self.published.store(true, Ordering::Release);
        Ok(())
    }
    pub(crate) fn get(&self) -> Option<&T> {
        if self.published.load(Ordering::Acquire) {
            self.value.get()
        } else {
            None
        }
    }
    pub(crate) fn take(&mut self) -> Option<T> {
        self.value.take()
    }
}

/// A bounded append-only vector (`boxcar::Vec`, its buckets allocated up
/// front): `push` takes a unique index (one `fetch_add`), writes the value
/// in place and publishes it (release store of the entry's flag, then a
/// `fetch_add` of the count); `get` and `iter` see a value once its push
/// published it (acquire). Lock-free; no dynamic call, unlike a
/// `OnceLock` per cell. Used with at most `capacity` pushes.
#[cfg(not(raceless_loom))]
pub(crate) struct AppendVec<T>(boxcar::Vec<T>);

#[cfg(not(raceless_loom))]
impl<T> AppendVec<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self(boxcar::Vec::with_capacity(capacity))
    }
    /// Appends `value`; returns its index.
    #[inline]
    pub(crate) fn push(&self, value: T) -> usize {
        self.0.push(value)
    }
    /// The value at `index`, once its push has published it.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.0.get(index)
    }
    /// Every published value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, value)| value)
    }
}

/// Stand-in under loom: `capacity` [`SetOnce`] cells and a loom counter
/// handing out the indices (`Relaxed`: only uniqueness), so loom explores
/// the publication (release on `set`, acquire on `get`) of every value.
#[cfg(raceless_loom)]
pub(crate) struct AppendVec<T> {
    cells: Box<[SetOnce<T>]>,
    next: AtomicUsize,
}

#[cfg(raceless_loom)]
impl<T> AppendVec<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            cells: (0..capacity).map(|_| SetOnce::new()).collect(),
            next: AtomicUsize::new(0),
        }
    }
    pub(crate) fn push(&self, value: T) -> usize {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        match self.cells.get(index).map(|cell| cell.set(value)) {
            Some(Ok(())) => index,
            _ => panic!("AppendVec: more pushes than its capacity"),
        }
    }
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.cells.get(index)?.get()
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.cells.iter().filter_map(SetOnce::get)
    }
}

impl<K: Eq + Hash, V: Clone> ShardedMap<K, V> {
    /// A clone of the value of `key` (for `Arc` values: a reference-count
    /// bump), taken with the shard read-locked and released at once.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read(key, V::clone)
    }

    /// The value of `key`, inserting `make()` first if it is absent.
    pub(crate) fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        // Fast path: a read lock when the key exists (the common case on hot
        // names); the entry API decides the race when it does not.
        if let Some(v) = self.get(&key) {
            return v;
        }
        self.entry(key, |e: Entry<'_, K, V>| match e {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let v = make();
                e.insert(v.clone());
                v
            }
        })
    }
}

impl<K: Eq + Hash + Clone, V: Clone> ShardedMap<K, V> {
    /// A copy of every entry, one shard at a time: consistent per entry,
    /// never while user code runs. Readers of "all" work on this.
    pub(crate) fn snapshot(&self) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|k, v| out.push((k.clone(), v.clone())));
        out
    }
}

impl<K: Eq + Hash, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// The audit log's stamps and per-thread stripes

/// How many audit stripes threads can own: one per thread that holds a
/// stripe index (see [`thread_stamp`]). Two under loom.
pub(crate) const AUDIT_OWNED_STRIPES: usize = if cfg!(raceless_loom) { 2 } else { 64 };
/// How many audit stripes threads without an index of their own share. One
/// under loom.
pub(crate) const AUDIT_SHARED_STRIPES: usize = if cfg!(raceless_loom) { 1 } else { 8 };
/// All audit stripes: the owned ones, then the shared ones.
pub(crate) const AUDIT_STRIPES: usize = AUDIT_OWNED_STRIPES + AUDIT_SHARED_STRIPES;

/// Where the calling thread writes its next audit record, and its stamp.
pub(crate) struct ThreadStamp {
    /// The stripe: `0 .. AUDIT_STRIPES`.
    pub(crate) index: usize,
    /// Whether the thread holds `index` exclusively (then it is the only
    /// writer of that stripe in every log, and may advance the stripe's
    /// position counter with a load and a store).
    pub(crate) owned: bool,
    /// `max(clock, the thread's previous stamp)`.
    pub(crate) stamp: u64,
}

/// The audit log's clock: a cheap reading that every thread can compare.
///
/// Normally `quanta::Clock::raw`: the CPU's time-stamp counter where it is
/// invariant (quanta checks, and calibrates once per process), else the
/// OS monotonic clock; a TSC read costs a few nanoseconds where
/// `Instant::now` costs a system-clock read. Under Miri (no TSC) it is
/// `std::time::Instant`; under loom a loom atomic counter (deterministic,
/// and every reading is a step loom schedules).
pub(crate) struct StampClock {
    #[cfg(all(not(raceless_loom), not(miri)))]
    clock: quanta::Clock,
    #[cfg(all(not(raceless_loom), miri))]
    base: std::time::Instant,
    #[cfg(raceless_loom)]
    ticks: AtomicU64,
}

impl StampClock {
    pub(crate) fn new() -> Self {
        #[cfg(all(not(raceless_loom), not(miri)))]
        {
            // One calibration per process; clones share it.
            static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
            Self {
                clock: CLOCK.get_or_init(quanta::Clock::new).clone(),
            }
        }
        #[cfg(all(not(raceless_loom), miri))]
        {
            static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            Self {
                base: *BASE.get_or_init(std::time::Instant::now),
            }
        }
        #[cfg(raceless_loom)]
        {
            Self {
                ticks: AtomicU64::new(1),
            }
        }
    }

    /// The current reading. Not necessarily monotonic across threads or
    /// cores; [`thread_stamp`] makes it monotonic per thread.
    #[inline]
    pub(crate) fn read(&self) -> u64 {
        #[cfg(all(not(raceless_loom), not(miri)))]
        {
            self.clock.raw()
        }
        #[cfg(all(not(raceless_loom), miri))]
        {
            self.base.elapsed().as_nanos() as u64
        }
        #[cfg(raceless_loom)]
        {
            // Relaxed: a reading orders nothing; the counter only has to
            // hand out increasing values.
            self.ticks.fetch_add(1, Ordering::Relaxed)
        }
    }
}

/// The calling thread's audit stripe and a stamp for its next record:
/// `max(clock.read(), the thread's previous stamp)`, so a thread's stamps
/// never decrease whatever the clock does across cores.
///
/// A thread claims an owned stripe index (`0 .. AUDIT_OWNED_STRIPES`) on
/// first use, from a process-wide bitmap of that many bits (one
/// compare-and-swap, lock-free), and gives it back when it exits, with its
/// last stamp: the next thread to claim that index starts from that stamp,
/// so within one index, stamps never decrease across owners either (the
/// give-back and the claim are a release/acquire pair). While every index
/// is held, a thread uses one of the shared stripes (by a hash of an
/// address on its stack), as does an emit during thread teardown: see the audit module
/// for what sharing costs.
#[cfg(not(raceless_loom))]
#[inline]
pub(crate) fn thread_stamp(clock: &StampClock) -> ThreadStamp {
    let now = clock.read();
    THREAD_STRIPE
        .try_with(|slot| {
            let stamp = now.max(slot.last.get());
            slot.last.set(stamp);
            ThreadStamp {
                index: slot.index,
                owned: slot.owned,
                stamp,
            }
        })
        // During thread teardown (an emit from another thread-local's
        // destructor, after this one is gone): the first shared stripe,
        // the clock as it is.
        .unwrap_or(ThreadStamp {
            index: AUDIT_OWNED_STRIPES,
            owned: false,
            stamp: now,
        })
}

#[cfg(not(raceless_loom))]
mod stripes {
    use super::AUDIT_OWNED_STRIPES;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Bit `i` set: stripe index `i` is held by a live thread.
    static CLAIMED: AtomicU64 = AtomicU64::new(0);
    /// The last stamp of the thread that gave index `i` back.
    static FLOOR: [AtomicU64; AUDIT_OWNED_STRIPES] =
        [const { AtomicU64::new(0) }; AUDIT_OWNED_STRIPES];

    const _: () = assert!(AUDIT_OWNED_STRIPES == 64, "CLAIMED has one bit per stripe");

    /// A thread's stripe index and its last stamp.
    pub(crate) struct ThreadStripe {
        pub(crate) index: usize,
        /// Whether `index` is this thread's own (to give back on exit).
        pub(crate) owned: bool,
        pub(crate) last: Cell<u64>,
    }

    impl ThreadStripe {
        pub(crate) fn claim() -> Self {
            // Relaxed load: a stale value only makes the CAS fail and retry.
            let mut claimed = CLAIMED.load(Ordering::Relaxed);
            loop {
                let free = !claimed;
                if free == 0 {
                    return Self {
                        index: super::shared_stripe(),
                        owned: false,
                        last: Cell::new(0),
                    };
                }
                let index = free.trailing_zeros() as usize;
                // Acquire on success: pairs with the Release of the
                // previous owner's give-back, so its FLOOR store (and all
                // its records) happen-before this thread's use.
                match CLAIMED.compare_exchange_weak(
                    claimed,
                    claimed | (1 << index),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        return Self {
                            index,
                            owned: true,
                            // Relaxed: ordered by the Acquire above.
                            last: Cell::new(FLOOR[index].load(Ordering::Relaxed)),
                        };
                    }
                    Err(now) => claimed = now,
                }
            }
        }
    }

    impl Drop for ThreadStripe {
        fn drop(&mut self) {
            if self.owned {
                // Relaxed store, then the Release that publishes it.
                FLOOR[self.index].store(self.last.get(), Ordering::Relaxed);
                CLAIMED.fetch_and(!(1 << self.index), Ordering::Release);
            }
        }
    }
}

#[cfg(not(raceless_loom))]
std::thread_local! {
    static THREAD_STRIPE: stripes::ThreadStripe = stripes::ThreadStripe::claim();
}

/// A shared stripe for a thread that found every index held: by a hash of
/// an address on its stack (threads have distinct stacks).
#[cfg(not(raceless_loom))]
fn shared_stripe() -> usize {
    use std::hash::BuildHasher;
    let marker = 0_u8;
    let address = std::ptr::addr_of!(marker) as usize;
    let hash = foldhash::fast::FixedState::default().hash_one(address);
    AUDIT_OWNED_STRIPES + (hash >> 32) as usize % AUDIT_SHARED_STRIPES
}

/// Under loom: loom threads 0 (main) and 1 own stripes 0 and 1, every
/// later thread shares stripe 2 (deterministic: loom numbers threads in
/// spawn order), so models have threads alone on their stripes and threads
/// sharing one; the previous stamp lives in a loom thread-local.
#[cfg(raceless_loom)]
pub(crate) fn thread_stamp(clock: &StampClock) -> ThreadStamp {
    loom::thread_local! {
        static LAST: std::cell::Cell<u64> = std::cell::Cell::new(0);
    }
    let now = clock.read();
    let id = format!("{:?}", loom::thread::current().id());
    let number: usize = id
        .trim_start_matches("ThreadId(")
        .trim_end_matches(')')
        .parse()
        .unwrap_or(usize::MAX);
    let stamp = LAST.with(|last| {
        let stamp = now.max(last.get());
        last.set(stamp);
        stamp
    });
    let owned = number < AUDIT_OWNED_STRIPES;
    ThreadStamp {
        index: if owned { number } else { AUDIT_OWNED_STRIPES },
        owned,
        stamp,
    }
}

/// A small direct-mapped table of entries per thread (per owning
/// structure): a thread looks up, by hash, entries it put there itself,
/// with no atomic read-modify-write and no store to a line another thread
/// reads. Entries are hints that the owner re-validates (on a state word
/// the entry points to, which moves one way only); an entry stays until
/// the thread's slot is overwritten or the cache is dropped, so it may pin
/// a stale value that long.
///
/// Under `cfg(raceless_loom)` one table is shared by every thread behind a
/// loom `Mutex` (`with` runs its closure under it) and entries are never
/// cleared: any entry a thread can see in the real per-thread table (one it
/// put there earlier) it can see in the stand-in too, so loom tries every
/// stale entry the real cache could offer, and more.
pub(crate) struct ThreadCache<T: Send> {
    #[cfg(not(raceless_loom))]
    tables: thread_local::ThreadLocal<ThreadTable<T>>,
    #[cfg(raceless_loom)]
    table: loom::sync::Mutex<Vec<Option<T>>>,
    slots: usize,
}

/// One thread's table of a [`ThreadCache`], on its own cache line (each
/// lookup writes the `RefCell`'s borrow count).
#[cfg(not(raceless_loom))]
type ThreadTable<T> = CachePadded<std::cell::RefCell<Box<[Option<T>]>>>;

impl<T: Send> ThreadCache<T> {
    /// Tables of `slots` entries (rounded up to a power of two).
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.next_power_of_two();
        Self {
            #[cfg(not(raceless_loom))]
            tables: thread_local::ThreadLocal::new(),
            #[cfg(raceless_loom)]
            table: loom::sync::Mutex::new((0..slots).map(|_| None).collect()),
            slots,
        }
    }

    #[allow(clippy::cast_possible_truncation)] // the low bits pick the slot
    fn index(&self, hash: u64) -> usize {
        hash as usize & (self.slots - 1)
    }

    /// `f` of the calling thread's entry for `hash`, if it has one (`None`
    /// also within a reentrant call from `f` that finds the table borrowed
    /// for writing, which `f` never does itself).
    #[inline]
    pub(crate) fn with<R>(&self, hash: u64, f: impl FnOnce(&T) -> Option<R>) -> Option<R> {
        let index = self.index(hash);
        #[cfg(not(raceless_loom))]
        {
            let table = self.tables.get()?.try_borrow().ok()?;
            f(table[index].as_ref()?)
        }
        #[cfg(raceless_loom)]
        {
            f(self.table.lock().unwrap()[index].as_ref()?)
        }
    }

    /// Makes `entry` the calling thread's entry for `hash`, replacing the
    /// one there (dropped after the table's borrow ends: its drop may be
    /// user code that calls back in); nothing while the table is borrowed.
    pub(crate) fn put(&self, hash: u64, entry: T) {
        let index = self.index(hash);
        #[cfg(not(raceless_loom))]
        let replaced = {
            let table = self.tables.get_or(|| {
                CachePadded::new(std::cell::RefCell::new(
                    (0..self.slots).map(|_| None).collect(),
                ))
            });
            let Ok(mut table) = table.try_borrow_mut() else {
                return;
            };
            table[index].replace(entry)
        };
        #[cfg(raceless_loom)]
        let replaced = self.table.lock().unwrap()[index].replace(entry);
        drop(replaced);
    }
}
