//! Plan parsing: good plans load, bad plans give file:line:column errors with hints, the
//! checked-in schema is current.

use std::path::Path;

use planrun::plan::{self, PlanError};

fn parse(name: &str, text: &str) -> Result<plan::LoadedPlan, PlanError> {
    // Paths are resolved against the working directory (the crate root under cargo test).
    plan::parse_str(text, Path::new(name))
}

fn err(name: &str, text: &str) -> String {
    match parse(name, text) {
        Ok(_) => panic!("{name} should not parse"),
        Err(e) => e.to_string(),
    }
}

const GOOD_YAML: &str = "\
name: t
target:
  url: builtin
load:
  users: 2
  iterations: 3
scenarios:
  - name: a
    steps:
      - send_audio: audio_files/hello.wav
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 2s
      - wait: 100ms..200ms
thresholds:
  ttfa: [p95 < 1s, p99 < 2s]
  success_rate: \"> 0.9\"
";

#[test]
fn every_example_plan_validates_and_compiles() {
    let mut seen = 0;
    for entry in std::fs::read_dir("plans").unwrap() {
        let path = entry.unwrap().path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !["yaml", "yml", "toml"].contains(&ext) {
            continue;
        }
        let lp = plan::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        plan::compile::compile(&lp).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 2, "expected example plans in plans/");
}

#[test]
fn yaml_and_toml_give_the_same_model() {
    let y = parse("t.yaml", GOOD_YAML).unwrap();
    let toml_text = r#"
name = "t"
[target]
url = "builtin"
[load]
users = 2
iterations = 3
[[scenarios]]
name = "a"
[[scenarios.steps]]
send_audio = "audio_files/hello.wav"
[[scenarios.steps]]
send = "speech_end"
[[scenarios.steps]]
await = "first_audio"
record = "ttfa"
timeout = "2s"
[[scenarios.steps]]
wait = "100ms..200ms"
[thresholds]
ttfa = ["p95 < 1s", "p99 < 2s"]
success_rate = "> 0.9"
"#;
    let t = parse("t.toml", toml_text).unwrap();
    let (a, b) = (
        plan::compile::compile(&y).unwrap(),
        plan::compile::compile(&t).unwrap(),
    );
    assert_eq!(a.load.users, b.load.users);
    assert_eq!(a.load.iterations, Some(3));
    assert_eq!(a.scenarios[0].steps.len(), b.scenarios[0].steps.len());
    assert_eq!(a.thresholds.len(), 3);
    assert_eq!(b.thresholds.len(), 3);
    assert_eq!(a.metrics, b.metrics);
    assert_eq!(
        a.metrics,
        [
            "connect",
            "iteration",
            "ttfa",
            "glitch",
            "frame_jitter",
            "reverse_barge_in"
        ]
    );
    // Steps remember their lines.
    assert_eq!(a.scenarios[0].steps[2].line, 12);
    assert_eq!(b.scenarios[0].steps[1].line, 12); // the [[scenarios.steps]] header
}

#[test]
fn misspelt_key_names_position_and_suggestion() {
    let text = GOOD_YAML.replace("  users: 2", "  usres: 2");
    let e = err("plans/bad.yaml", &text);
    assert!(e.contains("plans/bad.yaml:5:3"), "{e}");
    assert!(e.contains("unknown field `usres`"), "{e}");
    assert!(e.contains("did you mean `users`?"), "{e}");

    let e = err(
        "plans/bad.toml",
        "name = 'x'\n[target]\nurl = 'builtin'\n[load]\nusres = 2\n",
    );
    assert!(e.contains("plans/bad.toml:5:1"), "{e}");
    assert!(e.contains("did you mean `users`?"), "{e}");
}

#[test]
fn bad_values_point_at_the_value() {
    let e = err(
        "p.yaml",
        &GOOD_YAML.replace("timeout: 2s", "timeout: 2 parsecs"),
    );
    assert!(e.contains("p.yaml:14:18"), "{e}");
    assert!(e.contains("unknown duration unit"), "{e}");

    let e = err("p.yaml", &GOOD_YAML.replace("p95 < 1s", "p59 < 1s"));
    assert!(e.contains("p.yaml:17:"), "{e}");
    assert!(e.contains("did you mean `p95`"), "{e}");

    let e = err("p.yaml", &GOOD_YAML.replace("users: 2", "users: many"));
    assert!(e.contains("p.yaml:5:"), "{e}");
    assert!(e.contains("expected u32"), "{e}");
}

#[test]
fn syntax_errors_have_positions() {
    let e = err("s.yaml", "name: x\ntarget: [\n");
    assert!(e.contains("s.yaml:"), "{e}");
    assert!(
        !e.contains("s.yaml: error"),
        "a line and column are expected: {e}"
    );
    let e = err("s.toml", "name = 'x'\n[target\n");
    assert!(e.contains("s.toml:2:"), "{e}");
}

#[test]
fn semantic_errors_are_positioned() {
    let e = err(
        "p.yaml",
        &GOOD_YAML.replace("send: speech_end", "send: speech_edn"),
    );
    assert!(e.contains("p.yaml:11:"), "{e}");
    assert!(e.contains("did you mean `speech_end`?"), "{e}");

    let e = err(
        "p.yaml",
        &GOOD_YAML.replace("await: first_audio", "await: frist_audio"),
    );
    assert!(e.contains("p.yaml:12:"), "{e}");
    assert!(e.contains("did you mean `first_audio`?"), "{e}");

    let e = err("p.yaml", &GOOD_YAML.replace("  ttfa: [", "  tffa: ["));
    assert!(e.contains("p.yaml:17:"), "{e}");
    assert!(e.contains("no step records a metric"), "{e}");
    assert!(e.contains("did you mean `ttfa`?"), "{e}");

    let e = err(
        "p.yaml",
        &GOOD_YAML.replace("audio_files/hello.wav", "audio_files/nope.wav"),
    );
    assert!(e.contains("p.yaml:10:"), "{e}");
    assert!(e.contains("nope.wav` not found"), "{e}");

    let two_actions = GOOD_YAML.replace(
        "      - wait: 100ms..200ms",
        "      - wait: 1s\n        send: speech_end",
    );
    let e = err("p.yaml", &two_actions);
    assert!(e.contains("one action per step"), "{e}");
    assert!(e.contains("p.yaml:15:"), "{e}");

    let e = err(
        "p.yaml",
        &GOOD_YAML.replace("success_rate: \"> 0.9\"", "success_rate: \"p95 < 1s\""),
    );
    assert!(e.contains("ratio"), "{e}");
}

#[test]
fn several_errors_are_reported_together() {
    let text = GOOD_YAML
        .replace("send: speech_end", "send: speech_edn")
        .replace("  ttfa: [", "  tffa: [");
    match parse("p.yaml", &text) {
        Err(PlanError(diags)) => assert_eq!(diags.len(), 2, "{diags:?}"),
        Ok(_) => panic!("should fail"),
    }
}

#[test]
fn missing_file_and_wrong_extension() {
    let e = plan::load(Path::new("plans/does-not-exist.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("plans/does-not-exist.yaml"), "{e}");
    assert!(e.contains("cannot read plan"), "{e}");
    let e = plan::load(Path::new("Cargo.lock")).unwrap_err().to_string();
    assert!(e.contains(".yaml, .yml or .toml"), "{e}");
}

#[test]
fn checked_in_schema_is_current() {
    let generated = planrun::cli::schema_json();
    let on_disk = std::fs::read_to_string("schemas/plan.schema.json").unwrap_or_default();
    assert!(
        generated.trim() == on_disk.trim(),
        "schemas/plan.schema.json is stale: run `cargo run -- schema > schemas/plan.schema.json`"
    );
}

#[test]
fn schema_describes_steps_exactly() {
    let schema: serde_json::Value = serde_json::from_str(&planrun::cli::schema_json()).unwrap();
    let step = &schema["$defs"]["Step"];
    assert_eq!(step["additionalProperties"], false);
    let one_of = step["oneOf"].as_array().unwrap();
    assert_eq!(one_of.len(), planrun::plan::model::STEP_ACTIONS.len());
    assert!(step["properties"]["await"].is_object());
}

mod common;

/// A valid plan with secrets written inline: a URL password in the target, an API key in free
/// text, and an environment interpolation that must not be flagged.
const SECRET_PLAN: &str = "\
name: secrets
description: sk-proj-abcdefghijklmnopqrstuvwx
target:
  url: builtin
load:
  iterations: 1
scenarios:
  - name: a
    steps:
      - send: speech_start
      - send_audio: {silence: 100ms}
      - send: speech_end
      - await: response_end
        timeout: 5s
report:
  dir: \"{{ env.REPORTS_TOKEN }}\"
";

fn planrun_bin(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_planrun"))
        .env("PLANRUN_ON_OVERLOAD", "warn")
        // SECRET_PLAN's `{{ env.REPORTS_TOKEN }}` is filled in (an unset variable is an error).
        .env("REPORTS_TOKEN", "reports")
        .args(args)
        .output()
        .expect("run planrun");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_warns_about_inline_secrets_and_still_passes() {
    let dir = common::temp_dir("secrets");
    let plan = dir.join("secrets.yaml");
    std::fs::write(&plan, SECRET_PLAN).unwrap();
    let shown = plan.display().to_string();
    let (code, stdout, stderr) = planrun_bin(&["validate", &shown]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok (1 scenario(s)"), "{stdout}");
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{shown}:2:14: warning: `description` holds what looks like an API secret key"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("{{ env.DESCRIPTION }}"), "{stderr}");
    assert!(
        !stderr.contains("abcdefghijklmnop"),
        "the secret leaked: {stderr}"
    );

    // A URL password, in TOML this time.
    let toml = dir.join("secrets.toml");
    std::fs::write(
        &toml,
        "name = 'x'\n[target]\nurl = 'wss://bot:hunter2@127.0.0.1:9/ws'\n\
         [[scenarios]]\nname = 'a'\n[[scenarios.steps]]\nwait = '10ms'\n",
    )
    .unwrap();
    let shown = toml.display().to_string();
    let (code, _, stderr) = planrun_bin(&["validate", &shown]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{shown}:3:7: warning: `target.url` holds a URL with a password in it"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the secret leaked: {stderr}");
}

#[test]
fn run_prints_secret_warnings_once() {
    let dir = common::temp_dir("secrets-run");
    let plan = dir.join("secrets.yaml");
    std::fs::write(&plan, SECRET_PLAN).unwrap();
    let out = dir.join("report");
    let (code, _, stderr) = planrun_bin(&[
        plan.to_str().unwrap(),
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(stderr.contains("`description` holds"), "{stderr}");
    assert!(out.join("metrics.json").is_file());
}

#[test]
fn example_plans_have_no_secret_warnings() {
    for entry in std::fs::read_dir("plans").unwrap() {
        let path = entry.unwrap().path();
        let warnings = plan::secrets::scan_file(&path);
        assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
    }
}

#[test]
fn decoded_files_count_against_the_audio_budget() {
    // 59m59s of generated silence passes validation; the WAV file pushes it over at compile.
    let mut text = String::from(
        "name: t\ntarget:\n  url: builtin\n  sample_rate: 8000\nscenarios:\n  - name: a\n    steps:\n",
    );
    for _ in 0..5 {
        text.push_str("      - send_audio: {silence: 10m}\n");
    }
    text.push_str("      - send_audio: {silence: 9m, trailing_silence: 59s}\n");
    let under = parse("budget.yaml", &text).expect("validates");
    plan::compile::compile(&under).expect("an hour minus a second compiles");
    text.push_str("      - send_audio: audio_files/hello.wav\n");
    let over = parse("budget.yaml", &text).expect("validates");
    let err = plan::compile::compile(&over).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "budget.yaml:14:21: error: the plan's audio adds up to more than 60 minutes"
        ),
        "{err}"
    );
    // `repeat` reuses its body's audio instead of generating it again.
    let text = "name: t\ntarget:\n  url: builtin\nscenarios:\n  - name: a\n    steps:\n      - repeat: 1000\n        steps:\n          - send_audio: {tone: 10m}\n";
    let compiled = plan::compile::compile(&parse("r.yaml", text).unwrap()).unwrap();
    assert_eq!(compiled.scenarios[0].steps.len(), 1000);
}

#[test]
fn oversized_wav_files_are_refused_before_decoding() {
    let dir = common::temp_dir("big-wav");
    // A valid header followed by a sparse 600 MiB of "data": never read whole.
    let wav = dir.join("huge.wav");
    let mut header = Vec::new();
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&u32::MAX.to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // PCM
    header.extend_from_slice(&1u16.to_le_bytes()); // mono
    header.extend_from_slice(&16_000u32.to_le_bytes());
    header.extend_from_slice(&32_000u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&(u32::MAX - 36).to_le_bytes());
    std::fs::write(&wav, &header).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wav)
        .unwrap()
        .set_len(600 << 20)
        .unwrap();
    let plan = dir.join("p.yaml");
    std::fs::write(
        &plan,
        "name: t\ntarget:\n  url: builtin\nscenarios:\n  - name: a\n    steps:\n      - send_audio: huge.wav\n",
    )
    .unwrap();
    let err = plan::load(&plan).unwrap_err().to_string();
    assert!(
        err.contains(":7:21: error: audio file `huge.wav` is 600 MiB; WAVs are limited to 512 MiB"),
        "{err}"
    );
}
