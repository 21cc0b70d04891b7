//! Distributed runs: the real binary runs 3 shards of a plan as local processes against the
//! built-in agent, `planrun merge` joins them, and the merged counts and percentiles are
//! checked against every sample the shards recorded. Plus `--shard` validation, the
//! Kubernetes environment defaults, and merges that must be refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hdrhistogram::Histogram;

mod common;
use common::{json, read, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_planrun");

/// A plan of `users` callers making `iterations` short calls each, over two weighted
/// scenarios (so the seed of each user shows in which scenarios it ran).
fn plan(dir: &Path, name: &str, users: u32, iterations: u32, thresholds: &str) -> PathBuf {
    let audio = |f: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("audio_files")
            .join(f)
            .display()
            .to_string()
    };
    let text = format!(
        "name: {name}
target:
  url: builtin
  agent:
    asr_latency: 10ms..40ms
    llm_latency: 20ms..80ms
    tts_latency: 10ms
    reply_duration: 150ms..300ms
load:
  users: {users}
  iterations: {iterations}
  ramp_up: 300ms
  seed: 7
scenarios:
  - name: short
    weight: 2
    steps:
      - send: speech_start
      - send_audio: {mhmm}
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        record: response_time
        timeout: 5s
      - check: no_audio
        within: 100ms
  - name: hello
    weight: 1
    steps:
      - send: speech_start
      - send_audio: {hello}
      - send: speech_end
      - await: transcript
        record: transcript_latency
        timeout: 5s
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        timeout: 5s
thresholds:
{thresholds}
",
        mhmm = audio("mhmm.wav"),
        hello = audio("hello.wav"),
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("PLANRUN_ON_OVERLOAD", "warn")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("PLANRUN_SHARDS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One row of `timeline.csv`.
#[derive(Debug, Clone)]
struct Row {
    user: u32,
    iteration: u64,
    scenario: String,
    event: String,
    detail: String,
}

fn rows(path: &Path) -> Vec<Row> {
    let mut rd = csv::Reader::from_path(path).unwrap();
    rd.records()
        .map(|r| {
            let r = r.unwrap();
            Row {
                user: r[1].parse().unwrap(),
                iteration: r[2].parse().unwrap(),
                scenario: r[3].to_string(),
                event: r[4].to_string(),
                detail: r[5].to_string(),
            }
        })
        .collect()
}

/// What the merged stats must be, computed like planrun does from a histogram of µs values
/// with 3 significant figures.
fn stats(h: &Histogram<u64>) -> [f64; 8] {
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    [
        h.len() as f64,
        ms(h.min()),
        (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    ]
}

fn reported(m: &serde_json::Value) -> [f64; 8] {
    let f = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} in {m}"));
    [
        f("count"),
        f("min_ms"),
        f("mean_ms"),
        f("p50_ms"),
        f("p90_ms"),
        f("p95_ms"),
        f("p99_ms"),
        f("max_ms"),
    ]
}

fn decode(text: &str) -> Histogram<u64> {
    use base64::Engine;
    use hdrhistogram::serialization::Deserializer;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

#[test]
fn three_shards_merge_to_the_exact_totals_of_all_samples() {
    let dir = temp_dir("shards");
    let users = 5u32;
    let iterations = 2u32;
    // Each shard alone has too few ttfa samples for `count >= 9`; together they have 10.
    let plan = plan(
        &dir,
        "sharded",
        users,
        iterations,
        "  ttfa: [p95 < 5s, count >= 9, p99 < 5s over 1s]\n  success_rate: \"> 0.9\"\n  checks: \"> 0.5\"",
    );
    let plan_s = plan.to_str().unwrap();
    let out = |name: &str| dir.join(name);
    let shard_dirs: Vec<PathBuf> = (0..3).map(|i| out(&format!("shard-{i}"))).collect();
    let s = |i: usize| shard_dirs[i].to_str().unwrap().to_string();
    let whole = out("whole");
    let (o0, o1, o2, ow) = std::thread::scope(|sc| {
        let a = sc.spawn(|| {
            run(
                &["run", plan_s, "--quiet", "--shard", "0/3", "--out", &s(0)],
                &[],
            )
        });
        // Shard 1 from the Kubernetes Indexed Job environment.
        let b = sc.spawn(|| {
            run(
                &["run", plan_s, "--quiet", "--out", &s(1)],
                &[("JOB_COMPLETION_INDEX", "1"), ("PLANRUN_SHARDS", "3")],
            )
        });
        // An explicit --shard wins over the environment.
        let c = sc.spawn(|| {
            run(
                &["run", plan_s, "--quiet", "--shard", "2/3", "--out", &s(2)],
                &[("JOB_COMPLETION_INDEX", "0"), ("PLANRUN_SHARDS", "3")],
            )
        });
        let w = sc.spawn(|| {
            run(
                &["run", plan_s, "--quiet", "--out", whole.to_str().unwrap()],
                &[],
            )
        });
        (
            a.join().unwrap(),
            b.join().unwrap(),
            c.join().unwrap(),
            w.join().unwrap(),
        )
    });
    // Alone, each shard fails `count >= 9`; the unsharded run passes.
    for o in [&o0, &o1, &o2] {
        assert_eq!(o.status.code(), Some(1), "{}", text(o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL ttfa count >= 9"));
    }
    assert_eq!(ow.status.code(), Some(0), "{}", text(&ow));

    // Each folder says which shard it is, from the start (run_info.json) and at the end.
    let mut shard_metrics = Vec::new();
    let mut seen_users: BTreeMap<u32, usize> = BTreeMap::new();
    let mut all_rows: Vec<Row> = Vec::new();
    for (i, d) in shard_dirs.iter().enumerate() {
        let info = json(&d.join("run_info.json"));
        assert_eq!(info["shard"]["index"], i as u64, "{info}");
        assert_eq!(info["shard"]["count"], 3);
        assert_eq!(info["shard"]["total_users"], users);
        let m = json(&d.join("metrics.json"));
        assert_eq!(m["shard"]["index"], i as u64);
        let expected: Vec<u32> = (0..users).filter(|u| u % 3 == i as u32).collect();
        assert_eq!(m["shard"]["users"], serde_json::json!(expected));
        assert_eq!(m["users"], expected.len() as u64);
        let r = rows(&d.join("timeline.csv"));
        let users_here: BTreeSet<u32> = r.iter().map(|r| r.user).collect();
        assert_eq!(users_here, expected.iter().copied().collect(), "shard {i}");
        for u in users_here {
            *seen_users.entry(u).or_default() += 1;
        }
        all_rows.extend(r);
        shard_metrics.push(m);
    }
    // Every global user ran in exactly one shard.
    assert_eq!(
        seen_users,
        (0..users).map(|u| (u, 1)).collect::<BTreeMap<_, _>>()
    );

    let merged = out("merged");
    let om = run(
        &[
            "merge",
            &s(0),
            &s(1),
            &s(2),
            "--out",
            merged.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(om.status.code(), Some(0), "{}", text(&om));
    let stdout = String::from_utf8_lossy(&om.stdout);
    assert!(stdout.contains("PASS ttfa count >= 9"), "{stdout}");
    for f in [
        "metrics.json",
        "run.json",
        "summary.md",
        "report.html",
        "junit.xml",
        "timeline.csv",
    ] {
        assert!(merged.join(f).is_file(), "{f} missing");
    }
    let m = json(&merged.join("metrics.json"));
    assert_eq!(m["passed"], true);
    assert_eq!(m["partial"], false);
    assert_eq!(m["users"], users);
    assert!(m["shard"].is_null());
    assert_eq!(m["merged"]["shards"], serde_json::json!([0, 1, 2]));
    assert_eq!(m["merged"]["missing"], serde_json::json!([]));

    // Iteration and error counts are the shards' sums.
    for k in ["total", "succeeded", "failed"] {
        let sum: u64 = shard_metrics
            .iter()
            .map(|s| s["iterations"][k].as_u64().unwrap())
            .sum();
        assert_eq!(m["iterations"][k].as_u64().unwrap(), sum, "iterations.{k}");
    }
    assert_eq!(m["iterations"]["total"], u64::from(users * iterations));
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for s in &shard_metrics {
        for (k, v) in s["errors"].as_object().unwrap() {
            *errors.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    let merged_errors: BTreeMap<String, u64> = serde_json::from_value(m["errors"].clone()).unwrap();
    assert_eq!(merged_errors, errors);

    // Per metric: one histogram of every `record:METRIC` sample of every shard.
    let mut from_samples: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for r in &all_rows {
        let Some(metric) = r.event.strip_prefix("record:") else {
            continue;
        };
        let ms: f64 = r.detail.parse().unwrap();
        let us = ((ms * 1000.0).round() as u64).max(1); // planrun records whole µs, at least 1
        from_samples
            .entry(metric.to_string())
            .or_insert_with(|| Histogram::new(3).unwrap())
            .record(us)
            .unwrap();
    }
    for metric in [
        "ttfa",
        "response_time",
        "transcript_latency",
        "connect",
        "iteration",
    ] {
        assert!(from_samples.contains_key(metric), "no {metric} samples");
    }
    let metrics = m["metrics"].as_object().unwrap();
    for (name, h) in &from_samples {
        let got = &metrics[name];
        assert_eq!(got["count"].as_u64().unwrap(), h.len(), "{name} count");
        let (want, have) = (stats(h), reported(got));
        for (w, g) in want.iter().zip(have) {
            assert!(
                (w - g).abs() < 1e-9,
                "{name}: merged {have:?}, from samples {want:?}"
            );
        }
        // And the stored histogram is the same, bucket for bucket.
        let stored = decode(m["histograms"][name].as_str().unwrap());
        assert_eq!(stored.len(), h.len(), "{name}");
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                stored.value_at_quantile(q),
                h.value_at_quantile(q),
                "{name} q{q}"
            );
        }
    }
    // Every metric's merged count is the shards' sum; every one with samples has rows,
    // except frame_jitter (one per audio chunk: histogram only), whose merged histogram is
    // the shards' added.
    for (name, v) in metrics {
        let sum: u64 = shard_metrics
            .iter()
            .map(|s| s["metrics"][name]["count"].as_u64().unwrap())
            .sum();
        assert_eq!(v["count"].as_u64().unwrap(), sum, "{name}");
        if sum == 0 {
            continue;
        }
        if name == "frame_jitter" {
            let mut all = Histogram::<u64>::new(3).unwrap();
            for s in &shard_metrics {
                all.add(decode(s["histograms"][name].as_str().unwrap()))
                    .unwrap();
            }
            assert_eq!(reported(v), stats(&all), "frame_jitter");
        } else {
            assert!(
                from_samples.contains_key(name),
                "{name} has no timeline rows"
            );
        }
    }
    assert!(metrics["frame_jitter"]["count"].as_u64().unwrap() > 0);

    // The merged timeline holds every shard's rows.
    let merged_rows = rows(&merged.join("timeline.csv"));
    assert_eq!(merged_rows.len(), all_rows.len());

    // Thresholds were judged again on the merged data (including the windowed one).
    let th = m["thresholds"].as_array().unwrap();
    let count = th.iter().find(|t| t["expression"] == "count >= 9").unwrap();
    assert_eq!(count["observed"], 10.0);
    // `checks` is judged on the shards' summed check counts.
    let (mut passed, mut failed) = (0u64, 0u64);
    for s in &shard_metrics {
        for c in s["shard"]["checks"].as_object().unwrap().values() {
            passed += c["passed"].as_u64().unwrap();
            failed += c["failed"].as_u64().unwrap();
        }
    }
    assert!(passed + failed > 0, "no checks ran");
    let checks = th.iter().find(|t| t["metric"] == "checks").unwrap();
    let rate = checks["observed"].as_f64().unwrap();
    assert!(
        (rate - passed as f64 / (passed + failed) as f64).abs() < 1e-12,
        "{checks}"
    );
    let windowed = th.iter().find(|t| t["window"].is_object()).unwrap();
    assert!(
        windowed["window"]["judged"].as_u64().unwrap() >= 1,
        "{windowed}"
    );

    // The shards together are the unsharded run: each global user kept its seed, so it ran
    // the same scenarios in the same order.
    let scenarios = |rs: &[Row]| -> BTreeMap<(u32, u64), String> {
        rs.iter()
            .filter(|r| r.event == "iteration_start")
            .map(|r| ((r.user, r.iteration), r.scenario.clone()))
            .collect()
    };
    let whole_rows = rows(&whole.join("timeline.csv"));
    let merged_scenarios = scenarios(&merged_rows);
    assert_eq!(merged_scenarios.len(), (users * iterations) as usize);
    assert_eq!(merged_scenarios, scenarios(&whole_rows));
    let distinct: BTreeSet<&String> = merged_scenarios.values().collect();
    assert_eq!(
        distinct.len(),
        2,
        "both scenarios should run: {merged_scenarios:?}"
    );

    // The merged folder re-renders like any run.
    let rr = run(&["report", merged.to_str().unwrap(), "--format", "md"], &[]);
    assert_eq!(rr.status.code(), Some(0), "{}", text(&rr));
    assert!(read(&merged.join("summary.md")).contains("Merged from 3 of 3 shards"));

    // A missing shard: a warning, a partial report, thresholds judged on what is there.
    let partial = out("partial");
    let op = run(
        &["merge", &s(0), &s(2), "--out", partial.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&op.stderr);
    assert!(err.contains("missing shard(s) 1"), "{}", text(&op));
    assert_eq!(op.status.code(), Some(1), "{}", text(&op)); // count >= 9 fails without shard 1
    let p = json(&partial.join("metrics.json"));
    assert_eq!(p["partial"], true);
    assert_eq!(p["merged"]["missing"], serde_json::json!([1]));
    let expect_total: u64 = [&shard_metrics[0], &shard_metrics[2]]
        .iter()
        .map(|s| s["iterations"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(p["iterations"]["total"].as_u64().unwrap(), expect_total);
    assert!(partial.join("timeline.csv").is_file());
    assert!(read(&partial.join("summary.md")).contains("missing shard(s) 1"));

    // A shard killed before writing metrics.json/run.json is rebuilt from its streamed
    // timeline.csv: its iterations still count, and the merged report is partial.
    let killed = out("killed-2");
    std::fs::create_dir_all(&killed).unwrap();
    for f in ["run_info.json", "timeline.csv"] {
        std::fs::copy(shard_dirs[2].join(f), killed.join(f)).unwrap();
    }
    let rebuilt = out("rebuilt");
    let ok = run(
        &[
            "merge",
            &s(0),
            &s(1),
            killed.to_str().unwrap(),
            "--out",
            rebuilt.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(ok.status.code(), Some(1), "{}", text(&ok)); // a shard did not finish
    let r = json(&rebuilt.join("metrics.json"));
    assert_eq!(r["partial"], true);
    assert!(
        r["stop_reason"]
            .as_str()
            .unwrap()
            .contains("rebuilt from their timeline.csv"),
        "{}",
        r["stop_reason"]
    );
    assert_eq!(r["iterations"]["total"], m["iterations"]["total"]);
    // Rebuilt from the samples, its histograms are still exact: every metric with timeline
    // rows has the same statistics as the complete merge.
    for name in from_samples.keys() {
        assert_eq!(
            reported(&r["metrics"][name]),
            reported(&metrics[name]),
            "{name} rebuilt"
        );
    }

    // Refused merges (exit 2): the same shard twice, a folder that is not a shard.
    let twice = run(
        &["merge", &s(0), &s(0), "--out", out("x").to_str().unwrap()],
        &[],
    );
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("shard 0/3 appears twice"));
    let not_shard = run(
        &[
            "merge",
            &s(0),
            whole.to_str().unwrap(),
            "--out",
            out("y").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(not_shard.status.code(), Some(2), "{}", text(&not_shard));
    assert!(String::from_utf8_lossy(&not_shard.stderr).contains("is not a shard"));
    assert!(!out("x").exists() && !out("y").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_of_different_runs_are_refused() {
    let dir = temp_dir("shards-mismatch");
    let plan = plan(&dir, "mismatch", 2, 1, "  ttfa: p95 < 5s");
    let plan_s = plan.to_str().unwrap();
    let a = dir.join("a");
    let b = dir.join("b");
    let (oa, ob) = std::thread::scope(|sc| {
        let x = sc.spawn(|| {
            run(
                &[
                    "run",
                    plan_s,
                    "-q",
                    "--shard",
                    "0/2",
                    "--out",
                    a.to_str().unwrap(),
                ],
                &[],
            )
        });
        let y = sc.spawn(|| {
            run(
                &[
                    "run",
                    plan_s,
                    "-q",
                    "--shard",
                    "1/2",
                    "--seed",
                    "8",
                    "--out",
                    b.to_str().unwrap(),
                ],
                &[],
            )
        });
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(oa.status.code(), Some(0), "{}", text(&oa));
    assert_eq!(ob.status.code(), Some(0), "{}", text(&ob));
    let o = run(
        &[
            "merge",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--out",
            dir.join("m").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not shards of the same run"), "{err}");
    assert!(err.contains("seed 7") && err.contains("seed 8"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_shards_are_usage_errors() {
    let dir = temp_dir("shards-bad");
    let plan = plan(&dir, "bad", 2, 1, "  ttfa: p95 < 5s");
    let plan_s = plan.to_str().unwrap();
    let out = dir.join("out");
    // (flags, environment, expected message)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--shard", "3/3"], &[], "out of range for 3 shard(s)"),
        (&["--shard", "0/0"], &[], "at least 1"),
        (&["--shard", "x/3"], &[], "is not a whole number"),
        (&["--shard", "2"], &[], "expected INDEX/COUNT"),
        (
            &[],
            &[("JOB_COMPLETION_INDEX", "1")],
            "PLANRUN_SHARDS is not",
        ),
        (
            &[],
            &[("JOB_COMPLETION_INDEX", "4"), ("PLANRUN_SHARDS", "4")],
            "out of range",
        ),
    ];
    for (flags, env, want) in cases {
        let mut args = vec!["run", plan_s, "--out", out.to_str().unwrap()];
        args.extend_from_slice(flags);
        let o = run(&args, env);
        assert_eq!(o.status.code(), Some(2), "{flags:?} {env:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{flags:?} {env:?}: {err}");
        assert!(!out.exists(), "nothing runs on a bad shard");
    }
    // A sweep cannot be sharded (shard one user count).
    let sweep = dir.join("sweep.yaml");
    std::fs::write(&sweep, read(&plan).replace("users: 2", "users: [1, 2]")).unwrap();
    let o = run(&["run", sweep.to_str().unwrap(), "--shard", "0/2"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sweep"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kubernetes_manifest_is_an_indexed_job() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let job: serde_json::Value = serde_saphyr::from_str(&read(&root.join("job.yaml"))).unwrap();
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let n = spec["completions"].as_u64().unwrap();
    assert!(n >= 2);
    assert_eq!(spec["parallelism"].as_u64(), Some(n));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    let env = c["env"].as_array().unwrap();
    let shards = env.iter().find(|e| e["name"] == "PLANRUN_SHARDS").unwrap();
    assert_eq!(shards["value"].as_str(), Some(n.to_string().as_str()));
    let command =
        serde_json::to_string(&c["command"]).unwrap() + &serde_json::to_string(&c["args"]).unwrap();
    assert!(command.contains("planrun run"), "{command}");
    assert!(command.contains("JOB_COMPLETION_INDEX"), "{command}");
    // The plan comes from a ConfigMap; results go to a shared volume.
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["configMap"]["name"].is_string()));
    assert!(
        volumes
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"].is_string())
    );
    let merge: serde_json::Value =
        serde_saphyr::from_str(&read(&root.join("merge-job.yaml"))).unwrap();
    let mc = serde_json::to_string(&merge["spec"]["template"]["spec"]["containers"][0]).unwrap();
    assert!(mc.contains("planrun merge"), "{mc}");
    assert!(root.join("README.md").is_file());

    // The pods' shell commands, run locally with the manifest's environment (paths mapped to
    // a temp folder): each shard fails its own `count >= 3` yet the pod succeeds, and the
    // merge job's command merges the shard folders and passes.
    let dir = temp_dir("shards-k8s");
    let plan = plan(&dir, "k8s", 3, 1, "  ttfa: count >= 3");
    let results = dir.join("results");
    std::fs::create_dir_all(&results).unwrap();
    let local = |cmd: &str| {
        cmd.replace("/plan/plan.yaml", plan.to_str().unwrap())
            .replace("/results", results.to_str().unwrap())
            .replace("planrun ", &format!("{BIN} "))
    };
    let shard_cmd = local(c["args"][0].as_str().unwrap());
    let outputs: Vec<Output> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let cmd = shard_cmd.clone();
                sc.spawn(move || {
                    Command::new("/bin/sh")
                        .env("PLANRUN_ON_OVERLOAD", "warn")
                        .args(["-c", &cmd])
                        .env("JOB_COMPLETION_INDEX", i.to_string())
                        .env("PLANRUN_SHARDS", n.to_string())
                        .output()
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outputs.iter().enumerate() {
        assert_eq!(o.status.code(), Some(0), "pod {i}: {}", text(o));
        let m = json(&results.join(format!("shard-{i}/metrics.json")));
        assert_eq!(m["passed"], false, "shard {i} alone fails count >= 3");
        assert_eq!(m["shard"]["index"], i as u64);
    }
    let merge_cmd = local(
        merge["spec"]["template"]["spec"]["containers"][0]["args"][0]
            .as_str()
            .unwrap(),
    );
    let o = Command::new("/bin/sh")
        .args(["-c", &merge_cmd])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m = json(&results.join("merged/metrics.json"));
    assert_eq!(m["passed"], true);
    assert_eq!(m["metrics"]["ttfa"]["count"], 3);
    assert_eq!(
        m["merged"]["shards"],
        serde_json::json!((0..n).collect::<Vec<_>>())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
