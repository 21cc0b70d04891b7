//! The shape of the source tree holds: every `crate::…` path in `src/` runs down the layers,
//! never against them. Data flows plan → audio/protocol → engine → metrics → judge → report →
//! runner → cli; a module may only name the modules listed for it below (its lower layers).
//! A new top-level module must be added here, which makes its place in the order a decision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The foundation: plain data and helpers every layer may use.
const FOUNDATION: &[&str] = &[
    "distribution",
    "redact",
    "slug",
    "shard",
    "stats",
    "contract",
];

/// Each top-level module and the modules it may import (besides itself and [`FOUNDATION`]).
const ALLOWED: &[(&str, &[&str])] = &[
    ("distribution", &[]),
    ("redact", &[]),
    ("slug", &[]),
    ("shard", &[]),
    ("stats", &[]),
    (
        "contract",
        &["stats", "shard", "distribution", "redact", "slug"],
    ),
    ("audio", &[]),
    ("protocol", &["audio"]),
    ("plan", &["protocol", "audio"]),
    ("metrics", &["plan"]),
    ("resources", &[]),
    ("agent", &["protocol", "audio"]),
    ("engine", &["metrics", "agent", "plan", "protocol", "audio"]),
    ("judge", &["metrics", "plan"]),
    (
        "report",
        &[
            "judge",
            "metrics",
            "resources",
            "engine",
            "plan",
            "protocol",
            "audio",
        ],
    ),
    (
        "runner",
        &[
            "report",
            "judge",
            "engine",
            "metrics",
            "resources",
            "agent",
            "plan",
            "protocol",
            "audio",
        ],
    ),
    (
        "bench",
        &[
            "runner",
            "report",
            "judge",
            "engine",
            "metrics",
            "resources",
            "agent",
            "plan",
        ],
    ),
    (
        "cli",
        &[
            "runner",
            "bench",
            "report",
            "judge",
            "engine",
            "metrics",
            "resources",
            "agent",
            "plan",
            "protocol",
            "audio",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Every top-level module named by a `crate::` path in `text`, with its line number: plain
/// paths (`crate::plan::load`, `use crate::engine;`) and grouped ones (`use crate::{a, b::c}`).
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    let mut line_no = 1;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            line_no += 1;
            i += 1;
            continue;
        }
        // Skip line comments (doc comments mention paths in prose).
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && bytes[i..].starts_with(b"crate::") {
            i += "crate::".len();
            if bytes.get(i) == Some(&b'{') {
                // A group: the first segment of each comma-separated item at depth 1.
                let mut depth = 0;
                let mut start_item = true;
                while i < bytes.len() {
                    let c = bytes[i];
                    match c {
                        b'{' => {
                            depth += 1;
                            start_item = depth == 1;
                        }
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b',' if depth == 1 => start_item = true,
                        b'\n' => line_no += 1,
                        c if start_item && (c.is_ascii_alphabetic() || c == b'_') => {
                            let end = text[i..]
                                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                                .map_or(text.len(), |n| i + n);
                            refs.push((line_no, text[i..end].to_string()));
                            start_item = false;
                            i = end;
                            continue;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            } else {
                let end = text[i..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map_or(text.len(), |n| i + n);
                refs.push((line_no, text[i..end].to_string()));
                i = end;
            }
            continue;
        }
        i += 1;
    }
    refs
}

#[test]
fn the_reference_parser_sees_plain_and_grouped_paths() {
    let text = "use crate::plan::load;\n// crate::engine in a comment\nuse crate::{audio, report::{a, b}, engine::x};\nlet x = crate::metrics::y;\n";
    let got: Vec<(usize, String)> = crate_refs(text);
    let want: Vec<(usize, String)> = vec![
        (1, "plan".into()),
        (3, "audio".into()),
        (3, "report".into()),
        (3, "engine".into()),
        (4, "metrics".into()),
    ];
    assert_eq!(got, want);
}

#[test]
fn the_allowed_edges_form_a_dag() {
    let table: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Depth-first search for a cycle.
    fn visit<'a>(
        m: &'a str,
        table: &BTreeMap<&'a str, &'a [&'a str]>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(
            !stack.contains(&m),
            "cycle in the layer table: {stack:?} -> {m}"
        );
        stack.push(m);
        let deps = table.get(m).copied().unwrap_or(&[]);
        let foundation: &[&str] = if FOUNDATION.contains(&m) {
            &[]
        } else {
            FOUNDATION
        };
        for d in deps.iter().chain(foundation) {
            assert!(table.contains_key(d), "{m} lists unknown module {d}");
            visit(d, table, stack, done);
        }
        stack.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in table.keys() {
        visit(m, &table, &mut Vec::new(), &mut done);
    }
}

#[test]
fn imports_run_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let table: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        seen_modules.insert(module.clone());
        let Some(allowed) = table.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` is not in tests/layering.rs's table: give it a place in the layers",
                file.strip_prefix(root).unwrap().display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // `$crate::` in macros names the defining module's own items.
        let text = text.replace("$crate::", "$krate::");
        for (line, target) in crate_refs(&text) {
            let ok = target == module
                || allowed.contains(&target.as_str())
                || (FOUNDATION.contains(&target.as_str())
                    && !FOUNDATION.contains(&module.as_str()))
                || target == "plan_path"; // the crate-root macro for plan document paths
            if !ok {
                problems.push(format!(
                    "{}:{line}: `{module}` imports `crate::{target}`, against the layers \
                     ({module} may import: {})",
                    file.strip_prefix(root).unwrap().display(),
                    allowed
                        .iter()
                        .chain(if FOUNDATION.contains(&module.as_str()) {
                            &[][..]
                        } else {
                            FOUNDATION
                        })
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} import(s) against the layer order:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(seen_modules.contains("plan") && seen_modules.contains("runner"));
}
