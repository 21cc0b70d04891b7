//! Templates: the built-in `summary.md` and `report.html`, user templates, the minijinja
//! environment and the context every template is rendered with.

use std::collections::BTreeMap;
use std::path::PathBuf;

use minijinja::{Environment, UndefinedBehavior, value::Value};
use serde::Serialize;

use super::error::ReportError;
use super::files::RunFiles;
use super::{html, timeline};
use crate::contract::RunReport;
use crate::plan::model::ReportFormat;

/// Built-in templates: (output file, format that selects it, template source).
pub const BUILTIN_TEMPLATES: &[(&str, ReportFormat, &str)] = &[
    (
        "summary.md",
        ReportFormat::Md,
        include_str!("templates/summary.md.j2"),
    ),
    (
        "report.html",
        ReportFormat::Html,
        include_str!("templates/report.html.j2"),
    ),
];

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Output names choose escaping: `.html`, `.htm`, `.xml` (also with `.j2`) are HTML-escaped.
    env.set_auto_escape_callback(minijinja::default_auto_escape_callback);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// Check a template's syntax (before a run, so a broken template stops it early).
pub fn check_template(name: &str, source: &str) -> Result<(), ReportError> {
    let mut env = environment();
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| template_error(name, format!("{e}")))
}

fn template_error(name: &str, message: String) -> ReportError {
    ReportError::Template {
        name: name.to_string(),
        message,
    }
}

/// Render a template with any serializable context.
pub fn render_with<S: Serialize>(name: &str, source: &str, ctx: &S) -> Result<String, ReportError> {
    render_value(name, source, ser(ctx))
}

/// Render a template with the report as its context.
pub fn render_template(
    name: &str,
    source: &str,
    report: &RunReport,
) -> Result<String, ReportError> {
    render_with(name, source, report)
}

pub(super) fn render_value(name: &str, source: &str, ctx: Value) -> Result<String, ReportError> {
    let mut env = environment();
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| template_error(name, format!("{e}")))?;
    let tmpl = env
        .get_template(name)
        .map_err(|e| template_error(name, format!("{e}")))?;
    tmpl.render(ctx)
        .map_err(|e| template_error(name, format!("{e:#}")))
}

/// The full template context: every field of `metrics.json` at the top level, plus `timeline`
/// (iterations with markers and samples), `events` (the rows of `timeline.csv`), `resources`
/// and `charts` (inline SVG and chart notes; see the README).
pub fn template_context(files: &RunFiles) -> Value {
    let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
    // Defaults for anything an older or hand-written metrics.json lacks, then every field as
    // written (including ones this version does not know).
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&files.view) {
        for (k, v) in map {
            ctx.insert(k, ser(v));
        }
    }
    if let serde_json::Value::Object(map) = &files.report {
        for (k, v) in map {
            ctx.insert(k.clone(), ser(v));
        }
    }
    ctx.insert("timeline".into(), ser(&files.run.iterations));
    ctx.insert(
        "events".into(),
        ser(timeline::csv_rows(&files.run.iterations)),
    );
    ctx.insert("resources".into(), ser(&files.run.resources));
    ctx.insert("charts".into(), html::charts(&files.view, &files.run));
    ctx.insert(
        "failure_snippets".into(),
        ser(super::snippet::failure_snippets(&files.view)),
    );
    Value::from(ctx)
}

/// Read template files: `(output name, path)`; checks each one's syntax.
pub fn load_templates(
    pairs: &[(String, PathBuf)],
) -> Result<BTreeMap<String, String>, ReportError> {
    let mut out = BTreeMap::new();
    for (name, path) in pairs {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ReportError::TemplateName(name.clone()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::ReadTemplate {
            path: path.clone(),
            source,
        })?;
        check_template(name, &text)?;
        out.insert(name.clone(), text);
    }
    Ok(out)
}

/// Any serializable value as a template value.
pub(super) fn ser<S: Serialize>(x: S) -> Value {
    Value::from(minijinja::value::Serde(x))
}
