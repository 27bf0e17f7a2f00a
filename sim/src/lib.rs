//! migsim's simulator: a discrete-event model of VM live migration.
//!
//! ```text
//!  scenario ──check──> Checked ──simulate──> RunResult (RunReport + RoundRecord per round)
//!                          │
//!    engine (EventQueue: integer ns, (time, seq) order; knows nothing of migration)
//!    migration (memory bitmaps, paced link, dirty-log syncs, stop-and-copy)
//!    policy (Observation -> Decision; shared with the KVM backend)
//!    metrics (records, CSV / JSON exporters)
//! ```

pub mod bitmap;
pub mod calibration;
pub mod engine;
pub mod fluid;
pub mod grids;
pub mod kinds;
pub mod metrics;
pub mod migration;
pub mod policy;
pub mod scenario;

pub use kinds::{replicates_differ, simulate, simulate_report};
pub use metrics::{RunReport, RunResult, Status};
pub use migration::{oracle, simulate_probed, Oracle, OracleCaps};
pub use scenario::{Checked, Scenario, ScenarioError};
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fluid;
#[cfg(test)]
mod tests_policies;
