//! The tools the gateway's own tests use: echo, whoami, digest, slow, crash,
//! close_stream, notify_list_changed, list_roots.

use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{arg_str, error_result, text_result, ToolOutcome, CRASH_EXIT_CODE};
use crate::mock::handler::RequestCtx;
use crate::mock::http::headers_json;
use crate::mock::jsonrpc;
use crate::mock::modern::listen::Change;
use crate::mock::session::OutMsg;

/// The test-kit tool `name`, or `None` when it is not one.
pub async fn run(ctx: &RequestCtx, name: &str, args: &Map<String, Value>) -> Option<ToolOutcome> {
    let server_name = ctx.name().to_string();
    let outcome = match name {
        "echo" => text_result(arg_str(args, "text")),
        "whoami" => text_result(
            json!({
                "server": server_name,
                "session": ctx.session.id,
                "id": ctx.request_id,
                "headers": Value::Object(headers_json(&ctx.headers)),
            })
            .to_string(),
        ),
        "digest" => {
            let data = arg_str(args, "data");
            let hash = Sha256::digest(data.as_bytes());
            text_result(
                json!({ "server": server_name, "sha256": hex::encode(hash), "bytes": data.len() })
                    .to_string(),
            )
        }
        "slow" => {
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or_default();
            // With a progress token (always, in the modern era's reply), this opens the SSE
            // reply at once, so that a client can close it mid-call.
            ctx.progress(0, ms, "sleeping");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text_result(format!("slept {ms}"))
        }
        "crash" => {
            tracing::warn!("crash tool called: exiting with code {CRASH_EXIT_CODE}");
            std::process::exit(CRASH_EXIT_CODE);
        }
        "close_stream" => {
            let _ = ctx.out.send(OutMsg::CloseStream);
            ToolOutcome::Silent
        }
        "notify_list_changed" => {
            // Listen streams (modern era) get every change of the server; a legacy
            // call's own session gets it on its GET stream (stdout on stdio).
            ctx.server.listeners.announce(&Change::ToolsList);
            if ctx.modern.is_none() {
                ctx.session.send_unsolicited(
                    jsonrpc::notification("notifications/tools/list_changed", Value::Null),
                    true,
                );
            }
            text_result("ok")
        }
        "list_roots" => {
            if !ctx.client_supports("roots") {
                return Some(error_result(
                    "Client does not support roots (no 'roots' capability declared)",
                ));
            }
            match ctx.ask_client("roots/list", json!({})).await {
                Ok(result) => text_result(result.to_string()),
                Err(reason) => error_result(format!("roots/list failed: {reason}")),
            }
        }
        "confirm_twice" => {
            let ask = json!({"message": "Your name?", "requestedSchema": {"type": "object",
                "properties": {"name": {"type": "string"}}, "required": ["name"]}});
            let name = match ctx.ask_client("elicitation/create", ask).await {
                Ok(r) => r["content"]["name"].as_str().unwrap_or("?").to_string(),
                Err(reason) => return Some(error_result(format!("elicitation failed: {reason}"))),
            };
            let sample = json!({"maxTokens": 50, "messages": [{"role": "user",
                "content": {"type": "text", "text": format!("Greet {name}")}}]});
            match ctx.ask_client("sampling/createMessage", sample).await {
                Ok(r) => {
                    let said = r["content"]["text"].as_str().unwrap_or("?");
                    text_result(format!("name={name}; sampled={said}"))
                }
                Err(reason) => error_result(format!("sampling failed: {reason}")),
            }
        }
        _ => return None,
    };
    Some(outcome)
}
