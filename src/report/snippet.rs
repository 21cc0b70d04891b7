//! A runtime failure shown like a plan error: the failed step's line of the plan with a caret
//! under it, rendered by the plan's own diagnostics ([`crate::plan::diag::Diagnostic`]), so a
//! failure during a run reads like a problem found before it.
//!
//! The plan is read again from the report's `plan_file`. When it cannot be read (a report
//! re-rendered elsewhere from `metrics.json`) or no longer has the step's line, there is no
//! snippet and the failure keeps its plain `step 4 (line 38)` text.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::contract::{FailureSample, RunReport};
use crate::plan::diag::{Diagnostic, source_line};

/// The plan a report was run from, read back for snippets.
#[derive(Debug, Clone)]
pub struct PlanSource {
    path: PathBuf,
    text: String,
}

impl PlanSource {
    /// The report's plan file, when it can still be read.
    pub fn of(report: &RunReport) -> Option<Self> {
        if report.plan_file.is_empty() {
            return None;
        }
        let path = PathBuf::from(&report.plan_file);
        let text = std::fs::read_to_string(&path).ok()?;
        Some(PlanSource { path, text })
    }

    /// The failure as a diagnostic at its step's line (the caret under the step's action).
    pub fn diagnostic(&self, f: &FailureSample) -> Option<Diagnostic> {
        let line = f.line()?;
        let src = source_line(&self.text, line)?;
        let indent = src.chars().take_while(|c| c.is_whitespace()).count();
        let item = src[src.len() - src.trim_start().len()..]
            .strip_prefix("- ")
            .map_or(0, |_| 2);
        Some(Diagnostic {
            file: self.path.clone(),
            line,
            column: indent + item + 1,
            message: format!("{}: {}", f.class, f.message),
            hint: None,
            source_line: Some(src),
        })
    }

    /// The rendered snippet (several lines, each ending in a newline).
    pub fn snippet(&self, f: &FailureSample) -> Option<String> {
        self.diagnostic(f).map(|d| d.to_string())
    }
}

/// One snippet per failure of `report.failures` (None: no plan line, or a failure at a line
/// already shown above it).
pub fn failure_snippets(report: &RunReport) -> Vec<Option<String>> {
    let Some(plan) = PlanSource::of(report) else {
        return vec![None; report.failures.len()];
    };
    let mut seen = HashSet::new();
    report
        .failures
        .iter()
        .map(|f| {
            let line = f.line()?;
            if !seen.insert(line) {
                return None;
            }
            plan.snippet(f)
        })
        .collect()
}

/// `text` with every line indented by `pad`.
pub fn indent(text: &str, pad: &str) -> String {
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_points_at_its_step_like_a_plan_error() {
        let dir = std::env::temp_dir().join(format!("planrun-snippet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = dir.join("plan.yaml");
        std::fs::write(
            &plan,
            "name: x\nscenarios:\n  - name: a\n    steps:\n      - await: first_audio\n",
        )
        .unwrap();
        let f = FailureSample {
            class: "timeout".into(),
            step: "step 1 (line 5)".into(),
            message: "no first_audio within 10s".into(),
            ..FailureSample::default()
        };
        let report = RunReport {
            plan_file: plan.display().to_string(),
            failures: vec![f.clone(), f.clone()],
            ..RunReport::default()
        };
        let snippets = failure_snippets(&report);
        let text = snippets[0].as_deref().unwrap();
        assert_eq!(
            text,
            format!(
                "{}:5:9: error: timeout: no first_audio within 10s\n  |\n5 |       - await: first_audio\n  |         ^\n",
                plan.display()
            )
        );
        assert_eq!(snippets[1], None, "one snippet per step line");
        // Without the plan (re-rendered elsewhere) or without a line: no snippet.
        let gone = RunReport {
            plan_file: dir.join("missing.yaml").display().to_string(),
            ..report.clone()
        };
        assert_eq!(failure_snippets(&gone), vec![None, None]);
        let plain = FailureSample {
            step: "step 1".into(),
            ..f
        };
        assert!(PlanSource::of(&report).unwrap().snippet(&plain).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
