//! Scaffolding of the `bus` component (to be built: see its issue).

use crate::workload::WorkloadDef;

/// The workloads of this component (none yet).
pub fn workloads() -> Vec<WorkloadDef> {
    Vec::new()
}
