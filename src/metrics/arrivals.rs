//! How the scheduler kept to its schedule (open model and ramping stages).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::recorder::new_histogram;

/// Callers that start more than this after their scheduled instant count as late starts.
pub const LATE_TOLERANCE: Duration = Duration::from_millis(50);

/// Why a scheduled caller did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// `max_users` callers were already active.
    MaxUsers,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxUsers => "max_users",
        }
    }
}

/// One arrival that did not start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DroppedArrival {
    /// The arrival's number in the schedule (from 0).
    pub arrival: u64,
    /// Its scheduled instant, µs since the run started.
    pub at_us: u64,
    pub reason: DropReason,
}

/// How the scheduler kept to its schedule (open model and ramping stages).
#[derive(Debug, Clone, Default)]
pub struct ArrivalStats {
    /// Starts that came due (arrivals, or users the stages asked for).
    pub scheduled: u64,
    /// Callers that started.
    pub started: u64,
    /// Arrivals that did not start, with why.
    pub dropped: Vec<DroppedArrival>,
    /// Callers that started more than the tolerance after their scheduled instant.
    pub late_starts: u64,
    /// Actual start − scheduled start of every started caller, µs.
    pub start_lag: Option<Histogram<u64>>,
    /// Open model: the `max_users` cap.
    pub max_users: Option<u32>,
    /// Most callers active at once.
    pub peak_active: u64,
    /// How long starts were offered for (the schedule, or until the run was stopped).
    pub offered_for: std::time::Duration,
}

impl ArrivalStats {
    /// Count one started caller and its lag.
    pub fn started(&mut self, lag: Duration, tolerance: Duration) {
        self.started += 1;
        if lag > tolerance {
            self.late_starts += 1;
        }
        let us = lag.as_micros().min(u128::from(u64::MAX)) as u64;
        let _ = self
            .start_lag
            .get_or_insert_with(new_histogram)
            .record(us.max(1));
    }

    pub fn merge(&mut self, o: ArrivalStats) {
        self.scheduled += o.scheduled;
        self.started += o.started;
        self.dropped.extend(o.dropped);
        self.late_starts += o.late_starts;
        self.max_users = self.max_users.or(o.max_users);
        self.peak_active = self.peak_active.max(o.peak_active);
        self.offered_for = self.offered_for.max(o.offered_for);
        if let Some(h) = o.start_lag {
            match &mut self.start_lag {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => self.start_lag = Some(h),
            }
        }
    }
}
