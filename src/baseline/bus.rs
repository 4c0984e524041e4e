//! Mutex baseline of the `bus` component: the seed's own fix (one lock
//! around the subscriptions and the audit log), translated faithfully.
//!
//! `emit` takes the lock, appends the event to a `VecDeque` (evicting the
//! oldest at capacity) and copies the kind's handler list, then unlocks and
//! calls the handlers on the copy — the seed's
//! `for handler in list(self._subscriptions.get(...))` — so handlers may
//! re-enter the bus. The log holds the event behind an `Arc` (the handlers
//! share it), the same "no deep copy" the lock-free bus has, so the
//! comparison measures the synchronization and nothing else.
//!
//! It has the lock-free bus's 0.2 semantics where [`OwnedBus`] covers them:
//! owned guards and channel receivers hold a weak handle to the shared
//! state, a kind's entry is removed with its last subscriber, and dropping
//! the bus closes its receivers. Channels are the same drop-oldest queues
//! as the lock-free bus's, filled after unlocking.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use super::{Lock, MutexKind, StdMutex};
use crate::bus::channel::Channel;
use crate::bus::{
    deliver, Bus, BusError, Detach, EmitReport, Event, OwnedBus, OwnedSubscription, Receiver, Sink,
    Subscriber, SubscriptionId,
};
use crate::sync::MapHasher;
use crate::CallbackError;

struct State<E: Event> {
    kinds: HashMap<E::Kind, Vec<Subscriber<E>>, MapHasher>,
    index: HashMap<SubscriptionId, E::Kind, MapHasher>,
    audit: VecDeque<Arc<E>>,
    next_id: u64,
}

/// The event bus with its whole state behind one mutex of family `M`
/// (`std::sync::Mutex` by default).
///
/// ```
/// use raceless::baseline::MutexBus;
/// use raceless::bus::Event;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct N(u32);
/// impl Event for N { type Kind = (); fn kind(&self) {} }
///
/// let bus = MutexBus::<N>::new(2); // std mutex by default
/// let id = bus.subscribe((), |_| Ok(()));
/// for i in 0..3 { assert_eq!(bus.emit(N(i)).delivered, 1); }
/// assert_eq!(bus.audit_log(), vec![N(1), N(2)]);
/// assert!(bus.unsubscribe(id));
/// assert!(!bus.unsubscribe(id));
/// ```
pub struct MutexBus<E: Event, M: MutexKind = StdMutex> {
    shared: Arc<Shared<E, M>>,
}

/// What the bus, its owned guards and its receivers share.
struct Shared<E: Event, M: MutexKind> {
    state: M::Mutex<State<E>>,
    capacity: usize,
}

impl<E: Event, M: MutexKind> Shared<E, M> {
    fn subscribe(&self, kind: E::Kind, sink: Sink<E>) -> SubscriptionId {
        self.state.with(|s| {
            let id = SubscriptionId::from_raw(s.next_id);
            s.next_id += 1;
            s.index.insert(id, kind.clone());
            s.kinds
                .entry(kind)
                .or_default()
                .push(Subscriber::new(id, sink));
            id
        })
    }

    fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let removed = self.state.with(|s| {
            let kind = s.index.remove(&id)?;
            let list = s.kinds.get_mut(&kind)?;
            let pos = list.iter().position(|sub| sub.id == id)?;
            let removed = list.remove(pos);
            if list.is_empty() {
                s.kinds.remove(&kind); // reclaimed with its last subscriber
            }
            Some(removed)
        });
        // Closed (and dropped) after unlocking.
        removed.map(|sub| sub.close()).is_some()
    }
}

impl<E: Event, M: MutexKind> Detach for Shared<E, M> {
    fn detach(&self, id: SubscriptionId) -> bool {
        self.unsubscribe(id)
    }
}

impl<E: Event, M: MutexKind> Drop for Shared<E, M> {
    /// The bus is gone: its receivers drain, then see `Closed`.
    fn drop(&mut self) {
        let subscribers: Vec<Subscriber<E>> = self
            .state
            .with(|s| s.kinds.values().flatten().cloned().collect());
        for sub in &subscribers {
            sub.close();
        }
    }
}

impl<E: Event, M: MutexKind> MutexBus<E, M> {
    /// A bus whose audit log keeps the newest `audit_capacity` events
    /// (0 disables it).
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<Ping>::new(0);
    /// bus.emit(Ping);
    /// assert!(bus.audit_log().is_empty());
    /// ```
    pub fn new(audit_capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: M::Mutex::new(State {
                    kinds: HashMap::with_hasher(MapHasher::default()),
                    index: HashMap::with_hasher(MapHasher::default()),
                    audit: VecDeque::with_capacity(audit_capacity.min(4096)),
                    next_id: 0,
                }),
                capacity: audit_capacity,
            }),
        }
    }

    /// Subscribes `handler` to `kind`.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<Ping>::new(0);
    /// bus.subscribe((), |_| Ok(()));
    /// assert_eq!(bus.subscriber_count(&()), 1);
    /// ```
    pub fn subscribe(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> SubscriptionId {
        self.shared
            .subscribe(kind, Sink::Handler(Arc::new(handler)))
    }

    /// Removes a subscription; `false` if unknown or already removed.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<Ping>::new(0);
    /// let id = bus.subscribe((), |_| Ok(()));
    /// assert!(bus.unsubscribe(id));
    /// assert!(!bus.unsubscribe(id));
    /// ```
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.shared.unsubscribe(id)
    }

    /// Logs `event` and calls the kind's handlers after unlocking.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<Ping>::new(1);
    /// bus.subscribe((), |_| Err("no".into()));
    /// assert_eq!(bus.emit(Ping).failed, 1);
    /// ```
    pub fn emit(&self, event: E) -> EmitReport {
        let kind = event.kind();
        let event = Arc::new(event);
        let capacity = self.shared.capacity;
        let handlers = self.shared.state.with(|s| {
            if capacity > 0 {
                if s.audit.len() >= capacity {
                    s.audit.pop_front();
                }
                s.audit.push_back(event.clone());
            }
            s.kinds.get(&kind).cloned()
        });
        match handlers {
            Some(handlers) => deliver(&*event, &handlers),
            None => EmitReport::default(),
        }
    }

    /// The logged events, oldest first.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone, Debug, PartialEq)] struct N(u8);
    /// # impl Event for N { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<N>::new(8);
    /// bus.emit(N(1));
    /// assert_eq!(bus.audit_log(), vec![N(1)]);
    /// ```
    pub fn audit_log(&self) -> Vec<E> {
        let events: Vec<Arc<E>> = self
            .shared
            .state
            .with(|s| s.audit.iter().cloned().collect());
        events.iter().map(|e| E::clone(e)).collect()
    }

    /// The number of handlers subscribed to `kind`.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// assert_eq!(MutexBus::<Ping>::new(0).subscriber_count(&()), 0);
    /// ```
    pub fn subscriber_count(&self, kind: &E::Kind) -> usize {
        self.shared
            .state
            .with(|s| s.kinds.get(kind).map_or(0, Vec::len))
    }

    /// Like [`subscribe`](Self::subscribe); the guard unsubscribes when
    /// dropped (see [`OwnedSubscription`] for the drop rule).
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<Ping>::new(0);
    /// let sub = bus.subscribe_owned((), |_| Ok(()));
    /// assert_eq!(bus.emit(Ping).delivered, 1);
    /// drop(sub);
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

    /// A channel receiver of `kind` with a queue of `capacity` (see
    /// [`Receiver`]); pushed after unlocking, never waiting.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone, Debug, PartialEq)] struct N(u8);
    /// # impl Event for N { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<N>::new(0);
    /// let mut rx = bus.subscribe_channel((), 2)?;
    /// bus.emit(N(1));
    /// assert_eq!(rx.try_recv(), Ok(N(1)));
    /// # Ok::<(), raceless::bus::BusError>(())
    /// ```
    pub fn subscribe_channel(
        &self,
        kind: E::Kind,
        capacity: usize,
    ) -> Result<Receiver<E>, BusError> {
        Channel::<E>::check_capacity(capacity)?;
        let channel = crate::sync::Arc::new(Channel::new(capacity));
        let id = self.shared.subscribe(kind, Sink::Channel(channel.clone()));
        Ok(Receiver::new(channel, id, self.detacher()))
    }

    /// The number of kinds with at least one subscriber.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<Ping>::new(0);
    /// assert!(bus.subscribe_owned((), |_| Ok(())).unsubscribe());
    /// assert_eq!(bus.kind_count(), 0);
    /// ```
    pub fn kind_count(&self) -> usize {
        self.shared.state.with(|s| s.kinds.len())
    }

    fn detacher(&self) -> std::sync::Weak<dyn Detach> {
        let weak: std::sync::Weak<Shared<E, M>> = Arc::downgrade(&self.shared);
        weak
    }
}

impl<E: Event, M: MutexKind> Default for MutexBus<E, M> {
    /// A bus with the audit log disabled.
    fn default() -> Self {
        Self::new(0)
    }
}

impl<E: Event, M: MutexKind> fmt::Debug for MutexBus<E, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexBus")
            .field("mutex", &M::NAME)
            .field("audit_capacity", &self.shared.capacity)
            .finish()
    }
}

impl<E: Event, M: MutexKind> Bus<E> for MutexBus<E, M> {
    fn subscribe(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> SubscriptionId {
        MutexBus::subscribe(self, kind, handler)
    }
    fn unsubscribe(&self, id: SubscriptionId) -> bool {
        MutexBus::unsubscribe(self, id)
    }
    fn emit(&self, event: E) -> EmitReport {
        MutexBus::emit(self, event)
    }
    fn audit_log(&self) -> Vec<E> {
        MutexBus::audit_log(self)
    }
    fn subscriber_count(&self, kind: &E::Kind) -> usize {
        MutexBus::subscriber_count(self, kind)
    }
}

impl<E: Event, M: MutexKind> OwnedBus<E> for MutexBus<E, M> {
    fn subscribe_owned(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> OwnedSubscription {
        MutexBus::subscribe_owned(self, kind, handler)
    }
    fn subscribe_channel(&self, kind: E::Kind, capacity: usize) -> Result<Receiver<E>, BusError> {
        MutexBus::subscribe_channel(self, kind, capacity)
    }
    fn kind_count(&self) -> usize {
        MutexBus::kind_count(self)
    }
}
