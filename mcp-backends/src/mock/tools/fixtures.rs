//! The conformance fixtures of the 2025 suite (`test_*` tools): fixed content,
//! logging, progress, and the tools that ask the client (sampling, elicitation).

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{arg_str, error_result, text_result, ToolOutcome};
use crate::mock::catalog::{TEST_AUDIO_WAV_BASE64, TEST_IMAGE_PNG_BASE64};
use crate::mock::handler::RequestCtx;
use crate::mock::protocol::{self, LogLevel};
use crate::mock::session::OutMsg;

/// Tools whose result is fixed content.
fn content(name: &str) -> Option<ToolOutcome> {
    let outcome = match name {
        "test_simple_text" => text_result("This is a simple text response for testing."),
        "test_image_content" => ToolOutcome::Result(json!({
            "content": [{ "type": "image", "data": TEST_IMAGE_PNG_BASE64, "mimeType": "image/png" }]
        })),
        "test_audio_content" => ToolOutcome::Result(json!({
            "content": [{ "type": "audio", "data": TEST_AUDIO_WAV_BASE64, "mimeType": "audio/wav" }]
        })),
        "test_embedded_resource" => ToolOutcome::Result(json!({
            "content": [{
                "type": "resource",
                "resource": {
                    "uri": "test://embedded-resource",
                    "mimeType": "text/plain",
                    "text": "This is an embedded resource content.",
                },
            }]
        })),
        "test_multiple_content_types" => ToolOutcome::Result(json!({
            "content": [
                { "type": "text", "text": "Multiple content types test:" },
                { "type": "image", "data": TEST_IMAGE_PNG_BASE64, "mimeType": "image/png" },
                {
                    "type": "resource",
                    "resource": {
                        "uri": "test://mixed-content-resource",
                        "mimeType": "application/json",
                        "text": json!({ "test": "data", "value": 123 }).to_string(),
                    },
                },
            ]
        })),
        "test_error_handling" => {
            error_result("This tool intentionally returns an error for testing")
        }
        "test_dynamic_tool" => text_result("This is a dynamically added tool."),
        _ => return None,
    };
    Some(outcome)
}

/// The conformance fixture `name`, or `None` when it is not one.
pub async fn run(ctx: &RequestCtx, name: &str, args: &Map<String, Value>) -> Option<ToolOutcome> {
    if let Some(outcome) = content(name) {
        return Some(outcome);
    }
    let outcome = match name {
        "test_tool_with_logging" => {
            ctx.log(LogLevel::Info, json!("Tool execution started"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.log(LogLevel::Info, json!("Tool processing data"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.log(LogLevel::Info, json!("Tool execution completed"));
            text_result("Tool with logging executed successfully")
        }
        "test_tool_with_progress" => {
            ctx.progress(0, 100, "Completed step 0 of 100");
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.progress(50, 100, "Completed step 50 of 100");
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.progress(100, 100, "Completed step 100 of 100");
            let token = ctx
                .progress_token
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".to_string());
            text_result(format!("Progress reported (progress token: {token})"))
        }
        "test_sampling" => sampling(ctx, arg_str(args, "prompt")).await,
        "test_elicitation" => {
            let schema = json!({
                "type": "object",
                "properties": {
                    "username": { "type": "string", "description": "User's response" },
                    "email": { "type": "string", "description": "User's email address" },
                },
                "required": ["username", "email"],
            });
            elicit(ctx, arg_str(args, "message"), schema, "User response").await
        }
        "test_elicitation_sep1034_defaults" => {
            elicit(
                ctx,
                "Please review and update the form fields with defaults",
                sep1034_schema(),
                "Elicitation completed",
            )
            .await
        }
        "test_elicitation_sep1330_enums" => {
            elicit(
                ctx,
                "Please select options from the enum fields",
                sep1330_schema(),
                "Elicitation completed",
            )
            .await
        }
        "test_reconnection" => {
            let _ = ctx.out.send(OutMsg::Disconnect);
            tokio::time::sleep(Duration::from_millis(100)).await;
            text_result(
                "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
            )
        }
        "json_schema_2020_12_tool" => text_result(format!(
            "JSON Schema 2020-12 tool called with: {}",
            Value::Object(args.clone())
        )),
        _ => return None,
    };
    Some(outcome)
}

fn sep1034_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": { "type": "boolean", "description": "Verification status", "default": true },
        },
        "required": [],
    })
}

fn sep1330_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Select one option",
                "enum": ["option1", "option2", "option3"],
            },
            "titledSingle": {
                "type": "string",
                "description": "Select one option with titles",
                "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" },
                ],
            },
            "legacyEnum": {
                "type": "string",
                "description": "Select one option (legacy)",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "description": "Select multiple options",
                "minItems": 1,
                "maxItems": 3,
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] },
            },
            "titledMulti": {
                "type": "array",
                "description": "Select multiple options with titles",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "anyOf": [
                        { "const": "value1", "title": "First Choice" },
                        { "const": "value2", "title": "Second Choice" },
                        { "const": "value3", "title": "Third Choice" },
                    ],
                },
            },
        },
        "required": [],
    })
}

async fn sampling(ctx: &RequestCtx, prompt: &str) -> ToolOutcome {
    if !ctx.client_supports("sampling") {
        return error_result(
            "Client does not support sampling (no 'sampling' capability declared)",
        );
    }
    let params = json!({
        "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
        "maxTokens": 100,
    });
    match ctx.ask_client("sampling/createMessage", params).await {
        Ok(result) => {
            let content = &result["content"];
            let text = content["text"]
                .as_str()
                .or_else(|| {
                    content
                        .as_array()
                        .and_then(|items| items.iter().find_map(|c| c["text"].as_str()))
                })
                .unwrap_or("No response");
            text_result(format!("LLM response: {text}"))
        }
        Err(reason) => error_result(format!("Sampling failed: {reason}")),
    }
}

async fn elicit(ctx: &RequestCtx, message: &str, schema: Value, label: &str) -> ToolOutcome {
    if !ctx.client_supports("elicitation") {
        return error_result(
            "Client does not support elicitation (no 'elicitation' capability declared)",
        );
    }
    let mut params = json!({ "message": message, "requestedSchema": schema });
    if protocol::elicitation_has_mode(&ctx.protocol()) {
        params["mode"] = json!("form");
    }
    match ctx.ask_client("elicitation/create", params).await {
        Ok(result) => {
            let action = result["action"].as_str().unwrap_or("unknown");
            let content = result.get("content").cloned().unwrap_or(json!({}));
            text_result(format!("{label}: action={action}, content={content}"))
        }
        Err(reason) => error_result(format!("Elicitation failed: {reason}")),
    }
}
