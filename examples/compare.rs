//! The comparison run: every component's workloads on the lock-free type,
//! the `std::sync::Mutex` baseline and the `parking_lot::Mutex` baseline at
//! 1, 2, 4 and 8 threads, plus the seed-bug reproduction.
//!
//! ```sh
//! cargo run --release --example compare                 # about 2.5 minutes
//! cargo run --release --example compare -- --quick      # about 20 seconds
//! cargo run --release --example compare -- --help
//! ```
//!
//! Writes `target/raceless-report/{report.md,throughput.svg,results.json}`.
//! The logic lives in `raceless_harness::compare`.

fn main() -> std::process::ExitCode {
    raceless_harness::compare::main()
}
