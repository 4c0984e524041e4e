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

#[allow(unused_imports)] // the generators use some, the macro the others
use raceless_harness::linearizability::{
    assert_caught, assert_linearizable, Config, Rng, SmallRng,
};

/// One test per correct implementation (must be linearizable) and one for
/// the racy variant (must be caught), for each component. An
/// implementation may name its own model (`=> make, model: expr`) where it
/// documents a weaker guarantee than the component's default model.
#[allow(unused_macros)] // until a component is listed
macro_rules! linearizability_tests {
    ($(
        $component:ident {
            model: $init:expr,
            op: $gen:expr,
            apply: $apply:path,
            linearizable: { $($impl_name:ident => $make:expr $(, model: $own:expr)?;)+ },
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
                        first!($($own,)? $init),
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

/// The first of its arguments.
#[allow(unused_macros)] // until a component is listed
macro_rules! first {
    ($first:expr $(, $rest:expr)*) => {
        $first
    };
}
