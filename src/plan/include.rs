//! After a plan parses: `include:` files (their `vars:` and `fragments:`), the `data:` rows,
//! every `{{ … }}` template checked where it is written, `vars`/`env` filled in everywhere, and
//! `use:` steps checked against the fragments.
//!
//! Templates are checked on the positioned source tree of each file, so a typo points at its
//! line and column, inside an included file when it is there. `{{ row.… }}` is kept in the plan
//! and filled in per caller at compile time from [`LoadedPlan::value`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::diag::{
    self, Diagnostic, LocChildren, LocNode, Seg, did_you_mean, line_col, source_line,
};
use super::load::{LoadedPlan, SourceFile};
use super::model::{Fragments, Library, Step};
use super::template::{Context, Ns, Scope, Template};
use super::{MAX_PLAN_BYTES, PlanError};

/// Deepest chain of includes (a plan including a file that includes another is 2).
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Where `{{ row.… }}` may be written.
const ROW_PLACES: &str = "row fields fill in audio paths (`send_audio`, `interrupt.audio`), the \
    target's `url`, `headers`, `query`, `twilio.custom_parameters`, `custom` and `openai` \
    settings, `where:` values and `send_json`";

/// One file's definitions, in the order they are merged.
struct Lib {
    file: usize,
    vars: Vec<(String, String)>,
    fragments: Vec<(String, Value, Vec<Step>)>,
}

struct State<'a> {
    errs: Vec<Diagnostic>,
    files: Vec<SourceFile>,
    libs: Vec<Lib>,
    total_bytes: usize,
    seen: BTreeSet<PathBuf>,
    main: &'a LoadedPlan,
}

fn file_diag(path: &Path, message: String, hint: Option<String>) -> Diagnostic {
    Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message,
        hint,
        source_line: None,
    }
}

/// The text of a plan or included file as a JSON value (None if it does not read as one).
pub(crate) fn to_value(source: &str, toml_format: bool) -> Option<Value> {
    if toml_format {
        toml::from_str::<Value>(source).ok()
    } else {
        serde_saphyr::from_str_with_options::<Value>(source, diag::yaml_options()).ok()
    }
}

fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

fn includes_of(list: &super::model::Includes) -> Vec<String> {
    list.as_ref().map(|l| l.0.clone()).unwrap_or_default()
}

impl State<'_> {
    /// A diagnostic at `path` inside file `file` (0: the plan).
    fn at(&self, file: usize, path: &[Seg], message: String, hint: Option<String>) -> Diagnostic {
        if file == 0 {
            return self.main.diag_in_plan(path, message, hint);
        }
        let f = &self.files[file - 1];
        diag::at(&f.path, &f.source, f.tree.as_ref(), path, message, hint)
    }

    fn file_path(&self, file: usize) -> &Path {
        if file == 0 {
            &self.main.path
        } else {
            &self.files[file - 1].path
        }
    }

    /// Load the includes of `file` (listed as `list`), depth-first, then their definitions.
    fn includes(&mut self, file: usize, list: &[String], stack: &mut Vec<PathBuf>) {
        let dir = self
            .file_path(file)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        for (i, written) in list.iter().enumerate() {
            let entry = if list.len() == 1 && self.is_scalar_include(file) {
                vec![Seg::Key("include".into())]
            } else {
                vec![Seg::Key("include".into()), Seg::Index(i)]
            };
            let mut path = dir.join(written);
            if !path.exists()
                && file == 0
                && !Path::new(written).is_absolute()
                && Path::new(written).exists()
            {
                path = PathBuf::from(written);
            }
            let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some(pos) = stack.iter().position(|p| *p == canon) {
                let chain: Vec<String> = stack[pos..]
                    .iter()
                    .chain(std::iter::once(&canon))
                    .map(|p| {
                        p.file_name().map_or_else(
                            || p.display().to_string(),
                            |n| n.to_string_lossy().into_owned(),
                        )
                    })
                    .collect();
                let e = self.at(
                    file,
                    &entry,
                    format!("include cycle: {}", chain.join(" → ")),
                    Some("a file cannot include itself, directly or through others".into()),
                );
                self.errs.push(e);
                continue;
            }
            if stack.len() > MAX_INCLUDE_DEPTH {
                let e = self.at(
                    file,
                    &entry,
                    format!("includes nest more than {MAX_INCLUDE_DEPTH} levels deep"),
                    None,
                );
                self.errs.push(e);
                continue;
            }
            if !self.seen.insert(canon.clone()) {
                continue; // already included through another file: its definitions are in
            }
            let ext_ok = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["yaml", "yml", "toml"].contains(&e.to_ascii_lowercase().as_str())
            });
            if !ext_ok {
                let e = self.at(
                    file,
                    &entry,
                    format!("included file `{written}` must end in .yaml, .yml or .toml"),
                    None,
                );
                self.errs.push(e);
                continue;
            }
            let source = match super::compile::read_limited(&path, MAX_PLAN_BYTES as u64) {
                Ok(s) => s,
                Err(why) => {
                    let e = self.at(
                        file,
                        &entry,
                        format!("cannot read included file `{written}`: {why}"),
                        None,
                    );
                    self.errs.push(e);
                    continue;
                }
            };
            self.total_bytes += source.len();
            if self.total_bytes > MAX_PLAN_BYTES {
                let e = self.at(
                    file,
                    &entry,
                    format!(
                        "the plan and its includes are more than {} KiB in all",
                        MAX_PLAN_BYTES / 1024
                    ),
                    None,
                );
                self.errs.push(e);
                return;
            }
            let toml_format = is_toml(&path);
            let parsed = super::load::parse_model::<Library>(&source, &path);
            let lib = match parsed {
                Ok(l) => l,
                Err(mut e) => {
                    self.errs.append(&mut e.0);
                    continue;
                }
            };
            let value = to_value(&source, toml_format).unwrap_or(Value::Null);
            self.files.push(SourceFile {
                path: path.clone(),
                tree: diag::locate_tree(&source, toml_format),
                source,
                value: value.clone(),
            });
            let index = self.files.len();
            stack.push(canon);
            self.includes(index, &includes_of(&lib.include), stack);
            stack.pop();
            self.libs.push(Lib {
                file: index,
                vars: lib.vars.into_iter().collect(),
                fragments: fragments_with_values(lib.fragments, &value),
            });
        }
    }

    fn is_scalar_include(&self, file: usize) -> bool {
        let tree = if file == 0 {
            self.main.tree.as_ref()
        } else {
            self.files[file - 1].tree.as_ref()
        };
        let Some(LocNode {
            children: LocChildren::Map(entries),
            ..
        }) = tree
        else {
            return false;
        };
        entries
            .iter()
            .any(|(k, n)| k == "include" && matches!(n.children, LocChildren::Scalar))
    }
}

fn fragments_with_values(frags: Fragments, value: &Value) -> Vec<(String, Value, Vec<Step>)> {
    frags
        .into_iter()
        .map(|(name, steps)| {
            let v = value
                .get("fragments")
                .and_then(|f| f.get(&name))
                .cloned()
                .unwrap_or(Value::Null);
            (name, v, steps)
        })
        .collect()
}

/// The scope of a template written at `path`.
fn scope_for<'a>(path: &[Seg], columns: Option<&'a [String]>, vars: &'a [String]) -> Scope<'a> {
    let key = |i: usize| match path.get(i) {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    let has = |name: &str| path.iter().any(|s| matches!(s, Seg::Key(k) if k == name));
    if key(0) == "vars" {
        return Scope {
            row: columns,
            row_refused: Some(
                "a variable has one value for the whole run; write `{{ row.… }}` where the value is used",
            ),
            vars: &[],
            ..Scope::default()
        };
    }
    let in_target = key(0) == "target";
    if in_target && key(1) == "custom" && key(2) != "vars" {
        return Scope {
            row: columns,
            passthrough: true,
            ..Scope::default()
        };
    }
    let steps = matches!(key(0), "scenarios" | "fragments");
    let row_ok = (in_target
        && ["url", "headers", "query", "twilio", "custom", "openai"].contains(&key(1)))
        || (steps && (has("send_audio") || has("audio") || has("where") || has("send_json")))
        || has("on_tool_call");
    Scope {
        row: columns,
        row_refused: (!row_ok).then_some(ROW_PLACES),
        vars,
        // `{{ event.… }}` is the awaited event in a `send_json` body, the tool call in an
        // `on_tool_call` answer: both are rendered per call.
        event: (steps && has("send_json")) || has("on_tool_call"),
        passthrough: false,
    }
}

/// Where in `source` the expression at byte `offset` of the scalar at (line, column) is.
fn expression_position(
    source: &str,
    line: usize,
    column: usize,
    text: &str,
    offset: usize,
) -> (usize, usize) {
    let end = text[offset..]
        .find("}}")
        .map_or(text.len(), |e| offset + e + 2);
    let needle = &text[offset..end];
    let mut start = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            start += l
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(0, |(b, _)| b);
            break;
        }
        start += l.len();
    }
    match source.get(start..).and_then(|s| s.find(needle)) {
        Some(found) => line_col(source, start + found),
        None => (line, column),
    }
}

/// Check every template of a file's tree, pushing positioned errors; returns whether any
/// template names something.
#[allow(clippy::too_many_arguments)]
fn check_tree(
    node: &LocNode,
    path: &mut Vec<Seg>,
    file: &Path,
    source: &str,
    columns: Option<&[String]>,
    vars: &[String],
    only_top: &[&str],
    errs: &mut Vec<Diagnostic>,
) -> bool {
    let mut any = false;
    match &node.children {
        LocChildren::Map(entries) => {
            for (k, child) in entries {
                if path.is_empty() && !only_top.is_empty() && !only_top.contains(&k.as_str()) {
                    continue;
                }
                path.push(Seg::Key(k.clone()));
                any |= check_tree(child, path, file, source, columns, vars, only_top, errs);
                path.pop();
            }
        }
        LocChildren::Seq(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                any |= check_tree(child, path, file, source, columns, vars, only_top, errs);
                path.pop();
            }
        }
        LocChildren::Scalar => {
            let Some(text) = node
                .value
                .as_deref()
                .filter(|t| Template::has_expressions(t))
            else {
                return false;
            };
            match Template::parse(text, &scope_for(path, columns, vars)) {
                Ok(t) => any |= !t.is_static(),
                Err(e) => {
                    let (line, column) =
                        expression_position(source, node.line, node.column, text, e.offset);
                    errs.push(Diagnostic {
                        file: file.to_path_buf(),
                        line,
                        column,
                        message: e.message,
                        hint: e.hint,
                        source_line: source_line(source, line),
                    });
                }
            }
        }
    }
    any
}

/// Fill in the namespaces `only` in every string of `value` (templates already checked).
pub(crate) fn fill(
    value: &mut Value,
    path: &mut Vec<Seg>,
    columns: Option<&[String]>,
    vars: &[String],
    cx: &Context,
    only: &[Ns],
) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(Seg::Key(k.clone()));
                fill(v, path, columns, vars, cx, only)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                fill(v, path, columns, vars, cx, only)?;
                path.pop();
            }
        }
        Value::String(s) if Template::has_expressions(s) => {
            let t = Template::parse(s, &scope_for(path, columns, vars)).map_err(|e| e.message)?;
            *s = t.render_only(cx, only).map_err(|e| e.message)?;
        }
        _ => {}
    }
    Ok(())
}

/// Resolve includes, read the data, check templates and fill in `vars`/`env`; check `use:`.
pub(crate) fn resolve(lp: &mut LoadedPlan) -> Result<(), PlanError> {
    let mut st = State {
        errs: Vec::new(),
        files: Vec::new(),
        libs: Vec::new(),
        total_bytes: lp.source.len(),
        seen: BTreeSet::new(),
        main: lp,
    };
    let main_canon = std::fs::canonicalize(&lp.path).unwrap_or_else(|_| lp.path.clone());
    st.seen.insert(main_canon.clone());
    let mut stack = vec![main_canon];
    st.includes(0, &includes_of(&lp.plan.include), &mut stack);
    let main_value = (lp.plan.include.is_some()
        || !lp.plan.vars.is_empty()
        || lp.plan.data.is_some()
        || lp.source.contains("{{"))
    .then(|| to_value(&lp.source, is_toml(&lp.path)))
    .flatten();
    st.libs.push(Lib {
        file: 0,
        vars: lp.plan.vars.clone().into_iter().collect(),
        fragments: fragments_with_values(
            lp.plan.fragments.clone(),
            main_value.as_ref().unwrap_or(&Value::Null),
        ),
    });
    let State {
        mut errs,
        files,
        libs,
        ..
    } = st;
    lp.includes = files;
    if !errs.is_empty() {
        return Err(PlanError(errs));
    }

    // Merge: later definitions (the including file's) win.
    let mut vars_raw: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut fragments: BTreeMap<String, (Value, Vec<Step>, usize)> = BTreeMap::new();
    for lib in libs {
        for (k, v) in lib.vars {
            vars_raw.insert(k, (v, lib.file));
        }
        for (k, v, steps) in lib.fragments {
            fragments.insert(k, (v, steps, lib.file));
        }
    }
    for (name, (_, _, file)) in &fragments {
        lp.origin.insert(("fragments".into(), name.clone()), *file);
    }
    for (name, (_, file)) in &vars_raw {
        lp.origin.insert(("vars".into(), name.clone()), *file);
    }
    let var_names: Vec<String> = vars_raw.keys().cloned().collect();

    // The values of `vars:` with `env` filled in (a bad one is reported where it is written,
    // by the template check below).
    let vars_early: BTreeMap<String, String> = vars_raw
        .iter()
        .filter_map(|(name, (raw, _))| {
            let t = Template::parse(raw, &scope_for(&[Seg::Key("vars".into())], None, &[])).ok()?;
            Some((
                name.clone(),
                super::template::render(&t, &Context::default()).ok()?,
            ))
        })
        .collect();

    // data: its paths may use `vars` and `env`.
    let data = match &lp.plan.data {
        Some(spec) => {
            let mut spec = spec.clone();
            let cx = Context {
                vars: Some(&vars_early),
                ..Context::default()
            };
            for (key, field) in [("file", &mut spec.file), ("audio_dir", &mut spec.audio_dir)] {
                let Some(written) = field.as_mut().filter(|w| Template::has_expressions(w)) else {
                    continue;
                };
                let filled = Template::parse(
                    written,
                    &scope_for(&[Seg::Key("data".into())], None, &var_names),
                )
                .and_then(|t| super::template::render(&t, &cx));
                match filled {
                    Ok(v) => *written = v,
                    Err(e) => {
                        return Err(PlanError(vec![lp.diag(
                            &[Seg::Key("data".into()), Seg::Key(key.into())],
                            e.message,
                            e.hint,
                        )]));
                    }
                }
            }
            match super::compile::read_data(&spec, &|w| lp.resolve(w)) {
                Ok(d) => Some(Arc::new(d)),
                Err(e) => {
                    return Err(PlanError(vec![lp.diag(
                        &[Seg::Key("data".into()), Seg::Key(e.key.into())],
                        e.message,
                        e.hint,
                    )]));
                }
            }
        }
        None => None,
    };
    let columns = data.as_ref().map(|d| d.columns.clone());

    // Check every template where it is written.
    let mut any = check_tree_of(lp, 0, columns.as_deref(), &var_names, &[], &mut errs);
    for i in 0..lp.includes.len() {
        any |= check_tree_of(
            lp,
            i + 1,
            columns.as_deref(),
            &var_names,
            &["vars", "fragments"],
            &mut errs,
        );
    }
    check_uses(lp, &fragments, &mut errs);
    if !errs.is_empty() {
        return Err(PlanError(errs));
    }

    // vars: `env` filled in.
    let mut vars = BTreeMap::new();
    for (name, (raw, _)) in &vars_raw {
        let t = Template::parse(
            raw,
            &scope_for(&[Seg::Key("vars".into())], columns.as_deref(), &[]),
        );
        let v = t
            .and_then(|t| super::template::render(&t, &Context::default()))
            .map_err(|e| {
                PlanError(vec![lp.diag(
                    &[Seg::Key("vars".into()), Seg::Key(name.clone())],
                    e.message,
                    e.hint,
                )])
            })?;
        vars.insert(name.clone(), v);
    }

    let Some(mut value) = main_value else {
        lp.data = data;
        return Ok(());
    };
    if !any && lp.includes.is_empty() && data.is_none() {
        lp.plan.vars = vars;
        return Ok(());
    }
    if let Value::Object(map) = &mut value {
        map.insert(
            "vars".into(),
            serde_json::to_value(&vars).unwrap_or(Value::Null),
        );
        let frags: serde_json::Map<String, Value> = fragments
            .iter()
            .map(|(k, (v, _, _))| (k.clone(), v.clone()))
            .collect();
        map.insert("fragments".into(), Value::Object(frags));
    }
    let cx = Context {
        row: None,
        vars: Some(&vars),
        event: None,
    };
    fill(
        &mut value,
        &mut Vec::new(),
        columns.as_deref(),
        &var_names,
        &cx,
        &[Ns::Vars, Ns::Env],
    )
    .map_err(|m| PlanError(vec![file_diag(&lp.path, m, None)]))?;
    // Strings only changed their text: the plan deserializes as before.
    lp.plan = serde_json::from_value(value.clone()).map_err(|e| {
        PlanError(vec![file_diag(
            &lp.path,
            format!("after filling in `vars` and `env`: {e}"),
            Some(
                "templates fill in strings; a number or duration cannot come from a variable"
                    .into(),
            ),
        )])
    })?;
    lp.data = data;
    lp.value = Some(Arc::new(value));
    lp.var_names = var_names;
    Ok(())
}

fn check_tree_of(
    lp: &LoadedPlan,
    file: usize,
    columns: Option<&[String]>,
    vars: &[String],
    only_top: &[&str],
    errs: &mut Vec<Diagnostic>,
) -> bool {
    let (path, source, tree) = if file == 0 {
        (&lp.path, &lp.source, lp.tree.as_ref())
    } else {
        let f = &lp.includes[file - 1];
        (&f.path, &f.source, f.tree.as_ref())
    };
    match tree {
        Some(t) => check_tree(
            t,
            &mut Vec::new(),
            path,
            source,
            columns,
            vars,
            only_top,
            errs,
        ),
        None => false,
    }
}

/// Every `use:` names a fragment, and no fragment uses itself (directly or through others).
fn check_uses(
    lp: &LoadedPlan,
    fragments: &BTreeMap<String, (Value, Vec<Step>, usize)>,
    errs: &mut Vec<Diagnostic>,
) {
    let names: Vec<&str> = fragments.keys().map(String::as_str).collect();
    let check = |steps: &[Step], list: Vec<Seg>, errs: &mut Vec<Diagnostic>| {
        super::walk_list(steps, &list, &mut |step, path| {
            if let Some(name) = &step.use_
                && !fragments.contains_key(name)
            {
                let mut p = path.to_vec();
                p.push(Seg::Key("use".into()));
                let hint = did_you_mean(name, &names)
                    .map(|c| format!("did you mean `{c}`?"))
                    .or_else(|| {
                        Some(if names.is_empty() {
                            "define it under `fragments:` (or `include:` a file that does)".into()
                        } else {
                            format!("the fragments: {}", names.join(", "))
                        })
                    });
                errs.push(lp.diag(&p, format!("no fragment named `{name}`"), hint));
            }
        });
    };
    for (si, sc) in lp.plan.scenarios.iter().enumerate() {
        check(
            &sc.steps,
            vec![
                Seg::Key("scenarios".into()),
                Seg::Index(si),
                Seg::Key("steps".into()),
            ],
            errs,
        );
    }
    for (name, (_, steps, _)) in fragments {
        check(
            steps,
            vec![Seg::Key("fragments".into()), Seg::Key(name.clone())],
            errs,
        );
    }
    // Cycles: is a fragment reachable from itself over the `use` edges? Reported once, at
    // the `use` that starts the loop.
    let uses = |steps: &[Step]| {
        let mut out = Vec::new();
        super::walk_list(steps, &[], &mut |s, _| out.extend(s.use_.clone()));
        out
    };
    let chain_to = |from: &str, target: &str| -> Option<Vec<String>> {
        let mut stack = vec![vec![from.to_string()]];
        let mut visited = BTreeSet::new();
        while let Some(chain) = stack.pop() {
            let last = chain.last().cloned().unwrap_or_default();
            if last == target {
                return Some(chain);
            }
            if !visited.insert(last.clone()) {
                continue;
            }
            if let Some((_, steps, _)) = fragments.get(&last) {
                for next in uses(steps) {
                    let mut c = chain.clone();
                    c.push(next);
                    stack.push(c);
                }
            }
        }
        None
    };
    for (start, (_, steps, _)) in fragments {
        let mut found: Option<(Vec<Seg>, Vec<String>)> = None;
        let list = [Seg::Key("fragments".into()), Seg::Key(start.clone())];
        super::walk_list(steps, &list, &mut |step, path| {
            if let (None, Some(next)) = (&found, &step.use_)
                && let Some(chain) = chain_to(next, start)
            {
                let mut p = path.to_vec();
                p.push(Seg::Key("use".into()));
                let mut whole = vec![start.clone()];
                whole.extend(chain);
                found = Some((p, whole));
            }
        });
        if let Some((path, chain)) = found {
            errs.push(lp.diag(
                &path,
                format!("fragment `{start}` uses itself: {}", chain.join(" → ")),
                Some("a fragment cannot use itself, directly or through others".into()),
            ));
            break;
        }
    }
}
