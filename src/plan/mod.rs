//! Plans: loading YAML/TOML into the typed model, validating, and compiling for the engine.
//!
//! parse → validate → compile, with source positions all the way: every [`Diagnostic`] names the
//! file, line and column. The engine only ever receives a [`compile::CompiledPlan`].

pub mod compile;
pub mod diag;
pub mod load_shape;
pub mod model;
pub mod secrets;
pub mod shape;
pub mod target;
pub mod threshold_expr;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use compile::CompiledPlan;
pub use diag::{Diagnostic, PlanError, Warning};
pub use model::Plan;

use crate::plan_path;
use diag::{LocNode, Seg, at, did_you_mean, hint_for_serde_message, line_col, source_line};
use threshold_expr::Stat;

/// Metrics every run records without being asked.
pub const BUILTIN_METRICS: &[&str] = &["connect", "iteration"];

/// The rate a plan can threshold without recording anything.
pub const SUCCESS_RATE: &str = "success_rate";

/// The pass rate of all `check` steps.
pub const CHECKS: &str = "checks";

/// Audio-quality metrics recorded from every reply stream.
pub const QUALITY_METRICS: &[&str] = &["glitch", "frame_jitter", "reverse_barge_in"];

/// `http_chunks`: request sent → response read and parsed, per chunk.
pub const HTTP_CHUNK_LATENCY: &str = "chunk_latency";

/// Step actions that mean something over `http_chunks`.
pub const HTTP_STEP_ACTIONS: &[&str] = &["send_audio", "wait", "mark", "repeat"];

/// What `expect`/`check` can assert besides an event.
pub const AUDIO_EXPECTATIONS: &[&str] = &["audio_stops", "audio_resumes", "no_audio"];

/// Visit every step, nested `repeat` bodies included, with its document path.
pub fn walk_steps<'a>(
    steps: &'a [model::Step],
    prefix: &[Seg],
    f: &mut dyn FnMut(&'a model::Step, &[Seg]),
) {
    for (i, step) in steps.iter().enumerate() {
        let mut path = prefix.to_vec();
        path.push(Seg::Key("steps".into()));
        path.push(Seg::Index(i));
        f(step, &path);
        if let Some(inner) = &step.steps {
            walk_steps(inner, &path, f);
        }
    }
}

/// Events a step can `await` (servers may also send their own `type`s).
pub const KNOWN_EVENTS: &[&str] = &[
    "first_audio",
    "first_speech",
    "audio",
    "response_start",
    "response_end",
    "transcript",
    "interrupted",
    "resumed",
    "tool_call",
    "metrics",
    "error",
];

/// Largest WAV a plan may use (an hour of 48 kHz mono PCM16 is 330 MiB).
pub const MAX_WAV_BYTES: u64 = 512 << 20;

/// Largest plan text accepted (plans are a few KiB; this bounds parsing time and memory).
pub const MAX_PLAN_BYTES: usize = 1024 * 1024;

/// A parsed plan with its source kept for positioned diagnostics.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    pub plan: Plan,
    pub path: PathBuf,
    pub source: String,
    pub tree: Option<LocNode>,
}

impl LoadedPlan {
    /// Resolve a path written in the plan: relative to the plan's folder, or failing that
    /// to the working directory (so `audio_files/x.wav` works from `plans/` when run at the
    /// repository root).
    pub fn resolve(&self, written: &str) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let beside = base.join(written);
        if beside.exists() || Path::new(written).is_absolute() {
            return beside;
        }
        let cwd = PathBuf::from(written);
        if cwd.exists() { cwd } else { beside }
    }

    pub(crate) fn diag(
        &self,
        path: &[Seg],
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        at(
            &self.path,
            &self.source,
            self.tree.as_ref(),
            path,
            message,
            hint,
        )
    }
}

/// Whether a path names a TOML plan (otherwise YAML).
fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Read, parse and validate a plan file.
pub fn load(path: &Path) -> Result<LoadedPlan, PlanError> {
    let ext_ok = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["yaml", "yml", "toml"].contains(&e.to_ascii_lowercase().as_str()));
    let simple = |message: String, hint: Option<String>| {
        PlanError(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
            hint,
            source_line: None,
        }])
    };
    if !ext_ok {
        return Err(simple(
            "a plan file must end in .yaml, .yml or .toml".into(),
            None,
        ));
    }
    let source = std::fs::read_to_string(path).map_err(|e| {
        let hint = (e.kind() == std::io::ErrorKind::NotFound)
            .then(|| "check the path; plans usually live in plans/".to_string());
        simple(format!("cannot read plan: {e}"), hint)
    })?;
    parse_str(&source, path)
}

/// Parse and validate plan text; `path` names it in errors and picks the format.
pub fn parse_str(source: &str, path: &Path) -> Result<LoadedPlan, PlanError> {
    if source.len() > MAX_PLAN_BYTES {
        return Err(PlanError(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "the plan is {} bytes long; plans are limited to {} KiB",
                source.len(),
                MAX_PLAN_BYTES / 1024
            ),
            hint: None,
            source_line: None,
        }]));
    }
    let toml_format = is_toml(path);
    if toml_format && diag::toml_depth(source) > diag::MAX_DEPTH {
        return Err(PlanError(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "lists and tables nest more than {} levels deep",
                diag::MAX_DEPTH
            ),
            hint: None,
            source_line: None,
        }]));
    }
    let plan = if toml_format {
        toml::from_str::<Plan>(source).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(source, s.start));
            let message = e.message().trim().to_string();
            serde_diag(path, source, line, column, message)
        })?
    } else {
        serde_saphyr::from_str_with_options::<Plan>(source, diag::yaml_options()).map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
            serde_diag(path, source, line, column, saphyr_message(&e))
        })?
    };
    let loaded = LoadedPlan {
        plan,
        path: path.to_path_buf(),
        source: source.to_string(),
        tree: diag::locate_tree(source, toml_format),
    };
    validate(&loaded)?;
    Ok(loaded)
}

/// serde-saphyr's Display is `error: line L column C: MESSAGE` plus a snippet; keep MESSAGE.
fn saphyr_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest,
        _ => first,
    };
    // Custom (serde::de::Error::custom) messages carry their position again at the end.
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => &message[..i],
        _ => message,
    };
    message.trim().to_string()
}

fn serde_diag(path: &Path, source: &str, line: usize, column: usize, message: String) -> PlanError {
    let hint = hint_for_serde_message(&message);
    let message = if message.starts_with("missing field") {
        format!("{message} (required here)")
    } else {
        message
    };
    PlanError(vec![Diagnostic {
        file: path.to_path_buf(),
        line,
        column,
        message,
        hint,
        source_line: source_line(source, line),
    }])
}

/// Every metric name a plan records (built-ins plus `record:` names), in plan order.
pub fn recorded_metrics(plan: &Plan) -> Vec<String> {
    let mut names: Vec<String> = BUILTIN_METRICS.iter().map(|s| s.to_string()).collect();
    let http_chunks = plan.target.protocol == model::ProtocolKind::HttpChunks;
    if http_chunks {
        names.push(HTTP_CHUNK_LATENCY.to_string());
        names.extend(plan.target.http.capture.keys().cloned());
    }
    for (si, sc) in plan.scenarios.iter().enumerate() {
        walk_steps(&sc.steps, &plan_path!["scenarios", si], &mut |step, _| {
            let captured = step.capture.iter().flat_map(|c| c.values());
            for r in step.record.iter().chain(captured) {
                if !names.contains(r) {
                    names.push(r.clone());
                }
            }
        });
    }
    if !http_chunks {
        names.extend(QUALITY_METRICS.iter().map(|s| s.to_string()));
    }
    names
}

/// Every `mark:` name and implicit mark a plan can refer to with `from:`.
fn known_marks(plan: &Plan) -> Vec<String> {
    let mut marks: Vec<String> = KNOWN_EVENTS.iter().map(|s| s.to_string()).collect();
    marks.extend(
        [
            "interrupt",
            "speech_start",
            "speech_end",
            "connected",
            "audio_stops",
            "audio_resumes",
        ]
        .map(String::from),
    );
    for (si, sc) in plan.scenarios.iter().enumerate() {
        walk_steps(&sc.steps, &plan_path!["scenarios", si], &mut |step, _| {
            let named = [&step.mark, &step.await_, &step.expect, &step.check];
            marks.extend(named.into_iter().flatten().cloned());
        });
    }
    marks
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Semantic checks that serde cannot express; all problems at once.
fn validate(lp: &LoadedPlan) -> Result<(), PlanError> {
    let plan = &lp.plan;
    let mut errs = Vec::new();

    if plan.name.trim().is_empty() {
        errs.push(lp.diag(&plan_path!["name"], "the plan name is empty", None));
    }

    // target
    let url = plan.target.url.trim();
    let http_chunks = plan.target.protocol == model::ProtocolKind::HttpChunks;
    if http_chunks {
        validate_http(lp, &mut errs);
    } else if url != "builtin" && !(url.starts_with("ws://") || url.starts_with("wss://")) {
        errs.push(lp.diag(
            &plan_path!["target", "url"],
            format!(
                "target url `{url}` is not supported: expected `builtin`, `ws://…` or `wss://…`"
            ),
            Some("use `builtin` for the embedded reference agent".into()),
        ));
    }
    if !(8_000..=48_000).contains(&plan.target.rate()) {
        errs.push(lp.diag(
            &plan_path!["target", "sample_rate"],
            format!(
                "sample_rate {} is outside 8000..=48000 Hz",
                plan.target.rate()
            ),
            None,
        ));
    }
    let agent = &plan.target.agent;
    for (name, p) in [
        ("tool_fraction", agent.tool_fraction),
        ("drop", agent.faults.drop),
        ("stall", agent.faults.stall),
        ("malformed", agent.faults.malformed),
        ("http_error", agent.faults.http_error),
        ("non_json", agent.faults.non_json),
    ] {
        if let Some(p) = p
            && !(0.0..=1.0).contains(&p)
        {
            let path = if name == "tool_fraction" {
                plan_path!["target", "agent", name].to_vec()
            } else {
                plan_path!["target", "agent", "faults", name].to_vec()
            };
            errs.push(lp.diag(
                &path,
                format!("`{name}` is a probability: 0..1, found {p}"),
                None,
            ));
        }
    }

    // load
    let load = &plan.load;
    let users = load.users.clone().unwrap_or_else(model::default_users);
    if users.0.is_empty() {
        errs.push(lp.diag(
            &plan_path!["load", "users"],
            "the users sweep is empty",
            None,
        ));
    }
    for (i, &n) in users.0.iter().enumerate() {
        if n == 0 || n > 100_000 {
            errs.push(lp.diag(
                &plan_path!["load", "users", i],
                format!("users must be 1..=100000, found {n}"),
                None,
            ));
        }
    }
    if load.iterations == Some(0) {
        errs.push(lp.diag(
            &plan_path!["load", "iterations"],
            "iterations must be at least 1",
            None,
        ));
    }
    if load.duration.is_some_and(|d| d.0.is_zero()) {
        errs.push(lp.diag(
            &plan_path!["load", "duration"],
            "duration must be longer than 0",
            None,
        ));
    }
    shape::validate(lp, &mut errs);

    // scenarios
    if plan.scenarios.is_empty() {
        errs.push(lp.diag(
            &plan_path!["scenarios"],
            "a plan needs at least one scenario",
            None,
        ));
    }
    let mut names = BTreeSet::new();
    let mut total_weight = 0.0;
    let marks = known_marks(plan);
    let mut generated = Duration::ZERO;
    let mut over_budget = false;
    for (si, sc) in plan.scenarios.iter().enumerate() {
        if !names.insert(sc.name.as_str()) {
            errs.push(lp.diag(
                &plan_path!["scenarios", si, "name"],
                format!("scenario name `{}` is used twice", sc.name),
                None,
            ));
        }
        if !sc.weight.is_finite() || sc.weight < 0.0 {
            errs.push(lp.diag(
                &plan_path!["scenarios", si, "weight"],
                format!("weight must be a non-negative number, found {}", sc.weight),
                None,
            ));
        } else {
            total_weight += sc.weight;
        }
        if sc.steps.is_empty() {
            errs.push(lp.diag(
                &plan_path!["scenarios", si, "steps"],
                format!("scenario `{}` has no steps", sc.name),
                None,
            ));
        }
        walk_steps(
            &sc.steps,
            &plan_path!["scenarios", si],
            &mut |step, path| {
                validate_step(lp, path, step, &marks, &mut errs);
                // Generated audio is held in memory once per step: bound it before compiling.
                let specs = [
                    step.send_audio.as_ref(),
                    step.interrupt.as_ref().and_then(|i| i.audio.as_ref()),
                ];
                for spec in specs.into_iter().flatten() {
                    let t = spec.table();
                    let parts = [t.silence, t.tone, t.noise, t.trailing_silence];
                    generated += parts.iter().flatten().map(|d| d.0).sum::<Duration>();
                    if !over_budget && generated > compile::MAX_AUDIO {
                        over_budget = true;
                        errs.push(lp.diag(
                            path,
                            format!(
                                "the plan generates more than {} minutes of audio in all",
                                compile::MAX_AUDIO.as_secs() / 60
                            ),
                            Some("shorten the clips, or put one clip in a `repeat`".into()),
                        ));
                    }
                }
            },
        );
    }
    if !plan.scenarios.is_empty() && total_weight <= 0.0 {
        errs.push(lp.diag(
            &plan_path!["scenarios"],
            "the scenario weights add up to 0: no scenario could ever run",
            Some("give at least one scenario a positive `weight`".into()),
        ));
    }

    // thresholds
    let metrics = recorded_metrics(plan);
    let mut known: Vec<&str> = metrics.iter().map(String::as_str).collect();
    known.push(SUCCESS_RATE);
    known.push(CHECKS);
    for (name, exprs) in &plan.thresholds {
        let path = plan_path!["thresholds", name.as_str()];
        if !known.contains(&name.as_str()) {
            let hint = did_you_mean(name, &known)
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("metrics in this plan: {}", known.join(", ")));
            errs.push(lp.diag(
                &path,
                format!("threshold on `{name}`, but no step records a metric of that name"),
                Some(hint),
            ));
            continue;
        }
        if exprs.0.is_empty() {
            errs.push(lp.diag(&path, format!("threshold `{name}` has an empty list"), None));
        }
        for e in &exprs.0 {
            if name == SUCCESS_RATE || name == CHECKS {
                if e.stat.is_some_and(|s| s != Stat::Rate) || e.limit_is_duration {
                    errs.push(lp.diag(
                        &path,
                        format!("`{name}` is a ratio 0..1: write e.g. `> 0.99`, not `{e}`"),
                        None,
                    ));
                } else if !(0.0..=1.0).contains(&e.limit) {
                    errs.push(lp.diag(
                        &path,
                        format!(
                            "`{name}: {e}` compares a ratio with {}, outside 0..1",
                            e.limit
                        ),
                        None,
                    ));
                } else {
                    use threshold_expr::Op;
                    let always = matches!((e.op, e.limit), (Op::Ge, l) if l <= 0.0)
                        || matches!((e.op, e.limit), (Op::Le, l) if l >= 1.0);
                    let never = matches!((e.op, e.limit), (Op::Lt, l) if l <= 0.0)
                        || matches!((e.op, e.limit), (Op::Gt, l) if l >= 1.0);
                    if always || never {
                        errs.push(lp.diag(
                            &path,
                            format!(
                                "`{name}: {e}` can never {}",
                                if always { "fail" } else { "pass" }
                            ),
                            None,
                        ));
                    }
                }
            } else {
                match e.stat {
                    None | Some(Stat::Rate) => errs.push(lp.diag(
                        &path,
                        format!("threshold `{e}` on `{name}` needs a statistic"),
                        Some(
                            "e.g. `p95 < 1.5s` (p50, p90, p95, p99, mean, min, max, count)".into(),
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
    }

    if errs.is_empty() {
        Ok(())
    } else {
        Err(PlanError(errs))
    }
}

fn validate_step(
    lp: &LoadedPlan,
    path: &[Seg],
    step: &model::Step,
    marks: &[String],
    errs: &mut Vec<Diagnostic>,
) {
    let actions = step.actions();
    match actions.as_slice() {
        [] => {
            errs.push(lp.diag(
                path,
                "this step has no action",
                Some(format!(
                    "a step needs exactly one of: {}",
                    model::STEP_ACTIONS.join(", ")
                )),
            ));
            return;
        }
        [_] => {}
        many => {
            errs.push(lp.diag(
                path,
                format!(
                    "this step has {} actions ({}): one action per step",
                    many.len(),
                    many.join(", ")
                ),
                Some("split it into one step per action".into()),
            ));
            return;
        }
    }
    let action = actions[0];
    let with = |key: &str| {
        let mut p = path.to_vec();
        p.push(Seg::Key(key.into()));
        p
    };
    // Which modifiers go with which action.
    let allowed: &[&str] = match action {
        "await" => &["record", "from", "timeout", "capture"],
        "expect" => &["record", "from", "within", "where", "capture"],
        "check" => &["record", "from", "within", "where", "capture", "name"],
        "repeat" => &["steps"],
        _ => &[],
    };
    for (key, present) in [
        ("record", step.record.is_some()),
        ("from", step.from.is_some()),
        ("timeout", step.timeout.is_some()),
        ("within", step.within.is_some()),
        ("where", step.where_.is_some()),
        ("capture", step.capture.is_some()),
        ("name", step.name.is_some()),
        ("steps", step.steps.is_some()),
    ] {
        if present && !allowed.contains(&key) {
            errs.push(lp.diag(
                &with(key),
                format!("`{key}` does not apply to `{action}` steps"),
                (!allowed.is_empty()).then(|| format!("`{action}` takes: {}", allowed.join(", "))),
            ));
        }
    }
    if let Some(name) = &step.send
        && crate::protocol::Control::from_name(name).is_none()
    {
        let hint = did_you_mean(name, crate::protocol::Control::NAMES)
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| {
                format!(
                    "expected one of {}",
                    crate::protocol::Control::NAMES.join(", ")
                )
            });
        errs.push(lp.diag(
            &with("send"),
            format!("unknown control message `{name}`"),
            Some(hint),
        ));
    }
    for (key, event) in [
        ("await", &step.await_),
        ("expect", &step.expect),
        ("check", &step.check),
    ] {
        let Some(event) = event else { continue };
        // Servers may send their own types, so unknown names are allowed, but a near miss of a
        // known name is almost certainly a typo that would otherwise hang until the timeout.
        let mut names: Vec<&str> = KNOWN_EVENTS.to_vec();
        if key != "await" {
            names.extend(AUDIO_EXPECTATIONS);
        }
        if !names.contains(&event.as_str())
            && let Some(s) = did_you_mean(event, &names)
        {
            errs.push(lp.diag(
                &with(key),
                format!("unknown event `{event}`"),
                Some(format!("did you mean `{s}`?")),
            ));
        }
        if key != "await" && AUDIO_EXPECTATIONS.contains(&event.as_str()) && step.where_.is_some() {
            errs.push(lp.diag(
                &with("where"),
                format!("`where` applies to events, not `{event}`"),
                None,
            ));
        }
    }
    if let Some(from) = &step.from
        && !marks.contains(from)
    {
        let names: Vec<&str> = marks.iter().map(String::as_str).collect();
        errs.push(lp.diag(
            &with("from"),
            format!("`from: {from}` names no mark or event of this plan"),
            did_you_mean(from, &names).map(|s| format!("did you mean `{s}`?")),
        ));
    }
    let metric_names = step.record.iter().map(|r| ("record", r)).chain(
        step.capture
            .iter()
            .flat_map(|c| c.values().map(|v| ("capture", v))),
    );
    for (key, name) in metric_names {
        if !is_identifier(name) {
            errs.push(lp.diag(
                &with(key),
                format!("metric name `{name}` must be lowercase letters, digits and `_`"),
                None,
            ));
        } else if name == SUCCESS_RATE || name == CHECKS {
            errs.push(lp.diag(&with(key), format!("`{name}` is reserved"), None));
        }
    }
    if let Some(mark) = &step.mark
        && !is_identifier(mark)
    {
        errs.push(lp.diag(
            &with("mark"),
            format!("mark name `{mark}` must be lowercase letters, digits and `_`"),
            None,
        ));
    }
    if let Some(n) = step.repeat {
        if n == 0 || n > 10_000 {
            errs.push(lp.diag(
                &with("repeat"),
                format!("repeat must be 1..=10000, found {n}"),
                None,
            ));
        }
        if step.steps.as_ref().is_none_or(|s| s.is_empty()) {
            errs.push(lp.diag(
                &with("repeat"),
                "`repeat` needs a non-empty `steps` list",
                None,
            ));
        }
    }
    if let Some(audio) = &step.send_audio {
        validate_audio(lp, &with("send_audio"), audio, errs);
    }
    if let Some(i) = &step.interrupt
        && let Some(audio) = &i.audio
    {
        let mut p = with("interrupt");
        p.push(Seg::Key("audio".into()));
        validate_audio(lp, &p, audio, errs);
    }
}

fn validate_audio(
    lp: &LoadedPlan,
    path: &[Seg],
    audio: &model::AudioSpec,
    errs: &mut Vec<Diagnostic>,
) {
    let t = audio.table();
    let sources = t.sources();
    if sources.len() != 1 {
        errs.push(lp.diag(
            path,
            format!(
                "audio needs exactly one source of file, silence, tone, noise; found {}",
                if sources.is_empty() {
                    "none".to_string()
                } else {
                    sources.join(", ")
                }
            ),
            None,
        ));
        return;
    }
    let ms = std::time::Duration::from_millis;
    if let Some(frame) = t.frame
        && !(ms(10)..=ms(100)).contains(&frame.0)
    {
        errs.push(lp.diag(path, "frame must be 10ms..100ms", None));
    }
    for d in [t.silence, t.tone, t.noise].into_iter().flatten() {
        if d.0.is_zero() || d.0 > ms(600_000) {
            errs.push(lp.diag(
                path,
                "generated audio must be longer than 0 and at most 10m",
                None,
            ));
        }
    }
    if let Some(d) = t.trailing_silence
        && d.0 > ms(600_000)
    {
        errs.push(lp.diag(path, "trailing_silence must be at most 10m", None));
    }
    if let Some(level) = t.level
        && !(-120.0..=0.0).contains(&level)
    {
        errs.push(lp.diag(
            path,
            format!("level is in dBFS: -120..0, found {level}"),
            None,
        ));
    }
    if let Some(freq) = t.freq
        && !(20.0..=f64::from(lp.plan.target.rate()) / 2.0).contains(&freq)
    {
        errs.push(lp.diag(
            path,
            format!("freq {freq} Hz is outside 20 Hz..Nyquist"),
            None,
        ));
    }
    if let Some(file) = &t.file {
        let mut file_path = path.to_vec();
        file_path.push(Seg::Key("file".into()));
        let path = file_path.as_slice();
        let resolved = lp.resolve(file);
        if resolved.is_file() {
            check_wav_format(lp, path, file, &resolved, errs);
        } else {
            errs.push(lp.diag(
                path,
                format!(
                    "audio file `{file}` not found (looked at {})",
                    resolved.display()
                ),
                Some(
                    "paths are relative to the plan file's folder or the working directory".into(),
                ),
            ));
        }
    }
}

/// `protocol: http_chunks`: the URL, the `target.http` table, and which steps apply.
fn validate_http(lp: &LoadedPlan, errs: &mut Vec<Diagnostic>) {
    let plan = &lp.plan;
    let url = plan.target.url.trim();
    if url != "builtin" && !(url.starts_with("http://") || url.starts_with("https://")) {
        errs.push(lp.diag(
            &plan_path!["target", "url"],
            format!(
                "target url `{url}` is not supported with `protocol: http_chunks`: expected `builtin`, `http://…` or `https://…`"
            ),
            None,
        ));
    }
    let http = &plan.target.http;
    let ms = std::time::Duration::from_millis;
    if let Some(chunk) = http.chunk
        && !(ms(20)..=ms(600_000)).contains(&chunk.0)
    {
        errs.push(lp.diag(
            &plan_path!["target", "http", "chunk"],
            "chunk must be 20ms..10m",
            None,
        ));
    }
    if http.response_timeout.is_some_and(|t| t.0.is_zero()) {
        errs.push(lp.diag(
            &plan_path!["target", "http", "response_timeout"],
            "response_timeout must be longer than 0",
            None,
        ));
    }
    if let Some(m) = &http.method
        && !["POST", "PUT"].contains(&m.to_ascii_uppercase().as_str())
    {
        errs.push(lp.diag(
            &plan_path!["target", "http", "method"],
            format!("method `{m}` is not supported: use POST or PUT"),
            None,
        ));
    }
    for (metric, pointer) in &http.capture {
        let path = plan_path!["target", "http", "capture", metric.as_str()];
        if !is_identifier(metric) {
            errs.push(lp.diag(
                &path,
                format!("metric name `{metric}` must be lowercase letters, digits and `_`"),
                None,
            ));
        } else if [SUCCESS_RATE, CHECKS, HTTP_CHUNK_LATENCY]
            .iter()
            .chain(BUILTIN_METRICS)
            .any(|r| r == metric)
        {
            errs.push(lp.diag(&path, format!("`{metric}` is reserved"), None));
        }
        if !pointer.starts_with('/') {
            errs.push(lp.diag(
                &path,
                format!("`{pointer}` is not a JSON pointer"),
                Some(format!(
                    "write it from the root, e.g. `/{}`",
                    pointer.trim_start_matches(['.', '$'])
                )),
            ));
        }
    }
    for (si, sc) in plan.scenarios.iter().enumerate() {
        walk_steps(
            &sc.steps,
            &plan_path!["scenarios", si],
            &mut |step, path| {
                for action in step.actions() {
                    if !HTTP_STEP_ACTIONS.contains(&action) {
                        let mut p = path.to_vec();
                        p.push(Seg::Key(action.into()));
                        errs.push(lp.diag(
                        &p,
                        format!("`{action}` steps do not apply to `protocol: http_chunks`"),
                        Some(format!(
                            "over HTTP a call takes: {}; response fields are recorded with `target.http.capture`",
                            HTTP_STEP_ACTIONS.join(", ")
                        )),
                    ));
                    }
                }
            },
        );
    }
}

/// Plans send mono speech of at least 16 bits: a stereo file would be mixed down (a call
/// recording with the caller on one channel and the agent on the other would send both voices)
/// and 8-bit PCM is too coarse for speech recognition to be representative. Both are rejected
/// with the `sox` command that converts the file.
fn check_wav_format(
    lp: &LoadedPlan,
    path: &[Seg],
    file: &str,
    resolved: &Path,
    errs: &mut Vec<Diagnostic>,
) {
    let format = match crate::audio::wav_format(resolved) {
        Ok(f) => f,
        Err(e) => {
            errs.push(lp.diag(path, e.to_string(), None));
            return;
        }
    };
    // Files are decoded whole into memory at compile time: refuse absurd ones up front.
    let size = std::fs::metadata(resolved).map_or(0, |m| m.len());
    if size > MAX_WAV_BYTES {
        errs.push(lp.diag(
            path,
            format!(
                "audio file `{file}` is {} MiB; WAVs are limited to {} MiB",
                size >> 20,
                MAX_WAV_BYTES >> 20
            ),
            Some("cut it to the part the caller says, e.g. `sox in.wav out.wav trim 0 30`".into()),
        ));
        return;
    }
    let stem = Path::new(file)
        .file_stem()
        .map_or_else(|| "out".into(), |s| s.to_string_lossy().into_owned());
    let beside = |suffix: &str| {
        Path::new(file)
            .with_file_name(format!("{stem}-{suffix}.wav"))
            .display()
            .to_string()
    };
    let (mono, wide) = (beside("mono"), beside("16bit"));
    if format.channels > 1 {
        errs.push(lp.diag(
            path,
            format!(
                "audio file `{file}` has {} channels: send_audio streams mono speech",
                format.channels
            ),
            Some(format!(
                "mix it down with `sox {file} -c 1 {mono}`, or keep only the caller's \
                 channel with `sox {file} {mono} remix 1`"
            )),
        ));
    }
    if format.bits <= 8 && !format.float {
        errs.push(lp.diag(
            path,
            format!("audio file `{file}` is 8-bit PCM: too coarse for speech; use 16-bit"),
            Some(format!(
                "convert it with `sox {file} -b 16 -e signed-integer {wide}`"
            )),
        ));
    }
}

/// Fuzzing entry point (also run by `tests/fuzz_regressions.rs` on the committed corpus):
/// parse, validate and compile plan text as YAML or TOML. Any outcome but a panic, a hang or an
/// unbounded allocation is fine; returns whether the plan compiled.
#[doc(hidden)]
pub fn fuzz_plan(text: &str, toml_format: bool) -> bool {
    let name = if toml_format {
        "fuzz/plan.toml"
    } else {
        "fuzz/plan.yaml"
    };
    for w in secrets::scan_source(text, Path::new(name), toml_format) {
        let _ = w.to_string();
    }
    match parse_str(text, Path::new(name)) {
        Ok(lp) => {
            // Rendering diagnostics must not panic either (odd positions, odd characters).
            compile::compile(&lp).map_err(|e| e.to_string()).is_ok()
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// Fuzzing entry point for the one-line languages: threshold expressions, durations and
/// jitter distributions. What parses must render to text that parses again, and sampling a
/// distribution must stay finite. `Err` describes a broken invariant (the fuzz target panics
/// on it).
#[doc(hidden)]
pub fn fuzz_scalar(text: &str) -> Result<(), String> {
    use rand::SeedableRng;
    if let Ok(e) = text.parse::<threshold_expr::ThresholdExpr>() {
        let again: threshold_expr::ThresholdExpr = e
            .to_string()
            .parse()
            .map_err(|err| format!("threshold `{e}` does not re-parse: {err}"))?;
        if again != e {
            return Err(format!("threshold `{e}` re-parses as {again:?}"));
        }
    }
    if let Ok(d) = crate::distribution::parse_duration(text) {
        crate::distribution::parse_duration(&crate::distribution::format_duration(d))
            .map_err(|err| format!("duration {d:?} does not re-parse: {err}"))?;
    }
    if let Ok(d) = text.parse::<crate::distribution::Dist>() {
        d.to_string()
            .parse::<crate::distribution::Dist>()
            .map_err(|err| format!("jitter `{d}` does not re-parse: {err}"))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(text.len() as u64);
        for _ in 0..8 {
            let _ = d.sample(&mut rng);
        }
        let _ = d.mean();
    }
    Ok(())
}
