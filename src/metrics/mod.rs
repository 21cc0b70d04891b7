//! Measurements: per-user recorders (plain HDR histograms in microseconds, counters, the
//! iteration timeline), merged exactly into one [`Summary`] at the end of a run; the
//! generator's own health measurements ([`health`]).

pub mod arrivals;
pub mod failure;
pub mod health;
pub mod live;
pub mod outcomes;
pub mod progress;
pub mod recorder;
pub mod stripes;
pub mod summary;

pub use crate::contract::{CheckCounts, HttpCounts, IterationCounts, MetricStats};
pub use arrivals::{ArrivalStats, DropReason, DroppedArrival, LATE_TOLERANCE};
pub use failure::{Failure, FailureClass, IterationRecord, Marker, Sample, sample_ms};
pub use health::{EVENT_LOOP_TICK, EventLoopMonitor, HealthRec};
pub use outcomes::{FailureSampler, KeptFailure, Outcomes, Windows};
pub use recorder::Recorder;
pub use stripes::SharedHistograms;
pub use summary::Summary;
