//! Measurements: per-user recorders (plain HDR histograms in microseconds, counters, the
//! iteration timeline), merged exactly into one [`Summary`] at the end of a run.

pub mod live;
pub mod progress;

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why an iteration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The connection could not be opened (refused, DNS, connect timeout).
    ConnectError,
    /// The server answered the WebSocket handshake with an HTTP error (401, 404, ...).
    HandshakeRejected,
    /// TLS failed (untrusted certificate, wrong host name, not TLS at all).
    TlsError,
    /// An `await` (or the scenario) ran out of time.
    Timeout,
    /// The server closed the connection mid-iteration.
    ConnectionClosed,
    /// The server sent something that is not the protocol (bad JSON, no type).
    ProtocolError,
    /// The server reported an error message.
    ServerError,
    /// Sending to the server failed.
    SendError,
    /// A different event came than the one `expect`ed.
    UnexpectedEvent,
    /// An `expect` did not hold (audio did not stop/resume in time, a field did not match).
    ExpectationFailed,
    /// The run was stopped (Ctrl-C) while this iteration was in flight.
    Aborted,
    /// (`http_chunks`) the server answered with an HTTP status of 400 or more.
    HttpError,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::ConnectError => "connect_error",
            FailureClass::HandshakeRejected => "handshake_rejected",
            FailureClass::TlsError => "tls_error",
            FailureClass::Timeout => "timeout",
            FailureClass::ConnectionClosed => "connection_closed",
            FailureClass::ProtocolError => "protocol_error",
            FailureClass::ServerError => "server_error",
            FailureClass::SendError => "send_error",
            FailureClass::UnexpectedEvent => "unexpected_event",
            FailureClass::ExpectationFailed => "expectation_failed",
            FailureClass::Aborted => "aborted",
            FailureClass::HttpError => "http_error",
        }
    }
}

/// A failure with its context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub class: FailureClass,
    /// "step 3 (line 17)" or empty when not tied to a step.
    pub step: String,
    pub message: String,
}

/// One notable instant inside an iteration (for timelines).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    pub kind: String,
    /// Microseconds since the run started.
    pub at_us: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One recorded measurement with when it was taken (for latency-over-time charts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub metric: String,
    /// Microseconds since the run started.
    pub at_us: u64,
    pub value_ms: f64,
}

/// One iteration (one call) of one virtual user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationRecord {
    pub user: u32,
    pub iteration: u64,
    pub scenario: String,
    /// Microseconds since the run started.
    pub start_us: u64,
    pub end_us: u64,
    pub failure: Option<Failure>,
    pub markers: Vec<Marker>,
    /// The measurements this iteration recorded, in order.
    pub samples: Vec<Sample>,
}

/// A measurement in milliseconds as the histograms hold it: whole microseconds (truncated, like
/// [`Recorder::record`]), so a timeline sample (`record:METRIC`, written with 3 decimals) is
/// exactly the value in the histogram and percentiles rebuilt from samples match.
pub fn sample_ms(value: Duration) -> f64 {
    value.as_micros().min(u128::from(u64::MAX)) as f64 / 1000.0
}

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing, 3 significant figures (values in µs).
    Histogram::new(3).expect("3 significant figures is valid") // ok: only sigfig > 5 fails
}

/// Histograms shared by many users, in a few independently locked stripes.
///
/// An HDR histogram with 3 significant figures holds thousands of counters (tens of KB); one
/// set per user would cost far more memory than the user itself. Users record into the stripe
/// of their index instead; the run merges the stripes at the end (exactly: histogram addition).
#[derive(Debug)]
pub struct SharedHistograms {
    stripes: Vec<std::sync::Mutex<Stripe>>,
}

impl Default for SharedHistograms {
    fn default() -> Self {
        // Enough stripes that two users rarely wait on each other's lock.
        SharedHistograms::new(32)
    }
}

#[derive(Debug, Default)]
struct Stripe {
    histograms: BTreeMap<String, Histogram<u64>>,
    send_lag: Option<Histogram<u64>>,
}

impl SharedHistograms {
    pub fn new(stripes: usize) -> Self {
        SharedHistograms {
            stripes: (0..stripes.max(1))
                .map(|_| std::sync::Mutex::new(Stripe::default()))
                .collect(),
        }
    }

    pub fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// The send lag recorded so far (all stripes added), without taking it.
    pub fn send_lag_snapshot(&self) -> Option<Histogram<u64>> {
        let mut total: Option<Histogram<u64>> = None;
        for stripe in &self.stripes {
            let Ok(s) = stripe.lock() else { continue };
            if let Some(h) = &s.send_lag {
                match &mut total {
                    Some(t) => {
                        let _ = t.add(h);
                    }
                    None => total = Some(h.clone()),
                }
            }
        }
        total
    }

    /// Move everything recorded so far into `rec` (generator-health entries into
    /// `rec.health`).
    pub fn drain_into(&self, rec: &mut Recorder) {
        for stripe in &self.stripes {
            let Ok(mut s) = stripe.lock() else { continue };
            let mut histograms = std::mem::take(&mut s.histograms);
            let mut health = crate::health::HealthRec::default();
            if let Some(h) = histograms.remove(SPEECH_END_LAG_KEY) {
                health.speech_end_lag = Some(h);
            }
            let actual: Vec<String> = histograms
                .keys()
                .filter(|k| k.starts_with(FROM_ACTUAL_PREFIX))
                .cloned()
                .collect();
            for key in actual {
                if let Some(h) = histograms.remove(&key) {
                    let metric = key.trim_start_matches(FROM_ACTUAL_PREFIX).to_string();
                    health.from_actual_end.insert(metric, h);
                }
            }
            let taken = Recorder {
                histograms,
                send_lag: s.send_lag.take(),
                health,
                ..Recorder::default()
            };
            rec.merge(taken);
        }
    }
}

/// Keys under which generator-health histograms travel through the shared store.
const SPEECH_END_LAG_KEY: &str = "\u{0}speech_end_lag";
const FROM_ACTUAL_PREFIX: &str = "\u{0}actual:";

fn record_into(histograms: &mut BTreeMap<String, Histogram<u64>>, metric: &str, us: u64) {
    // No allocation on the hot path: the key is only copied the first time.
    let h = match histograms.get_mut(metric) {
        Some(h) => h,
        None => histograms
            .entry(metric.to_string())
            .or_insert_with(new_histogram),
    };
    // ok to ignore: auto-resizing histograms accept any u64
    let _ = h.record(us.max(1));
}

/// Everything one virtual user measured. Owned by the user; merged at the end.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Where histogram values go instead of this recorder's own maps (the shared store and
    /// this user's stripe), when the engine set one.
    pub shared: Option<(std::sync::Arc<SharedHistograms>, usize)>,
    pub histograms: BTreeMap<String, Histogram<u64>>,
    /// Lateness of each outgoing audio frame against its absolute schedule.
    pub send_lag: Option<Histogram<u64>>,
    pub iterations: Vec<IterationRecord>,
    /// `check` outcomes by check name.
    pub checks: BTreeMap<String, CheckCounts>,
    /// (`http_chunks`) chunk and call totals.
    pub http: HttpCounts,
    /// The generator's own health (speech-end lag, latencies from the actual end of speech).
    pub health: crate::health::HealthRec,
    /// Open model / ramping stages: scheduled starts, drops, late starts and start lag.
    pub arrivals: Option<ArrivalStats>,
}

/// Why a scheduled caller did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// `max_users` callers were already active.
    MaxUsers,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxUsers => "max_users",
        }
    }
}

/// One arrival that did not start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DroppedArrival {
    /// The arrival's number in the schedule (from 0).
    pub arrival: u64,
    /// Its scheduled instant, µs since the run started.
    pub at_us: u64,
    pub reason: DropReason,
}

/// How the scheduler kept to its schedule (open model and ramping stages).
#[derive(Debug, Clone, Default)]
pub struct ArrivalStats {
    /// Starts that came due (arrivals, or users the stages asked for).
    pub scheduled: u64,
    /// Callers that started.
    pub started: u64,
    /// Arrivals that did not start, with why.
    pub dropped: Vec<DroppedArrival>,
    /// Callers that started more than the tolerance after their scheduled instant.
    pub late_starts: u64,
    /// Actual start − scheduled start of every started caller, µs.
    pub start_lag: Option<Histogram<u64>>,
}

impl ArrivalStats {
    /// Count one started caller and its lag.
    pub fn started(&mut self, lag: Duration, tolerance: Duration) {
        self.started += 1;
        if lag > tolerance {
            self.late_starts += 1;
        }
        let us = lag.as_micros().min(u128::from(u64::MAX)) as u64;
        let _ = self
            .start_lag
            .get_or_insert_with(new_histogram)
            .record(us.max(1));
    }

    pub fn merge(&mut self, o: ArrivalStats) {
        self.scheduled += o.scheduled;
        self.started += o.started;
        self.dropped.extend(o.dropped);
        self.late_starts += o.late_starts;
        if let Some(h) = o.start_lag {
            match &mut self.start_lag {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => self.start_lag = Some(h),
            }
        }
    }
}

/// Totals of `http_chunks` calls, summed exactly across users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HttpCounts {
    /// Calls (iterations) that ran, failed ones included.
    pub calls: u64,
    /// Chunks answered (a response read and parsed).
    pub chunks: u64,
    /// Audio in the answered chunks, µs.
    pub audio_us: u64,
    /// Summed request → parsed-response time of the answered chunks, µs.
    pub busy_us: u64,
    /// Summed wall time of the calls, µs.
    pub call_us: u64,
}

impl HttpCounts {
    pub fn add(&mut self, o: &HttpCounts) {
        self.calls += o.calls;
        self.chunks += o.chunks;
        self.audio_us += o.audio_us;
        self.busy_us += o.busy_us;
        self.call_us += o.call_us;
    }
}

/// Passed/failed counts of one `check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CheckCounts {
    pub passed: u64,
    pub failed: u64,
}

impl Recorder {
    pub fn check(&mut self, name: &str, passed: bool) {
        let c = self.checks.entry(name.to_string()).or_default();
        if passed {
            c.passed += 1;
        } else {
            c.failed += 1;
        }
    }

    pub fn record(&mut self, metric: &str, value: Duration) {
        let us = value.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some((store, i)) = &self.shared
            && let Some(Ok(mut stripe)) = store.stripes.get(*i).map(|s| s.lock())
        {
            return record_into(&mut stripe.histograms, metric, us);
        }
        record_into(&mut self.histograms, metric, us);
    }

    /// How late the frame ending an utterance left (generator health).
    pub fn record_speech_end_lag(&mut self, lag: Duration) {
        if self.shared.is_some() {
            return self.record(SPEECH_END_LAG_KEY, lag);
        }
        self.health.record_speech_end_lag(lag);
    }

    /// `metric` measured from the actual end of speech (generator health, out of thresholds).
    pub fn record_from_actual_end(&mut self, metric: &str, value: Duration) {
        if self.shared.is_some() {
            return self.record(&format!("{FROM_ACTUAL_PREFIX}{metric}"), value);
        }
        self.health.record_from_actual_end(metric, value);
    }

    pub fn record_send_lag(&mut self, lag: Duration) {
        let us = lag.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some((store, i)) = &self.shared
            && let Some(Ok(mut stripe)) = store.stripes.get(*i).map(|s| s.lock())
        {
            let _ = stripe
                .send_lag
                .get_or_insert_with(new_histogram)
                .record(us.max(1));
            return;
        }
        let _ = self
            .send_lag
            .get_or_insert_with(new_histogram)
            .record(us.max(1));
    }

    pub fn iteration(&mut self, rec: IterationRecord) {
        self.iterations.push(rec);
    }

    /// Merge another recorder into this one (exact: histogram addition).
    pub fn merge(&mut self, other: Recorder) {
        for (name, h) in other.histograms {
            match self.histograms.get_mut(&name) {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => {
                    self.histograms.insert(name, h);
                }
            }
        }
        if let Some(h) = other.send_lag {
            match &mut self.send_lag {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => self.send_lag = Some(h),
            }
        }
        self.iterations.extend(other.iterations);
        self.http.add(&other.http);
        self.health.merge(other.health);
        if let Some(a) = other.arrivals {
            self.arrivals.get_or_insert_with(Default::default).merge(a);
        }
        for (name, c) in other.checks {
            let mine = self.checks.entry(name).or_default();
            mine.passed += c.passed;
            mine.failed += c.failed;
        }
    }
}

/// Statistics of one metric, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricStats {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl MetricStats {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        MetricStats {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: round3(h.mean() / 1000.0),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Iteration counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct IterationCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl IterationCounts {
    /// Fraction of iterations that succeeded (None when none ran).
    pub fn success_rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.succeeded as f64 / self.total as f64)
    }
}

/// The merged result of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub recorder: Recorder,
    /// Every metric the plan declares, even ones that got no samples.
    pub declared: Vec<String>,
    pub elapsed: Duration,
    pub aborted: bool,
}

impl Summary {
    pub fn new(
        mut recorder: Recorder,
        declared: Vec<String>,
        elapsed: Duration,
        aborted: bool,
    ) -> Self {
        recorder
            .iterations
            .sort_by_key(|r| (r.start_us, r.user, r.iteration));
        Summary {
            recorder,
            declared,
            elapsed,
            aborted,
        }
    }

    pub fn histogram(&self, metric: &str) -> Option<&Histogram<u64>> {
        self.recorder
            .histograms
            .get(metric)
            .filter(|h| !h.is_empty())
    }

    pub fn stats(&self, metric: &str) -> Option<MetricStats> {
        self.histogram(metric).map(MetricStats::from_histogram)
    }

    /// Metric names in report order: declared ones first, then any others recorded.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = self.declared.clone();
        for k in self.recorder.histograms.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        names
    }

    /// Iterations that ran to an outcome (those cut short by stopping the run are neither
    /// successes nor failures; see [`Summary::aborted_iterations`]).
    fn completed(&self) -> impl Iterator<Item = &IterationRecord> {
        self.recorder.iterations.iter().filter(|r| {
            r.failure
                .as_ref()
                .is_none_or(|f| f.class != FailureClass::Aborted)
        })
    }

    pub fn aborted_iterations(&self) -> u64 {
        (self.recorder.iterations.len() - self.completed().count()) as u64
    }

    pub fn iterations(&self) -> IterationCounts {
        let total = self.completed().count() as u64;
        let failed = self.completed().filter(|r| r.failure.is_some()).count() as u64;
        IterationCounts {
            total,
            succeeded: total - failed,
            failed,
        }
    }

    /// Failure counts by class.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.completed() {
            if let Some(f) = &r.failure {
                *out.entry(f.class.as_str().to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Fraction of all `check` evaluations that passed (None when no check ran).
    pub fn check_rate(&self) -> Option<f64> {
        let (p, f) = self
            .recorder
            .checks
            .values()
            .fold((0u64, 0u64), |(p, f), c| (p + c.passed, f + c.failed));
        (p + f > 0).then(|| p as f64 / (p + f) as f64)
    }

    /// Per-scenario iteration counts.
    pub fn scenarios(&self) -> BTreeMap<String, IterationCounts> {
        let mut out: BTreeMap<String, IterationCounts> = BTreeMap::new();
        for r in self.completed() {
            let c = out.entry(r.scenario.clone()).or_default();
            c.total += 1;
            if r.failure.is_some() {
                c.failed += 1;
            } else {
                c.succeeded += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_exact() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for ms in 1..=100u64 {
            a.record("ttfa", Duration::from_millis(ms));
            b.record("ttfa", Duration::from_millis(ms + 100));
        }
        a.merge(b);
        let s = Summary::new(a, vec!["ttfa".into()], Duration::from_secs(1), false);
        let st = s.stats("ttfa").unwrap();
        assert_eq!(st.count, 200);
        assert!((st.p50_ms - 100.0).abs() < 0.2, "{st:?}");
        assert!((st.max_ms - 200.0).abs() < 0.2, "{st:?}");
        assert!((st.min_ms - 1.0).abs() < 0.01, "{st:?}");
    }

    #[test]
    fn counts_and_classes() {
        let mut r = Recorder::default();
        let rec = |failure| IterationRecord {
            user: 0,
            iteration: 0,
            scenario: "s".into(),
            start_us: 0,
            end_us: 1,
            failure,
            markers: vec![],
            samples: vec![],
        };
        r.iteration(rec(None));
        r.iteration(rec(Some(Failure {
            class: FailureClass::Timeout,
            step: "step 1".into(),
            message: "x".into(),
        })));
        let s = Summary::new(r, vec![], Duration::ZERO, false);
        assert_eq!(
            s.iterations(),
            IterationCounts {
                total: 2,
                succeeded: 1,
                failed: 1
            }
        );
        assert_eq!(s.errors().get("timeout"), Some(&1));
        assert_eq!(s.iterations().success_rate(), Some(0.5));
        assert!(s.stats("nothing").is_none());
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shared_stripes_give_the_same_histograms_as_local_recording() {
        let store = Arc::new(SharedHistograms::new(4));
        let mut local = Recorder::default();
        let mut users: Vec<Recorder> = (0..8)
            .map(|u| Recorder {
                shared: Some((store.clone(), u % store.stripes())),
                ..Recorder::default()
            })
            .collect();
        for (u, rec) in users.iter_mut().enumerate() {
            for i in 0..50u64 {
                let d = Duration::from_micros(1000 + 37 * i + u as u64);
                rec.record("ttfa", d);
                local.record("ttfa", d);
                rec.record_send_lag(d / 10);
                local.record_send_lag(d / 10);
                rec.record_speech_end_lag(d / 20);
                local.record_speech_end_lag(d / 20);
                rec.record_from_actual_end("ttfa", d / 2);
                local.record_from_actual_end("ttfa", d / 2);
            }
            // Users keep no histograms of their own.
            assert!(rec.histograms.is_empty() && rec.send_lag.is_none());
        }
        let mut total = Recorder::default();
        for rec in users {
            total.merge(rec);
        }
        store.drain_into(&mut total);
        assert_eq!(total.histograms.keys().collect::<Vec<_>>(), ["ttfa"]);
        assert_eq!(total.histograms["ttfa"], local.histograms["ttfa"]);
        assert_eq!(total.send_lag, local.send_lag);
        assert_eq!(total.health.speech_end_lag, local.health.speech_end_lag);
        assert_eq!(
            total.health.from_actual_end["ttfa"],
            local.health.from_actual_end["ttfa"]
        );
        // Drained: a second drain adds nothing.
        let mut again = Recorder::default();
        store.drain_into(&mut again);
        assert!(again.histograms.is_empty() && again.send_lag.is_none());
    }
}
