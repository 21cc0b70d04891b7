//! `resources` in `run.json`: CPU and memory samples of planrun (and of the target).

use serde::{Deserialize, Serialize};

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// Seconds since sampling started (just before the run).
    pub t_s: f64,
    /// CPU use of planrun in percent of one core (can exceed 100 on several cores).
    pub cpu_pct: f64,
    /// Resident memory of planrun in MiB.
    pub rss_mb: f64,
    #[serde(default)]
    pub target_cpu_pct: Option<f64>,
    #[serde(default)]
    pub target_rss_mb: Option<f64>,
}

/// The samples of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSeries {
    pub interval_s: f64,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    #[serde(default)]
    pub target_pid: Option<u32>,
    /// The target is the built-in agent, inside planrun's own process: its use is included in
    /// planrun's numbers.
    #[serde(default)]
    pub agent_in_process: bool,
    #[serde(default)]
    pub samples: Vec<ResourceSample>,
}

impl ResourceSeries {
    pub fn max_cpu_pct(&self) -> Option<f64> {
        self.samples.iter().map(|s| s.cpu_pct).reduce(f64::max)
    }
    pub fn max_rss_mb(&self) -> Option<f64> {
        self.samples.iter().map(|s| s.rss_mb).reduce(f64::max)
    }
}
