//! Transport-independent handling of one JSON-RPC message: method dispatch, the
//! per-request context (related notifications, server-to-client requests,
//! cancellation), and client notifications.

use std::sync::Arc;

use http::HeaderMap;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::catalog;
use super::jsonrpc::{self, RpcError};
use super::modern::{self, ModernMeta};
use super::protocol::{self, LogLevel};
use super::server::MockServer;
use super::session::{OutMsg, Session};
use super::tools;

/// How a request ended.
pub enum Outcome {
    /// Send this response (a result or an error).
    Reply(Value),
    /// Send nothing (the handler already told the transport what to do).
    Silent,
}

/// Everything a request handler may use while it runs.
pub struct RequestCtx {
    pub server: Arc<MockServer>,
    pub session: Arc<Session>,
    pub request_id: Value,
    /// The headers of the HTTP request that carried the call (empty on stdio), as
    /// received: made into JSON only by the tool that shows them.
    pub headers: Arc<HeaderMap>,
    /// The transport's channel for this request's messages, in order.
    pub out: mpsc::UnboundedSender<OutMsg>,
    /// Send related notifications and server-to-client requests as unsolicited
    /// messages (GET stream with `--json`, stdout on stdio) rather than on `out`.
    pub related_as_unsolicited: bool,
    pub progress_token: Option<Value>,
    /// Set for a 2026-07-28 request: what its `_meta` says about the client.
    pub modern: Option<ModernMeta>,
    /// `params._meta.traceparent` of the request, when sent.
    pub meta_traceparent: Option<Value>,
}

impl RequestCtx {
    pub fn name(&self) -> &str {
        &self.server.config.name
    }

    pub fn protocol(&self) -> String {
        match &self.modern {
            Some(_) => protocol::MODERN_VERSION.to_string(),
            None => self.session.protocol(),
        }
    }

    /// Whether the client declared a capability (`sampling`, `elicitation`, `roots`):
    /// in the request's `_meta` (modern) or at `initialize` (legacy).
    pub fn client_supports(&self, capability: &str) -> bool {
        match &self.modern {
            Some(meta) => meta.supports(capability),
            None => self.session.client_supports(capability),
        }
    }

    fn should_log(&self, level: LogLevel) -> bool {
        match &self.modern {
            Some(meta) => meta.log_level.is_some_and(|min| level >= min),
            None => self.session.should_log(level),
        }
    }

    /// Sends a notification or request related to this request.
    pub fn send_related(&self, message: Value) {
        if self.related_as_unsolicited {
            self.session.send_unsolicited(message, true);
        } else {
            // The receiver is gone only when the reply was already closed.
            let _ = self.out.send(OutMsg::Related(message));
        }
    }

    /// `notifications/message`, if the session's level lets it through.
    pub fn log(&self, level: LogLevel, data: Value) {
        if self.should_log(level) {
            self.send_related(jsonrpc::notification(
                "notifications/message",
                json!({ "level": level.as_str(), "logger": self.name(), "data": data }),
            ));
        }
    }

    /// `notifications/progress`, if the request carried a progress token.
    pub fn progress(&self, progress: u64, total: u64, message: &str) {
        if let Some(token) = &self.progress_token {
            self.send_related(jsonrpc::notification(
                "notifications/progress",
                json!({
                    "progressToken": token,
                    "progress": progress,
                    "total": total,
                    "message": message,
                }),
            ));
        }
    }

    /// Sends a server-to-client request and waits for the client's answer, which
    /// arrives as a separate message matched by id. `Err` carries a readable reason.
    pub async fn ask_client(&self, method: &str, params: Value) -> Result<Value, String> {
        let (id, rx, _guard) = self.session.begin_server_request();
        self.send_related(jsonrpc::request(&id, method, params));
        let timeout = self.server.config.client_request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => Err(format!(
                "client answered {method} with an error: {}",
                error
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| error.to_string())
            )),
            Ok(Err(_)) => Err(format!("session ended while waiting for {method}")),
            Err(_) => Err(format!(
                "no answer to {method} (id {id}) within {} s",
                timeout.as_secs()
            )),
        }
    }
}

/// The methods of the 2025 eras that the mock serves.
pub fn is_legacy_method(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "ping"
            | "tools/list"
            | "tools/call"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "prompts/list"
            | "prompts/get"
            | "completion/complete"
            | "logging/setLevel"
    )
}

/// `params` as an object; absent params count as `{}`.
pub fn params_object(params: &Value) -> Result<Map<String, Value>, RpcError> {
    match params {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map.clone()),
        _ => Err(RpcError::invalid_params("params must be an object")),
    }
}

fn required_str<'a>(
    params: &'a Map<String, Value>,
    key: &str,
    method: &str,
) -> Result<&'a str, RpcError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(format!("{method} requires '{key}' (string)")))
}

/// `tools/list`, in pages of `--page-size` tools when set; the cursor is the offset.
fn page_tools(
    server: &MockServer,
    params: &Map<String, Value>,
    modern: bool,
) -> Result<Value, RpcError> {
    let all = tools::definitions(server, modern);
    let size = server.config.page_size;
    if size == 0 {
        reject_cursor(params, "tools/list")?;
        return Ok(json!({ "tools": all }));
    }
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(c) => c
            .as_str()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|n| *n <= all.len())
            .ok_or_else(|| RpcError::invalid_params(format!("tools/list: unknown cursor {c}")))?,
    };
    let end = (start + size).min(all.len());
    let mut out = json!({ "tools": all[start..end] });
    if end < all.len() {
        out["nextCursor"] = json!(end.to_string());
    }
    Ok(out)
}

/// The mock never issues cursors, so any cursor is one it cannot resume.
fn reject_cursor(params: &Map<String, Value>, method: &str) -> Result<(), RpcError> {
    match params.get("cursor") {
        None | Some(Value::Null) => Ok(()),
        Some(cursor) => Err(RpcError::invalid_params(format!(
            "{method}: unknown cursor {cursor}"
        ))),
    }
}

pub fn progress_token(params: &Value) -> Option<Value> {
    params
        .get("_meta")
        .and_then(|m| m.get("progressToken"))
        .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
        .cloned()
}

/// `params._meta.traceparent`, recorded with the call's trace context.
pub fn meta_traceparent(params: &Value) -> Option<Value> {
    params
        .get("_meta")
        .and_then(|m| m.get("traceparent"))
        .cloned()
}

/// `initialize`: negotiates the revision and records the client's capabilities.
pub fn initialize(
    server: &MockServer,
    session: &Session,
    params: &Value,
) -> Result<Value, RpcError> {
    let params = params_object(params)?;
    let requested = required_str(&params, "protocolVersion", "initialize")?;
    let capabilities = match params.get("capabilities") {
        Some(Value::Object(c)) => Some(Value::Object(c.clone())),
        None | Some(Value::Null) => Some(json!({})),
        Some(_) => {
            return Err(RpcError::invalid_params(
                "initialize: 'capabilities' must be an object",
            ))
        }
    };
    let version = protocol::negotiate(requested);
    session.set_initialize(version, capabilities, params.get("clientInfo").cloned());
    Ok(json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "logging": {},
            "completions": {},
        },
        "serverInfo": {
            "name": server.config.name,
            "title": format!("MCP mock server '{}'", server.config.name),
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": "Mock MCP server for gateway tests; see mcp-backends/README.md.",
    }))
}

/// Runs one client request to its outcome.
pub async fn dispatch(ctx: &RequestCtx, method: &str, params: &Value) -> Outcome {
    let server = &ctx.server;
    let header = crate::mock::http::header_str(&ctx.headers, "traceparent");
    server.record_trace(
        method,
        header.map(|h| Value::String(h.to_string())).as_ref(),
        ctx.meta_traceparent.as_ref(),
    );
    if server.config.fail_methods.contains(method) {
        let error = RpcError::internal(format!("mock: configured to fail {method}"));
        return Outcome::Reply(jsonrpc::error_response(&ctx.request_id, &error));
    }
    if ctx.modern.is_some() {
        return dispatch_modern(ctx, method, params).await;
    }
    let result = match method {
        "tools/call" => match tools::call(ctx, params).await {
            Ok(tools::ToolOutcome::Result(v)) => Ok(v),
            Ok(tools::ToolOutcome::Silent) => return Outcome::Silent,
            Err(e) => Err(e),
        },
        _ => handle_simple(ctx, method, params),
    };
    Outcome::Reply(match result {
        Ok(v) => jsonrpc::response(&ctx.request_id, v),
        Err(e) => jsonrpc::error_response(&ctx.request_id, &e),
    })
}

/// A 2026-07-28 request: the modern method set, finished results, modern errors.
async fn dispatch_modern(ctx: &RequestCtx, method: &str, params: &Value) -> Outcome {
    let server = &ctx.server;
    let result = match modern::Method::parse(method) {
        None => Err(RpcError::method_not_found(method)),
        Some(modern::Method::Discover) => Ok(modern::discover(server)),
        Some(modern::Method::Listen) => Err(RpcError::internal(
            "mock: subscriptions/listen is served by the transport",
        )),
        Some(modern::Method::ToolsCall) => match tools::call(ctx, params).await {
            Ok(tools::ToolOutcome::Result(v)) => Ok(v),
            Ok(tools::ToolOutcome::Silent) => return Outcome::Silent,
            Err(e) => Err(e),
        },
        Some(modern::Method::PromptsGet)
            if params.get("name").and_then(Value::as_str) == Some(tools::mrtr::PROMPT) =>
        {
            params_object(params).and_then(|p| tools::mrtr::prompt(ctx, &p))
        }
        Some(_) => handle_simple(ctx, method, params),
    };
    let kind = modern::Method::parse(method).unwrap_or(modern::Method::ToolsCall);
    Outcome::Reply(match result {
        Ok(v) => jsonrpc::response(&ctx.request_id, modern::finish_result(server, kind, v)),
        Err(e) => jsonrpc::error_response(&ctx.request_id, &modern::modernize_error(e)),
    })
}

fn handle_simple(ctx: &RequestCtx, method: &str, params: &Value) -> Result<Value, RpcError> {
    let server = &ctx.server;
    let session = &ctx.session;
    match method {
        "initialize" => initialize(server, session, params),
        "ping" => Ok(json!({})),
        "tools/list" => page_tools(server, &params_object(params)?, ctx.modern.is_some()),
        "resources/list" => {
            reject_cursor(&params_object(params)?, method)?;
            Ok(json!({ "resources": catalog::resources(server) }))
        }
        "resources/templates/list" => {
            reject_cursor(&params_object(params)?, method)?;
            Ok(json!({ "resourceTemplates": catalog::resource_templates() }))
        }
        "resources/read" => {
            let p = params_object(params)?;
            let uri = required_str(&p, "uri", method)?;
            Ok(json!({ "contents": catalog::read_resource(server, uri)? }))
        }
        "resources/subscribe" | "resources/unsubscribe" => {
            let p = params_object(params)?;
            let uri = required_str(&p, "uri", method)?;
            let verb = if method == "resources/subscribe" {
                if !catalog::resource_exists(server, uri) {
                    return Err(catalog::not_found(uri));
                }
                session.subscribe(uri);
                "Subscribed to"
            } else {
                session.unsubscribe(uri);
                "Unsubscribed from"
            };
            unsolicited_log(ctx, LogLevel::Info, &format!("{verb} resource: {uri}"));
            Ok(json!({}))
        }
        "prompts/list" => {
            reject_cursor(&params_object(params)?, method)?;
            let mut prompts = catalog::prompts(server);
            if ctx.modern.is_some() {
                prompts.push(tools::mrtr::prompt_definition());
            }
            Ok(json!({ "prompts": prompts }))
        }
        "prompts/get" => {
            let p = params_object(params)?;
            let name = required_str(&p, "name", method)?;
            let arguments = match p.get("arguments") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(a)) => a.clone(),
                Some(_) => {
                    return Err(RpcError::invalid_params(
                        "prompts/get: 'arguments' must be an object",
                    ))
                }
            };
            catalog::get_prompt(server, name, &arguments)
        }
        "completion/complete" => catalog::complete(server, &params_object(params)?),
        "logging/setLevel" => {
            let p = params_object(params)?;
            let raw = required_str(&p, "level", method)?;
            let level = LogLevel::parse(raw).ok_or_else(|| {
                let all: Vec<&str> = LogLevel::ALL.iter().map(|l| l.as_str()).collect();
                RpcError::invalid_params(format!(
                    "logging/setLevel: invalid level '{raw}' (expected one of {})",
                    all.join(", ")
                ))
            })?;
            session.set_log_level(level);
            unsolicited_log(ctx, LogLevel::Info, &format!("Log level set to: {raw}"));
            Ok(json!({}))
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// A log message not tied to a request (GET stream / stdout); dropped when no
/// stream is open.
fn unsolicited_log(ctx: &RequestCtx, level: LogLevel, text: &str) {
    if ctx.session.should_log(level) {
        ctx.session.send_unsolicited(
            jsonrpc::notification(
                "notifications/message",
                json!({ "level": level.as_str(), "logger": ctx.name(), "data": text }),
            ),
            false,
        );
    }
}

/// Starts a client request in its own task. The outcome (`Response` or
/// `NoResponse` when cancelled) is sent on `out`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_request(
    server: Arc<MockServer>,
    session: Arc<Session>,
    id: Value,
    method: String,
    params: Value,
    headers: Arc<HeaderMap>,
    out: mpsc::UnboundedSender<OutMsg>,
    related_as_unsolicited: bool,
) {
    let ctx = RequestCtx {
        progress_token: progress_token(&params),
        meta_traceparent: meta_traceparent(&params),
        modern: None,
        server,
        session,
        request_id: id,
        headers,
        out,
        related_as_unsolicited,
    };
    spawn_ctx(ctx, method, params);
}

/// Runs a request whose context is built in its own task; see [`spawn_request`].
pub fn spawn_ctx(ctx: RequestCtx, method: String, params: Value) {
    let cancel: CancellationToken = ctx.session.register_running(&ctx.request_id);
    tokio::spawn(async move {
        let latency = ctx.server.config.latency;
        let work = async {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            dispatch(&ctx, &method, &params).await
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => None,
            outcome = work => Some(outcome),
        };
        match outcome {
            Some(Outcome::Reply(response)) => {
                let _ = ctx.out.send(OutMsg::Response(response));
            }
            Some(Outcome::Silent) => {}
            None => {
                tracing::info!(id = %ctx.request_id, %method, "request cancelled; no response sent");
                ctx.server.note_cancelled();
                let _ = ctx.out.send(OutMsg::NoResponse);
            }
        }
        ctx.session.unregister_running(&ctx.request_id);
    });
}

/// Client notifications.
pub fn handle_notification(session: &Session, method: &str, params: &Value) {
    match method {
        "notifications/initialized" => session.mark_initialized(),
        "notifications/cancelled" => {
            if let Some(id) = params.get("requestId") {
                let reason = params.get("reason").and_then(Value::as_str).unwrap_or("");
                let found = session.cancel(id);
                tracing::info!(request = %id, reason, found, "cancellation received");
            }
        }
        other => tracing::debug!(method = other, "notification ignored"),
    }
}
