//! A long run's in-memory state stays bounded: the recorder and the live view the abort
//! monitor judges hold counts, a bounded failure sample and per-step window series — never the
//! iterations — so their heap does not grow with the number of iterations.
//!
//! One test in this binary on purpose: it counts the live heap bytes of the whole process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use planrun::metrics::outcomes::FAILURE_SAMPLES;
use planrun::metrics::{Failure, FailureClass, IterationRecord, Marker, Recorder, Sample, Summary};
use planrun::plan::compile::ThresholdSpec;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Iteration `i` of a steady run that cycles over one minute of run time: a ttfa sample, a
/// marker, and every third call a failure whose message is different each time (the worst
/// case for a failure sample).
fn record(i: u64) -> IterationRecord {
    let at_us = (i % 60_000) * 1_000;
    IterationRecord {
        user: (i % 2_000) as u32,
        iteration: i / 2_000,
        scenario: format!("scenario_{}", i % 3),
        start_us: at_us,
        end_us: at_us + 900,
        failure: i.is_multiple_of(3).then(|| Failure {
            class: if i.is_multiple_of(2) {
                FailureClass::Timeout
            } else {
                FailureClass::ServerError
            },
            step: "step 3 (line 17)".into(),
            message: format!("no first_audio within {i} ms"),
        }),
        markers: vec![Marker {
            kind: "first_audio".into(),
            at_us: at_us + 500,
            detail: String::new(),
        }],
        samples: vec![Sample {
            metric: "ttfa".into(),
            at_us: at_us + 500,
            value_ms: 200.0 + (i % 997) as f64 * 0.731,
        }],
    }
}

fn specs() -> Vec<ThresholdSpec> {
    [
        ("ttfa", "p95 < 1s over 10s"),
        ("ttfa", "p99 < 2s"),
        ("success_rate", "> 0.5 over 4s"),
    ]
    .iter()
    .map(|(m, e)| ThresholdSpec {
        metric: (*m).into(),
        expr: e.parse().unwrap(),
    })
    .collect()
}

#[test]
fn a_long_runs_recorder_and_live_view_stay_bounded() {
    let specs = specs();
    let mut rec = Recorder {
        windows: planrun::metrics::Windows::for_thresholds(&specs),
        ..Recorder::default()
    };
    // The live view of the abort monitor, fed as the timeline stream feeds it.
    let live = Arc::new(Mutex::new(Summary::new(
        Recorder {
            windows: planrun::metrics::Windows::for_thresholds(&specs),
            ..Recorder::default()
        },
        vec!["ttfa".into()],
        Duration::from_secs(60),
        false,
    )));
    let feed = |rec: &mut Recorder, from: u64, to: u64| {
        for i in from..to {
            let r = record(i);
            {
                let mut s = live.lock().unwrap();
                for sm in &r.samples {
                    s.recorder.record(
                        &sm.metric,
                        Duration::from_micros((sm.value_ms * 1000.0) as u64),
                    );
                }
                s.recorder.iteration(r.clone());
                if i.is_multiple_of(5_000) {
                    // The monitor judges once a second; its judging allocates nothing it keeps.
                    let _ = planrun::judge::thresholds::evaluate(&s, &specs);
                }
            }
            rec.iteration(r);
        }
    };
    // Warm up: every series slot, histogram and scenario exists after the first minute
    // (60,000 iterations of 1 ms of run time each).
    feed(&mut rec, 0, 60_000);
    let before = LIVE.load(Ordering::Relaxed);
    feed(&mut rec, 60_000, 120_000);
    let after = LIVE.load(Ordering::Relaxed);
    let grown = after - before;
    // 60,000 more iterations: kept as records (as before) they would be over 15 MB.
    assert!(
        grown < 256 * 1024,
        "heap grew {grown} bytes over 60,000 iterations (from {before} to {after})"
    );
    for o in [&rec.outcomes, &live.lock().unwrap().recorder.outcomes] {
        assert_eq!(o.len(), 120_000);
        assert!(
            o.failures.held() <= 2 * FAILURE_SAMPLES,
            "{}",
            o.failures.held()
        );
        // Distinct kinds first: both classes are in the sample.
        let sample = o.failures.sample(FAILURE_SAMPLES);
        assert_eq!(sample.len(), FAILURE_SAMPLES);
        assert!(
            sample
                .iter()
                .any(|f| f.failure.class == FailureClass::Timeout)
        );
        assert!(
            sample
                .iter()
                .any(|f| f.failure.class == FailureClass::ServerError)
        );
    }
    // Window series: one slot per step of run time (60 s: 24 slots at 2.5 s, 60 at 1 s), not
    // per iteration.
    assert!(
        rec.windows.slots() <= 24 + 60 + 2,
        "{}",
        rec.windows.slots()
    );
    assert_eq!(rec.windows, live.lock().unwrap().recorder.windows);
    let s = live.lock().unwrap().clone();
    let results = planrun::judge::thresholds::evaluate(&s, &specs);
    assert!(results.iter().all(|r| r.observed.is_some()), "{results:?}");
    assert_eq!(s.iterations().total, 120_000);
    assert_eq!(s.errors().values().sum::<u64>(), 40_000);
}
