//! Listener registries: callbacks that observe a component's state changes.
//!
//! One naming scheme across components: `on_<event>(callback)` registers a
//! listener and returns its [`ListenerId`], `remove_listener(id)` removes it
//! (`ArcEngine::on_event`, `CircuitBreaker::on_event`,
//! `StreamRegistry::on_save`). The bus's handlers are subscriptions, its
//! domain's verbs: `EventBus::subscribe` / `unsubscribe`.
//!
//! A component keeps its listeners in an RCU list (an immutable `Vec`
//! swapped whole with arc-swap). Notifying loads the current list and calls
//! each listener with nothing held — no shard lock, no guard — so a listener
//! may call back into the component, and registering never waits for a
//! notification in progress. A panicking listener is caught, logged with
//! `tracing` and skipped; the others still run.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::{Arc, ArcSwap, AtomicU64, AtomicUsize, Ordering};

/// The handle of a registered listener, for removing it again with the
/// component's `remove_listener`.
///
/// ```
/// use raceless::ListenerId;
/// fn takes(id: ListenerId) -> ListenerId { id }
/// # let _ = takes;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(crate) u64);

/// A `std` `Arc` even under loom: loom's `Arc` cannot hold a `dyn`, and the
/// callbacks themselves are not part of any protocol loom checks.
type Callback<E> = std::sync::Arc<dyn Fn(&E) + Send + Sync>;

/// An RCU list of listeners for events of type `E`.
pub(crate) struct Listeners<E> {
    list: ArcSwap<Vec<(ListenerId, Callback<E>)>>,
    /// How many listeners are registered: moved by `add` after its list
    /// is installed and by `remove` after its list is installed, so that
    /// the hot path with no listener ([`Listeners::is_empty`]) is one plain
    /// load instead of an arc-swap load (which takes a debt slot with a
    /// `SeqCst` store). Release on the read-modify-writes, Acquire on the
    /// load: every change is a read-modify-write, so they form one release
    /// sequence, and a load that reads a count including an `add`
    /// synchronizes with that `add` and then loads (at least) its list.
    len: AtomicUsize,
    /// Only uniqueness matters for ids, so `Relaxed` suffices: a
    /// read-modify-write never hands out one value twice.
    next_id: AtomicU64,
}

impl<E> Listeners<E> {
    pub(crate) fn new() -> Self {
        Self {
            list: ArcSwap::from_value(Vec::new()),
            len: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    /// Registers `f`; every notification that starts after this returns
    /// calls it (the rcu's successful compare-and-swap is the
    /// linearization point).
    pub(crate) fn add(&self, f: impl Fn(&E) + Send + Sync + 'static) -> ListenerId {
        let id = ListenerId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let f: Callback<E> = std::sync::Arc::new(f);
        self.list.rcu(|old| {
            let mut new = Vec::with_capacity(old.len() + 1);
            new.extend(old.iter().cloned());
            new.push((id, f.clone()));
            Arc::new(new)
        });
        self.len.fetch_add(1, Ordering::Release);
        id
    }

    /// Removes the listener `id`; `false` if it was not registered. No
    /// notification that starts after this returns calls it.
    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let mut found = false;
        self.list.rcu(|old| {
            found = old.iter().any(|(i, _)| *i == id);
            Arc::new(old.iter().filter(|(i, _)| *i != id).cloned().collect())
        });
        if found {
            // Only the remove whose list dropped `id` gets here, and only
            // after `id`'s add counted it in (the id came from that add).
            self.len.fetch_sub(1, Ordering::Release);
        }
        found
    }

    /// Whether no listener is registered (lets callers skip building
    /// events). A listener whose `add` returned before this call is seen
    /// (see `len`); one added concurrently may or may not be, as with
    /// `notify`.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Calls every listener with `event`, outside every lock; a panic in one
    /// is logged and does not stop the others. Returns how many panicked.
    pub(crate) fn notify(&self, event: &E) -> usize
    where
        E: fmt::Debug,
    {
        let list = self.list.load_full();
        let mut panicked = 0;
        for (id, f) in list.iter() {
            if catch_unwind(AssertUnwindSafe(|| f(event))).is_err() {
                panicked += 1;
                tracing::warn!(listener = id.0, ?event, "listener panicked; isolated");
            }
        }
        panicked
    }
}

impl<E> Default for Listeners<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, raceless_loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::AtomicUsize;

    /// The count behind `is_empty` never runs ahead of the list: whoever
    /// sees a listener counted also sees it in the list it then loads, and
    /// after `add`/`remove` return the count is exact. (Counting before the
    /// list is installed fails the first assertion.)
    #[test]
    fn a_counted_listener_is_in_the_list() {
        loom::model(|| {
            let listeners = Arc::new(Listeners::<u32>::new());
            let calls = Arc::new(AtomicUsize::new(0));
            let adder = {
                let (listeners, calls) = (listeners.clone(), calls.clone());
                loom::thread::spawn(move || {
                    listeners.add(move |_| {
                        calls.fetch_add(1, Ordering::Relaxed);
                    })
                })
            };
            if !listeners.is_empty() {
                listeners.notify(&1);
                assert_eq!(calls.load(Ordering::Relaxed), 1);
            }
            let id = adder.join().unwrap();
            assert!(!listeners.is_empty());
            let remover = {
                let listeners = listeners.clone();
                loom::thread::spawn(move || listeners.remove(id))
            };
            let _ = listeners.is_empty();
            assert!(remover.join().unwrap());
            assert!(listeners.is_empty());
        });
    }

    /// A listener added before a notification starts is called by it; one
    /// added concurrently may or may not be, but is never lost for later
    /// notifications, and two concurrent adds both land.
    #[test]
    fn concurrent_adds_and_notify() {
        loom::model(|| {
            let listeners = Arc::new(Listeners::<u32>::new());
            let calls = Arc::new(AtomicUsize::new(0));
            let c0 = calls.clone();
            listeners.add(move |_| {
                c0.fetch_add(1, Ordering::Relaxed);
            });
            let adder = {
                let (listeners, calls) = (listeners.clone(), calls.clone());
                loom::thread::spawn(move || {
                    listeners.add(move |_| {
                        calls.fetch_add(100, Ordering::Relaxed);
                    })
                })
            };
            let second = listeners.add(|_| {});
            listeners.notify(&1);
            let first = adder.join().unwrap();
            assert_ne!(first, second);
            // The listener added before the notification was called once;
            // the concurrent one at most once.
            let seen = calls.load(Ordering::Relaxed);
            assert!(seen == 1 || seen == 101, "{seen}");
            listeners.notify(&2);
            assert_eq!(calls.load(Ordering::Relaxed), seen + 101);
            assert!(listeners.remove(first));
            assert!(!listeners.remove(first));
        });
    }
}
