//! The verdict on the load generator's health: was planrun itself the bottleneck of a run?

use crate::contract::GeneratorHealth;

/// Default limit for the pacing lag and event-loop delay p99 (ms) above which the generator
/// counts as the bottleneck.
pub const DEFAULT_LAG_LIMIT_MS: f64 = 10.0;

/// CPU use, in percent of the cores planrun may use, at or above which it counts as the
/// bottleneck.
pub const CPU_LIMIT_PCT_OF_CORES: f64 = 90.0;

impl GeneratorHealth {
    /// Judge whether planrun itself was the bottleneck: pacing lag p99 or event-loop delay p99
    /// above `lag_limit_ms` (then `overloaded`: the latencies were measured by a generator that
    /// could not keep time), or CPU at [`CPU_LIMIT_PCT_OF_CORES`] of `cores` or more (a warning
    /// only: busy is not late, and the built-in agent's CPU counts in it). Sets
    /// `lag_limit_ms`, `overloaded` and `warnings` (one sentence per figure over its limit).
    pub fn judge(&mut self, lag_limit_ms: f64, cores: usize, agent_in_process: bool) {
        self.lag_limit_ms = Some(lag_limit_ms);
        let mut w = Vec::new();
        let over = |v: Option<f64>| v.filter(|v| *v > lag_limit_ms);
        if let Some(v) = over(self.send_lag_p99_ms) {
            w.push(format!(
                "pacing lag p99 {v:.2} ms is above the limit of {lag_limit_ms} ms: audio left \
                 late, so the latencies cannot be trusted"
            ));
        }
        if let Some(v) = over(self.event_loop_delay_p99_ms) {
            w.push(format!(
                "event-loop delay p99 {v:.2} ms is above the limit of {lag_limit_ms} ms: \
                 planrun's runtime was overloaded, so the latencies cannot be trusted"
            ));
        }
        self.overloaded = !w.is_empty();
        let cpu_limit = CPU_LIMIT_PCT_OF_CORES * cores.max(1) as f64;
        if let Some(cpu) = self.cpu_max_pct.filter(|c| *c >= cpu_limit) {
            let agent = if agent_in_process {
                " (the built-in agent runs inside planrun and counts in it)"
            } else {
                ""
            };
            w.push(format!(
                "CPU use peaked at {cpu:.0}% of one core, at or above the limit of \
                 {cpu_limit:.0}% ({CPU_LIMIT_PCT_OF_CORES:.0}% of {cores} core(s)){agent}, \
                 so the latencies cannot be trusted"
            ));
        }
        self.warnings = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_each_figure_against_its_limit() {
        let mut g = GeneratorHealth {
            send_lag_p99_ms: Some(4.0),
            event_loop_delay_p99_ms: Some(1.2),
            cpu_max_pct: Some(150.0),
            ..GeneratorHealth::default()
        };
        g.judge(10.0, 2, false);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        assert!(!g.overloaded);
        g.send_lag_p99_ms = Some(12.5);
        g.judge(10.0, 2, false);
        assert_eq!(g.warnings.len(), 1);
        assert!(g.overloaded);
        assert!(g.warnings[0].contains("pacing lag p99 12.50 ms"));
        assert!(g.warnings[0].contains("limit of 10 ms"));
        g.judge(1.0, 2, true);
        assert_eq!(g.warnings.len(), 2, "{:?}", g.warnings);
        assert!(g.warnings[1].contains("event-loop delay p99 1.20 ms"));
        g.judge(1.0, 1, true);
        assert_eq!(g.warnings.len(), 3, "{:?}", g.warnings);
        assert!(g.warnings[2].contains("CPU use peaked at 150%"));
        assert!(g.warnings[2].contains("built-in agent"));
        // CPU alone warns but does not make the generator overloaded.
        g.send_lag_p99_ms = Some(0.5);
        g.event_loop_delay_p99_ms = Some(0.5);
        g.judge(1.0, 1, true);
        assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
        assert!(!g.overloaded);
        assert_eq!(g.lag_limit_ms, Some(1.0));
    }
}
