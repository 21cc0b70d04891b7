//! Baseline comparison: per-metric deltas of p50/p95/p99 and success rate between two runs,
//! judged by a tolerance on p95 *and* a significance test — a Mann–Whitney U test on the two
//! HDR histograms for latencies, a two-proportion z-test for success rates — so a PR job can
//! gate on "no worse than main" without flapping on noise.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
/// corrections. None when either sample is empty or every value is tied.
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
    pub p_value: Option<f64>,
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
            let test = match (base.histogram(&name), new.histogram(&name)) {
                (Some(hb), Some(hn)) => {
                    mann_whitney(&super::hist::values(&hb), &super::hist::values(&hn))
                }
                _ => None,
            };
            let verdict = match (b.p95_ms, n.p95_ms) {
                (Some(bp), Some(np)) if bp > 0.0 => {
                    let rel = (np - bp) / bp;
                    let significant = test.is_some_and(|t| t.p < opt.alpha);
                    if rel.abs() <= opt.tolerance {
                        Verdict::Unchanged
                    } else if !significant {
                        Verdict::NotSignificant
                    } else if rel > 0.0 && test.is_some_and(|t| t.z > 0.0) {
                        Verdict::Regressed
                    } else if rel < 0.0 && test.is_some_and(|t| t.z < 0.0) {
                        Verdict::Improved
                    } else {
                        Verdict::NotSignificant
                    }
                }
                _ => Verdict::NoData,
            };
            MetricDelta {
                name,
                base: b,
                new: n,
                p_value: test.map(|t| t.p),
                verdict,
            }
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
        "| Metric | p50 base → new | p95 base → new | Δ p95 | p99 base → new | samples | p (Mann–Whitney) | Verdict |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|---|");
    for m in &c.metrics {
        let _ = writeln!(
            s,
            "| `{}` | {} → {} | {} → {} | {} | {} → {} | {} → {} | {} | {} |",
            m.name.replace('|', "\\|"),
            ms(m.base.p50_ms),
            ms(m.new.p50_ms),
            ms(m.base.p95_ms),
            ms(m.new.p95_ms),
            delta(m.base.p95_ms, m.new.p95_ms),
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
        "| success rate | | {} → {} | | | | {} (two-proportion z) | {} |",
        rate(c.base_rate),
        rate(c.new_rate),
        pval(c.rate_p_value),
        c.rate_verdict.text()
    );
    let _ = writeln!(
        s,
        "\nLatencies in ms. A metric regresses when its p95 grows by more than {:.0}% **and** a Mann–Whitney U test on the recorded histograms gives p < {}; the success rate regresses when it drops with a two-proportion z-test p < {}.",
        c.options.tolerance * 100.0,
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
    fn two_proportion_by_hand() {
        // 95/100 vs 85/100: pooled 0.9, se = sqrt(0.9·0.1·0.02) = 0.042426,
        // z = −0.10/0.042426 = −2.357, p = 0.0184.
        let (z, p) = two_proportion(95, 100, 85, 100).unwrap();
        assert!((z + 2.357).abs() < 1e-3, "{z}");
        assert!((p - 0.0184).abs() < 1e-3, "{p}");
        assert!(two_proportion(10, 10, 5, 5).is_none());
    }
}
