//! Linearizability of every component, checked on recorded concurrent
//! histories (`raceless_harness::linearizability`).
//!
//! For each component: a few threads run random operations (from a small set
//! of keys, so they collide) against one shared instance; each history is
//! checked against the component's sequential model
//! (`raceless_harness::<component>::Model`). The lock-free type and both
//! mutex baselines must pass every history; the racy (check-then-act)
//! variant must be caught. The glue is written once (the macro below); each
//! component only says how to build its types, draw an operation and apply
//! one to the real type.

use raceless_harness::linearizability::{assert_caught, assert_linearizable, Config};
#[allow(unused_imports)] // used by the operation generators
use raceless_harness::linearizability::{Rng, SmallRng};

/// One test per correct implementation (must be linearizable) and one for
/// the racy variant (must be caught), for each component.
macro_rules! linearizability_tests {
    ($(
        $component:ident {
            model: $init:expr,
            op: $gen:expr,
            apply: $apply:path,
            linearizable: { $($impl_name:ident => $make:expr),+ $(,)? },
            racy: $racy:expr $(,)?
        }
    )*) => {$(
        mod $component {
            use super::*;

            $(
                #[test]
                fn $impl_name() {
                    assert_linearizable(
                        concat!(stringify!($component), "::", stringify!($impl_name)),
                        $make,
                        $init,
                        $apply,
                        $gen,
                        &Config::default(),
                    );
                }
            )+

            #[test]
            fn racy_variant_is_caught() {
                assert_caught(
                    concat!(stringify!($component), "::racy"),
                    $racy,
                    $init,
                    $apply,
                    $gen,
                    &Config::catching(),
                );
            }
        }
    )*};
}

// ---------------------------------------------------------------------------
// breaker

mod breaker_glue {
    use super::*;
    use raceless_harness::breaker::Op;

    /// The threshold of every breaker here: low, so names open and close.
    pub(crate) const THRESHOLD: u32 = 2;

    const NAMES: [&str; 2] = ["a", "b"];

    /// Mostly failures on two names, with reads, successes and resets.
    pub(crate) fn op(rng: &mut SmallRng) -> Op {
        let name = NAMES[rng.gen_range(0..NAMES.len())].to_string();
        match rng.gen_range(0..20) {
            0..=7 => Op::RecordFailure(name),
            8..=9 => Op::RecordSuccess(name),
            10..=12 => Op::Failures(name),
            13..=14 => Op::IsOpen(name),
            15 => Op::TimesOpened(name),
            16 => Op::Admit(name),
            17 => Op::Reset(name),
            _ => Op::ResetAll,
        }
    }
}

linearizability_tests! {
    breaker {
        model: raceless_harness::breaker::Model::new(breaker_glue::THRESHOLD),
        op: breaker_glue::op,
        apply: raceless_harness::breaker::apply,
        linearizable: {
            lock_free => || raceless::CircuitBreaker::new(breaker_glue::THRESHOLD).unwrap(),
            std_mutex => || {
                raceless::baseline::MutexBreaker::<raceless::baseline::StdMutex>::new(
                    breaker_glue::THRESHOLD,
                )
                .unwrap()
            },
            parking_lot => || {
                raceless::baseline::MutexBreaker::<raceless::baseline::ParkingLotMutex>::new(
                    breaker_glue::THRESHOLD,
                )
                .unwrap()
            },
        },
        racy: || raceless_harness::breaker::RacyBreaker::new(breaker_glue::THRESHOLD),
    }
}
