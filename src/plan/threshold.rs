//! Threshold expressions: `p95 < 1.5s`, `count >= 10`, `> 0.99` (for rates).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::dist::parse_duration;

/// Which statistic of a metric is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    P50,
    P90,
    P95,
    P99,
    Mean,
    Min,
    Max,
    Count,
    /// A ratio in 0..1 (success_rate).
    Rate,
}

impl Stat {
    pub const NAMES: &'static [&'static str] = &[
        "p50", "p90", "p95", "p99", "mean", "min", "max", "count", "rate",
    ];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "p50" | "median" => Stat::P50,
            "p90" => Stat::P90,
            "p95" => Stat::P95,
            "p99" => Stat::P99,
            "mean" | "avg" => Stat::Mean,
            "min" => Stat::Min,
            "max" => Stat::Max,
            "count" => Stat::Count,
            "rate" => Stat::Rate,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Mean => "mean",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Count => "count",
            Stat::Rate => "rate",
        }
    }

    /// Whether values of this statistic are durations (compared in milliseconds).
    pub fn is_duration(self) -> bool {
        !matches!(self, Stat::Count | Stat::Rate)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    pub fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
        }
    }
}

/// A parsed threshold expression. `stat` is `None` when omitted (`> 0.99`), which is only
/// valid for rates; validation decides by the metric it is attached to.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdExpr {
    pub stat: Option<Stat>,
    pub op: Op,
    /// The limit: milliseconds for durations, a plain number otherwise.
    pub limit: f64,
    /// Whether the limit was written as a duration.
    pub limit_is_duration: bool,
    pub text: String,
}

impl ThresholdExpr {
    /// The statistic to compare, defaulting to `rate` when the expression names none.
    pub fn stat_or_rate(&self) -> Stat {
        self.stat.unwrap_or(Stat::Rate)
    }
}

impl FromStr for ThresholdExpr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let op_at = t.find(['<', '>']).ok_or_else(|| {
            format!(
                "threshold `{t}` has no comparison: write e.g. `p95 < 1.5s`, `count >= 10` or `> 0.99`"
            )
        })?;
        let (left, rest) = t.split_at(op_at);
        let (op, right) = if let Some(r) = rest.strip_prefix("<=") {
            (Op::Le, r)
        } else if let Some(r) = rest.strip_prefix(">=") {
            (Op::Ge, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Op::Lt, r)
        } else {
            (Op::Gt, &rest[1..])
        };
        let left = left.trim();
        let stat = if left.is_empty() {
            None
        } else {
            Some(Stat::parse(left).ok_or_else(|| {
                let hint = super::diag::did_you_mean(left, Stat::NAMES)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                format!(
                    "unknown statistic `{left}` in threshold `{t}`{hint}: expected one of {}",
                    Stat::NAMES.join(", ")
                )
            })?)
        };
        let right = right.trim();
        if right.is_empty() {
            return Err(format!(
                "threshold `{t}` has nothing after `{}`",
                op.symbol()
            ));
        }
        let (limit, limit_is_duration) = if let Ok(n) = right.parse::<f64>() {
            (n, false)
        } else {
            let d = parse_duration(right).map_err(|e| format!("in threshold `{t}`: {e}"))?;
            (d.as_secs_f64() * 1000.0, true)
        };
        if !limit.is_finite() {
            return Err(format!(
                "threshold `{t}` has a limit that is not a finite number"
            ));
        }
        if let Some(s) = stat {
            if s.is_duration() && !limit_is_duration {
                return Err(format!(
                    "threshold `{t}` compares `{}` (a duration) with a plain number: add a unit, e.g. `{right}ms`",
                    s.name()
                ));
            }
            if !s.is_duration() && limit_is_duration {
                return Err(format!(
                    "threshold `{t}` compares `{}` with a duration: `{}` is a plain number",
                    s.name(),
                    s.name()
                ));
            }
        }
        Ok(ThresholdExpr {
            stat,
            op,
            limit,
            limit_is_duration,
            text: t.to_string(),
        })
    }
}

impl fmt::Display for ThresholdExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ThresholdExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for ThresholdExpr {
    fn schema_name() -> Cow<'static, str> {
        "ThresholdExpr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "`STAT OP LIMIT`: STAT is p50|p90|p95|p99|mean|min|max|count (omit it for \
                rates such as success_rate), OP is < <= > >=, LIMIT a duration (`1.5s`) or number.",
            "examples": ["p95 < 1.5s", "count >= 10", "> 0.99"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expressions() {
        let e: ThresholdExpr = "p95 < 1.5s".parse().unwrap();
        assert_eq!((e.stat, e.op, e.limit), (Some(Stat::P95), Op::Lt, 1500.0));
        let e: ThresholdExpr = " > 0.99".parse().unwrap();
        assert_eq!((e.stat, e.op, e.limit), (None, Op::Gt, 0.99));
        let e: ThresholdExpr = "count>=10".parse().unwrap();
        assert_eq!((e.stat, e.op, e.limit), (Some(Stat::Count), Op::Ge, 10.0));
        let e: ThresholdExpr = "max <= 250ms".parse().unwrap();
        assert_eq!((e.op, e.limit), (Op::Le, 250.0));
    }

    #[test]
    fn rejects_bad_expressions_with_reasons() {
        let err = |s: &str| s.parse::<ThresholdExpr>().unwrap_err();
        assert!(err("p95 1.5s").contains("no comparison"));
        assert!(err("p59 < 1s").contains("did you mean `p95`"));
        assert!(err("p95 < 300").contains("add a unit"));
        assert!(err("count > 2s").contains("plain number"));
        assert!(err("p95 <").contains("nothing after"));
    }

    #[test]
    fn ops_compare() {
        assert!(Op::Lt.holds(1.0, 2.0) && !Op::Lt.holds(2.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0) && Op::Ge.holds(2.0, 2.0));
        assert!(Op::Gt.holds(3.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
    }
}
