//! `on_tool_call`: how the caller answers the bot's tool calls (OpenAI Realtime
//! `function_call`s), on a scenario or the target.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// How the caller answers tool calls: `respond:` answers every tool, a tool's own name answers
/// that tool (it wins over `respond:`). Each answer is a `conversation.item.create` of a
/// `function_call_output` with the call's `call_id`, then `response.create`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct OnToolCall(pub BTreeMap<String, ToolReply>);

/// The caller's answer to one tool call.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolReply {
    /// The function's result: a string (sent as is) or any JSON value (sent serialised).
    /// Strings are templates: `{{ event.arguments }}`, `{{ event.name }}`, `{{ event.call_id }}`
    /// (the tool call), `{{ row.… }}`, `{{ vars.… }}`.
    pub output: serde_json::Value,
}

/// The key of `on_tool_call` that answers every tool without its own entry.
pub const ANY_TOOL: &str = "respond";
