//! `planrun init`: a commented starter plan for a protocol and a CI workflow that runs it.
//! Asks nothing; refuses to overwrite a file unless `--force`.

use std::path::{Path, PathBuf};

use super::exit;

/// Where the CI workflow goes (relative to the current folder, the repository's root).
pub const WORKFLOW: &str = ".github/workflows/voice-load.yml";

/// The protocols `init` has a starter plan for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitProtocol {
    /// PCM16 frames and JSON control messages.
    Raw,
    /// Twilio Media Streams (planrun plays Twilio's side).
    Twilio,
    /// The OpenAI Realtime event protocol.
    #[value(alias = "openai-realtime", alias = "openai_realtime")]
    Openai,
    /// A declarative JSON mapping written in the plan.
    Custom,
    /// Audio POSTed in chunks over HTTP.
    #[value(name = "http_chunks", alias = "http-chunks", alias = "http")]
    HttpChunks,
}

const HEADER: &str = r#"# A starter plan written by `planrun init`. It runs as is against planrun's built-in reference
# agent (`url: builtin`); point `target.url` at your bot when you are ready.
#   planrun validate PLAN      check it without calling anything
#   planrun PLAN               run it: console summary, reports in reports/<name>-<time>/
# Every key is documented in docs/plan-reference.md.
"#;

/// The target section of each protocol.
fn target(protocol: InitProtocol) -> &'static str {
    match protocol {
        InitProtocol::Raw => {
            r#"target:
  url: builtin                  # your bot: ws://host:port/path or wss://…
  protocol: raw                 # PCM16 binary frames + JSON control messages
  # headers:
  #   authorization: "Bearer {{ env.BOT_TOKEN }}"   # secrets come from the environment
"#
        }
        InitProtocol::Twilio => {
            r#"target:
  url: builtin                  # your bot's Media Streams endpoint: wss://host/twilio
  protocol: twilio              # planrun plays Twilio's side: base64 µ-law 8 kHz in JSON
  twilio:
    custom_parameters:          # the <Stream> <Parameter>s your bot reads from `start`
      caller: "+15550100000"
"#
        }
        InitProtocol::Openai => {
            r#"target:
  url: builtin                  # wss://api.openai.com/v1/realtime?model=… for the real API
  protocol: openai-realtime
  # headers:
  #   authorization: "Bearer {{ env.OPENAI_API_KEY }}"
  #   openai-beta: realtime=v1
  openai:
    turn_detection: server_vad  # or `none`: planrun commits the audio buffer itself
"#
        }
        InitProtocol::Custom => {
            r#"target:
  url: builtin                  # your bot: ws://host:port/path
  protocol: custom
  custom:
    preset: raw                 # start from a preset, then override the messages your bot uses
"#
        }
        InitProtocol::HttpChunks => {
            r#"target:
  url: builtin                  # your endpoint: https://host/transcribe
  protocol: http_chunks         # each send_audio is POSTed in chunks, JSON answers
  http:
    chunk: 2s
    body: raw                   # or multipart
"#
        }
    }
}

const BODY_WS: &str = r#"load:
  users: 2                      # concurrent callers
  iterations: 2                 # calls per caller
  ramp_up: 1s
  seed: 1
scenarios:
  - name: ask
    steps:
      - send: speech_start
      # Replace the tone with a WAV of someone speaking (16-bit mono; its .txt beside it is
      # the transcript): `- send_audio: audio/hello.wav`
      - send_audio: { tone: 1500ms, freq: 300, level: -20 }
      - send: speech_end
      - await: first_audio        # the bot starts answering
        record: ttfa              # time to first audio, from the end of speech
        timeout: 5s
      - await: response_end
        timeout: 15s
thresholds:
  ttfa: p95 < 1.5s              # the bot answers fast enough
  success_rate: "> 0.99"        # and calls do not fail
report:
  formats: [md, html, json, junit]
"#;

const BODY_TWILIO: &str = r#"load:
  users: 2                      # concurrent callers
  iterations: 2                 # calls per caller
  ramp_up: 1s
  seed: 1
scenarios:
  - name: ask
    steps:
      # A phone line is always open: planrun streams silence between utterances and the bot's
      # VAD finds the end of speech. Replace the tone with a WAV of someone speaking:
      # `- send_audio: audio/hello.wav`
      - send_audio: { tone: 1500ms, freq: 300, level: -20 }
      - await: first_audio        # the bot starts answering
        record: ttfa              # time to first audio, from the end of speech
        timeout: 5s
      - wait: 2s                  # listen to the answer
thresholds:
  ttfa: p95 < 1.5s
  success_rate: "> 0.99"
report:
  formats: [md, html, json, junit]
"#;

const BODY_HTTP: &str = r#"load:
  users: 2
  iterations: 2
  seed: 1
scenarios:
  - name: upload
    steps:
      # Replace the tone with a WAV of someone speaking: `- send_audio: audio/hello.wav`
      - send_audio: { tone: 3s, freq: 300, level: -20, pacing: burst }
thresholds:
  chunk_latency: p95 < 2s       # request sent → response read, per chunk
  success_rate: "> 0.99"
report:
  formats: [md, html, json, junit]
"#;

/// The starter plan for `protocol`, named after the file.
pub fn starter_plan(protocol: InitProtocol, name: &str, path: &str) -> String {
    let body = match protocol {
        InitProtocol::HttpChunks => BODY_HTTP,
        InitProtocol::Twilio => BODY_TWILIO,
        _ => BODY_WS,
    };
    format!(
        "{}name: {name}\n{}{body}",
        HEADER.replace("PLAN", path),
        target(protocol)
    )
}

/// The CI workflow running `plan` (a path relative to the repository's root).
pub fn workflow(plan: &str, protocol: InitProtocol) -> String {
    let secret = match protocol {
        InitProtocol::Openai => "\n      OPENAI_API_KEY: ${{ secrets.OPENAI_API_KEY }}",
        _ => "",
    };
    format!(
        r#"# Written by `planrun init`: runs the voice load test on every pull request and on demand,
# fails the check when a threshold fails, and keeps the report folder and the JUnit file.
name: voice-load

on:
  pull_request:
  workflow_dispatch:

jobs:
  voice-load:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    env:
      PLANRUN_PLAN: {plan}
      PLANRUN_OUT: reports/voice-load{secret}
    steps:
      - name: Check out
        uses: actions/checkout@v4

      - name: Install planrun
        # Set the repository variable PLANRUN_REPO to planrun's git URL, or replace this step
        # with your own install (a release binary, a container image).
        run: cargo install --locked --git "${{{{ vars.PLANRUN_REPO }}}}" planrun

      - name: Validate the plan
        run: planrun validate "$PLANRUN_PLAN"

      - name: Run the plan
        # Exit codes: 0 passed, 1 a threshold failed, 2 invalid plan, 3 could not run,
        # 5 inconclusive (the runner itself was the bottleneck).
        run: planrun "$PLANRUN_PLAN" --out "$PLANRUN_OUT" --overwrite --format md,html,json,junit

      - name: Summary
        if: always()
        run: cat "$PLANRUN_OUT/summary.md" >> "$GITHUB_STEP_SUMMARY" || true

      - name: Upload the report folder
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: voice-load-report
          path: reports/voice-load/
          if-no-files-found: warn

      - name: Upload the JUnit file
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: voice-load-junit
          path: reports/voice-load/junit.xml
          if-no-files-found: warn
"#
    )
}

fn write_new(path: &Path, text: &str, force: bool) -> Result<(), String> {
    if path.exists() && !force {
        return Err(format!(
            "{} already exists (use --force to overwrite it)",
            path.display()
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `planrun init`: write the plan (and the workflow unless `no_workflow`).
pub fn init(file: &Path, protocol: InitProtocol, force: bool, no_workflow: bool) -> u8 {
    let ext_ok = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["yaml", "yml"].contains(&e.to_ascii_lowercase().as_str()));
    if !ext_ok {
        eprintln!("planrun init: the plan file must end in .yaml or .yml");
        return exit::INVALID;
    }
    let name = file.file_stem().map_or_else(
        || "my_bot".to_string(),
        |s| s.to_string_lossy().replace(['"', '\''], ""),
    );
    let workflow_path = PathBuf::from(WORKFLOW);
    let mut written = Vec::new();
    let plan_shown = file.to_string_lossy().replace('\\', "/");
    let mut jobs = vec![(
        file.to_path_buf(),
        starter_plan(protocol, &name, &plan_shown),
    )];
    if !no_workflow {
        jobs.push((workflow_path, workflow(&plan_shown, protocol)));
    }
    // Refuse before writing anything.
    if !force && let Some((p, _)) = jobs.iter().find(|(p, _)| p.exists()) {
        eprintln!(
            "planrun init: {} already exists (use --force to overwrite it)",
            p.display()
        );
        return exit::INVALID;
    }
    for (path, text) in &jobs {
        if let Err(e) = write_new(path, text, force) {
            eprintln!("planrun init: {e}");
            return exit::CANNOT_RUN;
        }
        written.push(path.display().to_string());
    }
    println!("wrote {}", written.join(" and "));
    println!("next: planrun validate {plan_shown} && planrun {plan_shown}");
    exit::PASSED
}
