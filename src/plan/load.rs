//! Reading plan files: YAML or TOML text into the typed model, with the source kept for
//! positioned diagnostics. Parsing ends by validating ([`super::validate`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::diag::{self, LocNode, Seg, at, hint_for_serde_message, line_col, source_line};
use super::{Diagnostic, MAX_PLAN_BYTES, Plan, PlanError};

/// A parsed plan with its source kept for positioned diagnostics.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    pub plan: Plan,
    pub path: PathBuf,
    pub source: String,
    pub tree: Option<LocNode>,
    /// Files included (directly or through others), for positions inside them.
    pub includes: Vec<SourceFile>,
    /// Which file defines each fragment and variable (`("fragments", name)`): 0 the plan,
    /// `k` is `includes[k - 1]`.
    pub origin: BTreeMap<(String, String), usize>,
    /// The plan's rows (`data:`), read once.
    pub data: Option<Arc<super::compile::DataSet>>,
    /// The plan as a JSON value with `vars` and `env` filled in and `{{ row.… }}` kept, when
    /// it has includes, variables, data or templates: rendered per row at compile time.
    pub value: Option<Arc<serde_json::Value>>,
    /// Names of `vars:` (the plan's and included ones).
    pub var_names: Vec<String>,
}

/// An included file, kept for positioned diagnostics.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub source: String,
    pub tree: Option<LocNode>,
    pub value: serde_json::Value,
}

impl LoadedPlan {
    /// Resolve a path written in the plan: relative to the plan's folder, or failing that
    /// to the working directory (so `audio_files/x.wav` works from `plans/` when run at the
    /// repository root).
    pub fn resolve(&self, written: &str) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let beside = base.join(written);
        if beside.exists() || Path::new(written).is_absolute() {
            return beside;
        }
        let cwd = PathBuf::from(written);
        if cwd.exists() { cwd } else { beside }
    }

    pub(crate) fn diag(
        &self,
        path: &[Seg],
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        if let Some(f) = self.file_of(path) {
            return at(&f.path, &f.source, f.tree.as_ref(), path, message, hint);
        }
        self.diag_in_plan(path, message, hint)
    }

    /// The included file a path points into (`fragments.NAME…`, `vars.NAME` defined there).
    fn file_of(&self, path: &[Seg]) -> Option<&SourceFile> {
        let (Some(Seg::Key(section)), Some(Seg::Key(name))) = (path.first(), path.get(1)) else {
            return None;
        };
        let k = *self.origin.get(&(section.clone(), name.clone()))?;
        k.checked_sub(1).and_then(|i| self.includes.get(i))
    }

    /// The 1-based line of `path` in the file it points into (0 if unknown).
    pub fn line_of(&self, path: &[Seg]) -> usize {
        let tree = match self.file_of(path) {
            Some(f) => f.tree.as_ref(),
            None => self.tree.as_ref(),
        };
        tree.map_or(0, |t| t.find(path).0)
    }

    /// A diagnostic at `path` of the plan file itself.
    pub(crate) fn diag_in_plan(
        &self,
        path: &[Seg],
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        at(
            &self.path,
            &self.source,
            self.tree.as_ref(),
            path,
            message,
            hint,
        )
    }
}

/// Whether a path names a TOML plan (otherwise YAML).
fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Read, parse and validate a plan file.
pub fn load(path: &Path) -> Result<LoadedPlan, PlanError> {
    let ext_ok = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["yaml", "yml", "toml"].contains(&e.to_ascii_lowercase().as_str()));
    let simple = |message: String, hint: Option<String>| {
        PlanError(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
            hint,
            source_line: None,
        }])
    };
    if !ext_ok {
        return Err(simple(
            "a plan file must end in .yaml, .yml or .toml".into(),
            None,
        ));
    }
    let source = std::fs::read_to_string(path).map_err(|e| {
        let hint = (e.kind() == std::io::ErrorKind::NotFound)
            .then(|| "check the path; plans usually live in plans/".to_string());
        simple(format!("cannot read plan: {e}"), hint)
    })?;
    parse_str(&source, path)
}

/// Parse and validate plan text; `path` names it in errors and picks the format.
pub fn parse_str(source: &str, path: &Path) -> Result<LoadedPlan, PlanError> {
    if source.len() > MAX_PLAN_BYTES {
        return Err(PlanError(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "the plan is {} bytes long; plans are limited to {} KiB",
                source.len(),
                MAX_PLAN_BYTES / 1024
            ),
            hint: None,
            source_line: None,
        }]));
    }
    let toml_format = is_toml(path);
    if toml_format && diag::toml_depth(source) > diag::MAX_DEPTH {
        return Err(PlanError(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "lists and tables nest more than {} levels deep",
                diag::MAX_DEPTH
            ),
            hint: None,
            source_line: None,
        }]));
    }
    let plan = parse_model::<Plan>(source, path)?;
    let mut loaded = LoadedPlan {
        plan,
        path: path.to_path_buf(),
        source: source.to_string(),
        tree: diag::locate_tree(source, toml_format),
        includes: Vec::new(),
        origin: BTreeMap::new(),
        data: None,
        value: None,
        var_names: Vec::new(),
    };
    super::include::resolve(&mut loaded)?;
    super::validate::validate(&loaded)?;
    Ok(loaded)
}

/// Parse YAML or TOML text (by `path`'s extension) into `T`, errors positioned.
pub(crate) fn parse_model<T: DeserializeOwned>(source: &str, path: &Path) -> Result<T, PlanError> {
    let toml_format = is_toml(path);
    if toml_format && diag::toml_depth(source) > diag::MAX_DEPTH {
        return Err(PlanError(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "lists and tables nest more than {} levels deep",
                diag::MAX_DEPTH
            ),
            hint: None,
            source_line: None,
        }]));
    }
    if toml_format {
        toml::from_str::<T>(source).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(source, s.start));
            let message = e.message().trim().to_string();
            serde_diag(path, source, line, column, message)
        })
    } else {
        serde_saphyr::from_str_with_options::<T>(source, diag::yaml_options()).map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
            serde_diag(path, source, line, column, saphyr_message(&e))
        })
    }
}

/// serde-saphyr's Display is `error: line L column C: MESSAGE` plus a snippet; keep MESSAGE.
fn saphyr_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest,
        _ => first,
    };
    // Custom (serde::de::Error::custom) messages carry their position again at the end.
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => &message[..i],
        _ => message,
    };
    message.trim().to_string()
}

fn serde_diag(path: &Path, source: &str, line: usize, column: usize, message: String) -> PlanError {
    let hint = hint_for_serde_message(&message);
    let message = if message.starts_with("missing field") {
        format!("{message} (required here)")
    } else {
        message
    };
    PlanError(vec![Diagnostic {
        file: path.to_path_buf(),
        line,
        column,
        message,
        hint,
        source_line: source_line(source, line),
    }])
}
