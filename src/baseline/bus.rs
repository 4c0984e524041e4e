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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use super::{Lock, MutexKind, StdMutex};
use crate::bus::{deliver, Bus, EmitReport, Event, HandlerError, Subscriber, SubscriptionId};
use crate::sync::MapHasher;

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
    state: M::Mutex<State<E>>,
    capacity: usize,
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
            state: M::Mutex::new(State {
                kinds: HashMap::with_hasher(MapHasher::default()),
                index: HashMap::with_hasher(MapHasher::default()),
                audit: VecDeque::with_capacity(audit_capacity.min(4096)),
                next_id: 0,
            }),
            capacity: audit_capacity,
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
        handler: impl Fn(&E) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> SubscriptionId {
        let handler = std::sync::Arc::new(handler);
        self.state.with(|s| {
            let id = SubscriptionId::from_raw(s.next_id);
            s.next_id += 1;
            s.index.insert(id, kind.clone());
            s.kinds
                .entry(kind)
                .or_default()
                .push(Subscriber { id, handler });
            id
        })
    }

    /// Removes a subscription; `false` if unknown or already removed.
    ///
    /// ```
    /// use raceless::baseline::MutexBus;
    /// use raceless::bus::SubscriptionId;
    /// # use raceless::bus::Event;
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = MutexBus::<Ping>::new(0);
    /// assert!(!bus.unsubscribe(SubscriptionId::from_raw(7)));
    /// ```
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.state.with(|s| {
            let Some(kind) = s.index.remove(&id) else {
                return false;
            };
            if let Some(list) = s.kinds.get_mut(&kind) {
                list.retain(|sub| sub.id != id);
            }
            true
        })
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
        let capacity = self.capacity;
        let handlers = self.state.with(|s| {
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
        let events: Vec<Arc<E>> = self.state.with(|s| s.audit.iter().cloned().collect());
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
        self.state.with(|s| s.kinds.get(kind).map_or(0, Vec::len))
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
            .field("audit_capacity", &self.capacity)
            .finish()
    }
}

impl<E: Event, M: MutexKind> Bus<E> for MutexBus<E, M> {
    fn subscribe(
        &self,
        kind: E::Kind,
        handler: impl Fn(&E) -> Result<(), HandlerError> + Send + Sync + 'static,
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
