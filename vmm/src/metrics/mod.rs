//! Resource metrics (issue 13, item 3): what a recorded VM costs, per
//! barrier interval in its change log and live over HTTP.
//!
//! - [`counters`]: the live counters the run loop, the block device and
//!   the recorder update (exits by kind, guest bytes, thread CPU clocks);
//! - [`probe`]: turns them into a `Metrics` record after each barrier
//!   (`changelog::metrics::StepMetrics`, plugged into the block tap);
//! - [`exposition`] and [`http`]: `vmm run|restore --metrics ADDR`, the
//!   same counters in the Prometheus text format.
//!
//! - [`run`]: what a whole run cost (a drill's check VM, `vmm tune`'s points).
//!
//! `vmm log stats` (`crate::cli::log_stats`) summarises the records.
pub mod counters;
pub mod exposition;
pub mod http;
pub mod probe;
pub mod run;

pub use counters::Counters;
pub use http::{MetricsError, MetricsServer};
pub use probe::VmProbe;
pub use run::RunMetrics;
