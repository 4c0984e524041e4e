//! The `bus` component (to be built: see its issue).
