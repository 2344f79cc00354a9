//! What a record set's history says, for people: its timeline per VM
//! ([`timeline`]: writes, barriers, marks, snapshots, checkpoints and
//! semantic changes, bucketed in time), a forecast of its growth with a
//! back-test of the model on the history itself ([`forecast`]), the
//! journal of drill results ([`drills`]), and one self-contained HTML page
//! showing it all ([`report`]).
//!
//! It reads change logs through [`changelog::LogBackend`] (a directory or a
//! cluster alike) and never reads blocks, replays or decodes: the numbers
//! it needs are in the records (the metrics record after each barrier
//! carries what the interval stored).
pub mod drills;
pub mod forecast;
pub mod report;
pub mod timeline;

pub use forecast::{forecast, Forecast, ForecastError, ForecastInput};
pub use timeline::{Timeline, TimelineError};
