//! Shared scaffolding for raceless's tests, benchmarks and comparison run.
//!
//! Said once, used everywhere:
//! - [`threads`]: run a closure on N threads released together by a barrier.
//! - [`linearizability`]: record concurrent histories, check them against a model.
//! - [`workload`]: the workload definitions that `benches/` and the
//!   comparison run (`examples/compare.rs`) both measure.
//! - [`model`]: the `SequentialSpec` trait that component models implement.
//! - [`mod@bench`]: criterion glue (`BenchmarkId::new(impl, threads)`,
//!   `iter_custom` behind a barrier).
//! - one module per component: its racy (check-then-act) variant, its
//!   sequential model, its workloads and its seed-bug reproduction.
//!
//! Not part of raceless's public API.

pub mod bench;
pub mod linearizability;
pub mod model;
pub mod threads;
pub mod workload;

// One module per component.
pub mod breaker;

pub mod arcs;

pub mod bus;

pub mod changeset;

pub mod stream;

// The comparison run (`examples/compare.rs`).
pub mod compare;
