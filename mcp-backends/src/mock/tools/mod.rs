//! The tools of the mock: the conformance fixtures (`test_*`) and the tools the
//! gateway's own tests use (echo, whoami, digest, slow, crash, …).

use serde_json::{json, Map, Value};

use super::handler::RequestCtx;
use super::jsonrpc::RpcError;
use super::protocol;
use super::server::MockServer;

mod fixtures;
mod kit;
pub mod modern;
pub mod mrtr;
pub mod state;

/// Name of the `--long-tool-name` tool: exactly 70 characters.
pub const LONG_TOOL_NAME: &str =
    "mock_tool_with_a_deliberately_long_name_to_exercise_gateway_shortening";

/// Exit code of the `crash` tool.
pub const CRASH_EXIT_CODE: i32 = 3;

/// What a tool call produced.
pub enum ToolOutcome {
    /// A `CallToolResult`.
    Result(Value),
    /// No response at all (`close_stream`).
    Silent,
}

struct ToolDef {
    name: &'static str,
    description: &'static str,
    /// `(name, JSON type, description)`, all required.
    args: &'static [(&'static str, &'static str, &'static str)],
    /// Listed and callable in the 2025 eras only (it sends server-to-client
    /// requests or uses the GET stream, which the modern era has not).
    legacy_only: bool,
}

const fn tool(
    name: &'static str,
    description: &'static str,
    args: &'static [(&'static str, &'static str, &'static str)],
) -> ToolDef {
    ToolDef {
        name,
        description,
        args,
        legacy_only: false,
    }
}

const fn legacy_tool(
    name: &'static str,
    description: &'static str,
    args: &'static [(&'static str, &'static str, &'static str)],
) -> ToolDef {
    ToolDef {
        name,
        description,
        args,
        legacy_only: true,
    }
}

const FIXED_TOOLS: &[ToolDef] = &[
    tool("test_simple_text", "Tests simple text content response", &[]),
    tool("test_image_content", "Tests image content response", &[]),
    tool("test_audio_content", "Tests audio content response", &[]),
    tool(
        "test_embedded_resource",
        "Tests embedded resource content response",
        &[],
    ),
    tool(
        "test_multiple_content_types",
        "Tests response with multiple content types (text, image, resource)",
        &[],
    ),
    tool(
        "test_tool_with_logging",
        "Tests tool that emits log messages during execution",
        &[],
    ),
    tool(
        "test_tool_with_progress",
        "Tests tool that reports progress notifications",
        &[],
    ),
    tool("test_error_handling", "Tests error response handling", &[]),
    legacy_tool(
        "test_sampling",
        "Tests server-initiated sampling (LLM completion request)",
        &[("prompt", "string", "The prompt to send to the LLM")],
    ),
    legacy_tool(
        "test_elicitation",
        "Tests server-initiated elicitation (user input request)",
        &[("message", "string", "The message to show the user")],
    ),
    legacy_tool(
        "test_elicitation_sep1034_defaults",
        "Tests elicitation with default values per SEP-1034",
        &[],
    ),
    legacy_tool(
        "test_elicitation_sep1330_enums",
        "Tests elicitation with enum schema improvements per SEP-1330",
        &[],
    ),
    legacy_tool(
        "test_reconnection",
        "Closes the SSE connection mid-call; the result is delivered when the client resumes with Last-Event-ID (SEP-1699)",
        &[],
    ),
    tool(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613, SEP-2106)",
        &[],
    ),
    tool(
        "echo",
        "Returns the given text",
        &[("text", "string", "Text to return")],
    ),
    tool(
        "whoami",
        "Returns the server name, the session id, the request's JSON-RPC id and the HTTP request headers as JSON",
        &[],
    ),
    tool(
        "digest",
        "Returns the SHA-256 and the length of the UTF-8 bytes of data, as JSON",
        &[("data", "string", "Data to hash")],
    ),
    tool(
        "slow",
        "Waits ms milliseconds, then returns; cancellable",
        &[("ms", "integer", "Milliseconds to wait")],
    ),
    tool("crash", "Exits the server process with code 3", &[]),
    tool(
        "close_stream",
        "Ends the reply SSE stream without sending the response",
        &[],
    ),
    tool(
        "notify_list_changed",
        "Sends notifications/tools/list_changed: on the session's GET stream (2025 eras), on every listen stream that asked for it (2026-07-28)",
        &[],
    ),
    legacy_tool(
        "list_roots",
        "Asks the client for roots/list and returns its answer as JSON",
        &[],
    ),
    legacy_tool(
        "confirm_twice",
        "Asks the client twice in turn (elicitation/create for a name, then sampling/createMessage with it) and returns both answers",
        &[],
    ),
];

const DYNAMIC_TOOL: ToolDef = tool(
    "test_dynamic_tool",
    "A tool added 2 seconds after the server started",
    &[],
);

fn input_schema(def: &ToolDef) -> Value {
    if def.name == "json_schema_2020_12_tool" {
        return json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "$anchor": "addressDef",
                    "type": "object",
                    "properties": { "street": { "type": "string" }, "city": { "type": "string" } },
                },
            },
            "properties": {
                "name": { "type": "string" },
                "address": { "$ref": "#/$defs/address" },
                "contactMethod": { "type": "string", "enum": ["phone", "email"] },
                "phone": { "type": "string" },
                "email": { "type": "string" },
            },
            "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
            "if": { "properties": { "contactMethod": { "const": "phone" } }, "required": ["contactMethod"] },
            "then": { "required": ["phone"] },
            "else": { "required": ["email"] },
            "additionalProperties": false,
        });
    }
    let mut properties = Map::new();
    for (name, ty, description) in def.args {
        let mut p = json!({ "type": ty, "description": description });
        if *ty == "integer" {
            p["minimum"] = json!(0);
        }
        properties.insert((*name).to_string(), p);
    }
    let required: Vec<&str> = def.args.iter().map(|(n, _, _)| *n).collect();
    let mut schema = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

fn definition(def: &ToolDef) -> Value {
    json!({ "name": def.name, "description": def.description, "inputSchema": input_schema(def) })
}

/// The fixed tools of an era: the modern era lists its own fixtures and not the
/// legacy-only tools.
fn era_tools(modern: bool) -> impl Iterator<Item = &'static ToolDef> {
    let own: &'static [ToolDef] = if modern { modern::TOOLS } else { &[] };
    FIXED_TOOLS
        .iter()
        .filter(move |t| !(modern && t.legacy_only))
        .chain(own.iter())
}

/// `tools/list`, in a fixed order (`modern`: for a 2026-07-28 request).
pub fn definitions(server: &MockServer, modern: bool) -> Vec<Value> {
    let mut list: Vec<Value> = era_tools(modern).map(definition).collect();
    if modern {
        list.push(self::modern::header_tool_definition());
    }
    if server.dynamic_added() {
        list.push(definition(&DYNAMIC_TOOL));
    }
    if server.config.long_tool_name {
        list.push(json!({
            "name": LONG_TOOL_NAME,
            "description": "A tool with a 70-character name",
            "inputSchema": { "type": "object", "properties": {} },
        }));
    }
    for i in 0..server.config.synthetic_tools {
        list.push(json!({
            "name": format!("tool_{i}"),
            "description": format!("Synthetic tool number {i}"),
            "inputSchema": { "type": "object", "properties": {} },
        }));
    }
    list
}

fn text_result(text: impl Into<String>) -> ToolOutcome {
    ToolOutcome::Result(json!({ "content": [{ "type": "text", "text": text.into() }] }))
}

fn error_result(text: impl Into<String>) -> ToolOutcome {
    ToolOutcome::Result(json!({
        "content": [{ "type": "text", "text": text.into() }],
        "isError": true,
    }))
}

fn synthetic_index(server: &MockServer, name: &str) -> Option<usize> {
    let digits = name.strip_prefix("tool_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits
        .parse::<usize>()
        .ok()
        .filter(|i| *i < server.config.synthetic_tools)
}

/// Invalid arguments: a tool execution error from 2025-11-25 on, a -32602
/// protocol error before (tools spec, "Error Handling").
fn invalid_arguments(
    ctx: &RequestCtx,
    tool: &str,
    detail: String,
) -> Result<ToolOutcome, RpcError> {
    let message = format!("Invalid arguments for tool '{tool}': {detail}");
    if protocol::validation_errors_are_tool_errors(&ctx.protocol()) {
        Ok(error_result(message))
    } else {
        Err(RpcError::invalid_params(message))
    }
}

/// `tools/call`.
pub async fn call(ctx: &RequestCtx, params: &Value) -> Result<ToolOutcome, RpcError> {
    let params = params
        .as_object()
        .ok_or_else(|| RpcError::invalid_params("tools/call requires params with 'name'"))?;
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("tools/call requires 'name' (string)"))?;
    let args = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => {
            return Err(RpcError::invalid_params(
                "tools/call: 'arguments' must be an object",
            ))
        }
    };
    let server = &ctx.server;
    let modern = ctx.modern.is_some();
    if modern {
        if let Some(outcome) = modern::run(ctx, name, params).await {
            return outcome;
        }
    }
    let known = era_tools(modern)
        .find(|t| t.name == name)
        .or_else(|| (name == DYNAMIC_TOOL.name && server.dynamic_added()).then_some(&DYNAMIC_TOOL));
    if let Some(def) = known {
        for (arg, ty, _) in def.args {
            let ok = match (args.get(*arg), *ty) {
                (Some(Value::String(_)), "string") => true,
                (Some(v), "integer") => v.as_u64().is_some(),
                _ => false,
            };
            if !ok {
                let detail = match args.get(*arg) {
                    None => format!("missing required argument '{arg}'"),
                    Some(_) if *ty == "integer" => {
                        format!("'{arg}' must be a non-negative integer")
                    }
                    Some(_) => format!("'{arg}' must be a {ty}"),
                };
                return invalid_arguments(ctx, name, detail);
            }
        }
        return run_fixed(ctx, name, &args).await;
    }
    if server.config.long_tool_name && name == LONG_TOOL_NAME {
        return Ok(text_result(format!("long from {}", server.config.name)));
    }
    if let Some(i) = synthetic_index(server, name) {
        return Ok(text_result(format!("tool_{i} from {}", server.config.name)));
    }
    Err(RpcError::invalid_params(format!("Unknown tool: {name}"))
        .with_data(json!({ "name": name })))
}

fn arg_str<'a>(args: &'a Map<String, Value>, key: &str) -> &'a str {
    args.get(key).and_then(Value::as_str).unwrap_or_default()
}

async fn run_fixed(
    ctx: &RequestCtx,
    name: &str,
    args: &Map<String, Value>,
) -> Result<ToolOutcome, RpcError> {
    if let Some(outcome) = fixtures::run(ctx, name, args).await {
        return Ok(outcome);
    }
    if let Some(outcome) = kit::run(ctx, name, args).await {
        return Ok(outcome);
    }
    Err(RpcError::internal(format!(
        "mock: tool '{name}' is declared but not implemented"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::config::MockConfig;

    #[test]
    fn long_name_is_70_chars() {
        assert_eq!(LONG_TOOL_NAME.len(), 70);
    }

    #[test]
    fn synthetic_names() {
        let server = MockServer::new(
            MockConfig {
                synthetic_tools: 12,
                ..MockConfig::default()
            },
            None,
        );
        assert_eq!(synthetic_index(&server, "tool_0"), Some(0));
        assert_eq!(synthetic_index(&server, "tool_11"), Some(11));
        assert_eq!(synthetic_index(&server, "tool_12"), None);
        assert_eq!(synthetic_index(&server, "tool_01"), None);
        assert_eq!(synthetic_index(&server, "tool_"), None);
        assert_eq!(synthetic_index(&server, "tool_-1"), None);
    }

    #[test]
    fn every_tool_has_description_and_schema() {
        let server = MockServer::new(
            MockConfig {
                synthetic_tools: 2,
                long_tool_name: true,
                ..MockConfig::default()
            },
            None,
        );
        server.add_dynamic();
        let defs = definitions(&server, false);
        assert_eq!(defs.len(), FIXED_TOOLS.len() + 1 + 1 + 2);
        let modern = definitions(&server, true);
        assert!(modern
            .iter()
            .any(|d| d["name"] == "test_missing_capability"));
        assert!(!modern.iter().any(|d| d["name"] == "test_sampling"));
        assert!(!defs.iter().any(|d| d["name"] == "test_missing_capability"));
        for d in defs.into_iter().chain(modern) {
            assert!(d["name"].as_str().is_some_and(|n| n.len() <= 128));
            assert!(d["description"].as_str().is_some());
            assert_eq!(d["inputSchema"]["type"], "object");
        }
    }
}
