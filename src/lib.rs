//! # raceless
//!
//! Lock-free building blocks for the shared state of high-throughput
//! servers.
//!
//! Each component here is a real server component whose mutex-era design
//! shipped a check-then-act race, rebuilt on compare-and-swap, sharded maps
//! ([`dashmap`](https://docs.rs/dashmap)'s entry API) and RCU snapshots
//! ([`arc-swap`](https://docs.rs/arc-swap)) so that the race cannot happen
//! and no thread ever waits for another:
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
//! `std::sync::Mutex` baseline in [`baseline`] (the seed's own fix), so the
//! two can be tested and benchmarked side by side. All types are
//! `Send + Sync` and every operation takes `&self`. Time comes from an
//! injectable [`clock`]; no user callback ever runs while an internal lock
//! is held.
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
#![warn(rust_2018_idioms, unreachable_pub)]

mod sync;

pub mod baseline;
pub mod clock;
pub mod listener;

pub use listener::ListenerId;

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
pub mod redis;
