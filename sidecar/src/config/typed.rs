//! The validated configuration the rest of the sidecar reads: defaults applied,
//! references resolved, no spans, and values in the type that says what they are: every
//! duration a [`Duration`] (the file writes `…_s`, `…_ms` or `…_days`; the field drops
//! the unit), every URL an [`HttpUrl`] parsed and checked at start-up, every closed set
//! of words an enum. Built only by [`super::validate`]; never the serde surface (that
//! is [`super::raw`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use mcp_audit::AuditConfig;
use url::Url;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// The issuer identifier and public base URL, without a trailing `/` (paths are
    /// appended to it: `{issuer}/token`).
    pub issuer: HttpUrl,
    pub store: StoreConfig,
    pub resources: Vec<Resource>,
    pub authorization: AuthorizationConfig,
    pub tokens: TokensConfig,
    pub clients: ClientsConfig,
    pub rate_limit: RateLimitConfig,
    pub google: GoogleConfig,
    /// `[audit]`: auth events go to the gateway's audit log. `None`: to the log
    /// (target `audit`).
    pub audit: Option<AuditConfig>,
    /// `[metrics] listen`: the Prometheus listener's address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// `[tracing]`, before the `OTEL_*` variables are read.
    pub tracing: mcp_telemetry::TraceSettings,
}

/// `server.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The sidecar is the authorization server for every client (default).
    #[default]
    Issuer,
    /// Standard (non-loopback) clients are pointed at Google directly.
    GoogleDirect,
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: String,
    /// Set when `server.issuer` is written (`None`: the issuer is `http://{listen}`,
    /// with the port actually bound); [`Config::issuer`] is the one to use.
    pub issuer: Option<HttpUrl>,
    pub mode: Mode,
    /// Take the client address from this header (last entry), e.g. `x-forwarded-for`
    /// behind a load balancer. Unset: the TCP peer address.
    pub client_ip_header: Option<String>,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    /// Slow clients: a request body not complete this long after its head is answered
    /// 408 and its connection closed.
    pub body_timeout: Duration,
    /// A request head not complete this long after its first byte (after the
    /// connection was accepted, for its first request): the connection is closed.
    pub header_timeout: Duration,
    /// A kept-alive connection idle this long (a response sent, no next byte) is
    /// closed; set above the load balancer's idle timeout ([`crate::connection`]).
    pub keepalive_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog until one ends.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, `/readyz` answers 503 this long while the listener still
    /// accepts, so a health-checking front stops sending first.
    pub stop_delay: Duration,
    /// Then accepting stops, and open connections are served this long at most: each
    /// request read is answered with `Connection: close`.
    pub drain: Duration,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://user[:password]@host:port/db`.
    pub url: String,
    /// Schema holding the sidecar's tables (created if missing).
    pub schema: String,
    pub pool_size: usize,
    /// How often expired rows (sign-ins, codes, sessions, clients, …) are deleted.
    pub cleanup_interval: Duration,
}

/// A protected resource (`[[resource]]`): an http(s) URL without fragment, the `aud`
/// of its tokens as written (compared with [`Config::find_resource`]).
#[derive(Debug, Clone)]
pub struct Resource {
    pub url: HttpUrl,
    /// Shown on the consent page (default: the URL).
    pub name: String,
}

/// `[authorization]`.
#[derive(Debug, Clone)]
pub struct AuthorizationConfig {
    /// Refuse authorization requests without `resource` (with one resource configured
    /// and this `false`, that resource is assumed).
    pub require_resource: bool,
    /// Published as `scopes_supported`; requested scopes outside it are ignored.
    pub scopes_supported: Vec<String>,
    /// Granted when a client asks for none of the supported scopes.
    pub default_scope: String,
    /// How long an approval is remembered per user, client and resource (for the
    /// scopes approved).
    /// (`consent_ttl_days`: whole days.)
    pub consent_ttl: Duration,
    /// Lifetime of an unfinished sign-in (authorize → Google → callback).
    pub pending_ttl: Duration,
}

/// `[tokens]`.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    pub access_token_ttl: Duration,
    /// Absolute lifetime of a refresh-token family (a sign-in).
    pub refresh_token_ttl: Duration,
    pub code_ttl: Duration,
    /// PKCS#8 PEM of the P-256 key that signs access tokens (ES256). Unset: a key is
    /// generated on first start and kept in Postgres.
    pub signing_key: Option<String>,
}

/// `[clients]`.
#[derive(Debug, Clone)]
pub struct ClientsConfig {
    /// Non-loopback redirect URIs clients may use (exact match).
    pub allowed_redirect_uris: Vec<String>,
    /// Dynamic registrations allowed per source address per minute.
    pub registration_per_minute: u32,
    /// Let Client ID Metadata Document fetches reach private and loopback addresses
    /// (tests and local runs only).
    pub allow_private_cimd: bool,
    /// Accept `http://` Client ID Metadata Document URLs (tests and local runs only).
    pub allow_http_cimd: bool,
    pub cimd_max_bytes: usize,
    /// Every metadata-document fetch, connecting included (`cimd_timeout_ms`).
    pub cimd_timeout: Duration,
    /// How long a fetched metadata document is trusted when its response carries no
    /// usable `Cache-Control: max-age` (bounded to 1 min … 1 day either way).
    pub cimd_cache: Duration,
    /// Longest a fetched metadata document is trusted, whatever its `Cache-Control`;
    /// past it the cached client is forgotten and fetched again when next used.
    pub cimd_max_cache: Duration,
    /// A dynamic registration never used to obtain a token is deleted this long after
    /// it was made (a used one is kept).
    pub unused_registration_ttl: Duration,
}

/// `[rate_limit]`: the per-address budget of unauthenticated lookups (`/authorize`,
/// and `/token` with a metadata-document client not in the cache).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Lookups an address may make at once.
    pub lookups_burst: u32,
    /// Lookups per second an address may keep up.
    pub lookups_per_second: f64,
}

/// `google.credentials.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialSource {
    /// No Directory API access: users get no groups.
    #[default]
    None,
    /// A service-account JSON key (domain-wide delegation to `admin_subject`).
    ServiceAccountKey,
    /// Workload Identity Federation from AWS, then service-account impersonation.
    WorkloadIdentity,
}

/// `[google.credentials]`.
#[derive(Debug, Clone)]
pub struct CredentialsConfig {
    pub source: CredentialSource,
    /// Service-account key file (JSON, as downloaded from Google Cloud).
    pub key_file: Option<String>,
    /// The same JSON inline (typically `${env:…}`).
    pub key_json: Option<String>,
    /// Token endpoint for the JWT-bearer grant (default: the key's `token_uri`, then
    /// Google's token endpoint).
    pub token_uri: Option<HttpUrl>,
    /// Workload identity: the service account to impersonate.
    pub service_account: Option<String>,
    /// Workload identity: the provider audience,
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`.
    pub audience: Option<String>,
    pub sts_endpoint: HttpUrl,
    pub iam_endpoint: HttpUrl,
    /// AWS region for the signed `GetCallerIdentity` (default: `AWS_REGION`, then
    /// `us-east-1`).
    pub aws_region: Option<String>,
}

/// `[google]`.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// Without a trailing `/`.
    pub issuer: HttpUrl,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Workspace domains (`hd`) allowed to sign in, lower case.
    pub allowed_domains: Vec<String>,
    /// When not empty, a user must be in at least one of these groups (lower case).
    pub allowed_groups: Vec<String>,
    /// `hd` sent to Google (default: the only allowed domain, or `*`).
    pub hd_hint: Option<String>,
    pub authorization_endpoint: Option<HttpUrl>,
    pub token_endpoint: Option<HttpUrl>,
    pub jwks_uri: Option<HttpUrl>,
    pub directory_api_base: HttpUrl,
    /// The Workspace admin the service account acts as (domain-wide delegation).
    pub admin_subject: Option<String>,
    /// Every call to Google (`timeout_ms`).
    pub timeout: Duration,
    pub credentials: CredentialsConfig,
}

/// An http(s) URL of the configuration, parsed and checked at start-up. Its text is
/// kept as validated (not re-serialised by the parser, which would add a `/` to a bare
/// origin), since it is what requests, documents and token claims carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    text: String,
    parsed: Url,
}

/// Why a text is not an [`HttpUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL parser's message.
    #[error("{0}")]
    Parse(#[from] url::ParseError),
    #[error("must be an http(s) URL")]
    NotHttp,
}

impl HttpUrl {
    /// Parses `text`, which must be an absolute `http://` or `https://` URL (these
    /// always have a host).
    pub fn parse(text: &str) -> Result<HttpUrl, UrlError> {
        let parsed = Url::parse(text)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::NotHttp);
        }
        Ok(HttpUrl {
            text: text.to_string(),
            parsed,
        })
    }

    /// The URL as validated.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed URL (for its parts and comparisons).
    pub fn url(&self) -> &Url {
        &self.parsed
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for HttpUrl {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for HttpUrl {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for HttpUrl {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<String> for HttpUrl {
    fn eq(&self, other: &String) -> bool {
        &self.text == other
    }
}
