//! An event bus whose `emit` never waits for `subscribe`/`unsubscribe`
//! (seed: cleveragents #7052).
//!
//! The seed's `ReactiveEventBus` iterated a subscriber dict and appended to
//! an audit deque with no lock, while other threads subscribed: handlers
//! registered just before an emit were skipped, removed ones still called,
//! and the log corrupted. Its fix put one lock around everything. Here:
//!
//! - **Subscriber lists are RCU snapshots.** Immutable maps hold the
//!   kinds' subscriber lists (and handles to their counters), sharded by
//!   kind over 64 `ArcSwap` cells. `subscribe` and `unsubscribe` build a
//!   new map of the kind's shard and install it with a compare-and-swap
//!   loop; `emit` loads its kind's map once and calls each handler of its
//!   kind holding only that snapshot (an arc-swap read guard, which no
//!   writer ever waits for), so the emit path takes no lock at all.
//! - **Kinds are reclaimed**: the unsubscribe that removes a kind's last
//!   subscriber removes its entry in the same compare-and-swap
//!   ([`EventBus::kind_count`] counts the live ones).
//! - **Owned consumers (0.2).** [`OwnedSubscription`] and [`Receiver`]
//!   are `Send + 'static` handles that hold the bus weakly and unsubscribe
//!   when dropped. A receiver ([`EventBus::subscribe_channel`]) is a
//!   bounded drop-oldest queue that `emit` fills without waiting, with
//!   exact [`RecvError::Lagged`] counts and a cancel-safe async
//!   [`Receiver::recv`] on any executor (protocol in `channel.rs` and
//!   `docs/bus.md`).
//! - **The audit log is a lock-free bounded log with no shared counter**
//!   (see `audit.rs` and `docs/bus.md`): each thread writes its own stripe;
//!   the event, stamped with a time-stamp-counter reading, moves into a
//!   write-once cell of its stripe, and the handlers run on the logged
//!   event, so there is no copy. `audit_log` merges the stripes by stamp:
//!   once emits are quiet it holds the newest `capacity` events by stamp,
//!   each thread's in its emit order, none twice, none torn.
//!
//! # Guarantees
//!
//! - After [`subscribe`](EventBus::subscribe) returns, every emit that
//!   starts later delivers to the new handler (until it is unsubscribed).
//!   *Linearization point:* the successful compare-and-swap that installs
//!   the snapshot listing it.
//! - After [`unsubscribe`](EventBus::unsubscribe) returns `true`, no emit
//!   that starts later calls the handler; an emit already running may.
//!   *Linearization point:* the successful compare-and-swap that installs
//!   the snapshot without it. A second `unsubscribe` of the same id, or an
//!   unknown id, returns `false` (linearized at the load that found the id
//!   absent).
//! - `emit` is linearized at its load of the snapshot; it calls
//!   exactly the handlers of that snapshot, in subscription order.
//! - Each handler's `Err` or panic is isolated: counted in
//!   [`EmitReport::failed`], logged with `tracing` (kind, handler id,
//!   error) and the remaining handlers still run.
//! - Handlers may call `subscribe`, `unsubscribe`, `emit` and `audit_log`
//!   on the same bus: nothing a handler could wait for is held while it
//!   runs.
//! - Progress: `emit`, `subscribe*`, `unsubscribe`, guard and receiver
//!   drops, `try_recv` and `recv` are lock-free (the id index is a sharded
//!   map: short shard locks, no user code); only
//!   [`Receiver::blocking_recv`] blocks, and says so.
//!
//! # Orderings
//!
//! The snapshots are published and read through arc-swap, whose pointer
//! operations are `SeqCst`: a snapshot is fully built before the
//! compare-and-swap that publishes it, and an emit that loads the pointer
//! sees the whole snapshot. "Starts later" is real-time order: an emit that
//! starts after `subscribe` returned loads the snapshot after the
//! publishing compare-and-swap in the cell's modification order, so it sees
//! that snapshot or a newer one, and every newer one was built from it
//! (compare-and-swap succeeds only on the latest value), so it contains the
//! handler unless an `unsubscribe` removed it. Subscription ids come from a
//! `Relaxed` `fetch_add`: only uniqueness is needed. The id → kind index is
//! a sharded map used only to find the kind of an id; the snapshot is the
//! single source of truth.
//!
//! ```
//! use raceless::bus::{Event, EventBus};
//!
//! #[derive(Clone, Debug)]
//! enum Job { Started(u32), Done(u32) }
//!
//! #[derive(Clone, Debug, PartialEq, Eq, Hash)]
//! enum JobKind { Started, Done }
//!
//! impl Event for Job {
//!     type Kind = JobKind;
//!     fn kind(&self) -> JobKind {
//!         match self { Job::Started(_) => JobKind::Started, Job::Done(_) => JobKind::Done }
//!     }
//! }
//!
//! let bus = EventBus::new(128);
//! let id = bus.subscribe(JobKind::Done, |job: &Job| {
//!     println!("finished: {job:?}");
//!     Ok(())
//! });
//! assert_eq!(bus.emit(Job::Started(1)).delivered, 0);
//! assert_eq!(bus.emit(Job::Done(1)).delivered, 1);
//! assert_eq!(bus.audit_log().len(), 2);
//! assert!(bus.unsubscribe(id));
//! assert!(!bus.unsubscribe(id));
//! ```

mod audit;
pub(crate) mod channel;
mod counters;

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::{Arc, ArcSwap, AtomicU64, MapHasher, Ordering, ShardedMap};
use crate::CallbackError;

pub use channel::{BusError, Receiver, RecvError, TryRecvError, MAX_CHANNEL_CAPACITY};
pub use counters::KindStats;

/// An event that can travel on a bus: its [`kind`](Event::kind) selects the
/// subscribers it is delivered to.
///
/// ```
/// use raceless::bus::Event;
///
/// #[derive(Clone)]
/// struct Tick(u64);
/// impl Event for Tick {
///     type Kind = &'static str;
///     fn kind(&self) -> &'static str { "tick" }
/// }
/// assert_eq!(Tick(1).kind(), "tick");
/// ```
pub trait Event: Clone + Send + Sync + 'static {
    /// The key subscriptions are made for.
    type Kind: Eq + Hash + Clone + Send + Sync + 'static;

    /// The kind of this event.
    fn kind(&self) -> Self::Kind;

    /// A readable name of this event's kind for logs (a failed handler is
    /// logged with it). Defaults to the kind's type name; override it to
    /// log the value.
    ///
    /// ```
    /// use raceless::bus::Event;
    ///
    /// #[derive(Clone)]
    /// struct Tick;
    /// impl Event for Tick {
    ///     type Kind = u8;
    ///     fn kind(&self) -> u8 { 7 }
    ///     fn kind_label(&self) -> String { format!("tick#{}", self.kind()) }
    /// }
    /// assert_eq!(Tick.kind_label(), "tick#7");
    /// ```
    fn kind_label(&self) -> String {
        std::any::type_name::<Self::Kind>().to_owned()
    }
}

/// What a handler returns when it fails: the crate's one callback error,
/// [`CallbackError`].
///
/// ```
/// #[allow(deprecated)]
/// let e: raceless::bus::HandlerError = "disk full".into();
/// assert_eq!(e.to_string(), "disk full");
/// ```
#[deprecated(
    since = "0.2.0",
    note = "use `raceless::CallbackError` (one error type for every callback)"
)]
pub type HandlerError = CallbackError;

/// The handle of a subscription, for [`unsubscribe`](EventBus::unsubscribe).
///
/// Ids are unique per bus and never reused.
///
/// ```
/// use raceless::bus::{Event, EventBus, SubscriptionId};
/// # #[derive(Clone)] struct Ping;
/// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
/// let bus = EventBus::<Ping>::new(0);
/// let id: SubscriptionId = bus.subscribe((), |_| Ok(()));
/// let copy = id;
/// assert_eq!(id, copy);
/// assert_eq!(id.to_string(), format!("sub#{}", id.into_raw()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// An id from its raw number. An id a bus never handed out is simply
    /// unknown to it.
    //
    // For the test harness's implementations of [`Bus`] (its racy variant);
    // not part of the documented API nor covered by semver.
    #[doc(hidden)]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw number of this id.
    pub const fn into_raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub#{}", self.0)
    }
}

/// The outcome of one [`emit`](EventBus::emit): how many handlers returned
/// `Ok` and how many failed (returned `Err` or panicked). Their sum is the
/// number of handlers called.
///
/// ```
/// use raceless::bus::EmitReport;
/// let r = EmitReport { delivered: 2, failed: 1 };
/// assert_eq!(r.delivered + r.failed, 3);
/// assert_eq!(EmitReport::default(), EmitReport { delivered: 0, failed: 0 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EmitReport {
    /// Handlers that returned `Ok`.
    pub delivered: usize,
    /// Handlers that returned `Err` or panicked.
    pub failed: usize,
}

/// The operations of an event bus, implemented by the lock-free
/// [`EventBus`] and by `baseline::MutexBus` (feature `baselines`), so
/// that tests and benchmarks are written once.
///
/// ```
/// use raceless::bus::{Bus, Event, EventBus};
/// #[cfg(feature = "baselines")]
/// use raceless::baseline::MutexBus;
///
/// #[derive(Clone)]
/// struct Ping;
/// impl Event for Ping { type Kind = (); fn kind(&self) {} }
///
/// fn ping_twice<B: Bus<Ping>>(bus: &B) -> usize {
///     bus.subscribe((), |_| Ok(()));
///     bus.emit(Ping).delivered + bus.emit(Ping).delivered
/// }
/// assert_eq!(ping_twice(&EventBus::new(4)), 2);
/// #[cfg(feature = "baselines")]
/// assert_eq!(ping_twice(&MutexBus::<Ping>::new(4)), 2);
/// ```
pub trait Bus<E: Event>: Send + Sync {
    /// Subscribes `handler` to events of `kind`; every emit that starts
    /// after this returns delivers to it.
    fn subscribe(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> SubscriptionId;

    /// Removes a subscription: `true` if this call removed it, `false` if
    /// it was unknown or already removed. After `true`, no emit that starts
    /// later calls the handler.
    fn unsubscribe(&self, id: SubscriptionId) -> bool;

    /// Logs `event` and calls every handler subscribed to its kind.
    fn emit(&self, event: E) -> EmitReport;

    /// The newest logged events (at most the capacity), oldest first.
    fn audit_log(&self) -> Vec<E>;

    /// The number of handlers subscribed to `kind`.
    fn subscriber_count(&self, kind: &E::Kind) -> usize;

    /// Like [`subscribe`](Bus::subscribe), but the subscription ends when
    /// the returned guard is dropped.
    fn subscribe_scoped(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Subscription<'_, E, Self>
    where
        Self: Sized,
    {
        let id = self.subscribe(kind, handler);
        Subscription {
            bus: self,
            id: Some(id),
            _event: PhantomData,
        }
    }
}

/// A subscription that unsubscribes when dropped (opt-in, from
/// [`subscribe_scoped`](EventBus::subscribe_scoped)); the plain id API
/// stays available beside it.
///
/// ```
/// use raceless::bus::{Event, EventBus};
///
/// #[derive(Clone)]
/// struct Ping;
/// impl Event for Ping { type Kind = (); fn kind(&self) {} }
///
/// let bus = EventBus::new(0);
/// {
///     let _sub = bus.subscribe_scoped((), |_| Ok(()));
///     assert_eq!(bus.subscriber_count(&()), 1);
/// }
/// assert_eq!(bus.subscriber_count(&()), 0);
///
/// let kept = bus.subscribe_scoped((), |_| Ok(())).detach();
/// assert_eq!(bus.emit(Ping).delivered, 1);
/// assert!(bus.unsubscribe(kept));
/// ```
#[must_use = "dropping a Subscription unsubscribes its handler at once"]
pub struct Subscription<'a, E: Event, B: Bus<E> = EventBus<E>> {
    bus: &'a B,
    id: Option<SubscriptionId>,
    _event: PhantomData<fn(&E)>,
}

impl<E: Event, B: Bus<E>> Subscription<'_, E, B> {
    /// The id of this subscription.
    pub fn id(&self) -> SubscriptionId {
        // Always `Some` until `detach`/`unsubscribe` consume the guard.
        self.id.unwrap_or(SubscriptionId(u64::MAX))
    }

    /// Unsubscribes now; returns what [`Bus::unsubscribe`] returned.
    pub fn unsubscribe(mut self) -> bool {
        self.id.take().is_some_and(|id| self.bus.unsubscribe(id))
    }

    /// Keeps the subscription beyond the guard and returns its id.
    pub fn detach(mut self) -> SubscriptionId {
        let id = self.id();
        self.id = None;
        id
    }
}

impl<E: Event, B: Bus<E>> Drop for Subscription<'_, E, B> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.bus.unsubscribe(id);
        }
    }
}

impl<E: Event, B: Bus<E>> fmt::Debug for Subscription<'_, E, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

/// A subscription guard that owns its handle to the bus: `Send + Sync +
/// 'static`, so it can be moved into a task (`tokio::spawn`) or stored in a
/// struct beside an `Arc<EventBus>`. From
/// [`EventBus::subscribe_owned`] (or [`OwnedBus::subscribe_owned`]).
///
/// It holds a weak reference: it never keeps the bus alive.
///
/// **Drop rule:** dropping the guard (anywhere, including in a task
/// cancelled at an `.await`, or during a panic's unwinding) unsubscribes
/// its handler, exactly like [`EventBus::unsubscribe`] of its id: a
/// lock-free compare-and-swap loop that never waits for an emit, after
/// which no emit that starts later calls the handler (one already running
/// may finish its call). If the bus is already gone, dropping does
/// nothing. [`detach`](Self::detach) keeps the subscription instead.
///
/// ```
/// use raceless::bus::{Event, EventBus};
/// use std::sync::Arc;
/// #[derive(Clone)]
/// struct Ping;
/// impl Event for Ping { type Kind = (); fn kind(&self) {} }
///
/// let bus = Arc::new(EventBus::new(0));
/// let sub = bus.subscribe_owned((), |_| Ok(()));
/// let id = sub.id();
/// std::thread::spawn(move || drop(sub)).join().unwrap();
/// assert!(!bus.unsubscribe(id), "the guard already unsubscribed");
///
/// let kept = bus.subscribe_owned((), |_| Ok(())).detach();
/// assert_eq!(bus.emit(Ping).delivered, 1);
/// assert!(bus.unsubscribe(kept));
/// ```
#[must_use = "dropping an OwnedSubscription unsubscribes its handler at once"]
pub struct OwnedSubscription {
    id: SubscriptionId,
    /// `None` once detached or unsubscribed.
    bus: Option<std::sync::Weak<dyn Detach>>,
}

impl OwnedSubscription {
    pub(crate) fn new(id: SubscriptionId, bus: std::sync::Weak<dyn Detach>) -> Self {
        Self { id, bus: Some(bus) }
    }

    /// The id of this subscription.
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// let sub = bus.subscribe_owned((), |_| Ok(()));
    /// assert_eq!(sub.id(), sub.id());
    /// ```
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Unsubscribes now; returns what [`EventBus::unsubscribe`] returned
    /// (`false` if the bus is gone or the id was already removed).
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// assert!(bus.subscribe_owned((), |_| Ok(())).unsubscribe());
    /// ```
    pub fn unsubscribe(mut self) -> bool {
        self.bus
            .take()
            .and_then(|bus| bus.upgrade())
            .is_some_and(|bus| bus.detach(self.id))
    }

    /// Keeps the subscription beyond the guard and returns its id (for
    /// [`EventBus::unsubscribe`]).
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// let id = bus.subscribe_owned((), |_| Ok(())).detach();
    /// assert_eq!(bus.subscriber_count(&()), 1);
    /// assert!(bus.unsubscribe(id));
    /// ```
    pub fn detach(mut self) -> SubscriptionId {
        self.bus = None;
        self.id
    }
}

impl Drop for OwnedSubscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.take().and_then(|bus| bus.upgrade()) {
            bus.detach(self.id);
        }
    }
}

impl fmt::Debug for OwnedSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedSubscription")
            .field("id", &self.id)
            .field("attached", &self.bus.is_some())
            .finish()
    }
}

/// The owned consumers of a bus — guards and receivers that hold their own
/// (weak) handle to it — implemented by [`EventBus`] and
/// `baseline::MutexBus` (feature `baselines`), so tests are written
/// once.
///
/// ```
/// use raceless::bus::{Event, EventBus, OwnedBus};
/// #[cfg(feature = "baselines")]
/// use raceless::baseline::MutexBus;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct N(u8);
/// impl Event for N { type Kind = (); fn kind(&self) {} }
///
/// fn roundtrip<B: OwnedBus<N>>(bus: &B) -> N {
///     let mut rx = bus.subscribe_channel((), 4).unwrap();
///     bus.emit(N(9));
///     rx.try_recv().unwrap()
/// }
/// assert_eq!(roundtrip(&EventBus::new(0)), N(9));
/// #[cfg(feature = "baselines")]
/// assert_eq!(roundtrip(&MutexBus::<N>::new(0)), N(9));
/// ```
pub trait OwnedBus<E: Event>: Bus<E> {
    /// Subscribes `handler` to `kind`; the returned guard unsubscribes it
    /// when dropped and does not borrow (or keep alive) the bus.
    fn subscribe_owned(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> OwnedSubscription;

    /// Subscribes an async consumer with a queue of `capacity` events
    /// (drop-oldest; see [`Receiver`]).
    fn subscribe_channel(&self, kind: E::Kind, capacity: usize) -> Result<Receiver<E>, BusError>;

    /// The number of kinds with at least one subscriber (the entries the
    /// bus keeps).
    fn kind_count(&self) -> usize;
}

/// A boxed handler. A `std` `Arc` even under loom: loom's `Arc` cannot hold
/// a `dyn`, and the handlers are not part of the protocol loom checks.
pub(crate) type Handler<E> = std::sync::Arc<dyn Fn(&E) -> Result<(), CallbackError> + Send + Sync>;

/// Where a new subscription's events go.
pub(crate) enum Sink<E> {
    /// Called on the emitting thread.
    Handler(Handler<E>),
    /// Queued for a [`Receiver`].
    Channel(Arc<channel::Channel<E>>),
}

/// One entry of a subscriber list. A channel is a handler too (one that
/// pushes a clone of the event into its queue), so `emit` calls every
/// subscriber the same way; `channel` is kept beside it to close it.
pub(crate) struct Subscriber<E> {
    pub(crate) id: SubscriptionId,
    pub(crate) handler: Handler<E>,
    channel: Option<Arc<channel::Channel<E>>>,
}

impl<E> Clone for Subscriber<E> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            handler: self.handler.clone(),
            channel: self.channel.clone(),
        }
    }
}

impl<E: Event> Subscriber<E> {
    pub(crate) fn new(id: SubscriptionId, sink: Sink<E>) -> Self {
        match sink {
            Sink::Handler(handler) => Self {
                id,
                handler,
                channel: None,
            },
            Sink::Channel(channel) => {
                let queue = channel.clone();
                Self {
                    id,
                    handler: std::sync::Arc::new(move |event: &E| {
                        queue.push(event.clone());
                        Ok(())
                    }),
                    channel: Some(channel),
                }
            }
        }
    }
}

impl<E> Subscriber<E> {
    /// Closes the subscriber's channel, if it is one (its subscription
    /// ended or its bus is gone).
    pub(crate) fn close(&self) {
        if let Some(channel) = &self.channel {
            channel.close();
        }
    }
}

/// How a guard or a receiver reaches its bus without keeping it alive: a
/// `std::sync::Weak<dyn Detach>` to the bus's shared state.
pub(crate) trait Detach: Send + Sync {
    /// [`Bus::unsubscribe`] of `id`.
    fn detach(&self, id: SubscriptionId) -> bool;
}

/// Calls each subscriber with `event`, isolating failures: an `Err` or a
/// panic is counted, logged and skipped. Shared by every implementation.
pub(crate) fn deliver<E: Event>(event: &E, subscribers: &[Subscriber<E>]) -> EmitReport {
    let mut report = EmitReport::default();
    for sub in subscribers {
        match catch_unwind(AssertUnwindSafe(|| (sub.handler)(event))) {
            Ok(Ok(())) => report.delivered += 1,
            Ok(Err(error)) => {
                report.failed += 1;
                tracing::warn!(
                    kind = %event.kind_label(),
                    handler = sub.id.0,
                    %error,
                    "event handler failed; isolated"
                );
            }
            Err(panic) => {
                report.failed += 1;
                let error = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                tracing::warn!(
                    kind = %event.kind_label(),
                    handler = sub.id.0,
                    %error,
                    "event handler panicked; isolated"
                );
            }
        }
    }
    report
}

/// One event kind in the snapshot: its subscribers, in subscription order,
/// and its counters. The entry exists while the kind has a subscriber:
/// the unsubscribe that removes its last one removes the entry in the same
/// compare-and-swap (the kind is reclaimed, counters included).
struct KindEntry<E> {
    /// Immutable once published. A `std` `Arc` even under loom, like
    /// [`Handler`]: loom's `Arc` cannot hold a slice, and the lists are
    /// published only through the snapshot, which loom does see.
    subscribers: std::sync::Arc<[Subscriber<E>]>,
    counters: Arc<counters::DeliveryCounters>,
}

impl<E> Clone for KindEntry<E> {
    fn clone(&self) -> Self {
        Self {
            subscribers: self.subscribers.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// The RCU snapshot of one shard: every live kind of the shard and its
/// entry. Copied (one `Arc` clone per live kind of the shard and two per
/// changed entry) by each `subscribe` and `unsubscribe`, read by every emit
/// with one arc-swap load.
///
/// A shard holds about `live kinds / 64` kinds, so usually a handful: up
/// to [`FEW_KINDS`] they are a list that a lookup scans with `==` (no
/// hashing, no probing: a hash-map lookup was a third of a one-thread
/// emit without the log), beyond that a hash map. A copy that grows past
/// [`FEW_KINDS`] becomes a map; one that shrinks to half of it becomes a
/// list again.
enum KindMap<E: Event> {
    Few(Vec<(E::Kind, KindEntry<E>)>),
    Many(HashMap<E::Kind, KindEntry<E>, MapHasher>),
}

/// The most kinds a shard keeps in a list (see [`KindMap`]).
const FEW_KINDS: usize = 8;

impl<E: Event> KindMap<E> {
    fn new() -> Self {
        Self::Few(Vec::new())
    }

    /// The entry of `kind`.
    #[inline]
    fn get(&self, kind: &E::Kind) -> Option<&KindEntry<E>> {
        match self {
            Self::Few(list) => list.iter().find(|(k, _)| k == kind).map(|(_, e)| e),
            Self::Many(map) => map.get(kind),
        }
    }

    /// The number of kinds.
    fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(map) => map.len(),
        }
    }

    /// Every entry.
    fn values(&self) -> Box<dyn Iterator<Item = &KindEntry<E>> + '_> {
        match self {
            Self::Few(list) => Box::new(list.iter().map(|(_, e)| e)),
            Self::Many(map) => Box::new(map.values()),
        }
    }
}

/// A copy of `map` in which `kind` lists `subscribers` and keeps
/// `counters` — or, for an empty list, has no entry (reclaimed): the next
/// snapshot of a `subscribe` or `unsubscribe`.
fn with_entry<E: Event>(
    map: &KindMap<E>,
    kind: &E::Kind,
    subscribers: std::sync::Arc<[Subscriber<E>]>,
    counters: Arc<counters::DeliveryCounters>,
) -> Arc<KindMap<E>> {
    let entry = (!subscribers.is_empty()).then_some(KindEntry {
        subscribers,
        counters,
    });
    let next = match map {
        KindMap::Few(list) => {
            let mut list: Vec<_> = list.iter().filter(|(k, _)| k != kind).cloned().collect();
            list.extend(entry.map(|e| (kind.clone(), e)));
            if list.len() > FEW_KINDS {
                let mut many = HashMap::with_capacity_and_hasher(list.len(), MapHasher::default());
                many.extend(list);
                KindMap::Many(many)
            } else {
                KindMap::Few(list)
            }
        }
        KindMap::Many(many) => {
            let mut many = many.clone();
            match entry {
                Some(entry) => {
                    many.insert(kind.clone(), entry);
                }
                None => {
                    many.remove(kind);
                }
            }
            if many.len() <= FEW_KINDS / 2 {
                KindMap::Few(many.into_iter().collect())
            } else {
                KindMap::Many(many)
            }
        }
    };
    Arc::new(next)
}

/// The state every handle of a bus shares: the bus itself, and (weakly)
/// its owned guards and receivers.
struct Inner<E: Event> {
    /// Kind → subscribers and counters, sharded by kind: each shard is an
    /// RCU snapshot of its kinds, which an emit loads once and a subscribe
    /// or unsubscribe of one of its kinds copies and replaces.
    /// Inline (no pointer to chase between the bus and a shard's cell).
    shards: [ArcSwap<KindMap<E>>; KIND_SHARDS],
    /// Picks a kind's shard (seeded apart from the maps' own hasher).
    shard_hasher: ShardHasher,
    /// Subscription id → its kind (to find its list).
    index: ShardedMap<SubscriptionId, E::Kind>,
    /// `Relaxed`: ids only need to be unique.
    next_id: AtomicU64,
    audit: audit::AuditRing<E>,
    stripes: usize,
}

/// The number of kind shards: a subscribe or unsubscribe copies one
/// shard's map, about `live kinds / KIND_SHARDS` entries. One under loom:
/// the models then make kinds share a snapshot (the harder case: writers of
/// different kinds race on it), and picking a shard is a pure function.
const KIND_SHARDS: usize = if cfg!(raceless_loom) { 1 } else { 64 };

/// Seeded per bus; fixed under loom, whose executions must replay alike.
#[cfg(not(raceless_loom))]
type ShardHasher = foldhash::fast::RandomState;
#[cfg(raceless_loom)]
type ShardHasher = foldhash::fast::FixedState;

impl<E: Event> Inner<E> {
    /// The snapshot cell of `kind`'s shard.
    #[inline]
    fn shard(&self, kind: &E::Kind) -> &ArcSwap<KindMap<E>> {
        use std::hash::BuildHasher;
        // Bits 32.. of foldhash's folded multiply (well mixed); the
        // shard count is a power of two.
        let h = self.shard_hasher.hash_one(kind);
        &self.shards[(h >> 32) as usize & (KIND_SHARDS - 1)]
    }

    fn subscribe(&self, kind: E::Kind, sink: Sink<E>) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let subscriber = Subscriber::new(id, sink);
        // Linearization point: the rcu's successful compare-and-swap. A
        // kind's first subscribe creates its entry and counters; a retry
        // after a lost compare-and-swap starts from the winner's map, so a
        // kind never has two sets of counters, and a subscribe racing the
        // reclamation of its kind either extends the entry (its
        // compare-and-swap came first: the reclaiming unsubscribe then
        // finds two subscribers and keeps the entry) or creates a new one
        // (it came second).
        self.shard(&kind).rcu(|current| {
            let (old, counters): (&[Subscriber<E>], _) = match current.get(&kind) {
                Some(entry) => (&entry.subscribers, entry.counters.clone()),
                None => (&[], Arc::new(counters::DeliveryCounters::new(self.stripes))),
            };
            let subscribers = old.iter().cloned().chain([subscriber.clone()]).collect();
            with_entry(current, &kind, subscribers, counters)
        });
        // Indexed after it is in the list: an unsubscribe can only find an
        // id whose handler is already there.
        self.index.insert(id, kind);
        id
    }

    fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some(kind) = self.index.get(&id) else {
            return false;
        };
        // The snapshot, not the index, decides: of concurrent unsubscribes
        // of one id exactly one compare-and-swap removes it. Holding
        // `current` keeps its allocation alive, so the pointer comparison
        // has no ABA.
        let cell = self.shard(&kind);
        let mut current = cell.load_full();
        let removed = loop {
            let Some(entry) = current.get(&kind) else {
                return false; // the kind was reclaimed: the id is gone
            };
            let Some(pos) = entry.subscribers.iter().position(|s| s.id == id) else {
                return false;
            };
            let subscribers: std::sync::Arc<[Subscriber<E>]> = entry.subscribers[..pos]
                .iter()
                .chain(&entry.subscribers[pos + 1..])
                .cloned()
                .collect();
            // The last subscriber leaves: the next snapshot has no entry
            // for the kind (reclaimed in this same compare-and-swap).
            let next = with_entry(&current, &kind, subscribers, entry.counters.clone());
            let previous = cell.compare_and_swap(&current, next);
            if Arc::ptr_eq(&previous, &current) {
                break entry.subscribers[pos].clone(); // linearization point
            }
            current = previous;
        };
        // A channel learns its subscription ended (its receiver drains,
        // then sees `Closed`).
        removed.close();
        self.index.remove(&id);
        true
    }
}

impl<E: Event> Detach for Inner<E> {
    fn detach(&self, id: SubscriptionId) -> bool {
        self.unsubscribe(id)
    }
}

impl<E: Event> Drop for Inner<E> {
    /// The bus is gone: every receiver still subscribed is closed (it
    /// drains its queue, then sees `Closed`). No emit can run any more: an
    /// emit borrows the bus, so it returned before the bus was dropped.
    fn drop(&mut self) {
        for shard in self.shards.iter() {
            for entry in shard.load().values() {
                for subscriber in entry.subscribers.iter() {
                    subscriber.close();
                }
            }
        }
    }
}

/// The lock-free event bus: RCU subscriber lists per kind and a lock-free
/// bounded audit ring. See the [module docs](self) for the protocol and its
/// guarantees.
///
/// ```
/// use raceless::bus::{Event, EventBus};
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Msg(&'static str);
/// impl Event for Msg { type Kind = (); fn kind(&self) {} }
///
/// let bus = EventBus::new(2);
/// bus.subscribe((), |_| Err("broken".into()));
/// bus.subscribe((), |_| panic!("also broken"));
/// bus.subscribe((), |_| Ok(()));
/// let report = bus.emit(Msg("a"));
/// assert_eq!((report.delivered, report.failed), (1, 2));
/// bus.emit(Msg("b"));
/// bus.emit(Msg("c"));
/// assert_eq!(bus.audit_log(), vec![Msg("b"), Msg("c")]);
/// ```
pub struct EventBus<E: Event> {
    /// A `std` `Arc` even under loom: guards and receivers hold it as a
    /// `Weak<dyn Detach>`, which loom's `Arc` cannot express; the protocol
    /// loom checks is inside (the snapshot, the channels).
    inner: std::sync::Arc<Inner<E>>,
}

impl<E: Event> EventBus<E> {
    /// A bus whose audit log keeps the newest `audit_capacity` events
    /// (0 disables the log).
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// bus.emit(Ping);
    /// assert!(bus.audit_log().is_empty());
    /// ```
    pub fn new(audit_capacity: usize) -> Self {
        Self {
            inner: std::sync::Arc::new(Inner {
                shards: std::array::from_fn(|_| ArcSwap::from_value(KindMap::new())),
                shard_hasher: ShardHasher::default(),
                index: ShardedMap::new(),
                next_id: AtomicU64::new(0),
                audit: audit::AuditRing::new(audit_capacity),
                stripes: counters::stripe_count(),
            }),
        }
    }

    /// The audit log's capacity.
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// assert_eq!(EventBus::<Ping>::new(16).audit_capacity(), 16);
    /// ```
    pub fn audit_capacity(&self) -> usize {
        self.inner.audit.capacity()
    }

    /// Subscribes `handler` to events of `kind` and returns its id. Every
    /// emit that starts after this returns delivers to it, until it is
    /// unsubscribed. The handler runs on the emitting thread.
    ///
    /// Lock-free: a compare-and-swap loop that copies the snapshot (one
    /// `Arc` clone per live kind), then one sharded-map insert.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(0);
    /// let a = bus.subscribe((), |_| Ok(()));
    /// let b = bus.subscribe((), |_| Ok(()));
    /// assert_ne!(a, b);
    /// assert_eq!(bus.emit(Ping).delivered, 2);
    /// ```
    pub fn subscribe(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> SubscriptionId {
        self.inner
            .subscribe(kind, Sink::Handler(std::sync::Arc::new(handler)))
    }

    /// Like [`subscribe`](Self::subscribe), but the subscription ends when
    /// the returned guard is dropped.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(0);
    /// let sub = bus.subscribe_scoped((), |_| Ok(()));
    /// assert_eq!(bus.emit(Ping).delivered, 1);
    /// drop(sub);
    /// assert_eq!(bus.emit(Ping).delivered, 0);
    /// ```
    pub fn subscribe_scoped(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Subscription<'_, E> {
        Bus::subscribe_scoped(self, kind, handler)
    }

    /// Like [`subscribe`](Self::subscribe), but returns an
    /// [`OwnedSubscription`]: a `Send + 'static` guard that does not borrow
    /// the bus (it can move into a task or sit in a struct next to an
    /// `Arc<EventBus>`) and unsubscribes when dropped.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus, OwnedSubscription};
    /// use std::sync::Arc;
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = (); fn kind(&self) {} }
    ///
    /// struct Service { bus: Arc<EventBus<Ping>>, _sub: OwnedSubscription }
    ///
    /// let bus = Arc::new(EventBus::new(0));
    /// let service = Service { _sub: bus.subscribe_owned((), |_| Ok(())), bus: bus.clone() };
    /// assert_eq!(service.bus.emit(Ping).delivered, 1);
    /// drop(service);
    /// assert_eq!(bus.emit(Ping).delivered, 0);
    /// ```
    pub fn subscribe_owned(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> OwnedSubscription {
        let id = self.subscribe(kind, handler);
        OwnedSubscription::new(id, self.detacher())
    }

    /// Subscribes an async consumer to events of `kind`: a [`Receiver`]
    /// with a queue of `capacity` events. Every emit that starts after
    /// this returns queues a clone of the event for it (counted in
    /// [`EmitReport::delivered`]); a full queue drops the receiver's
    /// oldest event and reports it as [`RecvError::Lagged`]. `emit` never
    /// waits for a receiver.
    ///
    /// `capacity` 0 is [`BusError::ZeroCapacity`]; above
    /// [`MAX_CHANNEL_CAPACITY`] it is [`BusError::CapacityTooLarge`] (the
    /// queue is allocated up front). Lock-free, as
    /// [`subscribe`](Self::subscribe).
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus, BusError};
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct N(u8);
    /// impl Event for N { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(0);
    /// let mut rx = bus.subscribe_channel((), 8)?;
    /// assert_eq!(bus.emit(N(1)).delivered, 1);
    /// assert_eq!(rx.try_recv(), Ok(N(1)));
    /// assert_eq!(bus.subscribe_channel((), 0).unwrap_err(), BusError::ZeroCapacity);
    /// # Ok::<(), BusError>(())
    /// ```
    pub fn subscribe_channel(
        &self,
        kind: E::Kind,
        capacity: usize,
    ) -> Result<Receiver<E>, BusError> {
        channel::Channel::<E>::check_capacity(capacity)?;
        let channel = Arc::new(channel::Channel::new(capacity));
        let id = self.inner.subscribe(kind, Sink::Channel(channel.clone()));
        Ok(Receiver::new(channel, id, self.detacher()))
    }

    fn detacher(&self) -> std::sync::Weak<dyn Detach> {
        let weak: std::sync::Weak<Inner<E>> = std::sync::Arc::downgrade(&self.inner);
        weak
    }

    /// Removes a subscription (a handler's, or a receiver's: the receiver
    /// then drains its queue and sees [`RecvError::Closed`]). `true` if
    /// this call removed it; `false` for an unknown id or one already
    /// removed. After `true`, no emit that starts later calls the handler
    /// (one already running may). If it was the kind's last subscriber,
    /// the kind's entry is reclaimed in the same step.
    ///
    /// Lock-free: a sharded-map read, a compare-and-swap loop that copies
    /// the snapshot, a sharded-map remove.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// let id = bus.subscribe((), |_| Ok(()));
    /// assert!(bus.unsubscribe(id));
    /// assert!(!bus.unsubscribe(id)); // already removed
    /// ```
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.inner.unsubscribe(id)
    }

    /// Logs `event` (no copy: the log and the handlers share it) and calls
    /// every handler subscribed to its kind, in subscription order, on the
    /// snapshot of the list current when the emit starts; each channel
    /// subscribed to the kind gets a clone queued (never waiting: a full
    /// queue drops that receiver's oldest event). Failures are isolated
    /// and counted; nothing is held that `subscribe` or `unsubscribe`
    /// would wait for.
    ///
    /// Lock-free, and wait-free apart from the handlers it calls, the
    /// audit log's page installs and a thread's first emit (which claims
    /// its audit stripe); see `docs/bus.md`.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus, EmitReport};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(4);
    /// assert_eq!(bus.emit(Ping), EmitReport::default());
    /// assert_eq!(bus.audit_log().len(), 1);
    /// ```
    #[inline]
    pub fn emit(&self, event: E) -> EmitReport {
        let inner = &*self.inner;
        let kind = event.kind();
        // The handlers get the event where the log keeps it (no copy).
        inner.audit.record(event, |event| {
            // One arc-swap read guard: no lock, nothing a writer waits for.
            let kinds = inner.shard(&kind).load(); // linearization point
            let Some(entry) = kinds.get(&kind) else {
                return EmitReport::default();
            };
            let report = deliver(event, &entry.subscribers);
            entry.counters.add(report.delivered, report.failed);
            report
        })
    }

    /// The newest logged events by stamp, at most the capacity, oldest
    /// first. Each emitted event appears at most once and whole, one
    /// thread's events in its emit order; once no emit runs, the log is
    /// exactly the newest `capacity` events by stamp. Events of different
    /// threads are ordered by their time-stamp-counter readings, not by one
    /// global sequence; a snapshot taken while emits run is consistent per
    /// event (see `docs/bus.md`).
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct N(u32);
    /// impl Event for N { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(2);
    /// for i in 0..5 { bus.emit(N(i)); }
    /// assert_eq!(bus.audit_log(), vec![N(3), N(4)]);
    /// ```
    pub fn audit_log(&self) -> Vec<E> {
        self.inner.audit.snapshot()
    }

    /// The number of subscribers (handlers and receivers) of `kind`.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = u8; fn kind(&self) -> u8 { 0 } }
    /// let bus = EventBus::<Ping>::new(0);
    /// bus.subscribe(1, |_| Ok(()));
    /// assert_eq!(bus.subscriber_count(&1), 1);
    /// assert_eq!(bus.subscriber_count(&2), 0);
    /// ```
    pub fn subscriber_count(&self, kind: &E::Kind) -> usize {
        self.inner
            .shard(kind)
            .load()
            .get(kind)
            .map_or(0, |entry| entry.subscribers.len())
    }

    /// The number of kinds the bus keeps an entry for: those with at least
    /// one subscriber (a kind is reclaimed when its last subscriber
    /// leaves).
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = u32; fn kind(&self) -> u32 { 0 } }
    /// let bus = EventBus::<Ping>::new(0);
    /// let id = bus.subscribe(7, |_| Ok(()));
    /// assert_eq!(bus.kind_count(), 1);
    /// bus.unsubscribe(id);
    /// assert_eq!(bus.kind_count(), 0);
    /// ```
    pub fn kind_count(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| shard.load().len())
            .sum()
    }

    /// Delivered and failed handler calls for `kind` since it was last
    /// created (zero for a kind without subscribers: its entry and
    /// counters are reclaimed with its last subscriber). Exact once the
    /// emits counted have returned.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// #[derive(Clone)]
    /// struct Ping;
    /// impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(0);
    /// bus.subscribe((), |_| Ok(()));
    /// bus.emit(Ping);
    /// assert_eq!(bus.delivery_stats(&()).delivered, 1);
    /// ```
    pub fn delivery_stats(&self, kind: &E::Kind) -> KindStats {
        self.inner
            .shard(kind)
            .load()
            .get(kind)
            .map_or_else(KindStats::default, |slot| slot.counters.totals())
    }
}

impl<E: Event> Default for EventBus<E> {
    /// A bus with the audit log disabled.
    fn default() -> Self {
        Self::new(0)
    }
}

impl<E: Event> fmt::Debug for EventBus<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("kinds", &self.kind_count())
            .field("subscriptions", &self.inner.index.len())
            .field("audit_capacity", &self.inner.audit.capacity())
            .finish()
    }
}

impl<E: Event> Bus<E> for EventBus<E> {
    fn subscribe(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> SubscriptionId {
        EventBus::subscribe(self, kind, handler)
    }
    fn unsubscribe(&self, id: SubscriptionId) -> bool {
        EventBus::unsubscribe(self, id)
    }
    #[inline]
    fn emit(&self, event: E) -> EmitReport {
        EventBus::emit(self, event)
    }
    fn audit_log(&self) -> Vec<E> {
        EventBus::audit_log(self)
    }
    fn subscriber_count(&self, kind: &E::Kind) -> usize {
        EventBus::subscriber_count(self, kind)
    }
}

impl<E: Event> OwnedBus<E> for EventBus<E> {
    fn subscribe_owned(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> OwnedSubscription {
        EventBus::subscribe_owned(self, kind, handler)
    }
    fn subscribe_channel(&self, kind: E::Kind, capacity: usize) -> Result<Receiver<E>, BusError> {
        EventBus::subscribe_channel(self, kind, capacity)
    }
    fn kind_count(&self) -> usize {
        EventBus::kind_count(self)
    }
}
