//! Compiling scenarios: unrolling `repeat`, loading and generating audio once (within the
//! memory budget), and turning each step into an [`Action`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::audio::{self, Clip};
use crate::distribution::{Dist, format_duration};
use crate::plan::LoadedPlan;
use crate::plan::diag::{Diagnostic, Seg};
use crate::plan::model::{AudioSpec, Plan, Step};
use crate::protocol::Control;

use super::step::{conditions, split_path};
use super::{
    Action, AudioOut, Capture, DEFAULT_AWAIT_TIMEOUT, DEFAULT_FRAME, Expectation, MAX_AUDIO_SECS,
    MAX_STEPS, StepSpec,
};

pub(super) struct Cx<'a> {
    /// The plan file (positions, paths).
    pub(super) lp: &'a LoadedPlan,
    /// The plan being compiled: `lp.plan`, or one data row's rendering of it.
    pub(super) plan: &'a Plan,
    /// Prefixed to errors (`data row 3: `) while compiling a row's rendering.
    pub(super) row_note: String,
    /// Audio ready to send, by its spec: each distinct clip is built (and counted) once,
    /// whichever steps and data rows use it.
    outs: HashMap<String, (Arc<Clip>, Option<String>, String)>,
    /// `use:` nesting, against runaway recursion.
    depth: usize,
    rate: u32,
    clips: &'a mut HashMap<PathBuf, Arc<Clip>>,
    errs: &'a mut Vec<Diagnostic>,
    /// Samples of audio held so far (against [`MAX_AUDIO_SECS`]).
    audio_samples: u64,
    /// Set once a limit was hit: compiling stops, with one error.
    gave_up: bool,
}

/// Compile state carried from one data row's rendering to the next.
#[derive(Default)]
pub(super) struct Carry {
    outs: HashMap<String, (Arc<Clip>, Option<String>, String)>,
    audio_samples: u64,
    gave_up: bool,
}

impl<'a> Cx<'a> {
    pub(super) fn new(
        lp: &'a LoadedPlan,
        rate: u32,
        clips: &'a mut HashMap<PathBuf, Arc<Clip>>,
        errs: &'a mut Vec<Diagnostic>,
    ) -> Self {
        Cx {
            lp,
            plan: &lp.plan,
            row_note: String::new(),
            outs: HashMap::new(),
            depth: 0,
            rate,
            clips,
            errs,
            audio_samples: 0,
            gave_up: false,
        }
    }
    /// Report a problem at `path`.
    pub(super) fn error_at(&mut self, path: &[Seg], message: String) {
        self.errs.push(self.lp.diag(path, message, None));
    }

    pub(super) fn push(&mut self, d: Diagnostic) {
        self.errs.push(d);
    }

    /// Whether a limit stopped compiling.
    pub(super) fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// What the next data row's compile carries over: built audio, the audio budget.
    pub(super) fn suspend(self) -> Carry {
        Carry {
            outs: self.outs,
            audio_samples: self.audio_samples,
            gave_up: self.gave_up,
        }
    }

    /// Go on from an earlier row's [`Carry`].
    pub(super) fn resume(&mut self, c: Carry) {
        self.outs = c.outs;
        self.audio_samples = c.audio_samples;
        self.gave_up = c.gave_up;
    }

    fn error(&mut self, path: &[Seg], key: &str, message: String) {
        let mut p = path.to_vec();
        p.push(Seg::Key(key.into()));
        let message = format!("{}{message}", self.row_note);
        self.errs.push(self.lp.diag(&p, message, None));
    }

    /// Reserve room for `d` of audio, or report (once) that the plan holds too much.
    fn budget(&mut self, d: Duration, path: &[Seg], key: &str) -> bool {
        let samples = (d.as_secs_f64() * f64::from(self.rate)).ceil() as u64;
        self.audio_samples = self.audio_samples.saturating_add(samples);
        if self.audio_samples > MAX_AUDIO_SECS * u64::from(self.rate) {
            self.error(
                path,
                key,
                format!(
                    "the plan's audio adds up to more than {} minutes (each generated clip and \
                     each file counts once; `repeat` reuses its steps' audio)",
                    MAX_AUDIO_SECS / 60
                ),
            );
            self.gave_up = true;
            return false;
        }
        true
    }

    fn audio(&mut self, spec: &AudioSpec, path: &[Seg], key: &str) -> Option<AudioOut> {
        let t = spec.table();
        // Data rows: each distinct clip is built and counted once, shared by the rows using it.
        let shared = !self.row_note.is_empty();
        let cache_key = format!("{t:?}");
        if shared && let Some((clip, text, label)) = self.outs.get(&cache_key) {
            return Some(AudioOut {
                clip: clip.clone(),
                frame: t.frame.map_or(DEFAULT_FRAME, |f| f.0),
                pacing: t.pacing.unwrap_or_default(),
                label: label.clone(),
                text: text.clone(),
            });
        }
        let out = self.build_audio(&t, path, key)?;
        if shared {
            self.outs.insert(
                cache_key,
                (out.clip.clone(), out.text.clone(), out.label.clone()),
            );
        }
        Some(out)
    }

    fn build_audio(
        &mut self,
        t: &crate::plan::model::AudioTable,
        path: &[Seg],
        key: &str,
    ) -> Option<AudioOut> {
        let rate = self.rate;
        let generated = [t.silence, t.tone, t.noise, t.trailing_silence];
        let generated: Duration = generated.iter().flatten().map(|d| d.0).sum();
        if !self.budget(generated, path, key) {
            return None;
        }
        let level = t.level.unwrap_or(-20.0);
        let mut text = None;
        let (clip, label) = if let Some(file) = &t.file {
            let resolved = self.lp.resolve(file);
            let clip = match self.clips.get(&resolved) {
                Some(c) => (**c).clone(),
                None => match audio::load_wav(&resolved, rate) {
                    Ok(c) => {
                        if !self.budget(c.duration(), path, key) {
                            return None;
                        }
                        self.clips.insert(resolved.clone(), Arc::new(c.clone()));
                        c
                    }
                    Err(e) => {
                        self.error(path, key, e.to_string());
                        return None;
                    }
                },
            };
            text = std::fs::read_to_string(resolved.with_extension("txt"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty());
            (clip, file.clone())
        } else if let Some(d) = t.silence {
            (
                audio::silence(d.0, rate),
                format!("silence {}", format_duration(d.0)),
            )
        } else if let Some(d) = t.tone {
            let freq = t.freq.unwrap_or(440.0);
            (
                audio::tone(d.0, freq, level, rate),
                format!("tone {} {freq}Hz {level}dBFS", format_duration(d.0)),
            )
        } else if let Some(d) = t.noise {
            let seed = self.plan.load.seed;
            (
                audio::noise(d.0, level, rate, seed),
                format!("noise {} {level}dBFS", format_duration(d.0)),
            )
        } else {
            return None; // validated: exactly one source
        };
        let clip = match t.trailing_silence {
            Some(d) => clip.with_trailing_silence(d.0),
            None => clip,
        };
        Some(AudioOut {
            clip: Arc::new(clip),
            frame: t.frame.map_or(DEFAULT_FRAME, |f| f.0),
            pacing: t.pacing.unwrap_or_default(),
            label,
            text,
        })
    }

    pub(super) fn steps(
        &mut self,
        scenario: &str,
        steps: &[Step],
        prefix: &[Seg],
        out: &mut Vec<StepSpec>,
    ) {
        let mut list = prefix.to_vec();
        list.push(Seg::Key("steps".into()));
        self.steps_list(scenario, steps, &list, out);
    }

    /// [`Self::steps`] of the step list at `list` (a scenario's `steps`, a fragment).
    fn steps_list(
        &mut self,
        scenario: &str,
        steps: &[Step],
        list: &[Seg],
        out: &mut Vec<StepSpec>,
    ) {
        for (i, step) in steps.iter().enumerate() {
            let mut path = list.to_vec();
            path.push(Seg::Index(i));
            if self.gave_up {
                return;
            }
            if let (Some(n), Some(body)) = (step.repeat, &step.steps) {
                // Compile the body once (audio generated once, shared) and unroll copies.
                let mut once = Vec::new();
                self.steps(scenario, body, &path, &mut once);
                let total = (n as usize).saturating_mul(once.len());
                if !self.gave_up && out.len().saturating_add(total) > MAX_STEPS {
                    self.error(
                        &path,
                        "repeat",
                        format!("scenario `{scenario}` unrolls to more than {MAX_STEPS} steps"),
                    );
                    self.gave_up = true;
                }
                if self.gave_up {
                    return;
                }
                for _ in 0..n {
                    out.extend(once.iter().cloned());
                }
                continue;
            }
            if let Some(name) = &step.use_ {
                let Some(body) = self.plan.fragments.get(name) else {
                    continue; // checked at load
                };
                if self.depth >= crate::plan::diag::MAX_DEPTH {
                    self.error(
                        &path,
                        "use",
                        format!(
                            "fragments nest more than {} levels deep",
                            crate::plan::diag::MAX_DEPTH
                        ),
                    );
                    self.gave_up = true;
                    return;
                }
                let list = [Seg::Key("fragments".into()), Seg::Key(name.clone())];
                let mut once = Vec::new();
                self.depth += 1;
                self.steps_list(scenario, body, &list, &mut once);
                self.depth -= 1;
                if !self.gave_up && out.len().saturating_add(once.len()) > MAX_STEPS {
                    self.error(
                        &path,
                        "use",
                        format!("scenario `{scenario}` unrolls to more than {MAX_STEPS} steps"),
                    );
                    self.gave_up = true;
                }
                if self.gave_up {
                    return;
                }
                out.extend(once);
                continue;
            }
            let line = self.lp.line_of(&path);
            let Some(action) = self.action(scenario, step, &path, i, line) else {
                continue;
            };
            out.push(StepSpec {
                index: i,
                line,
                action,
                groups: crate::plan::threshold_expr::step_groups(&self.lp.plan, scenario, step),
            });
        }
    }

    fn action(
        &mut self,
        scenario: &str,
        step: &Step,
        path: &[Seg],
        i: usize,
        line: usize,
    ) -> Option<Action> {
        let capture: Vec<Capture> = step
            .capture
            .iter()
            .flatten()
            .map(|(field, metric)| Capture {
                path: split_path(field),
                metric: metric.clone(),
            })
            .collect();
        if let Some(spec) = &step.send_audio {
            return self.audio(spec, path, "send_audio").map(Action::SendAudio);
        }
        if let Some(name) = &step.send {
            return Control::from_name(name).map(Action::Send); // validated
        }
        if let Some(event) = &step.await_ {
            return Some(Action::Await {
                event: event.clone(),
                record: step.record.clone(),
                from: step.from.clone(),
                timeout: step.timeout.map_or(DEFAULT_AWAIT_TIMEOUT, |t| t.0),
                capture,
            });
        }
        if let Some(w) = &step.wait {
            return Some(Action::Wait(w.0.clone()));
        }
        if let Some(spec) = &step.interrupt {
            let audio = match &spec.audio {
                Some(a) => Some(self.audio(a, path, "interrupt")?),
                None => None,
            };
            return Some(Action::Interrupt {
                after: spec
                    .after
                    .as_ref()
                    .map_or(Dist::Fixed(Duration::ZERO), |j| j.0.clone()),
                audio,
                explicit: spec.explicit,
                speech_end: spec.speech_end.unwrap_or(true),
            });
        }
        if let Some(m) = &step.mark {
            return Some(Action::Mark(m.clone()));
        }
        if let Some(v) = &step.send_json {
            return crate::plan::json_template::compile_step(self.lp, v, path, self.errs)
                .map(Action::SendJson);
        }
        let (target, check) = match (&step.expect, &step.check) {
            (Some(e), _) => (e, None),
            (None, Some(c)) => (
                c,
                Some(step.name.clone().unwrap_or_else(|| {
                    let at = if line > 0 {
                        format!("line {line}")
                    } else {
                        format!("step {}", i + 1)
                    };
                    format!("{scenario}: {c} ({at})")
                })),
            ),
            _ => return None, // validated: one action
        };
        let what = match target.as_str() {
            "audio_stops" => Expectation::AudioStops,
            "audio_resumes" => Expectation::AudioResumes,
            "no_audio" => Expectation::NoAudio,
            name => {
                let conditions = match step.where_.as_ref().map(conditions).transpose() {
                    Ok(c) => c.unwrap_or_default(),
                    Err(e) => {
                        self.error(path, "where", e.to_string());
                        return None;
                    }
                };
                Expectation::Event {
                    name: name.to_string(),
                    conditions,
                }
            }
        };
        let default_within = if matches!(what, Expectation::Event { .. }) {
            DEFAULT_AWAIT_TIMEOUT
        } else {
            Duration::from_secs(1)
        };
        Some(Action::Expect {
            what,
            record: step.record.clone(),
            from: step.from.clone(),
            within: step.within.map_or(default_within, |w| w.0),
            capture,
            check,
        })
    }
}
