//! `planrun init` writes a starter plan that planrun's own validator accepts (and that runs
//! against the built-in agent) and a CI workflow with the expected steps; `planrun completions`
//! and `planrun man` are generated from the real command line.

mod common;

use std::path::Path;
use std::process::Command;

use common::{read, run_plan, temp_dir};

fn planrun_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run planrun");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn steps(workflow: &serde_json::Value) -> Vec<serde_json::Value> {
    workflow["jobs"]["voice-load"]["steps"]
        .as_array()
        .expect("jobs.voice-load.steps")
        .clone()
}

#[test]
fn init_writes_a_valid_plan_and_workflow_for_every_protocol() {
    for protocol in ["raw", "twilio", "openai", "custom", "http_chunks"] {
        let dir = temp_dir("init");
        let (code, stdout, stderr) =
            planrun_in(&dir, &["init", "--protocol", protocol, "plans/my_bot.yaml"]);
        assert_eq!(code, 0, "{protocol}: {stderr}");
        assert!(stdout.contains("plans/my_bot.yaml"), "{stdout}");

        // The plan passes planrun's own validator (load, validate, compile) and the CLI's.
        let plan = dir.join("plans/my_bot.yaml");
        let lp = planrun::plan::load(&plan).unwrap_or_else(|e| panic!("{protocol}: {e}"));
        planrun::plan::compile::compile(&lp).unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(lp.plan.name, "my_bot");
        let text = read(&plan);
        assert!(
            text.starts_with("# A starter plan written by `planrun init`"),
            "{text}"
        );
        let (code, _, stderr) = planrun_in(&dir, &["validate", "plans/my_bot.yaml"]);
        assert_eq!(code, 0, "{stderr}");

        // The workflow is YAML with the expected steps.
        let wf_text = read(&dir.join(".github/workflows/voice-load.yml"));
        let wf: serde_json::Value = serde_saphyr::from_str(&wf_text).expect("workflow YAML");
        assert!(wf["on"].get("pull_request").is_some(), "{wf_text}");
        let env = &wf["jobs"]["voice-load"]["env"];
        assert_eq!(env["PLANRUN_PLAN"], "plans/my_bot.yaml");
        assert_eq!(env["PLANRUN_OUT"], "reports/voice-load");
        assert_eq!(
            env.get("OPENAI_API_KEY").is_some(),
            protocol == "openai",
            "{wf_text}"
        );
        let steps = steps(&wf);
        let uses: Vec<&str> = steps.iter().filter_map(|s| s["uses"].as_str()).collect();
        assert!(uses.contains(&"actions/checkout@v4"), "{uses:?}");
        let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
        assert!(
            runs.iter()
                .any(|r| r.starts_with("planrun validate \"$PLANRUN_PLAN\"")),
            "{runs:?}"
        );
        let run = runs
            .iter()
            .find(|r| r.starts_with("planrun \"$PLANRUN_PLAN\""))
            .expect("a step runs the plan");
        assert!(
            run.contains("--out \"$PLANRUN_OUT\"") && run.contains("junit"),
            "{run}"
        );
        let uploads: Vec<(&str, &str)> = steps
            .iter()
            .filter(|s| {
                s["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("actions/upload-artifact"))
            })
            .map(|s| {
                (
                    s["with"]["path"].as_str().unwrap(),
                    s["if"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            uploads,
            [
                ("reports/voice-load/", "always()"),
                ("reports/voice-load/junit.xml", "always()")
            ]
        );
    }
}

#[test]
fn init_never_overwrites_without_force() {
    let dir = temp_dir("init-force");
    assert_eq!(planrun_in(&dir, &["init", "bot.yaml"]).0, 0);
    std::fs::write(dir.join("bot.yaml"), "mine").unwrap();
    let (code, _, stderr) = planrun_in(&dir, &["init", "--protocol", "twilio", "bot.yaml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bot.yaml already exists (use --force"),
        "{stderr}"
    );
    assert_eq!(read(&dir.join("bot.yaml")), "mine");
    assert_eq!(
        planrun_in(&dir, &["init", "--force", "--no-workflow", "bot.yaml"]).0,
        0
    );
    assert!(read(&dir.join("bot.yaml")).contains("protocol: raw"));
    assert_eq!(planrun_in(&dir, &["init", "bot.txt"]).0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_starter_plan_runs_against_the_built_in_agent() {
    let dir = temp_dir("init-run");
    assert_eq!(
        planrun_in(&dir, &["init", "--no-workflow", "starter.yaml"]).0,
        0
    );
    let out = dir.join("report");
    let code = run_plan(&dir.join("starter.yaml"), &out, |o| o.users = Some(1)).await;
    assert_eq!(code, 0, "{}", read(&out.join("summary.md")));
    assert!(out.join("junit.xml").is_file());
}

#[test]
fn completions_cover_every_command_and_parse_in_their_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let dir = temp_dir("completions");
        let (code, script, stderr) = planrun_in(&dir, &["completions", shell]);
        assert_eq!(code, 0, "{stderr}");
        for word in [
            "validate",
            "init",
            "completions",
            "man",
            "protocol",
            "twilio",
        ] {
            assert!(script.contains(word), "{shell}: no `{word}`");
        }
        // Syntax-check with the shell itself when it is installed.
        let file = dir.join(format!("planrun.{shell}"));
        std::fs::write(&file, &script).unwrap();
        match Command::new(shell).arg("-n").arg(&file).output() {
            Ok(o) => assert!(
                o.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => eprintln!("{shell} not installed: syntax not checked"),
        }
    }
    assert_ne!(
        planrun_in(&temp_dir("completions"), &["completions", "tcsh"]).0,
        0
    );
}

#[test]
fn man_pages_describe_the_commands() {
    let dir = temp_dir("man");
    let (code, page, stderr) = planrun_in(&dir, &["man"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        page.starts_with(".ie") || page.contains(".TH planrun 1"),
        "{page}"
    );
    for word in ["validate", "init", "completions", "Load tester for real"] {
        assert!(page.contains(word), "no `{word}` in the man page");
    }
    let (code, _, stderr) = planrun_in(&dir, &["man", "--out", "man"]);
    assert_eq!(code, 0, "{stderr}");
    let init = read(&dir.join("man/planrun-init.1"));
    assert!(
        init.contains(".TH planrun-init 1") && init.contains("protocol"),
        "{init}"
    );
    assert!(dir.join("man/planrun.1").is_file());
    assert!(dir.join("man/planrun-validate.1").is_file());
}
