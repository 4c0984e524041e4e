//! The lock-free registry of live streams and the slot protocol.

use std::hash::BuildHasher;

use super::session::{SlotState, View};
use super::{
    save_listener, ActiveStream, Busy, Pending, Saves, Session, SessionSnapshot, StreamId,
    StreamOptions, StreamSlots,
};
use crate::clock::SharedClock;
use crate::sync::{AtomicU64, CachePadded, Ordering, Owned, Pin, ShardedMap};
use crate::{CallbackError, ListenerId};

/// Hands out fresh stream ids: a random epoch per registry (so ids of a
/// previous process, or of another registry, never collide with ours) and a
/// counter.
pub(crate) struct IdSource {
    epoch: u64,
    /// `Relaxed`: ids only need to be unique, which the read-modify-write
    /// guarantees whatever the ordering; the id publishes no data. On its
    /// own cache line: every start writes it, and the registry's fields
    /// beside it (this epoch, the map's shards, the clock, the hooks) are
    /// read by every operation.
    next: CachePadded<AtomicU64>,
}

impl IdSource {
    pub(crate) fn new() -> Self {
        // std's RandomState is seeded randomly per process and varies per
        // instance; the time and pid make a collision across processes even
        // less likely.
        let epoch = std::collections::hash_map::RandomState::new()
            .hash_one((std::time::SystemTime::now(), std::process::id()));
        Self {
            epoch,
            next: CachePadded::new(AtomicU64::new(0)),
        }
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    #[inline]
    pub(crate) fn next(&self) -> StreamId {
        StreamId {
            epoch: self.epoch,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// A registry entry: the stream and the slot value that publishes it,
/// whose *live flag* (`SlotState::live`) is `true` from its construction,
/// before the registration, until `unregister` stores `false` under the
/// shard's write lock, in the same critical section that removes the
/// entry; a cleanup or a start reads the flag in the value it loaded
/// instead of looking the id up in the map. Until the start publishes the
/// value (its successful CAS) the entry and the value are private to it
/// (nobody else knows the id), and a start that must retry against a newer
/// slot value retries with the same value (only its version is set again),
/// so the value published is always the one the entry holds.
struct Registered<S> {
    stream: S,
    value: Owned<SlotState>,
}

/// The live streams (`StreamId -> S`, the seed's `STREAMS`) and the
/// lock-free protocol on sessions' slots (see the [module docs](super)).
///
/// No operation blocks on another: the registry is a sharded map (each call
/// locks one shard for a map operation, never across a slot change or a
/// hook), and a session's slot changes by compare-and-swap.
///
/// ```
/// use raceless::stream::{Pending, Session, StreamRegistry};
///
/// let registry = StreamRegistry::new();
/// let session = Session::new("s");
/// let old = registry.start(&session, Pending::new("first"), "w1").unwrap();
/// // The worker of `old` dies without finishing on this session:
/// registry.finish(&Session::new("other"), old);
/// assert!(!registry.is_live(old));
/// // The slot still names `old`: stale. A cleanup clears it...
/// assert!(registry.clear_stale(&session));
/// // ...and a start on a stale slot would have replaced it as well.
/// let new = registry.start(&session, Pending::new("second"), "w2").unwrap();
/// assert_eq!(session.active_id(), Some(new));
/// assert_eq!(registry.get(new), Some("w2"));
/// ```
pub struct StreamRegistry<S> {
    streams: ShardedMap<StreamId, Registered<S>>,
    ids: IdSource,
    clock: SharedClock,
    saves: Saves,
}

impl<S: Send + Sync + 'static> StreamRegistry<S> {
    /// An empty registry with the system clock and no save hook.
    ///
    /// ```
    /// let registry: raceless::StreamRegistry<()> = raceless::StreamRegistry::new();
    /// assert!(registry.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_options(StreamOptions::new())
    }

    /// An empty registry with the given clock and save hook.
    ///
    /// ```
    /// use raceless::{clock::ManualClock, stream::{StreamOptions, StreamRegistry}};
    /// let registry: StreamRegistry<()> =
    ///     StreamRegistry::with_options(StreamOptions::new().clock(ManualClock::new()));
    /// assert_eq!(registry.len(), 0);
    /// ```
    pub fn with_options(options: StreamOptions) -> Self {
        let (clock, saves) = options.into_parts();
        Self {
            streams: ShardedMap::new(),
            ids: IdSource::new(),
            clock,
            saves,
        }
    }

    /// Starts `stream` on `session`: `Err(Busy)` if the session's stream is
    /// live (and `stream` is dropped); otherwise a stale or empty slot is
    /// replaced by the new stream and its pending fields in one step.
    ///
    /// Protocol: read the slot (an emptied slot: one load of its word, no
    /// pin); if its stream is live, `Busy`. Otherwise build and register the
    /// new stream under a fresh id with no pin held, then, under one pin,
    /// read the slot again and publish with a CAS against the value read,
    /// one version above it. A live stream there (read again, or after a
    /// failed CAS) won: unregister ours, `Busy`; a stale or empty value is
    /// replaced. Since ours is registered before it can be seen in the
    /// slot, no cleanup can judge it stale. Linearization point: the
    /// successful CAS; for `Busy`, the read that found the winner live.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// let registry = StreamRegistry::new();
    /// let session = Session::new("s");
    /// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
    /// assert!(registry.start(&session, Pending::new("no"), ()).is_err());
    /// assert_eq!(registry.len(), 1);
    /// # let _ = id;
    /// ```
    pub fn start(&self, session: &Session, pending: Pending, stream: S) -> Result<StreamId, Busy> {
        // Judge the slot: a live stream there is `Busy` before anything is
        // built. An emptied slot (one load of its word) holds none; any
        // other value is judged under a short pin. (`stream`, user code, is
        // dropped after the pin, on return.)
        if !session.slot.marked() {
            let pin = Pin::new();
            if let Some(active) = self.live_in(View::of(&session.slot.load(&pin))) {
                return Err(Busy { active });
            }
        }
        // Build and register the new stream with no pin held (a pin held
        // by a thread that is descheduled holds back every thread's
        // reclamation, and this is the longest step: an id, the clock, an
        // allocation, a shard's write lock). Register first: from the
        // moment the slot can show `id`, it is live (the value's flag is
        // set from its construction). Until the publishing CAS the value
        // and the entry are private to this start (nobody knows `id`), and
        // the value published is always this one, whose flag `unregister`
        // clears.
        let id = self.ids.next();
        let next = SlotState::unpublished_live(ActiveStream {
            id,
            pending_message: Some(pending.message),
            attachments: pending.attachments,
            started_at: self.clock.now(),
        });
        self.streams.insert(
            id,
            Registered {
                stream,
                value: next.clone(),
            },
        );
        // Publish under one pin: judge the slot again (the value read above
        // may be gone), and CAS against the very value judged. Every value
        // loaded here stays allocated until the pin goes, so the CAS cannot
        // suffer ABA; the save hooks and a losing stream's destructor run
        // after the pin is dropped.
        let (outcome, snapshot) = {
            let pin = Pin::new();
            let mut current = session.slot.load(&pin);
            let mut next = next;
            loop {
                let view = View::of(&current);
                if let Some(winner) = self.live_in(view) {
                    break (Err((id, winner)), None);
                }
                // Empty or stale: replace it. The version follows the value
                // this attempt compares against (Relaxed: the CAS publishes
                // it, see `SlotState::version`).
                next.version.store(view.next_version(), Ordering::Relaxed);
                match session.install(current, next, &pin) {
                    Ok(value) => {
                        let value = View::installed(&value);
                        break (Ok(id), self.saves.snapshot(|| session.snapshot_of(value)));
                    }
                    // Something changed the slot since it was judged (a
                    // start, a cleanup or a finish): judge the new value.
                    Err((back, now)) => {
                        next = back;
                        current = now;
                    }
                }
            }
        };
        match outcome {
            Ok(id) => {
                tracing::debug!(session = session.id(), stream = %id, "stream started");
                self.saves.notify(snapshot);
                Ok(id)
            }
            Err((ours, winner)) => {
                // Ours was never visible in any slot: unregister it.
                self.unregister(ours);
                Err(Busy { active: winner })
            }
        }
    }

    /// Empties the session's slot if its stream is no longer live (the
    /// seed's `_clear_stale_stream_state`); `true` if it did.
    ///
    /// Protocol: read the slot (an emptied slot: `false` after one load of
    /// its word, no pin); if its stream is not registered, mark the
    /// very value read emptied (a CAS of the slot's word). "Not registered"
    /// is final for a value in a slot (ids are fresh and registered before
    /// they are published), and the CAS fails if anything replaced or
    /// emptied the value, so a
    /// live, starting or newer stream is never cleared. Linearization point:
    /// the successful CAS, or the read that decided `false`.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// let registry = StreamRegistry::new();
    /// let session = Session::new("s");
    /// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
    /// assert!(!registry.clear_stale(&session)); // live
    /// registry.finish(&Session::new("elsewhere"), id); // unregistered only
    /// assert!(registry.clear_stale(&session)); // stale
    /// assert!(!registry.clear_stale(&session)); // already empty
    /// ```
    pub fn clear_stale(&self, session: &Session) -> bool {
        // An emptied slot shows no stream: nothing to clear, decided by one
        // load of the slot's word, without pinning (linearization point:
        // that load).
        if session.slot.marked() {
            return false;
        }
        let snapshot = {
            let pin = Pin::new();
            let current = session.slot.load(&pin);
            let view = View::of(&current);
            if view.active().is_none() || self.live_in(view).is_some() {
                return false;
            }
            // Empty the slot by marking the very value judged stale (no
            // allocation); fails if anything changed the slot since.
            if !session.empty(&current, &pin) {
                return false;
            }
            let emptied = View {
                emptied: true,
                ..view
            };
            self.saves.snapshot(|| session.snapshot_of(emptied))
        };
        tracing::debug!(session = session.id(), "stale stream cleared");
        self.saves.notify(snapshot);
        true
    }

    /// The stream `id` ended (its worker calls this): empties the session's
    /// slot if it still holds `id`, then unregisters `id`. `true` if it
    /// emptied the slot. A stream held by another slot stays there, stale.
    ///
    /// Linearization point: the successful CAS emptying the slot (or the
    /// read that found another value); the unregistration follows, so a
    /// start that finds the slot empty never waits for it.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// let registry = StreamRegistry::new();
    /// let session = Session::new("s");
    /// let id = registry.start(&session, Pending::new("hi"), ()).unwrap();
    /// assert!(registry.finish(&session, id));
    /// assert!(!registry.finish(&session, id)); // no longer in the slot
    /// assert!(!registry.is_live(id));
    /// ```
    pub fn finish(&self, session: &Session, id: StreamId) -> bool {
        // `Some(snapshot)` if this call emptied the slot.
        // An emptied slot (one load of its word, no pin) holds no stream.
        let emptied = if session.slot.marked() {
            None
        } else {
            let pin = Pin::new();
            let mut current = session.slot.load(&pin);
            loop {
                let view = View::of(&current);
                if !view.holds(id) {
                    break None;
                }
                // Empty the slot by marking its value (no allocation).
                if session.empty(&current, &pin) {
                    let emptied = View {
                        emptied: true,
                        ..view
                    };
                    break Some(self.saves.snapshot(|| session.snapshot_of(emptied)));
                }
                current = session.slot.load(&pin);
            }
        };
        self.unregister(id);
        match emptied {
            Some(snapshot) => {
                tracing::debug!(session = session.id(), stream = %id, "stream finished");
                self.saves.notify(snapshot);
                true
            }
            None => false,
        }
    }

    /// Whether `id` is registered.
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// let registry = StreamRegistry::new();
    /// let id = registry.start(&Session::new("s"), Pending::new("hi"), ()).unwrap();
    /// assert!(registry.is_live(id));
    /// ```
    pub fn is_live(&self, id: StreamId) -> bool {
        self.streams.read(&id, |_| ()).is_some()
    }

    /// The number of registered streams (a starting stream that loses its
    /// race is counted until it unregisters itself).
    ///
    /// ```
    /// let registry: raceless::StreamRegistry<()> = raceless::StreamRegistry::new();
    /// assert_eq!(registry.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is registered.
    ///
    /// ```
    /// let registry: raceless::StreamRegistry<()> = raceless::StreamRegistry::new();
    /// assert!(registry.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A clone of the stream `id`, if it is live (cloned with its shard
    /// read-locked: use a cheap `Clone`, e.g. an `Arc` handle or a channel
    /// sender, as a stream type).
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// let registry = StreamRegistry::new();
    /// let id = registry.start(&Session::new("s"), Pending::new("hi"), 42).unwrap();
    /// assert_eq!(registry.get(id), Some(42));
    /// ```
    pub fn get(&self, id: StreamId) -> Option<S>
    where
        S: Clone,
    {
        self.streams.read(&id, |r| r.stream.clone())
    }

    /// Registers a save hook (like [`StreamOptions::save_hook`]) on a
    /// running registry: changes that start after this returns call it
    /// with their snapshot. Remove it with
    /// [`remove_listener`](StreamRegistry::remove_listener).
    ///
    /// ```
    /// use raceless::stream::{Pending, Session, StreamRegistry};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// let registry = StreamRegistry::new();
    /// let last = Arc::new(AtomicU64::new(0));
    /// let seen = last.clone();
    /// let hook = registry.on_save(move |snap| {
    ///     seen.store(snap.version, Ordering::Relaxed);
    ///     Ok(())
    /// });
    /// registry.start(&Session::new("s"), Pending::new("hi"), ()).unwrap();
    /// assert_eq!(last.load(Ordering::Relaxed), 1);
    /// assert!(registry.remove_listener(hook));
    /// ```
    pub fn on_save(
        &self,
        hook: impl Fn(&SessionSnapshot) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> ListenerId {
        self.saves.0.add(save_listener(std::sync::Arc::new(hook)))
    }

    /// Removes a hook registered by [`StreamRegistry::on_save`]; `false`
    /// if it was not registered. Changes that start after this returns no
    /// longer call it.
    ///
    /// ```
    /// let registry: raceless::StreamRegistry<()> = raceless::StreamRegistry::new();
    /// let id = registry.on_save(|_| Ok(()));
    /// assert!(registry.remove_listener(id));
    /// assert!(!registry.remove_listener(id));
    /// ```
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.saves.0.remove(id)
    }

    /// The 0.1 name of [`on_save`](StreamRegistry::on_save).
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// let registry: raceless::StreamRegistry<()> = raceless::StreamRegistry::new();
    /// let id = registry.add_save_hook(|_| Ok(()));
    /// assert!(registry.remove_save_hook(id));
    /// ```
    #[deprecated(since = "0.2.0", note = "use `on_save`")]
    pub fn add_save_hook(
        &self,
        hook: impl Fn(&SessionSnapshot) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> ListenerId {
        self.on_save(hook)
    }

    /// The 0.1 name of [`remove_listener`](StreamRegistry::remove_listener).
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// let registry: raceless::StreamRegistry<()> = raceless::StreamRegistry::new();
    /// let id = registry.on_save(|_| Ok(()));
    /// assert!(registry.remove_save_hook(id));
    /// ```
    #[deprecated(since = "0.2.0", note = "use `remove_listener`")]
    pub fn remove_save_hook(&self, id: ListenerId) -> bool {
        self.remove_listener(id)
    }

    /// The stream in `slot` if it is live here: its live flag if this
    /// registry published it (the id's epoch is this registry's), else a
    /// lookup (a restored slot, or one the baseline wrote).
    fn live_in(&self, slot: View<'_>) -> Option<StreamId> {
        let id = slot.active_id()?;
        let live = match &slot.value.live {
            // Acquire pairs with `unregister`'s Release store (see there).
            Some(flag) if id.epoch == self.ids.epoch() => flag.load(Ordering::Acquire),
            _ => self.is_live(id),
        };
        live.then_some(id)
    }

    /// Removes `id` from the registry; its live flag turns `false` inside
    /// the same write-locked critical section of its shard, so the flag and
    /// the map agree at every instant that a reader can observe: a map
    /// reader that finds the entry gone took the shard lock after the
    /// removal released it, so the store happens before it and before
    /// anything after it (a later flag load reads `false`); a flag load that
    /// reads `false` read a store made while the entry was being removed
    /// under the lock, so any map reader after it finds the entry gone. The
    /// unregistration linearizes at that store. The stream itself is dropped
    /// after the lock is released (its destructor is user code).
    fn unregister(&self, id: StreamId) {
        let removed = self.streams.remove_if(&id, |_, r| {
            // Release: pairs with `live_in`'s Acquire (only the flag's own
            // value matters; the order comes from the shard lock).
            if let Some(live) = &r.value.live {
                live.store(false, Ordering::Release);
            }
            true
        });
        drop(removed);
    }
}

impl<S: Send + Sync + 'static> Default for StreamRegistry<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> std::fmt::Debug for StreamRegistry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRegistry")
            .field("live", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> StreamSlots<S> for StreamRegistry<S> {
    fn with_options(options: StreamOptions) -> Self {
        StreamRegistry::with_options(options)
    }
    fn start(&self, session: &Session, pending: Pending, stream: S) -> Result<StreamId, Busy> {
        StreamRegistry::start(self, session, pending, stream)
    }
    fn clear_stale(&self, session: &Session) -> bool {
        StreamRegistry::clear_stale(self, session)
    }
    fn finish(&self, session: &Session, id: StreamId) -> bool {
        StreamRegistry::finish(self, session, id)
    }
    fn is_live(&self, id: StreamId) -> bool {
        StreamRegistry::is_live(self, id)
    }
    fn len(&self) -> usize {
        StreamRegistry::len(self)
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<StreamRegistry<()>>();
    check::<Session>();
}
