//! Threshold expressions: `p95 < 1.5s`, `count >= 10`, `> 0.99` (for rates), optionally judged
//! over sliding windows (`p95 < 1.5s over 10s`), and an object form with run-control options
//! (`{threshold: "p95 < 800ms", abort_on_fail: true, delay_abort_eval: 10s}`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::distribution::parse_duration;

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
    /// `over W`: judged in every sliding window of this length; fails if any window breaches.
    pub window: Option<Duration>,
    /// Stop the run as soon as this threshold can no longer pass.
    pub abort_on_fail: bool,
    /// With `abort_on_fail`: how long after the start before it is judged during the run.
    pub delay_abort_eval: Duration,
    pub text: String,
}

/// Keys of the object form.
const OBJECT_KEYS: &[&str] = &["threshold", "abort_on_fail", "delay_abort_eval"];

impl ThresholdExpr {
    /// The statistic to compare, defaulting to `rate` when the expression names none.
    pub fn stat_or_rate(&self) -> Stat {
        self.stat.unwrap_or(Stat::Rate)
    }
}

/// Why a threshold expression did not parse (the message names the whole expression).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ThresholdParseError(String);

impl FromStr for ThresholdExpr {
    type Err = ThresholdParseError;

    fn from_str(text: &str) -> Result<Self, ThresholdParseError> {
        parse_threshold(text).map_err(ThresholdParseError)
    }
}

/// [`ThresholdExpr::from_str`] with the message as text.
fn parse_threshold(text: &str) -> Result<ThresholdExpr, String> {
    {
        let t = text.trim();
        let (expr, window) = match t.rfind(" over ") {
            Some(i) => {
                let w = t[i + 6..].trim();
                let d =
                    parse_duration(w).map_err(|e| format!("in threshold `{t}`: window: {e}"))?;
                if d.is_zero() {
                    return Err(format!("threshold `{t}` has a zero-length window"));
                }
                (t[..i].trim_end(), Some(d))
            }
            None => (t, None),
        };
        let mut e = parse_expr(expr, t)?;
        e.window = window;
        Ok(e)
    }
}

/// Parse `STAT OP LIMIT` (`t` is the whole text, for messages).
fn parse_expr(expr: &str, t: &str) -> Result<ThresholdExpr, String> {
    {
        let op_at = expr.find(['<', '>']).ok_or_else(|| {
            format!(
                "threshold `{t}` has no comparison: write e.g. `p95 < 1.5s`, `count >= 10` or `> 0.99`"
            )
        })?;
        let (left, rest) = expr.split_at(op_at);
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
            window: None,
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
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
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ThresholdExpr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a threshold expression like `p95 < 1.5s` or an object \
                     `{threshold: \"p95 < 1.5s\", abort_on_fail: true, delay_abort_eval: 10s}`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut expr: Option<ThresholdExpr> = None;
                let mut abort = false;
                let mut delay = Duration::ZERO;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "threshold" => {
                            let text = map.next_value::<String>()?;
                            expr = Some(text.parse().map_err(de::Error::custom)?);
                        }
                        "abort_on_fail" => abort = map.next_value::<bool>()?,
                        "delay_abort_eval" => {
                            let text = map.next_value::<String>()?;
                            delay = parse_duration(&text)
                                .map_err(|e| de::Error::custom(format!("delay_abort_eval: {e}")))?;
                        }
                        other => {
                            let hint = super::diag::did_you_mean(other, OBJECT_KEYS)
                                .map(|s| format!(" (did you mean `{s}`?)"))
                                .unwrap_or_default();
                            return Err(de::Error::custom(format!(
                                "unknown threshold key `{other}`{hint}: expected one of {}",
                                OBJECT_KEYS.join(", ")
                            )));
                        }
                    }
                }
                let mut e = expr
                    .ok_or_else(|| de::Error::custom("threshold object needs a `threshold` key"))?;
                e.abort_on_fail = abort;
                e.delay_abort_eval = delay;
                Ok(e)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ThresholdExpr {
    fn schema_name() -> Cow<'static, str> {
        "ThresholdExpr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let expr = json_schema!({
            "type": "string",
            "description": "`STAT OP LIMIT [over WINDOW]`: STAT is p50|p90|p95|p99|mean|min|max|count \
                (omit it for rates such as success_rate), OP is < <= > >=, LIMIT a duration \
                (`1.5s`) or number. `over 10s` judges every sliding 10 s window of the run \
                (windows advance by a quarter of their length) and fails if any window breaches.",
            "examples": ["p95 < 1.5s", "count >= 10", "> 0.99", "p95 < 1.5s over 10s"]
        });
        json_schema!({
            "anyOf": [
                expr.clone(),
                {
                    "type": "object",
                    "description": "A threshold with run-control options.",
                    "properties": {
                        "threshold": expr,
                        "abort_on_fail": {
                            "type": "boolean",
                            "description": "Stop the run as soon as this threshold can no longer \
                                pass (judged about once a second); exits 1 naming it."
                        },
                        "delay_abort_eval": {
                            "type": "string",
                            "description": "With abort_on_fail: do not judge during the first \
                                DURATION of the run (e.g. `10s`).",
                            "examples": ["10s"]
                        }
                    },
                    "required": ["threshold"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// What a `{…}` filter on a threshold's metric selects: the samples of one scenario, or of
/// every scenario carrying a tag (`ttfa{scenario:weather}`, `ttfa{tag:slow}`, as in k6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FilterKind {
    Scenario,
    Tag,
}

impl FilterKind {
    pub const NAMES: &'static [&'static str] = &["scenario", "tag"];

    pub fn name(self) -> &'static str {
        match self {
            FilterKind::Scenario => "scenario",
            FilterKind::Tag => "tag",
        }
    }
}

/// A metric key split into its metric and optional filter: `ttfa{scenario:weather}` →
/// (`ttfa`, scenario `weather`). The same text keys the filtered histograms of a run (see
/// [`group_key`]), `metrics.json`'s breakdown and the threshold table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricKey<'a> {
    pub metric: &'a str,
    pub filter: Option<(FilterKind, &'a str)>,
}

/// Split `metric{kind:value}`; a key without braces is the plain metric. Errors name what is
/// wrong (an unknown kind comes with a did-you-mean).
pub fn split_metric_key(key: &str) -> Result<MetricKey<'_>, String> {
    let Some(open) = key.find('{') else {
        if key.contains('}') {
            return Err(format!("`{key}` has a `}}` without a `{{`"));
        }
        return Ok(MetricKey {
            metric: key,
            filter: None,
        });
    };
    let metric = key[..open].trim_end();
    let inner = key[open + 1..].strip_suffix('}').ok_or_else(|| {
        format!("`{key}`: a filter is written `metric{{scenario:NAME}}` or `metric{{tag:NAME}}`, closed by `}}` at the end")
    })?;
    let (kind, value) = inner.split_once(':').ok_or_else(|| {
        format!("`{key}`: write the filter as `{{scenario:NAME}}` or `{{tag:NAME}}`")
    })?;
    let (kind, value) = (kind.trim(), value.trim());
    let kind = match kind {
        "scenario" => FilterKind::Scenario,
        "tag" => FilterKind::Tag,
        other => {
            let hint = super::diag::did_you_mean(other, FilterKind::NAMES)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "`{key}` filters by `{other}`{hint}: a threshold filters by `scenario` or `tag`"
            ));
        }
    };
    if metric.is_empty() || value.is_empty() || value.contains(['{', '}']) {
        return Err(format!("`{key}`: write `metric{{{}:NAME}}`", kind.name()));
    }
    Ok(MetricKey {
        metric,
        filter: Some((kind, value)),
    })
}

/// The metric of a key, without its filter (`ttfa{tag:slow}` → `ttfa`).
pub fn base_metric(key: &str) -> &str {
    split_metric_key(key).map_or(key, |k| k.metric)
}

/// The key of `metric` restricted to `group` (`scenario:weather` → `ttfa{scenario:weather}`).
pub fn group_key(metric: &str, group: &str) -> String {
    format!("{metric}{{{group}}}")
}

/// Whether a plan's samples are also recorded per scenario and tag (and its reports break
/// metrics down): more than one scenario, any tags, or a filtered threshold.
pub fn has_breakdown(plan: &super::model::Plan) -> bool {
    plan.scenarios.len() > 1
        || plan.scenarios.iter().any(|s| !s.tags.is_empty())
        || !step_tags(plan).is_empty()
        || plan.thresholds.keys().any(|k| k.contains('{'))
}

/// Every tag of the plan's steps (sorted, once each).
pub fn step_tags(plan: &super::model::Plan) -> Vec<String> {
    let mut tags = Vec::new();
    for (si, sc) in plan.scenarios.iter().enumerate() {
        super::walk_steps(
            &sc.steps,
            &crate::plan_path!["scenarios", si],
            &mut |step, _| {
                tags.extend(step.tags.iter().flatten().cloned());
            },
        );
    }
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// The breakdown groups of a step with `tags:` in scenario `scenario`: the scenario's groups,
/// then `tag:T` for each of the step's tags not already there (None without step tags).
pub fn step_groups(
    plan: &super::model::Plan,
    scenario: &str,
    step: &super::model::Step,
) -> Option<std::sync::Arc<[String]>> {
    let tags = step.tags.as_ref().filter(|t| !t.is_empty())?;
    let sc = plan.scenarios.iter().find(|s| s.name == scenario)?;
    let mut groups = breakdown_groups(plan, sc);
    for t in tags {
        let g = format!("tag:{t}");
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Some(groups.into())
}

/// The groups `sc`'s samples count under in `plan` (none without a breakdown).
pub fn breakdown_groups(plan: &super::model::Plan, sc: &super::model::Scenario) -> Vec<String> {
    if has_breakdown(plan) {
        scenario_groups(&sc.name, &sc.tags)
    } else {
        Vec::new()
    }
}

/// The groups a scenario's samples belong to: `scenario:NAME`, then `tag:T` for each tag.
pub fn scenario_groups(name: &str, tags: &[String]) -> Vec<String> {
    let mut g = vec![format!("scenario:{name}")];
    g.extend(tags.iter().map(|t| format!("tag:{t}")));
    g
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
        let err = |s: &str| s.parse::<ThresholdExpr>().unwrap_err().to_string();
        assert!(err("p95 1.5s").contains("no comparison"));
        assert!(err("p59 < 1s").contains("did you mean `p95`"));
        assert!(err("p95 < 300").contains("add a unit"));
        assert!(err("count > 2s").contains("plain number"));
        assert!(err("p95 <").contains("nothing after"));
    }

    #[test]
    fn parses_windows() {
        let e: ThresholdExpr = "p95 < 1.5s over 10s".parse().unwrap();
        assert_eq!((e.stat, e.limit), (Some(Stat::P95), 1500.0));
        assert_eq!(e.window, Some(Duration::from_secs(10)));
        assert_eq!(e.text, "p95 < 1.5s over 10s");
        let e: ThresholdExpr = "> 0.9 over 5s".parse().unwrap();
        assert_eq!((e.stat, e.window), (None, Some(Duration::from_secs(5))));
        let err = |s: &str| s.parse::<ThresholdExpr>().unwrap_err().to_string();
        // A count over windows: how many samples each window holds (an empty one holds 0).
        let e: ThresholdExpr = "count < 3 over 10s".parse().unwrap();
        assert_eq!((e.stat, e.limit), (Some(Stat::Count), 3.0));
        assert!(err("p95 < 1s over 0s").contains("zero-length"));
        assert!(err("p95 < 1s over soon").contains("window"));
    }

    #[test]
    fn object_form() {
        #[derive(Deserialize)]
        struct T {
            t: Vec<ThresholdExpr>,
        }
        let v: T = serde_json::from_str(
            r#"{"t": ["p95 < 1s", {"threshold": "p95 < 800ms over 5s", "abort_on_fail": true, "delay_abort_eval": "2s"}]}"#,
        )
        .unwrap();
        assert!(!v.t[0].abort_on_fail);
        assert!(v.t[1].abort_on_fail);
        assert_eq!(v.t[1].delay_abort_eval, Duration::from_secs(2));
        assert_eq!(v.t[1].window, Some(Duration::from_secs(5)));
        let e = serde_json::from_str::<T>(
            r#"{"t": [{"threshold": "p95 < 1s", "abort_onfail": true}]}"#,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("did you mean `abort_on_fail`"), "{e}");
        let e = serde_json::from_str::<T>(r#"{"t": [{"abort_on_fail": true}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("needs a `threshold`"), "{e}");
    }

    #[test]
    fn metric_keys_split() {
        let k = split_metric_key("ttfa{scenario:weather}").unwrap();
        assert_eq!(k.metric, "ttfa");
        assert_eq!(k.filter, Some((FilterKind::Scenario, "weather")));
        let k = split_metric_key("ttfa{ tag: slow }").unwrap();
        assert_eq!(k.filter, Some((FilterKind::Tag, "slow")));
        assert_eq!(split_metric_key("ttfa").unwrap().filter, None);
        assert!(
            split_metric_key("ttfa{scenaro:x}")
                .unwrap_err()
                .contains("did you mean `scenario`")
        );
        assert!(split_metric_key("ttfa{scenario:x").is_err());
        assert!(split_metric_key("ttfa{scenario:}").is_err());
        assert!(split_metric_key("ttfa}").is_err());
        assert_eq!(base_metric("ttfa{tag:a}"), "ttfa");
        assert_eq!(group_key("ttfa", "tag:a"), "ttfa{tag:a}");
    }

    #[test]
    fn ops_compare() {
        assert!(Op::Lt.holds(1.0, 2.0) && !Op::Lt.holds(2.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0) && Op::Ge.holds(2.0, 2.0));
        assert!(Op::Gt.holds(3.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
    }
}
