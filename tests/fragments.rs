//! `vars:`, `{{ env.X }}` in any plan string, `fragments:` with `- use:`, and `include:` across
//! plan files: a real run against the built-in agent sends what the shared fragment says.

mod common;

use std::path::Path;

use common::{read, run_plan, temp_dir};

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const SHARED: &str = r#"# Shared by every plan of the suite.
vars:
  clips: AUDIO
  reply_timeout: overridden below
fragments:
  ask:
    - send: speech_start
    - send_audio: "{{ vars.clips }}/{{ vars.clip }}.wav"
    - send: speech_end
  answered:
    - use: ask
    - await: first_audio
      record: ttfa
    - await: response_end
"#;

const PLAN: &str = r#"name: "suite {{ env.PLANRUN_FRAGMENTS_TEST_TAG }}"
include: common/shared.yaml
vars:
  clip: hello
target:
  url: builtin
  agent: { asr_latency: 10ms, llm_latency: 10ms, tts_latency: 10ms, reply_duration: 200ms }
load: { users: 2, iterations: 2 }
scenarios:
  - name: twice
    steps:
      - use: answered
      - repeat: 2
        steps:
          - use: ask
          - await: response_end
thresholds:
  ttfa: p95 < 2s
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn included_fragments_run_with_vars_and_env() {
    let dir = temp_dir("fragments");
    let audio = format!("{}/audio_files", env!("CARGO_MANIFEST_DIR"));
    write(&dir, "common/shared.yaml", &SHARED.replace("AUDIO", &audio));
    write(&dir, "plan.yaml", PLAN);
    // SAFETY: only this test reads this variable.
    unsafe { std::env::set_var("PLANRUN_FRAGMENTS_TEST_TAG", "nightly") };
    let lp = planrun::plan::load(&dir.join("plan.yaml")).unwrap();
    assert_eq!(lp.plan.name, "suite nightly");
    let compiled = planrun::plan::compile::compile(&lp).unwrap();
    let actions: Vec<&str> = compiled.scenarios[0]
        .steps
        .iter()
        .map(|s| s.action.name())
        .collect();
    // answered = ask (3) + 2 awaits; then 2 × (ask + await).
    assert_eq!(actions.len(), 5 + 2 * 4, "{actions:?}");
    let out = dir.join("report");
    assert_eq!(
        run_plan(&dir.join("plan.yaml"), &out, |_| {}).await,
        0,
        "{}",
        read(&out.join("summary.md"))
    );
    let timeline = read(&out.join("timeline.csv"));
    let sent = timeline
        .lines()
        .filter(|l| l.contains(",audio_start,"))
        .collect::<Vec<_>>();
    // 2 users × 2 calls × 3 utterances, each the clip the plan's `vars.clip` named.
    assert_eq!(sent.len(), 12, "{timeline}");
    assert!(sent.iter().all(|l| l.ends_with("/hello.wav")), "{sent:?}");
}

#[test]
fn an_error_in_a_fragment_step_points_into_the_included_file() {
    let dir = temp_dir("fragments-err");
    write(
        &dir,
        "lib/steps.yaml",
        "fragments:\n  greet:\n    - send: speech_start\n    - send_audio: nowhere/missing.wav\n",
    );
    write(
        &dir,
        "plan.yaml",
        "name: p\ninclude: [lib/steps.yaml]\ntarget: { url: builtin }\nscenarios:\n  - name: s\n    steps:\n      - use: greet\n",
    );
    let e = planrun::plan::load(&dir.join("plan.yaml"))
        .and_then(|lp| planrun::plan::compile::compile(&lp))
        .unwrap_err()
        .to_string();
    let want = format!(
        "{}:4:19: error: audio file `nowhere/missing.wav` not found",
        dir.join("lib/steps.yaml").display()
    );
    assert!(e.contains(&want), "{e}");
    assert!(
        e.contains("4 |     - send_audio: nowhere/missing.wav"),
        "{e}"
    );
}

#[test]
fn the_plans_own_definitions_win_and_limits_hold_across_files() {
    let dir = temp_dir("fragments-limits");
    write(
        &dir,
        "a.yaml",
        "vars: { who: included }\nfragments:\n  f:\n    - send: speech_start\n",
    );
    write(
        &dir,
        "plan.yaml",
        "name: \"{{ vars.who }}\"\ninclude: a.yaml\nvars: { who: mine }\ntarget: { url: builtin }\nscenarios:\n  - name: s\n    steps:\n      - use: f\n",
    );
    let lp = planrun::plan::load(&dir.join("plan.yaml")).unwrap();
    assert_eq!(lp.plan.name, "mine");
    // A chain of includes longer than the limit is refused.
    for i in 0..12 {
        write(
            &dir,
            &format!("chain{i}.yaml"),
            &format!("include: chain{}.yaml\n", i + 1),
        );
    }
    write(&dir, "chain12.yaml", "vars: {}\n");
    write(
        &dir,
        "deep.yaml",
        "name: deep\ninclude: chain0.yaml\ntarget: { url: builtin }\nscenarios:\n  - name: s\n    steps:\n      - send: speech_start\n",
    );
    let e = planrun::plan::load(&dir.join("deep.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("includes nest more than 8 levels deep"), "{e}");
    // Included text counts against the plan size limit.
    let big = format!(
        "vars:\n{}",
        (0..20_000)
            .map(|i| format!("  v{i}: {}\n", "x".repeat(20)))
            .collect::<String>()
    );
    write(&dir, "big.yaml", &big);
    write(&dir, "big2.yaml", &big.replace("  v", "  w"));
    write(
        &dir,
        "huge.yaml",
        "name: huge\ninclude: [big.yaml, big2.yaml]\ntarget: { url: builtin }\nscenarios:\n  - name: s\n    steps:\n      - send: speech_start\n",
    );
    let e = planrun::plan::load(&dir.join("huge.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the plan and its includes are more than 1024 KiB in all"),
        "{e}"
    );
}
