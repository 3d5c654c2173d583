//! Tools of the 2026-07-28 fixtures (listed for modern requests only): the
//! stateless probes of `server-stateless`, the change triggers (not listed) and
//! the MRTR fixtures of [`super::mrtr`].

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{mrtr, text_result, tool, ToolDef, ToolOutcome};
use crate::mock::catalog::WATCHED_URI;
use crate::mock::handler::RequestCtx;
use crate::mock::jsonrpc::RpcError;
use crate::mock::modern::listen::{announce, Change};
use crate::mock::modern::missing_capability;
use crate::mock::protocol::LogLevel;

pub(super) const TOOLS: &[ToolDef] = &[
    tool(
        "test_missing_capability",
        "Answers -32021 unless the client declares the sampling capability",
        &[],
    ),
    tool(
        "test_streaming_elicitation",
        "Answers without any server-to-client request on the stream",
        &[],
    ),
    tool(
        "test_logging_tool",
        "Logs three messages, only when the request sets a log level in _meta",
        &[],
    ),
    tool(
        mrtr::ELICITATION,
        "MRTR: asks for the user's name (elicitation), stateless",
        &[],
    ),
    tool(
        mrtr::SAMPLING,
        "MRTR: asks the client's LLM a question (sampling)",
        &[],
    ),
    tool(mrtr::LIST_ROOTS, "MRTR: asks for the client's roots", &[]),
    tool(
        mrtr::REQUEST_STATE,
        "MRTR: asks for a confirmation and checks the signed requestState",
        &[],
    ),
    tool(
        mrtr::MULTIPLE_INPUTS,
        "MRTR: asks for elicitation, sampling and roots at once",
        &[],
    ),
    tool(
        mrtr::MULTI_ROUND,
        "MRTR: asks for a name, then a colour, in two rounds",
        &[],
    ),
    tool(
        mrtr::TAMPERED_STATE,
        "MRTR: refuses a requestState that fails its integrity check",
        &[],
    ),
    tool(
        mrtr::CAPABILITIES,
        "MRTR: asks only with the capabilities the client declared",
        &[],
    ),
    tool(
        mrtr::UNCHECKED,
        "MRTR: asks for elicitation whatever the client declared (breaks the rule)",
        &[],
    ),
];

/// The tool whose argument is mirrored into a custom header (`x-mcp-header`).
pub const HEADER_TOOL: &str = "test_custom_header";

/// `(argument, header suffix)` of [`HEADER_TOOL`]: `region` travels in `Mcp-Param-Region`.
pub const HEADER_PARAMS: &[(&str, &str)] = &[("region", "Region")];

/// `tools/list` entry of [`HEADER_TOOL`].
pub fn header_tool_definition() -> Value {
    json!({
        "name": HEADER_TOOL,
        "description": "Echoes region, which clients mirror into the Mcp-Param-Region header",
        "inputSchema": {
            "type": "object",
            "properties": {
                "region": {
                    "type": "string",
                    "description": "Any text; sent in Mcp-Param-Region too",
                    "x-mcp-header": "Region",
                },
            },
            "required": ["region"],
        },
    })
}

/// The modern tool `name`, or `None` when it is not one.
pub async fn run(
    ctx: &RequestCtx,
    name: &str,
    params: &Map<String, Value>,
) -> Option<Result<ToolOutcome, RpcError>> {
    let outcome = match name {
        "test_missing_capability" => {
            if !ctx.client_supports("sampling") {
                return Some(Err(missing_capability(&["sampling"])));
            }
            text_result("Success")
        }
        HEADER_TOOL => {
            let region = params
                .get("arguments")
                .and_then(|a| a.get("region"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            text_result(format!("region={region}"))
        }
        "test_streaming_elicitation" => {
            text_result("Streaming elicitation fixture: nothing was asked on the stream")
        }
        "test_logging_tool" => {
            for (i, text) in [
                "Logging tool started",
                "Logging tool working",
                "Logging tool done",
            ]
            .into_iter()
            .enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ctx.log(LogLevel::Info, Value::String(text.into()));
            }
            text_result("Logging tool completed")
        }
        "test_trigger_tool_change" | "test_trigger_prompt_change" => {
            let change = if name == "test_trigger_tool_change" {
                Change::ToolsList
            } else {
                Change::PromptsList
            };
            let reached = announce(&ctx.server, &change);
            text_result(format!("change announced to {reached} listen stream(s)"))
        }
        "test_trigger_resource_update" => {
            let version = ctx.server.bump_watched();
            let change = Change::ResourceUpdated(WATCHED_URI.to_string());
            let reached = announce(&ctx.server, &change);
            text_result(format!(
                "{WATCHED_URI} at version {version}, announced to {reached} listen stream(s)"
            ))
        }
        _ => return mrtr::run(ctx, name, params),
    };
    Some(Ok(outcome))
}
