//! Durations and random duration distributions ("jitter"), shared by plans and the built-in agent.
//!
//! Text forms (the plan language):
//! - `500ms`, `1.5s`, `2m`                      a fixed duration
//! - `300ms..800ms`                             uniform in the range
//! - `normal(500ms, 50ms)`                      normal(mean, std-dev), clamped at zero
//! - `exponential(200ms)`                       exponential with the given mean
//! - `lognormal(400ms, 0.3)`                    log-normal with the given median and sigma
//!
//! Everything is sampled from a caller-provided RNG so a seeded run replays exactly.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::RngExt;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("expected a duration such as `250ms` or `1.5s`, found an empty string")]
    Empty,
    #[error("`{0}` has no unit: write e.g. `{0}ms` or `{0}s`")]
    NoUnit(String),
    #[error("`{0}` is not a duration: expected a number then a unit, e.g. `250ms`")]
    NotANumber(String),
    #[error("unknown duration unit `{unit}` in `{text}`: use us, ms, s, m or h")]
    UnknownUnit { unit: String, text: String },
    #[error("duration `{0}` is out of range")]
    OutOfRange(String),
}

/// Parse a single duration such as `250ms`, `1.5s`, `2m`, `100us`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| DurationError::NoUnit(t.to_string()))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(t.to_string()))?;
    let secs = match unit.trim() {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(DurationError::UnknownUnit {
                unit: other.to_string(),
                text: t.to_string(),
            });
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(DurationError::OutOfRange(t.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Render a duration the way a plan would write it.
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0ms".into()
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{}us", us)
    }
}

/// A random (or fixed) duration distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Fixed(Duration),
    Uniform(Duration, Duration),
    Normal { mean: Duration, std_dev: Duration },
    Exponential { mean: Duration },
    LogNormal { median: Duration, sigma: f64 },
}

impl Dist {
    pub const fn fixed(d: Duration) -> Self {
        Dist::Fixed(d)
    }

    pub fn from_millis(ms: u64) -> Self {
        Dist::Fixed(Duration::from_millis(ms))
    }

    /// Draw one value.
    pub fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let secs = match self {
            Dist::Fixed(d) => return *d,
            Dist::Uniform(lo, hi) => {
                if hi <= lo {
                    return *lo;
                }
                rng.random_range(lo.as_secs_f64()..hi.as_secs_f64())
            }
            Dist::Normal { mean, std_dev } => {
                mean.as_secs_f64() + std_dev.as_secs_f64() * standard_normal(rng)
            }
            Dist::Exponential { mean } => {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                -mean.as_secs_f64() * u.ln()
            }
            Dist::LogNormal { median, sigma } => {
                median.as_secs_f64() * (sigma * standard_normal(rng)).exp()
            }
        };
        saturating_secs(secs)
    }

    /// The distribution's mean (used for documentation and sanity checks).
    pub fn mean(&self) -> Duration {
        match self {
            Dist::Fixed(d) => *d,
            Dist::Uniform(lo, hi) => (*lo + *hi) / 2,
            Dist::Normal { mean, .. } | Dist::Exponential { mean } => *mean,
            Dist::LogNormal { median, sigma } => {
                saturating_secs(median.as_secs_f64() * (sigma * sigma / 2.0).exp())
            }
        }
    }
}

/// Seconds as a duration, clamped to 0..=1e6 s (11.6 days); NaN (e.g. `0 × ∞` from a
/// lognormal with a huge sigma) is 0. `Duration::from_secs_f64` would panic on either.
fn saturating_secs(secs: f64) -> Duration {
    if secs.is_nan() {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(secs.clamp(0.0, 1e6))
    }
}

fn standard_normal<R: rand::Rng + ?Sized>(rng: &mut R) -> f64 {
    // Box-Muller; one value per call is plenty for jitter.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn args<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let rest = text.strip_prefix(name)?.trim_start();
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(str::trim).collect())
}

/// Why a jitter expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistError {
    /// An argument of a distribution is not a duration.
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error("`{name}` takes {expected} argument(s), found {found} in `{text}`")]
    Arity {
        name: &'static str,
        expected: usize,
        found: usize,
        text: String,
    },
    #[error("lognormal sigma must be a non-negative number, found `{0}`")]
    Sigma(String),
    #[error("range `{0}` has its upper bound below its lower bound")]
    ReversedRange(String),
    /// Not a distribution, and not a plain duration either.
    #[error(
        "{0}; a jitter is a duration (`500ms`), a range (`300ms..800ms`), \
         `normal(mean, sd)`, `exponential(mean)` or `lognormal(median, sigma)`"
    )]
    NotAJitter(DurationError),
}

impl FromStr for Dist {
    type Err = DistError;

    fn from_str(text: &str) -> Result<Self, DistError> {
        let t = text.trim();
        let expect_args = |name: &'static str, n: usize, v: &[&str]| -> Result<(), DistError> {
            if v.len() == n {
                Ok(())
            } else {
                Err(DistError::Arity {
                    name,
                    expected: n,
                    found: v.len(),
                    text: t.to_string(),
                })
            }
        };
        if let Some(v) = args(t, "normal") {
            expect_args("normal", 2, &v)?;
            return Ok(Dist::Normal {
                mean: parse_duration(v[0])?,
                std_dev: parse_duration(v[1])?,
            });
        }
        if let Some(v) = args(t, "exponential").or_else(|| args(t, "exp")) {
            expect_args("exponential", 1, &v)?;
            return Ok(Dist::Exponential {
                mean: parse_duration(v[0])?,
            });
        }
        if let Some(v) = args(t, "lognormal") {
            expect_args("lognormal", 2, &v)?;
            let sigma: f64 = v[1]
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| DistError::Sigma(v[1].to_string()))?;
            return Ok(Dist::LogNormal {
                median: parse_duration(v[0])?,
                sigma,
            });
        }
        if let Some((lo, hi)) = t.split_once("..") {
            let lo = parse_duration(lo)?;
            let hi = parse_duration(hi)?;
            if hi < lo {
                return Err(DistError::ReversedRange(t.to_string()));
            }
            return Ok(Dist::Uniform(lo, hi));
        }
        parse_duration(t)
            .map(Dist::Fixed)
            .map_err(DistError::NotAJitter)
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Fixed(d) => write!(f, "{}", format_duration(*d)),
            Dist::Uniform(lo, hi) => {
                write!(f, "{}..{}", format_duration(*lo), format_duration(*hi))
            }
            Dist::Normal { mean, std_dev } => write!(
                f,
                "normal({}, {})",
                format_duration(*mean),
                format_duration(*std_dev)
            ),
            Dist::Exponential { mean } => write!(f, "exponential({})", format_duration(*mean)),
            Dist::LogNormal { median, sigma } => {
                write!(f, "lognormal({}, {sigma})", format_duration(*median))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(
            parse_duration("250")
                .unwrap_err()
                .to_string()
                .contains("no unit")
        );
        assert!(
            parse_duration("3parsecs")
                .unwrap_err()
                .to_string()
                .contains("unknown duration unit")
        );
    }

    #[test]
    fn parses_distributions() {
        assert_eq!("500ms".parse::<Dist>().unwrap(), Dist::from_millis(500));
        assert_eq!(
            "300ms..800ms".parse::<Dist>().unwrap(),
            Dist::Uniform(Duration::from_millis(300), Duration::from_millis(800))
        );
        assert!(matches!(
            "normal(1s, 100ms)".parse::<Dist>().unwrap(),
            Dist::Normal { .. }
        ));
        assert!(matches!(
            "exponential(200ms)".parse::<Dist>().unwrap(),
            Dist::Exponential { .. }
        ));
        assert!(matches!(
            "lognormal(400ms, 0.3)".parse::<Dist>().unwrap(),
            Dist::LogNormal { .. }
        ));
        assert!("800ms..300ms".parse::<Dist>().is_err());
        assert!("normal(1s)".parse::<Dist>().is_err());
    }

    #[test]
    fn samples_stay_in_range_and_replay_with_seed() {
        let d: Dist = "300ms..800ms".parse().unwrap();
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let x = d.sample(&mut a);
            assert!(x >= Duration::from_millis(300) && x < Duration::from_millis(800));
            assert_eq!(x, d.sample(&mut b));
        }
    }

    #[test]
    fn huge_sigmas_saturate_instead_of_panicking() {
        let mut rng = StdRng::seed_from_u64(3);
        for text in [
            "lognormal(6s, 13.)",
            "lognormal(0ms, 1e300)",
            "lognormal(1s, 1e300)",
        ] {
            let d: Dist = text.parse().unwrap();
            assert!(d.mean() <= Duration::from_secs(1_000_000), "{text}");
            for _ in 0..100 {
                assert!(
                    d.sample(&mut rng) <= Duration::from_secs(1_000_000),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn distribution_means_are_close() {
        let mut rng = StdRng::seed_from_u64(1);
        for text in [
            "normal(500ms, 50ms)",
            "exponential(200ms)",
            "lognormal(400ms, 0.3)",
        ] {
            let d: Dist = text.parse().unwrap();
            let n = 20_000;
            let total: f64 = (0..n).map(|_| d.sample(&mut rng).as_secs_f64()).sum();
            let mean = total / n as f64;
            let want = d.mean().as_secs_f64();
            assert!(
                (mean - want).abs() / want < 0.05,
                "{text}: mean {mean} want {want}"
            );
        }
    }
}
