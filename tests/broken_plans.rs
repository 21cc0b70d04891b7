//! The broken-plan corpus: every plan in `tests/broken_plans/` is rejected by both
//! `planrun validate` and `planrun PLAN` with exit code 2 and an error naming the file, the line
//! and column of the culprit, and what is wrong. Beside each plan, `<case>.<ext>.err` holds exactly
//! what `planrun validate tests/broken_plans/<case>.<ext>` prints on stderr (plain, no colour);
//! `PLANRUN_BLESS=1 cargo test --test broken_plans` rewrites those files from the actual output.

use std::path::Path;
use std::process::Command;

#[path = "golden/check.rs"]
mod check;

/// (file, line:column, words the message must contain)
const CASES: &[(&str, &str, &str)] = &[
    (
        "bad_duration.yaml",
        "6:13",
        "unknown duration unit `parsecs`",
    ),
    ("bad_duration.toml", "7:12", "`-5s` is not a duration"),
    (
        "zero_users.yaml",
        "5:10",
        "users must be 1..=100000, found 0",
    ),
    (
        "zero_users.toml",
        "7:13",
        "users must be 1..=100000, found 0",
    ),
    ("negative_users.yaml", "5:3", "integer `-3`"),
    (
        "zero_weights.yaml",
        "7:3",
        "the scenario weights add up to 0",
    ),
    (
        "zero_weights.toml",
        "9:1",
        "the scenario weights add up to 0",
    ),
    ("unknown_step.yaml", "10:9", "unknown field `sing`"),
    ("unknown_step.toml", "10:1", "unknown field `dance`"),
    (
        "missing_wav.yaml",
        "9:21",
        "audio file `audio/does_not_exist.wav` not found",
    ),
    ("not_a_wav.yaml", "9:21", "not a WAV file (no RIFF header"),
    (
        "eight_bit_wav.yaml",
        "10:28",
        "`audio/eight_bit.wav` is 8-bit PCM",
    ),
    (
        "stereo_wav.yaml",
        "10:21",
        "`audio/stereo.wav` has 2 channels",
    ),
    (
        "empty_scenarios.yaml",
        "6:12",
        "a plan needs at least one scenario",
    ),
    (
        "duplicate_scenarios.yaml",
        "10:11",
        "scenario name `greet` is used twice",
    ),
    (
        "duplicate_scenarios.toml",
        "13:8",
        "scenario name `greet` is used twice",
    ),
    (
        "unknown_metric_threshold.yaml",
        "12:9",
        "threshold on `ttfb`, but no step records",
    ),
    (
        "repeat_explosion.yaml",
        "9:17",
        "scenario `loop` unrolls to more than 100000 steps",
    ),
    (
        "too_much_audio.yaml",
        "16:9",
        "generates more than 60 minutes of audio",
    ),
    (
        "huge_trailing_silence.yaml",
        "9:21",
        "trailing_silence must be at most 10m",
    ),
    ("alias_bomb.yaml", "15:48", "alias replay limit exceeded"),
    (
        "data_missing_file.yaml",
        "3:9",
        "cannot read data file `data/nobody.csv`",
    ),
    (
        "data_malformed.yaml",
        "3:9",
        "line 3: 1 fields where the header has 2",
    ),
    (
        "data_unknown_column.yaml",
        "8:40",
        "the data has no column `clpi`",
    ),
    (
        "data_unique_too_few.yaml",
        "4:9",
        "the data has 2 rows for 5 users",
    ),
    ("unknown_fragment.yaml", "10:14", "no fragment named `gret`"),
    ("unknown_var.yaml", "9:22", "no variable `clips_dir`"),
    (
        "include_cycle.yaml",
        "tests/broken_plans/include/cycle_b.yaml:1:11",
        "include cycle: cycle_a.yaml → cycle_b.yaml → cycle_a.yaml",
    ),
    (
        "include_error.yaml",
        "tests/broken_plans/include/bad_fragment.yaml:7:38",
        "no variable `clp`",
    ),
    (
        "fragment_cycle.yaml",
        "7:12",
        "fragment `a` uses itself: a → b → a",
    ),
];

/// Hints that must accompany some errors (the fix, not just the problem).
const HINTS: &[(&str, &str)] = &[
    (
        "eight_bit_wav.yaml",
        "sox audio/eight_bit.wav -b 16 -e signed-integer",
    ),
    (
        "stereo_wav.yaml",
        "sox audio/stereo.wav -c 1 audio/stereo-mono.wav",
    ),
    ("unknown_metric_threshold.yaml", "did you mean `ttfa`?"),
    ("zero_weights.yaml", "positive `weight`"),
    ("negative_users.yaml", "cannot be negative"),
    ("data_unknown_column.yaml", "did you mean `{{ row.clip }}`?"),
    ("unknown_fragment.yaml", "did you mean `greet`?"),
    ("unknown_var.yaml", "did you mean `{{ vars.clip_dir }}`?"),
    ("include_error.yaml", "did you mean `{{ vars.clip }}`?"),
];

fn planrun(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run planrun");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn every_broken_plan_exits_2_with_a_positioned_error() {
    let dir = Path::new("tests/broken_plans");
    let mut failures = Vec::new();
    for (file, at, message) in CASES {
        let path = dir.join(file);
        let shown = path.display().to_string();
        for args in [vec!["validate", shown.as_str()], vec![shown.as_str()]] {
            let (code, stderr) = planrun(&args);
            // An error inside an included file names that file: `at` is then `path:line:col`.
            let located = if at.contains('/') {
                format!("{at}: error: ")
            } else {
                format!("{shown}:{at}: error: ")
            };
            let ok = code == 2
                && stderr.contains(&located)
                && stderr.contains(message)
                && !stderr.contains("panicked");
            if !ok {
                failures.push(format!(
                    "planrun {}: exit {code}, want 2 and `{located}…{message}`; stderr:\n{stderr}",
                    args.join(" ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hints_tell_how_to_fix() {
    for (file, hint) in HINTS {
        let path = format!("tests/broken_plans/{file}");
        let (code, stderr) = planrun(&["validate", &path]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(hint),
            "{file}: want hint `{hint}` in:\n{stderr}"
        );
    }
}

#[test]
fn the_corpus_has_a_case_for_every_plan_file() {
    let mut listed: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    listed.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir("tests/broken_plans")
        .expect("read corpus")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".toml"))
        .collect();
    present.sort_unstable();
    assert_eq!(listed, present, "every broken plan needs an entry in CASES");
}

/// The `.err` golden beside a plan: `zero_users.yaml` -> `zero_users.yaml.err` (the whole file
/// name, as a TOML case and a YAML case may share a stem).
fn err_file(plan: &str) -> String {
    format!("tests/broken_plans/{plan}.err")
}

#[test]
fn every_broken_plan_prints_exactly_its_err_file() {
    let mut failures = Vec::new();
    for (file, _, _) in CASES {
        let shown = format!("tests/broken_plans/{file}");
        let (code, stderr) = planrun(&["validate", &shown]);
        if code != 2 {
            failures.push(format!("planrun validate {shown}: exit {code}, want 2"));
        }
        if let Err(e) = check::golden(Path::new(&err_file(file)), &stderr) {
            failures.push(e);
        }
        // A run stops at the same error, printed the same way.
        let (_, run_stderr) = planrun(&[&shown]);
        if let Some(diff) = check::first_difference(&stderr, &run_stderr) {
            failures.push(format!(
                "planrun {shown} and planrun validate {shown} print different errors; \
                 validate vs run at {diff}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_err_file_belongs_to_a_case() {
    let wanted: Vec<String> = CASES.iter().map(|c| err_file(c.0)).collect();
    let orphans: Vec<String> = std::fs::read_dir("tests/broken_plans")
        .expect("read corpus")
        .filter_map(|e| e.ok())
        .map(|e| format!("tests/broken_plans/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".err") && !wanted.contains(n))
        .collect();
    assert!(orphans.is_empty(), "no plan for {orphans:?}");
}
