//! `generator`: what a run does when planrun itself was the bottleneck.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The load generator's own limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSpec {
    /// When planrun itself was the bottleneck (its pacing lag or event-loop delay p99 above
    /// the limit, `--generator-lag-limit`, default 10 ms): `fail` (default) makes the run
    /// **inconclusive** (exit code 5), since its latencies cannot be trusted; `warn` accepts it
    /// (the warning is still printed and the thresholds decide). `--on-overload` overrides.
    #[serde(default)]
    pub on_overload: OnOverload,
}

/// What an overloaded generator does to the verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnOverload {
    /// The run is inconclusive (exit code 5).
    #[default]
    Fail,
    /// Warn only; the thresholds decide.
    Warn,
}

impl OnOverload {
    /// `fail` / `warn`.
    pub fn name(self) -> &'static str {
        match self {
            OnOverload::Fail => "fail",
            OnOverload::Warn => "warn",
        }
    }
}

impl std::str::FromStr for OnOverload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "fail" => Ok(OnOverload::Fail),
            "warn" => Ok(OnOverload::Warn),
            other => Err(format!("`{other}`: expected `fail` or `warn`")),
        }
    }
}
