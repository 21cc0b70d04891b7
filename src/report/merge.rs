//! `planrun merge DIR...`: one report from the result folders of a sharded run
//! (`--shard i/n`).
//!
//! Each shard folder holds `metrics.json` (HDR histograms, base64 V2 + deflate, and the
//! shard's exact totals in `shard`), `run.json` (every iteration with its samples) and
//! `run_info.json`; a shard killed before its end has only `run_info.json` and the streamed
//! `timeline.csv`, and is rebuilt from it (the merged report is then partial). The merge:
//!
//! - checks the folders are shards of one run: same plan name, seed, thresholds, shard count
//!   and user count, distinct shard indexes (a mismatch is an error; a missing shard is a
//!   warning and the merged report is marked partial);
//! - adds the histograms (`Histogram::add`: exact, so merged percentiles are those of all
//!   samples together), sums the iteration counts, errors by class, checks and HTTP totals;
//! - concatenates the timelines (shards already number their users globally), each shard's
//!   times counted from its own start;
//! - judges the plan's thresholds again on the merged data (windowed ones on the merged
//!   samples) and renders the usual report set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::error::ReportError;
use super::{RunData, RunFiles, RunInfo, RunReport, output_name, timeline};
pub use crate::contract::MergeInfo;
use crate::contract::ShardReport;
use crate::metrics::{Recorder, Summary};
use crate::plan::model::ReportFormat;

/// A merged run, ready to be written.
#[derive(Debug)]
pub struct Merged {
    pub files: RunFiles,
    /// Problems that do not stop the merge (a missing shard, differing planrun versions).
    pub warnings: Vec<String>,
}

/// One shard's folder, read.
struct ShardRun {
    dir: PathBuf,
    files: RunFiles,
    info: Option<RunInfo>,
    shard: ShardReport,
}

impl ShardRun {
    fn load(dir: &Path) -> Result<Self, ReportError> {
        let shown = dir.display();
        let suffixes = super::saved_runs(dir)?;
        if suffixes.iter().any(|s| !s.is_empty()) {
            return Err(ReportError::Merge(format!(
                "{shown} holds a sweep (several user counts); shard one user count (--users N) to merge"
            )));
        }
        if suffixes.is_empty() {
            return Err(ReportError::Merge(format!(
                "{shown} holds no metrics.json or timeline.csv"
            )));
        }
        let files = RunFiles::load(dir, "")?;
        let info_path = dir.join("run_info.json");
        let info: Option<RunInfo> = match std::fs::read_to_string(&info_path) {
            Ok(t) => Some(
                serde_json::from_str(&t).map_err(|source| ReportError::JsonFile {
                    path: info_path.clone(),
                    source,
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ReportError::Read {
                    path: info_path,
                    source,
                });
            }
        };
        let shard = files
            .view
            .shard
            .clone()
            .or_else(|| info.as_ref().and_then(|i| i.shard.clone()))
            .ok_or_else(|| {
                ReportError::Merge(format!(
                    "{shown} is not a shard of a run (it was not run with --shard i/n)"
                ))
            })?;
        Ok(ShardRun {
            dir: dir.to_path_buf(),
            files,
            info,
            shard,
        })
    }

    fn plan(&self) -> &str {
        &self.files.view.plan
    }

    /// The thresholds as (metric, expression) in plan order.
    fn thresholds(&self) -> Vec<(String, String)> {
        match &self.info {
            Some(i) => i.thresholds.clone(),
            None => self
                .files
                .view
                .thresholds
                .iter()
                .map(|t| (t.metric.clone(), t.expression.clone()))
                .collect(),
        }
    }

    fn metrics(&self) -> Vec<String> {
        match &self.info {
            Some(i) if !i.metrics.is_empty() => i.metrics.clone(),
            _ => self.files.view.metric_order.clone(),
        }
    }

    fn started(&self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::parse(
            &self.files.view.started_at,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
    }
}

/// The identity shards of one run share.
fn identity(r: &ShardRun) -> String {
    format!(
        "plan `{}`, seed {}, {} shard(s) of {} user(s)",
        r.plan(),
        r.files.view.seed,
        r.shard.count,
        r.shard.total_users
    )
}

/// Merge shard folders into one run.
pub fn merge(dirs: &[PathBuf]) -> Result<Merged, ReportError> {
    if dirs.is_empty() {
        return Err(ReportError::Merge("no shard folders given".into()));
    }
    let mut runs = dirs
        .iter()
        .map(|d| ShardRun::load(d))
        .collect::<Result<Vec<_>, _>>()?;
    runs.sort_by_key(|r| r.shard.index);
    let mut warnings = Vec::new();

    let first = &runs[0];
    for r in &runs[1..] {
        if identity(r) != identity(first) {
            return Err(ReportError::Merge(format!(
                "{} and {} are not shards of the same run: {} vs {}",
                first.dir.display(),
                r.dir.display(),
                identity(first),
                identity(r)
            )));
        }
        if r.thresholds() != first.thresholds() {
            return Err(ReportError::Merge(format!(
                "{} and {} were run with different thresholds (was the plan edited between shards?)",
                first.dir.display(),
                r.dir.display()
            )));
        }
        if r.files.view.environment.planrun_version != first.files.view.environment.planrun_version
        {
            warnings.push(format!(
                "{} ran planrun {} but {} ran {}",
                first.dir.display(),
                first.files.view.environment.planrun_version,
                r.dir.display(),
                r.files.view.environment.planrun_version
            ));
        }
    }
    for pair in runs.windows(2) {
        if pair[0].shard.index == pair[1].shard.index {
            return Err(ReportError::Merge(format!(
                "shard {} appears twice: {} and {}",
                pair[0].shard.shard(),
                pair[0].dir.display(),
                pair[1].dir.display()
            )));
        }
    }
    let count = first.shard.count;
    let present: BTreeSet<u32> = runs.iter().map(|r| r.shard.index).collect();
    let missing: Vec<u32> = (0..count).filter(|i| !present.contains(i)).collect();
    if !missing.is_empty() {
        warnings.push(format!(
            "{} of {count} shards merged; missing shard(s) {}: the merged report is partial",
            present.len(),
            join(&missing)
        ));
    }

    let threshold_text = first.thresholds();
    let mut specs = Vec::new();
    for (metric, expr) in &threshold_text {
        let parsed = expr
            .parse()
            .map_err(|e| ReportError::Merge(format!("threshold `{metric}: {expr}`: {e}")))?;
        specs.push(crate::plan::compile::ThresholdSpec {
            metric: metric.clone(),
            expr: parsed,
        });
    }
    let mut windows = crate::metrics::Windows::for_thresholds(&specs);
    if let Some(i) = &runs[0].info {
        windows.groups = i.scenario_groups.clone();
    }
    // Exact sums.
    let mut rec = Recorder::default();
    for r in &runs {
        let mut part = Recorder::default();
        for (metric, text) in &r.files.view.histograms {
            let h = super::hist::decode(text).map_err(|source| ReportError::Histogram {
                dir: r.dir.clone(),
                what: format!("histogram `{metric}`"),
                source,
            })?;
            part.histograms.insert(metric.clone(), widen(&h)?);
        }
        if let Some(text) = &r.shard.send_lag {
            let h = super::hist::decode(text).map_err(|source| ReportError::Histogram {
                dir: r.dir.clone(),
                what: "send lag histogram".into(),
                source,
            })?;
            part.send_lag = Some(widen(&h)?);
        }
        part.checks = r.shard.checks.clone();
        part.http = r.shard.http;
        part.windows = windows.clone();
        for it in &r.files.run.iterations {
            part.iteration(it.to_record());
        }
        rec.merge(part);
    }
    let mut declared = first.metrics();
    for r in &runs[1..] {
        for m in r.metrics() {
            if !declared.contains(&m) {
                declared.push(m);
            }
        }
    }
    let elapsed_s = runs
        .iter()
        .map(|r| r.files.view.elapsed_s)
        .fold(0.0, f64::max);
    let aborted = runs.iter().any(|r| r.files.view.aborted);
    let summary = Summary::new(
        rec,
        declared.clone(),
        std::time::Duration::from_secs_f64(elapsed_s.max(0.0)),
        aborted,
    );
    let results = crate::judge::thresholds::evaluate(&summary, &specs);

    let starts: Vec<time::OffsetDateTime> = runs.iter().filter_map(ShardRun::started).collect();
    let earliest = runs
        .iter()
        .map(|r| r.files.view.started_at.clone())
        .min_by_key(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_default();
    let skew = match (starts.iter().min(), starts.iter().max()) {
        (Some(a), Some(b)) => ((*b - *a).as_seconds_f64() * 1000.0).round() / 1000.0,
        _ => 0.0,
    };
    let protocol = first
        .info
        .as_ref()
        .map(|i| i.protocol.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            if first.files.view.http.is_some() {
                crate::plan::model::ProtocolKind::HttpChunks
                    .name()
                    .to_string()
            } else {
                String::new()
            }
        });
    // Shards against `builtin` each ran their own agent on its own port: say `builtin`.
    let targets: BTreeSet<&str> = runs.iter().map(|r| r.files.view.target.as_str()).collect();
    let target = match (targets.len(), &first.info) {
        (1, _) | (_, None) => first.files.view.target.clone(),
        (_, Some(i)) => i.target.clone(),
    };
    let info = RunInfo {
        plan: first.plan().to_string(),
        description: first.files.view.description.clone(),
        plan_file: first.files.view.plan_file.clone(),
        target,
        protocol,
        started_at: earliest,
        users: first.shard.total_users,
        seed: first.files.view.seed,
        metrics: declared,
        thresholds: threshold_text,
        planrun_version: env!("CARGO_PKG_VERSION").to_string(),
        shard: None,
        scenario_groups: first
            .info
            .as_ref()
            .map(|i| i.scenario_groups.clone())
            .unwrap_or_default(),
    };
    let mut rep = RunReport::from_summary(&info, &summary, results);
    let peak = |f: fn(&RunReport) -> Option<f64>| {
        runs.iter()
            .filter_map(|r| f(&r.files.view))
            .reduce(f64::max)
    };
    rep.generator.cpu_max_pct = peak(|v| v.generator.cpu_max_pct);
    rep.generator.rss_max_mb = peak(|v| v.generator.rss_max_mb);

    // Shards stopped early: a cap (--max-duration) is judged on what was measured; any
    // other stop means the merged run did not finish.
    let stopped: Vec<&ShardRun> = runs.iter().filter(|r| r.files.view.aborted).collect();
    if !stopped.is_empty() {
        let hard = stopped
            .iter()
            .find(|r| r.files.view.stopped_by.as_deref() != Some("max_duration"));
        let shown = hard.copied().unwrap_or(stopped[0]);
        rep.stopped_by = shown.files.view.stopped_by.clone();
        rep.stop_reason = Some(format!(
            "shard {} {}",
            shown.shard.shard(),
            shown
                .files
                .view
                .stop_reason
                .as_deref()
                .unwrap_or("was stopped before its end")
        ));
        if hard.is_none() {
            rep.passed = crate::judge::thresholds::all_passed(&rep.thresholds);
        }
    }
    let rebuilt: Vec<u32> = runs
        .iter()
        .filter(|r| r.files.view.partial)
        .map(|r| r.shard.index)
        .collect();
    if !missing.is_empty() || !rebuilt.is_empty() {
        rep.partial = true;
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!(
                "merged {} of {count} shards; missing shard(s) {}",
                present.len(),
                join(&missing)
            ));
        }
        if !rebuilt.is_empty() {
            why.push(format!(
                "shard(s) {} did not finish and were rebuilt from their timeline.csv",
                join(&rebuilt)
            ));
        }
        rep.stop_reason = Some(why.join("; "));
    }
    // A shard measured by an overloaded generator makes the merged run inconclusive too (each
    // shard was judged against its own limit and `on_overload`).
    rep.generator.overloaded = runs.iter().any(|r| r.files.view.generator.overloaded);
    rep.generator.on_overload = first.files.view.generator.on_overload.clone();
    rep.generator.warnings = runs
        .iter()
        .flat_map(|r| {
            let shard = r.shard.shard();
            r.files
                .view
                .generator
                .warnings
                .iter()
                .map(move |w| format!("shard {shard}: {w}"))
        })
        .collect();
    if runs.iter().any(|r| r.files.view.inconclusive) {
        rep.inconclusive = true;
        rep.passed = false;
    }
    rep.merged = Some(MergeInfo {
        shard_count: count,
        shards: present.into_iter().collect(),
        missing,
        sources: runs.iter().map(|r| r.dir.display().to_string()).collect(),
        start_skew_s: skew,
    });

    let mut iterations: Vec<timeline::TimelineIteration> = runs
        .into_iter()
        .flat_map(|r| r.files.run.iterations)
        .collect();
    iterations.sort_by_key(|i| (i.start_us, i.user, i.iteration));
    let run = RunData {
        version: timeline::RUN_DATA_VERSION,
        iterations,
        resources: None,
    };
    Ok(Merged {
        files: RunFiles::new(&rep, run)?,
        warnings,
    })
}

/// A decoded histogram copied into an auto-resizing one of the same precision (a decoded
/// histogram keeps the bounds it was written with, so adding a wider one into it would fail).
fn widen(h: &hdrhistogram::Histogram<u64>) -> Result<hdrhistogram::Histogram<u64>, ReportError> {
    let mut out = hdrhistogram::Histogram::<u64>::new(h.sigfig())
        .map_err(|e| ReportError::Merge(format!("bad histogram precision: {e:?}")))?;
    out.add(h)
        .map_err(|e| ReportError::Merge(format!("cannot merge histogram: {e:?}")))?;
    Ok(out)
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Write a merged run's reports to `out` (like a run's: `metrics.json`, `run.json`,
/// `timeline.csv`, `junit.xml`, `summary.md`, `report.html`, as `outputs` selects). Unlike a
/// partial single run, a partial merge still writes its (merged) `timeline.csv`.
pub fn write(
    files: &RunFiles,
    outputs: &super::Outputs,
    out: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = super::write_outputs(files, outputs, out, "")?;
    if files.view.partial && outputs.formats.contains(&ReportFormat::Csv) {
        let path = out.join(output_name("timeline.csv", ""));
        super::write_atomic(&path, timeline::csv(&files.run.iterations)?.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
