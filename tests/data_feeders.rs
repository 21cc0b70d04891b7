//! Per-caller data (`data:`): every virtual user gets its row, and the row's values reach the
//! wire: its audio (the built-in agent transcribes the clip's text, checked per row with a
//! `where:` that names the row), its handshake headers and URL, its Twilio parameters. An
//! audio folder plays its clips in order, or shuffled, per user.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{read, run_plan, temp_dir};

fn audio(name: &str) -> String {
    format!("{}/audio_files/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// (user, detail) of every `event` row of a report's timeline.csv.
fn events(report: &Path, event: &str) -> Vec<(u32, String)> {
    let text = read(&report.join("timeline.csv"));
    let mut out = Vec::new();
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    for r in rd.records() {
        let r = r.unwrap();
        if &r[4] == event {
            out.push((r[1].parse().unwrap(), r[5].to_string()));
        }
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const ROWS_PLAN: &str = r#"name: rows
data: { file: callers.csv, pick: PICK }
target:
  url: builtin
  agent: { asr_latency: 10ms, llm_latency: 10ms, tts_latency: 10ms, reply_duration: 300ms }
load: { users: USERS, iterations: ITER }
scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: "{{ row.clip }}"
      - send: speech_end
      - check: transcript
        where: { text: { contains: "{{ row.word }}" } }
        name: heard_my_row
      - await: response_end
        timeout: 5s
thresholds:
  checks: rate > 0.99
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sends_its_rows_audio_and_the_agent_hears_it() {
    let dir = temp_dir("data-rows");
    write(
        &dir,
        "callers.csv",
        &format!(
            "clip,word\n{},weather\n{},hello\n{},stop\n",
            audio("weather.wav"),
            audio("hello.wav"),
            audio("cancel.wav")
        ),
    );
    let plan = write(
        &dir,
        "plan.yaml",
        &ROWS_PLAN
            .replace("PICK", "unique")
            .replace("USERS", "3")
            .replace("ITER", "2"),
    );
    let out = dir.join("report");
    assert_eq!(
        run_plan(&plan, &out, |_| {}).await,
        0,
        "{}",
        read(&out.join("summary.md"))
    );
    // Each user sent its own row's clip on every call: three distinct clips, one per user.
    let sent = events(&out, "audio_start");
    assert_eq!(sent.len(), 6, "{sent:?}");
    let by_user: BTreeMap<u32, BTreeSet<String>> =
        sent.iter().fold(BTreeMap::new(), |mut m, (u, d)| {
            m.entry(*u).or_default().insert(d.clone());
            m
        });
    assert_eq!(by_user[&0], BTreeSet::from([audio("weather.wav")]));
    assert_eq!(by_user[&1], BTreeSet::from([audio("hello.wav")]));
    assert_eq!(by_user[&2], BTreeSet::from([audio("cancel.wav")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_users_than_unique_rows_is_refused_before_any_call() {
    let dir = temp_dir("data-unique-override");
    write(
        &dir,
        "callers.csv",
        &format!("clip,word\n{},hello\n", audio("hello.wav")),
    );
    let plan = write(
        &dir,
        "plan.yaml",
        &ROWS_PLAN
            .replace("PICK", "unique")
            .replace("USERS", "1")
            .replace("ITER", "1"),
    );
    // The plan's own 1 user fits; `--users 3` does not.
    let out = dir.join("report");
    assert_eq!(run_plan(&plan, &out, |o| o.users = Some(3)).await, 2);
    assert!(!out.join("metrics.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_naming_another_rows_value_fails() {
    // The `where:` is filled per row: a row whose word its clip does not say fails its check.
    let dir = temp_dir("data-rows-wrong");
    write(
        &dir,
        "callers.csv",
        &format!(
            "clip,word\n{},weather\n{},paris\n",
            audio("hello.wav"),
            audio("weather.wav")
        ),
    );
    let plan = write(
        &dir,
        "plan.yaml",
        &ROWS_PLAN
            .replace("PICK", "sequential")
            .replace("USERS", "2")
            .replace("ITER", "1"),
    );
    let out = dir.join("report");
    assert_eq!(run_plan(&plan, &out, |_| {}).await, 1);
    let failed = events(&out, "check_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        failed[0].0, 0,
        "user 0 (hello.wav, `weather`) fails; user 1 passes"
    );
}

/// A WebSocket server that records each handshake's path and `x-caller` header, reads until
/// the caller closes.
#[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
async fn recording_server() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let cb = |req: &Request, resp: Response| {
                    let caller = req
                        .headers()
                        .get("x-caller")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    log.lock().unwrap().push((req.uri().to_string(), caller));
                    Ok(resp)
                };
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await {
                    while let Some(Ok(msg)) = ws.next().await {
                        // Twilio's `start` carries the custom parameters.
                        if let Ok(text) = msg.to_text()
                            && text.contains("\"event\":\"start\"")
                        {
                            log.lock().unwrap().push(("start".into(), text.to_string()));
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_fill_in_headers_url_and_query() {
    let (url, seen) = recording_server().await;
    let dir = temp_dir("data-headers");
    write(
        &dir,
        "callers.jsonl",
        "{\"phone\": \"+15550001\", \"line\": \"a\"}\n{\"phone\": \"+15550002\", \"line\": \"b\"}\n{\"phone\": \"+15550003\", \"line\": \"c\"}\n",
    );
    let plan = write(
        &dir,
        "plan.yaml",
        &r#"name: headers
vars: { base: "URL" }
data: { file: callers.jsonl, pick: sequential }
target:
  url: "{{ vars.base }}/line/{{ row.line }}"
  headers: { x-caller: "{{ row.phone }}" }
  query: { who: "{{ row.line }}" }
load: { users: 4, iterations: 1 }
scenarios:
  - name: call
    steps:
      - send_audio: { silence: 100ms }
      - wait: 50ms
"#
        .replace("URL", &url),
    );
    let out = dir.join("report");
    assert_eq!(
        run_plan(&plan, &out, |_| {}).await,
        0,
        "{}",
        read(&out.join("summary.md"))
    );
    let mut got = seen.lock().unwrap().clone();
    got.retain(|(path, _)| path != "start");
    got.sort();
    assert_eq!(
        got,
        [
            ("/line/a?who=a", "+15550001"),
            ("/line/a?who=a", "+15550001"), // user 3 wraps around to row 1
            ("/line/b?who=b", "+15550002"),
            ("/line/c?who=c", "+15550003"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_fill_in_twilio_custom_parameters() {
    let (url, seen) = recording_server().await;
    let dir = temp_dir("data-twilio");
    write(&dir, "callers.csv", "phone\n+15550001\n+15550002\n");
    let plan = write(
        &dir,
        "plan.yaml",
        &r#"name: twilio rows
data: { file: callers.csv, pick: unique }
target:
  url: "URL"
  protocol: twilio
  twilio:
    custom_parameters: { caller: "{{ row.phone }}", campaign: fixed }
load: { users: 2, iterations: 1 }
scenarios:
  - name: call
    steps:
      - send_audio: { silence: 100ms }
      - wait: 50ms
"#
        .replace("URL", &url),
    );
    let out = dir.join("report");
    assert_eq!(
        run_plan(&plan, &out, |_| {}).await,
        0,
        "{}",
        read(&out.join("summary.md"))
    );
    let mut callers: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k == "start")
        .map(|(_, text)| {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["start"]["customParameters"]["campaign"], "fixed", "{v}");
            v["start"]["customParameters"]["caller"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    callers.sort();
    assert_eq!(callers, ["+15550001", "+15550002"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_folder_plays_its_clips_in_order_or_shuffled_per_user() {
    let dir = temp_dir("data-folder");
    let clips = dir.join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    for n in ["hello", "weather", "cancel"] {
        std::fs::copy(audio(&format!("{n}.wav")), clips.join(format!("{n}.wav"))).unwrap();
        std::fs::copy(audio(&format!("{n}.txt")), clips.join(format!("{n}.txt"))).unwrap();
    }
    for (order, users) in [("sequential", 2), ("shuffle", 2)] {
        let plan = write(
            &dir,
            "plan.yaml",
            &r#"name: folder
data: { audio_dir: clips, order: ORDER }
target:
  url: builtin
  agent: { asr_latency: 10ms, llm_latency: 10ms, tts_latency: 10ms, reply_duration: 300ms }
load: { users: USERS, iterations: 3 }
scenarios:
  - name: say
    steps:
      - send: speech_start
      - send_audio: "{{ row.audio }}"
      - send: speech_end
      - check: transcript
        where: { text: "{{ row.transcript }}" }
      - await: response_end
        timeout: 5s
thresholds:
  checks: rate > 0.99
"#
            .replace("ORDER", order)
            .replace("USERS", &users.to_string()),
        );
        let out = dir.join(format!("report-{order}"));
        assert_eq!(
            run_plan(&plan, &out, |_| {}).await,
            0,
            "{order}: {}",
            read(&out.join("summary.md"))
        );
        let sent = events(&out, "audio_start");
        for user in 0..users {
            let mut mine: Vec<(String, u32)> = Vec::new();
            let text = read(&out.join("timeline.csv"));
            let mut rd = csv::Reader::from_reader(text.as_bytes());
            for r in rd.records().map(Result::unwrap) {
                if &r[4] == "audio_start" && r[1].parse::<u32>().unwrap() == user {
                    mine.push((r[5].to_string(), r[2].parse().unwrap()));
                }
            }
            mine.sort_by_key(|m| m.1);
            let names: Vec<String> = mine
                .iter()
                .map(|m| m.0.trim_start_matches("clips/").to_string())
                .collect();
            // Every user hears each clip once in three calls.
            let distinct: BTreeSet<&String> = names.iter().collect();
            assert_eq!(
                distinct.len(),
                3,
                "{order} user {user}: {names:?} ({sent:?})"
            );
            if order == "sequential" {
                // Name order (cancel, hello, weather), user n starting at clip n.
                let all = ["cancel.wav", "hello.wav", "weather.wav"];
                let want: Vec<String> = (0..3)
                    .map(|i| all[(user as usize + i) % 3].to_string())
                    .collect();
                assert_eq!(names, want, "user {user}");
            }
        }
    }
}

#[test]
fn rows_that_fill_in_the_same_values_share_one_rendering_and_audio_is_decoded_once() {
    let dir = temp_dir("data-share");
    let mut csv = String::from("clip,id\n");
    for i in 0..200 {
        let clip = if i % 2 == 0 { "hello" } else { "weather" };
        csv.push_str(&format!("{},{i}\n", audio(&format!("{clip}.wav"))));
    }
    write(&dir, "rows.csv", &csv);
    let plan = write(
        &dir,
        "plan.yaml",
        "name: share\nvars: { rows: rows.csv }\ndata: { file: \"{{ vars.rows }}\", pick: random }\ntarget: { url: builtin }\nload: { users: 50 }\nscenarios:\n  - name: s\n    steps:\n      - send_audio: \"{{ row.clip }}\"\n",
    );
    let lp = planrun::plan::load(&plan).unwrap();
    let c = planrun::plan::compile::compile(&lp).unwrap();
    let data = c.data.as_ref().expect("rows used");
    // Only `clip` is used: 200 rows, two renderings, one decoded clip each.
    assert_eq!(data.rows, 200);
    assert_eq!(data.variants.len(), 2);
    let clip = |v: &planrun::plan::compile::Variant| match &v.scenarios[0].steps[0].action {
        planrun::plan::compile::Action::SendAudio(a) => a.clip.clone(),
        other => panic!("{other:?}"),
    };
    let (a, b) = (clip(&data.variants[0]), clip(&data.variants[1]));
    assert!(!Arc::ptr_eq(&a, &b));
    // `random` is a seeded draw per user: the same user gets the same row every call.
    for user in 0..50 {
        let v = data.variant(data.seed, user, 0).unwrap() as *const _;
        assert_eq!(v, data.variant(data.seed, user, 7).unwrap() as *const _);
    }
    let distinct: BTreeSet<usize> = (0..50)
        .map(|u| planrun::plan::compile::row_of(data.kind, data.rows, data.seed, u, 0))
        .collect();
    assert!(distinct.len() > 20, "random rows spread: {distinct:?}");
}
