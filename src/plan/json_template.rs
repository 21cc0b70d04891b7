//! JSON with templated strings, for `send_json` steps and `on_tool_call` outputs: every string
//! in the value (keys stay as written) is a [`super::template::Template`], parsed and checked
//! at compile time and rendered per call, so a value never needs escaping.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::template::{Context, Scope, Template, TemplateError, render};

/// A JSON value whose strings are templates.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
    /// Numbers, booleans, null.
    Plain(Value),
}

impl JsonTemplate {
    /// Parse every string of `value` against `scope`.
    pub fn parse(value: &Value, scope: &Scope) -> Result<JsonTemplate, TemplateError> {
        Ok(match value {
            Value::String(s) => JsonTemplate::Str(Template::parse(s, scope)?),
            Value::Array(a) => JsonTemplate::Array(
                a.iter()
                    .map(|v| JsonTemplate::parse(v, scope))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => JsonTemplate::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::parse(v, scope)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => JsonTemplate::Plain(other.clone()),
        })
    }

    /// The value, filled in from `cx`.
    pub fn render(&self, cx: &Context) -> Result<Value, TemplateError> {
        Ok(match self {
            JsonTemplate::Str(t) => Value::String(render(t, cx)?),
            JsonTemplate::Array(a) => {
                Value::Array(a.iter().map(|v| v.render(cx)).collect::<Result<_, _>>()?)
            }
            JsonTemplate::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(cx)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            JsonTemplate::Plain(v) => v.clone(),
        })
    }
}

/// `on_tool_call`, compiled: each tool's output, and the one for every other tool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolReplies {
    pub by_tool: BTreeMap<String, JsonTemplate>,
    pub any: Option<JsonTemplate>,
}

impl ToolReplies {
    /// Compile `spec`'s outputs (`{{ event.… }}` is the tool call); errors name the key.
    pub fn compile(
        spec: &super::model::OnToolCall,
        scope: &Scope,
    ) -> Result<Arc<ToolReplies>, (String, TemplateError)> {
        let mut out = ToolReplies::default();
        for (tool, reply) in &spec.0 {
            let t = JsonTemplate::parse(&reply.output, scope).map_err(|e| (tool.clone(), e))?;
            if tool == super::model::ANY_TOOL {
                out.any = Some(t);
            } else {
                out.by_tool.insert(tool.clone(), t);
            }
        }
        Ok(Arc::new(out))
    }

    /// The output template for a call of `tool`, if this rule answers it.
    pub fn output_for(&self, tool: &str) -> Option<&JsonTemplate> {
        self.by_tool.get(tool).or(self.any.as_ref())
    }

    /// The `function_call_output` text for the tool call `event`: a rendered string as is,
    /// any other value serialised.
    pub fn output(&self, tool: &str, cx: &Context) -> Option<Result<String, TemplateError>> {
        let t = self.output_for(tool)?;
        Some(t.render(cx).map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

/// The scope of `send_json` and `on_tool_call` templates: `event.` allowed. (`row.` and
/// `vars.` follow the plan's `data:` and `vars:` once the loader fills them in.)
pub fn event_scope() -> Scope<'static> {
    Scope {
        event: true,
        ..Scope::default()
    }
}

/// Compile a `send_json` step's value (errors pushed at `path`'s `send_json`).
pub(crate) fn compile_step(
    lp: &super::LoadedPlan,
    value: &Value,
    path: &[super::diag::Seg],
    errs: &mut Vec<super::diag::Diagnostic>,
) -> Option<Arc<JsonTemplate>> {
    match JsonTemplate::parse(value, &event_scope()) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            let mut p = path.to_vec();
            p.push(super::diag::Seg::Key("send_json".into()));
            errs.push(lp.diag(&p, format!("send_json: {e}"), e.hint.clone()));
            None
        }
    }
}

/// The `on_tool_call` of scenario `si` (its own, else the target's), compiled; None when
/// neither has one or it does not compile (a plan error from [`validate_tool_replies`]).
pub(crate) fn compile_tool_replies(lp: &super::LoadedPlan, si: usize) -> Option<Arc<ToolReplies>> {
    let plan = &lp.plan;
    let spec = plan.scenarios[si]
        .on_tool_call
        .as_ref()
        .or(plan.target.on_tool_call.as_ref())?;
    ToolReplies::compile(spec, &event_scope()).ok()
}

/// Plan errors of `on_tool_call` (target and scenarios): templates that do not parse, an
/// empty table, a protocol without Realtime tool calls.
pub(crate) fn validate_tool_replies(
    lp: &super::LoadedPlan,
    errs: &mut Vec<super::diag::Diagnostic>,
) {
    use crate::plan_path;
    let plan = &lp.plan;
    let mut specs: Vec<(Vec<super::diag::Seg>, &super::model::OnToolCall)> = Vec::new();
    if let Some(s) = &plan.target.on_tool_call {
        specs.push((plan_path!["target", "on_tool_call"].to_vec(), s));
    }
    for (si, sc) in plan.scenarios.iter().enumerate() {
        if let Some(s) = &sc.on_tool_call {
            specs.push((plan_path!["scenarios", si, "on_tool_call"].to_vec(), s));
        }
    }
    for (si, sc) in plan.scenarios.iter().enumerate() {
        super::walk_steps(
            &sc.steps,
            &plan_path!["scenarios", si],
            &mut |step, path| {
                if let Some(v) = &step.send_json {
                    compile_step(lp, v, path, errs);
                }
            },
        );
    }
    for (path, spec) in specs {
        if plan.target.protocol != super::model::ProtocolKind::OpenaiRealtime {
            errs.push(lp.diag(
                &path,
                format!(
                    "`on_tool_call` answers OpenAI Realtime tool calls, but this target speaks `{}`",
                    plan.target.protocol.name()
                ),
                Some("for another protocol, send the answer with a `send_json` step".into()),
            ));
            continue;
        }
        if spec.0.is_empty() {
            errs.push(lp.diag(
                &path,
                "`on_tool_call` is empty",
                Some(format!(
                    "write `{}: {{output: ...}}` for every tool, or a tool's name",
                    super::model::ANY_TOOL
                )),
            ));
        }
        if let Err((tool, e)) = ToolReplies::compile(spec, &event_scope()) {
            let mut p = path.clone();
            p.push(super::diag::Seg::Key(tool.clone()));
            p.push(super::diag::Seg::Key("output".into()));
            errs.push(lp.diag(&p, format!("on_tool_call `{tool}`: {e}"), e.hint.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_render_values_stay() {
        let v =
            json!({"type": "x", "n": 3, "item": {"call_id": "{{ event.call_id }}", "ok": true}});
        let t = JsonTemplate::parse(&v, &event_scope()).unwrap();
        let event = json!({"call_id": "call_7"});
        let cx = Context {
            event: Some(&event),
            ..Context::default()
        };
        assert_eq!(
            t.render(&cx).unwrap(),
            json!({"type": "x", "n": 3, "item": {"call_id": "call_7", "ok": true}})
        );
        let err = JsonTemplate::parse(&json!(["{{ evnt.x }}"]), &event_scope()).unwrap_err();
        assert!(err.to_string().contains("not a template name"), "{err}");
    }

    #[test]
    fn a_tool_gets_its_own_output_or_the_default() {
        let spec: crate::plan::model::OnToolCall = serde_json::from_value(json!({
            "respond": {"output": "{\"ok\": true}"},
            "get_weather": {"output": {"temp": 21}},
        }))
        .unwrap();
        let r = ToolReplies::compile(&spec, &event_scope()).unwrap();
        let cx = Context::default();
        assert_eq!(
            r.output("get_weather", &cx).unwrap().unwrap(),
            r#"{"temp":21}"#
        );
        assert_eq!(r.output("lookup", &cx).unwrap().unwrap(), r#"{"ok": true}"#);
        let only: crate::plan::model::OnToolCall =
            serde_json::from_value(json!({"get_weather": {"output": "x"}})).unwrap();
        let r = ToolReplies::compile(&only, &event_scope()).unwrap();
        assert!(r.output("lookup", &cx).is_none());
    }
}
