//! Run-time settings of the mock, independent of how they were given (CLI, tests).

use std::collections::HashSet;
use std::time::Duration;

/// How POST requests are answered over Streamable HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// JSON for plain requests; SSE as soon as handling emits a notification or a
    /// server-to-client request before the response.
    Auto,
    /// `application/json` for every request; request-related notifications and
    /// server-to-client requests go to the session's GET stream instead.
    Json,
    /// `text/event-stream` for every request.
    Sse,
}

/// Which protocol eras the mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolMode {
    /// 2025-03-26 … 2025-11-25 only: sessions, `initialize` (today's behaviour).
    Legacy,
    /// 2026-07-28 only: stateless, per-request `_meta`, `server/discover`.
    Modern,
    /// Both, chosen per request: modern `_meta` is served statelessly, `initialize`
    /// opens a legacy session.
    Mixed,
}

impl ProtocolMode {
    pub fn speaks_modern(self) -> bool {
        self != ProtocolMode::Legacy
    }

    pub fn speaks_legacy(self) -> bool {
        self != ProtocolMode::Modern
    }
}

#[derive(Clone, Debug)]
pub struct MockConfig {
    pub protocol: ProtocolMode,
    /// `ttlMs` of cacheable modern results (lists, reads, discover).
    pub ttl_ms: u64,
    /// `cacheScope: "private"` instead of `"public"` on cacheable modern results.
    pub cache_private: bool,
    /// `serverInfo.name`, and the name shown by echo-like tools.
    pub name: String,
    /// Delay before answering each request.
    pub latency: Duration,
    /// Delay before a `subscriptions/listen` stream is opened and acknowledged (a slow
    /// backend: what changes meanwhile is not sent on it).
    pub listen_delay: Duration,
    /// Methods answered with -32603.
    pub fail_methods: HashSet<String>,
    /// Number of synthetic `tool_i` tools.
    pub synthetic_tools: usize,
    /// Adds one tool whose name is 70 characters long.
    pub long_tool_name: bool,
    /// tools/list page size (0: everything in one page).
    pub page_size: usize,
    pub reply_mode: ReplyMode,
    /// Timed behaviours: dynamic tool/resource/prompt after 2 s, watched resource every 3 s.
    pub dynamic: bool,
    /// No `Mcp-Session-Id`: none issued, none required.
    pub stateless: bool,
    /// Host names accepted in `Host`/`Origin` besides localhost, 127.0.0.1 and [::1].
    pub extra_allowed_hosts: Vec<String>,
    /// Largest POST body accepted.
    pub max_body_bytes: usize,
    /// How long a tool waits for the client to answer a server-to-client request.
    pub client_request_timeout: Duration,
    /// Interval of SSE keep-alive comments on GET streams.
    pub keepalive: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            protocol: ProtocolMode::Legacy,
            ttl_ms: 60_000,
            cache_private: false,
            name: "mock".to_string(),
            latency: Duration::ZERO,
            listen_delay: Duration::ZERO,
            fail_methods: HashSet::new(),
            synthetic_tools: 0,
            long_tool_name: false,
            page_size: 0,
            reply_mode: ReplyMode::Auto,
            dynamic: true,
            stateless: false,
            extra_allowed_hosts: Vec::new(),
            max_body_bytes: 64 * 1024 * 1024,
            client_request_timeout: Duration::from_secs(120),
            keepalive: Duration::from_secs(15),
        }
    }
}
