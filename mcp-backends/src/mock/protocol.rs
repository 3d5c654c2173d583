//! Protocol revisions and logging levels the mock understands.

/// Protocol revisions spoken by the mock, newest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The revision offered when a client asks for one the mock does not speak.
pub const LATEST_VERSION: &str = "2025-11-25";

/// The revision assumed for HTTP requests that carry no `MCP-Protocol-Version`
/// header and belong to no negotiated session (transports spec, "Protocol Version Header").
pub const DEFAULT_HTTP_VERSION: &str = "2025-03-26";

/// The stateless revision (modern era).
pub const MODERN_VERSION: &str = "2026-07-28";

/// `_meta` keys of modern requests and results.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Version negotiation (lifecycle spec): echo the client's version when supported,
/// otherwise answer with the latest one.
pub fn negotiate(requested: &str) -> &'static str {
    SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|v| *v == requested)
        .unwrap_or(LATEST_VERSION)
}

/// Revisions are dates, so they order lexicographically.
pub fn at_least(version: &str, minimum: &str) -> bool {
    version >= minimum
}

/// JSON-RPC batches were allowed by 2025-03-26 only.
pub fn allows_batches(version: &str) -> bool {
    !at_least(version, "2025-06-18")
}

/// SSE priming events (an id with empty data) were introduced in 2025-11-25;
/// older clients may choke on them, so they are only sent from that revision on.
pub fn sends_priming_events(version: &str) -> bool {
    at_least(version, "2025-11-25")
}

/// From 2025-11-25 on, tool input validation failures are tool execution errors
/// (`isError: true`); before, they were JSON-RPC protocol errors (-32602).
pub fn validation_errors_are_tool_errors(version: &str) -> bool {
    at_least(version, "2025-11-25")
}

/// `mode` on `elicitation/create` exists from 2025-11-25 on.
pub fn elicitation_has_mode(version: &str) -> bool {
    at_least(version, "2025-11-25")
}

/// RFC 5424 severities as used by `logging/setLevel` and `notifications/message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    pub const ALL: [LogLevel; 8] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Notice,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
        LogLevel::Alert,
        LogLevel::Emergency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Notice => "notice",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Alert => "alert",
            LogLevel::Emergency => "emergency",
        }
    }

    pub fn parse(s: &str) -> Option<LogLevel> {
        LogLevel::ALL.iter().copied().find(|l| l.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate("2024-11-05"), LATEST_VERSION);
        assert_eq!(negotiate("garbage"), LATEST_VERSION);
    }

    #[test]
    fn ordering() {
        assert!(allows_batches("2025-03-26"));
        assert!(!allows_batches("2025-06-18"));
        assert!(sends_priming_events("2025-11-25"));
        assert!(!sends_priming_events("2025-06-18"));
        assert!(LogLevel::Error > LogLevel::Info);
        assert_eq!(LogLevel::parse("warning"), Some(LogLevel::Warning));
        assert_eq!(LogLevel::parse("warn"), None);
    }
}
