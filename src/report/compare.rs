//! Baseline comparison: per-metric deltas of p50/p95/p99 and success rate between two runs,
//! judged by a tolerance on p95 *and* a significance test aimed at that quantile — a seeded
//! bootstrap of the p95 difference resampled from the two HDR histograms for latencies, a
//! two-proportion z-test for success rates — so a PR job can gate on "no worse than main"
//! without flapping on noise, and a slow tail that leaves the median alone is still caught.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use super::error::ReportError;
use super::{MetricReport, ReportView, RunFiles};

/// Gate settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Relative p95 increase tolerated (0.10 = 10 %).
    pub tolerance: f64,
    /// Significance level of the tests.
    pub alpha: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tolerance: 0.10,
            alpha: 0.05,
        }
    }
}

/// The quantile the gate judges.
pub const GATED_QUANTILE: f64 = 0.95;

/// Bootstrap resamples per test.
pub const RESAMPLES: usize = 2000;

/// Result of a bootstrap test of a quantile difference (new − base).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileTest {
    /// The quantile compared (0.95 = p95).
    pub quantile: f64,
    /// Observed difference of the two sample quantiles, new − base, in the samples' unit.
    pub diff: f64,
    /// Percentile bootstrap confidence interval of the difference at 1 − alpha.
    pub low: f64,
    pub high: f64,
    /// Two-sided p-value: twice the smaller share of resampled differences on either side of 0
    /// (a resample with no difference counts on both sides).
    pub p: f64,
}

/// Fewest samples per side for which the tested quantile has a distribution-free confidence
/// bound at level alpha: below it, all n samples fall under the true quantile with probability
/// q^n > alpha/2, so no resampling can tell the tail apart (p95 at alpha 0.05: 72).
pub fn min_samples(quantile: f64, alpha: f64) -> u64 {
    if !(0.0..1.0).contains(&quantile) || alpha <= 0.0 || alpha >= 1.0 {
        return u64::MAX;
    }
    ((alpha / 2.0).ln() / quantile.ln()).ceil().max(1.0) as u64
}

/// A small, stable PRNG (SplitMix64): verdicts must not change with a dependency's version.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma(shape, 1) for shape ≥ 1 (Marsaglia–Tsang).
    fn gamma(&mut self, shape: f64) -> f64 {
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// Beta(a, b) for a, b ≥ 1.
    fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        x / (x + self.gamma(b))
    }
}

/// One side of a quantile test: the sample as ascending `(value, count)` pairs with running
/// totals.
struct Sample<'a> {
    values: &'a [(u64, u64)],
    cumulative: Vec<u64>,
    n: u64,
}

impl<'a> Sample<'a> {
    fn new(values: &'a [(u64, u64)]) -> Self {
        let mut total = 0;
        let cumulative = values
            .iter()
            .map(|v| {
                total += v.1;
                total
            })
            .collect();
        Sample {
            values,
            cumulative,
            n: total,
        }
    }

    /// The i-th smallest value, 0-based.
    fn at(&self, i: u64) -> f64 {
        let k = self.cumulative.partition_point(|&c| c <= i);
        self.values[k.min(self.values.len() - 1)].0 as f64
    }

    /// Rank (1-based) of the quantile's order statistic, as HdrHistogram's `value_at_quantile`
    /// picks it: the smallest value with at least q·n samples at or below it.
    fn rank(&self, q: f64) -> u64 {
        ((q * self.n as f64 - 1e-9).ceil() as u64).clamp(1, self.n)
    }

    fn quantile(&self, q: f64) -> f64 {
        self.at(self.rank(q) - 1)
    }

    /// The quantile of one bootstrap resample (n draws with replacement). Its k-th smallest
    /// draw is the sample's value at ⌊U·n⌋ for U the k-th smallest of n uniforms, which is
    /// Beta(k, n + 1 − k): one draw per resample instead of n.
    fn resampled_quantile(&self, q: f64, rng: &mut SplitMix) -> f64 {
        let k = self.rank(q) as f64;
        let u = rng.beta(k, self.n as f64 + 1.0 - k);
        self.at(((u * self.n as f64) as u64).min(self.n - 1))
    }
}

/// Bootstrap test of the difference of a quantile between two samples given as ascending
/// `(value, count)` pairs (e.g. the recorded values of two HDR histograms): [`RESAMPLES`]
/// resamples of each side drawn with a PRNG seeded by `seed`, so the same inputs always give the
/// same answer. None when either side has fewer than [`min_samples`].
pub fn quantile_bootstrap(
    base: &[(u64, u64)],
    new: &[(u64, u64)],
    quantile: f64,
    alpha: f64,
    seed: u64,
) -> Option<QuantileTest> {
    let (a, b) = (Sample::new(base), Sample::new(new));
    let least = min_samples(quantile, alpha);
    if a.n < least || b.n < least {
        return None;
    }
    let mut rng = SplitMix(seed);
    let mut diffs: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            b.resampled_quantile(quantile, &mut rng) - a.resampled_quantile(quantile, &mut rng)
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let below = diffs.iter().filter(|d| **d <= 0.0).count();
    let above = diffs.iter().filter(|d| **d >= 0.0).count();
    let share = |c: usize| (c + 1) as f64 / (RESAMPLES + 1) as f64;
    let p = (2.0 * share(below).min(share(above))).min(1.0);
    let pick = |f: f64| diffs[((f * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    Some(QuantileTest {
        quantile,
        diff: b.quantile(quantile) - a.quantile(quantile),
        low: pick(alpha / 2.0),
        high: pick(1.0 - alpha / 2.0),
        p,
    })
}

/// The seed of a metric's test: fixed per metric name (FNV-1a), so a verdict is reproducible.
pub fn seed_for(metric: &str) -> u64 {
    metric.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Result of a Mann–Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample (pairs where the first is larger, ties counting half).
    pub u: f64,
    /// z score (continuity-corrected, tie-corrected); positive when the second is larger.
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Standard normal CDF (erfc approximation, |error| < 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Mann–Whitney U test on two samples given as ascending `(value, count)` pairs (e.g. the
/// recorded values of two HDR histograms): normal approximation with tie and continuity
/// corrections. None when either sample is empty or every value is tied. Not the gate's test:
/// it weighs the whole distribution, so a slow tail of a few percent goes unseen (see
/// [`quantile_bootstrap`]).
pub fn mann_whitney(a: &[(u64, u64)], b: &[(u64, u64)]) -> Option<MannWhitney> {
    let n1: f64 = a.iter().map(|x| x.1 as f64).sum();
    let n2: f64 = b.iter().map(|x| x.1 as f64).sum();
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let mut values: Vec<u64> = a.iter().chain(b).map(|x| x.0).collect();
    values.sort_unstable();
    values.dedup();
    // Walk both in order; each group of equal values shares the average of its ranks.
    let (mut ia, mut ib) = (0usize, 0usize);
    let mut below = 0.0; // values ranked before this group
    let mut r1 = 0.0;
    let mut ties = 0.0;
    for v in values {
        let mut c1 = 0.0;
        while ia < a.len() && a[ia].0 <= v {
            if a[ia].0 == v {
                c1 += a[ia].1 as f64;
            }
            ia += 1;
        }
        let mut c2 = 0.0;
        while ib < b.len() && b[ib].0 <= v {
            if b[ib].0 == v {
                c2 += b[ib].1 as f64;
            }
            ib += 1;
        }
        let t = c1 + c2;
        let avg_rank = below + (t + 1.0) / 2.0;
        r1 += c1 * avg_rank;
        ties += t * t * t - t;
        below += t;
    }
    let n = n1 + n2;
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return None;
    }
    let sd = var.sqrt();
    let diff = mean - u1; // > 0 when the second sample is larger
    let corrected = (diff.abs() - 0.5).max(0.0) * diff.signum();
    let z = corrected / sd;
    let p = (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0);
    Some(MannWhitney { u: u1, z, p })
}

/// Two-proportion z-test: (z, two-sided p); z < 0 when the second rate is lower. None when
/// either count is zero or both rates are 0 or 1.
pub fn two_proportion(s1: u64, n1: u64, s2: u64, n2: u64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let (p1, p2) = (s1 as f64 / n1f, s2 as f64 / n2f);
    let pooled = (s1 + s2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (p2 - p1) / se;
    Some((z, (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0)))
}

/// Verdict on one metric or on the success rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Regressed,
    Improved,
    Unchanged,
    /// Changed beyond the tolerance but not significantly for these sample sizes.
    NotSignificant,
    /// Missing on one side.
    NoData,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Regressed => "❌ regressed",
            Verdict::Improved => "✅ improved",
            Verdict::Unchanged => "≈ unchanged",
            Verdict::NotSignificant => "〰 not significant",
            Verdict::NoData => "– no data",
        }
    }
}

/// One metric of a comparison.
#[derive(Debug, Clone)]
pub struct MetricDelta {
    pub name: String,
    pub base: MetricReport,
    pub new: MetricReport,
    /// p-value of the gate's test (the p95 bootstrap).
    pub p_value: Option<f64>,
    /// The p95 bootstrap, in µs (None: no histogram on a side, or too few samples).
    pub p95_test: Option<QuantileTest>,
    pub verdict: Verdict,
}

/// The whole comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub base_label: String,
    pub new_label: String,
    pub metrics: Vec<MetricDelta>,
    pub base_rate: Option<f64>,
    pub new_rate: Option<f64>,
    pub rate_p_value: Option<f64>,
    pub rate_verdict: Verdict,
    pub options: Options,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.rate_verdict == Verdict::Regressed
            || self.metrics.iter().any(|m| m.verdict == Verdict::Regressed)
    }
}

/// Judge one metric from its two reports and, when stored, its two histograms (µs).
pub fn compare_metric(
    name: String,
    base: MetricReport,
    new: MetricReport,
    base_hist: Option<&Histogram<u64>>,
    new_hist: Option<&Histogram<u64>>,
    opt: Options,
) -> MetricDelta {
    let test = match (base_hist, new_hist) {
        (Some(hb), Some(hn)) => quantile_bootstrap(
            &super::hist::values(hb),
            &super::hist::values(hn),
            GATED_QUANTILE,
            opt.alpha,
            seed_for(&name),
        ),
        _ => None,
    };
    let verdict = match (base.p95_ms, new.p95_ms) {
        (Some(bp), Some(np)) if bp > 0.0 => {
            let rel = (np - bp) / bp;
            let significant = test.is_some_and(|t| t.p < opt.alpha);
            if rel.abs() <= opt.tolerance {
                Verdict::Unchanged
            } else if !significant {
                Verdict::NotSignificant
            } else if rel > 0.0 && test.is_some_and(|t| t.low > 0.0) {
                Verdict::Regressed
            } else if rel < 0.0 && test.is_some_and(|t| t.high < 0.0) {
                Verdict::Improved
            } else {
                Verdict::NotSignificant
            }
        }
        _ => Verdict::NoData,
    };
    MetricDelta {
        name,
        base,
        new,
        p_value: test.map(|t| t.p),
        p95_test: test,
        verdict,
    }
}

/// Compare two runs.
pub fn compare(base: &ReportView, new: &ReportView, opt: Options) -> Comparison {
    let mut names = new.metric_names();
    for n in base.metric_names() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let metrics = names
        .into_iter()
        .map(|name| {
            let b = base.metrics.get(&name).cloned().unwrap_or_default();
            let n = new.metrics.get(&name).cloned().unwrap_or_default();
            let (hb, hn) = (base.histogram(&name), new.histogram(&name));
            compare_metric(name, b, n, hb.as_ref(), hn.as_ref(), opt)
        })
        .collect();
    let rate_test = two_proportion(
        base.iterations.succeeded,
        base.iterations.total,
        new.iterations.succeeded,
        new.iterations.total,
    );
    let rate_verdict = match (base.success_rate, new.success_rate) {
        (Some(b), Some(n)) => match rate_test {
            Some((z, p)) if p < opt.alpha && z < 0.0 && n < b => Verdict::Regressed,
            Some((z, p)) if p < opt.alpha && z > 0.0 && n > b => Verdict::Improved,
            Some(_) if (n - b).abs() > 1e-12 => Verdict::NotSignificant,
            _ => Verdict::Unchanged,
        },
        _ => Verdict::NoData,
    };
    Comparison {
        base_label: base.plan.clone(),
        new_label: new.plan.clone(),
        metrics,
        base_rate: base.success_rate,
        new_rate: new.success_rate,
        rate_p_value: rate_test.map(|t| t.1),
        rate_verdict,
        options: opt,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn delta(b: Option<f64>, n: Option<f64>) -> String {
    match (b, n) {
        (Some(b), Some(n)) if b > 0.0 => format!("{:+.1}%", (n - b) / b * 100.0),
        _ => "–".into(),
    }
}

/// A bootstrap interval of a difference in µs, as signed ms.
fn interval(t: Option<QuantileTest>) -> String {
    t.map_or("–".into(), |t| {
        format!("{:+.1} … {:+.1}", t.low / 1000.0, t.high / 1000.0)
    })
}

fn pval(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 0.001 => "<0.001".into(),
        Some(p) => format!("{p:.3}"),
        None => "–".into(),
    }
}

/// The comparison as Markdown, fit for a PR comment.
pub fn markdown(c: &Comparison) -> String {
    let mut s = String::new();
    let head = if c.regressed() {
        "❌ **Regression**"
    } else {
        "✅ **No regression**"
    };
    let _ = writeln!(
        s,
        "### planrun: {} vs baseline — {head}\n",
        c.new_label.replace('|', "\\|")
    );
    let _ = writeln!(
        s,
        "| Metric | p50 base → new | p95 base → new | Δ p95 | Δ p95 {:.0}% CI | p99 base → new | samples | p (p95 bootstrap) | Verdict |",
        (1.0 - c.options.alpha) * 100.0
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|---|");
    for m in &c.metrics {
        let _ = writeln!(
            s,
            "| `{}` | {} → {} | {} → {} | {} | {} | {} → {} | {} → {} | {} | {} |",
            m.name.replace('|', "\\|"),
            ms(m.base.p50_ms),
            ms(m.new.p50_ms),
            ms(m.base.p95_ms),
            ms(m.new.p95_ms),
            delta(m.base.p95_ms, m.new.p95_ms),
            interval(m.p95_test),
            ms(m.base.p99_ms),
            ms(m.new.p99_ms),
            m.base.count,
            m.new.count,
            pval(m.p_value),
            m.verdict.text()
        );
    }
    let rate = |r: Option<f64>| r.map_or("–".into(), |r| format!("{:.2}%", r * 100.0));
    let _ = writeln!(
        s,
        "| success rate | | {} → {} | | | | | {} (two-proportion z) | {} |",
        rate(c.base_rate),
        rate(c.new_rate),
        pval(c.rate_p_value),
        c.rate_verdict.text()
    );
    let _ = writeln!(
        s,
        "\nLatencies in ms. A metric regresses when its p95 grows by more than {:.0}% **and** a bootstrap of the p95 difference ({} seeded resamples of the recorded histograms, at least {} samples a side) puts its {:.0}% confidence interval above 0 (p < {}); the success rate regresses when it drops with a two-proportion z-test p < {}.",
        c.options.tolerance * 100.0,
        RESAMPLES,
        min_samples(GATED_QUANTILE, c.options.alpha),
        (1.0 - c.options.alpha) * 100.0,
        c.options.alpha,
        c.options.alpha
    );
    s
}

/// A run given on the command line: a run folder or a `metrics*.json` file.
pub fn load_run(path: &Path) -> Result<ReportView, ReportError> {
    let (dir, suffix): (PathBuf, String) = if path.is_dir() {
        (path.to_path_buf(), String::new())
    } else {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let suffix = name
            .strip_prefix("metrics")
            .and_then(|r| r.strip_suffix(".json"))
            .ok_or_else(|| ReportError::NotARun(path.to_path_buf()))?
            .to_string();
        (dir, suffix)
    };
    let text_path = dir.join(super::output_name("metrics.json", &suffix));
    let text = std::fs::read_to_string(&text_path).map_err(|source| ReportError::Read {
        path: text_path.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ReportError::JsonFile {
            path: text_path.clone(),
            source,
        })?;
    let files =
        RunFiles::from_json(json, super::RunData::default()).map_err(|e| ReportError::InFile {
            path: text_path.clone(),
            source: Box::new(e),
        })?;
    Ok(files.view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ones(v: &[u64]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &x in v {
            match out.last_mut() {
                Some(l) if l.0 == x => l.1 += 1,
                _ => out.push((x, 1)),
            }
        }
        out
    }

    #[test]
    fn normal_cdf_matches_tables() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975_002).abs() < 1e-5);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }

    #[test]
    fn mann_whitney_separated_samples() {
        // a = 1,2,3; b = 4,5,6: U1 = 0, mean 4.5, sd = sqrt(3·3·7/12) = 2.2913,
        // z = (4.5 − 0.5)/2.2913 = 1.7457, p = 2(1 − Φ(1.7457)) = 0.0809.
        let r = mann_whitney(&ones(&[1, 2, 3]), &ones(&[4, 5, 6])).unwrap();
        assert_eq!(r.u, 0.0);
        assert!((r.z - 1.7457).abs() < 1e-3, "{r:?}");
        assert!((r.p - 0.0809).abs() < 1e-3, "{r:?}");
    }

    #[test]
    fn mann_whitney_with_ties() {
        // a = 1,2,2; b = 2,3,3. Ranks: 1 → 1; the three 2s → 3; the two 3s → 5.5.
        // R1 = 1 + 3 + 3 = 7, U1 = 7 − 6 = 1. Ties: Σ(t³ − t) = 24 + 6 = 30, N(N−1) = 30,
        // var = 9/12 · (7 − 1) = 4.5, z = (4.5 − 1 − 0.5)/2.1213 = 1.4142, p = 0.1573.
        let r = mann_whitney(&ones(&[1, 2, 2]), &ones(&[2, 3, 3])).unwrap();
        assert_eq!(r.u, 1.0);
        assert!((r.z - 2f64.sqrt()).abs() < 1e-3, "{r:?}");
        assert!((r.p - 0.1573).abs() < 1e-3, "{r:?}");
        // Same samples: nothing to see.
        let same = mann_whitney(&ones(&[1, 2, 3]), &ones(&[1, 2, 3])).unwrap();
        assert!(same.p > 0.99, "{same:?}");
        // All tied: undefined.
        assert!(mann_whitney(&ones(&[5, 5]), &ones(&[5])).is_none());
        assert!(mann_whitney(&[], &ones(&[5])).is_none());
    }

    #[test]
    fn min_samples_is_the_distribution_free_bound() {
        // 0.95^71 = 0.0262 > 0.025, 0.95^72 = 0.0249.
        assert_eq!(min_samples(0.95, 0.05), 72);
        assert_eq!(min_samples(0.99, 0.05), 368);
        assert_eq!(min_samples(0.5, 0.05), 6);
        assert_eq!(min_samples(1.0, 0.05), u64::MAX);
    }

    #[test]
    fn the_beta_shortcut_resamples_like_drawing_n_values() {
        // 1..=100 ms; the p95 of a resample drawn value by value vs through Beta(k, n + 1 − k).
        let v: Vec<(u64, u64)> = (1..=100).map(|x| (x, 1)).collect();
        let s = Sample::new(&v);
        assert_eq!(s.rank(0.95), 95);
        assert_eq!(s.quantile(0.95), 95.0);
        let mut rng = SplitMix(7);
        let runs = 4000;
        let mut direct = Vec::new();
        let mut shortcut = Vec::new();
        for _ in 0..runs {
            let mut draw: Vec<f64> = (0..100)
                .map(|_| s.at(((rng.uniform() * 100.0) as u64).min(99)))
                .collect();
            draw.sort_by(f64::total_cmp);
            direct.push(draw[94]);
            shortcut.push(s.resampled_quantile(0.95, &mut rng));
        }
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
        let sd = |x: &[f64]| {
            let m = mean(x);
            (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / x.len() as f64).sqrt()
        };
        // Both ≈ 94.5 ± 2.2; the means agree within a few standard errors.
        assert!(
            (mean(&direct) - mean(&shortcut)).abs() < 0.25,
            "{} {}",
            mean(&direct),
            mean(&shortcut)
        );
        assert!(
            (sd(&direct) - sd(&shortcut)).abs() < 0.2,
            "{} {}",
            sd(&direct),
            sd(&shortcut)
        );
    }

    #[test]
    fn quantile_bootstrap_is_seeded_and_sided() {
        let base: Vec<(u64, u64)> = (100..300).map(|x| (x, 1)).collect();
        let slower: Vec<(u64, u64)> = (100..300).map(|x| (x + 40, 1)).collect();
        let t = quantile_bootstrap(&base, &slower, 0.95, 0.05, 1).unwrap();
        assert_eq!(t.diff, 40.0);
        assert!(t.low > 0.0 && t.high >= 40.0 && t.p < 0.01, "{t:?}");
        assert_eq!(quantile_bootstrap(&base, &slower, 0.95, 0.05, 1), Some(t));
        let back = quantile_bootstrap(&slower, &base, 0.95, 0.05, 1).unwrap();
        assert!(back.high < 0.0 && back.p < 0.01, "{back:?}");
        let same = quantile_bootstrap(&base, &base, 0.95, 0.05, 1).unwrap();
        assert!(
            same.low < 0.0 && same.high > 0.0 && same.p > 0.5,
            "{same:?}"
        );
        // Too few samples: no test.
        assert!(quantile_bootstrap(&base[..71], &slower, 0.95, 0.05, 1).is_none());
    }

    #[test]
    fn two_proportion_by_hand() {
        // 95/100 vs 85/100: pooled 0.9, se = sqrt(0.9·0.1·0.02) = 0.042426,
        // z = −0.10/0.042426 = −2.357, p = 0.0184.
        let (z, p) = two_proportion(95, 100, 85, 100).unwrap();
        assert!((z + 2.357).abs() < 1e-3, "{z}");
        assert!((p - 0.0184).abs() < 1e-3, "{p}");
        assert!(two_proportion(10, 10, 5, 5).is_none());
    }
}
