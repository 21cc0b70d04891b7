//! The console observer: the live progress line, notices on stderr, and each finished run's
//! summary on stdout.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use crate::runner::{FinishedRun, Notice, Observer, ProgressSnapshot};

/// Non-interactive stderr gets a plain progress line this often.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Prints what a run does, as the `planrun` command shows it.
pub struct Console {
    quiet: bool,
    /// An indicatif spinner on an interactive stderr.
    bar: Mutex<Option<indicatif::ProgressBar>>,
    /// Plain lines: the elapsed time the next one is due.
    next_plain: Mutex<Duration>,
    tty: bool,
}

impl Console {
    pub fn new(quiet: bool) -> Self {
        Console {
            quiet,
            bar: Mutex::new(None),
            next_plain: Mutex::new(PLAIN_EVERY),
            tty: std::io::stderr().is_terminal(),
        }
    }
}

/// The progress line's text.
fn progress_line(p: &ProgressSnapshot) -> String {
    let secs = p.elapsed.as_secs_f64();
    let done_n = p.iterations_done;
    let mut left: Option<f64> = p.duration.map(|d| (d.as_secs_f64() - secs).max(0.0));
    if let Some(total) = p.planned.filter(|_| done_n > 0) {
        let by_rate = secs * (total.saturating_sub(done_n)) as f64 / done_n as f64;
        left = Some(left.map_or(by_rate, |l| l.min(by_rate)));
    }
    let of = p.planned.map_or(String::new(), |t| format!("/{t}"));
    let p95 = p
        .rolling_p95
        .as_ref()
        .map_or(String::new(), |(name, v)| format!("  {name} p95 {v:.0}ms"));
    format!(
        "{:>5.0}s  users active {:>4}  iterations {done_n}{of} done, {} failed{p95}{}",
        secs,
        p.active_users,
        p.iterations_failed,
        left.map_or(String::new(), |l| format!("  ~{l:.0}s left"))
    )
}

impl Observer for Console {
    fn notice(&self, notice: &Notice) {
        match notice {
            Notice::Info(m) if !self.quiet => eprintln!("planrun: {m}"),
            Notice::Info(_) => {}
            Notice::Warning(m) => eprintln!("planrun: {m}"),
            Notice::Stopping { text, quiet_hides } if !(self.quiet && *quiet_hides) => {
                eprintln!("\nplanrun: {text}");
            }
            Notice::Stopping { .. } => {}
        }
    }

    fn progress(&self, p: &ProgressSnapshot) {
        if self.quiet {
            return;
        }
        if self.tty {
            let Ok(mut bar) = self.bar.lock() else { return };
            let bar = bar.get_or_insert_with(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
            bar.set_message(progress_line(p));
        } else {
            let Ok(mut next) = self.next_plain.lock() else {
                return;
            };
            if p.elapsed >= *next {
                eprintln!("  {}", progress_line(p));
                while *next <= p.elapsed {
                    *next += PLAIN_EVERY;
                }
            }
        }
    }

    fn load_ended(&self) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(b) = bar.take()
        {
            b.finish_and_clear();
        }
        if let Ok(mut next) = self.next_plain.lock() {
            *next = PLAIN_EVERY;
        }
    }

    fn run_finished(&self, run: &FinishedRun, out: &std::path::Path) {
        let rep = &run.report;
        let mut stdout = std::io::stdout().lock();
        if !self.quiet {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let _ = crate::report::console_summary_color(rep, &mut stdout, color);
        } else {
            let verdict = if rep.inconclusive {
                "INCONCLUSIVE"
            } else if rep.passed {
                "PASSED"
            } else {
                "FAILED"
            };
            let shard = rep
                .shard
                .as_ref()
                .map_or(String::new(), |s| format!(" (shard {})", s.shard()));
            let _ = writeln!(stdout, "{verdict}: {}{shard}", rep.plan);
            if let Some(r) = &rep.stop_reason {
                let _ = writeln!(stdout, "  {r}");
            }
            if rep.inconclusive {
                for w in &rep.generator.warnings {
                    let _ = writeln!(stdout, "  planrun was the bottleneck: {w}");
                }
            }
            for t in rep.thresholds.iter().filter(|t| !t.passed) {
                let _ = writeln!(
                    stdout,
                    "  FAIL {} {} (observed {})",
                    t.metric, t.expression, t.observed_text
                );
            }
        }
        if let Some(md) = &run.comparison {
            let _ = writeln!(stdout, "\n{md}");
        }
        match &run.written {
            Ok(_) => {
                let _ = writeln!(stdout, "report: {}", out.display());
            }
            Err(e) => eprintln!("planrun: {e}"),
        }
        let _ = stdout.flush();
    }
}
