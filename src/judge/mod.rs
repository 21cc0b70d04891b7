//! Judging a run: thresholds against the measured summary, and the generator's own health.

pub mod health;
pub mod run_metrics;
pub mod thresholds;
