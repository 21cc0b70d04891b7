//! A run's report folder: reading `metrics.json`/`run.json` back (or rebuilding them from a
//! killed run's `timeline.csv`), and writing every selected output atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ReportError;
use super::templates::{BUILTIN_TEMPLATES, render_value, template_context};
use super::timeline::{self, RunData};
use super::{arrivals, junit};
use crate::contract::{ReportView, RunInfo, RunReport};
use crate::plan::compile::CompiledPlan;
use crate::plan::model::ReportFormat;

/// Everything a report is rendered from: `metrics.json` (as JSON, for templates, and typed)
/// and `run.json`.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub report: serde_json::Value,
    pub view: ReportView,
    pub run: RunData,
}

impl RunFiles {
    /// From a run that just finished.
    pub fn new(report: &RunReport, run: RunData) -> Result<Self, ReportError> {
        let json = serde_json::to_value(report).map_err(|source| ReportError::Json {
            name: "metrics.json",
            source,
        })?;
        Self::from_json(json, run)
    }

    pub(super) fn from_json(report: serde_json::Value, run: RunData) -> Result<Self, ReportError> {
        let view = ReportView::deserialize(&report).map_err(|source| ReportError::Json {
            name: "metrics.json",
            source,
        })?;
        Ok(RunFiles { report, view, run })
    }

    /// Read `metrics{suffix}.json` and `run{suffix}.json` (optional) from a run folder.
    pub fn load(dir: &Path, suffix: &str) -> Result<Self, ReportError> {
        let read = |name: &str| -> Result<Option<String>, ReportError> {
            let path = dir.join(output_name(name, suffix));
            match std::fs::read_to_string(&path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(ReportError::Read { path, source }),
            }
        };
        let metrics_name = output_name("metrics.json", suffix);
        let Some(text) = read("metrics.json")? else {
            if dir.join(output_name("timeline.csv", suffix)).exists() {
                return Self::from_timeline(dir, suffix);
            }
            return Err(ReportError::Missing {
                dir: dir.to_path_buf(),
                name: metrics_name,
            });
        };
        let report: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ReportError::JsonFile {
                path: dir.join(&metrics_name),
                source,
            })?;
        let run = match read("run.json")? {
            Some(t) => serde_json::from_str(&t).map_err(|source| ReportError::JsonFile {
                path: dir.join(output_name("run.json", suffix)),
                source,
            })?,
            None => RunData::default(),
        };
        Self::from_json(report, run)
    }
}

impl RunFiles {
    /// Rebuild a report from a run that never wrote its `metrics.json` (killed): counts,
    /// percentiles and thresholds from the samples in `timeline{suffix}.csv`, the run's
    /// description from `run_info{suffix}.json` when present. Marked `partial`.
    pub fn from_timeline(dir: &Path, suffix: &str) -> Result<Self, ReportError> {
        let csv_path = dir.join(output_name("timeline.csv", suffix));
        let text = std::fs::read(&csv_path).map_err(|source| ReportError::Read {
            path: csv_path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&text);
        let (iterations, skipped) = timeline::parse_csv(&text);
        let info_path = dir.join(output_name("run_info.json", suffix));
        let info: RunInfo = match std::fs::read_to_string(&info_path) {
            Ok(t) => serde_json::from_str(&t).map_err(|source| ReportError::JsonFile {
                path: info_path.clone(),
                source,
            })?,
            Err(_) => RunInfo {
                plan: "unknown".into(),
                ..RunInfo::default()
            },
        };
        let specs: Vec<crate::plan::compile::ThresholdSpec> = info
            .thresholds
            .iter()
            .filter_map(|(metric, expr)| {
                Some(crate::plan::compile::ThresholdSpec {
                    metric: metric.clone(),
                    expr: expr.parse().ok()?,
                })
            })
            .collect();
        let mut rec = crate::metrics::Recorder {
            windows: crate::metrics::Windows {
                groups: info.scenario_groups.clone(),
                ..crate::metrics::Windows::for_thresholds(&specs)
            },
            ..crate::metrics::Recorder::default()
        };
        for it in &iterations {
            let r = it.to_record();
            let groups = rec.windows.groups_of(&r.scenario);
            for sm in &r.samples {
                rec.record_grouped(
                    &sm.metric,
                    std::time::Duration::from_secs_f64(sm.value_ms.max(0.0) / 1000.0),
                    &groups,
                );
            }
            rec.iteration(r);
        }
        let end_us = iterations.iter().map(|i| i.end_us).max().unwrap_or(0);
        let mut declared = info.metrics.clone();
        if declared.is_empty() {
            declared = rec.histograms.keys().cloned().collect();
        }
        let summary = crate::metrics::Summary::new(
            rec,
            declared,
            std::time::Duration::from_micros(end_us),
            true,
        );
        let results = crate::judge::thresholds::evaluate(&summary, &specs);
        let mut report = RunReport::from_summary(&info, &summary, results);
        report.partial = true;
        report.stop_reason = Some(format!(
            "the run did not finish (no metrics.json); rebuilt from {} ({} iterations{})",
            csv_path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().to_string()),
            iterations.len(),
            if skipped > 0 {
                format!(", {skipped} torn or unreadable rows skipped")
            } else {
                String::new()
            }
        ));
        let run = RunData {
            version: timeline::RUN_DATA_VERSION,
            iterations,
            resources: None,
        };
        RunFiles::new(&report, run)
    }
}

/// `summary.md` + `_5_users` → `summary_5_users.md`.
pub fn output_name(name: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        return name.to_string();
    }
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{}{suffix}{}", &name[..i], &name[i..]),
        _ => format!("{name}{suffix}"),
    }
}

/// What to write.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub formats: Vec<ReportFormat>,
    /// Output name → template source; replaces a built-in of that name or adds an output.
    pub templates: BTreeMap<String, String>,
    /// Write `metrics.json`/`run.json` (false when re-rendering them from disk).
    pub write_data: bool,
}

/// Write the report files of one run to `out`, every name with `suffix` (e.g. `_5_users`)
/// before its extension; returns the paths written.
pub fn write_outputs(
    files: &RunFiles,
    outputs: &Outputs,
    out: &Path,
    suffix: &str,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::Create {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let mut put = |name: &str, body: &str| -> Result<(), ReportError> {
        let path = out.join(output_name(name, suffix));
        write_atomic(&path, body.as_bytes())?;
        written.push(path);
        Ok(())
    };
    let has = |f: ReportFormat| outputs.formats.contains(&f);
    if has(ReportFormat::Json) && outputs.write_data {
        let json =
            serde_json::to_string_pretty(&files.report).map_err(|source| ReportError::Json {
                name: "metrics.json",
                source,
            })?;
        put("metrics.json", &(json + "\n"))?;
        let run = serde_json::to_string(&files.run).map_err(|source| ReportError::Json {
            name: "run.json",
            source,
        })?;
        put("run.json", &(run + "\n"))?;
    }
    // A partial run's timeline.csv is the evidence it was rebuilt from: never rewritten.
    if has(ReportFormat::Csv) && !files.view.partial {
        let dropped: Vec<arrivals::DroppedEntry> = files
            .report
            .get("arrivals")
            .and_then(|a| a.get("dropped"))
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default();
        put(
            "timeline.csv",
            &timeline::csv_with_dropped(&files.run.iterations, &dropped)?,
        )?;
    }
    if has(ReportFormat::Junit) {
        put("junit.xml", &junit::render(&files.view)?)?;
    }
    let mut jobs: Vec<(&str, &str)> = Vec::new();
    for (name, format, source) in BUILTIN_TEMPLATES {
        if let Some(custom) = outputs.templates.get(*name) {
            jobs.push((name, custom));
        } else if has(*format) {
            jobs.push((name, source));
        }
    }
    for (name, source) in &outputs.templates {
        if !BUILTIN_TEMPLATES.iter().any(|b| b.0 == name) {
            jobs.push((name, source));
        }
    }
    if !jobs.is_empty() {
        let ctx = template_context(files);
        for (name, source) in jobs {
            put(name, &render_value(name, source, ctx.clone())?)?;
        }
    }
    Ok(written)
}

/// Write a file through a temporary beside it and a rename, so a crash mid-write never leaves
/// a torn file in place of a good one.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), ReportError> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // Secrets from `{{ env.NAME }}` and header values never reach a report file.
    let redacted;
    let body = match std::str::from_utf8(body) {
        Ok(text) => {
            redacted = crate::redact::redact(text);
            redacted.as_bytes()
        }
        Err(_) => body,
    };
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ReportError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
}

/// Write the report files of a run that just finished (the metrics.json contract, `run.json`,
/// and every selected format); the original entry point, kept for callers.
pub fn write(
    report: &RunReport,
    formats: &[ReportFormat],
    out: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let files = RunFiles::new(report, RunData::default())?;
    let outputs = Outputs {
        formats: formats.to_vec(),
        templates: BTreeMap::new(),
        write_data: true,
    };
    write_outputs(&files, &outputs, out, "")
}

/// The suffixes of the runs saved in a folder: `""` for `metrics.json`, `_5_users` for
/// `metrics_5_users.json`, … (sorted by user count).
pub fn saved_runs(dir: &Path) -> Result<Vec<String>, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<(u64, String)> = Vec::new();
    // metrics*.json, or a partial run's timeline*.csv alone.
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == "metrics.json" || name == "timeline.csv" {
            out.push((0, String::new()));
        } else if let Some(n) = name
            .strip_prefix("metrics_")
            .and_then(|r| r.strip_suffix("_users.json"))
            .or_else(|| {
                name.strip_prefix("timeline_")
                    .and_then(|r| r.strip_suffix("_users.csv"))
            })
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((n, format!("_{n}_users")));
        }
    }
    out.sort();
    out.dedup();
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

/// The default report folder: `<dir>/<plan name>-<UTC timestamp>/`.
pub fn default_out_dir(plan: &CompiledPlan, started: std::time::SystemTime) -> PathBuf {
    let t = time::OffsetDateTime::from(started);
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let safe = crate::slug::slug(&plan.name);
    let dir = plan.report.dir.clone().unwrap_or_else(|| "reports".into());
    Path::new(&dir).join(format!("{safe}-{stamp}"))
}
