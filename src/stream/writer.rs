//! [`StoreWriter`]: a [`SessionStore`] written by a background thread.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};

// The writer's lock, condition variables and thread: std's, or loom's under
// `cfg(raceless_loom)` so the loom model of the queue/flush handshake
// (tests/loom_stream.rs) explores their interleavings. (Kept here rather
// than in `crate::sync`: only this blocking part of the crate uses them.)
#[cfg(raceless_loom)]
use loom::{
    sync::{Condvar, Mutex, MutexGuard},
    thread,
};
#[cfg(not(raceless_loom))]
use std::{
    sync::{Condvar, Mutex, MutexGuard},
    thread,
};
use thread::JoinHandle;

use super::{Saved, SessionSnapshot, SessionStore, StoreError};

/// A [`SessionStore`] behind a background writer thread: [`save`] only
/// enqueues the snapshot, so no caller ever waits on the disk.
///
/// The writer (a plain `std::thread`, so it works with any async runtime
/// or none) keeps **only the newest version per session** that is waiting
/// to be written (coalescing: a session changed ten times while the disk
/// was busy is written once, at its newest version), and writes each one
/// with the store's versioned write: a temporary file, `fsync`ed, renamed
/// over `<id>.json`; after the renames of a batch it `fsync`s the directory
/// once, so the renames are durable. A late snapshot older than what is on
/// disk is dropped (the store keeps the highest version), so every file
/// ends up holding its session's newest saved version.
///
/// # Progress
///
/// - [`save`]: takes a short internal lock (held for one hash-map insert,
///   never across I/O, never while the writer writes) and wakes the
///   writer. It never waits for the disk.
/// - [`flushed`]: a future that completes once everything accepted before
///   it was made is written; runtime-agnostic (the writer wakes it).
/// - [`flush`] and [`shutdown`]: **blocking** (they wait for the writer
///   thread); for tests, for graceful exit after the runtime stopped, or
///   from `spawn_blocking`. `flushed` is their non-blocking counterpart.
///
/// # Memory
///
/// The queue holds at most one snapshot per session with an unwritten
/// change and is emptied by every batch; the store keeps a session's
/// version only while a write of it is in progress (see
/// [`SessionStore::cached_versions`]). Nothing grows with the number of
/// sessions ever saved.
///
/// # Drop rule
///
/// Dropping the last handle (it is `Clone`: an `Arc` inside) closes the
/// queue without waiting: the thread writes what is queued and exits on its
/// own. Call [`shutdown`] first when the process is about to exit, or the
/// last writes may be cut off by the exit.
///
/// [`save`]: StoreWriter::save
/// [`flush`]: StoreWriter::flush
/// [`flushed`]: StoreWriter::flushed
/// [`shutdown`]: StoreWriter::shutdown
///
/// ```
/// use raceless::stream::{Pending, Session, SessionStore, StoreWriter, StreamOptions, StreamRegistry};
/// use std::sync::Arc;
///
/// let dir = tempfile::tempdir().unwrap();
/// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
/// let hook = writer.clone();
/// let registry = Arc::new(StreamRegistry::with_options(
///     StreamOptions::new().save_hook(move |snap| Ok(hook.save(snap)?)),
/// ));
/// let session = Arc::new(Session::new("chat-1"));
/// let guard = registry.start_guard(&session, Pending::new("hi"), ()).unwrap();
/// drop(guard); // finished: version 2
/// writer.flush(); // blocking: for tests and shutdown
/// assert_eq!(writer.store().load("chat-1").unwrap(), Some(session.snapshot()));
/// writer.shutdown();
/// ```
#[derive(Clone)]
pub struct StoreWriter {
    handle: Arc<Handle>,
}

/// The owner side: closes the queue when the last `StoreWriter` goes.
struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    store: Arc<SessionStore>,
    state: Mutex<State>,
    /// The writer waits here for work or for the close.
    work: Condvar,
    /// Blocking flushers wait here for `written` to advance.
    progress: Condvar,
}

#[derive(Default)]
struct State {
    /// The newest unwritten snapshot per session.
    pending: HashMap<String, SessionSnapshot>,
    /// Saves accepted so far (a sequence number per `save`).
    accepted: u64,
    /// Every save with a sequence number `<= written` has been written (or
    /// superseded, or failed and logged).
    written: u64,
    /// No more saves are accepted; the writer exits when the queue is empty.
    closing: bool,
    /// The writer thread has exited (also after a panic).
    exited: bool,
    /// Writes that failed (logged with `tracing`).
    failures: u64,
    /// Async flushers: wake when `written` reaches the target.
    wakers: Vec<(u64, Waker)>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The lock is never held across user code or I/O; a panic while it is
    // held cannot leave `State` half-updated in a way that matters.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StoreWriter {
    /// Starts the writer thread for `store`.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raceless::stream::SessionStore::open(dir.path()).unwrap();
    /// let writer = raceless::stream::StoreWriter::spawn(store).unwrap();
    /// writer.shutdown();
    /// ```
    pub fn spawn(store: SessionStore) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            store: Arc::new(store),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("raceless-store-writer".into())
            .spawn(move || {
                let _exit = ExitGuard(&worker);
                worker.run();
            })?;
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The store (for reads: [`SessionStore::load`], [`SessionStore::session`]
    /// — those are blocking file reads).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raceless::stream::SessionStore::open(dir.path()).unwrap();
    /// let writer = raceless::stream::StoreWriter::spawn(store).unwrap();
    /// assert_eq!(writer.store().load("none").unwrap(), None);
    /// ```
    pub fn store(&self) -> &Arc<SessionStore> {
        &self.handle.shared.store
    }

    /// Enqueues `snapshot` for the writer; returns at once. If a snapshot
    /// of the same session is already waiting, the newer version of the two
    /// stays (an older one changes nothing). Errors: an id that cannot name
    /// a file ([`StoreError::InvalidSessionId`], checked here) and a writer
    /// that was shut down ([`StoreError::Closed`]). Write errors happen
    /// later, on the writer thread: they are logged and counted
    /// ([`failures`](Self::failures)).
    ///
    /// ```
    /// use raceless::stream::{Session, SessionStore, StoreError, StoreWriter};
    /// let dir = tempfile::tempdir().unwrap();
    /// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
    /// writer.save(&Session::new("ok").snapshot()).unwrap();
    /// assert!(matches!(writer.save(&Session::new("../x").snapshot()), Err(StoreError::InvalidSessionId(_))));
    /// writer.shutdown();
    /// assert!(matches!(writer.save(&Session::new("ok").snapshot()), Err(StoreError::Closed)));
    /// ```
    pub fn save(&self, snapshot: &SessionSnapshot) -> Result<(), StoreError> {
        let shared = &self.handle.shared;
        shared.store.path(&snapshot.session_id)?;
        let mut state = lock(&shared.state);
        if state.closing {
            return Err(StoreError::Closed);
        }
        state.accepted += 1;
        let newer = state
            .pending
            .get(&snapshot.session_id)
            .map_or(true, |queued| queued.version < snapshot.version);
        if newer {
            state
                .pending
                .insert(snapshot.session_id.clone(), snapshot.clone());
        }
        drop(state);
        shared.work.notify_one();
        Ok(())
    }

    /// **Blocking**: waits until every snapshot accepted before this call
    /// is written (or dropped as superseded, or failed). For tests and
    /// graceful exit; in async code await [`flushed`](Self::flushed).
    /// Returns at once if the writer thread is gone.
    ///
    /// ```
    /// use raceless::stream::{Session, SessionStore, StoreWriter};
    /// let dir = tempfile::tempdir().unwrap();
    /// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
    /// writer.save(&Session::new("s").snapshot()).unwrap();
    /// writer.flush();
    /// assert!(dir.path().join("s.json").exists());
    /// ```
    pub fn flush(&self) {
        let shared = &self.handle.shared;
        let mut state = lock(&shared.state);
        let target = state.accepted;
        while state.written < target && !state.exited {
            state = shared
                .progress
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A future that completes once every snapshot accepted before this call
    /// is written: the non-blocking [`flush`](Self::flush). Works on any
    /// executor (the writer thread wakes it).
    ///
    /// ```
    /// use raceless::stream::{Session, SessionStore, StoreWriter};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
    /// writer.save(&Session::new("s").snapshot()).unwrap();
    /// writer.flushed().await;
    /// assert!(dir.path().join("s.json").exists());
    /// # }
    /// ```
    pub fn flushed(&self) -> Flushed {
        let target = lock(&self.handle.shared.state).accepted;
        Flushed {
            shared: Arc::clone(&self.handle.shared),
            target,
        }
    }

    /// **Blocking**: stops accepting saves, writes everything queued, and
    /// joins the writer thread. Idempotent. For graceful exit (after the
    /// async runtime has stopped, so every stream guard has run) and tests.
    ///
    /// ```
    /// use raceless::stream::{Session, SessionStore, StoreWriter};
    /// let dir = tempfile::tempdir().unwrap();
    /// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
    /// writer.save(&Session::new("s").snapshot()).unwrap();
    /// writer.shutdown();
    /// writer.shutdown();
    /// assert!(dir.path().join("s.json").exists());
    /// ```
    pub fn shutdown(&self) {
        self.handle.close();
        let thread = self
            .handle
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("session store writer panicked");
            }
        }
    }

    /// Snapshots waiting to be written (at most one per session).
    ///
    /// ```
    /// use raceless::stream::{SessionStore, StoreWriter};
    /// let dir = tempfile::tempdir().unwrap();
    /// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
    /// assert_eq!(writer.queued(), 0);
    /// ```
    pub fn queued(&self) -> usize {
        lock(&self.handle.shared.state).pending.len()
    }

    /// Writes that failed so far (each is logged with `tracing`).
    ///
    /// ```
    /// use raceless::stream::{SessionStore, StoreWriter};
    /// let dir = tempfile::tempdir().unwrap();
    /// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
    /// assert_eq!(writer.failures(), 0);
    /// ```
    pub fn failures(&self) -> u64 {
        lock(&self.handle.shared.state).failures
    }
}

impl Handle {
    fn close(&self) {
        lock(&self.shared.state).closing = true;
        self.shared.work.notify_one();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Non-blocking: the thread drains the queue and exits by itself.
        self.close();
    }
}

impl Shared {
    /// The writer thread: take the whole queue, write it, sync the
    /// directory once, report progress; until closed and empty.
    fn run(&self) {
        loop {
            let (batch, target) = {
                let mut state = lock(&self.state);
                while state.pending.is_empty() && !state.closing {
                    state = self
                        .work
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.pending.is_empty() {
                    return; // closing, nothing left
                }
                (std::mem::take(&mut state.pending), state.accepted)
            };
            let mut failed = 0;
            let mut renamed = false;
            for snapshot in batch.into_values() {
                match self.store.write(&snapshot) {
                    Ok(Saved::Written) => renamed = true,
                    Ok(Saved::Superseded { .. }) => {}
                    Err(error) => {
                        failed += 1;
                        tracing::warn!(
                            session = %snapshot.session_id,
                            version = snapshot.version,
                            %error,
                            "background session save failed"
                        );
                    }
                }
            }
            if renamed {
                if let Err(error) = self.store.sync_dir() {
                    failed += 1;
                    tracing::warn!(%error, "session directory fsync failed");
                }
            }
            let wakers = {
                let mut state = lock(&self.state);
                state.written = target;
                state.failures += failed;
                take_reached(&mut state)
            };
            self.progress.notify_all();
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

/// The wakers of async flushers whose target is reached.
fn take_reached(state: &mut State) -> Vec<Waker> {
    let written = state.written;
    let exited = state.exited;
    let mut reached = Vec::new();
    state.wakers.retain(|(target, waker)| {
        let done = *target <= written || exited;
        if done {
            reached.push(waker.clone());
        }
        !done
    });
    reached
}

/// Marks the writer exited (also on a panic) and wakes every flusher.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let wakers = {
            let mut state = lock(&self.0.state);
            state.exited = true;
            take_reached(&mut state)
        };
        self.0.progress.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// The future of [`StoreWriter::flushed`]: ready once the snapshots
/// accepted before it was made are written (or the writer has exited).
/// Dropping it at any point is harmless (its waker is dropped with the
/// writer's next progress report).
///
/// ```
/// use raceless::stream::{SessionStore, StoreWriter};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let dir = tempfile::tempdir().unwrap();
/// let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
/// let flushed: raceless::stream::Flushed = writer.flushed();
/// flushed.await; // nothing was queued: ready at once
/// # }
/// ```
#[must_use = "a future does nothing unless awaited"]
pub struct Flushed {
    shared: Arc<Shared>,
    target: u64,
}

impl Future for Flushed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.shared.state);
        if state.written >= self.target || state.exited {
            return Poll::Ready(());
        }
        let target = self.target;
        match state
            .wakers
            .iter_mut()
            .find(|(t, w)| *t == target && w.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => state.wakers.push((target, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for Flushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flushed")
            .field("target", &self.target)
            .finish()
    }
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.handle.shared.state);
        f.debug_struct("StoreWriter")
            .field("dir", &self.handle.shared.store.dir())
            .field("queued", &state.pending.len())
            .field("closing", &state.closing)
            .finish()
    }
}
