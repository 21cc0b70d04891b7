//! The one string-template engine of plans: `{{ row.COLUMN }}` (the caller's data row),
//! `{{ vars.NAME }}` (the plan's `vars:`), `{{ env.NAME }}` (the environment) and, where a step
//! allows it, `{{ event.PATH }}` (a field of the last awaited event).
//!
//! A string is parsed once, at compile time, into a [`Template`]: every name it uses is checked
//! against the names that exist ([`Scope`]), so a typo is a plan error with the offset of the
//! expression and a did-you-mean. [`render`] then fills it in from a [`Context`]. Values read
//! from the environment are registered as secrets ([`crate::redact`]).
//!
//! The plan's own passes use it first: at load every string's `vars.`/`env.` names are filled
//! in, and at compile each data row's `row.` names (one rendering per distinct row). So a step's
//! string reaching compile (a `send_json` body) holds at most `{{ event.… }}` names: parse it
//! with `Scope { event: true, .. }` and [`render`] it per call with `Context { event, .. }`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::diag::did_you_mean;

/// A namespace of template names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// `row.COLUMN`: the caller's data row (`data:`).
    Row,
    /// `vars.NAME`: the plan's `vars:`.
    Vars,
    /// `env.NAME`: an environment variable.
    Env,
    /// `event.PATH`: a (dotted) field of the last awaited event.
    Event,
}

impl Ns {
    pub fn name(self) -> &'static str {
        match self {
            Ns::Row => "row",
            Ns::Vars => "vars",
            Ns::Env => "env",
            Ns::Event => "event",
        }
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// `{{ ns.name }}`; `offset` is the byte offset of `{{` in the source string.
    Name {
        ns: Ns,
        name: String,
        offset: usize,
    },
    /// An expression this scope leaves to another engine (custom-protocol templates), kept
    /// verbatim, braces included.
    Verbatim(String),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub parts: Vec<Part>,
}

/// Why a template does not parse or render. `offset` is the byte offset in the template text
/// of the expression at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
    /// A did-you-mean or a pointer to the fix.
    pub hint: Option<String>,
}

/// The names a template may use where it is written.
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    /// Columns of the plan's data (None: the plan has no `data:`, `row.` is refused).
    pub row: Option<&'a [String]>,
    /// Why `row.` is refused here even though the plan has data (None: allowed).
    pub row_refused: Option<&'a str>,
    /// Names of `vars:`.
    pub vars: &'a [String],
    /// `event.` is allowed (a `send_json` step).
    pub event: bool,
    /// Leave expressions outside `row.`/`env.` (and `vars.` names this scope does not know)
    /// untouched for another template engine, instead of refusing them.
    pub passthrough: bool,
}

/// Values a template is rendered with.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    pub row: Option<&'a BTreeMap<String, String>>,
    pub vars: Option<&'a BTreeMap<String, String>>,
    pub event: Option<&'a Value>,
}

fn err(offset: usize, message: String, hint: Option<String>) -> TemplateError {
    TemplateError {
        offset,
        message,
        hint,
    }
}

fn valid_name(ns: Ns, name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    match ns {
        Ns::Event => {
            !name.is_empty()
                && name
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(ok_char))
        }
        _ => !name.is_empty() && name.chars().all(ok_char),
    }
}

impl Template {
    /// Whether the text holds any `{{`.
    pub fn has_expressions(text: &str) -> bool {
        text.contains("{{")
    }

    /// Parse `text`, checking every name against `scope`.
    pub fn parse(text: &str, scope: &Scope) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut base = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let offset = base + open;
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(err(
                    offset,
                    "`{{` without a closing `}}`".into(),
                    Some("write `{{ vars.NAME }}`, `{{ row.COLUMN }}` or `{{ env.NAME }}`".into()),
                ));
            };
            let expr = after[..close].trim();
            let whole = &rest[open..open + 2 + close + 2];
            parts.push(Self::expression(expr, whole, offset, scope)?);
            base += open + 2 + close + 2;
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    fn expression(
        expr: &str,
        whole: &str,
        offset: usize,
        scope: &Scope,
    ) -> Result<Part, TemplateError> {
        let (head, name) = expr.split_once('.').unwrap_or((expr, ""));
        let ns = match head {
            "row" => Some(Ns::Row),
            "vars" => Some(Ns::Vars),
            "env" => Some(Ns::Env),
            "event" => Some(Ns::Event),
            _ => None,
        };
        let verbatim = || Part::Verbatim(whole.to_string());
        let Some(ns) = ns.filter(|ns| *ns != Ns::Event || scope.event || !scope.passthrough) else {
            if scope.passthrough {
                return Ok(verbatim());
            }
            let hint = did_you_mean(head, &["row", "vars", "env"])
                .map(|c| format!("did you mean `{{{{ {c}.{name} }}}}`?"))
                .or_else(|| Some("templates name `row.COLUMN`, `vars.NAME` or `env.NAME`".into()));
            return Err(err(
                offset,
                format!("`{{{{ {expr} }}}}` is not a template name"),
                hint,
            ));
        };
        if !valid_name(ns, name) {
            if scope.passthrough && ns != Ns::Row && ns != Ns::Env {
                return Ok(verbatim());
            }
            return Err(err(
                offset,
                format!(
                    "`{{{{ {expr} }}}}`: `{name}` is not a valid {} name",
                    ns.name()
                ),
                None,
            ));
        }
        match ns {
            Ns::Row => match (scope.row, scope.row_refused) {
                (None, _) => {
                    return Err(err(
                        offset,
                        format!("`{{{{ row.{name} }}}}` but the plan has no `data:`"),
                        Some("add `data: { file: callers.csv }` to give each caller a row".into()),
                    ));
                }
                (Some(_), Some(why)) => {
                    return Err(err(
                        offset,
                        format!("`{{{{ row.{name} }}}}` cannot be used here: {why}"),
                        None,
                    ));
                }
                (Some(cols), None) if !cols.iter().any(|c| c == name) => {
                    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
                    let hint = did_you_mean(name, &names)
                        .map(|c| format!("did you mean `{{{{ row.{c} }}}}`?"))
                        .or_else(|| Some(format!("the data's columns: {}", names.join(", "))));
                    return Err(err(
                        offset,
                        format!("the data has no column `{name}`"),
                        hint,
                    ));
                }
                _ => {}
            },
            Ns::Vars => {
                if !scope.vars.iter().any(|v| v == name) {
                    if scope.passthrough {
                        return Ok(verbatim());
                    }
                    let names: Vec<&str> = scope.vars.iter().map(String::as_str).collect();
                    let hint = did_you_mean(name, &names)
                        .map(|c| format!("did you mean `{{{{ vars.{c} }}}}`?"))
                        .or_else(|| {
                            Some(format!(
                                "define it under `vars:` (e.g. `vars: {{ {name}: … }}`)"
                            ))
                        });
                    return Err(err(
                        offset,
                        format!("no variable `{name}` in `vars:`"),
                        hint,
                    ));
                }
            }
            Ns::Env => {
                if std::env::var_os(name).is_none() {
                    return Err(err(
                        offset,
                        format!("environment variable `{name}` is not set"),
                        None,
                    ));
                }
            }
            Ns::Event => {
                if !scope.event {
                    return Err(err(
                        offset,
                        format!(
                            "`{{{{ event.{name} }}}}` can only be used in a `send_json` step or an `on_tool_call` answer"
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(Part::Name {
            ns,
            name: name.to_string(),
            offset,
        })
    }

    /// A template that is only `text`.
    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Text(text.to_string())],
        }
    }

    /// Whether the template names anything (otherwise it renders to its text).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| !matches!(p, Part::Name { .. }))
    }

    /// Whether it names something in `ns`.
    pub fn uses(&self, ns: Ns) -> bool {
        self.names().any(|(n, _)| n == ns)
    }

    /// Every `(namespace, name)` it uses.
    pub fn names(&self) -> impl Iterator<Item = (Ns, &str)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Name { ns, name, .. } => Some((*ns, name.as_str())),
            _ => None,
        })
    }

    /// Render only the namespaces in `only` (others are kept as written), for the plan's passes
    /// that fill in `vars`/`env` at load and `row` per caller.
    pub fn render_only(&self, cx: &Context, only: &[Ns]) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Name { ns, name, .. } if !only.contains(ns) => {
                    out.push_str(&format!("{{{{ {}.{name} }}}}", ns.name()));
                }
                Part::Name { ns, name, offset } => out.push_str(&lookup(*ns, name, *offset, cx)?),
                Part::Text(t) | Part::Verbatim(t) => out.push_str(t),
            }
        }
        Ok(out)
    }
}

fn lookup(ns: Ns, name: &str, offset: usize, cx: &Context) -> Result<String, TemplateError> {
    let missing = |what: &str| err(offset, format!("{what} `{name}` has no value"), None);
    match ns {
        Ns::Row => cx
            .row
            .and_then(|r| r.get(name))
            .cloned()
            .ok_or_else(|| missing("row column")),
        Ns::Vars => cx
            .vars
            .and_then(|v| v.get(name))
            .cloned()
            .ok_or_else(|| missing("variable")),
        Ns::Env => match std::env::var(name) {
            Ok(v) => {
                crate::redact::register(&v);
                Ok(v)
            }
            Err(_) => Err(err(
                offset,
                format!("environment variable `{name}` is not set"),
                None,
            )),
        },
        Ns::Event => {
            let mut v = cx.event.ok_or_else(|| missing("event field"))?;
            for key in name.split('.') {
                v = match v {
                    Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                    other => other.get(key),
                }
                .ok_or_else(|| missing("event field"))?;
            }
            Ok(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        }
    }
}

/// Fill in a template. Environment values are registered as secrets.
pub fn render(template: &Template, cx: &Context) -> Result<String, TemplateError> {
    template.render_only(cx, &[Ns::Row, Ns::Vars, Ns::Env, Ns::Event])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<String> {
        vec!["lang".into(), "clip".into()]
    }

    #[test]
    fn parses_and_renders_every_namespace() {
        let c = cols();
        let vars = vec!["region".to_string()];
        let scope = Scope {
            row: Some(&c),
            vars: &vars,
            event: true,
            ..Scope::default()
        };
        // SAFETY: tests set a variable only this test reads.
        unsafe { std::env::set_var("PLANRUN_TEMPLATE_TEST", "tok-123456") };
        let t = Template::parse(
            "a/{{ row.lang }}/{{row.clip}}-{{ vars.region }}-{{ env.PLANRUN_TEMPLATE_TEST }}-{{ event.item.call_id }}",
            &scope,
        )
        .unwrap();
        assert!(!t.is_static());
        assert!(t.uses(Ns::Row));
        let row: BTreeMap<String, String> =
            [("lang".into(), "fr".into()), ("clip".into(), "c1".into())].into();
        let v: BTreeMap<String, String> = [("region".into(), "eu".into())].into();
        let ev = serde_json::json!({"item": {"call_id": "x9"}});
        let cx = Context {
            row: Some(&row),
            vars: Some(&v),
            event: Some(&ev),
        };
        assert_eq!(render(&t, &cx).unwrap(), "a/fr/c1-eu-tok-123456-x9");
        assert_eq!(
            t.render_only(&cx, &[Ns::Vars]).unwrap(),
            "a/{{ row.lang }}/{{ row.clip }}-eu-{{ env.PLANRUN_TEMPLATE_TEST }}-{{ event.item.call_id }}"
        );
        assert_eq!(crate::redact::redact("tok-123456"), "***");
    }

    #[test]
    fn unknown_names_are_errors_with_offset_and_hint() {
        let c = cols();
        let scope = Scope {
            row: Some(&c),
            ..Scope::default()
        };
        let e = Template::parse("x {{ row.lnag }}", &scope).unwrap_err();
        assert_eq!(e.offset, 2);
        assert_eq!(e.message, "the data has no column `lnag`");
        assert_eq!(e.hint.as_deref(), Some("did you mean `{{ row.lang }}`?"));
        let e = Template::parse("{{ vars.x }}", &scope).unwrap_err();
        assert!(e.message.contains("no variable `x`"), "{e}");
        let e = Template::parse("{{ rwo.lang }}", &scope).unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean `{{ row.lang }}`?"));
        let e = Template::parse("{{ row.lang", &scope).unwrap_err();
        assert!(e.message.contains("closing"));
        let e = Template::parse("{{ row.x }}", &Scope::default()).unwrap_err();
        assert!(e.message.contains("no `data:`"), "{e}");
        let e = Template::parse("{{ event.x }}", &scope).unwrap_err();
        assert!(e.message.contains("send_json"), "{e}");
        let e = Template::parse("{{ env.PLANRUN_SURELY_UNSET_1234 }}", &scope).unwrap_err();
        assert!(e.message.contains("is not set"), "{e}");
    }

    #[test]
    fn passthrough_keeps_other_engines_expressions() {
        let c = cols();
        let scope = Scope {
            row: Some(&c),
            passthrough: true,
            ..Scope::default()
        };
        let t = Template::parse(r#"{"a":"{{ audio }}","k":"{{ vars.key }}","l":"{{ row.lang }}","t":{{ text|tojson }}}"#, &scope).unwrap();
        let row: BTreeMap<String, String> = [("lang".into(), "de".into())].into();
        let cx = Context {
            row: Some(&row),
            ..Context::default()
        };
        assert_eq!(
            render(&t, &cx).unwrap(),
            r#"{"a":"{{ audio }}","k":"{{ vars.key }}","l":"de","t":{{ text|tojson }}}"#
        );
        assert!(Template::parse("{{ row.nope }}", &scope).is_err());
    }
}
