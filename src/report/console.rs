//! The console summary: plain text (colour only for PASS/FAIL and warnings, on a terminal),
//! formatted from the contract alone.

use std::io::Write;

use super::arrivals;
use super::snippet::{PlanSource, indent};
use crate::contract::RunReport;

/// The console summary (plain text; no colour so it reads the same in CI logs).
pub fn console_summary(report: &RunReport, w: &mut dyn Write) -> std::io::Result<()> {
    console_summary_color(report, w, false)
}

/// The console summary, with PASS/FAIL in colour when `color` (a terminal without NO_COLOR).
pub fn console_summary_color(
    report: &RunReport,
    w: &mut dyn Write,
    color: bool,
) -> std::io::Result<()> {
    let paint = |text: &str, code: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let it = &report.iterations;
    writeln!(w)?;
    let part = match (&report.shard, &report.merged) {
        (Some(s), _) => format!(" (shard {} of {} users)", s.shard(), s.total_users),
        (_, Some(m)) => format!(
            " (merged from {} of {} shards)",
            m.shards.len(),
            m.shard_count
        ),
        _ => String::new(),
    };
    let load = match report.arrivals.as_ref().filter(|a| a.max_users.is_some()) {
        Some(a) => arrivals::open_load(a),
        None => format!("{} users", report.users),
    };
    writeln!(
        w,
        "planrun {} — {load}{part} against {} in {:.1}s",
        report.plan, report.target, report.elapsed_s
    )?;
    let rate = report
        .success_rate
        .map_or("n/a".to_string(), |r| format!("{:.1}%", r * 100.0));
    writeln!(
        w,
        "iterations: {} total, {} succeeded, {} failed (success {rate}){}",
        it.total,
        it.succeeded,
        it.failed,
        if report.aborted_iterations > 0 {
            format!(", {} stopped", report.aborted_iterations)
        } else {
            String::new()
        }
    )?;
    if !report.errors.is_empty() {
        let parts: Vec<String> = report
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        writeln!(w, "failures: {}", parts.join(", "))?;
        if let Some(f) = report.failures.first() {
            writeln!(
                w,
                "  first: user {} iteration {} `{}` {}: {}",
                f.user, f.iteration, f.scenario, f.step, f.message
            )?;
            if let Some(snippet) = PlanSource::of(report).and_then(|p| p.snippet(f)) {
                write!(w, "{}", indent(&snippet, "  "))?;
            }
        }
    }
    if let Some(a) = &report.arrivals {
        arrivals::console(a, w)?;
    }
    if let Some(h) = &report.http {
        writeln!(
            w,
            "http chunks: {} answered in {} calls ({:.1} s of audio): {:.2} chunks/s, {:.2} audio-s/s, {:.2} calls/s; per call {:.2} chunks/s ({:.2}x real time); concurrent efficiency {:.2} ({:.1} s processing / {:.1} s wall)",
            h.chunks,
            h.calls,
            h.audio_s,
            h.chunks_per_s,
            h.audio_s_per_s,
            h.calls_per_s,
            h.call_chunks_per_s,
            h.call_audio_s_per_s,
            h.concurrent_efficiency,
            h.processing_s,
            report.elapsed_s
        )?;
    }
    writeln!(w)?;
    let width = report
        .metric_order
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        w,
        "{:width$}  {:>6}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
        "metric", "count", "min", "mean", "median", "p95", "p99", "max"
    )?;
    for name in &report.metric_order {
        let Some(m) = report.metrics.get(name) else {
            continue;
        };
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        writeln!(
            w,
            "{name:width$}  {:>6}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
            m.count,
            f(m.min_ms),
            f(m.mean_ms),
            f(m.p50_ms),
            f(m.p95_ms),
            f(m.p99_ms),
            f(m.max_ms)
        )?;
    }
    writeln!(w, "(milliseconds)")?;
    console_breakdown(report, w, width)?;
    console_health(report, w, color)?;
    if !report.thresholds.is_empty() {
        writeln!(w)?;
        writeln!(w, "thresholds:")?;
        for t in &report.thresholds {
            writeln!(
                w,
                "  {} {} {}  (observed {}){}",
                if t.passed {
                    paint("PASS", "32")
                } else {
                    paint("FAIL", "1;31")
                },
                t.metric,
                t.expression,
                t.observed_text,
                if t.implicit {
                    "  [implicit: every open-model run; set your own dropped_arrivals threshold to change it]"
                } else {
                    ""
                }
            )?;
        }
    }
    writeln!(w)?;
    let failed: Vec<String> = report
        .thresholds
        .iter()
        .filter(|t| !t.passed)
        .map(|t| format!("{} {}", t.metric, t.expression))
        .collect();
    if report.partial {
        writeln!(
            w,
            "PARTIAL: {}",
            report
                .stop_reason
                .as_deref()
                .unwrap_or("rebuilt from the timeline")
        )?;
    }
    let capped = report.stopped_by.as_deref() == Some("max_duration");
    if capped {
        writeln!(
            w,
            "CAPPED: {}; judged on what was measured",
            report.stop_reason.as_deref().unwrap_or("--max-duration")
        )?;
    }
    if report.inconclusive && (capped || !report.aborted) {
        writeln!(
            w,
            "{}: planrun itself was the bottleneck, so these measurements cannot be trusted ({}); \
             thresholds: {} of {} met. Give planrun more CPU or less load, or accept it with \
             `generator: {{on_overload: warn}}` / --on-overload warn",
            paint("INCONCLUSIVE", "1;33"),
            report.generator.warnings.first().map_or("", String::as_str),
            report.thresholds.len() - failed.len(),
            report.thresholds.len(),
        )?;
        return Ok(());
    }
    if report.aborted && !capped {
        match &report.stop_reason {
            Some(r) if !report.partial => {
                writeln!(w, "STOPPED before the end ({r}): results are partial")?
            }
            _ => writeln!(w, "STOPPED before the end: results are partial")?,
        }
    } else if failed.is_empty() {
        writeln!(
            w,
            "{}: all {} thresholds met",
            paint("PASSED", "1;32"),
            report.thresholds.len()
        )?;
    } else {
        writeln!(
            w,
            "{}: {} of {} thresholds not met: {}",
            paint("FAILED", "1;31"),
            failed.len(),
            report.thresholds.len(),
            failed.join("; ")
        )?;
    }
    Ok(())
}

/// The console lines: the generator's delays, the latencies from the actual end, and a
/// warning per figure over its limit.
pub fn console_health(
    report: &RunReport,
    w: &mut dyn std::io::Write,
    color: bool,
) -> std::io::Result<()> {
    let g = &report.generator;
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    if g.send_lag_p99_ms.is_some() || g.event_loop_delay_p99_ms.is_some() {
        writeln!(
            w,
            "generator: pacing lag p99 {} ms, event-loop delay p99 {} ms, speech-end lag p99 {} ms, CPU max {}%, RSS max {} MiB",
            f(g.send_lag_p99_ms),
            f(g.event_loop_delay_p99_ms),
            f(g.speech_end_lag_p99_ms),
            f(g.cpu_max_pct),
            f(g.rss_max_mb),
        )?;
    }
    for (name, m) in &g.from_actual_end {
        writeln!(
            w,
            "  {name} from the actual end of speech: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1} ms",
            m.p50_ms, m.p95_ms, m.p99_ms, m.max_ms
        )?;
    }
    if g.overloaded && g.on_overload.as_deref() == Some("warn") {
        writeln!(
            w,
            "generator overload accepted (on_overload: warn): the verdict below is the thresholds'"
        )?;
    }
    for warning in &g.warnings {
        let text = format!("WARNING: planrun was the bottleneck: {warning}");
        if color {
            writeln!(w, "\x1b[1;33m{text}\x1b[0m")?;
        } else {
            writeln!(w, "{text}")?;
        }
    }
    Ok(())
}

/// The per-scenario / per-tag breakdown (plans with several scenarios or tags).
fn console_breakdown(report: &RunReport, w: &mut dyn Write, width: usize) -> std::io::Result<()> {
    if report.breakdown.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    writeln!(w, "by scenario and tag:")?;
    for g in &report.breakdown {
        let counts = match &g.iterations {
            Some(c) => format!(
                " — {} iterations, {} succeeded, {} failed{}",
                c.total,
                c.succeeded,
                c.failed,
                g.success_rate
                    .map_or(String::new(), |r| format!(" (success {:.1}%)", r * 100.0))
            ),
            None => String::new(),
        };
        writeln!(w, "  {}{counts}", g.group)?;
        for m in &g.metrics {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            let s = &m.stats;
            writeln!(
                w,
                "    {:width$}  {:>6}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
                m.metric,
                s.count,
                f(s.min_ms),
                f(s.mean_ms),
                f(s.p50_ms),
                f(s.p95_ms),
                f(s.p99_ms),
                f(s.max_ms)
            )?;
        }
    }
    Ok(())
}
