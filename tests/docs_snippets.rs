//! Every plan snippet in README.md and docs/**/*.md is validated by the library, so the docs
//! cannot drift from the code.
//!
//! The convention (also stated at the top of docs/README.md): a fenced ```yaml or ```toml
//! block is a whole plan, and must load, validate and compile as `plans/<something>.yaml` would
//! (WAV paths resolve from the repository root, as in the example plans). A block that is
//! deliberately partial carries a marker on the line right before its fence:
//!
//! - `<!-- fragment: steps -->`: a list of steps; it runs as the steps of a scenario of a small
//!   base plan, which must then validate;
//! - `<!-- fragment: plan -->`: some top-level sections (`target:`, `load:`, `thresholds:`, …);
//!   each replaces the same section of the base plan, which must then validate;
//! - `<!-- fragment -->` (or the fence ```yaml fragment): only has to parse as YAML / TOML.
//!
//! The relative links of those files (and of the READMEs of bench/, deploy/kubernetes/ and
//! interop/pipecat/) must point at files that exist and, for `file.md#anchor`, at a heading.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use planrun::plan;
use serde_json::{Map, Value};

/// How a fenced block is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Plan,
    Steps,
    PlanPart,
    Fragment,
}

#[derive(Debug)]
struct Snippet {
    file: PathBuf,
    /// 1-based line of the opening fence.
    fence_line: usize,
    toml: bool,
    kind: Kind,
    text: String,
}

impl Snippet {
    fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.fence_line)
    }
}

/// The base plan that `fragment: steps` and `fragment: plan` snippets are completed with: it
/// records `ttfa` and `response_time`, which the thresholds in the docs refer to.
const BASE_PLAN: &str = r#"
name: docs_snippet
target:
  url: builtin
load:
  users: 1
  iterations: 1
scenarios:
  - name: base
    steps:
      - send_audio: audio_files/hello.wav
      - send: speech_end
      - await: first_audio
        record: ttfa
      - await: response_end
        record: response_time
"#;

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    let mut files = vec![PathBuf::from("README.md")];
    walk(Path::new("docs"), &mut files);
    files
}

/// The fenced yaml/toml blocks of one Markdown file.
fn snippets(file: &Path) -> Vec<Snippet> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let indent = lines[i].len() - trimmed.len();
        let Some(fence) = ["````", "```", "~~~"]
            .into_iter()
            .find(|f| trimmed.starts_with(f))
        else {
            i += 1;
            continue;
        };
        let info: Vec<&str> = trimmed[fence.len()..].split_whitespace().collect();
        let close = lines[i + 1..]
            .iter()
            .position(|l| l.trim() == fence)
            .map(|p| i + 1 + p)
            .unwrap_or_else(|| panic!("{}:{}: unclosed code fence", file.display(), i + 1));
        let lang = info.first().copied().unwrap_or("");
        if matches!(lang, "yaml" | "yml" | "toml") {
            let marker = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim())
                .unwrap_or("");
            let kind = match marker {
                "<!-- fragment: steps -->" => Kind::Steps,
                "<!-- fragment: plan -->" => Kind::PlanPart,
                "<!-- fragment -->" => Kind::Fragment,
                m if m.starts_with("<!-- fragment") => {
                    panic!("{}:{}: unknown marker {m}", file.display(), i + 1)
                }
                _ if info.contains(&"fragment") => Kind::Fragment,
                _ => Kind::Plan,
            };
            let body: String = lines[i + 1..close]
                .iter()
                .map(|l| format!("{}\n", l.get(indent..).unwrap_or(l.trim_start())))
                .collect();
            out.push(Snippet {
                file: file.to_path_buf(),
                fence_line: i + 1,
                toml: lang == "toml",
                kind,
                text: body,
            });
        }
        i = close + 1;
    }
    out
}

fn parse_value(s: &Snippet) -> Result<Value, String> {
    if s.toml {
        toml::from_str::<Value>(&s.text).map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_str::<Value>(&s.text).map_err(|e| e.to_string())
    }
}

/// Load, validate and compile plan text as if it were a file in plans/.
fn validate(text: &str, toml: bool) -> Result<(), String> {
    let path = Path::new(if toml {
        "plans/docs-snippet.toml"
    } else {
        "plans/docs-snippet.yaml"
    });
    let loaded = plan::parse_str(text, path).map_err(|e| e.to_string())?;
    plan::compile::compile(&loaded).map_err(|e| e.to_string())?;
    Ok(())
}

/// The base plan with `fragment`'s parts put in; as JSON, which is YAML too.
fn completed(s: &Snippet, fragment: Value) -> Result<String, String> {
    let mut base: Value = serde_saphyr::from_str(BASE_PLAN).expect("base plan parses");
    match (s.kind, fragment) {
        (Kind::Steps, steps @ Value::Array(_)) => base["scenarios"][0]["steps"] = steps,
        (Kind::Steps, _) => return Err("a `fragment: steps` snippet must be a list".into()),
        (Kind::PlanPart, Value::Object(parts)) => {
            let map: &mut Map<String, Value> = base.as_object_mut().unwrap();
            map.extend(parts);
        }
        (Kind::PlanPart, _) => return Err("a `fragment: plan` snippet must be a map".into()),
        _ => unreachable!(),
    }
    Ok(serde_json::to_string_pretty(&base).unwrap())
}

fn check(s: &Snippet) -> Result<(), String> {
    match s.kind {
        Kind::Plan => validate(&s.text, s.toml),
        Kind::Fragment => parse_value(s).map(drop),
        Kind::Steps | Kind::PlanPart => {
            let plan = completed(s, parse_value(s)?)?;
            validate(&plan, false).map_err(|e| format!("{e}\n(as completed:)\n{plan}"))
        }
    }
}

/// Environment variables the snippets interpolate (`{{ env.NAME }}`): set to a placeholder
/// when unset, as a user would have them set.
fn set_env_placeholders(all: &[Snippet]) {
    for s in all {
        for piece in s.text.split("env.").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && std::env::var_os(&name).is_none() {
                // SAFETY: no other thread of this test binary calls into C code that reads the
                // environment (the other tests only read files and parse plans without
                // `{{ env.… }}`), and Rust's own environment accesses are synchronised.
                unsafe { std::env::set_var(&name, "placeholder") };
            }
        }
    }
}

#[test]
fn every_plan_snippet_in_the_docs_validates() {
    let all: Vec<Snippet> = markdown_files().iter().flat_map(|f| snippets(f)).collect();
    set_env_placeholders(&all);
    let mut failures = String::new();
    let mut plans = 0;
    for s in &all {
        if s.kind != Kind::Fragment {
            plans += 1;
        }
        if let Err(e) = check(s) {
            let what = match s.kind {
                Kind::Plan => "plan snippet does not validate",
                Kind::Steps => "`fragment: steps` snippet does not validate in a scenario",
                Kind::PlanPart => "`fragment: plan` snippet does not validate in the base plan",
                Kind::Fragment => "fragment does not parse",
            };
            let _ = writeln!(
                failures,
                "{}: {what} (snippet line N is line {} + N of the file):\n{e}\n",
                s.place(),
                s.fence_line
            );
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
    assert!(
        plans >= 15,
        "expected many validated snippets, found {plans}"
    );
}

#[test]
fn the_snippet_reader_sees_markers_and_indented_fences() {
    let dir = std::env::temp_dir().join(format!("planrun-docs-snippets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let md = dir.join("t.md");
    std::fs::write(
        &md,
        "text\n\n```yaml\nname: a\n```\n\n<!-- fragment: steps -->\n```yaml\n- wait: 1s\n```\n\
         - item\n  ```toml\n  [load]\n  users = 1\n  ```\n```yaml fragment\nx: [\n```\n\
         ```sh\nls\n```\n",
    )
    .unwrap();
    let got = snippets(&md);
    let kinds: Vec<(usize, Kind, bool)> =
        got.iter().map(|s| (s.fence_line, s.kind, s.toml)).collect();
    assert_eq!(
        kinds,
        [
            (3, Kind::Plan, false),
            (8, Kind::Steps, false),
            (12, Kind::Plan, true),
            (16, Kind::Fragment, false),
        ]
    );
    assert_eq!(got[2].text, "[load]\nusers = 1\n");
    // A plan missing its scenarios fails, naming the problem; a broken fragment does not parse.
    assert!(check(&got[0]).is_err());
    assert!(check(&got[1]).is_ok(), "{:?}", check(&got[1]));
    assert!(check(&got[3]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code fences), with GitHub's `-1`, `-2`
/// suffixes for repeated headings.
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let n = out
            .iter()
            .filter(|a| {
                **a == base
                    || a.strip_prefix(&format!("{base}-"))
                        .is_some_and(|r| r.parse::<u32>().is_ok())
            })
            .count();
        out.push(if n == 0 { base } else { format!("{base}-{n}") });
    }
    out
}

/// Relative links (`[text](path#anchor)`) outside code, in one Markdown file.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Drop inline code spans, then find `](target)`.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                out.push((i + 1, target.to_string()));
            }
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = String::new();
    let mut seen = 0;
    let mut files = markdown_files();
    files.extend(
        ["bench", "deploy/kubernetes", "interop/pipecat"]
            .iter()
            .map(|d| Path::new(d).join("README.md")),
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap_or(Path::new(""));
        for (line, target) in links(&text) {
            seen += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !resolved.exists() {
                let _ = writeln!(
                    broken,
                    "{}:{line}: `{target}`: no such file",
                    file.display()
                );
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            if resolved.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let their = anchors(&std::fs::read_to_string(&resolved).unwrap());
            if !their.iter().any(|a| a == anchor) {
                let _ = writeln!(
                    broken,
                    "{}:{line}: `{target}`: {} has no heading `#{anchor}`",
                    file.display(),
                    resolved.display()
                );
            }
        }
    }
    assert!(broken.is_empty(), "\n{broken}");
    assert!(seen >= 30, "expected many links, found {seen}");
}

#[test]
fn anchors_follow_github() {
    assert_eq!(slug(" Merging: `planrun merge`"), "merging-planrun-merge");
    assert_eq!(
        slug(" Stopping, capping, crashing"),
        "stopping-capping-crashing"
    );
    assert_eq!(slug(" `send_audio`"), "send_audio");
    assert_eq!(anchors("# A\n```\n# not\n```\n## A\n"), ["a", "a-1"]);
    assert_eq!(
        links("see [x](a.md#b) and `[y](code)`\n```\n[z](no)\n```\n[w](https://e.org)"),
        [(1, "a.md#b".to_string())]
    );
}
