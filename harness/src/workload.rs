//! Workload definitions shared by `benches/` and the comparison run.
//!
//! A [`WorkloadDef`] names an operation mix a server sees (read-heavy,
//! write-heavy, one hot key, many keys) and, for each implementation, how
//! to build a fresh instance of it. The criterion benches and
//! `examples/compare.rs` both iterate these, so a workload is written once.

/// The thread counts every workload is measured at.
pub const THREAD_COUNTS: [usize; 4] = [1, 2, 4, 8];

/// Implementation names used in benchmark ids and reports.
pub mod impl_name {
    /// The lock-free type.
    pub const LOCK_FREE: &str = "lock-free";
    /// The `std::sync::Mutex` baseline.
    pub const STD_MUTEX: &str = "std-mutex";
    /// The `parking_lot::Mutex` flavour of the baseline.
    pub const PARKING_LOT: &str = "parking-lot";
    /// The `recloser` crate (crates.io), a peer in the breaker's call path.
    pub const RECLOSER: &str = "recloser";
    /// The `failsafe` crate (crates.io), a peer in the breaker's call path.
    pub const FAILSAFE: &str = "failsafe";
    /// What a user writes by hand: a `parking_lot::Mutex` per key in a
    /// `DashMap` (`raceless::baseline::Sharded*`).
    pub const SHARDED_MUTEX: &str = "sharded-mutex";
}

/// One prepared instance of a workload against one implementation.
pub trait Workload: Send + Sync {
    /// Performs `ops` operations as thread `thread` of `threads`. Threads
    /// run this concurrently on one shared instance; it must not allocate
    /// per-op more than the component itself does and must not panic.
    fn run(&self, thread: usize, threads: usize, ops: u64);
}

/// A builder of a fresh [`Workload`] instance.
pub type MakeWorkload = fn() -> Box<dyn Workload>;

/// A named operation mix, measured on every implementation.
pub struct WorkloadDef {
    /// The component (`"breaker"`, `"arcs"`, …).
    pub component: &'static str,
    /// A short id, e.g. `"mixed-16-names"`.
    pub name: &'static str,
    /// One sentence for reports: what the operations are.
    pub description: &'static str,
    /// `(implementation name, builder)`, the lock-free one first, using the
    /// names in [`impl_name`]; extra reference rows (e.g. a bare atomic)
    /// may follow.
    pub impls: Vec<(&'static str, MakeWorkload)>,
}

/// A seed-bug reproduction: the same contended scenario run on the racy
/// (check-then-act) variant and on the lock-free type.
pub struct Reproduction {
    /// The component.
    pub component: &'static str,
    /// What the racy variant loses, e.g. `"lost increments"`.
    pub what_is_lost: &'static str,
    /// Runs the scenario `rounds` times on `threads` threads against the
    /// racy variant and returns how many anomalies it counted.
    pub racy: fn(threads: usize, rounds: usize) -> u64,
    /// The same scenario against the lock-free type (expected: 0).
    pub lock_free: fn(threads: usize, rounds: usize) -> u64,
}

/// Runs every row of every workload in `defs` briefly (2 threads, `ops`
/// operations each) on a fresh instance, and checks that the lock-free row
/// comes first: the components' tests call it so that every benchmark row,
/// floors included, builds and runs (the comparison run and the benches
/// measure them but check nothing).
pub fn run_every_row(defs: impl IntoIterator<Item = WorkloadDef>, ops: u64) {
    for def in defs {
        assert_eq!(
            def.impls.first().map(|(name, _)| *name),
            Some(impl_name::LOCK_FREE),
            "{}/{}: the lock-free row comes first",
            def.component,
            def.name
        );
        for (_, make) in &def.impls {
            let workload = make();
            crate::threads::run_concurrently(2, |t| workload.run(t, 2, ops));
        }
    }
}
