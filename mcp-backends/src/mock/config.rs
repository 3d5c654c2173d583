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

#[derive(Clone, Debug)]
pub struct MockConfig {
    /// `serverInfo.name`, and the name shown by echo-like tools.
    pub name: String,
    /// Delay before answering each request.
    pub latency: Duration,
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
            name: "mock".to_string(),
            latency: Duration::ZERO,
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
