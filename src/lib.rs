//! # raceless
//!
//! Race-free building blocks for the shared state of high-throughput
//! servers: compare-and-swap, RCU snapshots and sharded maps instead of one
//! big lock, and never a lock around user code.
//!
//! Each component here is a real server component whose mutex-era design
//! shipped a check-then-act race, rebuilt on compare-and-swap, sharded maps
//! ([`dashmap`](https://docs.rs/dashmap)'s entry API) and RCU snapshots
//! ([`arc-swap`](https://docs.rs/arc-swap)) so that the race cannot happen.
//! The breaker's, bus's, changeset's and stream's main paths are wait-free
//! or lock-free; the rest (every `arcs` operation, a breaker name's first
//! write, subscription bookkeeping, changeset and stream id maps) hold one
//! shard lock of a sharded map for a short critical section; no user code
//! ever runs under an internal lock. What each operation may wait for is in
//! [the progress table](#progress-guarantees) below.
//!
//! | module | component | the race it removes | seed |
//! |---|---|---|---|
//! | [`arcs`] | one active arc per unordered agent pair | contains-then-insert: two starts of one pair both win | RustChain #3239 |
//! | [`breaker`] | per-name circuit breaker | read-then-write failure count: lost increments, a name that never opens | cleveragents #7088 |
//! | [`bus`] | event bus with RCU subscriber lists | subscriber list mutated while an emit iterates it | cleveragents #7052 |
//! | [`changeset`] | changes recorded into the latest open changeset | read latest, then append: entries into a sealed or vanished changeset | cleveragents #7120 |
//! | [`stream`] | a session's active-stream slot | cleanup judged a stream stale, then clobbered a newer one | hermes-webui #1533 |
//!
//! Every component has one trait, implemented by the lock-free type and by a
//! `std::sync::Mutex` baseline in `baseline` (the seed's own fix; feature
//! `baselines`), so the two can be tested and benchmarked side by side. All
//! types are `Send + Sync` and every operation takes `&self`. Time comes from an
//! injectable [`clock`]; no user callback ever runs while an internal lock
//! is held, and a panicking callback is caught and logged.
//!
//! Features (none on by default): `tower` (a `tower::Layer` for the
//! breaker), `redis` (`raceless::redis`: arcs, breaker and stream slots
//! shared by several processes through one Redis primary), `serde`
//! (`Serialize`/`Deserialize` for the stream's snapshots), `file-store`
//! (the stream's `SessionStore` and `StoreWriter`: sessions saved as JSON
//! files; implies `serde`), `baselines` (the mutex reference
//! implementations in `raceless::baseline`), `parking_lot` (a `parking_lot`
//! flavour of every baseline, for the benchmarks; implies `baselines`).
//!
//! ## Progress guarantees
//!
//! *Wait-free*: the operation finishes in a bounded number of its own
//! steps. *Lock-free*: some thread always completes its operation (a
//! compare-and-swap retries only because another one succeeded). *Sharded
//! lock*: one `dashmap` shard lock held for a short critical section that
//! runs no user code, no I/O and takes no other lock; only threads on the
//! same shard can wait on it. *Blocking*: may wait for another thread or
//! for I/O.
//!
//! | component | operation | progress |
//! |---|---|---|
//! | `breaker` | `is_open`, `failures`, `state`, `retry_after` of a name in the thread's cache; `BreakerHandle` reads | wait-free |
//! | | `reset_all` | wait-free (one `fetch_add`; every 2⁷-th (128th) call also sweeps the names, shard by shard) |
//! | | `record_failure` by name (consecutive mode, closed name) | wait-free (one `fetch_add`) |
//! | | `call`, `call_async`, `acquire`, permits' outcomes, `record_success`, rate-mode outcomes | lock-free |
//! | | first write of a new name, `remove`, lookups the caches miss; `metrics`, `len` | sharded lock |
//! | `bus` | `emit` (handlers run on the caller's thread), `audit_log`, `subscriber_count`, `kind_count`, `delivery_stats` | lock-free |
//! | | `Receiver::try_recv`, `Receiver::recv` (awaits without blocking a thread) | lock-free |
//! | | `subscribe*`, `unsubscribe`, dropping a guard or receiver | lock-free on the subscriber list + one sharded-lock id-index update |
//! | | `Receiver::blocking_recv` | blocking (parks the thread) |
//! | `arcs` | `start`, `claim`, `Claim::publish`, dropping a `Claim`, `progress`, `end`, `status` | sharded lock (one or two map operations; `progress` and `publish` CAS under the shard's read lock); a start hook runs with no lock held |
//! | | `active`, `process_all`, `len` | sharded lock, each shard in turn |
//! | | `pending` | wait-free |
//! | `changeset` | `record_change`, `Recorder::record` | lock-free (except a new chunk's first publication, a `OnceLock` pointer store) |
//! | | `active` | lock-free |
//! | | `start_changeset`, `seal` | lock-free on the root + one sharded-lock id-map operation |
//! | | `changes`, `is_open`, `take`, `len` | sharded lock, then lock-free reads |
//! | `stream` | `Session::active`, `active_id`, `version`, `snapshot` | lock-free |
//! | | `clear_stale` | lock-free, a bounded number of steps (a shard read lock for a slot restored from a save) |
//! | | `start`, `start_guard`, `finish`, dropping a `StreamGuard` | lock-free on the slot + one sharded-lock registry insert / removal |
//! | | `is_live`, `get`, `len` | sharded lock |
//! | | `StoreWriter::save` | a short mutex (one map insert, never across I/O) |
//! | | `StoreWriter::flush`, `shutdown`; `SessionStore` | blocking (file I/O, `fsync`) |
//! | `redis` | every operation | async network I/O, bounded by a timeout |
//!
//! Callbacks (listeners, bus handlers, hooks) run on the thread of the
//! operation that triggers them, after its linearization point and with no
//! internal lock held, so that operation takes as long as they do. Each
//! module's documentation (and `docs/<component>.md` in the repository)
//! gives every operation's linearization point and why each memory ordering
//! suffices.
//!
//! ## Quick example
//!
//! ```
//! use raceless::CircuitBreaker;
//!
//! let breaker = CircuitBreaker::new(3)?; // opens a name after 3 consecutive failures
//! for _ in 0..3 {
//!     breaker.record_failure("vector-search");
//! }
//! assert!(breaker.is_open("vector-search"));
//! breaker.record_success("vector-search"); // a success closes it again
//! assert!(!breaker.is_open("vector-search"));
//! # Ok::<(), raceless::breaker::BreakerError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms, unreachable_pub)]

mod sync;

#[cfg(feature = "baselines")]
#[cfg_attr(docsrs, doc(cfg(feature = "baselines")))]
pub mod baseline;
pub mod clock;
pub mod listener;

pub use listener::ListenerId;

/// The error a user callback returns when it fails: a bus handler
/// ([`EventBus::subscribe`]), an arc start hook
/// ([`arcs::ArcEngineBuilder::start_hook`], handed back in
/// [`arcs::ArcError::Hook`]) or a stream save hook
/// ([`stream::StreamOptions::save_hook`], logged). Any error converts into
/// it with `?` or `.into()`.
///
/// ```
/// use raceless::CallbackError;
/// fn parse(s: &str) -> Result<u32, CallbackError> {
///     Ok(s.parse::<u32>()?)
/// }
/// assert_eq!(parse("7").unwrap(), 7);
/// let e: CallbackError = "disk full".into();
/// assert_eq!(e.to_string(), "disk full");
/// ```
pub type CallbackError = Box<dyn std::error::Error + Send + Sync + 'static>;

// One module per component, its main types re-exported at the root.
// breaker
pub mod breaker;
pub use breaker::CircuitBreaker;

// arcs
pub mod arcs;
pub use arcs::ArcEngine;
// bus
pub mod bus;
pub use bus::EventBus;
// changeset
pub mod changeset;
pub use changeset::ChangesetLog;
// stream
pub mod stream;
pub use stream::StreamRegistry;

// Errors of a shared backend (always compiled; the `redis` feature uses them).
pub mod backend;
pub use backend::BackendError;
// Several processes sharing state through one Redis primary.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

// The README's examples, compiled and run as doc tests (not public API).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
