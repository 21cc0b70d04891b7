//! `junit.xml`: one test case per threshold and one per scenario's success rate, so CI systems
//! show a failed load test natively.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::ReportView;
use super::error::ReportError;

/// Parse a `success_rate` threshold expression like `> 0.99` into (op, limit).
fn rate_rule(expr: &str) -> Option<(&str, f64)> {
    let e = expr.trim();
    for op in [">=", "<=", ">", "<"] {
        if let Some(rest) = e.strip_prefix(op) {
            return rest.trim().parse::<f64>().ok().map(|v| (op, v));
        }
    }
    None
}

fn holds(op: &str, v: f64, limit: f64) -> bool {
    match op {
        ">=" => v >= limit,
        "<=" => v <= limit,
        ">" => v > limit,
        _ => v < limit,
    }
}

/// Render the JUnit XML of a run.
pub fn render(view: &ReportView) -> Result<String, ReportError> {
    let mut report = Report::new(format!("planrun {}", view.plan));
    let elapsed = Duration::from_secs_f64(view.elapsed_s.max(0.0));
    report.set_time(elapsed);

    let mut suite = TestSuite::new(format!("{} thresholds", view.plan));
    suite.set_time(elapsed);
    for t in &view.thresholds {
        let status = if t.passed {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type("threshold");
            s.set_message(format!(
                "{} {}: observed {}",
                t.metric, t.expression, t.observed_text
            ));
            s.set_description(format!(
                "expected {} {}\nobserved {}",
                t.metric, t.expression, t.observed_text
            ));
            s
        };
        let implicit = if t.implicit {
            " (implicit: every open-model run)"
        } else {
            ""
        };
        let mut case = TestCase::new(format!("{} {}{implicit}", t.metric, t.expression), status);
        case.set_classname(format!("planrun.{}.thresholds", view.plan));
        case.set_system_out(format!("observed {}", t.observed_text));
        suite.add_test_case(case);
    }
    if let Some(case) = generator_case(view) {
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);

    // A scenario fails when its own success rate breaks the plan's success_rate threshold.
    let rules: Vec<(String, &str, f64)> = view
        .thresholds
        .iter()
        .filter(|t| t.metric == crate::plan::SUCCESS_RATE)
        .filter_map(|t| rate_rule(&t.expression).map(|(op, v)| (t.expression.clone(), op, v)))
        .collect();
    let mut suite = TestSuite::new(format!("{} scenarios", view.plan));
    for (name, c) in &view.scenarios {
        let rate = (c.total > 0).then(|| c.succeeded as f64 / c.total as f64);
        let broken: Vec<&String> = rules
            .iter()
            .filter(|(_, op, limit)| rate.is_some_and(|r| !holds(op, r, *limit)))
            .map(|(e, _, _)| e)
            .collect();
        let text = match rate {
            Some(r) => format!(
                "success rate {:.4} ({} of {} succeeded, {} failed)",
                r, c.succeeded, c.total, c.failed
            ),
            None => "no completed iterations".to_string(),
        };
        let status = if broken.is_empty() {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type("success_rate");
            s.set_message(format!(
                "{text}; expected success_rate {}",
                broken
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            s
        };
        let mut case = TestCase::new(format!("scenario {name} success rate"), status);
        case.set_classname(format!("planrun.{}.scenarios", view.plan));
        case.set_system_out(text + &group_metrics(view, &format!("scenario:{name}")));
        suite.add_test_case(case);
    }
    // Tags: their metrics, for the record (a tag's thresholds are test cases above).
    for g in view.breakdown.iter().filter(|g| g.kind == "tag") {
        let mut case = TestCase::new(format!("tag {} metrics", g.name), TestCaseStatus::success());
        case.set_classname(format!("planrun.{}.tags", view.plan));
        case.set_system_out(format!(
            "metrics of the scenarios tagged `{}`{}",
            g.name,
            group_metrics(view, &g.group)
        ));
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report
        .to_string()
        .map_err(|e| ReportError::Junit(e.to_string()))
}

/// One line per metric of a breakdown group (`scenario:NAME`, `tag:T`), each starting with a
/// line break; empty without a breakdown.
fn group_metrics(view: &ReportView, group: &str) -> String {
    let Some(g) = view.breakdown.iter().find(|g| g.group == group) else {
        return String::new();
    };
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    g.metrics
        .iter()
        .map(|m| {
            format!(
                "\n{}{{{group}}}: count {}, p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
                m.metric,
                m.stats.count,
                f(m.stats.p50_ms),
                f(m.stats.p95_ms),
                f(m.stats.p99_ms),
                f(m.stats.max_ms)
            )
        })
        .collect()
}

/// The generator-health case: an error when the run is inconclusive (planrun was the
/// bottleneck), a success otherwise (noting an accepted overload). None when not judged.
fn generator_case(view: &ReportView) -> Option<TestCase> {
    let g = &view.generator;
    let limit = g.lag_limit_ms?;
    let name = format!("planrun generator pacing lag and event-loop delay p99 <= {limit} ms");
    let status = if view.inconclusive {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_type("inconclusive");
        s.set_message(format!(
            "inconclusive: planrun itself was the bottleneck: {}",
            g.warnings.join("; ")
        ));
        s
    } else {
        TestCaseStatus::success()
    };
    let mut case = TestCase::new(name, status);
    case.set_classname(format!("planrun.{}.generator", view.plan));
    let out = if g.overloaded && !view.inconclusive {
        format!(
            "overload accepted (on_overload: warn): {}",
            g.warnings.join("; ")
        )
    } else if g.overloaded {
        g.warnings.join("; ")
    } else {
        "planrun kept time".to_string()
    };
    case.set_system_out(out);
    Some(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_rules_parse() {
        assert_eq!(rate_rule("> 0.99"), Some((">", 0.99)));
        assert_eq!(rate_rule(">=1"), Some((">=", 1.0)));
        assert!(holds(">", 1.0, 0.99));
        assert!(!holds(">=", 0.5, 0.99));
    }
}
