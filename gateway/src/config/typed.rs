//! The validated configuration the rest of the gateway reads: no spans, no raw strings
//! where a type says more (`Url`, `SocketAddr`, `Duration`, enums).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// How the gateway authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Nobody is authenticated; only a loopback listen address is allowed.
    None,
    /// Bearer JWTs from the configured issuer (the sidecar), checked against its JWKS.
    OAuth,
    /// Opaque Google access tokens, checked at Google's tokeninfo endpoint.
    GoogleDirect,
}

/// Validated `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The authorization server (oauth: the sidecar; google-direct: Google).
    pub issuer: Option<Url>,
    /// The audience tokens must name: the gateway's canonical `/mcp` URL.
    pub audience: String,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub cache_ttl: Duration,
    pub cache_max_entries: u64,
    pub clock_skew: Duration,
    pub required_scopes: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub jwks_refresh_min: Duration,
    /// Where to fetch the issuer's keys, when not from its metadata (e.g. the
    /// sidecar's `/jwks` inside the same task).
    pub jwks_url: Option<Url>,
    pub tokeninfo_url: Url,
    /// Google's OIDC userinfo endpoint: the Workspace domain (`hd`) of an access token,
    /// which tokeninfo does not carry.
    pub userinfo_url: Url,
    pub google_client_id: Option<String>,
    pub allowed_domains: Vec<String>,
    pub resource_name: String,
}

/// Who may use a backend or a tool. Empty allow lists allow everyone; `deny_users`
/// always wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow_domains: Vec<String>,
    pub allow_groups: Vec<String>,
    pub allow_users: Vec<String>,
    pub deny_users: Vec<String>,
}

impl Policy {
    pub(super) fn from_file(p: &super::raw::FilePolicy) -> Policy {
        let lower = |v: &Vec<String>| v.iter().map(|x| x.to_ascii_lowercase()).collect();
        Policy {
            allow_domains: lower(&p.allow_domains),
            allow_groups: p.allow_groups.clone(),
            allow_users: lower(&p.allow_users),
            deny_users: lower(&p.deny_users),
        }
    }

    pub fn is_open(&self) -> bool {
        self.allow_domains.is_empty()
            && self.allow_groups.is_empty()
            && self.allow_users.is_empty()
            && self.deny_users.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Canonical public URL of the gateway (scheme://host[:port]), no trailing slash.
    pub public_url: Url,
    pub max_body_bytes: usize,
    /// The whole request body must arrive within this (408 and the connection closed
    /// otherwise): a client trickling its body cannot hold a request open.
    pub body_timeout: Duration,
    /// Downstream connections served at once; one more is closed at once.
    pub max_connections: usize,
    /// Connection lifetimes around shutdown and between requests ([`crate::drain`]).
    pub lifetimes: Lifetimes,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
    /// 32-byte key sealing session ids; `None` means "generate at start".
    pub session_key: Option<[u8; 32]>,
    pub session_ttl: Duration,
    /// Host names (without port) accepted in the `Host` header.
    pub allowed_hosts: Vec<String>,
    /// Exact origins accepted in the `Origin` header, plus loopback ones when local.
    pub allowed_origins: Vec<String>,
    /// Accept any `http://localhost:*`-style origin (loopback deployments).
    pub allow_loopback_origins: bool,
    pub health_interval: Duration,
    pub log_format: LogFormat,
    /// How often `${secret:..}` values are fetched again.
    pub secrets_refresh: Duration,
    /// Header holding the client's address when behind a load balancer (its last
    /// entry is used); `None`: the TCP peer.
    pub client_ip_header: Option<http::HeaderName>,
    /// Calls of 2026-07-28 clients held open at a 2025 backend while the client answers
    /// its input requests ([`crate::mcp::bridge`]): at most this many at once
    /// (`server.held_calls_max`, default 1000) ...
    pub held_calls_max: usize,
    /// ... each for at most this long (`server.held_call_ttl_s`, default 300 s).
    pub held_call_ttl: Duration,
}

/// How long connections live: between two requests, and once the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// A kept-alive connection idle this long is closed (`server.keepalive_timeout_s`);
    /// keep it above the load balancer's idle timeout, so that the balancer, never the
    /// gateway, closes an idle connection.
    pub keepalive_timeout: Duration,
    /// After SIGTERM or SIGQUIT, connections already open are served this long
    /// (`server.drain_s`): each is closed right after a response (`Connection: close`),
    /// or when the window ends. Also the `Keep-Alive: timeout=` advertised.
    pub drain: Duration,
    /// On SIGTERM, `/readyz` answers 503 this long before accepting stops
    /// (`server.stop_delay_s`), so that health-checking fronts stop sending first.
    pub stop_delay: Duration,
}

impl Lifetimes {
    /// What responses advertise in `Keep-Alive: timeout=N`: a client that retires idle
    /// connections by it never has one closed under it by the drain.
    pub fn advertised_s(&self) -> u64 {
        self.drain.min(self.keepalive_timeout).as_secs()
    }
}

/// Upstream transport of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP at `url`.
    Http { url: Url },
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio(StdioConfig),
    /// The legacy HTTP+SSE transport (2024-11-05): `url` is the SSE endpoint.
    Sse { url: Url },
}

/// How STDIO processes are shared between downstream sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// A fixed pool of `processes` children serves every session.
    Shared { processes: usize },
    /// One child per downstream session.
    PerSession {
        idle_timeout: Duration,
        max_processes: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioConfig {
    /// The backend's `protocol` (the handshake asks `server/discover` unless `"2025"`).
    pub protocol: BackendProtocol,
    pub command: String,
    pub args: Vec<String>,
    /// Environment of the child (resolved); the child gets only PATH, HOME, LANG,
    /// TMPDIR and USER from the gateway besides these.
    pub env: Vec<(String, String)>,
    pub cwd: Option<std::path::PathBuf>,
    pub sharing: Sharing,
}

/// One validated upstream MCP server.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub transport: Transport,
    /// Extra request headers for the upstream (credentials), already resolved.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The same headers as written, with their references, for re-resolution when a
    /// secret is rotated.
    pub header_templates: Vec<(http::HeaderName, String)>,
    pub prefix: bool,
    /// Which era of the protocol the gateway speaks to it.
    pub protocol: BackendProtocol,
    pub timeout: Duration,
    /// Who may use the backend.
    pub policy: Policy,
    /// Extra rules per tool (by the backend's own tool name).
    pub tool_policies: BTreeMap<String, Policy>,
    /// Identity headers sent upstream: (claim, header name); claim is `email`, `sub`,
    /// `groups` or `client_id`.
    pub forward_identity: Vec<(IdentityClaim, http::HeaderName)>,
}

/// Which era of MCP a backend is spoken to in (`[[backend]] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendProtocol {
    /// Asked with `server/discover` on first use and remembered; asked again after a
    /// failure. A backend that does not answer it is spoken to in the legacy era.
    #[default]
    Auto,
    /// 2026-07-28: stateless requests, no upstream session.
    Modern,
    /// 2025-11-25 and earlier: `initialize` and an upstream session.
    Legacy,
}

impl BackendProtocol {
    /// The values `protocol` may take, as written in the config file.
    pub const NAMES: [(&'static str, BackendProtocol); 3] = [
        ("auto", BackendProtocol::Auto),
        ("2026-07-28", BackendProtocol::Modern),
        ("2025", BackendProtocol::Legacy),
    ];
}

/// A claim of the caller's identity a backend may be told, in a header of its choosing
/// (`[[backend]] forward_identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityClaim {
    Email,
    Sub,
    Groups,
    ClientId,
}

impl IdentityClaim {
    pub fn parse(name: &str) -> Option<IdentityClaim> {
        Some(match name {
            "email" => IdentityClaim::Email,
            "sub" => IdentityClaim::Sub,
            "groups" => IdentityClaim::Groups,
            "client_id" => IdentityClaim::ClientId,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityClaim::Email => "email",
            IdentityClaim::Sub => "sub",
            IdentityClaim::Groups => "groups",
            IdentityClaim::ClientId => "client_id",
        }
    }
}
