//! Open-model load (`arrival_rate`, `max_users`) and closed ramping `stages`: real runs
//! against the built-in agent, small and short, plus the plan errors of the load shape.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use planrun::engine::{self, RunOutcome};
use planrun::metrics::IterationRecord;
use planrun::metrics::progress::Progress;
use planrun::plan;

mod common;
use common::{json, read, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_planrun");

/// A plan whose every call connects to the built-in agent and holds the line for `call`.
fn write(dir: &Path, load: &str, call: &str) -> PathBuf {
    let text = format!(
        "name: open
target:
  url: builtin
load:
{load}
scenarios:
  - name: call
    steps:
      - wait: {call}
"
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn run(path: &Path) -> Ran {
    let compiled = plan::compile::compile(&plan::load(path).unwrap()).unwrap();
    run_collecting(&compiled).await
}

/// A run and its iterations, taken from the stream the timeline is written from (a run keeps
/// no iteration in memory).
pub struct Ran {
    pub outcome: RunOutcome,
    pub iterations: Vec<planrun::metrics::IterationRecord>,
}

impl std::ops::Deref for Ran {
    type Target = RunOutcome;
    fn deref(&self) -> &RunOutcome {
        &self.outcome
    }
}

async fn run_collecting(compiled: &plan::CompiledPlan) -> Ran {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let (sink, records) = std::sync::mpsc::channel();
    let outcome = engine::run_observed(compiled, rx, Arc::new(Progress::default()), Some(sink))
        .await
        .unwrap();
    Ran {
        outcome,
        iterations: records.try_iter().collect(),
    }
}

/// Calls (start, end) in ms, by user.
fn spans(its: &[IterationRecord]) -> Vec<(u32, f64, f64)> {
    its.iter()
        .map(|r| (r.user, r.start_us as f64 / 1e3, r.end_us as f64 / 1e3))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_rate_starts_the_scheduled_calls_on_time() {
    let dir = temp_dir("open-rate");
    let path = write(
        &dir,
        "  arrival_rate: 10/s\n  duration: 2s\n  max_users: 50",
        "300ms",
    );
    let out = run(&path).await;
    let s = &out.summary;
    let a = s.recorder.arrivals.as_ref().expect("arrival stats");
    // The uniform schedule of 10/s over 2 s: arrivals at 0, 100, ..., 1900 ms.
    assert_eq!(a.scheduled, 20);
    assert_eq!(a.started, 20);
    assert!(a.dropped.is_empty(), "{:?}", a.dropped);
    assert_eq!(s.iterations().total, 20);
    assert_eq!(s.iterations().failed, 0, "{:?}", s.errors());
    let mut users: Vec<u32> = out.iterations.iter().map(|r| r.user).collect();
    users.sort_unstable();
    assert_eq!(users, (0..20).collect::<Vec<u32>>());
    // Each call starts at its scheduled instant (arrival k at k × 100 ms), never before it,
    // and any start past the tolerance is counted as late.
    let mut late_seen = 0;
    for (user, start, end) in spans(&out.iterations) {
        let due = f64::from(user) * 100.0;
        assert!(
            start >= due - 1.0,
            "arrival {user} started early: {start} < {due}"
        );
        assert!(start < due + 250.0, "arrival {user} at {start}, due {due}");
        assert!(end - start >= 295.0, "call {user} lasted {}", end - start);
        if start - due > 60.0 {
            late_seen += 1;
        }
    }
    assert!(
        a.late_starts >= late_seen,
        "{} < {late_seen}",
        a.late_starts
    );
    let lag = a.start_lag.as_ref().unwrap();
    assert_eq!(lag.len(), 20);
    assert!(
        lag.value_at_quantile(0.5) < 50_000,
        "median lag {}µs",
        lag.value_at_quantile(0.5)
    );
    // The run lasts the schedule plus the last call.
    let el = s.elapsed.as_secs_f64();
    assert!((2.1..3.5).contains(&el), "elapsed {el}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_users_cap_drops_arrivals_and_counts_them() {
    let dir = temp_dir("open-cap");
    // 10/s, calls of ~400 ms, at most 3 at once: of every 5 arrivals (500 ms) 3 start and 2
    // find the cap reached, so 8 of the 20 are dropped.
    let path = write(
        &dir,
        "  arrival_rate: 10/s\n  duration: 2s\n  max_users: 3",
        "400ms",
    );
    let out = run(&path).await;
    let s = &out.summary;
    let a = s.recorder.arrivals.as_ref().expect("arrival stats");
    assert_eq!(a.scheduled, 20);
    assert_eq!(a.started + a.dropped.len() as u64, 20);
    assert_eq!(s.iterations().total, a.started);
    assert!(
        (7..=9).contains(&a.dropped.len()),
        "dropped {:?}",
        a.dropped.iter().map(|d| d.arrival).collect::<Vec<_>>()
    );
    let calls = spans(&out.iterations);
    let active_at = |t: f64| calls.iter().filter(|(_, b, e)| *b <= t && t < *e).count();
    // A dropped arrival found 3 calls in flight at its instant; it never ran later.
    for d in &a.dropped {
        let t = d.at_us as f64 / 1e3;
        assert_eq!(d.reason.as_str(), "max_users");
        assert!(
            active_at(t + 5.0) >= 3 || active_at(t - 5.0) >= 3,
            "arrival {} dropped at {t} ms with {} active",
            d.arrival,
            active_at(t)
        );
        assert!(calls.iter().all(|(u, _, _)| u64::from(*u) != d.arrival));
    }
    // Never more than the cap at once.
    for t in (0..2600).step_by(10) {
        assert!(
            active_at(f64::from(t)) <= 3,
            "{} active at {t} ms",
            active_at(f64::from(t))
        );
    }
    // Started calls are on schedule (not delayed until a slot freed).
    for (user, start, _) in &calls {
        let due = f64::from(*user) * 100.0;
        assert!(
            start - due < 250.0,
            "arrival {user} started at {start}, due {due}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_ramp_users_up_and_down() {
    let dir = temp_dir("open-stages");
    let path = write(
        &dir,
        "  stages: [{to: 4, over: 2s}, {hold: 1s}, {to: 0, over: 2s}]",
        "300ms",
    );
    let out = run(&path).await;
    let s = &out.summary;
    let a = s.recorder.arrivals.as_ref().expect("stage stats");
    assert_eq!(a.scheduled, 4);
    assert_eq!(a.started, 4);
    assert_eq!(s.iterations().failed, 0, "{:?}", s.errors());
    let calls = spans(&out.iterations);
    // Each user's first start and last end.
    let life = |u: u32| {
        let mine: Vec<_> = calls.iter().filter(|(x, _, _)| *x == u).collect();
        assert!(!mine.is_empty(), "user {u} never called");
        let first = mine.iter().map(|c| c.1).fold(f64::MAX, f64::min);
        let last = mine.iter().map(|c| c.2).fold(0.0, f64::max);
        (first, last)
    };
    let mut users: Vec<u32> = calls.iter().map(|c| c.0).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users, vec![0, 1, 2, 3]);
    // Up: user n starts at n × 500 ms. Down (from 3 s): the newest user leaves first, one
    // every 500 ms, each finishing its call (≤ ~300 ms) before leaving; the last at 5 s.
    for u in 0..4u32 {
        let (first, last) = life(u);
        let due = f64::from(u) * 500.0;
        assert!(
            first >= due - 1.0 && first < due + 200.0,
            "user {u} started {first}"
        );
        let asked = 3000.0 + f64::from(4 - u) * 500.0;
        assert!(
            last <= asked + 450.0,
            "user {u} ended {last}, asked to leave at {asked}"
        );
        assert!(
            last >= asked - 400.0,
            "user {u} left early: {last} < {asked}"
        );
    }
    let active_at = |t: f64| {
        (0..4u32)
            .filter(|u| {
                let (f, l) = life(*u);
                f <= t && t < l
            })
            .count()
    };
    assert_eq!(active_at(250.0), 1);
    assert_eq!(active_at(1250.0), 3);
    assert_eq!(active_at(2500.0), 4);
    assert_eq!(active_at(5600.0), 0);
    let el = s.elapsed.as_secs_f64();
    assert!((5.0..6.2).contains(&el), "elapsed {el}");
}

#[test]
fn cli_reports_dropped_arrivals_everywhere() {
    let dir = temp_dir("open-cli");
    // 5/s for 1 s, calls of ~500 ms, one at a time: arrivals at 0, 200, ..., 800 ms; the
    // ones at 200 and 400 find the line busy, 600 starts, 800 is dropped.
    let path = write(
        &dir,
        "  arrival_rate: 300/m\n  duration: 1s\n  max_users: 1",
        "500ms",
    );
    let out_dir = dir.join("out");
    let out = Command::new(BIN)
        .args([
            "run",
            path.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            // Not an overload test: a busy CI machine must not make it inconclusive.
            "--on-overload",
            "warn",
        ])
        .output()
        .unwrap();
    let console =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // The implicit `dropped_arrivals: rate <= 0` check fails the run.
    assert_eq!(out.status.code(), Some(1), "{console}");
    assert!(
        console.contains("FAIL dropped_arrivals rate <= 0  (observed"),
        "{console}"
    );
    let m = json(&out_dir.join("metrics.json"));
    let a = &m["arrivals"];
    assert_eq!(a["scheduled"], 5, "{a}");
    let dropped = a["dropped_arrivals"].as_u64().unwrap();
    assert!((2..=4).contains(&dropped), "{a}");
    assert_eq!(a["started"].as_u64().unwrap() + dropped, 5);
    assert_eq!(a["dropped_by_reason"]["max_users"].as_u64(), Some(dropped));
    assert_eq!(a["dropped"].as_array().unwrap().len() as u64, dropped);
    assert_eq!(a["dropped"][0]["arrival"], 1, "{a}");
    assert_eq!(a["dropped"][0]["at_ms"], 200.0, "{a}");
    assert_eq!(a["late_tolerance_ms"], 50.0);
    assert!(a["start_lag_p99_ms"].as_f64().is_some());
    assert_eq!(m["iterations"]["total"].as_u64().unwrap(), 5 - dropped);
    assert!(
        console.contains(&format!(
            "5 scheduled, {} started, {dropped} dropped ({dropped} max_users)",
            5 - dropped
        )),
        "{console}"
    );
    let md = read(&out_dir.join("summary.md"));
    assert!(md.contains("## Arrivals"), "{md}");
    assert!(
        md.contains(&format!(
            "| Dropped arrivals | {dropped} ({dropped} max_users), rate {} of offered |",
            dropped as f64 / 5.0
        )),
        "{md}"
    );
    let csv = read(&out_dir.join("timeline.csv"));
    let rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(",arrival_dropped,"))
        .collect();
    assert_eq!(rows.len() as u64, dropped, "{csv}");
    assert_eq!(rows[0], "200.000,1,0,,arrival_dropped,max_users");
    // The report re-renders from the folder and keeps the drop rows.
    let again = Command::new(BIN)
        .args(["report", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let csv = read(&out_dir.join("timeline.csv"));
    assert_eq!(csv.matches(",arrival_dropped,").count() as u64, dropped);
    let _ = std::fs::remove_dir_all(&dir);
}

fn plan_err(load: &str) -> String {
    let text = format!(
        "name: t\ntarget:\n  url: builtin\nload:\n{load}\nscenarios:\n  - name: a\n    steps:\n      - wait: 1s\n"
    );
    match plan::parse_str(&text, Path::new("p.yaml")) {
        Ok(_) => panic!("should not validate:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn load_shape_conflicts_are_plan_errors_with_positions() {
    let e = plan_err("  users: 3\n  arrival_rate: 5/s\n  duration: 2s");
    assert!(e.contains("p.yaml:5:10"), "{e}");
    assert!(
        e.contains("`users` cannot be used with `arrival_rate`"),
        "{e}"
    );

    let e = plan_err("  stages:\n    - {to: 3, over: 1s}\n    - {to: 3, hold: 2s}");
    assert!(e.contains("p.yaml:7:"), "{e}");
    assert!(
        e.contains("either changes (`to`, `over`) or holds (`hold`), not both"),
        "{e}"
    );

    let e = plan_err("  arrival_rate: 0/s\n  duration: 2s");
    assert!(e.contains("p.yaml:5:17"), "{e}");
    assert!(e.contains("`arrival_rate` must be more than 0"), "{e}");

    let e = plan_err("  arrival_rate: 5/s\n  duration: 2s\n  max_users: 0");
    assert!(e.contains("p.yaml:7:14"), "{e}");
    assert!(e.contains("`max_users` must be 1..=100000, found 0"), "{e}");

    let e = plan_err("  arrival_rate: 5/s");
    assert!(e.contains("needs `duration`"), "{e}");

    let e = plan_err("  arrival_rate: 5/s\n  duration: 2s\n  iterations: 3");
    assert!(
        e.contains("`iterations` cannot be used with `arrival_rate`"),
        "{e}"
    );

    let e = plan_err("  users: 2\n  max_users: 4");
    assert!(e.contains("`max_users` cannot be used with `users`"), "{e}");

    let e = plan_err("  stages: [{to: 3, over: 1s}]\n  duration: 10s");
    assert!(e.contains("`duration` cannot be used with `stages`"), "{e}");

    let e = plan_err("  stages: []");
    assert!(e.contains("`stages` is empty"), "{e}");

    let e = plan_err("  arrival_rate: 5 per second\n  duration: 2s");
    assert!(e.contains("not a rate"), "{e}");

    // Good shapes compile into their schedules.
    let ok = |load: &str| {
        let text = format!(
            "name: t\ntarget:\n  url: builtin\nload:\n{load}\nscenarios:\n  - name: a\n    steps:\n      - wait: 1s\n"
        );
        plan::compile::compile(&plan::parse_str(&text, Path::new("p.yaml")).unwrap()).unwrap()
    };
    let c = ok("  arrival_rate: 300/m\n  duration: 3s\n  arrivals: poisson");
    let spec = c.load.arrivals.unwrap();
    assert_eq!(spec.max_users, 1000);
    assert_eq!(spec.duration().as_secs(), 3);
    assert_eq!(c.load.duration.map(|d| d.as_secs()), Some(3));
    let c = ok("  arrival_stages: [{to: 10/s, over: 2s}, {hold: 1s}]\n  max_users: 7");
    let spec = c.load.arrivals.unwrap();
    assert_eq!((spec.max_users, spec.count()), (7, 20));
    let c = ok("  stages: [{to: 5, over: 1s}, {hold: 2s}, {to: 0, over: 1s}]");
    assert_eq!(c.load.users, 5);
    assert_eq!(c.load.duration.map(|d| d.as_secs()), Some(4));
    assert_eq!(c.load.iterations, None);
}
