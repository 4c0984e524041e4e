//! Async consumers of the bus: one bounded, drop-oldest queue per
//! [`Receiver`], filled by `emit` without ever waiting.
//!
//! # The channel protocol
//!
//! A channel is an `Arc<Channel>` shared by the receiver and by the
//! subscriber list (the RCU snapshot) the emits read:
//!
//! ```text
//! Channel { queue: ArrayQueue<E>,   bounded, lock-free (crossbeam-queue)
//!           lagged: AtomicU64,      events this receiver lost, not yet reported
//!           closed: AtomicBool,     the bus is gone (or the subscription ended)
//!           waker: AtomicWaker }    the task (or thread) waiting in recv
//! ```
//!
//! **push** (inside `emit`, once per channel subscribed to the kind):
//! `queue.force_push(event.clone())`; if it evicted the oldest event,
//! `lagged.fetch_add(1)`, and `waker.wake()` only if that found 0; a push
//! that did not evict always wakes. Nothing here waits: a full queue is
//! not a reason to block, it costs the consumer its oldest event. See *no
//! lost wake-up* below for the wakes evicting pushes skip.
//!
//! **try_recv**: `missed = lagged.swap(0)`; `missed > 0` → `Lagged(missed)`;
//! else `queue.pop()` → the event; else if `closed` → pop once more (an
//! event pushed before the close is visible now), then `Closed`; else
//! `Empty`.
//!
//! **recv** (poll): `try_recv`; on `Empty`, `waker.register(cx.waker())`,
//! then `try_recv` again; still `Empty` → `Pending`. A push (or close)
//! after the second check wakes the registered waker; one before it is
//! found by the second check. This is the register-then-recheck pattern
//! `AtomicWaker` documents (its `register` and `wake` synchronize through
//! its `AcqRel` state word), so no wake-up is lost (loom model
//! `recv_is_woken_by_emit`).
//!
//! *No lost wake-up with silent evictions:* a receiver returns `Pending`
//! only after its second check found no lag to report and the queue
//! empty, with its waker registered before that check. Two things can
//! make it ready again, and each one wakes it:
//! - *an event.* A push that evicts found the queue full, so between that
//!   check and this push at least `capacity` pushes into a queue that was
//!   not full took place after the check (evictions do not change the
//!   length, pops only shorten it); each of those wakes, and the first of
//!   them is after the check, so it wakes the registered waker (the
//!   argument above). Its emit may still be running when the evicting one
//!   returns, but it waits for nothing before its `wake`.
//! - *a lag count.* An eviction adds its unit after its `force_push`, so
//!   the receiver may have taken the new event and gone to sleep before
//!   the unit is added. The push whose `fetch_add` finds 0 wakes after
//!   adding: its unit is after every earlier `swap` in `lagged`'s
//!   modification order, the woken receiver's next `swap` comes after the
//!   add (the add, the wake's `AcqRel` read-modify-write of the waker
//!   state and the receiver's registration or poll are ordered), and a
//!   `swap` takes every unit before it. A push whose `fetch_add` finds
//!   `n > 0` needs no wake: no `swap` came between the add that found 0
//!   and its own, so the `swap` that takes that unit — which the first
//!   push's wake guarantees — takes its unit too.
//!
//! (loom model `evicting_pushes_lose_no_wake_up`, which deadlocks if an
//! evicting push never wakes, or if a push that does not evict skips its
//! wake.) The emits into a full queue nobody drains thus never touch the
//! waker's state word (two read-modify-writes per `wake` on a line every
//! emitter shares): the lag count stays above 0.
//!
//! *Linearization points:* an event is delivered at the `force_push` that
//! puts it in the queue, received at the `pop` that takes it out, and lost
//! at the `force_push` that evicts it. `ArrayQueue` is linearizable and a
//! slot leaves it exactly once, by a `pop` or by an eviction, never both.
//!
//! *Why `Lagged` counts are exact:* every eviction is followed by exactly
//! one `fetch_add(1)` by the evicting emitter, and every unit added is
//! handed out by exactly one `swap(0)` (read-modify-writes on one atomic
//! never lose or duplicate an update, whatever the ordering). So, once the
//! emits have returned, the events a receiver got plus the sum of its
//! `Lagged` counts plus what is still queued equal the events pushed to it
//! (loom model `lag_count_is_exact`; test `slow_consumer_lags_exactly`).
//! The report can trail the gap by a few events: an emitter that evicted
//! has not necessarily added its count when the receiver pops the event
//! it pushed. With one emitter, or once the emits have returned, the
//! report comes before the oldest kept event, as in
//! `tokio::sync::broadcast`.
//!
//! *Orderings:* `lagged` is `Relaxed` (a count that publishes nothing;
//! exactness comes from RMW atomicity, and read-write coherence makes a
//! `swap` after a happened-before `fetch_add` see it). `closed` is stored
//! `Release` and loaded `Acquire`: every push that happened before the
//! close (the bus is dropped only after its emits returned) is then
//! visible to the receiver's final `pop`. The queue and the waker bring
//! their own synchronization (the event is published by `force_push` and
//! acquired by `pop`).

use std::fmt;
use std::task::{Context, Poll};

use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering};

use super::{Detach, Event, SubscriptionId};

/// The largest capacity a channel may have: its queue is allocated up
/// front, so a capacity from request data must not reserve gigabytes.
pub const MAX_CHANNEL_CAPACITY: usize = 1 << 20;

/// Why a bus refused an operation.
///
/// ```
/// use raceless::bus::{BusError, Event, EventBus};
/// #[derive(Clone)]
/// struct Ping;
/// impl Event for Ping { type Kind = (); fn kind(&self) {} }
/// let bus = EventBus::<Ping>::new(0);
/// assert_eq!(bus.subscribe_channel((), 0).unwrap_err(), BusError::ZeroCapacity);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A channel needs room for at least one event.
    #[error("a channel's capacity must be at least 1")]
    ZeroCapacity,
    /// A channel's capacity above [`MAX_CHANNEL_CAPACITY`].
    #[error("a channel's capacity must be at most {max}, got {requested}")]
    CapacityTooLarge {
        /// The capacity asked for.
        requested: usize,
        /// The largest capacity allowed.
        max: usize,
    },
}

/// Why [`Receiver::recv`] or [`Receiver::blocking_recv`] returned no event.
///
/// ```
/// use raceless::bus::RecvError;
/// assert_eq!(RecvError::Lagged(3).to_string(), "receiver lagged behind by 3 events");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The receiver fell behind and its queue dropped this many of its
    /// oldest events. Reported once; the next receive returns the oldest
    /// event still kept.
    #[error("receiver lagged behind by {0} events")]
    Lagged(u64),
    /// The bus is gone (or the subscription was ended with
    /// `unsubscribe`) and every event queued before has been received.
    /// Every later receive returns `Closed` too.
    #[error("the bus is closed")]
    Closed,
}

/// Why [`Receiver::try_recv`] returned no event.
///
/// ```
/// use raceless::bus::TryRecvError;
/// assert_eq!(TryRecvError::Empty.to_string(), "no event queued");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No event is queued now.
    #[error("no event queued")]
    Empty,
    /// As [`RecvError::Lagged`].
    #[error("receiver lagged behind by {0} events")]
    Lagged(u64),
    /// As [`RecvError::Closed`].
    #[error("the bus is closed")]
    Closed,
}

#[cfg(not(raceless_loom))]
mod shim {
    /// `atomic_waker::AtomicWaker`: one waker slot, lock-free.
    pub(super) struct AtomicWaker(atomic_waker::AtomicWaker);

    impl AtomicWaker {
        pub(super) fn new() -> Self {
            Self(atomic_waker::AtomicWaker::new())
        }
        pub(super) fn register(&self, waker: &std::task::Waker) {
            self.0.register(waker);
        }
        pub(super) fn wake(&self) {
            self.0.wake();
        }
    }

    /// `crossbeam_queue::ArrayQueue`: bounded, lock-free, linearizable.
    pub(super) struct Queue<T>(crossbeam_queue::ArrayQueue<T>);

    impl<T> Queue<T> {
        pub(super) fn new(capacity: usize) -> Self {
            Self(crossbeam_queue::ArrayQueue::new(capacity))
        }
        /// Pushes `value`, evicting and returning the oldest if full.
        pub(super) fn force_push(&self, value: T) -> Option<T> {
            self.0.force_push(value)
        }
        pub(super) fn pop(&self) -> Option<T> {
            self.0.pop()
        }
        pub(super) fn len(&self) -> usize {
            self.0.len()
        }
        pub(super) fn capacity(&self) -> usize {
            self.0.capacity()
        }
    }

    /// Drives `future` on this thread, parking between polls.
    pub(super) fn block_on<F: std::future::Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Wake, Waker};

        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
            fn wake_by_ref(self: &std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }

        let mut future = std::pin::pin!(future);
        let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            // A wake-up that came before the park makes it return at once;
            // a spurious return only costs another poll.
            std::thread::park();
        }
    }
}

#[cfg(raceless_loom)]
mod shim {
    pub(super) use loom::future::block_on;

    /// loom's `AtomicWaker` (a model of the same contract).
    pub(super) struct AtomicWaker(loom::future::AtomicWaker);

    impl AtomicWaker {
        pub(super) fn new() -> Self {
            Self(loom::future::AtomicWaker::new())
        }
        pub(super) fn register(&self, waker: &std::task::Waker) {
            self.0.register_by_ref(waker);
        }
        pub(super) fn wake(&self) {
            self.0.wake();
        }
    }

    /// Stand-in for `ArrayQueue` under loom: each operation atomic, as
    /// crossbeam documents (a loom mutex around a `VecDeque`).
    pub(super) struct Queue<T> {
        items: loom::sync::Mutex<std::collections::VecDeque<T>>,
        capacity: usize,
    }

    impl<T> Queue<T> {
        pub(super) fn new(capacity: usize) -> Self {
            Self {
                items: loom::sync::Mutex::new(std::collections::VecDeque::new()),
                capacity,
            }
        }
        pub(super) fn force_push(&self, value: T) -> Option<T> {
            let mut items = self.items.lock().unwrap();
            let evicted = if items.len() == self.capacity {
                items.pop_front()
            } else {
                None
            };
            items.push_back(value);
            evicted
        }
        pub(super) fn pop(&self) -> Option<T> {
            self.items.lock().unwrap().pop_front()
        }
        pub(super) fn len(&self) -> usize {
            self.items.lock().unwrap().len()
        }
        pub(super) fn capacity(&self) -> usize {
            self.capacity
        }
    }
}

/// One receiver's queue, shared with the subscriber lists that deliver to
/// it. See the module docs for the protocol.
pub(crate) struct Channel<E> {
    queue: shim::Queue<E>,
    /// Evicted events not yet reported. `Relaxed`: a count (see module docs).
    lagged: AtomicU64,
    /// `Release` store, `Acquire` load.
    closed: AtomicBool,
    waker: shim::AtomicWaker,
}

impl<E> Channel<E> {
    /// A channel for `capacity` events (validated by the caller).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: shim::Queue::new(capacity),
            lagged: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            waker: shim::AtomicWaker::new(),
        }
    }

    /// Checks a requested capacity.
    pub(crate) fn check_capacity(capacity: usize) -> Result<(), BusError> {
        match capacity {
            0 => Err(BusError::ZeroCapacity),
            n if n > MAX_CHANNEL_CAPACITY => Err(BusError::CapacityTooLarge {
                requested: n,
                max: MAX_CHANNEL_CAPACITY,
            }),
            _ => Ok(()),
        }
    }

    /// Queues `event`, evicting (and counting) the oldest if full, and
    /// wakes the receiver. Never waits. The evicted event is dropped after
    /// the queue operation, outside anything shared.
    ///
    /// A push that evicts wakes only if its count is the first one not yet
    /// reported (the `fetch_add` found 0); see the module docs. On a full
    /// queue nobody drains, the emits then touch no waker state at all.
    pub(crate) fn push(&self, event: E) {
        match self.queue.force_push(event) {
            Some(evicted) => {
                let unreported = self.lagged.fetch_add(1, Ordering::Relaxed);
                drop(evicted);
                if unreported == 0 {
                    self.waker.wake();
                }
            }
            None => self.waker.wake(),
        }
    }

    /// Marks the channel closed and wakes the receiver: it drains what is
    /// queued, then sees `Closed`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn try_recv(&self) -> Result<E, TryRecvError> {
        let missed = self.lagged.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Err(TryRecvError::Lagged(missed));
        }
        if let Some(event) = self.queue.pop() {
            return Ok(event);
        }
        if !self.closed.load(Ordering::Acquire) {
            return Err(TryRecvError::Empty);
        }
        // Closed: everything pushed before the close is visible now.
        if let Some(event) = self.queue.pop() {
            return Ok(event);
        }
        match self.lagged.swap(0, Ordering::Relaxed) {
            0 => Err(TryRecvError::Closed),
            missed => Err(TryRecvError::Lagged(missed)),
        }
    }
}

/// An async consumer of one event kind, from
/// [`EventBus::subscribe_channel`](super::EventBus::subscribe_channel): a
/// bounded queue that `emit` fills without ever waiting for it.
///
/// When the queue is full, `emit` drops this receiver's *oldest* event and
/// counts it; the next receive reports the count as
/// [`RecvError::Lagged`], then goes on with the oldest event still kept
/// (the shape of `tokio::sync::broadcast`). Other receivers and handlers
/// of the kind are not affected by a slow receiver.
///
/// The receiver is `Send + 'static`: it can be moved into a task or stored
/// in a struct. It does **not** keep the bus alive: once the bus is
/// dropped, the receiver drains what is queued and then gets
/// [`RecvError::Closed`].
///
/// **Drop rule:** dropping the receiver (anywhere, including a task
/// cancelled at an `.await`) unsubscribes it, exactly like
/// [`EventBus::unsubscribe`](super::EventBus::unsubscribe) of its id (a
/// lock-free compare-and-swap loop that never waits for an emit); the
/// events still queued are freed with the queue once no emit that started
/// before the drop holds it. If the bus is already gone, dropping frees
/// the queue and does nothing else.
///
/// ```
/// use raceless::bus::{Event, EventBus, RecvError};
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Tick(u32);
/// impl Event for Tick { type Kind = (); fn kind(&self) {} }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let bus = EventBus::new(0);
/// let mut rx = bus.subscribe_channel((), 2)?;
/// for i in 0..3 {
///     bus.emit(Tick(i)); // never waits: the third evicts Tick(0)
/// }
/// assert_eq!(rx.recv().await, Err(RecvError::Lagged(1)));
/// assert_eq!(rx.recv().await, Ok(Tick(1)));
/// assert_eq!(rx.recv().await, Ok(Tick(2)));
/// drop(bus);
/// assert_eq!(rx.recv().await, Err(RecvError::Closed));
/// # Ok::<(), raceless::bus::BusError>(())
/// # }).unwrap();
/// ```
pub struct Receiver<E: Event> {
    channel: Arc<Channel<E>>,
    id: SubscriptionId,
    bus: std::sync::Weak<dyn Detach>,
    /// `Closed` was returned: it is final.
    done: bool,
}

impl<E: Event> Receiver<E> {
    pub(crate) fn new(
        channel: Arc<Channel<E>>,
        id: SubscriptionId,
        bus: std::sync::Weak<dyn Detach>,
    ) -> Self {
        Self {
            channel,
            id,
            bus,
            done: false,
        }
    }

    /// The id of this receiver's subscription.
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// let rx = bus.subscribe_channel((), 4)?;
    /// let other = bus.subscribe((), |_| Ok(()));
    /// assert_ne!(rx.id(), other);
    /// # Ok::<(), raceless::bus::BusError>(())
    /// ```
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The number of events queued now (a snapshot).
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(0);
    /// let rx = bus.subscribe_channel((), 4)?;
    /// bus.emit(Ping);
    /// assert_eq!(rx.len(), 1);
    /// assert!(!rx.is_empty());
    /// # Ok::<(), raceless::bus::BusError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.channel.queue.len()
    }

    /// Whether no event is queued now (a snapshot).
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// assert!(bus.subscribe_channel((), 4)?.is_empty());
    /// # Ok::<(), raceless::bus::BusError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most events this receiver queues.
    ///
    /// ```
    /// # use raceless::bus::{Event, EventBus};
    /// # #[derive(Clone)] struct Ping;
    /// # impl Event for Ping { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::<Ping>::new(0);
    /// assert_eq!(bus.subscribe_channel((), 4)?.capacity(), 4);
    /// # Ok::<(), raceless::bus::BusError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.channel.queue.capacity()
    }

    /// The next event without waiting: `Empty` if none is queued. Lock-free
    /// (one `swap` and one or two queue pops).
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus, TryRecvError};
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct N(u8);
    /// impl Event for N { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(0);
    /// let mut rx = bus.subscribe_channel((), 1)?;
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// bus.emit(N(1));
    /// bus.emit(N(2));
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged(1)));
    /// assert_eq!(rx.try_recv(), Ok(N(2)));
    /// # Ok::<(), raceless::bus::BusError>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<E, TryRecvError> {
        if self.done {
            return Err(TryRecvError::Closed);
        }
        let out = self.channel.try_recv();
        if matches!(out, Err(TryRecvError::Closed)) {
            self.done = true;
        }
        out
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<E, RecvError>> {
        let ready = |out: Result<E, TryRecvError>| match out {
            Ok(event) => Some(Ok(event)),
            Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
            Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            Err(TryRecvError::Empty) => None,
        };
        if let Some(out) = ready(self.try_recv()) {
            return Poll::Ready(out);
        }
        // Register, then check again: a push after the check wakes us, one
        // before it is found (see the module docs).
        self.channel.waker.register(cx.waker());
        match ready(self.try_recv()) {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }

    /// The next event, waiting (asynchronously) until one is queued or the
    /// bus is gone. Works on any executor.
    ///
    /// **Cancel-safe:** an event is taken from the queue only in the poll
    /// that returns it, so dropping the future (a `select!` branch that
    /// lost, a timeout) loses no event.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus};
    /// use std::sync::Arc;
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct N(u8);
    /// impl Event for N { type Kind = (); fn kind(&self) {} }
    ///
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// let bus = Arc::new(EventBus::new(0));
    /// let mut rx = bus.subscribe_channel((), 16)?;
    /// let consumer = tokio::spawn(async move { rx.recv().await });
    /// bus.emit(N(7));
    /// assert_eq!(consumer.await.unwrap(), Ok(N(7)));
    /// # Ok::<(), raceless::bus::BusError>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv(&mut self) -> Result<E, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Like [`recv`](Self::recv), but **blocks the calling thread** (parks
    /// it) until an event is queued or the bus is gone. For synchronous
    /// code and `spawn_blocking`; never call it on an async executor's
    /// thread — use [`recv`](Self::recv) or [`try_recv`](Self::try_recv)
    /// there.
    ///
    /// ```
    /// use raceless::bus::{Event, EventBus, RecvError};
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct N(u8);
    /// impl Event for N { type Kind = (); fn kind(&self) {} }
    /// let bus = EventBus::new(0);
    /// let mut rx = bus.subscribe_channel((), 4)?;
    /// let consumer = std::thread::spawn(move || (rx.blocking_recv(), rx.blocking_recv()));
    /// bus.emit(N(1));
    /// drop(bus);
    /// assert_eq!(consumer.join().unwrap(), (Ok(N(1)), Err(RecvError::Closed)));
    /// # Ok::<(), raceless::bus::BusError>(())
    /// ```
    pub fn blocking_recv(&mut self) -> Result<E, RecvError> {
        shim::block_on(self.recv())
    }
}

impl<E: Event> Drop for Receiver<E> {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.detach(self.id);
        }
    }
}

impl<E: Event> fmt::Debug for Receiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("id", &self.id)
            .field("queued", &self.channel.queue.len())
            .field("capacity", &self.channel.queue.capacity())
            .field("closed", &self.channel.closed.load(Ordering::Acquire))
            .finish()
    }
}
