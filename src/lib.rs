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
//! use raceless::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::new();
//! let t0 = clock.now();
//! clock.advance(std::time::Duration::from_secs(1));
//! assert!(clock.now() > t0);
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

// arcs
pub mod arcs;
// bus
pub mod bus;
// changeset
pub mod changeset;
pub use changeset::ChangesetLog;
// stream
pub mod stream;
