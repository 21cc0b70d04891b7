//! The regression gate on seeded simulations: a slow tail that leaves the middle of the
//! distribution alone is caught, and runs with no change rarely raise a false alarm. The rates
//! printed here (`cargo test --test compare_gate -- --nocapture`) are the ones documented in
//! docs/reports-and-thresholds.md ("Comparing runs").

use hdrhistogram::Histogram;
use planrun::contract::IterationCounts;
use planrun::report::compare::{self, Comparison, Options, Verdict};
use planrun::report::{MetricReport, ReportView, hist};

/// SplitMix64: a seeded stream for the simulations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5DEE_CE66)
    }

    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Log-normal with this median (ms) and log-sd.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// A healthy agent: log-normal turn latency, median 400 ms, p95 ≈ 587 ms.
fn healthy(rng: &mut Rng) -> f64 {
    rng.lognormal(400.0, 0.233)
}

/// A slow call: ≈ 2 s.
fn slow(rng: &mut Rng) -> f64 {
    rng.lognormal(2000.0, 0.05)
}

/// A slow tail of random size: each call is slow with probability 6 %.
fn random_tail_run(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            if rng.uniform() < 0.06 {
                slow(&mut rng)
            } else {
                healthy(&mut rng)
            }
        })
        .collect()
}

/// `n` calls of the healthy agent from this seed.
fn healthy_run(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| healthy(&mut rng)).collect()
}

/// The same agent with a slow tail: 6 % of the calls take ≈ 2 s (p95 ≈ 1905 ms).
fn slow_tail_run(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let slow_calls = n * 6 / 100;
    (0..n)
        .map(|i| {
            if i < slow_calls {
                slow(&mut rng)
            } else {
                healthy(&mut rng)
            }
        })
        .collect()
}

fn histogram(values: &[f64]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for v in values {
        h.record((v * 1000.0) as u64).unwrap();
    }
    h
}

/// A metric's report, as a run computes it from its histogram.
fn report_of(h: &Histogram<u64>) -> MetricReport {
    let q = |p: f64| Some(h.value_at_quantile(p) as f64 / 1000.0);
    MetricReport {
        count: h.len(),
        min_ms: q(0.0),
        mean_ms: Some(h.mean() / 1000.0),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
        max_ms: q(1.0),
    }
}

/// A run as `compare` reads it back from metrics.json: one `ttfa` metric with its histogram.
fn run(name: &str, values: &[f64]) -> ReportView {
    let h = histogram(values);
    let mut r = ReportView {
        plan: name.into(),
        iterations: IterationCounts {
            total: values.len() as u64,
            succeeded: values.len() as u64,
            failed: 0,
        },
        success_rate: Some(1.0),
        metric_order: vec!["ttfa".into()],
        ..Default::default()
    };
    r.metrics.insert("ttfa".into(), report_of(&h));
    r.histograms
        .insert("ttfa".into(), hist::encode(&h).unwrap());
    r
}

fn ttfa(c: &Comparison) -> &compare::MetricDelta {
    &c.metrics[0]
}

/// The test alone: with no tolerance, any significant p95 change is a verdict.
const TEST_ONLY: Options = Options {
    tolerance: 0.0,
    alpha: 0.05,
};

#[test]
fn a_six_percent_slow_tail_is_a_regression() {
    let base = healthy_run(1, 300);
    let new = slow_tail_run(2, 300);
    let (b, n) = (run("base", &base), run("new", &new));
    let c = compare::compare(&b, &n, Options::default());
    let m = ttfa(&c);
    let (bp, np) = (m.base.p95_ms.unwrap(), m.new.p95_ms.unwrap());
    eprintln!(
        "slow tail: p50 {:.0} → {:.0} ms, p95 {bp:.0} → {np:.0} ms, {:?}",
        m.base.p50_ms.unwrap(),
        m.new.p50_ms.unwrap(),
        m.p95_test
    );
    assert!((550.0..650.0).contains(&bp) && (1800.0..2000.0).contains(&np));
    // What the gate used to test sees nothing: the middle of the distribution did not move.
    let mw = compare::mann_whitney(
        &hist::values(&b.histogram("ttfa").unwrap()),
        &hist::values(&n.histogram("ttfa").unwrap()),
    )
    .unwrap();
    assert!(mw.p > 0.05, "Mann–Whitney p {}", mw.p);
    // The p95 bootstrap does.
    assert_eq!(m.verdict, Verdict::Regressed, "{m:?}");
    assert!(
        m.p_value.unwrap() < 0.01 && m.p95_test.unwrap().low > 0.0,
        "{m:?}"
    );
    assert!(c.regressed());
    let md = compare::markdown(&c);
    assert!(
        md.contains("p95 bootstrap") && md.contains("❌ regressed"),
        "{md}"
    );
    // Reproducible: the same runs always give the same verdict and p.
    let again = compare::compare(&b, &n, Options::default());
    assert_eq!(ttfa(&again).p95_test, m.p95_test);
}

/// What `pairs` seeded (base, new) pairs of `n` calls each gave, as shares of the pairs.
struct Rates {
    /// The p95 bootstrap alone (no tolerance) flagged a change either way.
    test: f64,
    /// The gate as shipped (10 % tolerance) said regressed.
    gate: f64,
    /// The gate before (10 % tolerance and Mann–Whitney p < alpha) would have said regressed.
    old_gate: f64,
}

fn rates(
    pairs: u64,
    n: usize,
    base: fn(u64, usize) -> Vec<f64>,
    new: fn(u64, usize) -> Vec<f64>,
) -> Rates {
    let tolerance = Options::default().tolerance;
    let (mut flagged, mut regressed, mut old) = (0, 0, 0);
    for i in 0..pairs {
        // `compare` per metric, minus the base64 round trip of the histograms (slow unoptimised).
        let b = histogram(&base(1000 + 2 * i, n));
        let w = histogram(&new(1001 + 2 * i, n));
        let m = &compare::compare_metric(
            "ttfa".into(),
            report_of(&b),
            report_of(&w),
            Some(&b),
            Some(&w),
            TEST_ONLY,
        );
        if matches!(m.verdict, Verdict::Regressed | Verdict::Improved) {
            flagged += 1;
        }
        let (bp, np) = (m.base.p95_ms.unwrap(), m.new.p95_ms.unwrap());
        if m.verdict == Verdict::Regressed && np > bp * (1.0 + tolerance) {
            regressed += 1;
        }
        let mw = compare::mann_whitney(&hist::values(&b), &hist::values(&w));
        if np > bp * (1.0 + tolerance) && mw.is_some_and(|t| t.p < TEST_ONLY.alpha && t.z > 0.0) {
            old += 1;
        }
    }
    let share = |k: i32| f64::from(k) / pairs as f64;
    Rates {
        test: share(flagged),
        gate: share(regressed),
        old_gate: share(old),
    }
}

#[test]
fn the_slow_tail_is_caught_in_nearly_every_seeded_pair() {
    let r = rates(200, 300, healthy_run, slow_tail_run);
    eprintln!(
        "detection rate, 6% slow tail, 300 vs 300 calls, 200 pairs: gate {:.3} (Mann–Whitney gate {:.3})",
        r.gate, r.old_gate
    );
    assert!(r.gate >= 0.95, "{}", r.gate);
    assert!(r.old_gate < 0.5, "{}", r.old_gate);
}

#[test]
fn no_change_pairs_rarely_raise_a_false_alarm() {
    let alpha = TEST_ONLY.alpha;
    for (shape, draw) in [
        ("log-normal", healthy_run as fn(u64, usize) -> Vec<f64>),
        ("log-normal + 6% slow tail", slow_tail_run),
        (
            "log-normal + slow tail of Binomial(300, 6%) calls",
            random_tail_run,
        ),
    ] {
        let Rates { test, gate, .. } = rates(200, 300, draw, draw);
        eprintln!(
            "false alarms, {shape}, 300 vs 300 calls, 200 pairs: test {test:.3}, gate {gate:.3}"
        );
        assert!(test <= 2.0 * alpha, "{shape}: {test}");
        assert!(gate <= alpha, "{shape}: {gate}");
    }
}

#[test]
fn too_few_samples_are_never_significant() {
    // p95 has no distribution-free bound at alpha 0.05 below 72 samples a side.
    assert_eq!(compare::min_samples(0.95, 0.05), 72);
    let three_times = |v: Vec<f64>| v.into_iter().map(|x| 3.0 * x).collect::<Vec<_>>();
    let b = run("base", &healthy_run(5, 71));
    let n = run("new", &three_times(healthy_run(6, 71)));
    let m = compare::compare(&b, &n, Options::default());
    assert_eq!(ttfa(&m).verdict, Verdict::NotSignificant);
    assert!(ttfa(&m).p_value.is_none());
    let b = run("base", &healthy_run(5, 72));
    let n = run("new", &three_times(healthy_run(6, 72)));
    let m = compare::compare(&b, &n, Options::default());
    assert_eq!(ttfa(&m).verdict, Verdict::Regressed);
}
