//! `mcp-mock`: a mock MCP server for the gateway's tests and the conformance suite.
//! See mcp-backends/README.md for every flag and tool.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{ArgGroup, Parser, ValueEnum};
use mcp_backends::mock::{self, MockConfig, ProtocolMode, ReplyMode};

/// `--protocol`: which MCP eras are spoken.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Protocol {
    /// 2025-03-26 … 2025-11-25: sessions and `initialize` (the default).
    Legacy,
    /// 2026-07-28 only: stateless, per-request `_meta`, `server/discover`.
    Modern,
    /// Both, chosen per request (modern `_meta`, or `initialize` for a legacy session).
    Mixed,
}

impl From<Protocol> for ProtocolMode {
    fn from(p: Protocol) -> ProtocolMode {
        match p {
            Protocol::Legacy => ProtocolMode::Legacy,
            Protocol::Modern => ProtocolMode::Modern,
            Protocol::Mixed => ProtocolMode::Mixed,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "mcp-mock",
    version,
    about = "Mock MCP server (Streamable HTTP or stdio)"
)]
#[command(group(ArgGroup::new("transport").required(true).args(["http", "stdio"])))]
struct Cli {
    /// Serve Streamable HTTP on ADDR (e.g. 127.0.0.1:0 for an ephemeral port);
    /// prints `listening on http://HOST:PORT/mcp` once listening.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Serve newline-delimited JSON-RPC on stdin/stdout (logs go to stderr).
    #[arg(long)]
    stdio: bool,
    /// Server name: serverInfo.name and the name in tool outputs.
    #[arg(long, default_value = "mock")]
    name: String,
    /// Delay before answering each request, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,
    /// Delay before a 2026-07-28 `subscriptions/listen` is opened and acknowledged, in
    /// milliseconds (changes made meanwhile are not sent on it).
    #[arg(long, value_name = "N", default_value_t = 0)]
    listen_delay_ms: u64,
    /// Methods to answer with JSON-RPC error -32603 (comma-separated).
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    fail_methods: Vec<String>,
    /// Add N synthetic tools tool_0 … tool_{N-1}.
    #[arg(long, value_name = "N", default_value_t = 0)]
    tools: usize,
    /// Add one tool with a 70-character name.
    #[arg(long)]
    long_tool_name: bool,
    /// Serve tools/list in pages of N tools (0: one page).
    #[arg(long, value_name = "N", default_value_t = 0)]
    page_size: usize,
    /// Answer every POST with application/json (related messages go to the GET stream).
    #[arg(long, conflicts_with = "sse")]
    json: bool,
    /// Answer every POST with text/event-stream.
    #[arg(long)]
    sse: bool,
    /// Disable the timed behaviours (dynamic items after 2 s, watched resource every 3 s).
    #[arg(long)]
    no_dynamic: bool,
    /// Stateless HTTP: no Mcp-Session-Id is issued or required.
    #[arg(long)]
    stateless: bool,
    /// Extra host names accepted in Host/Origin besides localhost, 127.0.0.1 and [::1]
    /// (comma-separated; `*` accepts any host).
    #[arg(long, value_name = "HOST", value_delimiter = ',')]
    allow_host: Vec<String>,
    /// Protocol eras: legacy (2025 revisions), modern (2026-07-28), or mixed (both).
    #[arg(long, value_enum, default_value = "legacy")]
    protocol: Protocol,
    /// `ttlMs` of cacheable 2026-07-28 results (lists, reads, discover).
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    ttl_ms: u64,
    /// `cacheScope: "private"` on cacheable 2026-07-28 results (default "public").
    #[arg(long)]
    cache_private: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = MockConfig {
        protocol: cli.protocol.into(),
        ttl_ms: cli.ttl_ms,
        cache_private: cli.cache_private,
        name: cli.name,
        latency: Duration::from_millis(cli.latency_ms),
        listen_delay: Duration::from_millis(cli.listen_delay_ms),
        fail_methods: cli
            .fail_methods
            .into_iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect(),
        synthetic_tools: cli.tools,
        long_tool_name: cli.long_tool_name,
        page_size: cli.page_size,
        reply_mode: if cli.json {
            ReplyMode::Json
        } else if cli.sse {
            ReplyMode::Sse
        } else {
            ReplyMode::Auto
        },
        dynamic: !cli.no_dynamic,
        stateless: cli.stateless,
        extra_allowed_hosts: cli
            .allow_host
            .into_iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect(),
        ..MockConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        match cli.http {
            Some(addr) => mock::run_http(config, &addr).await,
            None => mock::run_stdio(config).await,
        }
    });
    // Blocking stdin reads would otherwise keep the runtime alive at shutdown.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
