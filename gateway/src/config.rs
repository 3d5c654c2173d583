//! Typed, validated gateway configuration (TOML).
//!
//! Loading happens in two steps: the file is parsed into the raw `File*` structs
//! (unknown keys are an error, with the line), then validated into [`Config`], the one
//! internal shape the rest of the gateway reads. Values may reference the environment
//! with `${env:NAME}`; a missing variable is an error that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use url::Url;

/// A configuration mistake, reported with the file, line and key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// A 4 MiB body at a slow 200 KiB/s still makes it.
const DEFAULT_BODY_TIMEOUT_S: u64 = 30;
/// Well below a container's usual 65,536 open files, well above what a replica serves.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_STREAM_IDLE_MS: u64 = 300_000;
const DEFAULT_SESSION_TTL_S: u64 = 24 * 3600;
const DEFAULT_HEALTH_INTERVAL_S: u64 = 10;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    metrics: FileMetrics,
    audit: Option<crate::audit::AuditConfig>,
    #[serde(default)]
    backend: Vec<toml::Spanned<FileBackend>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<toml::Spanned<String>>,
    public_url: Option<toml::Spanned<String>>,
    max_body_bytes: Option<usize>,
    body_timeout_s: Option<u64>,
    max_connections: Option<usize>,
    request_timeout_ms: Option<u64>,
    stream_idle_timeout_ms: Option<u64>,
    session_key: Option<toml::Spanned<String>>,
    session_ttl_s: Option<u64>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    health_interval_s: Option<u64>,
    log_format: Option<toml::Spanned<String>>,
    secrets_refresh_s: Option<u64>,
    client_ip_header: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    listen: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    mode: Option<toml::Spanned<String>>,
    issuer: Option<toml::Spanned<String>>,
    audience: Option<toml::Spanned<String>>,
    algorithms: Option<Vec<toml::Spanned<String>>>,
    cache_ttl_s: Option<u64>,
    cache_max_entries: Option<u64>,
    clock_skew_s: Option<u64>,
    required_scopes: Option<Vec<String>>,
    scopes_supported: Option<Vec<String>>,
    jwks_refresh_min_s: Option<u64>,
    jwks_url: Option<toml::Spanned<String>>,
    tokeninfo_url: Option<toml::Spanned<String>>,
    userinfo_url: Option<toml::Spanned<String>>,
    google_client_id: Option<toml::Spanned<String>>,
    allowed_domains: Option<Vec<String>>,
    resource_name: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FilePolicy {
    #[serde(default)]
    allow_domains: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    deny_users: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    name: toml::Spanned<String>,
    transport: Option<toml::Spanned<String>>,
    url: Option<toml::Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, toml::Spanned<String>>,
    prefix: Option<bool>,
    timeout_ms: Option<u64>,
    enabled: Option<bool>,
    command: Option<toml::Spanned<String>>,
    #[serde(default)]
    args: Vec<toml::Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, toml::Spanned<String>>,
    cwd: Option<toml::Spanned<String>>,
    sharing: Option<toml::Spanned<String>>,
    processes: Option<usize>,
    idle_timeout_s: Option<u64>,
    max_processes: Option<usize>,
    #[serde(default)]
    allow_domains: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    deny_users: Vec<String>,
    #[serde(default)]
    tools: BTreeMap<String, FilePolicy>,
    #[serde(default)]
    forward_identity: BTreeMap<String, String>,
}

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
    fn from_file(p: &FilePolicy) -> Policy {
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
    pub timeout: Duration,
    /// Who may use the backend.
    pub policy: Policy,
    /// Extra rules per tool (by the backend's own tool name).
    pub tool_policies: BTreeMap<String, Policy>,
    /// Identity headers sent upstream: (claim, header name); claim is `email`, `sub`,
    /// `groups` or `client_id`.
    pub forward_identity: Vec<(String, http::HeaderName)>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    /// Admin listener serving Prometheus metrics, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// The audit log (`[audit]`), with references resolved.
    pub audit: crate::audit::AuditConfig,
    /// Enabled backends, in file order (which is also the merge order of lists).
    pub backends: Vec<BackendConfig>,
}

impl Config {
    /// Listeners configured on port 0 get a free port now, so that it can be announced
    /// ("listening on …", which tests read back); a `public_url` on port 0 follows the
    /// listener, and with it the default audience.
    pub fn take_ephemeral_ports(&mut self) -> std::io::Result<()> {
        if let Some(addr) = self.metrics_listen.filter(|a| a.port() == 0) {
            let probe = std::net::TcpListener::bind(addr)?;
            self.metrics_listen = Some(probe.local_addr()?);
        }
        if self.server.listen.port() == 0 {
            let probe = std::net::TcpListener::bind(self.server.listen)?;
            self.server.listen = probe.local_addr()?;
            drop(probe);
            if self.server.public_url.port() == Some(0) {
                let old_audience = format!(
                    "{}/mcp",
                    self.server.public_url.as_str().trim_end_matches('/')
                );
                let _ = self
                    .server
                    .public_url
                    .set_port(Some(self.server.listen.port()));
                if self.auth.audience == old_audience {
                    self.auth.audience = format!(
                        "{}/mcp",
                        self.server.public_url.as_str().trim_end_matches('/')
                    );
                }
            }
        }
        Ok(())
    }

    /// Reads the file's text (to find its `${secret:..}` references before loading).
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    /// Loads a config file; `${secret:..}` references are resolved by `secrets`.
    pub fn load(
        path: &Path,
        secrets: Option<&crate::secrets::SecretStore>,
    ) -> Result<Config, ConfigError> {
        let text = Self::read(path)?;
        let env = |name: &str| std::env::var(name).ok();
        let secret = |reference: &str| -> Result<String, String> {
            match secrets {
                Some(s) => s.resolve(reference).map_err(|e| e.to_string()),
                None => Err("no secret store (AWS Secrets Manager) is configured".into()),
            }
        };
        Self::parse_with(&text, &path.display().to_string(), &env, &secret)
    }

    /// Parses and validates config text. `env` resolves `${env:NAME}` references;
    /// `${secret:..}` references are an error.
    pub fn parse(
        text: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::parse_with(text, path, env, &|_| {
            Err("no secret store (AWS Secrets Manager) is configured".into())
        })
    }

    /// Parses and validates config text with both kinds of references.
    pub fn parse_with(
        text: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
        secret: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        Validator {
            text,
            path,
            env,
            secret,
        }
        .validate(file)
    }
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!(
            "line {}: {}",
            line_of(text, span.start),
            e.message().trim_end()
        ),
        None => e.message().trim_end().to_string(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

struct Validator<'a> {
    text: &'a str,
    path: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    secret: &'a dyn Fn(&str) -> Result<String, String>,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Expands `${env:NAME}` references in a value.
    fn expand(&self, value: &toml::Spanned<String>, key: &str) -> Result<String, ConfigError> {
        expand_refs(value.get_ref(), self.env, self.secret)
            .map_err(|message| self.err(value.span(), key, message))
    }

    fn validate(&self, file: FileConfig) -> Result<Config, ConfigError> {
        let mode = match file.auth.mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("none") => AuthMode::None,
            Some("oauth") => AuthMode::OAuth,
            Some("google-direct") => AuthMode::GoogleDirect,
            Some(other) => {
                let span = file.auth.mode.as_ref().map(|m| m.span()).unwrap_or(0..0);
                return Err(self.err(
                    span,
                    "auth.mode",
                    format!("unknown mode {other:?}: use \"none\", \"oauth\" or \"google-direct\""),
                ));
            }
        };
        let server = self.server(file.server, mode)?;
        let auth = self.auth(file.auth, mode, &server)?;
        let mut backends: Vec<BackendConfig> = Vec::new();
        let mut unprefixed: Option<String> = None;
        for spanned in file.backend {
            let span = spanned.span();
            let b = spanned.into_inner();
            if b.enabled == Some(false) {
                continue;
            }
            let backend = self.backend(b, span.clone(), &server)?;
            if backends.iter().any(|o| o.name == backend.name) {
                return Err(self.err(
                    span,
                    "backend.name",
                    format!("duplicate backend name {:?}", backend.name),
                ));
            }
            if !backend.prefix {
                if let Some(other) = &unprefixed {
                    return Err(self.err(
                        span,
                        "backend.prefix",
                        format!(
                            "backends {other:?} and {:?} both set prefix = false, so their tool \
                             and prompt names could collide; set prefix = true on one of them",
                            backend.name
                        ),
                    ));
                }
                unprefixed = Some(backend.name.clone());
            }
            backends.push(backend);
        }
        let metrics_listen = match &file.metrics.listen {
            None => None,
            Some(v) => {
                let raw = self.expand(v, "metrics.listen")?;
                Some(raw.parse::<SocketAddr>().map_err(|_| {
                    self.err(
                        v.span(),
                        "metrics.listen",
                        format!(
                            "{:?} is not an address like \"127.0.0.1:9090\"",
                            shown(v, &raw)
                        ),
                    )
                })?)
            }
        };
        let audit_line = self.text.find("[audit]").map(|i| i..i).unwrap_or(0..0);
        let mut audit = file.audit.unwrap_or_default();
        for (key, path) in [
            ("audit.file", &mut audit.file),
            ("audit.spool_dir", &mut audit.spool_dir),
        ] {
            let written = path.to_string_lossy().into_owned();
            if written.contains("${") {
                let resolved = expand_refs(&written, self.env, self.secret)
                    .map_err(|m| self.err(audit_line.clone(), key, m))?;
                *path = std::path::PathBuf::from(resolved);
            }
        }
        if let Some(url) = &audit.postgres_url {
            // The URL holds a password: errors show it as written.
            let resolved = expand_refs(url, self.env, self.secret)
                .map_err(|m| self.err(audit_line.clone(), "audit.postgres_url", m))?;
            audit.postgres_url = Some(resolved);
        }
        audit.validate().map_err(|e| match e {
            crate::audit::AuditError::Config { key, message } => {
                self.err(audit_line.clone(), key.trim_matches('`'), message)
            }
            other => self.err(audit_line.clone(), "audit", other.to_string()),
        })?;
        Ok(Config {
            server,
            auth,
            metrics_listen,
            audit,
            backends,
        })
    }

    fn auth(
        &self,
        a: FileAuth,
        mode: AuthMode,
        server: &ServerConfig,
    ) -> Result<AuthConfig, ConfigError> {
        let mode_span = a.mode.as_ref().map(|m| m.span()).unwrap_or(0..0);
        let issuer = match &a.issuer {
            Some(v) => Some(self.http_url(v, "auth.issuer")?),
            None if mode == AuthMode::OAuth => return Err(self.err(
                mode_span,
                "auth.issuer",
                "auth.mode = \"oauth\" needs issuer = the authorization server's URL (the sidecar)",
            )),
            None if mode == AuthMode::GoogleDirect => {
                Url::parse("https://accounts.google.com").ok()
            }
            None => None,
        };
        let audience = match &a.audience {
            Some(v) => self.expand(v, "auth.audience")?,
            None => format!("{}/mcp", server.public_url.as_str().trim_end_matches('/')),
        };
        let mut algorithms = Vec::new();
        for alg in a.algorithms.clone().unwrap_or_default() {
            let parsed = match alg.get_ref().as_str() {
                "ES256" => jsonwebtoken::Algorithm::ES256,
                "ES384" => jsonwebtoken::Algorithm::ES384,
                "EdDSA" => jsonwebtoken::Algorithm::EdDSA,
                "RS256" => jsonwebtoken::Algorithm::RS256,
                "PS256" => jsonwebtoken::Algorithm::PS256,
                other => {
                    return Err(self.err(
                        alg.span(),
                        "auth.algorithms",
                        format!("{other:?} is not accepted; use asymmetric algorithms: ES256, ES384, EdDSA, RS256, PS256"),
                    ))
                }
            };
            algorithms.push(parsed);
        }
        if algorithms.is_empty() {
            algorithms = vec![
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::EdDSA,
            ];
        }
        let tokeninfo_url = match &a.tokeninfo_url {
            Some(v) => self.http_url(v, "auth.tokeninfo_url")?,
            None => Url::parse("https://oauth2.googleapis.com/tokeninfo")
                .map_err(|e| self.err(0..0, "auth.tokeninfo_url", e.to_string()))?,
        };
        let userinfo_url = match &a.userinfo_url {
            Some(v) => self.http_url(v, "auth.userinfo_url")?,
            None => Url::parse("https://openidconnect.googleapis.com/v1/userinfo")
                .map_err(|e| self.err(0..0, "auth.userinfo_url", e.to_string()))?,
        };
        let jwks_url = match &a.jwks_url {
            None => None,
            Some(v) => Some(self.http_url(v, "auth.jwks_url")?),
        };
        let google_client_id = match &a.google_client_id {
            Some(v) => Some(self.expand(v, "auth.google_client_id")?),
            None => None,
        };
        let allowed_domains: Vec<String> = a
            .allowed_domains
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        if mode == AuthMode::GoogleDirect && allowed_domains.is_empty() {
            return Err(self.err(
                mode_span,
                "auth.allowed_domains",
                "auth.mode = \"google-direct\" needs allowed_domains (the Google Workspace domains whose people may sign in)",
            ));
        }
        if mode == AuthMode::GoogleDirect && google_client_id.is_none() {
            // Without it any Google access token would do, including one that another
            // app obtained from an employee (a confused deputy).
            return Err(self.err(
                mode_span,
                "auth.google_client_id",
                "auth.mode = \"google-direct\" needs google_client_id = the OAuth client id whose tokens the gateway accepts (the sidecar's google.client_id)",
            ));
        }
        Ok(AuthConfig {
            mode,
            issuer,
            audience,
            algorithms,
            cache_ttl: Duration::from_secs(a.cache_ttl_s.unwrap_or(300).clamp(1, 300)),
            cache_max_entries: a.cache_max_entries.unwrap_or(100_000).max(1),
            clock_skew: Duration::from_secs(a.clock_skew_s.unwrap_or(60).min(300)),
            // The sidecar grants `mcp` for MCP access; a token minted for anything else
            // (a refresh with scope=offline_access) must not open /mcp. Google's tokens
            // carry Google's scopes only.
            required_scopes: a.required_scopes.unwrap_or_else(|| match mode {
                AuthMode::OAuth => vec!["mcp".to_string()],
                AuthMode::GoogleDirect | AuthMode::None => Vec::new(),
            }),
            scopes_supported: a
                .scopes_supported
                .unwrap_or_else(|| vec!["mcp".to_string()]),
            jwks_refresh_min: Duration::from_secs(a.jwks_refresh_min_s.unwrap_or(30)),
            jwks_url,
            tokeninfo_url,
            userinfo_url,
            google_client_id,
            allowed_domains,
            resource_name: a.resource_name.unwrap_or_else(|| "MCP Gateway".to_string()),
        })
    }

    fn server(&self, s: FileServer, auth: AuthMode) -> Result<ServerConfig, ConfigError> {
        let listen = match &s.listen {
            None => DEFAULT_LISTEN
                .parse::<SocketAddr>()
                .map_err(|e| self.err(0..0, "server.listen", e.to_string()))?,
            Some(v) => {
                let raw = self.expand(v, "server.listen")?;
                raw.parse::<SocketAddr>().map_err(|_| {
                    self.err(
                        v.span(),
                        "server.listen",
                        format!(
                            "{:?} is not an address like \"127.0.0.1:8080\"",
                            shown(v, &raw)
                        ),
                    )
                })?
            }
        };
        if auth == AuthMode::None && !listen.ip().is_loopback() {
            let span = s.listen.as_ref().map(|v| v.span()).unwrap_or(0..0);
            return Err(self.err(
                span,
                "server.listen",
                format!(
                    "auth.mode = \"none\" serves anyone who can connect, so it only listens on a \
                     loopback address; {listen} is not one (use 127.0.0.1 or configure auth)"
                ),
            ));
        }
        let public_url = match &s.public_url {
            None => Url::parse(&format!("http://{listen}"))
                .map_err(|e| self.err(0..0, "server.public_url", e.to_string()))?,
            Some(v) => self.http_url(v, "server.public_url")?,
        };
        let session_key = match &s.session_key {
            None => None,
            Some(v) => {
                let raw = self.expand(v, "server.session_key")?;
                if raw.is_empty() {
                    None
                } else {
                    Some(
                        decode_key(&raw)
                            .map_err(|m| self.err(v.span(), "server.session_key", m))?,
                    )
                }
            }
        };
        let local = listen.ip().is_loopback();
        let public_host = public_url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let allowed_hosts = match s.allowed_hosts {
            Some(h) => h.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            None => {
                let mut v = vec![public_host];
                if local {
                    for h in ["localhost", "127.0.0.1", "[::1]"] {
                        if !v.iter().any(|x| x == h) {
                            v.push(h.to_string());
                        }
                    }
                }
                v
            }
        };
        let allowed_origins = match s.allowed_origins {
            Some(o) => o
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            None => vec![public_url
                .origin()
                .ascii_serialization()
                .to_ascii_lowercase()],
        };
        let log_format = match s.log_format.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                let span = s.log_format.as_ref().map(|v| v.span()).unwrap_or(0..0);
                return Err(self.err(
                    span,
                    "server.log_format",
                    format!("{other:?} is not \"pretty\" or \"json\""),
                ));
            }
        };
        let max_body_bytes = s.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if max_body_bytes < 1024 {
            return Err(self.err(0..0, "server.max_body_bytes", "must be at least 1024"));
        }
        let body_timeout_s = s.body_timeout_s.unwrap_or(DEFAULT_BODY_TIMEOUT_S);
        if body_timeout_s == 0 {
            return Err(self.err(
                0..0,
                "server.body_timeout_s",
                "must be at least 1 (seconds)",
            ));
        }
        let max_connections = s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(self.err(0..0, "server.max_connections", "must be at least 1"));
        }
        Ok(ServerConfig {
            listen,
            public_url,
            max_body_bytes,
            body_timeout: Duration::from_secs(body_timeout_s),
            max_connections,
            request_timeout: Duration::from_millis(
                s.request_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1),
            ),
            stream_idle_timeout: Duration::from_millis(
                s.stream_idle_timeout_ms
                    .unwrap_or(DEFAULT_STREAM_IDLE_MS)
                    .max(1),
            ),
            session_key,
            session_ttl: Duration::from_secs(
                s.session_ttl_s.unwrap_or(DEFAULT_SESSION_TTL_S).max(1),
            ),
            allowed_hosts,
            allowed_origins,
            allow_loopback_origins: local,
            health_interval: Duration::from_secs(
                s.health_interval_s
                    .unwrap_or(DEFAULT_HEALTH_INTERVAL_S)
                    .max(1),
            ),
            log_format,
            secrets_refresh: Duration::from_secs(s.secrets_refresh_s.unwrap_or(300).max(1)),
            client_ip_header: match &s.client_ip_header {
                None => None,
                Some(h) => Some(http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    self.err(
                        0..0,
                        "server.client_ip_header",
                        format!("{h:?} is not a header name"),
                    )
                })?),
            },
        })
    }

    fn backend(
        &self,
        b: FileBackend,
        span: Range<usize>,
        server: &ServerConfig,
    ) -> Result<BackendConfig, ConfigError> {
        let name = b.name.get_ref().clone();
        if !valid_backend_name(&name) {
            return Err(self.err(
                b.name.span(),
                "backend.name",
                format!(
                    "{name:?} must be 1-32 characters of letters, digits, '-' or '_', \
                     must not contain \"__\" and must not end with '_'"
                ),
            ));
        }
        let transport_name = b
            .transport
            .as_ref()
            .map(|t| t.get_ref().as_str())
            .unwrap_or("http");
        let transport = match transport_name {
            "http" => Transport::Http {
                url: self.backend_url(&b, &name, span.clone(), "its MCP endpoint")?,
            },
            "sse" => Transport::Sse {
                url: self.backend_url(&b, &name, span.clone(), "its SSE endpoint")?,
            },
            "stdio" => Transport::Stdio(self.stdio(&b, &name, span.clone())?),
            other => {
                let tspan = b.transport.as_ref().map(|t| t.span()).unwrap_or(span);
                return Err(self.err(
                    tspan,
                    "backend.transport",
                    format!("unknown transport {other:?}; supported: \"http\", \"stdio\", \"sse\""),
                ));
            }
        };
        if !matches!(transport, Transport::Stdio(_)) {
            for (key, present) in [
                ("command", b.command.is_some()),
                ("args", !b.args.is_empty()),
                ("env", !b.env.is_empty()),
                ("cwd", b.cwd.is_some()),
                ("sharing", b.sharing.is_some()),
                ("processes", b.processes.is_some()),
                ("idle_timeout_s", b.idle_timeout_s.is_some()),
                ("max_processes", b.max_processes.is_some()),
            ] {
                if present {
                    return Err(self.err(
                        span.clone(),
                        &format!("backend.{key}"),
                        format!("only applies to transport = \"stdio\" (backend {name:?})"),
                    ));
                }
            }
        }
        let mut headers = Vec::new();
        let mut header_templates = Vec::new();
        for (k, v) in &b.headers {
            let key = format!("backend.headers.{k}");
            let hn = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| self.err(v.span(), &key, "not a valid HTTP header name"))?;
            let value = self.expand(v, &key)?;
            let hv = http::HeaderValue::from_str(&value).map_err(|_| {
                // Never echo the value: it is usually a credential.
                self.err(v.span(), &key, "value is not a valid HTTP header value")
            })?;
            header_templates.push((hn.clone(), v.get_ref().clone()));
            headers.push((hn, hv));
        }
        let mut forward_identity = Vec::new();
        for (claim, header) in &b.forward_identity {
            let key = format!("backend.forward_identity.{claim}");
            if !matches!(claim.as_str(), "email" | "sub" | "groups" | "client_id") {
                return Err(self.err(
                    span.clone(),
                    &key,
                    "claim must be email, sub, groups or client_id",
                ));
            }
            let hn = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                self.err(
                    span.clone(),
                    &key,
                    format!("{header:?} is not a valid header name"),
                )
            })?;
            if hn == http::header::AUTHORIZATION || hn == http::header::COOKIE {
                return Err(self.err(span.clone(), &key, "must not be Authorization or Cookie"));
            }
            forward_identity.push((claim.clone(), hn));
        }
        Ok(BackendConfig {
            name,
            transport,
            headers,
            header_templates,
            policy: Policy::from_file(&FilePolicy {
                allow_domains: b.allow_domains.clone(),
                allow_groups: b.allow_groups.clone(),
                allow_users: b.allow_users.clone(),
                deny_users: b.deny_users.clone(),
            }),
            tool_policies: b
                .tools
                .iter()
                .map(|(t, p)| (t.clone(), Policy::from_file(p)))
                .collect(),
            forward_identity,
            prefix: b.prefix.unwrap_or(true),
            timeout: b
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.max(1)))
                .unwrap_or(server.request_timeout),
        })
    }
}

impl Validator<'_> {
    /// An http(s) URL with a host, from a value that may hold references.
    fn http_url(&self, v: &toml::Spanned<String>, key: &str) -> Result<Url, ConfigError> {
        let raw = self.expand(v, key)?;
        let url = Url::parse(&raw)
            .map_err(|e| self.err(v.span(), key, format!("{:?}: {e}", shown(v, &raw))))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{:?} must be an http:// or https:// URL with a host",
                    shown(v, &raw)
                ),
            ));
        }
        Ok(url)
    }

    /// The required http(s) `url` of an HTTP or legacy-SSE backend.
    fn backend_url(
        &self,
        b: &FileBackend,
        name: &str,
        span: Range<usize>,
        what: &str,
    ) -> Result<Url, ConfigError> {
        let Some(url_v) = &b.url else {
            return Err(self.err(
                span,
                "backend.url",
                format!("backend {name:?} needs a url: {what}"),
            ));
        };
        self.http_url(url_v, "backend.url")
    }

    fn stdio(
        &self,
        b: &FileBackend,
        name: &str,
        span: Range<usize>,
    ) -> Result<StdioConfig, ConfigError> {
        let Some(cmd_v) = &b.command else {
            return Err(self.err(
                span,
                "backend.command",
                format!("backend {name:?} uses transport \"stdio\" and needs a command"),
            ));
        };
        let command = self.expand(cmd_v, "backend.command")?;
        if command.trim().is_empty() {
            return Err(self.err(cmd_v.span(), "backend.command", "must not be empty"));
        }
        let mut args = Vec::new();
        for a in &b.args {
            args.push(self.expand(a, "backend.args")?);
        }
        let mut env = Vec::new();
        for (k, v) in &b.env {
            let key = format!("backend.env.{k}");
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(self.err(v.span(), &key, "not a valid environment variable name"));
            }
            env.push((k.clone(), self.expand(v, &key)?));
        }
        let cwd = match &b.cwd {
            None => None,
            Some(c) => {
                let dir = std::path::PathBuf::from(self.expand(c, "backend.cwd")?);
                if !dir.is_dir() {
                    return Err(self.err(
                        c.span(),
                        "backend.cwd",
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                Some(dir)
            }
        };
        let sharing = match b.sharing.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("shared") => {
                if b.idle_timeout_s.is_some() || b.max_processes.is_some() {
                    return Err(self.err(
                        span,
                        "backend.sharing",
                        "idle_timeout_s and max_processes apply to sharing = \"per_session\"",
                    ));
                }
                let processes = b.processes.unwrap_or(1);
                if !(1..=64).contains(&processes) {
                    return Err(self.err(span, "backend.processes", "must be between 1 and 64"));
                }
                Sharing::Shared { processes }
            }
            Some("per_session") => {
                if b.processes.is_some() {
                    return Err(self.err(
                        span,
                        "backend.processes",
                        "applies to sharing = \"shared\"; use max_processes for per_session",
                    ));
                }
                let max_processes = b.max_processes.unwrap_or(100);
                if max_processes == 0 {
                    return Err(self.err(span, "backend.max_processes", "must be at least 1"));
                }
                Sharing::PerSession {
                    idle_timeout: Duration::from_secs(b.idle_timeout_s.unwrap_or(300).max(1)),
                    max_processes,
                }
            }
            Some(other) => {
                let sspan = b.sharing.as_ref().map(|s| s.span()).unwrap_or(span);
                return Err(self.err(
                    sspan,
                    "backend.sharing",
                    format!("{other:?} is not \"shared\" or \"per_session\""),
                ));
            }
        };
        Ok(StdioConfig {
            command,
            args,
            env,
            cwd,
            sharing,
        })
    }
}

/// What an error may show of a value: the text as written when it holds a reference
/// (the resolved value may be a secret), else the value.
fn shown<'a>(written: &'a toml::Spanned<String>, resolved: &'a str) -> &'a str {
    if written.get_ref().contains("${") {
        written.get_ref()
    } else {
        resolved
    }
}

/// A backend name becomes the `{backend}__` prefix of tool names, so it is restricted to
/// characters valid in tool names and may not itself contain the separator.
pub fn valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && !name.contains("__")
        && !name.ends_with('_')
}

/// Expands `${env:NAME}`, `${file:PATH}`, `${secret:NAME}` and `${secret:NAME#json_key}`
/// references (the workspace's one expander, [`config_refs::expand`]). Unknown reference
/// kinds, unset variables, unreadable files and unknown secrets are errors (the message
/// never contains a resolved value).
pub fn expand_refs(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secret: &dyn Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    config_refs::expand(value, &config_refs::Sources { env, secret }).map_err(|e| e.to_string())
}

fn decode_key(raw: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let bytes = if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.trim()))
            .map_err(|_| "must be 32 bytes as 64 hex characters or base64".to_string())?
    };
    bytes
        .try_into()
        .map_err(|_| "must be exactly 32 bytes (64 hex characters or base64)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &|n| {
            (n == "TOKEN").then(|| "s3cret".to_string())
        })
    }

    #[test]
    fn defaults_apply() {
        let c = parse("[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\n").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.max_body_bytes, 4 * 1024 * 1024);
        assert!(c.backends[0].prefix);
        assert!(c.server.allowed_hosts.contains(&"localhost".to_string()));
    }

    #[test]
    fn env_reference_resolves_and_missing_one_names_key_and_line() {
        let c = parse(
            "[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { Authorization = \"Bearer ${env:TOKEN}\" }\n",
        )
        .unwrap();
        assert_eq!(c.backends[0].headers[0].1, "Bearer s3cret");
        let e = parse(
            "[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { X = \"${env:NOPE}\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("test.toml:4"), "{e}");
        assert!(e.contains("backend.headers.X"), "{e}");
        assert!(e.contains("NOPE"), "{e}");
    }

    #[test]
    fn env_defaults() {
        let env = |n: &str| (n == "SET").then(|| "9000".to_string());
        let none = |_: &str| Err("none".to_string());
        assert_eq!(
            expand_refs("a:${env:SET:-1}", &env, &none).unwrap(),
            "a:9000"
        );
        assert_eq!(
            expand_refs("a:${env:UNSET:-8080}", &env, &none).unwrap(),
            "a:8080"
        );
        assert!(expand_refs("${env:UNSET}", &env, &none).is_err());
    }

    #[test]
    fn unknown_key_reports_line() {
        let e = parse("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("listn"), "{e}");
    }

    #[test]
    fn none_auth_refuses_public_listen() {
        let e = parse("[server]\nlisten = \"0.0.0.0:8080\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn two_unprefixed_backends_are_refused() {
        let e = parse(
            "[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\nprefix = false\n[[backend]]\nname = \"b\"\nurl = \"http://h/mcp\"\nprefix = false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("prefix = false"), "{e}");
        assert!(e.contains(":5:"), "{e}");
    }

    #[test]
    fn bad_backend_names() {
        for bad in ["a__b", "", "x y", "a_", &"n".repeat(33)] {
            let text = format!("[[backend]]\nname = {bad:?}\nurl = \"http://h/mcp\"\n");
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains("backend.name"), "{bad}: {e}");
        }
        let e = parse("[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\n[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\n").unwrap_err().to_string();
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn disabled_backends_are_dropped_and_transport_checked() {
        let c =
            parse("[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\nenabled = false\n").unwrap();
        assert!(c.backends.is_empty());
        let e = parse("[[backend]]\nname = \"a\"\ntransport = \"carrier-pigeon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.transport") && e.contains(":3:"), "{e}");
        let e = parse("[[backend]]\nname = \"a\"\nurl = \"ftp://h/mcp\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.url"), "{e}");
    }

    #[test]
    fn auth_modes_and_policies() {
        let c = parse("[server]\npublic_url = \"https://mcp.example.com\"\n[auth]\nmode = \"oauth\"\nissuer = \"https://auth.example.com\"\n[[backend]]\nname = \"g\"\nurl = \"http://h/mcp\"\nallow_groups = [\"sre\"]\nforward_identity = { email = \"X-Forwarded-Email\" }\ntools = { delete = { allow_users = [\"Boss@Example.com\"] } }\n").unwrap();
        assert_eq!(c.auth.mode, AuthMode::OAuth);
        assert_eq!(c.auth.audience, "https://mcp.example.com/mcp");
        assert_eq!(c.backends[0].policy.allow_groups, vec!["sre"]);
        assert_eq!(
            c.backends[0].tool_policies["delete"].allow_users,
            vec!["boss@example.com"]
        );
        assert_eq!(c.backends[0].forward_identity[0].1, "x-forwarded-email");
        let e = parse("[auth]\nmode = \"oauth\"\n").unwrap_err().to_string();
        assert!(e.contains("auth.issuer"), "{e}");
        let e =
            parse("[auth]\nmode = \"oauth\"\nissuer = \"https://a\"\nalgorithms = [\"HS256\"]\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("auth.algorithms") && e.contains(":4:"), "{e}");
        let e = parse("[auth]\nmode = \"google-direct\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowed_domains"), "{e}");
        let e = parse("[auth]\nmode = \"saml\"\n").unwrap_err().to_string();
        assert!(e.contains("auth.mode"), "{e}");
        // With authentication the gateway may listen publicly.
        assert!(parse("[server]\nlisten = \"0.0.0.0:8080\"\npublic_url = \"https://m.example.com\"\n[auth]\nmode = \"oauth\"\nissuer = \"https://a\"\n").is_ok());
    }

    #[test]
    fn stdio_backends() {
        let c = parse(
            "[[backend]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"server\"\nargs = [\"--x\"]\nenv = { KEY = \"${env:TOKEN}\" }\nsharing = \"per_session\"\nidle_timeout_s = 5\n",
        )
        .unwrap();
        let Transport::Stdio(s) = &c.backends[0].transport else {
            panic!("not stdio")
        };
        assert_eq!(s.args, vec!["--x"]);
        assert_eq!(s.env, vec![("KEY".to_string(), "s3cret".to_string())]);
        assert!(matches!(
            s.sharing,
            Sharing::PerSession {
                max_processes: 100,
                ..
            }
        ));
        let e = parse("[[backend]]\nname = \"t\"\ntransport = \"stdio\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.command"), "{e}");
        let e = parse("[[backend]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"x\"\nsharing = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.sharing") && e.contains(":5:"), "{e}");
        let e = parse("[[backend]]\nname = \"t\"\nurl = \"http://h/mcp\"\ncommand = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.command") && e.contains("stdio"), "{e}");
        let e = parse("[[backend]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"x\"\nprocesses = 2\nsharing = \"per_session\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.processes"), "{e}");
    }

    #[test]
    fn session_key_formats() {
        let hex = "00".repeat(32);
        let c = parse(&format!("[server]\nsession_key = \"{hex}\"\n")).unwrap();
        assert_eq!(c.server.session_key, Some([0u8; 32]));
        let e = parse("[server]\nsession_key = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.session_key"), "{e}");
    }
}
