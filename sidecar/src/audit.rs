//! Auth events. Every event is handed to an [`AuditSink`]: [`TracingAuditSink`]
//! writes it to the log (target `audit`); with an `[audit]` table in the config,
//! [`AuditLogSink`] records it in the audit log shared with the gateway (crate
//! `mcp-audit`: PostgreSQL, or its JSON Lines file), one row per event. A sink must never block: `record` is called on the
//! request path.

use std::net::IpAddr;
use std::sync::Arc;

use mcp_audit::{AuditEvent, Auditor};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthEventKind {
    ClientRegistered,
    ClientRegistrationRefused,
    ClientMetadataFetched,
    /// A Client ID Metadata Document was not fetched or not usable (the reason says why).
    ClientMetadataRefused,
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

impl AuthEventKind {
    /// The event's name, as in the log and the audit log's `kind` column
    /// (`login_ok`, `token_issued`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthEventKind::ClientRegistered => "client_registered",
            AuthEventKind::ClientRegistrationRefused => "client_registration_refused",
            AuthEventKind::ClientMetadataFetched => "client_metadata_fetched",
            AuthEventKind::ClientMetadataRefused => "client_metadata_refused",
            AuthEventKind::AuthorizationRefused => "authorization_refused",
            AuthEventKind::ConsentGranted => "consent_granted",
            AuthEventKind::ConsentDenied => "consent_denied",
            AuthEventKind::LoginOk => "login_ok",
            AuthEventKind::LoginRefused => "login_refused",
            AuthEventKind::TokenIssued => "token_issued",
            AuthEventKind::TokenRefreshed => "token_refreshed",
            AuthEventKind::TokenRefused => "token_refused",
            AuthEventKind::RefreshReuseDetected => "refresh_reuse_detected",
            AuthEventKind::TokenRevoked => "token_revoked",
        }
    }
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

/// Records each event in the gateway's audit log (`[audit]`): one row of `kind` = the
/// event's name, with `sub`, `email`, `groups`, `client_id`, `source_addr`,
/// `user_agent`, `target` = the resource the sign-in is for and `detail` = the reason.
/// [`Auditor::record`] only queues, so this never waits on the database.
pub struct AuditLogSink {
    auditor: Arc<Auditor>,
}

impl AuditLogSink {
    pub fn new(auditor: Arc<Auditor>) -> AuditLogSink {
        AuditLogSink { auditor }
    }

    /// The audit row of an auth event.
    pub fn row(e: &AuthEvent) -> AuditEvent {
        let mut row = AuditEvent::new(e.kind.as_str());
        row.sub = e.sub.clone();
        row.email = e.email.clone();
        row.groups = e.groups.clone().unwrap_or_default();
        row.client_id = e.client_id.clone();
        row.target = e.resource.clone();
        row.source_addr = e.source_ip.map(|ip| ip.to_string());
        row.user_agent = e.user_agent.clone();
        row.detail = e.reason.clone();
        row
    }

    /// Writes out what is queued (see [`Auditor::shutdown`]).
    pub async fn shutdown(&self) {
        self.auditor.shutdown().await;
    }
}

impl AuditSink for AuditLogSink {
    fn record(&self, e: &AuthEvent) {
        self.auditor.record(Self::row(e));
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

    #[test]
    fn kind_names_match_the_serialized_names() {
        for k in [
            AuthEventKind::ClientRegistered,
            AuthEventKind::ClientRegistrationRefused,
            AuthEventKind::ClientMetadataFetched,
            AuthEventKind::AuthorizationRefused,
            AuthEventKind::ConsentGranted,
            AuthEventKind::ConsentDenied,
            AuthEventKind::LoginOk,
            AuthEventKind::LoginRefused,
            AuthEventKind::TokenIssued,
            AuthEventKind::TokenRefreshed,
            AuthEventKind::TokenRefused,
            AuthEventKind::RefreshReuseDetected,
            AuthEventKind::TokenRevoked,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn audit_rows_carry_the_event() {
        let e = AuthEvent::new(AuthEventKind::LoginOk)
            .client_id("mcp_abc")
            .client("claude-code")
            .user("123", "alice@example.com")
            .groups(&["eng@example.com".to_string()])
            .resource("https://mcp.example.com/mcp")
            .from("10.0.0.7".parse().unwrap(), "claude-code/1.0");
        let row = AuditLogSink::row(&e);
        assert_eq!(row.kind, "login_ok");
        assert_eq!(row.sub.as_deref(), Some("123"));
        assert_eq!(row.email.as_deref(), Some("alice@example.com"));
        assert_eq!(row.groups, vec!["eng@example.com".to_string()]);
        assert_eq!(row.client_id.as_deref(), Some("mcp_abc"));
        assert_eq!(row.target.as_deref(), Some("https://mcp.example.com/mcp"));
        assert_eq!(row.source_addr.as_deref(), Some("10.0.0.7"));
        assert_eq!(row.user_agent.as_deref(), Some("claude-code/1.0"));
        assert_eq!(row.detail, None);
        let refused = AuditLogSink::row(
            &AuthEvent::new(AuthEventKind::LoginRefused).reason("domain_not_allowed"),
        );
        assert_eq!(refused.kind, "login_refused");
        assert_eq!(refused.detail.as_deref(), Some("domain_not_allowed"));
        assert!(refused.groups.is_empty());
    }
}
