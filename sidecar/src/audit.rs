//! Auth events. Every event is handed to an [`AuditSink`]; today's sink writes it to
//! the log (target `audit`), the audit issue ([L1]) adds a Postgres one. A sink must
//! never block: `record` is called on the request path.

use std::net::IpAddr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthEventKind {
    ClientRegistered,
    ClientRegistrationRefused,
    ClientMetadataFetched,
    AuthorizationRefused,
    ConsentGranted,
    ConsentDenied,
    LoginOk,
    LoginRefused,
    TokenIssued,
    TokenRefreshed,
    TokenRefused,
    RefreshReuseDetected,
    TokenRevoked,
}

/// One auth event. No secret is ever put in an event.
#[derive(Debug, Clone, Serialize)]
pub struct AuthEvent {
    pub kind: AuthEventKind,
    pub client_id: Option<String>,
    /// The detected client program (`claude-code`, `mcp-remote`, …).
    pub client: Option<String>,
    pub sub: Option<String>,
    pub email: Option<String>,
    pub groups: Option<Vec<String>>,
    pub resource: Option<String>,
    /// Why (refusals), or what (e.g. `family revoked`).
    pub reason: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl AuthEvent {
    pub fn new(kind: AuthEventKind) -> AuthEvent {
        AuthEvent {
            kind,
            client_id: None,
            client: None,
            sub: None,
            email: None,
            groups: None,
            resource: None,
            reason: None,
            source_ip: None,
            user_agent: None,
        }
    }

    pub fn client_id(mut self, v: impl Into<String>) -> Self {
        self.client_id = Some(v.into());
        self
    }
    pub fn client(mut self, v: impl Into<String>) -> Self {
        self.client = Some(v.into());
        self
    }
    pub fn user(mut self, sub: &str, email: &str) -> Self {
        self.sub = Some(sub.to_string());
        self.email = Some(email.to_string());
        self
    }
    pub fn email(mut self, v: impl Into<String>) -> Self {
        self.email = Some(v.into());
        self
    }
    pub fn groups(mut self, v: &[String]) -> Self {
        self.groups = Some(v.to_vec());
        self
    }
    pub fn resource(mut self, v: impl Into<String>) -> Self {
        self.resource = Some(v.into());
        self
    }
    pub fn reason(mut self, v: impl Into<String>) -> Self {
        self.reason = Some(v.into());
        self
    }
    pub fn from(mut self, ip: IpAddr, user_agent: &str) -> Self {
        self.source_ip = Some(ip);
        if !user_agent.is_empty() {
            self.user_agent = Some(user_agent.chars().take(256).collect());
        }
        self
    }
}

pub trait AuditSink: Send + Sync {
    fn record(&self, event: &AuthEvent);
}

/// Writes each event as one structured log line (target `audit`).
pub struct TracingAuditSink;

impl AuditSink for TracingAuditSink {
    fn record(&self, e: &AuthEvent) {
        let groups = e.groups.as_ref().map(|g| g.join(","));
        tracing::info!(
            target: "audit",
            kind = ?e.kind,
            client_id = e.client_id.as_deref(),
            client = e.client.as_deref(),
            sub = e.sub.as_deref(),
            email = e.email.as_deref(),
            groups = groups.as_deref(),
            resource = e.resource.as_deref(),
            reason = e.reason.as_deref(),
            source_ip = e.source_ip.map(|ip| ip.to_string()).as_deref(),
            user_agent = e.user_agent.as_deref(),
            "auth event"
        );
    }
}

/// Keeps events in memory (tests).
#[derive(Default)]
pub struct MemoryAuditSink {
    pub events: std::sync::Mutex<Vec<AuthEvent>>,
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, event: &AuthEvent) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_fills_fields_and_sink_keeps_them() {
        let sink = MemoryAuditSink::default();
        let e = AuthEvent::new(AuthEventKind::LoginRefused)
            .client_id("c1")
            .email("x@other.com")
            .reason("domain_not_allowed")
            .from("127.0.0.1".parse().unwrap(), "claude-code/1.0");
        sink.record(&e);
        TracingAuditSink.record(&e);
        let events = sink.events.lock().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, AuthEventKind::LoginRefused);
        assert_eq!(events[0].reason.as_deref(), Some("domain_not_allowed"));
        assert_eq!(events[0].user_agent.as_deref(), Some("claude-code/1.0"));
    }
}
