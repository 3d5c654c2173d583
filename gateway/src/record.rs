//! One record per request: what HTTP saw ([`HttpFacts`]), who asked (the caller's
//! [`Identity`]) and what MCP made of it ([`Info`], filled by the handler). The access
//! log line, the metric labels and the audit event are all built from it, so a field
//! added once appears in all three.
//!
//! Why the audit event takes the record by value: the request's strings move into the
//! event instead of being copied (the access log line is written first, by reference).
//! Not here: writing the event (the audit log, behind its queue).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::AuditEvent;
use crate::auth::Identity;
use crate::mcp::exchange::Info;
use crate::mcp::jsonrpc::Method;

/// Where finished requests go: the audit log, injected once into the [`Gateway`]
/// (`crate::mcp::handler::Gateway`). The handler asks it how to keep a call's
/// arguments; the proxy hands it each finished record.
pub trait AuditSink: Send + Sync {
    /// The digest of a call's redacted arguments, and the arguments themselves when the
    /// audit log keeps them.
    fn arguments(&self, args: &serde_json::Value) -> (String, Option<serde_json::Value>);
    /// Takes one finished request's event; never blocks.
    fn record(&self, event: AuditEvent);
}

impl AuditSink for crate::audit::Auditor {
    fn arguments(&self, args: &serde_json::Value) -> (String, Option<serde_json::Value>) {
        crate::audit::Auditor::arguments(self, args)
    }
    fn record(&self, event: AuditEvent) {
        crate::audit::Auditor::record(self, event)
    }
}

/// What the HTTP layer knows of a request.
pub struct HttpFacts {
    pub started: Instant,
    pub http_method: http::Method,
    pub path: String,
    /// The route's metric label (`mcp`, `passthrough`, `other`).
    pub route: &'static str,
    /// The status written, 0 when none was.
    pub status: u16,
    pub elapsed: Duration,
    /// The client's address (from `server.client_ip_header` behind a load balancer).
    pub source_addr: Option<String>,
    pub user_agent: Option<String>,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes written.
    pub bytes_out: u64,
    /// Why authentication failed, when it did (in full: for the log and audit only).
    pub auth_error: Option<String>,
    /// What failed in the proxy itself, if anything.
    pub error: Option<String>,
}

impl Default for HttpFacts {
    fn default() -> HttpFacts {
        HttpFacts {
            started: Instant::now(),
            http_method: http::Method::GET,
            path: String::new(),
            route: "other",
            status: 0,
            elapsed: Duration::ZERO,
            source_addr: None,
            user_agent: None,
            bytes_in: 0,
            bytes_out: 0,
            auth_error: None,
            error: None,
        }
    }
}

/// Everything known of one request once it is served.
#[derive(Default)]
pub struct RequestRecord {
    pub http: HttpFacts,
    pub caller: Option<Arc<Identity>>,
    pub mcp: Info,
}

impl RequestRecord {
    /// Notes the end of the request: its status, time taken (read once, for the metric,
    /// the log line and the audit event alike) and any proxy error.
    pub fn finish(&mut self, status: u16, error: Option<String>) {
        self.http.status = status;
        self.http.elapsed = self.http.started.elapsed();
        self.http.error = error;
    }

    /// The metric's method label: the MCP method (bounded), else the HTTP method.
    pub fn method_label(&self) -> &str {
        self.mcp
            .rpc_method
            .as_ref()
            .map(Method::label)
            .unwrap_or_else(|| self.http.http_method.as_str())
    }

    /// The metric's tool label: the published name of a `tools/call` whose backend's
    /// config names the tool (`[[backend]] tools`), else empty, so that the label's
    /// values stay as few as the configured tools.
    pub fn tool_label(&self, gateway: &crate::mcp::handler::Gateway) -> &str {
        let mcp = &self.mcp;
        let (Some(Method::ToolsCall), Some(b), Some(t)) =
            (&mcp.rpc_method, &mcp.backend, &mcp.target)
        else {
            return "";
        };
        let Some(backend) = gateway.backend(b) else {
            return "";
        };
        let own = match backend.config.prefix {
            true => t
                .strip_prefix(b.as_str())
                .and_then(|r| r.strip_prefix("__"))
                .unwrap_or(t),
            false => t,
        };
        match backend.config.tool_policies.contains_key(own) {
            true => t,
            false => "",
        }
    }

    /// Puts the request's facts on its span (OpenTelemetry semantic conventions where
    /// they exist: `mcp.method.name`, `gen_ai.tool.name`, `mcp.resource.uri`, …).
    pub fn trace(&self, span: &tracing::Span, outcome: &'static str) {
        use mcp_telemetry::attr;
        if span.is_none() {
            return;
        }
        let (http, mcp) = (&self.http, &self.mcp);
        let method = self.method_label().to_string();
        let name = match &mcp.target {
            Some(t) => format!("{method} {t}"),
            None => method.clone(),
        };
        mcp_telemetry::rename(span, name);
        attr(span, "mcp.method.name", method);
        match (&mcp.rpc_method, &mcp.target) {
            (Some(Method::ToolsCall), Some(t)) => {
                attr(span, "gen_ai.tool.name", t.clone());
                attr(span, "gen_ai.operation.name", "execute_tool");
            }
            (Some(Method::PromptsGet), Some(t)) => attr(span, "gen_ai.prompt.name", t.clone()),
            (Some(_), Some(t)) if t.contains(':') => attr(span, "mcp.resource.uri", t.clone()),
            _ => {}
        }
        if let Some(b) = &mcp.backend {
            attr(span, "mcp.backend", b.clone());
        }
        if let Some(who) = &self.caller {
            attr(span, "enduser.id", who.sub.clone());
        }
        attr(span, "mcp.outcome", outcome);
        attr(span, "http.request.method", http.http_method.to_string());
        attr(span, "http.route", http.route);
        attr(span, "http.response.status_code", i64::from(http.status));
        attr(span, "mcp.request_id", mcp.request_id.clone());
        if let Some(code) = mcp.rpc_error {
            attr(span, "rpc.jsonrpc.error_code", code);
        }
        if outcome != "ok" {
            attr(span, "error.type", outcome);
        }
        if outcome == "server_error" {
            let why = mcp.detail.clone().or_else(|| http.error.clone());
            mcp_telemetry::fail(span, why.unwrap_or_else(|| outcome.to_string()));
        }
    }

    /// The access log line.
    pub fn log(&self) {
        let (http, mcp) = (&self.http, &self.mcp);
        tracing::info!(
            request_id = %mcp.request_id,
            http_method = %http.http_method,
            path = http.path.as_str(),
            status = http.status,
            ms = http.elapsed.as_secs_f64() * 1000.0,
            rpc_method = mcp.rpc_method.as_ref().map(Method::as_str),
            backend = mcp.backend.as_deref(),
            target = mcp.target.as_deref(),
            rpc_error = mcp.rpc_error,
            session = mcp.session.as_deref(),
            user = self
                .caller
                .as_ref()
                .map(|c| c.email.as_deref().unwrap_or(&c.sub)),
            auth_error = http.auth_error.as_deref(),
            error = http.error.as_deref(),
            "request"
        );
    }
}

impl From<RequestRecord> for AuditEvent {
    fn from(r: RequestRecord) -> AuditEvent {
        let RequestRecord { http, caller, mcp } = r;
        let mut ev = AuditEvent::request_at(
            chrono::Utc::now()
                - chrono::Duration::from_std(http.elapsed)
                    .unwrap_or_else(|_| chrono::Duration::zero()),
        );
        if let Some(who) = &caller {
            ev.sub = Some(who.sub.clone());
            ev.email = who.email.clone();
            ev.groups = who.groups.clone();
            ev.client_id = who.client_id.clone();
        }
        ev.session = mcp.session;
        ev.request_id = Some(mcp.request_id);
        ev.rpc_method = mcp.rpc_method.map(|m| m.as_str().to_string());
        ev.backend = mcp.backend;
        ev.target = mcp.target;
        ev.args_digest = mcp.args_digest;
        ev.args = mcp.args;
        ev.http_status = http.status;
        ev.rpc_error = mcp.rpc_error;
        ev.latency_ms = http.elapsed.as_secs_f64() * 1000.0;
        ev.bytes_in = http.bytes_in;
        ev.bytes_out = http.bytes_out;
        ev.source_addr = http.source_addr;
        ev.user_agent = http.user_agent;
        ev.detail = http.auth_error.or(mcp.detail).or(http.error);
        ev
    }
}
