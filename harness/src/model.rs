//! Sequential specifications: each component's behaviour, one operation at
//! a time, with no concurrency at all.
//!
//! A component's model (`raceless_harness::<component>::Model`) implements
//! [`SequentialSpec`]; the proptests compare the real types with it op by
//! op, and the linearizability checker searches a concurrent history for an
//! order in which the model gives the same results.

use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification of a component.
///
/// The state must be cheap to clone and hashable (use `BTreeMap`/`Vec`,
/// not `HashMap`), so a checker can backtrack and memoize states.
pub trait SequentialSpec: Clone + Eq + Hash + Debug {
    /// One operation with its arguments.
    type Op: Clone + Debug + Send + Sync;
    /// What the operation returned.
    type Ret: Clone + Debug + Eq + Hash + Send;
    /// Applies `op` to the state and returns its result.
    fn apply(&mut self, op: &Self::Op) -> Self::Ret;

    /// Whether `op` may return `ret` from this state, applying it if so.
    ///
    /// The linearizability checker calls this rather than [`apply`]; the
    /// default is `apply(op) == ret`. A spec whose results are not all
    /// determined by its state (a fresh id from a counter that concurrent
    /// calls draw in another order than they take effect) overrides it to
    /// accept every valid result and move to the state that result implies.
    /// On `false` the state is unspecified (the checker discards it).
    ///
    /// [`apply`]: SequentialSpec::apply
    fn step(&mut self, op: &Self::Op, ret: &Self::Ret) -> bool {
        self.apply(op) == *ret
    }
}
